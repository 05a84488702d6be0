//! One load thread: its connections on one `mio::Poll`, the requests it writes, the replies
//! it times and classifies, and what it recorded (see the crate header for the modes).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::reply::{Verdict, classify};
use crate::{Mode, Plan, Shared, interval_histogram, new_histogram};

/// What one load thread recorded.
pub(crate) struct Recorded {
    pub(crate) all: Histogram<u64>,
    pub(crate) seconds: Vec<Histogram<u64>>,
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

pub(crate) struct Worker {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    hist: Histogram<u64>,
    /// The same latencies, one histogram per second of the measurement.
    seconds: Vec<Histogram<u64>>,
    buf: Vec<u8>,
    /// When to look for requests past `--reply-timeout` next (ns since start).
    next_timeout_check: u64,
}

impl Worker {
    pub(crate) fn new(plan: Arc<Plan>, shared: Arc<Shared>, n: usize) -> Result<Worker, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let mut w = Worker {
            plan,
            shared,
            poll,
            conns: Vec::with_capacity(n),
            hist: new_histogram(),
            seconds: Vec::new(),
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
        let mut stream = match self.plan.source {
            None => TcpStream::connect(self.plan.addr)?,
            Some(ip) => connect_from(ip, self.plan.addr)?,
        };
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
            next_request: if self.plan.in_order {
                0
            } else {
                i % self.plan.requests.len()
            },
            next_due: self.now() + offset,
        })
    }

    pub(crate) fn run(mut self) -> Result<Recorded, String> {
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
        Ok(Recorded {
            all: self.hist,
            seconds: self.seconds,
        })
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
                let latency = now.saturating_sub(sent).max(1);
                self.hist.saturating_record(latency);
                let second = ((now - self.plan.record_from) / 1_000_000_000) as usize;
                if self.seconds.len() <= second {
                    self.seconds.resize_with(second + 1, interval_histogram);
                }
                // `record` grows these (auto-resizing) histograms; saturating would clamp.
                if self.seconds[second].record(latency).is_err() {
                    self.seconds[second].saturating_record(latency);
                }
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

/// A non-blocking connect from a chosen local address (the connect completes later, as
/// with [`TcpStream::connect`]).
fn connect_from(ip: std::net::IpAddr, to: std::net::SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(std::net::SocketAddr::new(ip, 0)))?;
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The socket cannot take bytes now: full, or its connect is still in progress (the
/// WRITABLE edge of the connect brings us back).
fn not_ready(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
    )
}
