//! The load generator (`actionwire bench`) measured against a local server: counts add up,
//! errors are counted, the open-loop schedule keeps its rate, and the other modes work.
//! Assertions are on counts, never on timings.

use std::process::Command;

use actionwire_bench::{BenchArgs, Summary};
use clap::Parser;

use crate::harness::*;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: BenchArgs,
}

fn run(srv_addr: std::net::SocketAddr, extra: &[&str]) -> Summary {
    let target = srv_addr.to_string();
    let mut argv = vec!["bench", "--target", &target, "--warmup", "0s"];
    if !extra.contains(&"--duration") {
        argv.extend_from_slice(&["--duration", "700ms"]);
    }
    argv.extend_from_slice(extra);
    let args = Wrap::parse_from(argv).args;
    actionwire_bench::run(&args).expect("bench runs")
}

#[test]
fn closed_loop_counts_replies_and_latencies() {
    let srv = TestServer::with(|c| {
        c.servers.web.enabled = true;
        c.servers.web.port = 0;
    });
    let s = run(
        srv.addr,
        &["--connections", "4", "--expect", r#"{"status":"OK""#],
    );
    assert_eq!(s.mode, "closed-loop");
    assert!(s.requests > 0);
    assert_eq!(s.errors, 0);
    assert_eq!(s.connect_errors, 0);
    let l = s.latency_us.expect("latencies");
    assert!(l.p50 <= l.p99 && l.p99 <= l.max && l.p50 > 0.0);
    assert_eq!(s.params.connections, 4);
    assert_eq!(s.params.requests, ["paramView x"]);
    // Every reply went through the server: it counted at least as many lines (a request
    // still in flight when the run ended was counted by the server, not by the bench).
    let lines = srv
        .metric("actionwire_lines_received_total")
        .expect("lines metric") as u64;
    assert!(
        lines >= s.requests && lines <= s.requests + 4,
        "server lines {lines}, bench replies {}",
        s.requests
    );
}

#[test]
fn replies_without_the_expected_prefix_are_errors() {
    let srv = TestServer::start();
    let s = run(srv.addr, &["--connections", "2", "--expect", "NOPE"]);
    assert!(s.requests > 0);
    assert_eq!(s.errors, s.requests, "every reply is an error");
    assert_eq!(s.unexpected, s.requests);
    assert_eq!(s.error_replies, 0);
}

#[test]
fn error_replies_are_errors_without_expect_and_fail_the_cli() {
    let srv = TestServer::start();
    let s = run(
        srv.addr,
        &["--connections", "2", "--request", "randomNumbr"],
    );
    assert!(s.requests > 0);
    assert_eq!(s.error_replies, s.requests, "unknown action on every reply");
    assert_eq!(s.errors, s.requests);
    let cli = |extra: &[&str]| {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_actionwire"))
                .args(["bench", "--warmup", "0s", "--duration", "300ms"])
                .args(["--request", "randomNumbr", "--target"])
                .arg(srv.addr.to_string())
                .args(extra),
        )
    };
    let out = cli(&[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "errors make the exit code non-zero"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error replies"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-errors"));
    assert!(cli(&["--allow-errors"]).status.success());
}

#[test]
fn a_pipeline_past_simultaneous_actions_reports_the_refusals() {
    let srv = TestServer::with(|c| c.general.simultaneous_actions = 2);
    let s = run(
        srv.addr,
        &[
            "--connections",
            "1",
            "--pipeline",
            "6",
            "--request",
            r#"{"action":"sleepTest","params":{"sleepDuration":20}}"#,
        ],
    );
    assert!(s.error_replies > 0, "refusals counted: {s:?}");
    assert!(
        s.error_replies < s.requests,
        "the admitted ones succeed: {s:?}"
    );
    assert_eq!(s.errors, s.error_replies);
}

#[test]
fn requests_without_a_reply_time_out() {
    // A server that welcomes and then never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().expect("accept");
            std::io::Write::write_all(&mut s, b"{\"welcome\":\"hi\"}\n").expect("welcome");
            held.push(s);
        }
        held
    });
    let s = run(addr, &["--connections", "2", "--reply-timeout", "200ms"]);
    assert_eq!(s.requests, 0);
    assert_eq!(
        s.timeouts, 2,
        "one request in flight on each connection: {s:?}"
    );
    assert_eq!(s.errors, 2);
    drop(holder.join().expect("holder"));
}

#[test]
fn the_hgrm_file_holds_the_run() {
    let srv = TestServer::start();
    let path = std::env::temp_dir().join(format!("aw-bench-{}.hgrm", uuid::Uuid::new_v4()));
    let p = path.to_string_lossy().into_owned();
    let s = run(srv.addr, &["--connections", "2", "--hgrm", &p]);
    let text = std::fs::read_to_string(&path).expect("hgrm written");
    std::fs::remove_file(&path).ok();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .map(|f| f.parse().expect("a number"))
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "{text}");
    for w in rows.windows(2) {
        assert!(w[0][0] <= w[1][0], "values climb: {text}");
        assert!(w[0][1] <= w[1][1], "percentiles climb: {text}");
        assert!(w[0][2] <= w[1][2], "counts climb: {text}");
    }
    let last = rows.last().expect("rows");
    assert_eq!(last[1], 1.0);
    assert_eq!(
        last[2] as u64, s.requests,
        "the distribution holds every reply"
    );
    let max_ms = s.latency_us.expect("latency").max;
    assert!(
        (last[0] - max_ms).abs() <= max_ms / 100.0,
        "{} vs {max_ms}",
        last[0]
    );
    assert!(text.contains(&format!("Total count    = {:>12}]", s.requests)));
}

#[test]
fn requests_cycle_and_pipelines_stay_full() {
    let srv = TestServer::start();
    let s = run(
        srv.addr,
        &[
            "--connections",
            "3",
            // At most simultaneousActions (5) actions in flight, or refusals are errors.
            "--pipeline",
            "4",
            "--request",
            "paramView x",
            "--request",
            "randomNumber",
            "--expect",
            "{",
        ],
    );
    assert!(s.requests > 0);
    assert_eq!(s.errors, 0);
    assert_eq!(s.connect_errors, 0);
}

#[test]
fn open_loop_sends_on_schedule() {
    let srv = TestServer::start();
    // 300 requests/s for 0.7 s: about 210 intended sends, whatever the replies do.
    let s = run(srv.addr, &["--connections", "3", "--rate", "300"]);
    assert_eq!(s.mode, "open-loop");
    assert!(
        (100..=215).contains(&s.requests),
        "the schedule sets the count: {}",
        s.requests
    );
    assert_eq!(s.errors, 0);
}

#[test]
fn idle_mode_holds_connections() {
    let srv = TestServer::start();
    let s = run(srv.addr, &["--idle", "40"]);
    assert_eq!(s.mode, "idle");
    assert_eq!(s.open, 40);
    assert_eq!(s.connect_errors, 0);
}

#[test]
fn handshake_mode_counts_connection_setups_over_tls() {
    let srv = TestServer::over(Transport::Tls);
    let ca = pki().ca.to_string_lossy().into_owned();
    let s = run(
        srv.addr,
        &["--handshakes", "--connections", "2", "--tls", "--ca", &ca],
    );
    assert_eq!(s.mode, "handshakes");
    assert!(s.requests > 0);
    assert_eq!(s.connect_errors, 0);
    assert!(srv.api.tls_handshakes() >= s.requests);
    // Every connection is a new client: the server signs for each one.
    assert_eq!(srv.api.tls_resumed(), 0, "the generator resumed sessions");
}

#[test]
fn handshake_mode_resumes_sessions_when_asked() {
    let srv = TestServer::over(Transport::Tls);
    let ca = pki().ca.to_string_lossy().into_owned();
    let args = [
        "--handshakes",
        "--connections",
        "2",
        "--tls",
        "--tls-resume",
    ];
    let s = run(srv.addr, &[&args[..], &["--ca", &ca]].concat());
    assert!(s.requests > 1);
    assert_eq!(s.connect_errors, 0);
    // All but the first connection of each generator connection can use a ticket.
    let (all, resumed) = (srv.api.tls_handshakes(), srv.api.tls_resumed());
    assert!(resumed > 0 && resumed < all, "{resumed} resumed of {all}");
}

#[test]
fn requests_over_tls() {
    let srv = TestServer::over(Transport::Tls);
    let ca = pki().ca.to_string_lossy().into_owned();
    let s = run(
        srv.addr,
        &["--connections", "2", "--tls", "--ca", &ca, "--expect", "{"],
    );
    assert!(s.requests > 0);
    assert_eq!(s.errors, 0);
}

#[test]
fn the_cli_prints_json() {
    let srv = TestServer::start();
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_actionwire"))
            .args(["bench", "--json", "--warmup", "0s", "--duration", "300ms"])
            .args(["--connections", "2", "--target"])
            .arg(srv.addr.to_string()),
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert!(v["requests"].as_u64().expect("requests") > 0);
    assert!(v["latency_us"]["p99"].is_f64());
    assert_eq!(v["params"]["connections"], 2);
    assert_eq!(v["params"]["target"], srv.addr.to_string());
    assert_eq!(v["params"]["tls"], false);
    let bad = run_bounded(Command::new(env!("CARGO_BIN_EXE_actionwire")).args([
        "bench",
        "--target",
        "127.0.0.1:1",
        "--duration",
        "100ms",
    ]));
    assert!(!bad.status.success(), "an unreachable target is an error");
}

#[test]
fn the_histogram_log_holds_every_reply_second_by_second() {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let srv = TestServer::start();
    let path = std::env::temp_dir().join(format!("aw-bench-{}.hlog", uuid::Uuid::new_v4()));
    let p = path.to_string_lossy().into_owned();
    let s = run(
        srv.addr,
        &[
            "--connections",
            "2",
            "--duration",
            "1200ms",
            "--histogram-log",
            &p,
        ],
    );
    let text = std::fs::read(&path).expect("log written");
    std::fs::remove_file(&path).ok();
    let mut deserializer = Deserializer::new();
    let mut starts = Vec::new();
    let mut total = 0;
    for entry in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(h) = entry.expect("a valid log entry") {
            starts.push(h.start_timestamp());
            let payload = h.encoded_histogram();
            let decoded: hdrhistogram::Histogram<u64> = deserializer
                .deserialize(&mut base64_decode(payload).as_slice())
                .expect("a V2 histogram");
            total += decoded.len();
        }
    }
    assert_eq!(starts.len(), 2, "one interval per second measured");
    assert_eq!(starts[1] - starts[0], std::time::Duration::from_secs(1));
    assert_eq!(total, s.requests, "every reply is in some second");
    assert_eq!(s.timeline.iter().sum::<u64>(), s.requests);
}

/// Standard base64 (the interval log's payload encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.trim_end_matches('=').as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = acc << 6 | value(c);
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn reports_draw_one_run_or_overlay_several() {
    let srv = TestServer::start();
    let dir = std::env::temp_dir().join(format!("aw-report-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let one = dir.join("one.html");
    let s = run(
        srv.addr,
        &[
            "--connections",
            "2",
            "--report",
            one.to_str().expect("utf-8"),
        ],
    );
    assert!(!s.spectrum.is_empty());
    let html = std::fs::read_to_string(&one).expect("report written");
    assert_svgs(&html, 2, 2);
    // Two runs through the CLI's JSON, overlaid.
    let mut jsons = Vec::new();
    for (name, conns) in [("a", "1"), ("b", "3")] {
        let out = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_actionwire"))
                .args(["bench", "--json", "--warmup", "0s", "--duration", "300ms"])
                .args(["--connections", conns, "--target"])
                .arg(srv.addr.to_string()),
        );
        assert!(out.status.success());
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, &out.stdout).expect("json");
        jsons.push(path);
    }
    let cmp = dir.join("cmp.html");
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_actionwire"))
            .args(["bench", "report"])
            .args(&jsons)
            .arg("-o")
            .arg(&cmp),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&cmp).expect("report written");
    assert_svgs(&html, 2, 4);
    assert!(
        html.contains(">a</td>") && html.contains(">b</td>"),
        "runs are named"
    );
    // A file that is not a summary is refused with its name.
    let bad = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_actionwire"))
            .args(["bench", "report"])
            .arg(&one)
            .arg("-o")
            .arg(dir.join("x.html")),
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("one.html"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The report's charts are well-formed SVG with `lines` polylines in all, each with points
/// inside its chart's view box.
fn assert_svgs(html: &str, charts: usize, lines: usize) {
    let mut found = 0;
    let mut polylines = 0;
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("closed svg") + start + 6;
        let doc = roxmltree::Document::parse(&rest[start..end]).expect("well-formed SVG");
        let root = doc.root_element();
        let width: f64 = root
            .attribute("width")
            .expect("width")
            .parse()
            .expect("number");
        let height: f64 = root
            .attribute("height")
            .expect("height")
            .parse()
            .expect("n");
        for line in root.descendants().filter(|n| n.has_tag_name("polyline")) {
            polylines += 1;
            let points = line.attribute("points").expect("points");
            let mut last_x = f64::MIN;
            for pair in points.split_whitespace() {
                let (x, y) = pair.split_once(',').expect("x,y");
                let (x, y): (f64, f64) = (x.parse().expect("x"), y.parse().expect("y"));
                assert!(
                    (0.0..=width).contains(&x) && (0.0..=height).contains(&y),
                    "{pair}"
                );
                assert!(x >= last_x, "x never goes back: {points}");
                last_x = x;
            }
        }
        found += 1;
        rest = &rest[end..];
    }
    assert_eq!(found, charts);
    assert_eq!(polylines, lines);
}

#[test]
fn a_stateful_cycle_runs_in_order_on_every_connection_with_in_order() {
    let srv = TestServer::start();
    let cycle = [
        "--connections",
        "3",
        "--request",
        "roomAdd defaultRoom",
        "--request",
        "roomLeave defaultRoom",
        "--allow-errors",
    ];
    // By default connection 1 starts at roomLeave: its first reply is an error.
    let mixed = run(srv.addr, &cycle);
    assert!(mixed.error_replies >= 1, "{:?}", mixed.error_replies);
    let mut in_order = cycle.to_vec();
    in_order.push("--in-order");
    let s = run(srv.addr, &in_order);
    assert!(s.requests > 0);
    assert_eq!(s.errors, 0);
}

#[test]
fn connections_come_from_the_source_address_given() {
    // A listener of the test's own records where each connection comes from and greets it
    // with a line, as a server's welcome.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let peers = std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..5 {
            let (mut s, peer) = listener.accept().expect("accept");
            std::io::Write::write_all(&mut s, b"{}\n").expect("greet");
            peers.push(peer.ip());
            held.push(s);
        }
        // The connections stay open (in the thread's result) until the test joins it.
        (peers, held)
    });
    let s = run(
        addr,
        &[
            "--idle",
            "5",
            "--source",
            "127.0.0.3",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!((s.open, s.connect_errors), (5, 0));
    let (peers, _held) = peers.join().expect("listener thread");
    let want: std::net::IpAddr = "127.0.0.3".parse().expect("ip");
    assert_eq!(peers, vec![want; 5]);
}
