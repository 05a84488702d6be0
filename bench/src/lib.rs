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
//! Latencies go into HdrHistograms (ns), merged across threads for the summary, and into
//! one histogram per second for throughput over time and the interval log.
//!
//! Modules: `worker` (one load thread's loop), `reply` (what a reply line says), `summary`
//! (the summary and `.hgrm` output), `report` (HTML reports of one or several runs).
//!
//! A benchmark that counts failures as throughput lies, so every reply is classified
//! (`reply.rs`): error replies, replies not matching `--expect`, requests left unanswered
//! past `--reply-timeout`, and connections lost are errors, shown in the progress line and
//! the summary; the CLI exits non-zero when any occurred unless `--allow-errors`.

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;

mod reply;
pub mod report;
mod summary;
mod worker;

pub use reply::{Verdict, classify, is_error_reply};
pub use summary::{Latency, Params, SpectrumPoint, Summary, print, write_hgrm};
use worker::Worker;

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
    /// Write one histogram per second to FILE as an HdrHistogram interval log (.hlog, ns).
    #[arg(long, value_name = "FILE")]
    pub histogram_log: Option<PathBuf>,
    /// Write a self-contained HTML report of this run to FILE: latency by percentile and
    /// throughput over time (`actionwire bench report` overlays several runs).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Line ending appended to each request.
    #[arg(long, default_value = "\n", hide_default_value = true)]
    pub eol: String,
    /// Speak TLS (needs --ca).
    #[arg(long, requires = "ca")]
    pub tls: bool,
    /// With --tls, let a new connection resume a session of an earlier one (the tickets
    /// the server sent). By default every connection is a new client: a full handshake.
    #[arg(long, requires = "tls")]
    pub tls_resume: bool,
    /// PEM CA certificate that signs the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Server name to verify with --tls.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Load-generator threads, each with its own event loop.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Every connection sends the requests in the order given starting from the first (a
    /// stateful cycle such as roomAdd, roomView, roomLeave); by default connection i
    /// starts at request i, to mix them from the start.
    #[arg(long)]
    pub in_order: bool,
    /// Connect from this local address (e.g. 127.0.0.2). Toward one server address each
    /// source address has its own ephemeral ports (about 28,000 on Linux), so more
    /// connections than that need several load generators with different sources.
    #[arg(long, value_name = "IP")]
    pub source: Option<std::net::IpAddr>,
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
    /// Local address to connect from (`--source`).
    source: Option<std::net::IpAddr>,
    /// Every connection starts at the first request (`--in-order`).
    in_order: bool,
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
        Some((
            client_config(ca, args.tls_resume)?,
            server_name(&args.server_name)?,
        ))
    } else {
        None
    };
    let start = Instant::now();
    let warm = args.warmup.as_nanos() as u64;
    let plan = Arc::new(Plan {
        addr,
        source: args.source,
        in_order: args.in_order,
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
    let mut seconds_hist: Vec<Histogram<u64>> = Vec::new();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(part)) => {
                if let Err(e) = hist.add(&part.all) {
                    failure = Some(format!("merging histograms: {e}"));
                }
                for (i, second) in part.seconds.iter().enumerate() {
                    if seconds_hist.len() <= i {
                        seconds_hist.resize_with(i + 1, interval_histogram);
                    }
                    if let Err(e) = seconds_hist[i].add(second) {
                        failure = Some(format!("merging histograms: {e}"));
                    }
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
    // One entry per second measured (a request answered after the end counts in the last).
    let measured = args.duration.as_secs().max(1) as usize;
    seconds_hist.resize_with(seconds_hist.len().max(measured), interval_histogram);
    if let Some(path) = &args.histogram_log {
        write_interval_log(path, &seconds_hist, &args.target)
            .map_err(|e| format!("--histogram-log {}: {e}", path.display()))?;
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
    let summary = Summary {
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
            tls_resume: args.tls_resume,
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
        timeline: seconds_hist.iter().map(Histogram::len).collect(),
        spectrum: if mode == Mode::Requests {
            summary::spectrum(&hist)
        } else {
            Vec::new()
        },
    };
    if let Some(path) = &args.report {
        let data = serde_json::to_value(&summary)
            .and_then(serde_json::from_value::<report::RunData>)
            .map_err(|e| format!("--report: {e}"))?;
        report::write(path, &[("this run".to_string(), data)])
            .map_err(|e| format!("--report {e}"))?;
    }
    Ok(summary)
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

/// A histogram for one second of the run: grows only as far as its values (a long run
/// keeps one per second).
fn interval_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    h.auto(true);
    h
}

/// The per-second histograms as an HdrHistogram interval log (V2, compressed), values in
/// nanoseconds: the format HistogramLogAnalyzer and the HdrHistogram tools read.
fn write_interval_log(path: &PathBuf, seconds: &[Histogram<u64>], target: &str) -> io::Result<()> {
    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let now = std::time::SystemTime::now();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "actionwire bench against {target}; values in nanoseconds"
        ))
        .with_start_time(now)
        .with_base_time(now)
        .with_max_value_divisor(1_000_000.0)
        .begin_log_with(&mut out, &mut serializer)?;
    for (i, h) in seconds.iter().enumerate() {
        log.write_histogram(
            h,
            Duration::from_secs(i as u64),
            Duration::from_secs(1),
            None,
        )
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    out.flush()
}

/// The load generator's TLS client. Without `resume` it keeps no sessions, so each
/// connection is what a new client costs the server (a full handshake, with its
/// certificate signature); with it, connections resume from the tickets earlier ones got.
fn client_config(ca: &PathBuf, resume: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--ca {}: {e:?}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("--ca {}: {e:?}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    }
    #[cfg(feature = "aws-lc")]
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    #[cfg(not(feature = "aws-lc"))]
    let provider = rustls::crypto::ring::default_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("--server-name {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_histograms_merge_and_log() {
        let mut part = interval_histogram();
        part.record(20_000).expect("grows");
        part.record(1_000_000).expect("grows");
        let mut merged = interval_histogram();
        merged.add(&part).expect("add");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.max(), merged.highest_equivalent(1_000_000));
        let path = std::env::temp_dir().join(format!("aw-hlog-{}", std::process::id()));
        write_interval_log(&path, &[merged.clone(), interval_histogram()], "t").expect("log");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::remove_file(&path).ok();
        let first = text
            .lines()
            .find(|l| l.starts_with("0.000,"))
            .expect("first interval");
        let max: f64 = first
            .split(',')
            .nth(2)
            .expect("max")
            .parse()
            .expect("number");
        assert!((max - 1.0).abs() < 0.01, "max {max} ms");
    }
}
