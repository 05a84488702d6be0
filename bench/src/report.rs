//! Self-contained HTML reports of one or more runs, from their JSON summaries (`--json`):
//! latency by percentile, drawn as the HdrHistogram plotters draw it (the x axis spreads the
//! tail: 90 %, 99 %, 99.9 %, … are equally spaced), and throughput in each second. Several
//! runs are overlaid in distinct colours. Inline SVG, no scripts and nothing fetched, so the
//! file can be attached to an issue or opened offline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::summary::SpectrumPoint;

/// `actionwire bench report`: overlay the JSON summaries of several runs in one report.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// JSON summaries written by `actionwire bench --json` (one run per file).
    #[arg(required = true, value_name = "JSON")]
    pub files: Vec<PathBuf>,
    /// Where to write the HTML report.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// What a report needs from one run's JSON summary.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RunData {
    pub mode: String,
    pub params: RunParams,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    #[serde(default)]
    pub timeline: Vec<u64>,
    #[serde(default)]
    pub spectrum: Vec<SpectrumPoint>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct RunParams {
    pub target: String,
    pub requests: Vec<String>,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
}

/// Reads the summaries named in `args` and writes the report.
pub fn report(args: &ReportArgs) -> Result<(), String> {
    let mut runs = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let data: RunData = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not an `actionwire bench --json` summary ({e})",
                path.display()
            )
        })?;
        runs.push((label_of(path), data));
    }
    write(&args.output, &runs)
}

fn label_of(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Writes the report for `runs` (label, data) to `path`.
pub fn write(path: &Path, runs: &[(String, RunData)]) -> Result<(), String> {
    std::fs::write(path, html(runs)).map_err(|e| format!("{}: {e}", path.display()))
}

/// Distinct colours for overlaid runs (colour-blind-safe palette).
const COLOURS: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// The whole HTML document.
pub fn html(runs: &[(String, RunData)]) -> String {
    let mut o = String::with_capacity(16 * 1024);
    o.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>actionwire bench report</title>\
         <style>body{font:14px sans-serif;margin:24px;color:#222}\
         table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ddd;\
         text-align:right}td:first-child,th:first-child{text-align:left}\
         .swatch{display:inline-block;width:12px;height:12px;margin-right:6px}</style>\
         </head><body>\n<h1>actionwire bench report</h1>\n",
    );
    o.push_str(
        "<table><tr><th>run</th><th>mode</th><th>target</th><th>requests</th>\
                <th>connections</th><th>pipeline</th><th>rate</th><th>replies/s</th>\
                <th>errors</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th></tr>\n",
    );
    for (i, (label, r)) in runs.iter().enumerate() {
        let at = |p: f64| {
            percentile(&r.spectrum, p).map_or("–".to_string(), |us| format!("{:.3}", us / 1000.0))
        };
        let _ = writeln!(
            o,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            COLOURS[i % COLOURS.len()],
            escape(label),
            escape(&r.mode),
            escape(&r.params.target),
            escape(&r.params.requests.join(" | ")),
            r.params.connections,
            r.params.pipeline,
            r.params
                .rate
                .map_or("closed loop".to_string(), |x| format!("{x:.0}/s")),
            r.per_second,
            r.errors,
            at(50.0),
            at(99.0),
            at(99.9),
        );
    }
    o.push_str("</table>\n<h2>Latency by percentile</h2>\n");
    o.push_str(&spectrum_svg(runs));
    o.push_str("\n<h2>Throughput (replies per second)</h2>\n");
    o.push_str(&timeline_svg(runs));
    o.push_str("\n</body></html>\n");
    o
}

/// The latency at percentile `p` (the first spectrum point at or above it).
fn percentile(s: &[SpectrumPoint], p: f64) -> Option<f64> {
    s.iter().find(|x| x.percentile >= p).map(|x| x.latency_us)
}

const W: f64 = 760.0;
const H: f64 = 320.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 40.0;
/// Nines shown on the spectrum's x axis: 0 %, 90 %, … 99.999 %.
const NINES: f64 = 5.0;

/// x of a percentile: the number of nines, `log10(1 / (1 - p))`, capped at [`NINES`].
fn nines(percentile: f64) -> f64 {
    let q = (percentile / 100.0).clamp(0.0, 1.0);
    if q >= 1.0 {
        NINES
    } else {
        (1.0 / (1.0 - q)).log10().min(NINES)
    }
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

fn frame(o: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">{y_label}</text>",
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 6.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
    );
}

fn x_at(f: f64) -> f64 {
    LEFT + f * (W - LEFT - RIGHT)
}

fn y_at(f: f64) -> f64 {
    H - BOTTOM - f * (H - TOP - BOTTOM)
}

fn y_ticks(o: &mut String, max: f64, unit: impl Fn(f64) -> String) {
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = y_at(f64::from(i) / 4.0);
        let _ = write!(
            o,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            unit(v)
        );
    }
}

fn polyline(o: &mut String, colour: &str, points: &[(f64, f64)]) {
    if points.is_empty() {
        return;
    }
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = write!(
        o,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
        pts.join(" ")
    );
}

fn spectrum_svg(runs: &[(String, RunData)]) -> String {
    let mut o = String::new();
    frame(&mut o, "percentile", "latency (ms)");
    let max_ms = runs
        .iter()
        .flat_map(|(_, r)| r.spectrum.iter().map(|p| p.latency_us / 1000.0))
        .fold(0.0, f64::max);
    let max_ms = nice_max(max_ms);
    y_ticks(&mut o, max_ms, |v| format!("{v}"));
    for (n, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = x_at(n as f64 / NINES);
        let _ = write!(
            o,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            H - BOTTOM,
            H - BOTTOM + 14.0
        );
    }
    for (i, (_, r)) in runs.iter().enumerate() {
        let points: Vec<(f64, f64)> = r
            .spectrum
            .iter()
            .map(|p| {
                (
                    x_at(nines(p.percentile) / NINES),
                    y_at((p.latency_us / 1000.0 / max_ms).min(1.0)),
                )
            })
            .collect();
        polyline(&mut o, COLOURS[i % COLOURS.len()], &points);
    }
    o.push_str("</svg>");
    o
}

fn timeline_svg(runs: &[(String, RunData)]) -> String {
    let mut o = String::new();
    frame(&mut o, "second of the run", "replies per second");
    let max = runs
        .iter()
        .flat_map(|(_, r)| r.timeline.iter().copied())
        .max()
        .unwrap_or(0) as f64;
    let max = nice_max(max);
    let seconds = runs
        .iter()
        .map(|(_, r)| r.timeline.len())
        .max()
        .unwrap_or(0)
        .max(1);
    y_ticks(&mut o, max, |v| format!("{v:.0}"));
    for s in 0..=seconds {
        if seconds > 20 && s % (seconds / 10).max(1) != 0 {
            continue;
        }
        let x = x_at(s as f64 / seconds as f64);
        let _ = write!(
            o,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{s}</text>",
            H - BOTTOM + 14.0
        );
    }
    for (i, (_, r)) in runs.iter().enumerate() {
        // Each second's count at the middle of its second.
        let points: Vec<(f64, f64)> = r
            .timeline
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (
                    x_at((s as f64 + 0.5) / seconds as f64),
                    y_at((n as f64 / max).min(1.0)),
                )
            })
            .collect();
        polyline(&mut o, COLOURS[i % COLOURS.len()], &points);
    }
    o.push_str("</svg>");
    o
}

/// Text for HTML and SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scale: f64) -> RunData {
        RunData {
            mode: "closed-loop".into(),
            params: RunParams {
                target: "127.0.0.1:5000".into(),
                requests: vec!["paramView <x>".into()],
                connections: 50,
                pipeline: 1,
                rate: None,
            },
            requests: 1000,
            errors: 0,
            per_second: 100.0,
            timeline: vec![90, 110, 100],
            spectrum: [0.0, 50.0, 90.0, 99.0, 99.9, 100.0]
                .iter()
                .enumerate()
                .map(|(i, &p)| SpectrumPoint {
                    percentile: p,
                    latency_us: scale * (i + 1) as f64 * 100.0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_tail_is_spread_out() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(1.3), 2.0);
        assert_eq!(nice_max(420.0), 500.0);
    }

    #[test]
    fn runs_are_overlaid_and_text_is_escaped() {
        let doc = html(&[("a".into(), run(1.0)), ("b<&>".into(), run(2.0))]);
        assert_eq!(doc.matches("<polyline").count(), 4, "two charts × two runs");
        assert!(doc.contains("b&lt;&amp;&gt;"));
        assert!(doc.contains("paramView &lt;x&gt;"));
        assert!(!doc.contains("<script"));
        // p50 of run a: the second point, 200 µs.
        assert!(doc.contains("<td>0.200</td>"));
    }
}
