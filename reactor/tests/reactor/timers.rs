//! Endpoint timers: they fire at or after their time, never before, at most a tick late.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::{
    CloseReason, EndpointKind, ListenerOptions, ReactorConfig, TICK, Timeout,
};

use crate::toy::{Harness, Report, client, read_n, say};

/// Slack for a loaded machine on top of the one tick a timer may be late (a guard against a
/// lost timer, not a measurement: lateness is for the benchmarks).
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn the_idle_timeout_never_fires_early() {
    let opts = ListenerOptions {
        idle_timeout: Duration::from_millis(700),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    for _ in 0..3 {
        let mut c = client(h.plain);
        let id = h.opened(EndpointKind::Accepted);
        // The server cannot receive the line before it is sent.
        let last = Instant::now();
        say(&mut c, "hi");
        assert_eq!(read_n(&mut c, 3), b"hi\n");
        let (t, at) = h.wait(|r| match r {
            Report::Timeout(i, t, at) if i == id => Some((t, at)),
            _ => None,
        });
        assert_eq!(t, Timeout::Idle);
        let after = at - last;
        assert!(after >= Duration::from_millis(700), "fired after {after:?}");
        assert!(
            after <= Duration::from_millis(700) + TICK + SLACK,
            "{after:?}"
        );
        drop(c); // our FIN ends the server's linger
        assert_eq!(h.closed(id).0, CloseReason::IdleTimeout);
    }
    assert_eq!(h.stats.idle_timeouts.load(Ordering::Relaxed), 3);
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 0);
}

#[test]
fn keep_alive_fires_while_silent_and_stops_while_the_peer_talks() {
    let opts = ListenerOptions {
        keepalive_interval: Duration::from_millis(300),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "x");
    let start = Instant::now();
    let mut pings = Vec::new();
    while pings.len() < 3 {
        if let Report::Timeout(i, Timeout::KeepAlive, at) = h.next() {
            assert_eq!(i, id);
            pings.push(at);
        }
    }
    assert!(pings[0] - start >= Duration::from_millis(300));
    assert!(pings[1] - pings[0] >= Duration::from_millis(300) - TICK);
    // Talking resets the silence: the next ping is counted from the last line.
    say(&mut c, "y");
    assert_eq!(read_n(&mut c, 4), b"x\ny\n");
    let spoke = Instant::now();
    let next = h.wait(|r| match r {
        Report::Timeout(i, Timeout::KeepAlive, at) if i == id && at > spoke => Some(at),
        _ => None,
    });
    assert!(
        next - spoke >= Duration::from_millis(300) - TICK,
        "{:?}",
        next - spoke
    );
    c.flush().expect("flush");
}

#[test]
fn the_handshake_timeout_closes_a_peer_that_never_completes_a_line() {
    let opts = ListenerOptions {
        handshake_timeout: Duration::from_millis(400),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let opened = Instant::now();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    c.write_all(b"no newline yet").expect("write");
    let (t, at) = h.wait(|r| match r {
        Report::Timeout(i, t, at) if i == id => Some((t, at)),
        _ => None,
    });
    assert_eq!(t, Timeout::Handshake);
    assert!(at - opened >= Duration::from_millis(400));
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::HandshakeTimeout);
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 1);
    // A peer that sent its line is not affected.
    let mut ok = client(h.plain);
    let ok_id = h.opened(EndpointKind::Accepted);
    say(&mut ok, "done");
    assert_eq!(read_n(&mut ok, 5), b"done\n");
    h.send(crate::toy::Ev::Close(ok_id));
    assert_eq!(crate::toy::read_to_end(&mut ok), b"");
    drop(ok);
    assert_eq!(h.closed(ok_id).0, CloseReason::Quit);
}

#[test]
fn a_restarted_handshake_times_out_from_its_restart() {
    let opts = ListenerOptions {
        handshake_timeout: Duration::from_millis(400),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "first");
    assert_eq!(read_n(&mut c, 6), b"first\n");
    // Done, then owed again: the deadline counts from the restart, not from the accept.
    let restarted = Instant::now();
    say(&mut c, "!again");
    assert_eq!(read_n(&mut c, 6), b"again\n");
    let (t, at) = h.wait(|r| match r {
        Report::Timeout(i, t, at) if i == id => Some((t, at)),
        _ => None,
    });
    assert_eq!(t, Timeout::Handshake);
    assert!(
        at - restarted >= Duration::from_millis(400),
        "{:?}",
        at - restarted
    );
    drop(c);
    assert_eq!(h.closed(id).0, CloseReason::HandshakeTimeout);
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 1);
}
