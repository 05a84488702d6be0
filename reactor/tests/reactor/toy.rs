//! A toy handler and a harness for the reactor's own tests.
//!
//! The loop runs on its own thread with two listeners (plain and TLS) of the same options.
//! Accepted endpoints speak a tiny line protocol: a line starting with `!` is a command
//! (`!big N`, `!quit`, `!job`, `!again`), any other line is echoed back. Outbound endpoints report what
//! they receive. Tests steer the loop with server-level events ([`Ev`]) and learn what
//! happened from [`Report`]s, which the loop thread sends in the order things happened.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actionwire_reactor::{
    ClientTls, CloseReason, ConnId, ConnectOptions, Core, EndpointKind, EventSender, Handler,
    JobPanic, ListenerOptions, Reactor, ReactorConfig, ShutdownHandle, Timeout, TimerId,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A client address the toy closes in `on_proxied` (TEST-NET-1).
pub const BANNED: [u8; 4] = [192, 0, 2, 66];

/// How long a test waits for anything before it fails (a guard, never a synchronisation).
pub const GUARD: Duration = Duration::from_secs(20);

/// What tests ask the loop to do.
#[derive(Debug)]
pub enum Ev {
    Connect(SocketAddr, ConnectOptions),
    Send(ConnId, Vec<u8>),
    Close(ConnId),
    /// Set a server-level timer that fires `Fire(tag)`.
    SetTimer(Duration, u32),
    /// Cancel the timer set with this tag.
    CancelTimer(u32),
    Fire(u32),
    /// Reports `Pong` with the jobs in flight.
    Ping,
    /// Reports `Blocked`, then holds the loop thread until the gate opens (tests only).
    Block,
    /// Reports `TimersSet` with the server-level timers set and not fired.
    CountTimers,
    /// Queues a shared chunk; reports `Sent` with the result.
    SendShared(ConnId, Vec<u8>),
    /// Queues a file; reports `Sent`, then `Queued` with the queue as it is right after.
    SendFile(ConnId, std::path::PathBuf),
    /// Queues `len` bytes of an open file (a pipe, say); reports `Sent`.
    SendOpenFile(ConnId, std::fs::File, u64),
    /// `Core::touch`.
    Touch(ConnId),
    /// `Core::resume_reading`.
    Resume(ConnId),
    /// Reports `Queued` for the endpoint.
    Queued(ConnId),
    /// Handles the event when a server-level timer fires (after that turn's read pass).
    Later(Duration, Box<Ev>),
    /// Completes the endpoint with this value from another thread (`Core::completer`).
    FromThread(ConnId, u64),
    /// `Core::defer`: completes the endpoint with this value after the delay.
    Defer(ConnId, Duration, u64),
}

/// What the loop tells tests.
#[derive(Debug)]
pub enum Report {
    Opened(ConnId, EndpointKind),
    /// Bytes received by an outbound endpoint.
    Data(ConnId, Vec<u8>),
    /// With the most output ever queued on it.
    Closed(ConnId, CloseReason, usize, Instant),
    Timeout(ConnId, Timeout, Instant),
    Fired(u32, Instant),
    Cancelled(u32, bool),
    Sent(ConnId, bool),
    Pong(usize),
    Completion(ConnId, u64),
    ConnectRefusedAtOnce(String),
    /// An outbound connect is under way on this endpoint.
    Connecting(ConnId),
    Blocked,
    TimersSet(usize),
    /// An endpoint closed with this many queued bytes never written (before its `Closed`).
    Unsent(ConnId, usize),
    /// A PROXY header named this client address (and `Core::peer` agrees).
    Proxied(ConnId, SocketAddr),
    /// Bytes and files queued on an endpoint.
    Queued(usize, usize),
    Shutdown,
    /// `on_stopped`, with the endpoints still open then (none).
    Stopped(usize),
}

pub struct Session {
    kind: EndpointKind,
    line: Vec<u8>,
    max_queued: usize,
    /// Said `!stay`: left open by `on_shutdown` (as a connection with work pending would be).
    stay: bool,
}

/// Blocks `!job` jobs until opened.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }
}

pub struct Toy {
    reports: Sender<Report>,
    gate: Arc<Gate>,
    timers: Vec<(u32, TimerId)>,
}

impl Toy {
    fn report(&self, r: Report) {
        let _ = self.reports.send(r);
    }

    fn line(&mut self, core: &mut Core<Self>, id: ConnId, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if text != "!again" {
            core.handshake_done(id);
        }
        if let Some(n) = text.strip_prefix("!big ") {
            let n: usize = n.trim().parse().unwrap_or(0);
            core.send_owned(id, vec![b'x'; n]);
        } else if text == "!quit" {
            core.send(id, b"bye\n");
            core.close(id, CloseReason::Quit);
        } else if text == "!again" {
            // The peer owes another complete unit within the handshake timeout.
            core.restart_handshake(id);
            core.send(id, b"again\n");
            return;
        } else if let Some(name) = text.strip_prefix("!count ") {
            // A counter as this line is read: connections accepted, handshake steps put off.
            let stats = core.stats();
            let counter = match name {
                "accepted" => &stats.accepted,
                "deferrals" => &stats.handshake_deferrals,
                other => panic!("no counter {other}"),
            };
            let n = counter.load(std::sync::atomic::Ordering::Relaxed);
            core.send_owned(id, format!("{n}\n").into_bytes());
        } else if text == "!info" {
            let info = format!(
                "len={} empty={} shutting={} peer={:?} session={} open={} kind={:?} accepted={}\n",
                core.len(),
                core.is_empty(),
                core.is_shutting_down(),
                core.peer(id),
                core.session(id).is_some(),
                core.is_open(id),
                core.kind(id),
                core.stats()
                    .accepted
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            core.send_owned(id, info.into_bytes());
        } else if text == "!pause" {
            core.pause_reading(id);
            core.send(id, b"paused\n");
        } else if text == "!stay" {
            if let Some(s) = core.session_mut(id) {
                s.stay = true;
            }
            core.send(id, b"stay\n");
        } else if let Some(args) = text.strip_prefix("!defer ") {
            // `!defer MS PAYLOAD`: a completion MS milliseconds from now.
            let mut it = args
                .split_whitespace()
                .map(|n| n.parse::<u64>().unwrap_or(0));
            let (ms, payload) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            core.defer(id, Duration::from_millis(ms), payload);
        } else if text == "!job" {
            let gate = Arc::clone(&self.gate);
            core.spawn(id, move || {
                gate.wait();
                7
            });
        } else {
            let mut out = line.to_vec();
            out.push(b'\n');
            core.send_owned(id, out);
        }
        let queued = core.queued_bytes(id);
        if let Some(s) = core.session_mut(id) {
            s.max_queued = s.max_queued.max(queued);
        }
    }
}

impl Handler for Toy {
    type Session = Session;
    type Completion = u64;
    type Event = Ev;
    type Tag = ();

    fn new_session(&mut self, _id: ConnId, _peer: SocketAddr, _tag: ()) -> Session {
        Session {
            kind: EndpointKind::Accepted,
            line: Vec::new(),
            max_queued: 0,
            stay: false,
        }
    }

    // The reactor's promises to a handler, checked on every call (a broken promise panics
    // the loop thread, and every test waiting on it fails).
    fn on_open(&mut self, core: &mut Core<Self>, id: ConnId) {
        assert!(core.is_open(id), "on_open for an endpoint that is not open");
        let kind = core.kind(id).expect("a live endpoint");
        self.report(Report::Opened(id, kind));
    }

    fn on_data(&mut self, core: &mut Core<Self>, id: ConnId, data: &mut [u8]) {
        assert!(!data.is_empty(), "on_data without data");
        assert!(core.is_open(id), "on_data for an endpoint that is not open");
        let Some(s) = core.session_mut(id) else {
            return;
        };
        if s.kind == EndpointKind::Outbound {
            self.report(Report::Data(id, data.to_vec()));
            return;
        }
        s.line.extend_from_slice(data);
        let mut buf = std::mem::take(&mut s.line);
        let mut start = 0;
        while let Some(end) = buf[start..].iter().position(|&b| b == b'\n') {
            self.line(core, id, &buf[start..start + end]);
            start += end + 1;
        }
        buf.drain(..start);
        if let Some(s) = core.session_mut(id) {
            s.line = buf;
        }
    }

    fn on_completion(&mut self, core: &mut Core<Self>, id: ConnId, r: Result<u64, JobPanic>) {
        assert!(
            core.is_open(id),
            "a completion for an endpoint that is not open"
        );
        self.report(Report::Completion(id, r.unwrap_or(0)));
    }

    fn on_close(
        &mut self,
        _core: &mut Core<Self>,
        id: ConnId,
        s: Session,
        reason: CloseReason,
        unsent: usize,
    ) {
        if unsent > 0 {
            self.report(Report::Unsent(id, unsent));
        }
        self.report(Report::Closed(id, reason, s.max_queued, Instant::now()));
    }

    fn on_stopped(&mut self, core: &mut Core<Self>) {
        self.report(Report::Stopped(core.len()));
    }

    fn on_shutdown(&mut self, core: &mut Core<Self>) {
        assert!(core.is_shutting_down());
        self.report(Report::Shutdown);
        for id in core.open_ids() {
            if core.session_mut(id).is_some_and(|s| s.stay) {
                continue;
            }
            core.send(id, b"shutting down\n");
            core.close(id, CloseReason::Shutdown);
        }
    }

    fn on_timeout(&mut self, core: &mut Core<Self>, id: ConnId, t: Timeout) -> bool {
        assert!(
            core.is_open(id),
            "a timeout for an endpoint that is not open"
        );
        self.report(Report::Timeout(id, t, Instant::now()));
        true
    }

    fn on_proxied(&mut self, core: &mut Core<Self>, id: ConnId, source: SocketAddr) {
        assert_eq!(core.peer(id), Some(source));
        self.report(Report::Proxied(id, source));
        // A client the application turns away as soon as it knows who it is.
        if source.ip() == std::net::IpAddr::from(BANNED) {
            core.close(id, CloseReason::Quit);
        }
    }

    fn on_event(&mut self, core: &mut Core<Self>, event: Ev) {
        match event {
            Ev::Connect(addr, opts) => {
                let session = Session {
                    kind: EndpointKind::Outbound,
                    line: Vec::new(),
                    max_queued: 0,
                    stay: false,
                };
                match core.connect(addr, &opts, session) {
                    Ok(id) => self.report(Report::Connecting(id)),
                    Err(e) => self.report(Report::ConnectRefusedAtOnce(e.error.to_string())),
                }
            }
            Ev::Send(id, bytes) => {
                let sent = core.send_owned(id, bytes);
                self.report(Report::Sent(id, sent));
            }
            Ev::Close(id) => core.close(id, CloseReason::Quit),
            Ev::SetTimer(delay, tag) => {
                let id = core.set_timer(delay, Ev::Fire(tag)).expect("timer");
                self.timers.push((tag, id));
            }
            Ev::CancelTimer(tag) => {
                let i = self.timers.iter().position(|(t, _)| *t == tag);
                let cancelled = i.is_some_and(|i| {
                    let (_, id) = self.timers.remove(i);
                    core.cancel_timer(id).is_some()
                });
                self.report(Report::Cancelled(tag, cancelled));
            }
            Ev::Fire(tag) => {
                self.timers.retain(|(t, _)| *t != tag);
                self.report(Report::Fired(tag, Instant::now()));
            }
            Ev::Ping => {
                // Two accessors that must agree: comparing them is the point.
                #[allow(clippy::len_zero)]
                let none = core.len() == 0;
                assert_eq!(core.is_empty(), none);
                assert!(!core.is_shutting_down(), "pinged while running");
                self.report(Report::Pong(core.jobs_in_flight()));
            }
            Ev::Block => {
                self.report(Report::Blocked);
                self.gate.wait();
            }
            Ev::CountTimers => self.report(Report::TimersSet(core.timers_set())),
            Ev::Defer(id, delay, payload) => core.defer(id, delay, payload),
            Ev::SendShared(id, bytes) => {
                let shared: Arc<[u8]> = bytes.into();
                let sent = core.send_shared(id, &shared);
                self.report(Report::Sent(id, sent));
            }
            Ev::SendFile(id, path) => {
                let file = std::fs::File::open(&path).expect("file");
                let len = file.metadata().expect("metadata").len();
                let sent = core.send_file(id, file, len);
                self.report(Report::Sent(id, sent));
                self.report(Report::Queued(core.queued_bytes(id), core.queued_files(id)));
            }
            Ev::SendOpenFile(id, file, len) => {
                let sent = core.send_file(id, file, len);
                self.report(Report::Sent(id, sent));
            }
            Ev::Touch(id) => core.touch(id),
            Ev::Resume(id) => core.resume_reading(id),
            Ev::FromThread(id, value) => {
                let completer = core.completer();
                // Joined, so the completion is queued before the next turn (tests stay
                // deterministic); the thread is still another thread.
                std::thread::spawn(move || completer.complete(id, value))
                    .join()
                    .expect("completer thread");
            }
            Ev::Later(delay, ev) => {
                core.set_timer(delay, *ev).expect("timer");
            }
            Ev::Queued(id) => {
                self.report(Report::Queued(core.queued_bytes(id), core.queued_files(id)))
            }
        }
    }
}

/// A self-signed certificate for localhost/127.0.0.1, and configs that trust it.
pub struct Certs {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The server's certificate and signing key (for a server config of a test's own).
    pub key: Arc<rustls::sign::CertifiedKey>,
    pub provider: Arc<rustls::crypto::CryptoProvider>,
}

pub fn certs() -> Certs {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let der = CertificateDer::from_pem_slice(cert.pem().as_bytes()).expect("cert der");
    let key_der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
    let signer = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .expect("signer");
    let key = Arc::new(rustls::sign::CertifiedKey::new(vec![der.clone()], signer));
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Certs {
        server: Arc::new(server),
        client: Arc::new(client),
        key,
        provider,
    }
}

/// A running loop with a plain and a TLS listener.
pub struct Harness {
    pub tx: EventSender<Ev>,
    reports: Receiver<Report>,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub certs: Certs,
    pub gate: Arc<Gate>,
    pub stats: Arc<actionwire_reactor::ReactorStats>,
    shutdown: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Harness {
    pub fn start(cfg: ReactorConfig, opts: ListenerOptions) -> Harness {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Harness::try_start_at(cfg, opts, any).expect("listen")
    }

    /// A loop whose TLS listener uses `server` (the harness's own certificates stay in
    /// `certs`, unused by it).
    pub fn start_with_server_tls(
        cfg: ReactorConfig,
        opts: ListenerOptions,
        server: Arc<rustls::ServerConfig>,
    ) -> Harness {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Harness::try_start_with(cfg, opts, any, Some(server)).expect("listen")
    }

    /// A loop whose plain listener is on `plain` (its TLS one on a free port).
    pub fn try_start_at(
        cfg: ReactorConfig,
        opts: ListenerOptions,
        plain: SocketAddr,
    ) -> io::Result<Harness> {
        Harness::try_start_with(cfg, opts, plain, None)
    }

    fn try_start_with(
        cfg: ReactorConfig,
        opts: ListenerOptions,
        plain: SocketAddr,
        server: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Harness> {
        let (reports_tx, reports) = mpsc::channel();
        let gate = Arc::new(Gate::default());
        let toy = Toy {
            reports: reports_tx,
            gate: Arc::clone(&gate),
            timers: Vec::new(),
        };
        let certs = certs();
        let mut reactor = Reactor::new(cfg, toy).expect("reactor");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let plain = reactor.listen(plain, opts.clone(), ())?;
        let tls_opts = ListenerOptions {
            tls: Some(server.unwrap_or_else(|| Arc::clone(&certs.server))),
            ..opts
        };
        let tls = reactor.listen(any, tls_opts, ()).expect("listen tls");
        let tx = reactor.event_sender();
        let shutdown = reactor.shutdown_handle();
        let stats = reactor.stats();
        let thread = std::thread::spawn(move || reactor.run());
        Ok(Harness {
            tx,
            reports,
            plain,
            tls,
            certs,
            gate,
            stats,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn default() -> Harness {
        Harness::start(ReactorConfig::default(), ListenerOptions::default())
    }

    pub fn send(&self, ev: Ev) {
        self.tx.send(ev).expect("loop running");
    }

    /// The next report, whatever it is.
    pub fn next(&self) -> Report {
        match self.reports.recv_timeout(GUARD) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => panic!("no report from the loop in {GUARD:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the loop has stopped"),
        }
    }

    /// Skips reports until `f` picks one.
    pub fn wait<T>(&self, mut f: impl FnMut(Report) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.next()) {
                return t;
            }
        }
    }

    pub fn opened(&self, kind: EndpointKind) -> ConnId {
        self.wait(|r| match r {
            Report::Opened(id, k) if k == kind => Some(id),
            _ => None,
        })
    }

    pub fn closed(&self, id: ConnId) -> (CloseReason, usize, Instant) {
        self.wait(|r| match r {
            Report::Closed(i, reason, q, at) if i == id => Some((reason, q, at)),
            _ => None,
        })
    }

    /// Opens an outbound endpoint to `addr` and waits until it is open (or fails).
    pub fn connect(&self, addr: SocketAddr, opts: ConnectOptions) -> ConnId {
        self.send(Ev::Connect(addr, opts));
        self.opened(EndpointKind::Outbound)
    }

    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            config: Arc::clone(&self.certs.client),
            server_name: ServerName::try_from("localhost").expect("name"),
        }
    }

    /// Interrupts the loop thread with a signal (a no-op handler, installed without
    /// SA_RESTART): whatever system call it is in returns EINTR.
    pub fn interrupt(&self) {
        use std::os::unix::thread::JoinHandleExt;
        extern "C" fn nothing(_: libc::c_int) {}
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            // SAFETY: installs a handler that does nothing, for a signal nothing else uses.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = 0;
                libc::sigemptyset(&mut action.sa_mask);
                assert_eq!(
                    libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
                    0
                );
            }
        });
        let thread = self.thread.as_ref().expect("running").as_pthread_t();
        // SAFETY: the loop thread is alive (we hold its handle); the signal is handled.
        assert_eq!(unsafe { libc::pthread_kill(thread, libc::SIGUSR2) }, 0);
    }

    /// Loop turns so far (every bucket of the turn histogram).
    pub fn turns(&self) -> u64 {
        self.stats
            .loop_turns
            .iter()
            .map(|t| t.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Returns once every loop turn begun so far has finished, all its passes included
    /// (the turn counter moves only at the end of a turn; a ping makes turns happen).
    pub fn settle(&self) {
        self.send(Ev::Ping);
        self.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
        let before = self.turns();
        while self.turns() == before {
            self.send(Ev::Ping);
            self.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
        }
    }

    /// Starts a graceful shutdown without waiting for the loop (see [`Harness::join`]).
    pub fn begin_shutdown(&self) {
        self.shutdown.shutdown();
    }

    /// Shuts the loop down and waits for it to stop.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown.shutdown();
        self.join()
    }

    /// Shuts the loop down, waits for it to stop, and returns every report not read yet.
    pub fn stop_collecting(mut self) -> (io::Result<()>, Vec<Report>) {
        self.shutdown.shutdown();
        self.join_collecting()
    }

    pub fn join(&mut self) -> io::Result<()> {
        self.join_collecting().0
    }

    fn join_collecting(&mut self) -> (io::Result<()>, Vec<Report>) {
        let thread = self.thread.take().expect("running");
        let deadline = Instant::now() + GUARD;
        let mut reports = Vec::new();
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the loop did not stop");
            // Drain reports meanwhile (kept for the caller).
            reports.extend(self.reports.recv_timeout(Duration::from_millis(50)));
        }
        let result = thread.join().expect("loop thread");
        reports.extend(self.reports.try_iter());
        (result, reports)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown.shutdown();
        }
    }
}

/// A blocking test client.
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(GUARD)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read");
    buf
}

/// Writes `line` and a newline.
pub fn say(s: &mut impl Write, line: &str) {
    s.write_all(format!("{line}\n").as_bytes()).expect("write");
}

/// Reads until EOF; the bytes read.
pub fn read_to_end(s: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

/// Waits until `cond` holds, checking every 5 ms, at most `GUARD`: for state another thread
/// makes visible only through a counter.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {GUARD:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
