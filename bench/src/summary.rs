//! What a run reports: the summary (human text and JSON, with the run's parameters) and the
//! latency distribution in HdrHistogram's percentile text format (`.hgrm`), which the
//! standard HdrHistogram plotters read.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// The run's parameters, carried in the JSON summary so that a result file says what it
/// measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Params {
    pub target: String,
    pub requests: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    /// Open loop: requests per second in all.
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub tls: bool,
    /// Connections resumed earlier sessions (`--tls-resume`); otherwise each was a full
    /// handshake.
    pub tls_resume: bool,
    pub expect: Option<String>,
    pub reply_timeout_s: f64,
}

/// What a run measured. Counts cover the measured window (after the warm-up).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub params: Params,
    pub connections: usize,
    pub seconds: f64,
    /// Replies received (answered requests, error replies included); connection setups in
    /// handshake mode.
    pub requests: u64,
    /// Every error below added up: a run with errors > 0 measured something other than what
    /// was asked for.
    pub errors: u64,
    /// Replies that report an error (a JSON `error` member, a RESP `-` line).
    pub error_replies: u64,
    /// Replies not starting with the `--expect` prefix.
    pub unexpected: u64,
    /// Requests without a reply within `--reply-timeout` (their connection is closed).
    pub timeouts: u64,
    /// Connections the server closed or reset during the run.
    pub closed: u64,
    /// Connections that could not be set up (refused, reset during TLS, …).
    pub connect_errors: u64,
    pub per_second: f64,
    /// Connections open at the end (idle mode).
    pub open: usize,
    pub latency_us: Option<Latency>,
    /// Replies received in each second of the measurement (throughput over time).
    pub timeline: Vec<u64>,
    /// Latency by percentile, the distribution's shape (what `.hgrm` holds), for reports.
    pub spectrum: Vec<SpectrumPoint>,
}

/// One point of the latency spectrum.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct SpectrumPoint {
    /// 0 to 100.
    pub percentile: f64,
    pub latency_us: f64,
}

/// The spectrum of a histogram of nanoseconds: five points per halving of the tail.
pub fn spectrum(h: &Histogram<u64>) -> Vec<SpectrumPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| SpectrumPoint {
            percentile: v.quantile_iterated_to() * 100.0,
            latency_us: v.value_iterated_to() as f64 / 1000.0,
        })
        .collect()
}

/// Latency percentiles in microseconds (with fractions: recorded in nanoseconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub p99_99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Prints a human summary.
pub fn print(summary: &Summary) {
    let s = summary;
    println!(
        "{} · {} connections · {:.1}s",
        s.mode, s.connections, s.seconds
    );
    match s.mode {
        "idle" => println!(
            "open at the end: {}  (connect errors {}, closed by the server {})",
            s.open, s.connect_errors, s.closed
        ),
        "handshakes" => println!(
            "handshakes: {}  ({:.0}/s)  connect errors: {}",
            s.requests, s.per_second, s.connect_errors
        ),
        _ => {
            println!(
                "requests: {}  ({:.0}/s)  errors: {}",
                s.requests, s.per_second, s.errors
            );
            if s.errors > 0 {
                println!(
                    "  error replies {}  unexpected {}  timeouts {}  connections closed {}  connect errors {}",
                    s.error_replies, s.unexpected, s.timeouts, s.closed, s.connect_errors
                );
            }
            if let Some(l) = &s.latency_us {
                let ms = |us: f64| us / 1000.0;
                println!(
                    "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  (mean {:.3})",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p99_9),
                    ms(l.p99_99),
                    ms(l.max),
                    ms(l.mean)
                );
            }
        }
    }
}

/// Writes a histogram of nanoseconds as HdrHistogram's percentile distribution text
/// (`.hgrm`), values in microseconds, five steps per halving of the remaining tail: the
/// format of Java HdrHistogram's `outputPercentileDistribution(out, 5, 1000.0)`.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    const SCALE: f64 = 1000.0; // ns → µs
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    debug_assert_eq!(
        total,
        h.len(),
        "the quantile walk visits every recorded value"
    );
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_rows_climb_and_end_at_the_total() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("bounds");
        for i in 1..=10_000u64 {
            h.record(i * 1000).expect("in range");
        }
        let mut text = Vec::new();
        write_hgrm(&h, &mut text).expect("write");
        let text = String::from_utf8(text).expect("utf-8");
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                l.split_whitespace()
                    .map(|f| f.parse().expect("number"))
                    .collect()
            })
            .collect();
        assert!(rows.len() > 20, "{text}");
        assert!(
            rows.windows(2)
                .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1])
        );
        let last = rows.last().expect("rows");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        // 1 µs .. 10 ms: the median is about 5 ms.
        let median = rows.iter().find(|r| r[1] >= 0.5).expect("median row")[0];
        assert!((4990.0..=5010.0).contains(&median), "{median}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
    }
}
