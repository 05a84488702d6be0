//! The abuse suite: what an open-internet client can throw at the server. Each case checks
//! that the offender is handled (a clear error or a disconnect, as the protocol reference says) and that
//! a well-behaved client on the same server keeps getting correct, complete replies.
//!
//! Cases kept elsewhere, each with its bystander check: slow consumer in a busy room
//! (load::a_client_that_stops_reading…), more than maxConnections (load::max_connections…),
//! byte-by-byte slowloris (timers::a_client_trickling_bytes…), a panicking action
//! (actions::user_actions_errors_and_panics), an action outliving the shutdown grace
//! (shutdown::shutdown_grace_bounds_the_wait), `file` escapes and large files
//! (verbs::files::*), TLS garbage, half handshakes and missing close_notify (tls::*).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// A well-behaved client that checks every reply to `n` requests, in order.
fn bystander_check(c: &mut Client, n: u64) {
    let start = c.request("paramsView")["messageCount"]
        .as_u64()
        .expect("count");
    for i in 1..=n {
        let r = c.request("randomNumber");
        assert_eq!(r["messageCount"], start + i, "bystander reply {i}: {r}");
        assert!(r["randomNumber"].is_f64(), "{r}");
    }
}

/// Reads lines until the reply carrying `messageId` `probe`; every line must be JSON.
fn read_until_probe(c: &mut Client) -> Value {
    loop {
        let v = c.json(); // panics on a non-JSON line: the server never writes garbage
        if v["messageId"] == "probe" {
            return v;
        }
    }
}

const PROBE: &str = r#"{"action":"randomNumber","params":{"messageId":"probe"}}"#;

#[test]
fn random_bytes_invalid_utf8_nul_and_long_words() {
    let srv = TestServer::start();
    let mut bad = srv.client();
    let mut good = srv.client();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut junk: Vec<u8> = (0..256 * 1024).map(|_| rng.u8(..)).collect();
    // Never a lone Ctrl-D or telnet break as a whole read, by construction of large writes.
    junk.extend_from_slice(b"\n\xff\xfe\xfd invalid utf-8\n\x00\x00nul\x00bytes\x00\n");
    junk.extend_from_slice(&vec![b'w'; 600 * 1024]); // one very long word
    junk.push(b'\n');
    for chunk in junk.chunks(16 * 1024) {
        bad.send_raw(chunk);
    }
    bad.send(PROBE);
    let probe = read_until_probe(&mut bad);
    assert!(
        probe["randomNumber"].is_f64(),
        "the offender is still served: {probe}"
    );
    bystander_check(&mut good, 50);
}

#[test]
fn deep_json_huge_numbers_and_huge_strings() {
    let srv = TestServer::start();
    let mut c = srv.client();
    let deep = format!(
        r#"{{"action":"randomNumber","params":{{"x":{}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let r = c.request(&deep);
    assert_eq!(error_text(&r), "JSON nesting too deep (limit 64)");
    assert_eq!(r["messageCount"], 1);
    let ok = format!(
        r#"{{"action":"randomNumber","params":{{"x":{}1{}}}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    assert!(
        c.request(&ok)["randomNumber"].is_f64(),
        "moderate nesting is fine"
    );
    // Numbers JSON cannot hold make the line a bare call: unknown action, not a crash.
    for n in ["1e999999", &"9".repeat(100_000)] {
        let r = c.request(&format!(
            r#"{{"action":"randomNumber","params":{{"n":{n}}}}}"#
        ));
        assert_eq!(error_text(&r), "unknown action or invalid apiVersion");
    }
    // A 600 KB string goes through the cache and back intact.
    let big = "v".repeat(600_000);
    let r = c.request(&format!(
        r#"{{"action":"cacheTest","params":{{"key":"big","value":"{big}"}}}}"#
    ));
    assert_eq!(
        r["cacheTestResults"]["loadResp"]["value"]
            .as_str()
            .map(str::len),
        Some(600_000)
    );
    let mut good = srv.client();
    bystander_check(&mut good, 20);
}

#[test]
fn a_hundred_mib_without_a_delimiter_keeps_memory_bounded() {
    let srv = ChildServer::spawn("true", &["--log-level", "info"]);
    let mut good = Client::connect(srv.addr);
    let mut bad = Client::connect(srv.addr);
    let before = srv.rss_kib();
    let mut writer = bad.stream.try_clone().expect("clone");
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            writer.write_all(&chunk).expect("the server keeps reading");
        }
        writer
    });
    // Refused as soon as the line passes the 1 MiB cap, while it is still arriving.
    let r = bad.json();
    assert_eq!(
        r["error"],
        "data length is too big (1048576 received/1048576+ max)"
    );
    let mut writer = flood.join().expect("flood");
    let grown = srv.rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB for a 100 MiB line"
    );
    writer.write_all(b"\nparamsView\n").expect("end the line");
    assert_eq!(bad.json()["messageCount"], 2, "the offender carries on");
    bystander_check(&mut good, 20);
}

#[test]
fn connections_that_never_speak_are_closed() {
    let srv = TestServer::with(|c| c.servers.socket.handshake_timeout = 300);
    let mut good = srv.client();
    good.request("paramsView"); // its first line: the timeout no longer applies to it
    let mut silent: Vec<Client> = (0..200).map(|_| srv.client()).collect();
    for s in silent.iter_mut() {
        assert_eq!(
            s.line(),
            r#"{"status":"Bye!","context":"api","reason":"handshake timeout"}"#
        );
        s.expect_closed();
    }
    bystander_check(&mut good, 20);
    assert_eq!(srv.api.handshake_timeouts(), 200);
}

#[test]
fn ten_thousand_connect_disconnect_cycles_half_of_them_resets() {
    let srv = TestServer::start();
    let mut good = srv.client();
    for i in 0..10_000 {
        let s = TcpStream::connect(srv.addr).expect("connect");
        if i % 2 == 0 {
            (&s).write_all(b"paramAdd key=half-a-requ")
                .expect("partial");
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .expect("linger 0");
        } else {
            (&s).write_all(b"paramsView\n").expect("request");
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        drop(s); // with linger 0: a reset
    }
    bystander_check(&mut good, 20);
    // Every one of them is cleaned up: only the bystander stays open.
    let mut open = usize::MAX;
    for _ in 0..5000 {
        open = srv.api.connections();
        if open == 1 {
            break;
        }
        good.request("paramsView");
    }
    assert_eq!(open, 1, "all 10,000 cycles were cleaned up");
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_crashes_and_recovers() {
    let dir = std::env::temp_dir().join(format!("aw-fd-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("c.json");
    // A connection limit far above what 64 descriptors allow: accept itself fails (EMFILE).
    std::fs::write(
        &cfg,
        r#"{"servers":{"socket":{"maxConnections":1000}},"workers":{"count":1}}"#,
    )
    .expect("config");
    let cfg_arg = cfg.to_string_lossy().into_owned();
    let srv = ChildServer::spawn(
        "ulimit -n 64",
        &["--config", &cfg_arg, "--log-level", "info"],
    );
    let mut clients: Vec<TcpStream> = (0..90)
        .map(|_| TcpStream::connect(srv.addr).expect("queued by the kernel"))
        .collect();
    // Connections are accepted in order; find where the descriptors ran out.
    let mut welcomed = 0;
    for c in clients.iter_mut() {
        c.set_read_timeout(Some(Duration::from_millis(if welcomed == 0 {
            5000
        } else {
            700
        })))
        .expect("timeout");
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(1) => {
                let mut rest = [0u8; 256];
                let _ = c.read(&mut rest);
                welcomed += 1;
            }
            _ => break,
        }
    }
    assert!(
        (20..90).contains(&welcomed),
        "some connections are served, the rest wait ({welcomed})"
    );
    assert!(srv.logged("pausing accepts"), "the exhaustion is logged");
    // No spin: over one second of exhaustion the loop uses a fraction of a core.
    let t0 = srv.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = srv.cpu_ticks() - t0;
    assert!(
        used < 30,
        "{used} CPU ticks in 1 s while out of descriptors"
    );
    // Recovery: free some descriptors and the waiting connections are served.
    for c in clients.drain(..10) {
        drop(c);
    }
    let waiting = &mut clients[welcomed - 10];
    waiting.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut line = [0u8; 80];
    let n = waiting.read(&mut line).expect("welcome after recovery");
    assert!(String::from_utf8_lossy(&line[..n]).contains("welcome"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_delivers_every_computed_reply_then_bye() {
    let srv = ChildServer::spawn("true", &["--log-level", "info", "--workers", "2"]);
    let mut busy = Client::connect(srv.addr);
    let mut idle = Client::connect(srv.addr);
    busy.send(r#"{"action":"sleepTest","params":{"sleepDuration":800}}"#);
    busy.send(r#"{"action":"sleepTest","params":{"sleepDuration":400}}"#);
    assert_eq!(ok_data(&busy.request("detailsView"))["pendingActions"], 2);
    srv.signal(libc::SIGTERM);
    assert_eq!(idle.line(), r#"{"status":"Bye!","context":"api"}"#);
    let first = busy.json();
    let second = busy.json();
    let mut counts = [
        first["messageCount"].clone(),
        second["messageCount"].clone(),
    ];
    counts.sort_by_key(|v| v.as_u64());
    assert_eq!(counts, [1, 2], "both pending replies arrive");
    assert_eq!(busy.line(), r#"{"status":"Bye!","context":"api"}"#);
    busy.expect_closed();
    let mut child = srv;
    let status = wait_bounded(&mut child.child);
    assert!(status.success(), "{status}");
}

#[test]
fn file_on_a_fifo_is_refused_without_blocking() {
    let dir = std::env::temp_dir().join(format!("aw-fifo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let fifo = dir.join("pipe");
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let d2 = dir.clone();
    let srv = TestServer::with(move |c| c.general.paths.public = vec![d2]);
    let mut c = srv.client();
    // Opening a FIFO for reading would block until a writer appears; the loop must not.
    assert_eq!(
        error_text(&c.request("file pipe")),
        "That file is not found"
    );
    let mut good = srv.client();
    bystander_check(&mut good, 10);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tls_renegotiation_is_refused() {
    require_tool("openssl");
    let srv = TestServer::over(Transport::Tls);
    let mut good = srv.client();
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-connect"])
        .arg(srv.addr.to_string())
        .arg("-CAfile")
        .arg(&pki().ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn openssl");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    // Wait for the welcome (the handshake is done), then ask to renegotiate.
    let mut line = String::new();
    while !line.contains("\"welcome\"") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).expect("read") > 0,
            "openssl ended before the welcome"
        );
    }
    // Ask to renegotiate, then send a request: had the renegotiation been accepted, the
    // request would be answered over the renegotiated session.
    stdin.write_all(b"R\nrandomNumber\n").expect("renegotiate");
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest); // the connection ends
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !rest.contains("randomNumber"),
        "served after a renegotiation: {rest}"
    );
    // The server refused it and counted the failed TLS connection.
    wait_until("the refusal counted", || srv.api.tls_failures() == 1);
    bystander_check(&mut good, 10);
    assert!(srv.api.tls_failures() >= 1);
}
