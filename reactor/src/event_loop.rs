//! The event loop: one `mio::Poll` and the passes of a loop turn.
//!
//! A turn is: poll → record readiness (edge-triggered, kept as data per endpoint) → worker
//! completions, handshake steps back from the handshake threads and server-level events →
//! deferred completions that came due → read ready endpoints (bounded work each; handshaking
//! ones join the handshake queue) → expire timers → hand this turn's jobs to the workers →
//! flush every endpoint that got output (write before sleep) → accept new clients (a share
//! per listener) → this turn's share of handshake steps (`handshake.rs`) → flush again →
//! remove dead endpoints. New clients come last, so that a storm of them delays established
//! clients' replies by one turn's share at most. The poll timeout is zero while work is left
//! over, else the next deadline.

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use crate::accept::{AcceptPause, Listener, WAKER};
use crate::core::{Core, ReactorConfig, may_resume_reading, must_pause_reading};
use crate::endpoint::{CloseReason, ConnId, EndpointKind, Phase};
use crate::errors::{IoClass, classify};
use crate::events::{EVENTS_PER_TURN, EventQueue, EventSender};
use crate::handler::Handler;
use crate::handshake::Handshakes;
use crate::output::{BlockDone, Flushed};
use crate::pool::{Done, Pool, Priority};
use crate::stats::ReactorStats;
use crate::timers::MAX_ENDPOINT_SLOT;
use crate::transport::{ReadError, Transport};

/// Size of the loop's shared read buffer.
const READ_BUF: usize = 64 * 1024;
/// Reads per endpoint per turn before it is requeued (fairness).
const READS_PER_TURN: usize = 4;
/// The time a turn gives new clients (accepts, then handshake steps) after writing its
/// replies to established ones: a request that arrives meanwhile waits at most about this
/// long (plus one accept or step). The first accept per listener and the first handshake step
/// run whatever the time, so new clients always progress; counts cap them too.
pub(crate) const NEW_CLIENTS_PER_TURN: Duration = Duration::from_micros(50);

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

/// The event loop. Build it, add listeners, then [`Reactor::run`] it on its own thread.
pub struct Reactor<H: Handler> {
    pub(crate) poll: Poll,
    events: Option<Events>,
    pub(crate) listeners: Vec<Listener<H::Tag>>,
    pub(crate) accept_pause: Option<AcceptPause>,
    pub(crate) core: Core<H>,
    pub(crate) handler: H,
    pub(crate) read_buf: Vec<u8>,
    /// Handshaking endpoints waiting for their steps, and where this turn's steps run.
    pub(crate) handshakes: Handshakes,
    /// When this turn's work for new clients (accepts, handshake steps) began: it stops
    /// once it has taken [`NEW_CLIENTS_PER_TURN`].
    pub(crate) new_clients_since: Instant,
    completions: Vec<Done<H::Completion>>,
    /// File blocks read off the loop, taken each wake-up.
    blocks: Vec<Done<BlockDone>>,
    shutdown_flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
    pub(crate) fired: Vec<u32>,
}

impl<H: Handler> Reactor<H> {
    /// This turn's time for new clients is spent.
    pub(crate) fn new_clients_done(&self) -> bool {
        self.new_clients_since.elapsed() >= NEW_CLIENTS_PER_TURN
    }

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
        let pool = Pool::new(cfg.workers.max(1), "actionwire-worker", Arc::clone(&waker))?;
        let files = Pool::new(
            cfg.file_readers.max(1),
            "actionwire-file",
            Arc::clone(&waker),
        )?;
        let away = match cfg.handshake_threads {
            0 => None,
            n => Some(Pool::with_priority(
                n,
                "actionwire-handshake",
                Arc::clone(&waker),
                Priority::Background,
            )?),
        };
        let events = EventQueue::new(cfg.event_queue, Arc::clone(&waker));
        let cfg = ReactorConfig {
            max_connections: cfg.max_connections.clamp(1, MAX_ENDPOINT_SLOT),
            ..cfg
        };
        let registry = poll.registry().try_clone()?;
        let core = Core::new(cfg, stats, pool, files, events, registry);
        Ok(Reactor {
            poll,
            events: Some(Events::with_capacity(1024)),
            listeners: Vec::new(),
            accept_pause: None,
            core,
            handler,
            read_buf: vec![0; READ_BUF],
            handshakes: Handshakes::new(away),
            new_clients_since: Instant::now(),
            completions: Vec::new(),
            blocks: Vec::new(),
            shutdown_flag: Arc::new(AtomicBool::new(false)),
            waker,
            fired: Vec::new(),
        })
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: Arc::clone(&self.shutdown_flag),
            waker: Arc::clone(&self.waker),
        }
    }

    /// A sender of server-level events into this loop, for other threads.
    pub fn event_sender(&self) -> EventSender<H::Event> {
        self.core.event_sender()
    }

    pub fn stats(&self) -> Arc<ReactorStats> {
        Arc::clone(&self.core.stats)
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The loop state, before the loop runs (e.g. to open outbound endpoints or set timers
    /// at start).
    pub fn core_mut(&mut self) -> &mut Core<H> {
        &mut self.core
    }

    /// Runs until shutdown completes (all endpoints closed).
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
            self.core.timers.set_now(self.core.now);
            let mut woke = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => woke = true,
                    token => self.on_readiness(token, ev),
                }
            }
            self.events = Some(events);
            if woke || self.core.events.is_behind() {
                self.on_wake();
            }
            self.deliver_deferred();
            self.read_ready();
            self.expire_timers();
            // Jobs created this turn go to the workers in one hand-off.
            self.core.pool.dispatch();
            self.flush_dirty();
            // New clients come after the replies to established ones are out: accepting (a
            // few system calls each, up to a share per listener) and TLS handshake steps are
            // the turn's last work, so a reconnect storm delays established clients by at most
            // one turn's share of it.
            self.new_clients_since = Instant::now();
            self.accept_all();
            self.step_handshakes();
            // Jobs from lines that came with a finished handshake.
            self.core.pool.dispatch();
            self.flush_dirty();
            // File reads asked for while flushing go to the readers in one hand-off.
            self.core.files.dispatch();
            self.reap_dead();
            self.core.stats.record_turn(self.core.now.elapsed());
            if self.core.shutting_down && self.core.endpoints.is_empty() {
                self.handler.on_stopped(&mut self.core);
                log::info!("all connections closed; event loop stopped");
                return Ok(());
            }
        }
    }

    /// Records one readiness event as data on its listener or endpoint.
    fn on_readiness(&mut self, token: Token, ev: &mio::event::Event) {
        if let Some(i) = self.listener_of(token) {
            self.listeners[i].ready = true;
            return;
        }
        let Some(id) = ConnId::from_token(token) else {
            return;
        };
        let Some(ep) = self.core.ep_mut(id) else {
            return; // a stale event for an endpoint already gone
        };
        if ev.is_read_closed() {
            ep.read_closed = true;
        }
        let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
        let writable = ev.is_writable() || ev.is_error();
        if readable {
            ep.readable = true;
        }
        if ep.phase == Phase::Connecting {
            // Any event may end a connect; `finish_connect` tells a spurious one apart.
            self.finish_connect(id);
            return;
        }
        // The read and flush passes check pauses and pending output themselves (a paused or
        // idle endpoint costs them one look), so an edge only records what it reported.
        if writable {
            ep.writable = true;
            self.core.mark_dirty(id);
        }
        if readable {
            self.core.mark_ready(id);
        }
    }

    /// The poll timeout: zero while work is left, else until the next timer; forever when
    /// there is none.
    fn next_timeout(&self) -> Option<Duration> {
        let c = &self.core;
        let accept_now = self.accept_pause.is_none() && self.listeners.iter().any(|l| l.ready);
        if !c.ready.is_empty()
            || !c.dirty.is_empty()
            || !c.dead.is_empty()
            || accept_now
            || !self.handshakes.queue.is_empty()
            || c.timers.behind
            || c.events.is_behind()
        {
            return Some(Duration::ZERO);
        }
        c.timers
            .next_wake()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The waker rang: shutdown, worker completions, server-level events.
    fn on_wake(&mut self) {
        if self.shutdown_flag.load(Ordering::SeqCst) && !self.core.shutting_down {
            self.begin_shutdown();
        }
        self.core.pool.shared.drain(&mut self.completions);
        let mut done = std::mem::take(&mut self.completions);
        for (id, result) in done.drain(..) {
            // Matched by generation: a completion for an endpoint that is gone or closing is
            // dropped.
            if self.core.is_open(id) {
                self.handler.on_completion(&mut self.core, id, result);
            }
        }
        self.completions = done;
        self.file_blocks_read();
        self.handshake_steps_back();
        if !self.core.events.is_behind() {
            return; // the common wake-up: completions only
        }
        for _ in 0..EVENTS_PER_TURN {
            let Some(event) = self.core.events.next() else {
                break;
            };
            self.core.stats.events.fetch_add(1, Ordering::Relaxed);
            self.handler.on_event(&mut self.core, event);
        }
    }

    /// Delivers deferred completions whose time has come (to open endpoints only).
    fn deliver_deferred(&mut self) {
        while let Some((id, payload)) = self.core.timers.due_deferred(self.core.now) {
            if self.core.is_open(id) {
                self.handler.on_completion(&mut self.core, id, Ok(payload));
            }
        }
    }

    fn begin_shutdown(&mut self) {
        log::info!(
            "shutting down: listeners closed, {} connections to finish",
            self.core.accepted
        );
        // Closing a listening socket also removes it from epoll (its descriptor is never
        // shared: mio opens it close-on-exec).
        self.listeners.clear();
        self.core.shutting_down = true;
        let deadline = self.core.timers.begin_shutdown();
        let ids: Vec<ConnId> = self
            .core
            .endpoints
            .iter()
            .map(|(slot, c)| ConnId::new(slot, c.generation))
            .collect();
        for id in ids {
            let Some(ep) = self.core.ep(id) else {
                continue;
            };
            // Accepted endpoints not open yet (PROXY header, TLS handshake) have nothing
            // pending.
            if ep.kind == EndpointKind::Accepted && ep.pre_open() {
                self.core.kill(id, CloseReason::Shutdown);
                continue;
            }
            // Every other entry now fires by the deadline at the latest.
            let linked = ep.timer;
            let later =
                !linked.is_linked() || (linked.deadline().wrapping_sub(deadline as u32) as i32) > 0;
            if later {
                self.core
                    .timers
                    .link(&mut self.core.endpoints, id.slot(), deadline);
            }
        }
        self.handler.on_shutdown(&mut self.core);
    }

    pub(crate) fn read_ready(&mut self) {
        for _ in 0..self.core.ready.len() {
            let Some(id) = self.core.ready.pop_front() else {
                break;
            };
            if let Some(ep) = self.core.ep_mut(id) {
                ep.in_ready = false;
                self.read_endpoint(id);
            }
        }
    }

    /// Reads from one endpoint, up to the per-turn budget.
    pub(crate) fn read_endpoint(&mut self, id: ConnId) {
        for _ in 0..READS_PER_TURN {
            let pause_at = self.core.cfg.read_pause_bytes;
            let tick = self.core.timers.tick32();
            let Some((ep, stats)) = self.core.ep_and_stats(id) else {
                return;
            };
            match ep.phase {
                // Paused by backpressure: only a flush that takes the queue down to half the
                // mark resumes it (hysteresis), whatever edges arrive meanwhile.
                Phase::Open if ep.read_paused => return,
                Phase::Open if must_pause_reading(&ep.out, pause_at) => {
                    ep.read_paused = true;
                    stats.read_pauses.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Phase::Open if ep.app_paused || !ep.has_input() => return,
                Phase::Open if ep.awaiting_proxy => {
                    if self.read_proxy_header(id) {
                        continue; // the transport's bytes follow, next iteration
                    }
                    return;
                }
                // A handshake step is running on a handshake thread: the readiness waits
                // for the session to come back (which looks again).
                Phase::Open if ep.transport.is_away() => return,
                // Handshakes are the expensive reads: they wait until established traffic's
                // replies are out, and past this turn's share for the next turn (the endpoint
                // stays readable), behind established traffic again.
                Phase::Open if ep.transport.is_handshaking() && !self.handshakes.phase => {
                    if !ep.in_handshakes {
                        ep.in_handshakes = true;
                        self.handshakes.queue.push_back(id);
                    }
                    return;
                }
                // This turn's share is spent in the middle of its reads: it keeps its place.
                Phase::Open if ep.transport.is_handshaking() && self.handshakes.budget == 0 => {
                    if !ep.in_handshakes {
                        ep.in_handshakes = true;
                        self.handshakes.queue.push_front(id);
                    }
                    return;
                }
                Phase::Open
                    if ep.transport.server_handshaking() && self.handshakes.sending_away =>
                {
                    return self.send_handshake_away(id);
                }
                Phase::Open => {
                    if ep.transport.is_handshaking() {
                        self.handshakes.budget -= 1;
                    }
                }
                Phase::Lingering(reason) => {
                    if !ep.readable {
                        return;
                    }
                    stats.reads.fetch_add(1, Ordering::Relaxed);
                    match Transport::discard(&mut ep.stream, &mut self.read_buf) {
                        Ok(step) => {
                            ep.note_read(&step);
                            stats
                                .bytes_in
                                .fetch_add(step.wire as u64, Ordering::Relaxed);
                            if step.eof {
                                self.core.kill(id, reason);
                                return;
                            }
                        }
                        Err(e) => return self.read_failed(id, e),
                    }
                    continue;
                }
                Phase::Connecting | Phase::Draining(_) | Phase::Dead(_) => return,
            }
            stats.reads.fetch_add(1, Ordering::Relaxed);
            let step = match ep.transport.read(&mut ep.stream, &mut self.read_buf) {
                Ok(step) => step,
                Err(ReadError::Io(e)) => return self.read_failed(id, e),
                Err(ReadError::Tls(e)) => return self.tls_failed(id, &e),
            };
            // Activity only stamps: the wheel entry re-checks when it fires.
            ep.last_rx = tick;
            stats
                .bytes_in
                .fetch_add(step.wire as u64, Ordering::Relaxed);
            ep.note_read(&step);
            let kind = ep.kind;
            if ep.transport.wants_write() {
                self.core.mark_dirty(id);
            }
            if step.handshake_done {
                self.tls_opened(id, kind);
            }
            if step.plain > 0 && self.core.is_open(id) {
                self.handshakes.traffic_at = Some(self.core.now);
                self.handler
                    .on_data(&mut self.core, id, &mut self.read_buf[..step.plain]);
            }
            if step.peer_closed {
                self.core.close(id, CloseReason::Eof);
                return;
            }
        }
        // Budget spent with input possibly left (open or lingering): continue next turn.
        if self.core.ep(id).is_some_and(|e| e.has_input()) {
            self.core.mark_ready(id);
        }
    }

    pub(crate) fn read_failed(&mut self, id: ConnId, e: io::Error) {
        match classify(&e) {
            IoClass::WouldBlock => {
                if let Some(ep) = self.core.ep_mut(id) {
                    ep.readable = false;
                }
            }
            IoClass::Retry => self.core.mark_ready(id),
            class => self.io_failed(id, &e, class),
        }
    }

    /// File blocks the readers finished: each goes in front of its queue, which is then
    /// flushed this turn. A block for an endpoint that is gone is dropped (with its file).
    fn file_blocks_read(&mut self) {
        self.core.files.shared.drain(&mut self.blocks);
        let mut blocks = std::mem::take(&mut self.blocks);
        for (id, result) in blocks.drain(..) {
            let Some(ep) = self.core.ep_mut(id) else {
                continue;
            };
            let put = match result {
                Ok(done) => ep.out.block_read(done),
                Err(panic) => Err(io::Error::other(format!(
                    "file reader panicked: {}",
                    panic.message
                ))),
            };
            match put {
                Ok(()) => self.core.mark_dirty(id),
                Err(e) => {
                    let class = classify(&e);
                    self.io_failed(id, &e, class);
                }
            }
        }
        self.blocks = blocks;
    }

    fn io_failed(&mut self, id: ConnId, e: &io::Error, class: IoClass) {
        let Some(ep) = self.core.ep(id) else {
            return;
        };
        log::log!(class.log_level(), "{id:?} ({}) ended: {e}", ep.peer);
        let reason = match ep.phase {
            Phase::Draining(r) | Phase::Lingering(r) => r,
            _ => CloseReason::Error,
        };
        self.core.kill(id, reason);
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.core.dirty);
        for &id in &dirty {
            if let Some(ep) = self.core.ep_mut(id) {
                ep.in_dirty = false;
                self.flush_endpoint(id);
            }
        }
        // Keep the allocation when nothing new was queued meanwhile.
        if self.core.dirty.is_empty() {
            let mut dirty = dirty;
            dirty.clear();
            self.core.dirty = dirty;
        }
    }

    fn flush_endpoint(&mut self, id: ConnId) {
        let soft = self.core.cfg.output_soft_limit;
        let pause_at = self.core.cfg.read_pause_bytes;
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        let draining = match ep.phase {
            Phase::Open => None,
            Phase::Draining(r) => Some(r),
            Phase::Connecting | Phase::Lingering(_) | Phase::Dead(_) => return,
        };
        if !ep.writable {
            return; // a WRITABLE edge will bring it back
        }
        let (state, n) = match ep.transport.flush(&mut ep.stream, &mut ep.out) {
            Ok(r) => r,
            Err(e) => {
                let class = classify(&e);
                return self.io_failed(id, &e, class);
            }
        };
        self.core
            .stats
            .bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        if ep.out.queued() <= soft {
            ep.over_soft_since = None; // its timer finds nothing due and relinks
        }
        // A file's next block is read off the loop while the socket takes what is queued.
        if let Some(read) = ep.out.take_block_read() {
            self.core.files.spawn(id, Box::new(move || read.run()));
        }
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        match state {
            Flushed::Blocked => ep.writable = false,
            Flushed::Budget => self.core.mark_dirty(id),
            // The block being read comes back through `file_blocks_read`.
            Flushed::Stalled => {}
            Flushed::Drained => {
                if let Some(reason) = draining {
                    return self.begin_linger(id, reason);
                }
            }
        }
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        if ep.read_paused && may_resume_reading(&ep.out, pause_at) {
            ep.read_paused = false;
            if ep.has_input() {
                self.core.mark_ready(id);
            }
        }
    }

    /// Output is drained: shut our side down and wait for the peer's FIN.
    fn begin_linger(&mut self, id: ConnId, reason: CloseReason) {
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        if let Err(e) = ep.stream.shutdown(Shutdown::Write) {
            log::debug!("shutdown of {}: {e}", ep.peer);
        }
        if ep.eof {
            self.core.kill(id, reason);
            return;
        }
        ep.phase = Phase::Lingering(reason);
        // Neither backpressure nor the application's pause applies any more: lingering
        // input is read only to be discarded (and to see the peer's FIN).
        ep.read_paused = false;
        ep.app_paused = false;
        if ep.readable {
            self.core.mark_ready(id);
        }
    }

    fn reap_dead(&mut self) {
        while let Some(id) = self.core.dead.pop() {
            let Some(ep) = self.core.ep(id) else {
                continue;
            };
            let Phase::Dead(reason) = ep.phase else {
                debug_assert!(false, "only dead endpoints are reaped");
                continue;
            };
            self.core.timers.unlink(&mut self.core.endpoints, id.slot());
            let mut ep = self.core.endpoints.remove(id.slot());
            if let Err(e) = self.core.registry.deregister(&mut ep.stream) {
                log::debug!("deregistering {}: {e}", ep.peer);
            }
            let stats = &self.core.stats;
            match ep.kind {
                EndpointKind::Accepted => {
                    self.core.accepted -= 1;
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    stats.closed.fetch_add(1, Ordering::Relaxed);
                }
                EndpointKind::Outbound => {
                    stats.outbound_open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            log::debug!("{id:?} ({}) closed: {reason}", ep.peer);
            drop(ep.stream);
            let unsent = ep.out.queued();
            self.handler
                .on_close(&mut self.core, id, ep.session, reason, unsent);
        }
        self.check_accept_limit();
    }
}
