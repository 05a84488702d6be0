//! Endpoint timers: they fire at or after their time, never before, at most a tick late.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actionwire_reactor::{
    CloseReason, EndpointKind, ListenerOptions, ReactorConfig, TICK, Timeout,
};

use crate::toy::{Ev, Harness, Report, client, read_n, say};

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
    // Past its deadline (a server timer is the clock): the deadline no longer applies.
    survives_until_timer(&h, ok_id, Duration::from_millis(900));
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

/// Sets a server-level timer and waits for it, failing if `id` closes first: "nothing
/// happens to this endpoint for `d`", told by the loop's own ordering rather than by sleeping.
fn survives_until_timer(h: &Harness, id: actionwire_reactor::ConnId, d: Duration) {
    h.send(Ev::SetTimer(d, 99));
    h.wait(|r| match r {
        Report::Fired(99, _) => Some(()),
        Report::Closed(i, reason, _, _) if i == id => panic!("closed ({reason:?}) within {d:?}"),
        Report::Timeout(i, t, _) if i == id => panic!("{t:?} timeout within {d:?}"),
        _ => None,
    });
}

#[test]
fn with_the_handshake_timeout_off_a_silent_peer_stays() {
    let opts = ListenerOptions {
        handshake_timeout: Duration::ZERO,
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let _c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    survives_until_timer(&h, id, Duration::from_millis(500));
}

#[test]
fn a_tls_peer_still_in_its_handshake_gets_no_keep_alive_or_idle_timeout() {
    let opts = ListenerOptions {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(900),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let opened = Instant::now();
    let _silent = client(h.tls); // TCP only: no ClientHello ever
    let (reason, at) = h.wait(|r| match r {
        Report::Timeout(_, t, _) => panic!("{t:?} timeout during a TLS handshake"),
        Report::Closed(_, reason, _, at) => Some((reason, at)),
        _ => None,
    });
    assert_eq!(reason, CloseReason::HandshakeTimeout);
    assert!(at - opened >= Duration::from_millis(900));
    assert_eq!(h.stats.handshake_timeouts.load(Ordering::Relaxed), 1);
}

#[test]
fn keep_alive_jitter_never_makes_a_ping_early() {
    // 1 s = 10 ticks: each ping gets 0 or 1 tick of jitter on top of its deadline.
    let opts = ListenerOptions {
        keepalive_interval: Duration::from_millis(1000),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut spoke = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut c = client(h.plain);
        let id = h.opened(EndpointKind::Accepted);
        // The server cannot receive the line before it is sent.
        spoke.push((id, Instant::now()));
        say(&mut c, "x");
        assert_eq!(read_n(&mut c, 2), b"x\n");
        clients.push(c);
    }
    let mut pinged = 0;
    while pinged < spoke.len() {
        if let Report::Timeout(id, Timeout::KeepAlive, at) = h.next() {
            let (_, t) = spoke.iter().find(|(i, _)| *i == id).expect("one of ours");
            assert!(
                at - *t >= Duration::from_millis(1000),
                "early by {:?}",
                Duration::from_millis(1000) - (at - *t)
            );
            pinged += 1;
        }
    }
}

#[test]
fn deferred_completions_arrive_in_time_order_never_early() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    let asked = Instant::now();
    c.write_all(b"!defer 300 1\n!defer 100 2\n!defer 200 3\n!defer 200 4\n!defer 200 5\n")
        .expect("write");
    let mut order = Vec::new();
    while order.len() < 5 {
        if let Report::Completion(i, payload) = h.next() {
            assert_eq!(i, id);
            let want = [0, 300, 100, 200, 200, 200][payload as usize];
            assert!(
                asked.elapsed() >= Duration::from_millis(want),
                "{payload} early"
            );
            order.push(payload);
        }
    }
    assert_eq!(order, [2, 3, 4, 5, 1]);
}

#[test]
fn a_deferral_asked_late_in_a_long_turn_waits_its_whole_delay() {
    let h = Harness::default();
    let _c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // The loop held in a turn for 200 ms; the deferral is handled in that same turn, after.
    h.send(Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    h.send(Ev::Defer(id, Duration::from_millis(100), 9));
    std::thread::sleep(Duration::from_millis(200)); // paces the scenario: a long turn
    let asked = Instant::now(); // no later than the loop handles the deferral
    h.gate.open();
    let completed = h.wait(|r| match r {
        Report::Completion(i, 9) if i == id => Some(Instant::now()),
        _ => None,
    });
    // Counted from the turn's start it would fire at once.
    assert!(completed - asked >= Duration::from_millis(100), "early");
}

#[test]
fn shutdown_waits_for_the_grace_then_closes_what_is_left() {
    let cfg = ReactorConfig {
        shutdown_grace: Duration::from_millis(500),
        linger: Duration::from_secs(10),
        ..ReactorConfig::default()
    };
    let h = Harness::start(cfg, ListenerOptions::default());
    // One peer the handler leaves open, one that does not read what it is sent.
    let mut staying = client(h.plain);
    let stay_id = h.opened(EndpointKind::Accepted);
    say(&mut staying, "!stay");
    assert_eq!(read_n(&mut staying, 5), b"stay\n");
    let mut stuck = crate::io::small_window_client(h.plain);
    let stuck_id = h.opened(EndpointKind::Accepted);
    say(&mut stuck, "!big 4000000");
    // The reply has started (most of it stays queued: the peer reads no more).
    assert_eq!(read_n(&mut stuck, 10), b"xxxxxxxxxx");
    let began = Instant::now();
    h.begin_shutdown();
    let mut closed = Vec::new();
    while closed.len() < 2 {
        if let Report::Closed(id, reason, _, at) = h.next() {
            assert_eq!(reason, CloseReason::Shutdown, "{id:?}");
            assert!(
                at - began >= Duration::from_millis(500),
                "{id:?} closed before the grace"
            );
            closed.push(id);
        }
    }
    closed.sort_by_key(|id| *id == stuck_id);
    assert_eq!(closed, [stay_id, stuck_id]);
    let mut h = h;
    h.join()
        .expect("the loop returns once everything is closed");
}

#[test]
fn talking_keeps_a_connection_from_the_idle_timeout() {
    let opts = ListenerOptions {
        idle_timeout: Duration::from_millis(500),
        ..ListenerOptions::default()
    };
    let h = Harness::start(ReactorConfig::default(), opts);
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    // 1.5 s of talking, a line every 150 ms: never 500 ms of silence.
    for i in 0..10 {
        say(&mut c, &format!("line {i}"));
        assert_eq!(read_n(&mut c, 7), format!("line {i}\n").as_bytes());
        std::thread::sleep(Duration::from_millis(150)); // pacing
    }
    // Then silence: now it goes.
    let (t, _) = h.wait(|r| match r {
        Report::Timeout(i, t, at) if i == id => Some((t, at)),
        Report::Closed(i, reason, _, _) if i == id => panic!("closed early: {reason:?}"),
        _ => None,
    });
    assert_eq!(t, Timeout::Idle);
}

#[test]
fn during_shutdown_earlier_timers_still_fire_and_later_ones_are_cut_to_the_grace() {
    let cfg = ReactorConfig {
        shutdown_grace: Duration::from_millis(1500),
        linger: Duration::from_secs(60),
        ..ReactorConfig::default()
    };
    let soon = ListenerOptions {
        idle_timeout: Duration::from_millis(300),
        ..ListenerOptions::default()
    };
    let h = Harness::start(cfg, soon);
    // Both stay open through the handler's shutdown pass: a TLS client that never says
    // hello is dropped at once; the other idles out (300 ms) long before the grace ends.
    let mut early = client(h.plain);
    let early_id = h.opened(EndpointKind::Accepted);
    say(&mut early, "!stay");
    assert_eq!(read_n(&mut early, 5), b"stay\n");
    let _silent_tls = client(h.tls);
    h.send(Ev::Ping); // the TLS endpoint is accepted by the time the ping is answered
    h.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
    h.begin_shutdown();
    // First the TLS endpoint's close, then the idle timeout of the other.
    let tls_reason = h.wait(|r| match r {
        Report::Timeout(..) => {
            panic!("the idle timeout came before the pre-open endpoint was dropped")
        }
        Report::Closed(id, reason, _, _) if id != early_id => Some(reason),
        _ => None,
    });
    assert_eq!(tls_reason, CloseReason::Shutdown);
    let t = h.wait(|r| match r {
        Report::Timeout(id, t, _) if id == early_id => Some(t),
        Report::Closed(id, reason, _, _) if id == early_id => {
            panic!("closed ({reason:?}) instead of idling out")
        }
        _ => None,
    });
    assert_eq!(t, Timeout::Idle);
    drop(early); // our FIN ends its linger
    assert_eq!(h.closed(early_id).0, CloseReason::IdleTimeout);
    let mut h = h;
    h.join().expect("the loop returns");
}

#[test]
fn a_far_timer_does_not_hold_the_shutdown_past_its_grace() {
    let cfg = ReactorConfig {
        shutdown_grace: Duration::from_millis(400),
        ..ReactorConfig::default()
    };
    let far = ListenerOptions {
        idle_timeout: Duration::from_secs(120),
        ..ListenerOptions::default()
    };
    let h = Harness::start(cfg, far);
    let mut c = client(h.plain);
    let id = h.opened(EndpointKind::Accepted);
    say(&mut c, "!stay");
    assert_eq!(read_n(&mut c, 5), b"stay\n");
    h.begin_shutdown();
    assert_eq!(h.closed(id).0, CloseReason::Shutdown);
    let mut h = h;
    h.join().expect("the loop returns");
}
