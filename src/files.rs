//! The `file` verb's view of the disk: only regular files inside the public directories.
//!
//! A request is resolved against each public directory in order; the fully resolved path
//! (every `..` and symlink followed) must still lie inside that directory, a directory
//! serves its `index.html`, and only a regular file is opened. The file is opened
//! non-blocking and checked again after opening, so a FIFO or device swapped in meanwhile is
//! refused rather than blocking the loop.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A `file` verb's file, opened and checked on a worker, for the loop to queue.
pub(crate) struct Opened {
    /// The file and its length, or `None`: not found (or not servable).
    pub file: Option<(File, u64)>,
    /// The request's counters, for an error reply.
    pub count: u64,
    pub mid: String,
}

impl Opened {
    /// Runs on a worker. Never panics into the pool: a panic while resolving the path (a
    /// bug) is reported as not found.
    pub(crate) fn open(public: &PublicDirs, request: &str, count: u64, mid: String) -> Opened {
        let file = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| public.open(request)))
            .unwrap_or_else(|_| {
                log::error!("opening {request:?} panicked; answered as not found");
                None
            });
        Opened { file, count, mid }
    }
}

/// The directories `file` may serve from, canonicalised at start.
#[derive(Debug, Clone, Default)]
pub struct PublicDirs {
    dirs: Vec<PathBuf>,
}

impl PublicDirs {
    /// Directories that do not exist are skipped with a warning (nothing is served from them).
    pub fn new(dirs: &[PathBuf]) -> PublicDirs {
        let dirs = dirs
            .iter()
            .filter_map(|d| match d.canonicalize() {
                Ok(c) if c.is_dir() => Some(c),
                Ok(_) => {
                    log::warn!("public path {} is not a directory; ignored", d.display());
                    None
                }
                Err(e) => {
                    log::warn!(
                        "public directory {} is not available ({e}); `file` will not serve from it",
                        d.display()
                    );
                    None
                }
            })
            .collect();
        PublicDirs { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Opens the file a request names, with its length, or `None` ("That file is not found").
    pub fn open(&self, request: &str) -> Option<(File, u64)> {
        if request.is_empty() || request.contains('\0') {
            return None;
        }
        self.dirs
            .iter()
            .find_map(|dir| open_in(dir, Path::new(request)))
    }
}

fn open_in(dir: &Path, request: &Path) -> Option<(File, u64)> {
    let candidate = if request.is_absolute() {
        request.to_path_buf()
    } else {
        dir.join(request)
    };
    let mut resolved = candidate.canonicalize().ok()?;
    if !resolved.starts_with(dir) {
        return None;
    }
    if resolved.is_dir() {
        resolved = resolved.join("index.html").canonicalize().ok()?;
        if !resolved.starts_with(dir) {
            return None;
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&resolved)
        .ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn setup() -> (TempDir, PublicDirs) {
        let root = std::env::temp_dir().join(format!(
            "aw-files-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let public = root.join("public");
        std::fs::create_dir_all(public.join("sub")).expect("dirs");
        std::fs::write(public.join("a.txt"), "hello").expect("write");
        std::fs::write(public.join("sub/index.html"), "<p>index</p>").expect("write");
        std::fs::write(root.join("secret.txt"), "secret").expect("write");
        std::os::unix::fs::symlink(root.join("secret.txt"), public.join("leak")).expect("link");
        std::os::unix::fs::symlink(public.join("a.txt"), public.join("inside")).expect("link");
        let dirs = PublicDirs::new(&[public]);
        (TempDir(root), dirs)
    }

    fn read(d: &PublicDirs, req: &str) -> Option<String> {
        let (mut f, len) = d.open(req)?;
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read");
        assert_eq!(s.len() as u64, len);
        Some(s)
    }

    #[test]
    fn serves_inside_refuses_outside() {
        let (root, d) = setup();
        assert_eq!(read(&d, "a.txt").as_deref(), Some("hello"));
        assert_eq!(read(&d, "sub").as_deref(), Some("<p>index</p>"));
        assert_eq!(read(&d, "sub/../a.txt").as_deref(), Some("hello"));
        assert_eq!(read(&d, "inside").as_deref(), Some("hello"));
        let abs = root.0.join("public/a.txt");
        assert_eq!(
            read(&d, abs.to_str().expect("utf8")).as_deref(),
            Some("hello")
        );
        assert_eq!(read(&d, "../secret.txt"), None);
        assert_eq!(read(&d, "leak"), None);
        assert_eq!(
            read(&d, root.0.join("secret.txt").to_str().expect("utf8")),
            None
        );
        assert_eq!(read(&d, "/etc/passwd"), None);
        assert_eq!(read(&d, ""), None);
        assert_eq!(read(&d, "missing"), None);
        assert_eq!(read(&d, "."), None, "public root has no index.html");
    }
}
