//! Counters the loop keeps for other threads (the `status` action, `/metrics`, tests).
//!
//! Plain atomics written with `Relaxed` ordering: each is an independent count, read now and
//! then, so no ordering between them is promised.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds (µs) of the loop turn histogram buckets.
pub const LOOP_TURN_BOUNDS_US: [u64; 10] =
    [10, 25, 50, 100, 250, 500, 1_000, 5_000, 25_000, 100_000];

/// Counters shared with other threads. "Connections" are accepted endpoints; outbound
/// endpoints have counters of their own.
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
    /// Of `tls_handshakes`, those that resumed an earlier session (no certificate signed).
    pub tls_resumed: AtomicU64,
    pub tls_failures: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    /// Accepts that failed for want of resources (descriptors, memory) or for an unexpected
    /// error; each pauses accepting for a short back-off.
    pub accept_failures: AtomicU64,
    /// Connections closed because a PROXY protocol header was expected and not sent.
    pub proxy_failures: AtomicU64,
    /// Times reading from a connection paused because its own output was backed up
    /// (backpressure: it resumes as the peer reads).
    pub read_pauses: AtomicU64,
    /// Read steps on endpoints (each at most one socket read): with edge-triggered
    /// readiness, a short read ends the reading, so an idle-then-one-line exchange costs one.
    pub reads: AtomicU64,
    /// TLS handshake steps left waiting for a later loop turn, once per turn each waits
    /// (the turn's share was taken: `handshakes_per_turn`, or 16 sent away).
    pub handshake_deferrals: AtomicU64,
    /// TLS handshake steps run on a handshake thread (`handshake_threads`).
    pub handshake_steps_away: AtomicU64,
    /// Outbound endpoints open now (connecting or connected).
    pub outbound_open: AtomicUsize,
    /// Outbound connections established (and past their TLS handshake).
    pub outbound_connected: AtomicU64,
    /// Outbound connections that failed or timed out before opening.
    pub outbound_failed: AtomicU64,
    /// Server-level events (and server-level timers) delivered to the handler. A refused
    /// event is reported to its sender, which counts it where it matters.
    pub events: AtomicU64,
    /// Loop turn durations (poll return to the next poll), a histogram in µs: counts per
    /// upper bound of [`LOOP_TURN_BOUNDS_US`], the last one for everything above.
    pub loop_turns: [AtomicU64; LOOP_TURN_BOUNDS_US.len() + 1],
    pub loop_turn_ns_sum: AtomicU64,
}

impl ReactorStats {
    pub(crate) fn record_turn(&self, d: Duration) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_land_in_their_buckets() {
        let s = ReactorStats::default();
        s.record_turn(Duration::from_micros(5));
        s.record_turn(Duration::from_micros(10));
        s.record_turn(Duration::from_micros(30));
        s.record_turn(Duration::from_secs(1));
        let counts: Vec<u64> = s
            .loop_turns
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(s.loop_turn_ns_sum.load(Ordering::Relaxed), 1_000_045_000);
    }
}
