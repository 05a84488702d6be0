//! [`Core`]: the loop state a [`Handler`] works on, and the API it uses.
//!
//! The endpoint slab, the lists the loop's passes work through (ready to read, dirty to
//! flush, dead to reap), the timers, the worker pool and the event queue. Handlers queue
//! output, close endpoints, open outbound ones ([`Core::connect`], in `connect.rs`), set
//! server-level timers ([`Core::set_timer`], in `timers.rs`) and spawn jobs through it;
//! nothing here blocks.

use std::collections::VecDeque;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::endpoint::{CloseReason, ConnId, Endpoint, EndpointKind, Phase};
use crate::events::{EventQueue, EventSender};
use crate::handler::Handler;
use crate::output::OutQueue;
use crate::pool::Pool;
use crate::timers::Timers;

/// Queued files per endpoint at which reading pauses (each holds a file descriptor).
pub(crate) const MAX_QUEUED_FILES: usize = 4;

/// Read backpressure: an endpoint whose peer does not take its replies is not read while
/// `pause_at` bytes (or [`MAX_QUEUED_FILES`] files) wait in its queue.
pub(crate) fn must_pause_reading(out: &OutQueue, pause_at: usize) -> bool {
    out.queued() >= pause_at || out.files() >= MAX_QUEUED_FILES
}

/// Reading resumes once the peer has taken the queue down to half the pause mark (and a
/// file slot is free): the gap keeps an endpoint at the mark from pausing every turn.
pub(crate) fn may_resume_reading(out: &OutQueue, pause_at: usize) -> bool {
    out.queued() <= pause_at / 2 && out.files() < MAX_QUEUED_FILES
}

/// Loop limits, set by the application from its configuration.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Accepted connections open at most; accepting pauses at this count and resumes below
    /// 90 %. Outbound endpoints are not counted (the application bounds its own).
    pub max_connections: usize,
    pub backlog: u32,
    /// Worker threads for jobs (at least 1).
    pub workers: usize,
    /// An endpoint whose queued output stays above this for `output_soft_duration` is
    /// disconnected (checked on its timer, whether or not more output is queued).
    pub output_soft_limit: usize,
    pub output_soft_duration: Duration,
    /// An endpoint whose queued output exceeds this is disconnected at once.
    pub output_hard_limit: usize,
    /// Reading from an endpoint pauses while its own queued output exceeds this.
    pub read_pause_bytes: usize,
    /// How long shutdown waits for endpoints to finish.
    pub shutdown_grace: Duration,
    /// How long a closing endpoint may take to drain its output and see the peer's FIN.
    pub linger: Duration,
    /// Server-level events that may wait for the loop at once.
    pub event_queue: usize,
    /// Server-level timers that may be set at once.
    pub max_timers: usize,
    /// TLS handshake steps (each at most one socket read and what rustls does with it: the
    /// first costs a signature and a key exchange, ~0.2 ms) taken per loop turn, after the
    /// turn's replies to established clients are written; endpoints beyond it wait for the
    /// next turn, so a storm of new clients cannot stall the replies of established ones (at
    /// least 1; 4 by default, under a millisecond per turn).
    pub handshakes_per_turn: usize,
    /// Threads that run accepted endpoints' TLS handshake steps (key exchange, signature)
    /// at a low priority the loop thread preempts, so that a storm of new clients never
    /// delays established clients' replies by a step's cryptography; 0 runs the steps on
    /// the loop thread (`handshakes_per_turn` of them per turn). 1 by default.
    pub handshake_threads: usize,
    /// Handshake steps go to the handshake threads only while there is established traffic
    /// to protect: application bytes read within this long. Without it the steps run on the
    /// loop thread, which costs a core less per handshake (no thread hand-offs: each is a
    /// pair of context switches). 10 ms by default; `Duration::MAX`: always.
    pub handshake_traffic_window: Duration,
    /// Threads that read queued files' blocks (at least 1), so that disk reads never run
    /// on the loop thread; a slow disk delays only the files being read.
    pub file_readers: usize,
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
            event_queue: 4096,
            max_timers: 1 << 20,
            handshakes_per_turn: 4,
            handshake_threads: 1,
            handshake_traffic_window: Duration::from_millis(10),
            file_readers: 2,
        }
    }
}

/// The loop state a [`Handler`] works on: endpoints, their output, timers, the worker pool.
pub struct Core<H: Handler> {
    pub(crate) endpoints: Slab<Endpoint<H::Session>>,
    next_gen: u32,
    /// Endpoints with input left to process.
    pub(crate) ready: VecDeque<ConnId>,
    /// Endpoints with output to flush before sleeping.
    pub(crate) dirty: Vec<ConnId>,
    /// Endpoints marked dead, removed at the end of the turn.
    pub(crate) dead: Vec<ConnId>,
    pub(crate) timers: Timers<H::Event, H::Completion>,
    pub(crate) pool: Pool<H::Completion>,
    /// Reads file blocks for output queues (see output.rs).
    pub(crate) files: Pool<crate::output::BlockDone>,
    pub(crate) events: EventQueue<H::Event>,
    pub(crate) registry: mio::Registry,
    pub(crate) cfg: ReactorConfig,
    pub(crate) stats: Arc<crate::ReactorStats>,
    /// Accepted endpoints in the slab (what `max_connections` limits).
    pub(crate) accepted: usize,
    pub(crate) shutting_down: bool,
    /// The time at the start of this loop turn.
    pub(crate) now: Instant,
}

impl<H: Handler> Core<H> {
    pub(crate) fn new(
        cfg: ReactorConfig,
        stats: Arc<crate::ReactorStats>,
        pool: Pool<H::Completion>,
        files: Pool<crate::output::BlockDone>,
        events: EventQueue<H::Event>,
        registry: mio::Registry,
    ) -> Core<H> {
        let now = Instant::now();
        Core {
            endpoints: Slab::new(),
            next_gen: 0,
            ready: VecDeque::new(),
            dirty: Vec::new(),
            dead: Vec::new(),
            timers: Timers::new(&cfg, now),
            pool,
            files,
            events,
            registry,
            cfg,
            stats,
            accepted: 0,
            shutting_down: false,
            now,
        }
    }

    pub(crate) fn ep(&self, id: ConnId) -> Option<&Endpoint<H::Session>> {
        self.endpoints
            .get(id.slot())
            .filter(|c| c.generation == id.generation())
    }

    pub(crate) fn ep_mut(&mut self, id: ConnId) -> Option<&mut Endpoint<H::Session>> {
        self.endpoints
            .get_mut(id.slot())
            .filter(|c| c.generation == id.generation())
    }

    /// An endpoint and the counters, borrowed together (the read pass counts bytes while it
    /// works on the endpoint).
    pub(crate) fn ep_and_stats(
        &mut self,
        id: ConnId,
    ) -> Option<(&mut Endpoint<H::Session>, &crate::ReactorStats)> {
        let ep = self
            .endpoints
            .get_mut(id.slot())
            .filter(|c| c.generation == id.generation())?;
        Some((ep, &self.stats))
    }

    /// The session of a live endpoint (in any phase).
    pub fn session(&self, id: ConnId) -> Option<&H::Session> {
        self.ep(id).map(|c| &c.session)
    }

    pub fn session_mut(&mut self, id: ConnId) -> Option<&mut H::Session> {
        self.ep_mut(id).map(|c| &mut c.session)
    }

    /// True while the endpoint reads and accepts output (connected, past any TLS
    /// handshake, not closing).
    pub fn is_open(&self, id: ConnId) -> bool {
        self.ep(id).is_some_and(Endpoint::is_open)
    }

    /// The peer's address (for an accepted IPv4 peer on a dual-stack listener, as IPv4).
    pub fn peer(&self, id: ConnId) -> Option<SocketAddr> {
        self.ep(id).map(|c| c.peer)
    }

    /// Whether a live endpoint was accepted or opened by [`Core::connect`].
    pub fn kind(&self, id: ConnId) -> Option<EndpointKind> {
        self.ep(id).map(|c| c.kind)
    }

    /// Ids of every endpoint still open, of both kinds.
    pub fn open_ids(&self) -> Vec<ConnId> {
        self.endpoints
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(slot, c)| ConnId::new(slot, c.generation))
            .collect()
    }

    /// Endpoints in the slab (open, connecting or closing).
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The time at the start of this loop turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn stats(&self) -> &Arc<crate::ReactorStats> {
        &self.stats
    }

    /// Jobs queued or running on the workers.
    /// A handle that completes endpoints' work from any thread (see [`crate::Completer`]).
    pub fn completer(&self) -> crate::Completer<H::Completion> {
        crate::Completer::new(Arc::clone(&self.pool.shared))
    }

    pub fn jobs_in_flight(&self) -> usize {
        self.pool.shared.in_flight.load(Ordering::Relaxed)
    }

    /// A sender of server-level events into this loop (for other threads).
    pub fn event_sender(&self) -> EventSender<H::Event> {
        self.events.sender()
    }

    /// The handshake of `id` is complete (for a plain connection: its first line arrived):
    /// the handshake timeout no longer applies.
    pub fn handshake_done(&mut self, id: ConnId) {
        if let Some(conn) = self.ep_mut(id) {
            conn.handshaking = false;
        }
    }

    /// The handshake timeout applies again, counted from now: the peer owes a complete unit
    /// (e.g. a new HTTP request that has begun) within the listener's `handshake_timeout`.
    /// [`Core::handshake_done`] ends it again.
    pub fn restart_handshake(&mut self, id: ConnId) {
        let tick = self.timers.tick32();
        let Some(conn) = self.ep_mut(id).filter(|c| c.phase == Phase::Open) else {
            return;
        };
        if conn.handshaking {
            return; // already running: its deadline counts from the earlier start
        }
        conn.handshaking = true;
        conn.opened = tick;
        self.schedule(id);
    }

    /// Counts as activity on `id` now (idle and keep-alive timers restart from here), for
    /// protocols where the server's answer, not only the client's bytes, ends a wait.
    pub fn touch(&mut self, id: ConnId) {
        let tick = self.timers.tick32();
        if let Some(conn) = self.ep_mut(id) {
            conn.last_rx = tick;
        }
    }

    /// Stops reading from `id` until [`Core::resume_reading`] (the application cannot take
    /// more input yet, e.g. a pipelined HTTP request waits for the one before it).
    pub fn pause_reading(&mut self, id: ConnId) {
        if let Some(conn) = self.ep_mut(id) {
            conn.app_paused = true;
        }
    }

    pub fn resume_reading(&mut self, id: ConnId) {
        if let Some(conn) = self.ep_mut(id).filter(|c| c.app_paused) {
            conn.app_paused = false;
            if conn.has_input() {
                self.mark_ready(id); // the read pass still honours backpressure
            }
        }
    }

    /// Queues a copy of `bytes`. False if the endpoint is not open.
    pub fn send(&mut self, id: ConnId, bytes: &[u8]) -> bool {
        self.enqueue(id, |q| q.push_bytes(bytes))
    }

    /// Queues an owned buffer. False if the endpoint is not open.
    pub fn send_owned(&mut self, id: ConnId, bytes: Vec<u8>) -> bool {
        self.enqueue(id, |q| q.push_owned(bytes))
    }

    /// Queues a shared (broadcast) chunk. False if the endpoint is not open.
    pub fn send_shared(&mut self, id: ConnId, bytes: &Arc<[u8]>) -> bool {
        self.enqueue(id, |q| q.push_shared(Arc::clone(bytes)))
    }

    /// Files queued on an endpoint and not yet completely written.
    pub fn queued_files(&self, id: ConnId) -> usize {
        self.ep(id).map_or(0, |c| c.out.files())
    }

    /// Bytes queued in memory on an endpoint and not yet written (a queued file's bytes stay
    /// on disk and are not counted: the output limits bound memory).
    pub fn queued_bytes(&self, id: ConnId) -> usize {
        self.ep(id).map_or(0, |c| c.out.queued())
    }

    /// Queues `len` bytes of a file, streamed as the socket drains.
    pub fn send_file(&mut self, id: ConnId, file: File, len: u64) -> bool {
        self.enqueue(id, |q| q.push_file(file, len))
    }

    fn enqueue(&mut self, id: ConnId, push: impl FnOnce(&mut OutQueue)) -> bool {
        let (soft, hard) = (self.cfg.output_soft_limit, self.cfg.output_hard_limit);
        let tick = self.timers.tick32();
        let Some(conn) = self.ep_mut(id).filter(|c| c.is_open()) else {
            return false;
        };
        push(&mut conn.out);
        let queued = conn.out.queued();
        if queued > hard {
            self.output_limit_exceeded(id, "hard");
            return false;
        }
        if queued > soft && conn.over_soft_since.is_none() {
            // The endpoint's timer cuts it off if it stays over the soft limit, whether or
            // not anything more is queued.
            conn.over_soft_since = Some(tick);
            self.schedule(id);
        }
        self.mark_dirty(id);
        true
    }

    /// Disconnects an endpoint whose peer does not read its output.
    pub(crate) fn output_limit_exceeded(&mut self, id: ConnId, which: &str) {
        if let Some(conn) = self.ep(id) {
            log::warn!(
                "disconnecting {} ({id:?}): {} bytes of output queued, over the {which} limit \
                 (the peer is not reading)",
                conn.peer,
                conn.out.queued()
            );
        }
        self.stats
            .closed_output_limit
            .fetch_add(1, Ordering::Relaxed);
        self.kill(id, CloseReason::OutputLimit);
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.ep_mut(id)
            && !conn.in_dirty
        {
            conn.in_dirty = true;
            self.dirty.push(id);
        }
    }

    pub(crate) fn mark_ready(&mut self, id: ConnId) {
        if let Some(conn) = self.ep_mut(id)
            && !conn.in_ready
        {
            conn.in_ready = true;
            self.ready.push_back(id);
        }
    }

    /// Closes an endpoint after its queued output is written (a TLS endpoint sends
    /// `close_notify` last). Nothing more is read from it or queued to it; `on_close`
    /// follows once it is gone. An outbound endpoint still connecting is dropped at once.
    pub fn close(&mut self, id: ConnId, reason: CloseReason) {
        let deadline = self.timers.linger_deadline();
        let Some(conn) = self.ep_mut(id) else {
            return;
        };
        match conn.phase {
            // Nothing was said yet: there is nothing to drain.
            Phase::Connecting => self.kill(id, reason),
            Phase::Open if conn.pre_open() => self.kill(id, reason),
            Phase::Open => {
                conn.phase = Phase::Draining(reason);
                conn.transport.close();
                self.timers.link(&mut self.endpoints, id.slot(), deadline);
                self.mark_dirty(id);
            }
            Phase::Draining(_) | Phase::Lingering(_) | Phase::Dead(_) => {}
        }
    }

    /// Drops an endpoint at the end of this turn, discarding its output.
    pub(crate) fn kill(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.ep_mut(id)
            && !matches!(conn.phase, Phase::Dead(_))
        {
            // The output stays until the endpoint is reaped (this turn): `on_close` reports
            // how much of it was never written.
            conn.phase = Phase::Dead(reason);
            self.dead.push(id);
        }
    }

    /// Hands `payload` back through `on_completion` after `delay`, if the endpoint is still
    /// open then, without holding a worker meanwhile (e.g. an action that waits). The delay
    /// counts from this call, not from the turn's start: a caller that read the clock
    /// itself late in a long turn (an action stamping when it began) never sees its
    /// completion come early.
    pub fn defer(&mut self, id: ConnId, delay: Duration, payload: H::Completion) {
        self.timers.defer(Instant::now() + delay, id, payload);
    }

    /// Runs `job` on a worker; its result comes back through `on_completion` if the
    /// endpoint is still open then.
    pub fn spawn<F>(&mut self, id: ConnId, job: F)
    where
        F: FnOnce() -> H::Completion + Send + 'static,
    {
        self.pool.spawn(id, Box::new(job));
    }

    pub(crate) fn next_generation(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = match self.next_gen.wrapping_add(1) {
            u32::MAX => 0,
            n => n,
        };
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(bytes: usize, files: usize) -> OutQueue {
        let mut q = OutQueue::default();
        q.push_owned(vec![b'x'; bytes]);
        for _ in 0..files {
            q.push_file(File::open("/dev/null").expect("/dev/null"), 1);
        }
        q
    }

    #[test]
    fn reading_pauses_at_the_mark_and_resumes_at_half_of_it() {
        let pause_at = 64 * 1024;
        assert!(!must_pause_reading(&queue(pause_at - 1, 0), pause_at));
        assert!(must_pause_reading(&queue(pause_at, 0), pause_at));
        assert!(!must_pause_reading(
            &queue(0, MAX_QUEUED_FILES - 1),
            pause_at
        ));
        assert!(must_pause_reading(&queue(0, MAX_QUEUED_FILES), pause_at));

        assert!(may_resume_reading(&queue(0, 0), pause_at));
        assert!(may_resume_reading(&queue(pause_at / 2, 0), pause_at));
        assert!(!may_resume_reading(&queue(pause_at / 2 + 1, 0), pause_at));
        assert!(!may_resume_reading(&queue(pause_at - 1, 0), pause_at));
        assert!(may_resume_reading(
            &queue(0, MAX_QUEUED_FILES - 1),
            pause_at
        ));
        assert!(!may_resume_reading(&queue(0, MAX_QUEUED_FILES), pause_at));
        assert!(!may_resume_reading(
            &queue(pause_at, MAX_QUEUED_FILES - 1),
            pause_at
        ));
    }
}
