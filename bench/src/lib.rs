//! actionwire-bench: the load generator behind `actionwire bench`, for any line protocol,
//! on its own mio loops (not part of the server library).
//!
//! Each thread owns a share of the connections and one `mio::Poll`. A connection writes
//! requests (cycling through `--request` lines) and reads reply lines:
//! - closed loop (default): `--pipeline K` requests in flight; each reply sends the next;
//! - open loop (`--rate R`): requests leave at fixed intended times whatever the replies do,
//!   and latency is measured from the intended time, so a stall is charged to every request
//!   it delayed (coordinated omission corrected, as wrk2 does).
//!
//! Other modes: `--idle N` holds N connections open and reports how many are open each
//! second; `--handshakes` connects, handshakes (TLS), reads the welcome and closes, in a loop.
//! Latencies go into HdrHistograms (ns), merged across threads for the summary.
//!
//! A benchmark that counts failures as throughput lies, so every reply is classified
//! (`reply.rs`): error replies, replies not matching `--expect`, requests left unanswered
//! past `--reply-timeout`, and connections lost are errors, shown in the progress line and
//! the summary; the CLI exits non-zero when any occurred unless `--allow-errors`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;

mod reply;
mod summary;

pub use reply::{Verdict, classify, is_error_reply};
pub use summary::{Latency, Params, Summary, print, write_hgrm};

/// Command-line options of `actionwire bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server to load, HOST:PORT (loopback addresses only make sense on one machine).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub target: String,
    /// Connections in all (spread over --threads).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// How long to measure, after the warm-up (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time before measuring starts (requests run, nothing is recorded).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// A request line (repeatable: connections cycle through them). Default: `paramView x`.
    #[arg(long = "request", value_name = "LINE")]
    pub requests: Vec<String>,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Open loop: requests per second in all, sent on schedule; latency from intended times.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Do not read and drop a first (welcome) line on connect (e.g. for redis-server).
    #[arg(long)]
    pub no_skip_welcome: bool,
    /// Count a reply that does not start with PREFIX as an error. Without it, replies that
    /// report an error (a JSON `error` member, a RESP `-` line) are the errors.
    #[arg(long, value_name = "PREFIX")]
    pub expect: Option<String>,
    /// A request without a reply after this long is an error (its connection is closed).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub reply_timeout: Duration,
    /// Exit with status 0 even when errors occurred (they are still counted and shown).
    #[arg(long)]
    pub allow_errors: bool,
    /// Write the latency distribution to FILE in HdrHistogram's percentile format (.hgrm, µs).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Line ending appended to each request.
    #[arg(long, default_value = "\n", hide_default_value = true)]
    pub eol: String,
    /// Speak TLS (needs --ca).
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// PEM CA certificate that signs the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Server name to verify with --tls.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Load-generator threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Hold N idle connections open for --duration and report how many are open.
    #[arg(long, value_name = "N", conflicts_with_all = ["handshakes", "rate"])]
    pub idle: Option<usize>,
    /// Measure connection setups per second: connect, (TLS) handshake, welcome, close.
    #[arg(long, conflicts_with = "rate")]
    pub handshakes: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Counters shared by the threads, for the progress line.
#[derive(Default)]
struct Shared {
    requests: AtomicU64,
    error_replies: AtomicU64,
    unexpected: AtomicU64,
    timeouts: AtomicU64,
    closed: AtomicU64,
    open: AtomicUsize,
    connect_errors: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn errors(&self) -> u64 {
        [
            &self.error_replies,
            &self.unexpected,
            &self.timeouts,
            &self.closed,
            &self.connect_errors,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Requests,
    Idle,
    Handshakes,
}

/// Everything a thread needs, fixed for the run.
struct Plan {
    addr: SocketAddr,
    mode: Mode,
    requests: Vec<Vec<u8>>,
    pipeline: usize,
    /// Nanoseconds between requests on one connection (open loop).
    interval_ns: Option<u64>,
    skip_welcome: bool,
    expect: Option<Vec<u8>>,
    reply_timeout_ns: u64,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    start: Instant,
    /// Recording starts and ends at these offsets from `start`.
    record_from: u64,
    end: u64,
}

/// Runs a benchmark and prints progress to stderr; returns the summary.
pub fn run(args: &BenchArgs) -> Result<Summary, String> {
    let addr = args
        .target
        .to_socket_addrs()
        .map_err(|e| format!("--target {}: {e}", args.target))?
        .next()
        .ok_or_else(|| format!("--target {}: no address", args.target))?;
    let mode = match (args.idle, args.handshakes) {
        (Some(_), _) => Mode::Idle,
        (None, true) => Mode::Handshakes,
        (None, false) => Mode::Requests,
    };
    let connections = args.idle.unwrap_or(args.connections);
    if connections == 0 || args.threads == 0 || args.pipeline == 0 {
        return Err("--connections, --threads and --pipeline must be at least 1".into());
    }
    let requests: Vec<Vec<u8>> = if args.requests.is_empty() {
        vec![format!("paramView x{}", args.eol).into_bytes()]
    } else {
        args.requests
            .iter()
            .map(|r| format!("{r}{}", args.eol).into_bytes())
            .collect()
    };
    let interval_ns = match args.rate {
        Some(r) if r <= 0.0 || !r.is_finite() => return Err("--rate must be positive".into()),
        Some(r) => Some(((1e9 * connections as f64) / r).max(1.0) as u64),
        None => None,
    };
    let tls = if args.tls {
        let ca = args.ca.as_ref().ok_or("--tls needs --ca FILE")?;
        Some((client_config(ca)?, server_name(&args.server_name)?))
    } else {
        None
    };
    let start = Instant::now();
    let warm = args.warmup.as_nanos() as u64;
    let plan = Arc::new(Plan {
        addr,
        mode,
        requests,
        pipeline: args.pipeline,
        interval_ns,
        skip_welcome: !args.no_skip_welcome,
        expect: args.expect.as_ref().map(|e| e.as_bytes().to_vec()),
        reply_timeout_ns: u64::try_from(args.reply_timeout.as_nanos()).unwrap_or(u64::MAX),
        tls,
        start,
        record_from: warm,
        end: warm + args.duration.as_nanos() as u64,
    });
    let shared = Arc::new(Shared::default());
    let threads = args.threads.min(connections);
    let mut handles = Vec::new();
    for t in 0..threads {
        let n = connections / threads + usize::from(t < connections % threads);
        let (plan, shared) = (Arc::clone(&plan), Arc::clone(&shared));
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || Worker::new(plan, shared, n).and_then(Worker::run))
                .map_err(|e| format!("cannot start a thread: {e}"))?,
        );
    }
    progress(&plan, &shared);
    let mut hist = new_histogram();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(part)) => {
                if let Err(e) = hist.add(&part) {
                    failure = Some(format!("merging histograms: {e}"));
                }
            }
            Ok(Err(e)) => failure = Some(e.to_string()),
            Err(_) => failure = Some("a benchmark thread panicked".into()),
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let seconds = args.duration.as_secs_f64();
    let requests = shared.requests.load(Ordering::Relaxed);
    let latency = (mode == Mode::Requests && requests > 0).then(|| Latency::of(&hist));
    if let Some(path) = &args.hgrm {
        let write = || -> io::Result<()> {
            let mut f = io::BufWriter::new(std::fs::File::create(path)?);
            write_hgrm(&hist, &mut f)?;
            f.flush()
        };
        write().map_err(|e| format!("--hgrm {}: {e}", path.display()))?;
    }
    let connect_errors = shared.connect_errors.load(Ordering::Relaxed);
    let open = shared.open.load(Ordering::Relaxed);
    let nothing = match mode {
        Mode::Idle => open == 0,
        _ => requests == 0,
    };
    if nothing && connect_errors > 0 {
        return Err(format!(
            "nothing reached {addr}: {connect_errors} connections failed (is the server up?)"
        ));
    }
    Ok(Summary {
        mode: match mode {
            Mode::Requests if args.rate.is_some() => "open-loop",
            Mode::Requests => "closed-loop",
            Mode::Idle => "idle",
            Mode::Handshakes => "handshakes",
        },
        params: Params {
            target: args.target.clone(),
            requests: plan
                .requests
                .iter()
                .map(|r| String::from_utf8_lossy(r).trim_end().to_string())
                .collect(),
            connections,
            threads,
            pipeline: args.pipeline,
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            tls: args.tls,
            expect: args.expect.clone(),
            reply_timeout_s: args.reply_timeout.as_secs_f64(),
        },
        connections,
        seconds,
        requests,
        errors: shared.errors(),
        error_replies: shared.error_replies.load(Ordering::Relaxed),
        unexpected: shared.unexpected.load(Ordering::Relaxed),
        timeouts: shared.timeouts.load(Ordering::Relaxed),
        closed: shared.closed.load(Ordering::Relaxed),
        connect_errors,
        per_second: requests as f64 / seconds,
        open,
        latency_us: latency,
    })
}

/// One progress line per second on stderr until the run ends.
fn progress(plan: &Plan, shared: &Shared) {
    let mut last = 0;
    let mut second = 0u64;
    let total = Duration::from_nanos(plan.end);
    while plan.start.elapsed() < total {
        std::thread::sleep(Duration::from_secs(1).min(total.saturating_sub(plan.start.elapsed())));
        second += 1;
        let now = shared.requests.load(Ordering::Relaxed);
        let phase = if plan.start.elapsed() <= Duration::from_nanos(plan.record_from) {
            " (warm-up)"
        } else {
            ""
        };
        eprintln!(
            "{second:>4}s  {:>10} /s  errors {:>6}  open {:>6}{phase}",
            now - last,
            shared.errors(),
            shared.open.load(Ordering::Relaxed),
        );
        last = now;
    }
    shared.stop.store(true, Ordering::Relaxed);
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 100 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn client_config(ca: &PathBuf) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--ca {}: {e:?}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("--ca {}: {e:?}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("--server-name {name}: {e}"))
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the TCP connect (and TLS handshake) and, unless disabled, the welcome.
    Starting,
    Running,
    Closed,
}

struct Conn {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    phase: Phase,
    /// Plaintext received and not yet split into lines.
    input: Vec<u8>,
    /// Plaintext to send.
    output: Vec<u8>,
    /// Send times (ns since start) of requests awaiting replies, oldest first.
    inflight: VecDeque<u64>,
    next_request: usize,
    /// Open loop: intended time of the next request.
    next_due: u64,
}

struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    hist: Histogram<u64>,
    buf: Vec<u8>,
    /// When to look for requests past `--reply-timeout` next (ns since start).
    next_timeout_check: u64,
}

impl Worker {
    fn new(plan: Arc<Plan>, shared: Arc<Shared>, n: usize) -> Result<Worker, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut w = Worker {
            plan,
            shared,
            poll,
            conns: Vec::with_capacity(n),
            hist: new_histogram(),
            buf: vec![0; 64 * 1024],
            next_timeout_check: 0,
        };
        for i in 0..n {
            match w.open(i) {
                Ok(c) => w.conns.push(c),
                Err(e) => return Err(format!("connect to {}: {e}", w.plan.addr)),
            }
        }
        Ok(w)
    }

    fn now(&self) -> u64 {
        self.plan.start.elapsed().as_nanos() as u64
    }

    fn open(&mut self, i: usize) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(self.plan.addr)?;
        stream.set_nodelay(true)?;
        self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = match &self.plan.tls {
            Some((cfg, name)) => Some(Box::new(
                rustls::ClientConnection::new(Arc::clone(cfg), name.clone())
                    .map_err(io::Error::other)?,
            )),
            None => None,
        };
        // Spread open-loop schedules over one interval so connections do not fire together.
        let offset = self
            .plan
            .interval_ns
            .map_or(0, |iv| fastrand::u64(0..iv.max(1)));
        Ok(Conn {
            stream,
            tls,
            phase: Phase::Starting,
            input: Vec::new(),
            output: Vec::new(),
            inflight: VecDeque::new(),
            next_request: i % self.plan.requests.len(),
            next_due: self.now() + offset,
        })
    }

    fn run(mut self) -> Result<Histogram<u64>, String> {
        let mut events = Events::with_capacity(1024);
        // Without TLS and without a welcome to wait for, connections start at once.
        for i in 0..self.conns.len() {
            self.started_if_ready(i);
        }
        while !self.shared.stop.load(Ordering::Relaxed) && self.now() < self.plan.end {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e.to_string());
            }
            let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for i in ready {
                if i < self.conns.len() {
                    self.service(i);
                }
            }
            if self.plan.interval_ns.is_some() {
                self.send_due();
            }
            self.expire_requests();
        }
        Ok(self.hist)
    }

    /// Poll timeout: the next open-loop send, or a short tick to notice the end.
    ///
    /// epoll sleeps in whole milliseconds (mio rounds up), so a send due sooner than that is
    /// waited for by polling without blocking: otherwise sends would leave in 1 ms batches and
    /// that delay would be charged to the server as latency. At high rates the open-loop
    /// generator therefore keeps its core busy.
    fn timeout(&self) -> Duration {
        let now = self.now();
        let tick = Duration::from_millis(50);
        if self.plan.interval_ns.is_none() {
            return tick;
        }
        let wait = self
            .conns
            .iter()
            .filter(|c| c.phase == Phase::Running)
            .map(|c| Duration::from_nanos(c.next_due.saturating_sub(now)))
            .min()
            .unwrap_or(tick)
            .min(tick);
        if wait < Duration::from_millis(1) {
            Duration::ZERO
        } else {
            wait - Duration::from_millis(1)
        }
    }

    fn service(&mut self, i: usize) {
        if self.conns[i].phase == Phase::Closed {
            return;
        }
        if let Err(e) = self.read(i) {
            self.fail(i, &e);
            return;
        }
        self.process_lines(i);
        if let Err(e) = self.flush(i) {
            self.fail(i, &e);
        }
    }

    /// Requests unanswered for longer than `--reply-timeout` are errors; their connection
    /// is closed (its later replies could not be told apart from the next requests').
    /// Checked every 50 ms at most.
    fn expire_requests(&mut self) {
        let now = self.now();
        if self.plan.mode != Mode::Requests || now < self.next_timeout_check {
            return;
        }
        self.next_timeout_check = now + 50_000_000;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let late = c.phase == Phase::Running
                && c.inflight
                    .front()
                    .is_some_and(|&sent| now.saturating_sub(sent) > self.plan.reply_timeout_ns);
            if late {
                let n = c.inflight.len() as u64;
                self.shared.timeouts.fetch_add(n, Ordering::Relaxed);
                eprintln!(
                    "connection {i}: no reply within {:?}; closing it",
                    Duration::from_nanos(self.plan.reply_timeout_ns)
                );
                self.close(i);
            }
        }
    }

    /// Closes a connection on our side (not counted as an error by itself).
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.phase == Phase::Running {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        c.phase = Phase::Closed;
        c.inflight.clear();
        let _ = self.poll.registry().deregister(&mut c.stream);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }

    fn fail(&mut self, i: usize, e: &io::Error) {
        let c = &mut self.conns[i];
        if c.phase == Phase::Running {
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
        }
        if c.phase != Phase::Closed && self.plan.mode != Mode::Handshakes {
            let counter = if c.phase == Phase::Running {
                &self.shared.closed
            } else {
                &self.shared.connect_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if e.kind() != io::ErrorKind::UnexpectedEof {
                eprintln!("connection {i}: {e}");
            }
        }
        c.phase = Phase::Closed;
        let _ = self.poll.registry().deregister(&mut c.stream);
        if self.plan.mode == Mode::Handshakes {
            self.reopen(i);
        }
    }

    fn reopen(&mut self, i: usize) {
        let _ = self.poll.registry().deregister(&mut self.conns[i].stream);
        match self.open(i) {
            Ok(c) => self.conns[i] = c,
            Err(e) => {
                self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("reconnect {i}: {e}");
            }
        }
    }

    /// Reads all available bytes (decrypting when TLS) into the connection's input.
    fn read(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        loop {
            let n = match &mut c.tls {
                None => match c.stream.read(&mut self.buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        c.input.extend_from_slice(&self.buf[..n]);
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                },
                Some(tls) => {
                    let n = match tls.read_tls(&mut c.stream) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    tls.process_new_packets().map_err(io::Error::other)?;
                    loop {
                        match tls.reader().read(&mut self.buf) {
                            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                            Ok(m) => c.input.extend_from_slice(&self.buf[..m]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    if n == 0 {
                        return Ok(());
                    }
                    n
                }
            };
            if n < self.buf.len() && c.tls.is_none() {
                // A short read drained the socket; the next edge brings more.
                return Ok(());
            }
        }
    }

    /// The connection is usable once TCP (and TLS) are up and the welcome was skipped.
    fn started_if_ready(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.phase != Phase::Starting {
            return;
        }
        if c.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
            return;
        }
        if self.plan.skip_welcome {
            let Some(end) = memchr::memchr(b'\n', &c.input) else {
                return;
            };
            c.input.drain(..=end);
        }
        c.phase = Phase::Running;
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        match self.plan.mode {
            Mode::Idle => {}
            Mode::Handshakes => {
                let now = self.now();
                if now >= self.plan.record_from && now < self.plan.end {
                    self.shared.requests.fetch_add(1, Ordering::Relaxed);
                }
                self.shared.open.fetch_sub(1, Ordering::Relaxed);
                let c = &mut self.conns[i];
                if let Some(tls) = &mut c.tls {
                    tls.send_close_notify();
                    let _ = tls.write_tls(&mut c.stream);
                }
                // Close with a reset: thousands of closes a second would otherwise fill the
                // client's ports with TIME_WAIT sockets.
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
                self.conns[i].phase = Phase::Closed;
                self.reopen(i);
            }
            Mode::Requests => {
                if self.plan.interval_ns.is_none() {
                    for _ in 0..self.plan.pipeline {
                        let now = self.now();
                        self.queue_request(i, now);
                    }
                }
            }
        }
    }

    fn queue_request(&mut self, i: usize, intended: u64) {
        let c = &mut self.conns[i];
        let req = &self.plan.requests[c.next_request];
        c.next_request = (c.next_request + 1) % self.plan.requests.len();
        c.output.extend_from_slice(req);
        c.inflight.push_back(intended);
    }

    /// Handles every complete reply line: latency, errors, and the next request.
    fn process_lines(&mut self, i: usize) {
        self.started_if_ready(i);
        if self.conns[i].phase != Phase::Running || self.plan.mode != Mode::Requests {
            self.conns[i].input.clear();
            return;
        }
        let now = self.now();
        let recording = now >= self.plan.record_from && now < self.plan.end;
        let mut consumed = 0;
        let mut replies = 0;
        loop {
            let c = &mut self.conns[i];
            let Some(end) = memchr::memchr(b'\n', &c.input[consumed..]) else {
                break;
            };
            let line = &c.input[consumed..consumed + end];
            let verdict = classify(line, self.plan.expect.as_deref());
            consumed += end + 1;
            let Some(sent) = c.inflight.pop_front() else {
                continue; // a line nobody asked for (keep-alive, chat): not a reply
            };
            replies += 1;
            if recording {
                self.hist.saturating_record(now.saturating_sub(sent).max(1));
                self.shared.requests.fetch_add(1, Ordering::Relaxed);
                let counter = match verdict {
                    Verdict::Ok => None,
                    Verdict::ErrorReply => Some(&self.shared.error_replies),
                    Verdict::Unexpected => Some(&self.shared.unexpected),
                };
                if let Some(c) = counter {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.conns[i].input.drain(..consumed);
        if self.plan.interval_ns.is_none() && now < self.plan.end {
            for _ in 0..replies {
                self.queue_request(i, now);
            }
        }
    }

    /// Open loop: queue every request whose intended time has come, then write.
    fn send_due(&mut self) {
        let Some(iv) = self.plan.interval_ns else {
            return;
        };
        let now = self.now();
        for i in 0..self.conns.len() {
            if self.conns[i].phase != Phase::Running {
                continue;
            }
            let mut due = false;
            while self.conns[i].next_due <= now && self.conns[i].next_due < self.plan.end {
                let at = self.conns[i].next_due;
                self.queue_request(i, at);
                self.conns[i].next_due += iv;
                due = true;
            }
            if due && let Err(e) = self.flush(i) {
                self.fail(i, &e);
            }
        }
    }

    /// Writes pending plaintext (through TLS when on) until done or the socket is full.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        match &mut c.tls {
            None => {
                while !c.output.is_empty() {
                    match c.stream.write(&c.output) {
                        Ok(n) => {
                            c.output.drain(..n);
                        }
                        Err(e) if not_ready(&e) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Some(tls) => {
                if !c.output.is_empty() && !tls.is_handshaking() {
                    let n = tls.writer().write(&c.output)?;
                    c.output.drain(..n);
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut c.stream) {
                        Ok(_) => {}
                        Err(e) if not_ready(&e) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
}

/// The socket cannot take bytes now: full, or its connect is still in progress (the
/// WRITABLE edge of the connect brings us back).
fn not_ready(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
    )
}
