//! Every deadline of the loop: one hashed timer wheel ([`crate::wheel`]) for endpoints and
//! server-level timers alike, and the deferred-completion heap.
//!
//! - An endpoint has one wheel entry, linked at its earliest deadline: handshake (first
//!   line or TLS; for an outbound endpoint, the connect timeout), idle, keep-alive, the soft
//!   output limit, linger while closing, and the shutdown grace. Activity only stamps the
//!   endpoint; when the entry fires, the stamps say what is due and the entry is relinked
//!   (lazy rescheduling).
//! - A server-level timer ([`Core::set_timer`]) is an entry of its own in a small slab,
//!   linked into the same wheel; it fires as a server-level event. The loop's own back-off
//!   after running out of descriptors is one of these.
//! - [`Core::defer`] keeps a binary heap of exact instants instead. Deferred completions
//!   stand for an action's own wait (`sleepTest` sleeps exactly the milliseconds asked,
//!   as in actionhero); the wheel's 100 ms tick is too coarse for them, and they are few
//!   (bounded by each connection's pending actions), so a heap costs little.
//!
//! Deadlines never fire early: stamps are whole ticks taken at the start of a turn, so the
//! real moment may lie up to one tick after its stamp, and a deadline is the stamp plus one
//! tick plus the duration rounded up to ticks. A deadline fires at or after its time, and at
//! most one tick (plus the loop turn) late. Keep-alive pings alone get a random delay of up
//! to a tenth of their interval (at most 1 s) on top, so that connections that arrived
//! together do not all ping in the same tick forever.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::core::{Core, ReactorConfig};
use crate::endpoint::{CloseReason, ConnId, Endpoint, EndpointKind, Phase};
use crate::event_loop::Reactor;
use crate::handler::{Handler, Timeout};
use crate::wheel::{Link, Links, Wheel};

/// Length of a timer-wheel tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Timers fired per loop turn before the rest wait for the next turn (fairness).
const TIMERS_PER_TURN: usize = 4096;
/// Largest random delay added to keep-alive deadlines, in ticks.
const MAX_JITTER_TICKS: u64 = 10;
/// Wheel slots from here up are server-level timers (index into the timer slab); below,
/// endpoints (their slab index).
const TIMER_SLOT_BASE: u32 = 1 << 31;
/// Largest endpoint slot the wheel can hold.
pub(crate) const MAX_ENDPOINT_SLOT: usize = TIMER_SLOT_BASE as usize - 1;

/// Whether an endpoint may live in slab slot `slot`: its wheel entry must stay below the
/// server-level timers' range. Past it, new connections are refused (2^31 endpoints).
pub(crate) fn endpoint_slot_fits(slot: usize) -> bool {
    slot <= MAX_ENDPOINT_SLOT
}

/// A tick beyond any real deadline (hundreds of millions of years away), for durations too
/// long to count; small enough that adding a few ticks to it cannot overflow.
const NEVER: u64 = u64::MAX / 4;

/// `d` in whole ticks, rounded up (to the nanosecond: a deadline is never early).
pub(crate) fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(TICK.as_nanos())).unwrap_or(NEVER)
}

/// `stamp` (low 32 bits of a tick) as a full tick, assuming it is not after `now`.
fn widen(stamp: u32, now: u64) -> u64 {
    now.saturating_sub(u64::from((now as u32).wrapping_sub(stamp)))
}

/// The first tick at which `after` ticks have surely passed since the moment stamped
/// `stamp` (see the module header: never early).
fn due(stamp: u32, after: u64, now: u64) -> u64 {
    widen(stamp, now) + 1 + after
}

/// An endpoint's timer settings, in ticks (0 = off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    pub keepalive: u64,
    pub idle: u64,
    /// Accepted: the first line or TLS handshake. Outbound: connect + TLS handshake.
    pub handshake: u64,
}

/// A server-level timer, as returned by [`Core::set_timer`]. Generational: cancelling a
/// timer that already fired does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    slot: u32,
    gen_: u32,
}

/// Why a server-level timer could not be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerError {
    /// `max_timers` timers are set already.
    TooMany { limit: usize },
}

impl std::fmt::Display for TimerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimerError::TooMany { limit } => {
                write!(f, "too many server-level timers (limit {limit})")
            }
        }
    }
}

impl std::error::Error for TimerError {}

/// What a server-level timer does when it fires.
pub(crate) enum TimerAction<E> {
    /// Handed to [`Handler::on_event`].
    Event(E),
    /// The loop's own: accepting resumes after running out of descriptors.
    ResumeAccepting,
}

struct TimerEntry<E> {
    link: Link,
    generation: u32,
    action: TimerAction<E>,
}

/// The wheel's view of both kinds of entry, by slot.
struct Slots<'a, S, E> {
    endpoints: &'a mut Slab<Endpoint<S>>,
    timers: &'a mut Slab<TimerEntry<E>>,
}

impl<S, E> Links for Slots<'_, S, E> {
    fn link(&mut self, slot: u32) -> &mut Link {
        // Entries are unlinked before their slot is freed, so these slots exist.
        if slot >= TIMER_SLOT_BASE {
            &mut self.timers[(slot - TIMER_SLOT_BASE) as usize].link
        } else {
            &mut self.endpoints[slot as usize].timer
        }
    }
}

/// A completion waiting for its instant. Ordered by time, then by arrival.
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

/// The loop's clock, wheel, server-level timers and deferred completions.
pub(crate) struct Timers<E, C> {
    wheel: Wheel,
    entries: Slab<TimerEntry<E>>,
    next_gen: u32,
    max_timers: usize,
    /// Timer settings by index (each listener's, each distinct set of connect options).
    profiles: Vec<Profile>,
    origin: Instant,
    /// Ticks since `origin` at the start of this turn.
    tick: u64,
    rng: fastrand::Rng,
    linger: u64,
    shutdown_grace: u64,
    soft_output: u64,
    /// Tick at which shutdown stops waiting.
    shutdown_tick: Option<u64>,
    deferred: BinaryHeap<Reverse<Deferred<C>>>,
    deferred_seq: u64,
    /// The fire budget ran out last turn: more timers are due now.
    pub(crate) behind: bool,
}

impl<E, C> Timers<E, C> {
    pub(crate) fn new(cfg: &ReactorConfig, now: Instant) -> Timers<E, C> {
        Timers {
            wheel: Wheel::new(0),
            entries: Slab::new(),
            next_gen: 0,
            max_timers: cfg
                .max_timers
                .min((u32::MAX - 2 - TIMER_SLOT_BASE) as usize),
            profiles: Vec::new(),
            origin: now,
            tick: 0,
            rng: fastrand::Rng::new(),
            linger: ticks(cfg.linger).max(1),
            shutdown_grace: ticks(cfg.shutdown_grace),
            soft_output: ticks(cfg.output_soft_duration),
            shutdown_tick: None,
            deferred: BinaryHeap::new(),
            deferred_seq: 0,
            behind: false,
        }
    }

    /// Starts a loop turn at `now`.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.tick = self.tick_at(now);
    }

    fn tick_at(&self, t: Instant) -> u64 {
        u64::try_from(t.duration_since(self.origin).as_millis() / TICK.as_millis()).unwrap_or(NEVER)
    }

    /// This turn's tick, as stored in endpoint stamps.
    pub(crate) fn tick32(&self) -> u32 {
        self.tick as u32
    }

    /// The index of `p` among the profiles (added if new).
    pub(crate) fn profile(&mut self, p: Profile) -> Option<u8> {
        if let Some(i) = self.profiles.iter().position(|q| *q == p) {
            return u8::try_from(i).ok();
        }
        let i = u8::try_from(self.profiles.len()).ok()?;
        self.profiles.push(p);
        Some(i)
    }

    /// When a closing endpoint is given up on.
    pub(crate) fn linger_deadline(&self) -> u64 {
        let d = self.tick + 1 + self.linger;
        self.shutdown_tick.map_or(d, |s| d.min(s))
    }

    /// Shutdown begins now: returns the tick at which it stops waiting.
    pub(crate) fn begin_shutdown(&mut self) -> u64 {
        let d = self.tick + 1 + self.shutdown_grace;
        self.shutdown_tick = Some(d);
        d
    }

    /// Links endpoint `slot` to fire at `deadline` (moving it if linked).
    pub(crate) fn link<S>(
        &mut self,
        endpoints: &mut Slab<Endpoint<S>>,
        slot: usize,
        deadline: u64,
    ) {
        debug_assert!(endpoint_slot_fits(slot));
        let mut slots = Slots {
            endpoints,
            timers: &mut self.entries,
        };
        self.wheel.insert(&mut slots, slot as u32, deadline);
    }

    /// Unlinks endpoint `slot` if it is linked.
    pub(crate) fn unlink<S>(&mut self, endpoints: &mut Slab<Endpoint<S>>, slot: usize) {
        let mut slots = Slots {
            endpoints,
            timers: &mut self.entries,
        };
        self.wheel.cancel(&mut slots, slot as u32);
    }

    fn set<S>(
        &mut self,
        endpoints: &mut Slab<Endpoint<S>>,
        delay: Duration,
        action: TimerAction<E>,
    ) -> Result<TimerId, TimerError> {
        if self.entries.len() >= self.max_timers {
            return Err(TimerError::TooMany {
                limit: self.max_timers,
            });
        }
        // Measured from the moment of the call, not the start of the turn: never early.
        let at = Instant::now() + delay;
        let deadline = ticks(at.duration_since(self.origin));
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        let index = self.entries.insert(TimerEntry {
            link: Link::default(),
            generation,
            action,
        });
        let slot = TIMER_SLOT_BASE + index as u32;
        let mut slots = Slots {
            endpoints,
            timers: &mut self.entries,
        };
        self.wheel.insert(&mut slots, slot, deadline);
        Ok(TimerId {
            slot,
            gen_: generation,
        })
    }

    fn cancel<S>(&mut self, endpoints: &mut Slab<Endpoint<S>>, id: TimerId) -> Option<E> {
        let index = (id.slot.checked_sub(TIMER_SLOT_BASE)?) as usize;
        if self.entries.get(index)?.generation != id.gen_ {
            return None;
        }
        let mut slots = Slots {
            endpoints,
            timers: &mut self.entries,
        };
        self.wheel.cancel(&mut slots, id.slot);
        match self.entries.remove(index).action {
            TimerAction::Event(e) => Some(e),
            TimerAction::ResumeAccepting => None,
        }
    }

    /// Fires due wheel entries (bounded per turn) into `fired`.
    fn advance<S>(&mut self, endpoints: &mut Slab<Endpoint<S>>, fired: &mut Vec<u32>) {
        let mut slots = Slots {
            endpoints,
            timers: &mut self.entries,
        };
        let n = self
            .wheel
            .advance(&mut slots, self.tick, TIMERS_PER_TURN, fired);
        self.behind = n == TIMERS_PER_TURN;
    }

    /// Removes a fired server-level timer and gives its action.
    fn take(&mut self, slot: u32) -> Option<TimerAction<E>> {
        let index = (slot.checked_sub(TIMER_SLOT_BASE)?) as usize;
        let entry = self.entries.try_remove(index)?;
        debug_assert!(!entry.link.is_linked(), "fired entries are unlinked");
        Some(entry.action)
    }

    pub(crate) fn defer(&mut self, at: Instant, id: ConnId, payload: C) {
        self.deferred_seq += 1;
        self.deferred.push(Reverse(Deferred {
            at,
            seq: self.deferred_seq,
            id,
            payload,
        }));
    }

    /// The next deferred completion whose instant is at or before `now`.
    pub(crate) fn due_deferred(&mut self, now: Instant) -> Option<(ConnId, C)> {
        if self.deferred.peek().is_some_and(|Reverse(d)| d.at <= now) {
            self.deferred.pop().map(|Reverse(d)| (d.id, d.payload))
        } else {
            None
        }
    }

    /// When the loop must wake next for a timer, if any is set.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let wheel = self.wheel.next_tick().map(|t| {
            let ms = t.saturating_mul(TICK.as_millis() as u64);
            self.origin + Duration::from_millis(ms)
        });
        let deferred = self.deferred.peek().map(|Reverse(d)| d.at);
        [wheel, deferred].into_iter().flatten().min()
    }
}

/// What an endpoint's stamps make due, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    OutputLimit,
    Handshake,
    Idle,
    KeepAlive,
}

impl Due {
    /// Ticks added at random to a deadline of this kind. Only keep-alive pings are spread
    /// (over a tenth of their interval, at most a second), so that connections that arrived
    /// together are not all pinged in one turn; every other deadline is exact.
    fn jitter(self, p: Profile, rng: &mut fastrand::Rng) -> u64 {
        match self {
            Due::KeepAlive => rng.u64(0..=(p.keepalive / 10).min(MAX_JITTER_TICKS)),
            Due::OutputLimit | Due::Handshake | Due::Idle => 0,
        }
    }
}

/// An endpoint's deadlines (full ticks) by kind. While it connects or runs its TLS
/// handshake only the handshake deadline applies: nothing else can happen yet.
fn deadlines<S>(ep: &Endpoint<S>, p: Profile, soft: u64, now: u64) -> [Option<(u64, Due)>; 4] {
    let connecting = ep.pre_open();
    let handshake = (ep.handshaking && p.handshake > 0)
        .then(|| (due(ep.opened, p.handshake, now), Due::Handshake));
    if connecting {
        return [handshake, None, None, None];
    }
    [
        ep.over_soft_since
            .map(|since| (due(since, soft, now), Due::OutputLimit)),
        handshake,
        (p.idle > 0).then(|| (due(ep.last_rx, p.idle, now), Due::Idle)),
        (p.keepalive > 0).then(|| {
            let last = widen(ep.last_rx, now).max(widen(ep.last_ping, now)) as u32;
            (due(last, p.keepalive, now), Due::KeepAlive)
        }),
    ]
}

impl<H: Handler> Core<H> {
    /// Links `id`'s wheel entry at its next deadline (or unlinks it when none applies).
    /// Deadlines are recomputed from the stamps when the entry fires.
    pub(crate) fn schedule(&mut self, id: ConnId) {
        let t = &mut self.timers;
        let now = t.tick;
        let Some(ep) = self
            .endpoints
            .get(id.slot())
            .filter(|e| e.generation == id.generation())
        else {
            return;
        };
        if !matches!(ep.phase, Phase::Open | Phase::Connecting) {
            return; // closing endpoints have their linger deadline set by `close`
        }
        let p = t.profiles[usize::from(ep.profile)];
        let next = deadlines(ep, p, t.soft_output, now)
            .into_iter()
            .flatten()
            .map(|(d, kind)| d + kind.jitter(p, &mut t.rng))
            .min();
        let deadline = match (next, t.shutdown_tick) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        };
        match deadline {
            Some(d) => t.link(&mut self.endpoints, id.slot(), d),
            None => t.unlink(&mut self.endpoints, id.slot()),
        }
    }

    /// Sets a server-level timer: `event` is handed to [`Handler::on_event`] when `delay`
    /// has passed (at most one 100 ms tick later).
    pub fn set_timer(&mut self, delay: Duration, event: H::Event) -> Result<TimerId, TimerError> {
        self.timers
            .set(&mut self.endpoints, delay, TimerAction::Event(event))
    }

    /// Cancels a server-level timer that has not fired, handing its event back.
    pub fn cancel_timer(&mut self, id: TimerId) -> Option<H::Event> {
        self.timers.cancel(&mut self.endpoints, id)
    }

    /// Server-level timers set and not fired yet.
    pub fn timers_set(&self) -> usize {
        self.timers.entries.len()
    }

    pub(crate) fn set_internal_timer(&mut self, delay: Duration, action: TimerAction<H::Event>) {
        if let Err(e) = self.timers.set(&mut self.endpoints, delay, action) {
            log::error!("cannot set the loop's own timer: {e}");
        }
    }
}

impl<H: Handler> Reactor<H> {
    /// Fires due wheel entries (bounded per turn): endpoints act on their stamps,
    /// server-level timers become events.
    pub(crate) fn expire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.core
            .timers
            .advance(&mut self.core.endpoints, &mut fired);
        for slot in fired.drain(..) {
            if slot >= TIMER_SLOT_BASE {
                match self.core.timers.take(slot) {
                    Some(TimerAction::Event(e)) => {
                        self.core.stats.events.fetch_add(1, Ordering::Relaxed);
                        self.handler.on_event(&mut self.core, e);
                    }
                    Some(TimerAction::ResumeAccepting) => self.resume_accepting(),
                    None => debug_assert!(false, "fired timers exist until taken"),
                }
                continue;
            }
            let Some(ep) = self.core.endpoints.get(slot as usize) else {
                debug_assert!(
                    false,
                    "wheel entries are unlinked before their slot is freed"
                );
                continue;
            };
            let id = ConnId::new(slot as usize, ep.generation);
            self.on_endpoint_timer(id);
        }
        self.fired = fired;
    }

    /// An endpoint's entry fired: decide from its stamps what is due, act, and relink.
    fn on_endpoint_timer(&mut self, id: ConnId) {
        let core = &mut self.core;
        let now = core.timers.tick;
        let shutdown_over = core.timers.shutdown_tick.is_some_and(|s| now >= s);
        let soft = core.timers.soft_output;
        let Some(ep) = core.ep(id) else {
            return;
        };
        match ep.phase {
            Phase::Dead(_) => return,
            Phase::Draining(r) | Phase::Lingering(r) => {
                log::debug!("{id:?} ({}) did not finish closing in time", ep.peer);
                core.kill(id, r);
                return;
            }
            Phase::Open | Phase::Connecting => {}
        }
        if shutdown_over {
            core.kill(id, CloseReason::Shutdown);
            return;
        }
        let p = core.timers.profiles[usize::from(ep.profile)];
        let due = deadlines(ep, p, soft, now)
            .into_iter()
            .flatten()
            .find(|&(d, _)| d <= now)
            .map(|(_, kind)| kind);
        let connecting = ep.pre_open();
        let (kind, peer) = (ep.kind, ep.peer);
        let stats = std::sync::Arc::clone(&core.stats);
        match due {
            Some(Due::Handshake) if connecting => {
                // No channel to say goodbye on: just close.
                if kind == EndpointKind::Outbound {
                    log::debug!("{id:?}: connecting to {peer} timed out");
                    stats.outbound_failed.fetch_add(1, Ordering::Relaxed);
                    core.kill(id, CloseReason::ConnectTimeout);
                } else {
                    log::debug!("{id:?} ({peer}) did not finish its TLS handshake in time");
                    stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    core.kill(id, CloseReason::HandshakeTimeout);
                }
                return;
            }
            Some(Due::OutputLimit) => {
                core.output_limit_exceeded(id, "soft");
                return;
            }
            Some(Due::KeepAlive) => {
                stats.keepalive_pings.fetch_add(1, Ordering::Relaxed);
                if let Some(ep) = core.ep_mut(id) {
                    ep.last_ping = now as u32;
                }
                self.handler.on_timeout(core, id, Timeout::KeepAlive);
            }
            Some(timeout @ (Due::Idle | Due::Handshake)) => {
                let (counter, reason, timeout) = match timeout {
                    Due::Idle => (
                        &stats.idle_timeouts,
                        CloseReason::IdleTimeout,
                        Timeout::Idle,
                    ),
                    _ => (
                        &stats.handshake_timeouts,
                        CloseReason::HandshakeTimeout,
                        Timeout::Handshake,
                    ),
                };
                if self.handler.on_timeout(core, id, timeout) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    core.close(id, reason);
                }
            }
            None => {}
        }
        if core
            .ep(id)
            .is_some_and(|e| matches!(e.phase, Phase::Open | Phase::Connecting))
        {
            core.schedule(id);
        }
    }
}

#[cfg(test)]
mod tests;
