//! Is this node healthy? The problems `/status` (and the `status` action) report, and the
//! drain step before a shutdown. A load balancer's health check reads `/status`: 200 while
//! healthy, 503 with the problems listed while not, while draining and while shutting down.
//!
//! - **Event loop lag**: a server-level timer fires every second; how late it fires (beyond
//!   the wheel's one-tick granularity) is the lag, as Node's event-loop-lag probes measure it.
//!   A loop stalled by work between turns answers every client late by as much.
//! - **Connections near `maxConnections`**: at 90 % accepting is about to pause, and every
//!   accepted connection holds a descriptor, so this is also "descriptors near the limit".
//! - **Worker queue saturated**: more jobs queued or running than the workers can clear soon.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the loop lag is probed.
pub(crate) const LAG_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Lag beyond this is a problem (five wheel ticks: far beyond the normal timer slack).
pub(crate) const LAG_UNHEALTHY: Duration = Duration::from_millis(500);
/// Open connections over this share of `maxConnections` are a problem (accepting pauses at
/// 100 % and resumes below 90 %).
const CONNECTIONS_UNHEALTHY_PERCENT: usize = 90;
/// Jobs queued or running per worker beyond which the queue counts as saturated.
const JOBS_PER_WORKER_UNHEALTHY: usize = 1000;

/// Health inputs the loop and the signal handling update, read by `/status` from any thread.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    lag_us: AtomicU64,
    /// Worker jobs queued or running, sampled with each lag probe.
    jobs: AtomicUsize,
}

impl Health {
    /// Drain mode: everything keeps working, `/status` answers 503 (`nodeStatus` "Node
    /// Draining") so that load balancers send new clients elsewhere.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The last lag probe's result: how late a timer due at `due` fired at `fired`.
    pub(crate) fn record_lag(&self, due: Instant, fired: Instant) {
        let late = fired.saturating_duration_since(due);
        let us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        self.lag_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn record_jobs(&self, jobs: usize) {
        self.jobs.store(jobs, Ordering::Relaxed);
    }

    /// Worker jobs queued or running at the last probe.
    pub fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Relaxed)
    }

    /// The event loop lag the last probe measured.
    pub fn loop_lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }
}

/// The `nodeStatus` of a node that should receive new clients (`/status` 200; else 503).
pub(crate) const HEALTHY: &str = "Node Healthy";

/// `nodeStatus` and `problems` for `/status` and the `status` action.
pub(crate) fn node_status(api: &crate::Api) -> (&'static str, Vec<String>) {
    let problems = problems(&Inputs {
        loop_lag: api.health.loop_lag(),
        connections: api.connections(),
        max_connections: api.max_connections,
        jobs: api.health.jobs(),
        workers: api.workers,
    });
    let status = if api.health.is_draining() {
        "Node Draining"
    } else if problems.is_empty() {
        HEALTHY
    } else {
        "Node Unhealthy"
    };
    (status, problems)
}

/// What the problems are computed from (a snapshot).
pub(crate) struct Inputs {
    pub loop_lag: Duration,
    pub connections: usize,
    pub max_connections: usize,
    pub jobs: usize,
    pub workers: usize,
}

/// The problems, worded for a person reading `/status`; empty when healthy.
pub(crate) fn problems(i: &Inputs) -> Vec<String> {
    let mut out = Vec::new();
    if i.loop_lag > LAG_UNHEALTHY {
        out.push(format!(
            "event loop lag {} ms (over {} ms)",
            i.loop_lag.as_millis(),
            LAG_UNHEALTHY.as_millis()
        ));
    }
    if i.connections * 100 > i.max_connections * CONNECTIONS_UNHEALTHY_PERCENT {
        out.push(format!(
            "{} connections open of maxConnections {} (over {CONNECTIONS_UNHEALTHY_PERCENT}%)",
            i.connections, i.max_connections
        ));
    }
    if i.jobs > i.workers.max(1) * JOBS_PER_WORKER_UNHEALTHY {
        out.push(format!(
            "{} jobs queued for {} workers (over {JOBS_PER_WORKER_UNHEALTHY} per worker)",
            i.jobs, i.workers
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Inputs {
        Inputs {
            loop_lag: Duration::from_millis(3),
            connections: 90,
            max_connections: 100,
            jobs: 2000,
            workers: 2,
        }
    }

    #[test]
    fn each_problem_starts_just_past_its_threshold() {
        assert!(problems(&healthy()).is_empty());
        let lag = problems(&Inputs {
            loop_lag: Duration::from_millis(501),
            ..healthy()
        });
        assert_eq!(lag, ["event loop lag 501 ms (over 500 ms)"]);
        let full = problems(&Inputs {
            connections: 91,
            ..healthy()
        });
        assert_eq!(
            full,
            ["91 connections open of maxConnections 100 (over 90%)"]
        );
        let busy = problems(&Inputs {
            jobs: 2001,
            ..healthy()
        });
        assert_eq!(
            busy,
            ["2001 jobs queued for 2 workers (over 1000 per worker)"]
        );
    }

    #[test]
    fn lag_is_how_late_a_probe_fired() {
        let h = Health::default();
        let due = Instant::now();
        h.record_lag(due, due + Duration::from_millis(42));
        assert_eq!(h.loop_lag(), Duration::from_millis(42));
        h.record_lag(due + Duration::from_secs(1), due); // early (cannot happen): no lag
        assert_eq!(h.loop_lag(), Duration::ZERO);
        assert!(!h.is_draining());
        h.set_draining();
        assert!(h.is_draining());
    }
}
