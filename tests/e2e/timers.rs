//! The protocol reference's "Keep-alive and timeouts": keep-alive lines, idle timeout, first-line (handshake) timeout. Intervals
//! are a few hundred ms; tests wait for what arrives and bound timings only from below
//! (nothing can come early), never from above.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const TICK: Duration = Duration::from_millis(100);

#[track_caller]
fn assert_keep_alive(v: &Value) {
    assert_eq!(keys(v), ["context", "status", "serverTime"], "{v}");
    assert_eq!(v["context"], "api");
    assert_eq!(v["status"], "keep-alive");
    let t = v["serverTime"].as_str().expect("serverTime");
    // 2012 format: ISO-8601 UTC with milliseconds, e.g. 2012-01-03T19:48:40.136Z
    assert_eq!(t.len(), 24, "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    humantime::parse_rfc3339(t).expect("valid RFC 3339 time");
}

both! {
    fn a_silent_client_is_pinged_every_interval(t) {
        let interval = Duration::from_millis(300);
        let srv = TestServer::over_with(t, |c| c.servers.socket.keep_alive_interval = 300);
        let mut c = srv.client();
        c.request("paramsView");
        let start = Instant::now();
        for _ in 0..3 {
            assert_keep_alive(&c.json());
        }
        assert!(
            start.elapsed() + TICK >= interval * 3,
            "three pings cannot come sooner than three intervals"
        );
        // Pings do not count as requests.
        assert_eq!(c.request("paramsView")["messageCount"], 2);
        assert!(srv.api.keepalive_pings() >= 3);
    }
}

#[test]
fn pings_stop_while_the_client_talks() {
    let srv = TestServer::with(|c| c.servers.socket.keep_alive_interval = 400);
    let mut c = srv.client();
    // Talk every 50 ms (pacing, not synchronisation) for well over two intervals. A ping may
    // only come after 400 ms of silence: if this thread was descheduled that long on a
    // loaded machine, one is legitimate, so its timing is checked instead of its absence.
    let start = Instant::now();
    let mut n = 0;
    let mut sent_last = start;
    while start.elapsed() < Duration::from_millis(1200) {
        n += 1;
        c.send("paramsView");
        // The send before this one: the server may have been silent since then.
        let sent_before = std::mem::replace(&mut sent_last, Instant::now());
        let r = loop {
            let v = c.json();
            if v["status"] == "keep-alive" {
                let quiet = sent_before.elapsed();
                assert!(
                    quiet >= Duration::from_millis(400),
                    "a ping after only {quiet:?} of silence"
                );
                continue;
            }
            break v;
        };
        assert_eq!(r["messageCount"], n, "only replies while talking: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Silence: the next line is a ping.
    assert_keep_alive(&c.json());
}

both! {
    fn idle_connections_are_closed_with_a_reason_and_pings_do_not_keep_them_alive(t) {
        let srv = TestServer::over_with(t, |c| {
            c.servers.socket.idle_timeout = 700;
            c.servers.socket.keep_alive_interval = 200;
        });
        let mut c = srv.client();
        c.request("roomAdd defaultRoom");
        let start = Instant::now();
        let mut pings = 0;
        let bye = loop {
            let v = c.json();
            if v["status"] == "keep-alive" {
                assert_keep_alive(&v);
                pings += 1;
            } else {
                break v;
            }
        };
        assert_eq!(
            serde_json::to_string(&bye).expect("json"),
            r#"{"status":"Bye!","context":"api","reason":"idle timeout"}"#
        );
        c.expect_closed();
        assert!(pings >= 2, "pinged while idle ({pings})");
        assert!(start.elapsed() + TICK >= Duration::from_millis(700));
        assert_eq!(srv.api.idle_timeouts(), 1);
        let mut other = srv.client();
        let status = other.request("status");
        assert_eq!(status["idleTimeouts"], 1);
        assert!(status["keepAlivePingsSent"].as_u64().expect("count") >= 2);
        assert_eq!(srv.api.rooms(), 2);
    }
}

#[test]
fn a_client_trickling_bytes_without_a_line_is_closed_by_the_handshake_timeout() {
    let srv = TestServer::with(|c| c.servers.socket.handshake_timeout = 400);
    let mut c = srv.client();
    let mut writer = c.stream.try_clone().expect("clone");
    // Slowloris: one byte every 50 ms, never a delimiter, for at most 5 s.
    let trickle = std::thread::spawn(move || {
        for b in b"paramAdd key=".iter().cycle().take(100) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let start = Instant::now();
    assert_eq!(
        c.line(),
        r#"{"status":"Bye!","context":"api","reason":"handshake timeout"}"#
    );
    c.expect_closed();
    assert!(start.elapsed() + TICK >= Duration::from_millis(400));
    assert_eq!(srv.api.handshake_timeouts(), 1);
    trickle.join().expect("writer");
}

#[test]
fn a_connection_that_sent_a_line_outlives_the_handshake_timeout() {
    let srv = TestServer::with(|c| {
        c.servers.socket.handshake_timeout = 300;
        c.servers.socket.keep_alive_interval = 700;
    });
    let mut c = srv.client();
    c.request("paramsView");
    // The ping comes after the handshake deadline has passed: the connection is still open.
    assert_keep_alive(&c.json());
    assert_eq!(c.request("paramsView")["messageCount"], 2);
    assert_eq!(srv.api.handshake_timeouts(), 0);
}

#[test]
fn two_thousand_idle_connections_all_get_pinged() {
    let srv = TestServer::with(|c| {
        c.servers.socket.keep_alive_interval = 500;
        c.servers.socket.handshake_timeout = 0;
    });
    let mut clients: Vec<Client> = (0..2000).map(|_| srv.client()).collect();
    for c in clients.iter_mut() {
        assert_keep_alive(&c.json());
    }
    assert!(srv.api.keepalive_pings() >= 2000);
}

both! {
    /// The idle timeout counts from the last line the server received, and never fires
    /// before it: measured from just before that line was sent (the server cannot have it
    /// earlier), the Bye comes no sooner than `idleTimeout`, three times running.
    fn the_idle_bye_never_comes_early(t) {
        let srv = TestServer::over_with(t, |c| c.servers.socket.idle_timeout = 700);
        for _ in 0..3 {
            let mut c = srv.client();
            let sent = Instant::now();
            c.request("paramsView");
            assert_eq!(
                c.line(),
                r#"{"status":"Bye!","context":"api","reason":"idle timeout"}"#
            );
            let after = sent.elapsed();
            assert!(after >= Duration::from_millis(700), "Bye after {after:?}");
            c.expect_closed();
        }
    }
}
