//! Server metrics in Prometheus text exposition format (`GET /metrics`).
//!
//! Counters the loop thread updates live here as plain integers (no atomics: the loop is the
//! only writer and `/metrics` is served on the loop too); counters the reactor and workers
//! update are read from their atomics at scrape time. Action metrics are labelled by action
//! name for registered actions only, so clients cannot grow the label set.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actionwire_reactor::{CloseReason, LOOP_TURN_BOUNDS_US, ReactorStats};

use crate::hooks::HookKind;
use crate::process::ProcessStats;
use crate::session::ListenerKind;

/// How an action call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Ok,
    /// Refused by its inputs (required, formatter, validator).
    InvalidInput,
    /// The action returned an error.
    Error,
    /// The action panicked.
    Panic,
}

impl Outcome {
    /// Every outcome, in the exposition's order (by label).
    const ALL: [Outcome; 4] = [
        Outcome::Error,
        Outcome::InvalidInput,
        Outcome::Ok,
        Outcome::Panic,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
        }
    }
}

/// Why an action call was refused before it ran: the `reason` label of
/// `actionwire_actions_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No such action (or no such `apiVersion` of it).
    UnknownAction,
    /// The connection has `simultaneousActions` calls pending.
    TooManyPending,
    /// The server is shutting down.
    ShuttingDown,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 3] = [
        Refusal::UnknownAction,
        Refusal::TooManyPending,
        Refusal::ShuttingDown,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::UnknownAction => "unknown_action",
            Refusal::TooManyPending => "too_many_pending",
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// Upper bounds (seconds) of the action duration histogram.
const ACTION_BOUNDS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Gauges read at scrape time from the rest of the server.
pub(crate) struct Gauges {
    pub pending_actions: usize,
    pub rooms: usize,
    pub room_members: usize,
    pub worker_queue: usize,
    pub process: ProcessStats,
    pub started_unix: f64,
    /// Loop hook calls over the slow mark, and those that panicked, by [`HookKind`].
    pub slow_hooks: [u64; HookKind::ALL.len()],
    pub hook_panics: [u64; HookKind::ALL.len()],
    /// Edge mode's pool, when an upstream is configured.
    pub upstream: Option<UpstreamGauges>,
    /// The cluster link's counters, when Redis is on.
    pub cluster: Option<std::sync::Arc<crate::cluster::Counters>>,
}

/// Edge mode's counters and the pool as it is now.
pub(crate) struct UpstreamGauges {
    pub counters: crate::upstream::Counters,
    pub queued: usize,
    pub idle: usize,
    pub busy: usize,
    pub connecting: usize,
}

/// One action's counters: calls by outcome and the duration histogram.
#[derive(Default)]
struct ActionStats {
    /// Indexed by the outcome's place in [`Outcome::ALL`].
    outcomes: [u64; Outcome::ALL.len()],
    buckets: [u64; ACTION_BOUNDS_S.len() + 1],
    sum: f64,
}

/// Counted once per action call on the loop: a fast hash (the names are the server's own
/// and the upstream's, not a client's choice of keys to collide).
type ByAction = HashMap<Arc<str>, ActionStats, foldhash::fast::RandomState>;

#[derive(Default)]
pub(crate) struct Metrics {
    pub open: [u64; ListenerKind::ALL.len()],
    pub accepted: [u64; ListenerKind::ALL.len()],
    closed: HashMap<&'static str, u64>,
    pub lines: u64,
    pub http_requests: HashMap<u16, u64>,
    refused: [u64; Refusal::ALL.len()],
    /// Calls and duration histograms by action (registered names and the upstream's
    /// documented ones only: a bounded label set).
    actions: ByAction,
    pub chat_messages: u64,
    pub chat_deliveries: u64,
}

impl Metrics {
    pub(crate) fn closed(&mut self, r: CloseReason) {
        *self.closed.entry(r.as_str()).or_default() += 1;
    }

    pub(crate) fn action(&mut self, name: &Arc<str>, outcome: Outcome, seconds: f64) {
        let i = ACTION_BOUNDS_S
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(ACTION_BOUNDS_S.len());
        // Looked up before inserting: the name's `Arc` is cloned once per action, not per call.
        let stats = match self.actions.get_mut(name) {
            Some(stats) => stats,
            None => self.actions.entry(Arc::clone(name)).or_default(),
        };
        let o = Outcome::ALL.iter().position(|&x| x == outcome).unwrap_or(0);
        stats.outcomes[o] += 1;
        stats.buckets[i] += 1;
        stats.sum += seconds;
    }

    pub(crate) fn refused(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }

    /// The whole exposition.
    pub(crate) fn render(&self, stats: &ReactorStats, g: &Gauges) -> String {
        let mut o = String::with_capacity(4096);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        head(
            &mut o,
            "actionwire_connections_open",
            "gauge",
            "Connections open now, by transport.",
        );
        for k in ListenerKind::ALL {
            let _ = writeln!(
                o,
                "actionwire_connections_open{{transport=\"{}\"}} {}",
                k.label(),
                self.open[k.index()]
            );
        }
        head(
            &mut o,
            "actionwire_connections_accepted_total",
            "counter",
            "Connections accepted, by transport.",
        );
        for k in ListenerKind::ALL {
            let _ = writeln!(
                o,
                "actionwire_connections_accepted_total{{transport=\"{}\"}} {}",
                k.label(),
                self.accepted[k.index()]
            );
        }
        head(
            &mut o,
            "actionwire_connections_closed_total",
            "counter",
            "Connections closed, by reason.",
        );
        for r in CloseReason::ALL {
            let l = r.as_str();
            let _ = writeln!(
                o,
                "actionwire_connections_closed_total{{reason=\"{l}\"}} {}",
                self.closed.get(l).copied().unwrap_or(0)
            );
        }
        counter(
            &mut o,
            "actionwire_received_bytes_total",
            "Bytes received from clients (before TLS decryption).",
            load(&stats.bytes_in),
        );
        counter(
            &mut o,
            "actionwire_sent_bytes_total",
            "Bytes sent to clients (after TLS encryption).",
            load(&stats.bytes_out),
        );
        counter(
            &mut o,
            "actionwire_lines_received_total",
            "Socket protocol lines received (over-long lines included).",
            self.lines,
        );
        head(
            &mut o,
            "actionwire_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
        );
        let mut codes: Vec<_> = self.http_requests.iter().collect();
        codes.sort();
        for (code, n) in codes {
            let _ = writeln!(o, "actionwire_http_requests_total{{code=\"{code}\"}} {n}");
        }
        head(
            &mut o,
            "actionwire_actions_total",
            "counter",
            "Actions run, by action and outcome.",
        );
        let mut names: Vec<&Arc<str>> = self.actions.keys().collect();
        names.sort();
        for name in &names {
            let stats = &self.actions[*name];
            for (outcome, &n) in Outcome::ALL.iter().zip(&stats.outcomes) {
                if n > 0 {
                    let _ = writeln!(
                        o,
                        "actionwire_actions_total{{action=\"{}\",outcome=\"{}\"}} {n}",
                        escape(name),
                        outcome.label()
                    );
                }
            }
        }
        head(
            &mut o,
            "actionwire_actions_refused_total",
            "counter",
            "Action calls refused before running, by reason.",
        );
        for r in Refusal::ALL {
            let _ = writeln!(
                o,
                "actionwire_actions_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                self.refused[r as usize]
            );
        }
        head(
            &mut o,
            "actionwire_action_duration_seconds",
            "histogram",
            "Time actions spent on a worker, by action.",
        );
        for name in names {
            let d = &self.actions[name];
            let labels = format!("action=\"{}\",", escape(name));
            histogram_series(
                &mut o,
                "actionwire_action_duration_seconds",
                &labels,
                &ACTION_BOUNDS_S,
                &d.buckets,
                d.sum,
            );
        }
        gauge(
            &mut o,
            "actionwire_pending_actions",
            "Actions queued or running, all connections.",
            g.pending_actions as u64,
        );
        gauge(
            &mut o,
            "actionwire_worker_queue_depth",
            "Jobs handed to the worker pool and not finished.",
            g.worker_queue as u64,
        );
        gauge(
            &mut o,
            "actionwire_rooms",
            "Chat rooms that exist.",
            g.rooms as u64,
        );
        gauge(
            &mut o,
            "actionwire_room_members",
            "Room memberships, all rooms.",
            g.room_members as u64,
        );
        for (name, help, values) in [
            (
                "actionwire_slow_hooks_total",
                "Connection and chat middleware calls that blocked the event loop over 10 ms, by hook.",
                &g.slow_hooks,
            ),
            (
                "actionwire_hook_panics_total",
                "Connection and chat middleware calls that panicked, by hook.",
                &g.hook_panics,
            ),
        ] {
            head(&mut o, name, "counter", help);
            for k in HookKind::ALL {
                let _ = writeln!(o, "{name}{{hook=\"{}\"}} {}", k.label(), values[k as usize]);
            }
        }
        counter(
            &mut o,
            "actionwire_chat_messages_total",
            "Messages said in rooms.",
            self.chat_messages,
        );
        counter(
            &mut o,
            "actionwire_chat_deliveries_total",
            "Chat lines queued to members (fan-out).",
            self.chat_deliveries,
        );
        counter(
            &mut o,
            "actionwire_keepalive_pings_total",
            "Keep-alive lines sent.",
            load(&stats.keepalive_pings),
        );
        counter(
            &mut o,
            "actionwire_tls_handshakes_total",
            "TLS handshakes completed.",
            load(&stats.tls_handshakes),
        );
        counter(
            &mut o,
            "actionwire_tls_handshakes_resumed_total",
            "Of the TLS handshakes completed, those that resumed an earlier session (a session ticket or id; no certificate signature).",
            load(&stats.tls_resumed),
        );
        counter(
            &mut o,
            "actionwire_tls_handshakes_deferred_total",
            "TLS handshake steps left waiting for a later loop turn, counted once per turn each waits (a turn takes 16 to the handshake threads, or runs 4 on the event loop, after its replies to established clients).",
            load(&stats.handshake_deferrals),
        );
        counter(
            &mut o,
            "actionwire_tls_handshake_steps_away_total",
            "TLS handshake steps run on the handshake threads (workers.handshakeThreads), off the event loop.",
            load(&stats.handshake_steps_away),
        );
        counter(
            &mut o,
            "actionwire_tls_handshake_failures_total",
            "TLS connections that failed (bad hello, refused certificate, protocol error).",
            load(&stats.tls_failures),
        );
        counter(
            &mut o,
            "actionwire_read_pauses_total",
            "Times reading from a connection paused because its replies were not being read (backpressure).",
            load(&stats.read_pauses),
        );
        counter(
            &mut o,
            "actionwire_proxy_header_failures_total",
            "Connections closed on a PROXY protocol listener for not starting with a valid header.",
            load(&stats.proxy_failures),
        );
        counter(
            &mut o,
            "actionwire_accept_failures_total",
            "Accepts that failed (out of file descriptors or memory); each pauses accepting briefly.",
            load(&stats.accept_failures),
        );
        let turns: Vec<u64> = stats.loop_turns.iter().map(load).collect();
        let bounds: Vec<f64> = LOOP_TURN_BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .collect();
        histogram(
            &mut o,
            "actionwire_loop_turn_seconds",
            "Event loop turns, from poll return to the next poll.",
            &bounds,
            &turns,
            load(&stats.loop_turn_ns_sum) as f64 / 1e9,
        );
        if let Some(u) = &g.upstream {
            upstream_families(&mut o, u);
        }
        if let Some(c) = &g.cluster {
            cluster_families(&mut o, c);
        }
        process_families(&mut o, g);
        o
    }
}

/// `actionwire_upstream_*`: forwarded calls and the backend pool.
fn upstream_families(o: &mut String, u: &UpstreamGauges) {
    use crate::upstream::Ending;
    head(
        o,
        "actionwire_upstream_calls_total",
        "counter",
        "Calls forwarded to the upstream backend, by how they ended.",
    );
    for e in Ending::ALL {
        let _ = writeln!(
            o,
            "actionwire_upstream_calls_total{{result=\"{}\"}} {}",
            e.label(),
            u.counters.calls[e as usize]
        );
    }
    counter(
        o,
        "actionwire_upstream_retries_total",
        "Calls sent again because nothing of their request had reached the backend.",
        u.counters.retries,
    );
    counter(
        o,
        "actionwire_upstream_connects_total",
        "Connections to the backend attempted.",
        u.counters.connects,
    );
    counter(
        o,
        "actionwire_upstream_connect_failures_total",
        "Connections to the backend that could not be established.",
        u.counters.connect_failures,
    );
    head(
        o,
        "actionwire_upstream_connections",
        "gauge",
        "Connections to the backend, by state.",
    );
    for (state, n) in [
        ("idle", u.idle),
        ("busy", u.busy),
        ("connecting", u.connecting),
    ] {
        let _ = writeln!(
            o,
            "actionwire_upstream_connections{{state=\"{state}\"}} {n}"
        );
    }
    gauge(
        o,
        "actionwire_upstream_queued",
        "Calls waiting for a backend connection.",
        u.queued as u64,
    );
}

/// `actionwire_cluster_*`: the Redis link and the bus.
fn cluster_families(o: &mut String, c: &crate::cluster::Counters) {
    use crate::cluster::wire::Drop;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    gauge(
        o,
        "actionwire_cluster_link_up",
        "1 while both connections to the cluster's Redis are up.",
        u64::from(c.link_up.load(Ordering::Relaxed)),
    );
    counter(
        o,
        "actionwire_cluster_published_total",
        "Messages published on the cluster's channel.",
        load(&c.published),
    );
    counter(
        o,
        "actionwire_cluster_publish_failed_total",
        "Messages not published: the link was down or the queue to Redis was full.",
        load(&c.publish_failed),
    );
    counter(
        o,
        "actionwire_cluster_received_total",
        "Messages received on the cluster's channel (this node's own included).",
        load(&c.received),
    );
    head(
        o,
        "actionwire_cluster_dropped_total",
        "counter",
        "Received messages dropped, by reason.",
    );
    for d in Drop::ALL {
        let _ = writeln!(
            o,
            "actionwire_cluster_dropped_total{{reason=\"{}\"}} {}",
            d.label(),
            c.dropped(d)
        );
    }
    counter(
        o,
        "actionwire_cluster_reconnects_total",
        "Attempts to reconnect to Redis after the link failed.",
        load(&c.reconnects),
    );
    head(
        o,
        "actionwire_cluster_calls_total",
        "counter",
        "This node's own cluster calls, by outcome.",
    );
    for outcome in crate::cluster::calls::Outcome::ALL {
        let _ = writeln!(
            o,
            "actionwire_cluster_calls_total{{outcome=\"{}\"}} {}",
            outcome.label(),
            c.calls(outcome)
        );
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    head(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    head(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

/// Cumulative buckets from per-bucket counts (the last count is above every bound).
fn histogram(o: &mut String, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    head(o, name, "histogram", help);
    histogram_series(o, name, "", bounds, counts, sum);
}

/// One histogram's samples; `labels` is empty or ends with a comma (`action="x",`).
fn histogram_series(
    o: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    debug_assert_eq!(bounds.len() + 1, counts.len());
    debug_assert!(labels.is_empty() || labels.ends_with(','));
    let mut cumulative = 0;
    for (b, c) in bounds.iter().zip(counts) {
        cumulative += c;
        let _ = writeln!(o, "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}");
    }
    cumulative += counts.last().copied().unwrap_or(0);
    let _ = writeln!(o, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
    let plain = labels.trim_end_matches(',');
    let braces = if plain.is_empty() {
        String::new()
    } else {
        format!("{{{plain}}}")
    };
    let _ = writeln!(o, "{name}_sum{braces} {sum}");
    let _ = writeln!(o, "{name}_count{braces} {cumulative}");
}

/// The build, and the `process_*` families with the names and units of the official
/// Prometheus clients.
fn process_families(o: &mut String, g: &Gauges) {
    head(
        o,
        "actionwire_build_info",
        "gauge",
        "Always 1; the labels say which build runs.",
    );
    let _ = writeln!(
        o,
        "actionwire_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let p = &g.process;
    if let Some(v) = p.resident_bytes {
        gauge(
            o,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            v,
        );
    }
    if let Some(v) = p.cpu_seconds {
        head(
            o,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        let _ = writeln!(o, "process_cpu_seconds_total {v}");
    }
    if let Some(v) = p.open_fds {
        gauge(o, "process_open_fds", "Number of open file descriptors.", v);
    }
    if let Some(v) = p.max_fds {
        gauge(
            o,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            v,
        );
    }
    head(
        o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(o, "process_start_time_seconds {:.3}", g.started_unix);
}

/// Label values escape backslash, quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
