//! TLS handshakes in the loop turn: when their steps run, and where.
//!
//! A full handshake's first step (key exchange and signature) costs a hundred microseconds
//! or more, against a few for a request. So handshaking endpoints that are readable wait in
//! a queue until the turn's replies to established clients are written
//! (`Reactor::step_handshakes`, after the accept pass; together they stop when the turn's
//! time for new clients, `NEW_CLIENTS_PER_TURN`, is spent), and then their steps either
//! - run on the handshake threads (`ReactorConfig::handshake_threads` > 0, the default)
//!   while there is established traffic to protect (application bytes read within
//!   `handshake_traffic_window`): the loop only reads the socket and hands the session over
//!   (at most `AWAY_STEPS_PER_TURN` per turn); the threads run at a low priority, so the
//!   loop preempts them whenever established clients have work, and a storm of new clients
//!   costs established ones a few microseconds per step, not the cryptography; or
//! - run on the loop thread (no handshake threads, or no recent traffic: a hand-off costs
//!   a pair of context switches each way, which only buys something when requests wait),
//!   at most `handshakes_per_turn` per turn, the rest put off to the next turn behind its
//!   established traffic again.
//!
//! A session that comes back (`Reactor::handshake_steps_back`) brings its flight, which
//! the turn's flush writes, and any application bytes that came with the client's last
//! handshake message, which the next read hands out.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::endpoint::{CloseReason, ConnId, EndpointKind, Phase};
use crate::event_loop::Reactor;
use crate::handler::Handler;
use crate::pool::{Done, Pool};
use crate::transport::{AwayStep, ReadStep};

/// Handshake steps sent to the handshake threads per turn at most: each costs the loop one
/// socket read and a hand-over, a few microseconds; the rest wait for the next turn, behind
/// its established traffic.
const AWAY_STEPS_PER_TURN: usize = 16;

/// The loop's handshake state: the steps waiting, this turn's share, and where they run.
pub(crate) struct Handshakes {
    /// Handshaking endpoints with bytes to step, in arrival order: stepped after established
    /// traffic's replies are flushed, a share per turn; the rest wait here for the next turn.
    pub(crate) queue: VecDeque<ConnId>,
    /// Steps left this turn.
    pub(crate) budget: usize,
    /// True while [`Reactor::step_handshakes`] runs: a handshake read may go ahead.
    pub(crate) phase: bool,
    /// This turn's steps go to the handshake threads.
    pub(crate) sending_away: bool,
    /// The handshake threads (none when `handshake_threads` is 0: steps run on the loop).
    away: Option<Pool<AwayStep>>,
    /// Sessions back from the handshake threads, taken each wake-up.
    back: Vec<Done<AwayStep>>,
    /// When application bytes were last read from an open endpoint: established traffic
    /// that handshake steps on the loop thread would delay.
    pub(crate) traffic_at: Option<Instant>,
}

impl Handshakes {
    pub(crate) fn new(away: Option<Pool<AwayStep>>) -> Handshakes {
        Handshakes {
            queue: VecDeque::new(),
            budget: 0,
            phase: false,
            sending_away: false,
            away,
            back: Vec::new(),
            traffic_at: None,
        }
    }
}

impl<H: Handler> Reactor<H> {
    /// Steps this turn's share of the waiting handshakes (see the module header); the rest
    /// keep their place for the next turn, which costs nothing per waiting endpoint (a
    /// storm of thousands waits in the queue, not in every turn's read pass). Their output
    /// is flushed at the end of the turn.
    pub(crate) fn step_handshakes(&mut self) {
        if self.handshakes.queue.is_empty() {
            return;
        }
        // Away only with established traffic to protect: a hand-off costs the core two
        // context switches, which buys nothing when no request waits.
        let window = self.core.cfg.handshake_traffic_window;
        self.handshakes.sending_away = self.handshakes.away.is_some()
            && (window == Duration::MAX
                || self
                    .handshakes
                    .traffic_at
                    .is_some_and(|at| self.core.now.saturating_duration_since(at) < window));
        self.handshakes.budget = match self.handshakes.sending_away {
            true => AWAY_STEPS_PER_TURN,
            false => self.core.cfg.handshakes_per_turn.max(1),
        };
        self.handshakes.phase = true;
        let mut stepped = 0;
        while self.handshakes.budget > 0 && (stepped == 0 || !self.new_clients_done()) {
            let Some(id) = self.handshakes.queue.pop_front() else {
                break;
            };
            stepped += 1;
            let Some(ep) = self.core.ep_mut(id) else {
                continue; // gone meanwhile
            };
            ep.in_handshakes = false;
            self.read_endpoint(id);
        }
        self.handshakes.phase = false;
        self.handshakes.sending_away = false;
        self.core
            .stats
            .handshake_deferrals
            .fetch_add(self.handshakes.queue.len() as u64, Ordering::Relaxed);
        if let Some(away) = self.handshakes.away.as_mut() {
            away.dispatch();
        }
    }

    /// An accepted endpoint's handshake step off the loop thread: one socket read here,
    /// rustls on a handshake thread (only with handshake threads).
    pub(crate) fn send_handshake_away(&mut self, id: ConnId) {
        let Some(away) = self.handshakes.away.as_mut() else {
            debug_assert!(false, "a handshake sent away without handshake threads");
            return;
        };
        let tick = self.core.timers.tick32();
        let Some((ep, stats)) = self.core.ep_and_stats(id) else {
            return;
        };
        debug_assert!(!ep.transport.is_away() && self.handshakes.budget > 0);
        debug_assert!(self.handshakes.sending_away);
        self.handshakes.budget -= 1;
        stats.reads.fetch_add(1, Ordering::Relaxed);
        let step = match ep.transport.read_for_away(&mut ep.stream) {
            Ok(step) => step,
            Err(e) => {
                return self.read_failed(id, e);
            }
        };
        ep.last_rx = tick;
        stats
            .bytes_in
            .fetch_add(step.wire as u64, Ordering::Relaxed);
        ep.note_read(&step);
        if step.peer_closed {
            // A client that leaves mid-handshake said nothing to answer.
            self.core.close(id, CloseReason::Eof);
            return;
        }
        if let Some(job) = ep.transport.send_away() {
            stats.handshake_steps_away.fetch_add(1, Ordering::Relaxed);
            away.spawn(id, Box::new(move || job.run()));
        }
    }

    /// Sessions back from the handshake threads: each resumes as a read step on the loop
    /// would have. One for an endpoint that is gone (closed, timed out) is dropped.
    pub(crate) fn handshake_steps_back(&mut self) {
        let Some(away) = self.handshakes.away.as_ref() else {
            return;
        };
        away.shared.drain(&mut self.handshakes.back);
        let mut back = std::mem::take(&mut self.handshakes.back);
        for (id, result) in back.drain(..) {
            let Some(ep) = self.core.ep_mut(id) else {
                continue;
            };
            if ep.phase != Phase::Open {
                continue; // dropped with the endpoint this turn
            }
            let step = match result {
                Ok(step) => step,
                Err(panic) => {
                    log::error!("a TLS handshake step panicked: {}", panic.message);
                    self.core.kill(id, CloseReason::Error);
                    continue;
                }
            };
            match ep.transport.come_back(&mut ep.stream, step) {
                Ok(step) => self.handshake_stepped(id, step),
                Err(e) => self.tls_failed(id, &e),
            }
        }
        self.handshakes.back = back;
    }

    /// What a handshake step that ran away did, applied as the read pass applies a step.
    fn handshake_stepped(&mut self, id: ConnId, step: ReadStep) {
        let Some(ep) = self.core.ep_mut(id) else {
            return;
        };
        let kind = ep.kind;
        if ep.transport.wants_write() {
            self.core.mark_dirty(id);
        }
        if step.handshake_done {
            self.tls_opened(id, kind);
        }
        if step.peer_closed {
            self.core.close(id, CloseReason::Eof);
            return;
        }
        // Bytes that came meanwhile, or with the last handshake message.
        if self.core.ep(id).is_some_and(|e| e.has_input()) {
            self.core.mark_ready(id);
        }
    }

    /// A TLS handshake completed: the endpoint opens for the application.
    pub(crate) fn tls_opened(&mut self, id: ConnId, kind: EndpointKind) {
        match kind {
            EndpointKind::Accepted => {
                let mut resumed = false;
                if let Some(ep) = self.core.ep_mut(id) {
                    ep.handshaking = false;
                    resumed = ep.transport.resumed();
                    log::debug!(
                        "{id:?} ({}): TLS handshake complete{}",
                        ep.peer,
                        if resumed { " (resumed)" } else { "" }
                    );
                }
                let stats = &self.core.stats;
                stats.tls_handshakes.fetch_add(1, Ordering::Relaxed);
                if resumed {
                    stats.tls_resumed.fetch_add(1, Ordering::Relaxed);
                }
                // Only the handshake deadline applied so far; now idle and keep-alive do.
                self.core.schedule(id);
            }
            EndpointKind::Outbound => self.core.outbound_opened(id),
        }
        self.handler.on_open(&mut self.core, id);
    }

    pub(crate) fn tls_failed(&mut self, id: ConnId, e: &rustls::Error) {
        let Some(ep) = self.core.ep(id) else {
            return;
        };
        if ep.kind == EndpointKind::Outbound && ep.handshaking {
            return self.core.outbound_failed(id, e);
        }
        log::debug!("{id:?}: TLS error with {}: {e}", ep.peer);
        self.core.stats.tls_failures.fetch_add(1, Ordering::Relaxed);
        self.core.kill(id, CloseReason::Error);
    }
}
