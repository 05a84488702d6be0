//! The process's own resource use, for the `process_*` metric families Prometheus users
//! expect (the same names and units as the official client libraries): resident memory,
//! CPU time, descriptors, start time. Read from `/proc/self` on Linux at scrape time; on
//! other systems the values are absent and the families are left out.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading; `None` where this system cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    /// Counting descriptors lists `/proc/self/fd`: its cost grows with the connections held
    /// (about a millisecond per 10,000), paid once per scrape.
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    pub(crate) fn read() -> ProcessStats {
        ProcessStats {
            resident_bytes: resident_bytes(),
            cpu_seconds: cpu_seconds(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count().saturating_sub(1) as u64), // the listing's own descriptor
            max_fds: max_fds(),
        }
    }
}

/// Seconds since the Unix epoch, now (taken once at start for `process_start_time_seconds`).
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn page_size() -> Option<u64> {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0)
}

fn resident_bytes() -> Option<u64> {
    // statm: size resident shared text lib data dt, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size()?)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: as above.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(ticks as f64 / hz as f64)
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured() {
        let before = ProcessStats::read();
        let files: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/dev/null").expect("open"))
            .collect();
        let after = ProcessStats::read();
        // Other tests open and close descriptors concurrently: at least ours are counted.
        assert!(after.open_fds.expect("fds") >= 5);
        assert!(after.max_fds.expect("limit") >= after.open_fds.expect("fds"));
        assert!(after.resident_bytes.expect("rss") > 1 << 20);
        assert!(after.cpu_seconds.expect("cpu") >= before.cpu_seconds.expect("cpu"));
        drop(files);
        assert!(unix_now() > 1.7e9);
    }
}
