//! `--processes N`: one parent supervising N single-loop server processes that share the
//! listening ports through SO_REUSEPORT and share rooms, chat and the cache through the
//! cluster (the open-file limit and the one-core loop are per process, so N processes hold
//! N times the connections).
//!
//! The parent serves nothing. It reserves the ports (a port 0 becomes one free port, the
//! same for every child), starts each child as this same program with
//! [`CHILD_ENV`] = `<index>:<socket port>:<tls port>:<web port>`, restarts a child that
//! dies (with a back-off), forwards SIGTERM/SIGINT (the graceful shutdown) and SIGHUP
//! (certificate reload) to every child, and exits when all children have.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use actionwire_config::Config;

/// Set in a child's environment: `<index>:<socket port>:<tls port>:<web port>`.
pub(crate) const CHILD_ENV: &str = "ACTIONWIRE_CHILD";

/// How often the parent looks at its children and signals.
const POLL: Duration = Duration::from_millis(50);
/// Restart back-off: doubled after each quick death, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A child that lived this long before dying is restarted at once (back-off reset).
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// A child's first life ending this soon with the start-up error code means the
/// configuration cannot start (a certificate missing, say): restarting would not help.
const START_GRACE: Duration = Duration::from_secs(2);
/// The exit code of a start-up error (the command line's).
const START_FAILURE: i32 = 2;

/// Ports every child uses, resolved by the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ports {
    pub socket: u16,
    pub tls: u16,
    pub web: u16,
}

/// What a child learns from [`CHILD_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildSlot {
    pub index: usize,
    pub ports: Ports,
}

impl ChildSlot {
    pub(crate) fn parse(text: &str) -> Option<ChildSlot> {
        let parts: Vec<&str> = text.split(':').collect();
        let [index, socket, tls, web] = parts.as_slice() else {
            return None;
        };
        Some(ChildSlot {
            index: index.parse().ok()?,
            ports: Ports {
                socket: socket.parse().ok()?,
                tls: tls.parse().ok()?,
                web: web.parse().ok()?,
            },
        })
    }

    fn encode(&self) -> String {
        let p = self.ports;
        format!("{}:{}:{}:{}", self.index, p.socket, p.tls, p.web)
    }

    /// Applies the slot to a child's configuration: the parent's ports, one process, and
    /// a `serverId` of its own that stays the same across its restarts.
    pub(crate) fn apply(&self, config: &mut Config) {
        let s = &mut config.servers;
        s.socket.port = self.ports.socket;
        s.socket_tls.port = self.ports.tls;
        s.web.port = self.ports.web;
        let g = &mut config.general;
        let base = if g.server_id.is_empty() {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            format!("{host}:{}", self.ports.socket)
        } else {
            g.server_id.clone()
        };
        g.server_id = format!("{base}:{}", self.index);
    }
}

/// How many children `general.processes` asks for (0: one per core).
pub(crate) fn count(config: &Config) -> usize {
    match config.general.processes {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Binds (without listening) each enabled listener's address with SO_REUSEPORT, so a
/// port 0 becomes a port every child can share and a port taken by another program is
/// reported before any child starts. The sockets are held for the parent's life.
fn reserve(config: &Config) -> Result<(Ports, Vec<socket2::Socket>), String> {
    let s = &config.servers;
    let mut held = Vec::new();
    let mut bind = |key: &str, ip: &str, port: u16| -> Result<u16, String> {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{key}.bindIP: {ip:?} is not an IP address"))?;
        let addr = SocketAddr::new(ip, port);
        use socket2::{Domain, Protocol, Socket, Type};
        let reserve = || -> std::io::Result<(Socket, u16)> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(false)?;
            }
            socket.bind(&addr.into())?;
            let port = socket.local_addr()?.as_socket().map_or(port, |a| a.port());
            Ok((socket, port))
        };
        let (socket, port) = reserve().map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        held.push(socket);
        Ok(port)
    };
    let socket = bind("servers.socket", &s.socket.bind_ip, s.socket.port)?;
    let tls = if s.socket_tls.enabled {
        let ip = s.socket_tls.bind_ip.as_deref().unwrap_or(&s.socket.bind_ip);
        bind("servers.socketTls", ip, s.socket_tls.port)?
    } else {
        s.socket_tls.port
    };
    let web = if s.web.enabled {
        let ip = s.web.bind_ip.as_deref().unwrap_or(&s.socket.bind_ip);
        bind("servers.web", ip, s.web.port)?
    } else {
        s.web.port
    };
    Ok((Ports { socket, tls, web }, held))
}

/// One child process slot.
struct Slot {
    index: usize,
    child: Option<Child>,
    started: Instant,
    /// This slot has run a child before (its first life decides start-up failures).
    restarted: bool,
    /// Quick deaths in a row (the back-off's exponent).
    failures: u32,
    restart_at: Option<Instant>,
    /// How its last child ended.
    last: Option<ExitStatus>,
}

/// Runs the parent: starts `n` children and supervises them until a signal stops them
/// all. Returns the process's exit code.
pub(crate) fn supervise(config: &Config, n: usize) -> ExitCode {
    debug_assert!(n >= 1);
    let (ports, _held) = match reserve(config) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot install signal handlers: {e}")),
    };
    log::info!(
        "supervising {n} processes sharing port {} (serverIds ending :0 to :{})",
        ports.socket,
        n - 1
    );
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..n)
        .map(|index| Slot {
            index,
            child: None,
            started: now,
            restarted: false,
            failures: 0,
            restart_at: Some(now),
            last: None,
        })
        .collect();
    let mut stopping = false;
    // A child that could not start: the others are told to stop, once.
    let mut start_failed = false;
    let mut stop_others = false;
    loop {
        for sig in signals.pending() {
            if sig == SIGTERM || sig == SIGINT {
                if !stopping {
                    log::info!("signal {sig} received: stopping every process gracefully");
                }
                stopping = true;
            }
            forward(&slots, sig);
        }
        let now = Instant::now();
        for slot in &mut slots {
            if let Some(status) = reap(slot) {
                slot.last = Some(status);
                let lived = now.duration_since(slot.started);
                if stopping {
                    continue;
                }
                if !slot.restarted && lived < START_GRACE && status.code() == Some(START_FAILURE) {
                    log::error!(
                        "process {} could not start (see its error above); stopping",
                        slot.index
                    );
                    stopping = true;
                    start_failed = true;
                    stop_others = true;
                    continue;
                }
                slot.failures = if lived >= HEALTHY_AFTER {
                    0
                } else {
                    slot.failures.saturating_add(1)
                };
                let delay = backoff(slot.failures);
                log::warn!(
                    "process {} exited ({status}) after {:.1} s; restarting in {} ms",
                    slot.index,
                    lived.as_secs_f64(),
                    delay.as_millis()
                );
                slot.restart_at = Some(now + delay);
            }
            if !stopping && slot.child.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                slot.restart_at = None;
                match spawn(ChildSlot {
                    index: slot.index,
                    ports,
                }) {
                    Ok(child) => {
                        log::info!("process {} started (pid {})", slot.index, child.id());
                        slot.restarted = slot.last.is_some();
                        slot.child = Some(child);
                        slot.started = now;
                    }
                    Err(e) => {
                        slot.failures = slot.failures.saturating_add(1);
                        log::error!("process {} could not be started: {e}", slot.index);
                        slot.restart_at = Some(now + backoff(slot.failures));
                    }
                }
            }
        }
        if std::mem::take(&mut stop_others) {
            forward(&slots, SIGTERM);
        }
        if stopping && slots.iter().all(|s| s.child.is_none()) {
            break;
        }
        std::thread::sleep(POLL);
    }
    let failed = slots.iter().any(|s| s.last.is_some_and(|st| !st.success()));
    log::info!("every process has exited");
    if start_failed {
        ExitCode::from(2)
    } else if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * (1u32 << shift)).min(BACKOFF_CAP)
}

/// The slot's child if it has exited (then the slot is empty).
fn reap(slot: &mut Slot) -> Option<ExitStatus> {
    let child = slot.child.as_mut()?;
    match child.try_wait() {
        Ok(Some(status)) => {
            slot.child = None;
            Some(status)
        }
        Ok(None) => None,
        Err(e) => {
            log::error!("process {}: cannot wait for it: {e}", slot.index);
            None
        }
    }
}

/// Sends `sig` to every live child.
fn forward(slots: &[Slot], sig: i32) {
    for child in slots.iter().filter_map(|s| s.child.as_ref()) {
        let Ok(pid) = i32::try_from(child.id()) else {
            continue;
        };
        // SAFETY: kill(2) on a child of ours that has not been reaped (its pid cannot have
        // been reused).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn spawn(slot: ChildSlot) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(CHILD_ENV, slot.encode())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a terminal's Ctrl-C reaches the parent only, which
        // forwards it once (a child receiving it twice would exit at once).
        .process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes one
    // async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            // If the parent dies, the child shuts down gracefully instead of living on
            // unsupervised.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let prefix = format!("[{}] ", slot.index);
    if let Some(out) = child.stdout.take() {
        relay(out, prefix.clone(), false)?;
    }
    if let Some(err) = child.stderr.take() {
        relay(err, prefix, true)?;
    }
    Ok(child)
}

/// Copies a child's output to ours line by line, each line in one write and marked with
/// the child's index: the children's lines never run into each other (a logger writes a
/// line and its newline separately, so lines from several processes sharing one stream
/// would merge). Ends when the child closes the stream.
fn relay(
    from: impl std::io::Read + Send + 'static,
    prefix: String,
    stderr: bool,
) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    std::thread::Builder::new()
        .name("actionwire-relay".into())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(from);
            let mut line = Vec::new();
            let mut out = prefix.into_bytes();
            let keep = out.len();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                out.truncate(keep);
                out.extend_from_slice(&line);
                if out.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
                // Nowhere to report a failed write of our own output.
                let _ = if stderr {
                    std::io::stderr().lock().write_all(&out)
                } else {
                    std::io::stdout().lock().write_all(&out)
                };
            }
        })
        .map(drop)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("actionwire: {message}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_travels_through_the_environment() {
        let slot = ChildSlot {
            index: 3,
            ports: Ports {
                socket: 5000,
                tls: 0,
                web: 8080,
            },
        };
        assert_eq!(ChildSlot::parse(&slot.encode()), Some(slot));
        for bad in ["", "1:2:3", "x:1:2:3", "1:70000:0:0", "1:2:3:4:5"] {
            assert_eq!(ChildSlot::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_gets_a_stable_server_id_of_its_own() {
        let mut config = Config::default();
        config.general.server_id = "edge-1".into();
        let slot = ChildSlot {
            index: 1,
            ports: Ports {
                socket: 5001,
                tls: 0,
                web: 0,
            },
        };
        slot.apply(&mut config);
        assert_eq!(config.general.server_id, "edge-1:1");
        assert_eq!(config.servers.socket.port, 5001);
    }

    #[test]
    fn restarts_back_off_to_a_cap() {
        assert_eq!(backoff(1), BACKOFF_FIRST);
        assert_eq!(backoff(2), BACKOFF_FIRST * 2);
        assert_eq!(backoff(30), BACKOFF_CAP);
    }
}
