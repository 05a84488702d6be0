//! The cluster's numbers, on this machine's loopback: `cargo bench --bench cluster`
//! (or `benches/cluster.sh`, which installs redis-server first), optionally naming the
//! sections to run: `-- latency fanout rooms idle`.
//!
//! - **latency**: `say` on node A to the chat line read on node B through Redis, one
//!   message at a time (the next leaves when the last arrived), against the same with both
//!   clients on one node and against Redis's own PUBLISH → subscriber floor.
//! - **fanout**: 1,000 members of one room, 500 on each node, one sender: chat lines
//!   delivered per second, against 1,000 members on one node without Redis.
//! - **rooms**: `roomAdd`/`roomView`/`roomLeave` cycles from 50 connections (the load
//!   generator, `actionwire bench`) with the cluster on and off.
//! - **idle**: 42,000 idle connections with keep-alive pings every 10 s, held by
//!   `--processes 3` (the open-file limit is per process) from three load generators on
//!   three source addresses (each has its own ephemeral ports), the children's RSS per
//!   connection and their CPU while idle.
//!
//! Every server is a child process started here on free 127.0.0.1 ports (Redis too) and
//! killed at the end. Prints Markdown rows for BENCHMARKS.md.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_actionwire");
/// Anything here taking longer than this is a failure, not a slow run.
const GUARD: Duration = Duration::from_secs(60);

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + GUARD;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (benches/cluster.sh installs it)");
    wait_port(port);
    (Proc(child), port)
}

/// An actionwire node on a free port; `redis` joins it to the cluster.
fn node(redis: Option<u16>, extra: &[&str]) -> (Proc, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warn"])
        .args(extra)
        .env("ACTIONWIRE_CONFIG", config_file())
        .stderr(Stdio::null());
    if let Some(r) = redis {
        cmd.args(["--redis", &format!("redis://127.0.0.1:{r}")]);
    }
    let child = cmd.spawn().expect("actionwire");
    wait_port(port);
    // The cluster link comes up within a few ms of the listener; give it a moment so
    // the first measured message is not lost to a link still coming up.
    std::thread::sleep(Duration::from_millis(300));
    (Proc(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Room limits for 1,000 members, and a long enough pipeline for the sender.
fn config_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "actionwire-cluster-bench-{}.json",
        std::process::id()
    ));
    if !path.exists() {
        std::fs::write(
            &path,
            r#"{"general":{"simultaneousActions":64},"servers":{"socket":{"handshakeTimeout":0}}}"#,
        )
        .expect("config");
    }
    path
}

/// A blocking line client.
struct Client {
    out: TcpStream,
    input: BufReader<TcpStream>,
    line: String,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(GUARD)).expect("timeout");
        let mut c = Client {
            input: BufReader::new(s.try_clone().expect("clone")),
            out: s,
            line: String::new(),
        };
        c.next_line(); // the welcome
        c
    }

    fn send(&mut self, line: &str) {
        self.out.write_all(line.as_bytes()).expect("send");
        self.out.write_all(b"\n").expect("send");
    }

    fn next_line(&mut self) -> &str {
        self.line.clear();
        let n = self.input.read_line(&mut self.line).expect("read");
        assert!(n > 0, "the server closed the connection");
        self.line.trim_end()
    }

    fn request(&mut self, line: &str) -> Value {
        self.send(line);
        serde_json::from_str(self.next_line()).expect("json")
    }

    fn join(&mut self, room: &str) {
        let r = self.request(&format!("roomAdd {room}"));
        assert_eq!(r["status"], "OK", "{r}");
    }
}

fn row(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs",
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0
    )
}

const LATENCY_SAMPLES: u64 = 20_000;
const LATENCY_WARMUP: u64 = 1_000;

/// One message at a time from `sender` to `receiver` (both in `defaultRoom`).
fn chat_latency(sender: &mut Client, receiver: &mut Client) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        let text = format!("m{i}");
        let start = Instant::now();
        sender.send(&format!("say defaultRoom {text}"));
        loop {
            let line = receiver.next_line();
            if line.contains(&format!("\"message\":\"{text}\"")) {
                break;
            }
        }
        let took = start.elapsed();
        // The sender's OK and its own chat line.
        sender.next_line();
        sender.next_line();
        if i >= LATENCY_WARMUP {
            h.record(took.as_nanos() as u64).expect("record");
        }
    }
    h
}

fn latency() {
    let (_redis, rport) = redis();
    let (_a, a) = node(Some(rport), &[]);
    let (_b, b) = node(Some(rport), &[]);
    let mut sender = Client::connect(a);
    let mut there = Client::connect(b);
    for c in [&mut sender, &mut there] {
        c.join("defaultRoom");
    }
    let cross = chat_latency(&mut sender, &mut there);
    drop(there);
    let mut here = Client::connect(a);
    here.join("defaultRoom");
    let local = chat_latency(&mut sender, &mut here);

    // Redis's own floor: PUBLISH on one connection, read on a subscribed one.
    let client = redis::Client::open(format!("redis://127.0.0.1:{rport}")).expect("client");
    let mut publisher = client.get_connection().expect("connection");
    let mut sub_con = client.get_connection().expect("connection");
    let mut sub = sub_con.as_pubsub();
    sub.subscribe("floor").expect("subscribe");
    let mut floor = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..LATENCY_WARMUP + LATENCY_SAMPLES {
        let start = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("floor")
            .arg(i)
            .query(&mut publisher)
            .expect("publish");
        sub.get_message().expect("message");
        if i >= LATENCY_WARMUP {
            floor
                .record(start.elapsed().as_nanos() as u64)
                .expect("record");
        }
    }
    println!("\n### Chat latency ({LATENCY_SAMPLES} messages, one at a time)\n");
    println!("| path | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "| `say` on A → line on B (through Redis) | {} |",
        row(&cross)
    );
    println!("| `say` on A → line on A (same node) | {} |", row(&local));
    println!(
        "| Redis alone: PUBLISH → subscriber (redis crate) | {} |",
        row(&floor)
    );
}

const FAN_MEMBERS: usize = 1_000;
const FAN_MESSAGES: usize = 2_000;
/// Messages the sender may have unanswered at once.
const FAN_WINDOW: usize = 32;

/// One sender, `FAN_MEMBERS` members (the sender included) split over `nodes`; returns
/// chat lines delivered per second to the members other than the sender.
fn fan_out(nodes: &[SocketAddr]) -> f64 {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};
    let mut sender = Client::connect(nodes[0]);
    sender.join("defaultRoom");
    let mut poll = Poll::new().expect("poll");
    let mut members = Vec::new();
    for i in 1..FAN_MEMBERS {
        let mut c = Client::connect(nodes[i % nodes.len()]);
        c.join("defaultRoom");
        let s = c.out.try_clone().expect("clone");
        s.set_nonblocking(true).expect("nonblocking");
        let mut m = MioStream::from_std(s);
        poll.registry()
            .register(&mut m, Token(i), Interest::READABLE)
            .expect("register");
        members.push((m, 0usize, c));
    }
    let want = FAN_MESSAGES * (FAN_MEMBERS - 1);
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut events = Events::with_capacity(1024);
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + GUARD;
        while got < want {
            assert!(
                Instant::now() < deadline,
                "fan-out: {got} of {want} lines in time"
            );
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            for ev in &events {
                let (m, lines, _) = &mut members[ev.token().0 - 1];
                loop {
                    match std::io::Read::read(m, &mut buf) {
                        Ok(0) => panic!("a member was disconnected"),
                        Ok(n) => {
                            let nl = memchr::memchr_iter(b'\n', &buf[..n]).count();
                            *lines += nl;
                            got += nl;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
        }
        members
    });
    // The sender reads two lines per message (its OK and its own chat line).
    let mut outstanding = 0;
    for i in 0..FAN_MESSAGES {
        sender.send(&format!("say defaultRoom fan-out message {i}"));
        outstanding += 1;
        if outstanding == FAN_WINDOW {
            sender.next_line();
            sender.next_line();
            outstanding -= 1;
        }
    }
    let members = reader.join().expect("reader");
    let took = start.elapsed();
    assert!(members.iter().all(|(_, n, _)| *n == FAN_MESSAGES));
    want as f64 / took.as_secs_f64()
}

fn fanout() {
    let (_redis, rport) = redis();
    let (_a, a) = node(Some(rport), &[]);
    let (_b, b) = node(Some(rport), &[]);
    let cluster = fan_out(&[a, b]);
    let (_solo, solo) = node(None, &[]);
    let local = fan_out(&[solo]);
    println!("\n### Chat fan-out ({FAN_MEMBERS} members, {FAN_MESSAGES} messages, one sender)\n");
    println!("| setup | chat lines delivered/s |");
    println!("|---|---|");
    println!("| 500 members on each of two nodes, through Redis | {cluster:.0} |");
    println!("| 1,000 members on one node, no Redis | {local:.0} |");
}

/// `actionwire bench` against `addr`, its JSON summary.
fn load(addr: SocketAddr, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(["--target", &addr.to_string(), "--json"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("actionwire bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("summary")
}

fn rooms() {
    let (_redis, rport) = redis();
    let (_on, on) = node(Some(rport), &[]);
    let (_off, off) = node(None, &[]);
    println!("\n### roomAdd / roomView / roomLeave cycles (5 s each)\n");
    println!("| connections | cluster | verbs/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for connections in ["1", "50"] {
        let cycle = [
            "--request",
            "roomAdd defaultRoom",
            "--request",
            "roomView defaultRoom",
            "--request",
            "roomLeave defaultRoom",
            "--in-order",
            "--warmup",
            "0s",
            "--connections",
            connections,
            "--duration",
            "5s",
        ];
        for (name, addr) in [
            ("off (in-process rooms)", off),
            ("on (Redis on loopback)", on),
        ] {
            let s = load(addr, &cycle);
            println!(
                "| {connections} | {name} | {:.0} | {:.0} µs | {:.0} µs |",
                s["per_second"].as_f64().unwrap_or(0.0),
                s["latency_us"]["p50"].as_f64().unwrap_or(0.0),
                s["latency_us"]["p99"].as_f64().unwrap_or(0.0)
            );
        }
    }
}

const IDLE_PER_GENERATOR: usize = 14_000;
const IDLE_GENERATORS: usize = 3;

fn proc_stat(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn children(parent: u32) -> Vec<u32> {
    proc_stat(parent, &format!("task/{parent}/children"))
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    proc_stat(pid, "status")
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = proc_stat(pid, "stat");
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

fn idle() {
    let (_redis, rport) = redis();
    let (server, addr) = node(
        Some(rport),
        &[
            "--processes",
            "3",
            "--keep-alive-interval",
            "10000",
            "--workers",
            "1",
        ],
    );
    let parent = server.0.id();
    let kids = {
        let deadline = Instant::now() + GUARD;
        loop {
            let k = children(parent);
            if k.len() == 3 {
                break k;
            }
            assert!(Instant::now() < deadline, "three children");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let rss = |kids: &[u32]| kids.iter().map(|&k| rss_kib(k)).sum::<u64>();
    let sockets = |kids: &[u32]| kids.iter().map(|&k| open_sockets(k)).sum::<usize>();
    let (rss_before, sockets_before) = (rss(&kids), sockets(&kids));
    let total = IDLE_PER_GENERATOR * IDLE_GENERATORS;
    let hold = "60s";
    let generators: Vec<Proc> = (0..IDLE_GENERATORS)
        .map(|g| {
            let source = format!("127.0.0.{}", g + 2);
            Proc(
                Command::new(BIN)
                    .arg("bench")
                    .args(["--target", &addr.to_string()])
                    .args(["--idle", &IDLE_PER_GENERATOR.to_string()])
                    .args(["--source", &source, "--duration", hold, "--warmup", "0s"])
                    .args(["--threads", "1", "--allow-errors"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("load generator"),
            )
        })
        .collect();
    let deadline = Instant::now() + GUARD;
    while sockets(&kids) < sockets_before + total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} connections open",
            sockets(&kids) - sockets_before
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let held: Vec<usize> = kids.iter().map(|&k| open_sockets(k)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss(&kids);
    // 20 s of idling: two keep-alive rounds for every connection.
    let ticks_before: u64 = kids.iter().map(|&k| cpu_ticks(k)).sum();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let ticks_after: u64 = kids.iter().map(|&k| cpu_ticks(k)).sum();
    let still = sockets(&kids) - sockets_before;
    drop(generators);
    let per_conn = (rss_after - rss_before) as f64 * 1024.0 / total as f64;
    let ticks_per_sec = 100.0;
    let cpu = (ticks_after - ticks_before) as f64 / ticks_per_sec / window.as_secs_f64() * 100.0;
    println!("\n### Idle connections across `--processes 3` (keep-alive pings every 10 s)\n");
    println!(
        "| connections | per process | still open after 20 s idle | children's RSS | per connection | children's CPU while idle |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {total} | {held:?} (sockets, Redis and listeners included) | {still} | {} → {} KiB | {per_conn:.0} B | {cpu:.2} % of one core |",
        rss_before, rss_after
    );
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if run("latency") {
        latency();
    }
    if run("fanout") {
        fanout();
    }
    if run("rooms") {
        rooms();
    }
    if run("idle") {
        idle();
    }
}
