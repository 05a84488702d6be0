//! The event loop: one `mio::Poll`, the connection slab, and the passes of a loop turn.
//!
//! A turn is: poll → record readiness (edge-triggered, kept as data per connection) → drain
//! worker completions → accept → read ready connections (bounded work each) → expire
//! deadlines → flush every connection that got output (write before sleep) → remove dead
//! connections. The poll timeout is zero while work is left over, else the next deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::conn::{CloseReason, Conn, ConnId, Phase, Transport};
use crate::errors::{IoClass, classify};
use crate::output::{Flushed, OutQueue};
use crate::pool::{Done, JobPanic, Pool};
use crate::wheel::{Link, Links, Wheel};

const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Size of the loop's shared read buffer.
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per turn before it is requeued (fairness).
const READS_PER_TURN: usize = 4;
/// Bytes written per connection per turn before it is requeued (fairness).
const WRITE_BUDGET: usize = 1 << 20;
/// Accepts per listener per turn before it is requeued (fairness).
const ACCEPTS_PER_TURN: usize = 256;
/// Queued files per connection at which reading pauses (each holds a file descriptor).
const MAX_QUEUED_FILES: usize = 4;
/// Length of a timer-wheel tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Timers fired per loop turn before the rest wait for the next turn (fairness).
const TIMERS_PER_TURN: usize = 4096;
/// Largest random delay added to keep-alive and idle deadlines, in ticks, so connections
/// that arrived (or spoke) together do not all fire in the same tick.
const MAX_JITTER_TICKS: u64 = 10;
/// How long to stop accepting after running out of file descriptors.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// Loop limits, set by the application from its configuration.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Open connections at most; accepting pauses at this count and resumes below 90 %.
    pub max_connections: usize,
    pub backlog: u32,
    /// Worker threads for jobs (at least 1).
    pub workers: usize,
    /// A connection whose queued output stays above this for `output_soft_duration` is
    /// disconnected.
    pub output_soft_limit: usize,
    pub output_soft_duration: Duration,
    /// A connection whose queued output exceeds this is disconnected at once.
    pub output_hard_limit: usize,
    /// Reading from a connection pauses while its own queued output exceeds this.
    pub read_pause_bytes: usize,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    /// How long a closing connection may take to drain its output and see the peer's FIN.
    pub linger: Duration,
}

/// What a listener's connections are: TLS or not, their timers, and a tag the application
/// gets with each new connection (to tell its protocols apart).
#[derive(Clone, Default)]
pub struct ListenerOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Send a keep-alive after this long without receiving anything (zero: off).
    pub keepalive_interval: Duration,
    /// Close after this long without receiving anything (zero: off).
    pub idle_timeout: Duration,
    /// Close a connection whose handshake is not complete after this long (zero: off).
    pub handshake_timeout: Duration,
    /// SO_KEEPALIVE on accepted sockets.
    pub tcp_keepalive: bool,
    /// Handed to [`Handler::new_session`].
    pub tag: u8,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            max_connections: 10_000,
            backlog: 1024,
            workers: 2,
            output_soft_limit: 1 << 20,
            output_soft_duration: Duration::from_secs(10),
            output_hard_limit: 8 << 20,
            read_pause_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(5),
            linger: Duration::from_secs(5),
        }
    }
}

/// Counters shared with other threads (the `status` action, tests).
#[derive(Debug, Default)]
pub struct ReactorStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    pub closed: AtomicU64,
    pub closed_output_limit: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub keepalive_pings: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    /// Loop turn durations (poll return to the next poll), a histogram in µs: counts per
    /// upper bound of [`LOOP_TURN_BOUNDS_US`], the last one for everything above.
    pub loop_turns: [AtomicU64; LOOP_TURN_BOUNDS_US.len() + 1],
    pub loop_turn_ns_sum: AtomicU64,
}

/// Upper bounds (µs) of the loop turn histogram buckets.
pub const LOOP_TURN_BOUNDS_US: [u64; 10] =
    [10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000, 100_000];

impl ReactorStats {
    fn record_turn(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LOOP_TURN_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LOOP_TURN_BOUNDS_US.len());
        self.loop_turns[i].fetch_add(1, Ordering::Relaxed);
        self.loop_turn_ns_sum.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A timer that came due for an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The handshake (first line, or TLS) did not complete within `handshake_timeout`. The
    /// handler says goodbye; the reactor closes the connection if the handler did not.
    Handshake,
    /// Nothing was received for `idle_timeout`. Closed as above.
    Idle,
    /// Nothing was received for `keepalive_interval` (again, after the last ping).
    KeepAlive,
}

/// The application side of the loop. Every method runs on the loop thread.
pub trait Handler: Sized {
    /// Per-connection application state, stored in the connection's slab slot.
    type Session;
    /// What a job sends back.
    type Completion: Send + 'static;

    /// A connection was accepted on a listener with this `tag`: create its state.
    fn new_session(&mut self, id: ConnId, peer: SocketAddr, tag: u8) -> Self::Session;
    /// The connection is ready for protocol traffic (send the welcome here).
    fn on_open(&mut self, core: &mut Core<Self>, id: ConnId);
    /// Bytes arrived on an open connection. `data` may be modified in place.
    fn on_data(&mut self, core: &mut Core<Self>, id: ConnId, data: &mut [u8]);
    /// A job for an open connection finished.
    fn on_completion(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        result: Result<Self::Completion, JobPanic>,
    );
    /// The connection is gone; its session is handed back.
    fn on_close(
        &mut self,
        core: &mut Core<Self>,
        id: ConnId,
        session: Self::Session,
        reason: CloseReason,
    );
    /// Shutdown began: listeners are closed; close connections as they finish.
    fn on_shutdown(&mut self, core: &mut Core<Self>);
    /// A timer came due for an open connection. For `Idle` and `Handshake`, return true to
    /// have the connection closed (after whatever goodbye the handler queued), false to keep
    /// it (e.g. a response is still being computed); `KeepAlive`'s return is ignored.
    fn on_timeout(&mut self, core: &mut Core<Self>, id: ConnId, timeout: Timeout) -> bool;
}

/// Asks a running loop to shut down gracefully (from any thread, e.g. a signal handler).
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the event loop for shutdown: {e}");
        }
    }
}

/// The loop state a [`Handler`] works on: connections, their output, the worker pool.
pub struct Core<H: Handler> {
    conns: Slab<Conn<H::Session>>,
    next_gen: u32,
    /// Connections with readable input left to process.
    ready: VecDeque<ConnId>,
    /// Connections with output to flush before sleeping.
    dirty: Vec<ConnId>,
    /// Connections marked dead, removed at the end of the turn.
    dead: Vec<ConnId>,
    /// One entry per connection: handshake, idle, keep-alive, linger and shutdown deadlines.
    wheel: Wheel,
    /// Linger and shutdown grace, in ticks.
    timers: TimerTicks,
    /// Each listener's connection timers, in ticks (0 = off), by listener index.
    listener_timers: Vec<ConnTimers>,
    /// Tick at which shutdown stops waiting.
    shutdown_tick: Option<u64>,
    origin: Instant,
    tick: u64,
    rng: fastrand::Rng,
    pool: Pool<H::Completion>,
    cfg: ReactorConfig,
    stats: Arc<ReactorStats>,
    shutting_down: bool,
    now: Instant,
    /// Completions to deliver later ([`Core::defer`]), earliest first.
    deferred: BinaryHeap<Reverse<Deferred<H::Completion>>>,
    deferred_seq: u64,
}

/// A completion waiting for its time. Ordered by time, then by arrival.
struct Deferred<C> {
    at: Instant,
    seq: u64,
    id: ConnId,
    payload: C,
}

impl<C> PartialEq for Deferred<C> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<C> Eq for Deferred<C> {}
impl<C> PartialOrd for Deferred<C> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<C> Ord for Deferred<C> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Clone, Copy)]
struct TimerTicks {
    linger: u64,
    shutdown_grace: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct ConnTimers {
    keepalive: u64,
    idle: u64,
    handshake: u64,
}

fn ticks(d: Duration) -> u64 {
    let t = TICK.as_millis();
    u64::try_from(d.as_millis().div_ceil(t)).unwrap_or(u64::MAX / 4)
}

impl<S> Links for Slab<Conn<S>> {
    fn link(&mut self, slot: u32) -> &mut Link {
        &mut self[slot as usize].timer
    }
}

/// `stamp` (low 32 bits of a tick) as a full tick, assuming it is not after `now`.
fn widen(stamp: u32, now: u64) -> u64 {
    now.saturating_sub(u64::from((now as u32).wrapping_sub(stamp)))
}

impl<H: Handler> Core<H> {
    fn conn(&self, id: ConnId) -> Option<&Conn<H::Session>> {
        self.conns
            .get(id.slot())
            .filter(|c| c.generation == id.generation())
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn<H::Session>> {
        self.conns
            .get_mut(id.slot())
            .filter(|c| c.generation == id.generation())
    }

    /// The session of a live connection (in any phase).
    pub fn session(&self, id: ConnId) -> Option<&H::Session> {
        self.conn(id).map(|c| &c.session)
    }

    pub fn session_mut(&mut self, id: ConnId) -> Option<&mut H::Session> {
        self.conn_mut(id).map(|c| &mut c.session)
    }

    /// True while the connection reads requests and accepts output.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(Conn::is_open)
    }

    pub fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.conn(id).map(|c| c.peer)
    }

    /// Ids of every connection still open.
    pub fn open_ids(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(slot, c)| ConnId::new(slot, c.generation))
            .collect()
    }

    /// Connections in the slab (open or closing).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The time at the start of this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The handshake of `id` is complete (for a plain connection: its first line arrived):
    /// the handshake timeout no longer applies.
    pub fn handshake_done(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            conn.handshaking = false;
        }
    }

    /// Counts as activity on `id` now (idle and keep-alive timers restart from here), for
    /// protocols where the server's answer, not only the client's bytes, ends a wait.
    pub fn touch(&mut self, id: ConnId) {
        let tick = self.tick as u32;
        if let Some(conn) = self.conn_mut(id) {
            conn.last_rx = tick;
        }
    }

    /// Stops reading from `id` until [`Core::resume_reading`] (the application cannot take
    /// more input yet, e.g. a pipelined HTTP request waits for the one before it).
    pub fn pause_reading(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            conn.app_paused = true;
        }
    }

    pub fn resume_reading(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id).filter(|c| c.app_paused) {
            conn.app_paused = false;
            if conn.readable && !conn.read_paused {
                self.mark_ready(id);
            }
        }
    }

    /// Links `id`'s wheel entry at its next deadline (or unlinks it when none applies).
    /// Deadlines are recomputed from the stamps when the entry fires.
    fn schedule(&mut self, id: ConnId) {
        let now = self.tick;
        let shutdown = self.shutdown_tick;
        let Some(conn) = self.conn(id) else {
            return;
        };
        let t = self.listener_timers[usize::from(conn.listener)];
        let last_rx = widen(conn.last_rx, now);
        let deadline = match conn.phase {
            Phase::Open => {
                let mut next = [
                    (conn.handshaking && t.handshake > 0)
                        .then(|| widen(conn.opened, now) + t.handshake),
                    (t.idle > 0).then(|| last_rx + t.idle),
                    (t.keepalive > 0)
                        .then(|| last_rx.max(widen(conn.last_ping, now)) + t.keepalive),
                ]
                .into_iter()
                .flatten()
                .min();
                if next.is_some() {
                    let jitter = (t.keepalive.max(t.idle) / 10).min(MAX_JITTER_TICKS);
                    next = next.map(|d| d + self.rng.u64(0..=jitter));
                }
                match (next, shutdown) {
                    (Some(d), Some(s)) => Some(d.min(s)),
                    (d, s) => d.or(s),
                }
            }
            // Closing connections have their linger deadline set by `close`.
            Phase::Draining(_) | Phase::Lingering(_) | Phase::Dead(_) => return,
        };
        let slot = id.slot() as u32;
        match deadline {
            Some(d) => self.wheel.insert(&mut self.conns, slot, d),
            None => self.wheel.cancel(&mut self.conns, slot),
        }
    }

    pub fn stats(&self) -> &Arc<ReactorStats> {
        &self.stats
    }

    /// Jobs queued or running on the workers.
    pub fn jobs_in_flight(&self) -> usize {
        self.pool.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Queues a copy of `bytes`. False if the connection is not open.
    pub fn send(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        self.enqueue(id, |q| q.push_bytes(bytes))
    }

    /// Queues an owned buffer. False if the connection is not open.
    pub fn send_owned(&mut self, id: ConnId, bytes: Vec<u8>) -> bool {
        self.enqueue(id, |q| q.push_owned(bytes))
    }

    /// Queues a shared (broadcast) chunk. False if the connection is not open.
    pub fn send_shared(&mut self, id: ConnId, bytes: &Arc<[u8]>) -> bool {
        self.enqueue(id, |q| q.push_shared(Arc::clone(bytes)))
    }

    /// Files queued on a connection and not yet completely written.
    pub fn queued_files(&self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| c.out.files())
    }

    /// Queues `len` bytes of a file, streamed as the socket drains.
    pub fn send_file(&mut self, id: ConnId, file: File, len: u64) -> bool {
        self.enqueue(id, |q| q.push_file(file, len))
    }

    fn enqueue(&mut self, id: ConnId, push: impl FnOnce(&mut OutQueue)) -> bool {
        let now = self.now;
        let (soft, soft_for, hard) = (
            self.cfg.output_soft_limit,
            self.cfg.output_soft_duration,
            self.cfg.output_hard_limit,
        );
        let Some(conn) = self.conn_mut(id).filter(|c| c.is_open()) else {
            return false;
        };
        push(&mut conn.out);
        let queued = conn.out.queued();
        let over = if queued > hard {
            Some("hard")
        } else if queued > soft {
            match conn.over_soft_since {
                None => {
                    conn.over_soft_since = Some(now);
                    None
                }
                Some(since) if now.duration_since(since) > soft_for => Some("soft"),
                Some(_) => None,
            }
        } else {
            conn.over_soft_since = None;
            None
        };
        if let Some(which) = over {
            log::warn!(
                "disconnecting {}: {queued} bytes of output queued, over the {which} limit \
                 (the client is not reading)",
                conn.peer
            );
            self.stats
                .closed_output_limit
                .fetch_add(1, Ordering::Relaxed);
            self.kill(id, CloseReason::OutputLimit);
            return false;
        }
        self.mark_dirty(id);
        true
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id)
            && !conn.in_dirty
        {
            conn.in_dirty = true;
            self.dirty.push(id);
        }
    }

    fn mark_ready(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id)
            && !conn.in_ready
        {
            conn.in_ready = true;
            self.ready.push_back(id);
        }
    }

    /// Closes a connection after its queued output is written. Nothing more is read from it
    /// or queued to it; `on_close` follows once it is gone.
    pub fn close(&mut self, id: ConnId, reason: CloseReason) {
        let mut deadline = self.tick + self.timers.linger;
        if let Some(s) = self.shutdown_tick {
            deadline = deadline.min(s);
        }
        if let Some(conn) = self.conn_mut(id).filter(|c| c.is_open()) {
            conn.phase = Phase::Draining(reason);
            self.wheel
                .insert(&mut self.conns, id.slot() as u32, deadline);
            self.mark_dirty(id);
        }
    }

    /// Drops a connection at the end of this turn, discarding its output.
    fn kill(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conn_mut(id)
            && !matches!(conn.phase, Phase::Dead(_))
        {
            conn.phase = Phase::Dead(reason);
            conn.out.clear();
            self.dead.push(id);
        }
    }

    /// Hands `payload` back through `on_completion` after `delay`, if the connection is
    /// still open then, without holding a worker meanwhile (e.g. an action that waits).
    pub fn defer(&mut self, id: ConnId, delay: Duration, payload: H::Completion) {
        self.deferred_seq += 1;
        self.deferred.push(Reverse(Deferred {
            at: self.now + delay,
            seq: self.deferred_seq,
            id,
            payload,
        }));
    }

    /// Runs `job` on a worker; its result comes back through `on_completion` if the
    /// connection is still open then.
    pub fn spawn<F>(&mut self, id: ConnId, job: F)
    where
        F: FnOnce() -> H::Completion + Send + 'static,
    {
        self.pool.spawn(id, Box::new(job));
    }

    fn next_generation(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = match self.next_gen.wrapping_add(1) {
            u32::MAX => 0,
            n => n,
        };
        g
    }
}

struct Listener {
    socket: TcpListener,
    opts: ListenerOptions,
    /// May have connections waiting (no WouldBlock seen since the last edge).
    ready: bool,
}

/// Why accepting is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptPause {
    /// At `max_connections`; resumes below 90 % of it.
    Limit,
    /// Out of file descriptors or memory; retried at the given time.
    Exhausted(Instant),
}

/// The event loop. Build it, add listeners, then [`Reactor::run`] it on its own thread.
pub struct Reactor<H: Handler> {
    poll: Poll,
    events: Option<Events>,
    listeners: Vec<Listener>,
    accept_pause: Option<AcceptPause>,
    core: Core<H>,
    handler: H,
    read_buf: Vec<u8>,
    completions: Vec<Done<H::Completion>>,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    fired: Vec<u32>,
    /// The fire budget ran out last turn: more timers are due now.
    timers_behind: bool,
}

impl<H: Handler> Reactor<H> {
    pub fn new(cfg: ReactorConfig, handler: H) -> io::Result<Reactor<H>> {
        Reactor::with_stats(cfg, Arc::new(ReactorStats::default()), handler)
    }

    /// As [`Reactor::new`], counting into `stats` (shared with the application).
    pub fn with_stats(
        cfg: ReactorConfig,
        stats: Arc<ReactorStats>,
        handler: H,
    ) -> io::Result<Reactor<H>> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let pool = Pool::new(cfg.workers.max(1), Arc::clone(&waker))?;
        let max = cfg
            .max_connections
            .clamp(1, crate::wheel::MAX_SLOT as usize);
        let timers = TimerTicks {
            linger: ticks(cfg.linger).max(1),
            shutdown_grace: ticks(cfg.shutdown_grace),
        };
        let origin = Instant::now();
        let core = Core {
            conns: Slab::new(),
            next_gen: 0,
            ready: VecDeque::new(),
            dirty: Vec::new(),
            dead: Vec::new(),
            wheel: Wheel::new(0),
            timers,
            listener_timers: Vec::new(),
            shutdown_tick: None,
            origin,
            tick: 0,
            rng: fastrand::Rng::new(),
            pool,
            cfg: ReactorConfig {
                max_connections: max,
                ..cfg
            },
            stats,
            shutting_down: false,
            now: Instant::now(),
            deferred: BinaryHeap::new(),
            deferred_seq: 0,
        };
        Ok(Reactor {
            poll,
            events: Some(Events::with_capacity(1024)),
            listeners: Vec::new(),
            accept_pause: None,
            core,
            handler,
            read_buf: vec![0; READ_BUF],
            completions: Vec::new(),
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            fired: Vec::new(),
            timers_behind: false,
        })
    }

    /// Binds a listener (dual-stack when `addr` is the IPv6 wildcard) and returns its address.
    /// With `tls`, every connection it accepts speaks TLS.
    pub fn listen(&mut self, addr: SocketAddr, opts: ListenerOptions) -> io::Result<SocketAddr> {
        if self.listeners.len() >= usize::from(u8::MAX) {
            return Err(io::Error::other("too many listeners"));
        }
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let backlog = i32::try_from(self.core.cfg.backlog).unwrap_or(i32::MAX);
        socket.listen(backlog)?;
        let mut listener = TcpListener::from_std(socket.into());
        let token = Token(LISTENER_BASE - self.listeners.len());
        self.poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)?;
        let local = listener.local_addr()?;
        self.core.listener_timers.push(ConnTimers {
            keepalive: ticks(opts.keepalive_interval),
            idle: ticks(opts.idle_timeout),
            handshake: ticks(opts.handshake_timeout),
        });
        self.listeners.push(Listener {
            socket: listener,
            opts,
            ready: true,
        });
        Ok(local)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.shutdown_flag),
            waker: Arc::clone(&self.waker),
        }
    }

    pub fn stats(&self) -> Arc<ReactorStats> {
        Arc::clone(&self.core.stats)
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Runs until shutdown completes (all connections closed).
    pub fn run(mut self) -> io::Result<()> {
        loop {
            let timeout = self.next_timeout();
            let mut events = self
                .events
                .take()
                .unwrap_or_else(|| Events::with_capacity(1024));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.core.now = Instant::now();
            self.core.tick = self.tick_at(self.core.now);
            let mut woke = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => woke = true,
                    Token(t) if t > LISTENER_BASE - self.listeners.len() && t <= LISTENER_BASE => {
                        self.listeners[LISTENER_BASE - t].ready = true;
                    }
                    token => {
                        let Some(id) = ConnId::from_token(token) else {
                            continue;
                        };
                        let Some(conn) = self.core.conn_mut(id) else {
                            continue; // stale event for a connection already gone
                        };
                        if ev.is_read_closed() {
                            conn.read_closed = true;
                        }
                        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                        let writable = ev.is_writable() || ev.is_error();
                        if readable {
                            conn.readable = true;
                        }
                        if writable {
                            conn.writable = true;
                        }
                        // Output also waits inside rustls (handshake records after a short
                        // write, close_notify) while the queue itself may be empty.
                        let has_output =
                            !conn.out.is_empty() || tls_wants_write(&mut conn.transport);
                        if readable && !conn.read_paused && !conn.app_paused {
                            self.core.mark_ready(id);
                        }
                        if writable && has_output {
                            self.core.mark_dirty(id);
                        }
                    }
                }
            }
            self.events = Some(events);
            if woke {
                self.on_wake();
            }
            self.deliver_deferred();
            self.accept_all();
            self.read_ready();
            self.expire_timers();
            // Jobs created this turn go to the workers in one hand-off.
            self.core.pool.dispatch();
            self.flush_dirty();
            self.reap_dead();
            self.core.stats.record_turn(self.core.now.elapsed());
            if self.core.shutting_down && self.core.conns.is_empty() {
                log::info!("all connections closed; event loop stopped");
                return Ok(());
            }
        }
    }

    fn tick_at(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.core.origin).as_millis() / TICK.as_millis())
            .unwrap_or(u64::MAX / 4)
    }

    /// The poll timeout: zero while work is left, else until the wheel's next tick or the
    /// accept retry, whichever comes first; forever when there is neither.
    fn next_timeout(&self) -> Option<Duration> {
        let c = &self.core;
        let accept_now = self.accept_pause.is_none() && self.listeners.iter().any(|l| l.ready);
        if !c.ready.is_empty()
            || !c.dirty.is_empty()
            || !c.dead.is_empty()
            || accept_now
            || self.timers_behind
        {
            return Some(Duration::ZERO);
        }
        let accept_retry = match self.accept_pause {
            Some(AcceptPause::Exhausted(at)) => Some(at),
            _ => None,
        };
        let wheel = c.wheel.next_tick().map(|t| {
            let ms = t.saturating_mul(TICK.as_millis() as u64);
            c.origin + Duration::from_millis(ms)
        });
        let deferred = c.deferred.peek().map(|Reverse(d)| d.at);
        [wheel, accept_retry, deferred]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn on_wake(&mut self) {
        if self.shutdown_flag.load(Ordering::SeqCst) && !self.core.shutting_down {
            self.begin_shutdown();
        }
        self.core.pool.shared.drain(&mut self.completions);
        let mut done = std::mem::take(&mut self.completions);
        for (id, result) in done.drain(..) {
            // Matched by generation: a completion for a connection that is gone or closing
            // is dropped.
            if self.core.is_open(id) {
                self.handler.on_completion(&mut self.core, id, result);
            }
        }
        self.completions = done;
    }

    /// Delivers deferred completions whose time has come (to open connections only).
    fn deliver_deferred(&mut self) {
        let now = self.core.now;
        while self
            .core
            .deferred
            .peek()
            .is_some_and(|Reverse(d)| d.at <= now)
        {
            let Some(Reverse(d)) = self.core.deferred.pop() else {
                break;
            };
            if self.core.is_open(d.id) {
                self.handler
                    .on_completion(&mut self.core, d.id, Ok(d.payload));
            }
        }
    }

    fn begin_shutdown(&mut self) {
        log::info!(
            "shutting down: listeners closed, {} connections to finish",
            self.core.conns.len()
        );
        for mut l in self.listeners.drain(..) {
            if let Err(e) = self.poll.registry().deregister(&mut l.socket) {
                log::debug!("deregistering a listener: {e}");
            }
        }
        self.core.shutting_down = true;
        let deadline = self.core.tick + self.core.timers.shutdown_grace;
        self.core.shutdown_tick = Some(deadline);
        // Every connection's entry now fires by the deadline at the latest.
        let ids: Vec<ConnId> = self
            .core
            .conns
            .iter()
            .map(|(slot, c)| ConnId::new(slot, c.generation))
            .collect();
        for id in ids {
            let slot = id.slot() as u32;
            let linked = self.core.conns[id.slot()].timer;
            let later =
                !linked.is_linked() || (linked.deadline().wrapping_sub(deadline as u32) as i32) > 0;
            if later {
                self.core.wheel.insert(&mut self.core.conns, slot, deadline);
            }
        }
        // Connections still in their TLS handshake have nothing pending: close them now.
        let handshaking: Vec<ConnId> = self
            .core
            .conns
            .iter()
            .filter(|(_, c)| c.transport.is_tls_handshaking())
            .map(|(slot, c)| ConnId::new(slot, c.generation))
            .collect();
        for id in handshaking {
            self.core.kill(id, CloseReason::Shutdown);
        }
        self.handler.on_shutdown(&mut self.core);
    }

    fn accept_all(&mut self) {
        match self.accept_pause {
            Some(AcceptPause::Exhausted(at)) if self.core.now < at => return,
            Some(AcceptPause::Exhausted(_)) => {
                log::info!("resuming accepting connections after running out of resources");
                self.accept_pause = None;
            }
            Some(AcceptPause::Limit) => return,
            None => {}
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].ready {
                self.accept_from(i);
            }
        }
    }

    fn accept_from(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            if self.core.conns.len() >= self.core.cfg.max_connections {
                log::warn!(
                    "maxConnections ({}) reached: not accepting until below 90%",
                    self.core.cfg.max_connections
                );
                self.accept_pause = Some(AcceptPause::Limit);
                return;
            }
            match self.listeners[i].socket.accept() {
                Ok((stream, peer)) => self.add_conn(stream, peer, i),
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => {
                        self.listeners[i].ready = false;
                        return;
                    }
                    IoClass::Retry | IoClass::PeerGone => {}
                    IoClass::Exhausted => {
                        log::warn!(
                            "accept failed ({e}) with {} connections open: pausing accepts for {:?}",
                            self.core.conns.len(),
                            EXHAUSTED_BACKOFF
                        );
                        self.accept_pause =
                            Some(AcceptPause::Exhausted(self.core.now + EXHAUSTED_BACKOFF));
                        return;
                    }
                    IoClass::Fatal => {
                        log::error!("accept failed: {e}; retrying shortly");
                        self.accept_pause =
                            Some(AcceptPause::Exhausted(self.core.now + EXHAUSTED_BACKOFF));
                        return;
                    }
                },
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr, listener: usize) {
        let opts = &self.listeners[listener].opts;
        let (tag, tcp_keepalive) = (opts.tag, opts.tcp_keepalive);
        let transport = match opts.tls.clone() {
            None => Transport::Plain,
            Some(cfg) => match rustls::ServerConnection::new(cfg) {
                Ok(conn) => Transport::TlsHandshaking(Box::new(conn)),
                Err(e) => {
                    log::warn!("cannot start TLS for {peer}: {e}");
                    return;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("TCP_NODELAY on {peer}: {e}");
        }
        if tcp_keepalive && let Err(e) = socket2::SockRef::from(&stream).set_keepalive(true) {
            log::debug!("SO_KEEPALIVE on {peer}: {e}");
        }
        let peer = normalize(peer);
        let generation = self.core.next_generation();
        let slot = self.core.conns.vacant_key();
        let id = ConnId::new(slot, generation);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register connection from {peer}: {e}");
            return;
        }
        let session = self.handler.new_session(id, peer, tag);
        let key = self.core.conns.insert(Conn {
            generation,
            stream,
            transport,
            peer,
            phase: Phase::Open,
            out: OutQueue::default(),
            readable: false,
            writable: true,
            read_closed: false,
            eof: false,
            in_ready: false,
            in_dirty: false,
            read_paused: false,
            over_soft_since: None,
            timer: Link::default(),
            last_rx: self.core.tick as u32,
            last_ping: self.core.tick as u32,
            opened: self.core.tick as u32,
            handshaking: true,
            listener: u8::try_from(listener).unwrap_or(u8::MAX),
            app_paused: false,
            session,
        });
        debug_assert_eq!(key, slot);
        self.core.schedule(id);
        let stats = &self.core.stats;
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        log::debug!("connection {id:?} opened from {peer}");
        // A TLS connection opens for the application when its handshake completes.
        if self.core.conns[slot].transport.is_tls_handshaking() {
            return;
        }
        self.handler.on_open(&mut self.core, id);
    }

    fn read_ready(&mut self) {
        for _ in 0..self.core.ready.len() {
            let Some(id) = self.core.ready.pop_front() else {
                break;
            };
            if let Some(conn) = self.core.conn_mut(id) {
                conn.in_ready = false;
                self.read_conn(id);
            }
        }
    }

    /// Reads from one connection, up to the per-turn budget.
    fn read_conn(&mut self, id: ConnId) {
        let tick = self.core.tick as u32;
        for _ in 0..READS_PER_TURN {
            let pause_at = self.core.cfg.read_pause_bytes;
            let Some(conn) = self.core.conn_mut(id) else {
                return;
            };
            if !conn.readable {
                return;
            }
            match conn.phase {
                Phase::Open
                    if conn.out.queued() >= pause_at || conn.out.files() >= MAX_QUEUED_FILES =>
                {
                    // Backpressure: resume when the client has read its replies.
                    conn.read_paused = true;
                    return;
                }
                Phase::Open if conn.app_paused => return,
                Phase::Open | Phase::Lingering(_) => {}
                Phase::Draining(_) | Phase::Dead(_) => return,
            }
            let lingering = matches!(conn.phase, Phase::Lingering(_));
            if !lingering && !matches!(conn.transport, Transport::Plain) {
                if self.read_tls_step(id, tick) {
                    continue;
                }
                return;
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    conn.eof = true;
                    conn.readable = false;
                    match conn.phase {
                        Phase::Lingering(r) => self.core.kill(id, r),
                        _ => self.core.close(id, CloseReason::Eof),
                    }
                    return;
                }
                Ok(n) => {
                    // A short read drained the socket: the next edge tells us about more,
                    // unless the peer's FIN is already known (then read on to see the 0).
                    if n < self.read_buf.len() && !conn.read_closed {
                        conn.readable = false;
                    }
                    // Activity only stamps: the wheel entry re-checks when it fires.
                    conn.last_rx = tick;
                    self.core
                        .stats
                        .bytes_in
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if !lingering {
                        self.handler
                            .on_data(&mut self.core, id, &mut self.read_buf[..n]);
                    }
                }
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => {
                        conn.readable = false;
                        return;
                    }
                    IoClass::Retry => {}
                    class => {
                        self.io_failed(id, &e, class);
                        return;
                    }
                },
            }
        }
        // Budget spent with input possibly left: continue next turn.
        if self.core.conn(id).is_some_and(|c| c.readable) {
            self.core.mark_ready(id);
        }
    }

    /// One `read_tls` + `process_new_packets` round for a TLS connection: completes the
    /// handshake (then the application sees the connection open), hands decrypted bytes to
    /// the application, and queues whatever rustls wants to send. Returns false when reading
    /// should stop for this turn.
    fn read_tls_step(&mut self, id: ConnId, tick: u32) -> bool {
        let stats = Arc::clone(&self.core.stats);
        let Some(conn) = self.core.conn_mut(id) else {
            return false;
        };
        let Some(tls) = conn.transport.tls_mut() else {
            return false;
        };
        match tls.read_tls(&mut conn.stream) {
            Ok(0) => {
                conn.eof = true;
                conn.readable = false;
            }
            Ok(n) => {
                conn.last_rx = tick;
                stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            // rustls' plaintext buffer is full: drain it below before reading more.
            Err(e) if e.kind() == io::ErrorKind::Other => {}
            Err(e) => match classify(&e) {
                IoClass::WouldBlock => {
                    conn.readable = false;
                    return false;
                }
                IoClass::Retry => return true,
                class => {
                    self.io_failed(id, &e, class);
                    return false;
                }
            },
        }
        let io = match tls.process_new_packets() {
            Ok(io) => io,
            Err(err) => {
                // Best effort: send the alert rustls queued, then drop the connection.
                let _ = tls.write_tls(&mut conn.stream);
                log::debug!("TLS error with {}: {err}", conn.peer);
                stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                self.core.kill(id, CloseReason::Error);
                return false;
            }
        };
        let handshake_finished = !tls.is_handshaking() && conn.transport.is_tls_handshaking();
        let wants_write = tls_wants_write(&mut conn.transport);
        let eof = conn.eof;
        if handshake_finished {
            // Handshaking → Tls, by value.
            conn.transport = match std::mem::replace(&mut conn.transport, Transport::Plain) {
                Transport::TlsHandshaking(t) => Transport::Tls(t),
                other => other,
            };
            conn.handshaking = false;
            log::debug!(
                "connection {id:?} from {}: TLS handshake complete",
                conn.peer
            );
            stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            self.handler.on_open(&mut self.core, id);
        }
        if wants_write {
            self.core.mark_dirty(id);
        }
        if io.plaintext_bytes_to_read() > 0 {
            loop {
                let Some(conn) = self.core.conn_mut(id).filter(|c| c.is_open()) else {
                    return false; // closed meanwhile (quit): the rest is discarded
                };
                let Some(tls) = conn.transport.tls_mut() else {
                    return false;
                };
                match tls.reader().read(&mut self.read_buf) {
                    Ok(0) => break, // close_notify: handled below
                    Ok(n) => self
                        .handler
                        .on_data(&mut self.core, id, &mut self.read_buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break, // EOF without close_notify: handled below
                }
            }
        }
        if io.peer_has_closed() || eof {
            self.core.close(id, CloseReason::Eof);
            return false;
        }
        true
    }

    fn io_failed(&mut self, id: ConnId, e: &io::Error, class: IoClass) {
        if let Some(conn) = self.core.conn(id) {
            if class == IoClass::Fatal {
                log::warn!("connection {} failed: {e}", conn.peer);
            } else {
                log::debug!("connection {} ended: {e}", conn.peer);
            }
        }
        let reason = match self.core.conn(id).map(|c| c.phase) {
            Some(Phase::Draining(r) | Phase::Lingering(r)) => r,
            _ => CloseReason::Error,
        };
        self.core.kill(id, reason);
    }

    /// Fires due wheel entries (bounded per turn) and acts on each connection's stamps.
    fn expire_timers(&mut self) {
        let now = self.core.tick;
        let mut fired = std::mem::take(&mut self.fired);
        let n = self
            .core
            .wheel
            .advance(&mut self.core.conns, now, TIMERS_PER_TURN, &mut fired);
        self.timers_behind = n == TIMERS_PER_TURN;
        for slot in fired.drain(..) {
            let Some(conn) = self.core.conns.get(slot as usize) else {
                debug_assert!(
                    false,
                    "wheel entries are unlinked before their slot is freed"
                );
                continue;
            };
            let id = ConnId::new(slot as usize, conn.generation);
            self.on_timer(id, now);
        }
        self.fired = fired;
    }

    /// A connection's entry fired: decide from its stamps what is due, act, and relink.
    fn on_timer(&mut self, id: ConnId, now: u64) {
        let shutdown_over = self.core.shutdown_tick.is_some_and(|s| now >= s);
        let Some(conn) = self.core.conn(id) else {
            return;
        };
        let t = self.core.listener_timers[usize::from(conn.listener)];
        match conn.phase {
            Phase::Dead(_) => return,
            Phase::Draining(r) | Phase::Lingering(r) => {
                log::debug!("connection {} did not finish closing in time", conn.peer);
                self.core.kill(id, r);
                return;
            }
            Phase::Open => {}
        }
        if shutdown_over {
            self.core.kill(id, CloseReason::Shutdown);
            return;
        }
        let since_rx = now - widen(conn.last_rx, now);
        let since_ping = now - widen(conn.last_ping, now);
        let since_open = now - widen(conn.opened, now);
        let due = if conn.handshaking && t.handshake > 0 && since_open >= t.handshake {
            Some(Timeout::Handshake)
        } else if t.idle > 0 && since_rx >= t.idle {
            Some(Timeout::Idle)
        } else if t.keepalive > 0 && since_rx.min(since_ping) >= t.keepalive {
            Some(Timeout::KeepAlive)
        } else {
            None
        };
        if due == Some(Timeout::Handshake) && conn.transport.is_tls_handshaking() {
            // No channel to say goodbye on: just close.
            log::debug!(
                "connection {} did not finish its TLS handshake in time",
                conn.peer
            );
            self.core
                .stats
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            self.core.kill(id, CloseReason::HandshakeTimeout);
            return;
        }
        let stats = &self.core.stats;
        match due {
            Some(Timeout::KeepAlive) => {
                stats.keepalive_pings.fetch_add(1, Ordering::Relaxed);
                if let Some(conn) = self.core.conn_mut(id) {
                    conn.last_ping = now as u32;
                }
                self.handler
                    .on_timeout(&mut self.core, id, Timeout::KeepAlive);
            }
            Some(timeout) => {
                let stats = Arc::clone(stats);
                let (counter, reason) = match timeout {
                    Timeout::Idle => (&stats.idle_timeouts, CloseReason::IdleTimeout),
                    _ => (&stats.handshake_timeouts, CloseReason::HandshakeTimeout),
                };
                if self.handler.on_timeout(&mut self.core, id, timeout) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.core.close(id, reason);
                }
            }
            None => {}
        }
        if self.core.is_open(id) {
            self.core.schedule(id);
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.core.dirty);
        for &id in &dirty {
            if let Some(conn) = self.core.conn_mut(id) {
                conn.in_dirty = false;
                self.flush_conn(id);
            }
        }
        // Keep the allocation when nothing new was queued meanwhile.
        if self.core.dirty.is_empty() {
            let mut dirty = dirty;
            dirty.clear();
            self.core.dirty = dirty;
        }
    }

    fn flush_conn(&mut self, id: ConnId) {
        let soft = self.core.cfg.output_soft_limit;
        let resume_at = self.core.cfg.read_pause_bytes / 2;
        let Some(conn) = self.core.conn_mut(id) else {
            return;
        };
        let draining = match conn.phase {
            Phase::Open => None,
            Phase::Draining(r) => Some(r),
            Phase::Lingering(_) | Phase::Dead(_) => return,
        };
        if !conn.writable {
            return; // a WRITABLE edge will bring it back
        }
        let result = match &mut conn.transport {
            Transport::Plain => conn.out.flush(&mut conn.stream, WRITE_BUDGET),
            Transport::TlsHandshaking(tls) => flush_tls(tls, &mut conn.stream, None, false),
            Transport::Tls(tls) => flush_tls(
                tls,
                &mut conn.stream,
                Some(&mut conn.out),
                draining.is_some(),
            ),
        };
        match result {
            Ok((state, n)) => {
                self.core
                    .stats
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                let Some(conn) = self.core.conn_mut(id) else {
                    return;
                };
                if conn.out.queued() <= soft {
                    conn.over_soft_since = None;
                }
                match state {
                    Flushed::Blocked => conn.writable = false,
                    Flushed::Budget => self.core.mark_dirty(id),
                    Flushed::Drained => {
                        if let Some(reason) = draining {
                            self.begin_linger(id, reason);
                            return;
                        }
                    }
                }
                let Some(conn) = self.core.conn_mut(id) else {
                    return;
                };
                if conn.read_paused
                    && conn.out.queued() <= resume_at
                    && conn.out.files() < MAX_QUEUED_FILES
                {
                    conn.read_paused = false;
                    if conn.readable {
                        self.core.mark_ready(id);
                    }
                }
            }
            Err(e) => {
                let class = classify(&e);
                self.io_failed(id, &e, class);
            }
        }
    }

    /// Output is drained: shut our side down and wait for the peer's FIN.
    fn begin_linger(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.core.conn_mut(id) else {
            return;
        };
        if let Err(e) = conn.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown of {}: {e}", conn.peer);
        }
        if conn.eof {
            self.core.kill(id, reason);
            return;
        }
        conn.phase = Phase::Lingering(reason);
        // Backpressure no longer applies: lingering input is read only to be discarded.
        conn.read_paused = false;
        if conn.readable {
            self.core.mark_ready(id);
        }
    }

    fn reap_dead(&mut self) {
        while let Some(id) = self.core.dead.pop() {
            let Some(conn) = self.core.conn(id) else {
                continue;
            };
            let Phase::Dead(reason) = conn.phase else {
                debug_assert!(false, "only dead connections are reaped");
                continue;
            };
            self.core
                .wheel
                .cancel(&mut self.core.conns, id.slot() as u32);
            let mut conn = self.core.conns.remove(id.slot());
            if let Err(e) = self.poll.registry().deregister(&mut conn.stream) {
                log::debug!("deregistering {}: {e}", conn.peer);
            }
            let stats = &self.core.stats;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            stats.closed.fetch_add(1, Ordering::Relaxed);
            log::debug!(
                "connection {id:?} from {} closed ({})",
                conn.peer,
                reason.as_str()
            );
            drop(conn.stream);
            self.handler
                .on_close(&mut self.core, id, conn.session, reason);
        }
        if self.accept_pause == Some(AcceptPause::Limit)
            && self.core.conns.len() * 10 < self.core.cfg.max_connections * 9
        {
            log::info!(
                "connections below 90% of maxConnections ({}): accepting again",
                self.core.cfg.max_connections
            );
            self.accept_pause = None;
        }
    }
}

/// Whether rustls has records to send.
fn tls_wants_write(t: &mut Transport) -> bool {
    t.tls_mut().is_some_and(|tls| tls.wants_write())
}

/// rustls' plaintext side as a `Write` whose full buffer is `WouldBlock` (backpressure),
/// so the output queue keeps what rustls cannot take yet.
struct PlaintextSink<'a>(&'a mut rustls::ServerConnection);

impl io::Write for PlaintextSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a TLS connection: records rustls has ready go to the socket, queued plaintext goes
/// into rustls as far as its buffer limit allows, repeated until the socket would block or
/// everything is out. When `closing` and the queue is empty, `close_notify` goes last.
fn flush_tls(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    mut out: Option<&mut OutQueue>,
    closing: bool,
) -> io::Result<(Flushed, usize)> {
    let mut written = 0;
    loop {
        while tls.wants_write() {
            if written >= WRITE_BUDGET {
                return Ok((Flushed::Budget, written));
            }
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((Flushed::Blocked, written));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let Some(queue) = out.as_deref_mut() else {
            return Ok((Flushed::Drained, written));
        };
        if queue.is_empty() {
            if closing {
                tls.send_close_notify(); // does nothing once sent
                if tls.wants_write() {
                    continue;
                }
            }
            return Ok((Flushed::Drained, written));
        }
        queue.flush(&mut PlaintextSink(tls), usize::MAX)?;
        if !tls.wants_write() {
            // rustls took nothing and has nothing to send: only possible if its limit is
            // zero. Never spin on it.
            debug_assert!(
                queue.is_empty(),
                "rustls refused plaintext with nothing to send"
            );
            return Ok((Flushed::Blocked, written));
        }
    }
}

/// IPv4 peers on a dual-stack listener appear as `::ffff:a.b.c.d`; report them as IPv4.
fn normalize(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_peers_are_reported_as_ipv4() {
        let p: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().expect("addr");
        assert_eq!(
            normalize(p),
            "127.0.0.1:4000".parse::<SocketAddr>().expect("addr")
        );
        let p: SocketAddr = "[::1]:4000".parse().expect("addr");
        assert_eq!(normalize(p), p);
    }
}
