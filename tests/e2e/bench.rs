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
    let mut argv = vec![
        "bench",
        "--target",
        &target,
        "--warmup",
        "0s",
        "--duration",
        "700ms",
    ];
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
    assert!(l.p50 <= l.p99 && l.p99 <= l.max && l.p50 >= 1);
    // Every reply went through the server: it counted at least as many lines (a request
    // still in flight when the run ended was counted by the server, not by the bench).
    let web = srv.web_addr.expect("web listener");
    let mut metrics = String::new();
    let mut conn = std::net::TcpStream::connect(web).expect("connect");
    std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.0\r\n\r\n").expect("write");
    std::io::Read::read_to_string(&mut conn, &mut metrics).expect("read");
    let lines: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("actionwire_lines_received_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("lines metric");
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
}

#[test]
fn requests_cycle_and_pipelines_stay_full() {
    let srv = TestServer::start();
    let s = run(
        srv.addr,
        &[
            "--connections",
            "3",
            "--pipeline",
            "8",
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
    assert!(v["latency_us"]["p99"].is_u64());
    let bad = run_bounded(Command::new(env!("CARGO_BIN_EXE_actionwire")).args([
        "bench",
        "--target",
        "127.0.0.1:1",
        "--duration",
        "100ms",
    ]));
    assert!(!bad.status.success(), "an unreachable target is an error");
}
