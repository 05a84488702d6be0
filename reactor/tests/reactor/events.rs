//! Server-level events and timers, and generation checks.

use std::time::{Duration, Instant};

use actionwire_reactor::{CloseReason, EndpointKind, SendError};

use crate::toy::{Ev, Harness, Report, client, read_n, say};

#[test]
fn events_from_many_threads_all_reach_the_handler() {
    let h = Harness::default();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let tx = h.tx.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    tx.send(Ev::Ping).expect("send");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let mut pongs = 0;
    while pongs < 2000 {
        if let Report::Pong(_) = h.next() {
            pongs += 1;
        }
    }
}

#[test]
fn a_full_event_queue_refuses_at_once_and_loses_nothing_it_took() {
    let cfg = actionwire_reactor::ReactorConfig {
        event_queue: 4,
        ..actionwire_reactor::ReactorConfig::default()
    };
    let h = Harness::start(cfg, actionwire_reactor::ListenerOptions::default());
    // The loop thread waits on the gate inside the handler: nothing is drained meanwhile.
    h.send(Ev::Block);
    h.wait(|r| matches!(r, Report::Blocked).then_some(()));
    for _ in 0..4 {
        h.tx.try_send(Ev::Ping).expect("room for four");
    }
    match h.tx.try_send(Ev::Ping) {
        Err(SendError::Full(Ev::Ping)) => {}
        other => panic!("expected Full, got {:?}", other.map_err(|e| e.to_string())),
    }
    h.gate.open();
    for _ in 0..4 {
        h.wait(|r| matches!(r, Report::Pong(_)).then_some(()));
    }
}

#[test]
fn server_timers_fire_at_or_after_their_time_and_cancelled_ones_never() {
    let h = Harness::default();
    let set = Instant::now();
    h.send(Ev::SetTimer(Duration::from_millis(350), 1));
    h.send(Ev::SetTimer(Duration::from_millis(250), 2));
    h.send(Ev::SetTimer(Duration::from_millis(150), 3));
    h.send(Ev::CancelTimer(2));
    let cancelled = h.wait(|r| match r {
        Report::Cancelled(2, c) => Some(c),
        _ => None,
    });
    assert!(cancelled);
    h.send(Ev::CountTimers);
    assert_eq!(
        h.wait(|r| match r {
            Report::TimersSet(n) => Some(n),
            _ => None,
        }),
        2
    );
    let turns_before = h.turns();
    let mut order = Vec::new();
    while order.len() < 2 {
        if let Report::Fired(tag, at) = h.next() {
            assert_ne!(tag, 2, "a cancelled timer fired");
            let want = if tag == 1 { 350 } else { 150 };
            assert!(at - set >= Duration::from_millis(want), "{tag} early");
            order.push(tag);
        }
    }
    assert_eq!(order, [3, 1]);
    // The loop slept until each timer was due: a handful of turns, not a spin.
    let waiting_turns = h.turns() - turns_before;
    assert!(
        waiting_turns <= 20,
        "{waiting_turns} loop turns while waiting for two timers"
    );
    h.send(Ev::CountTimers);
    assert_eq!(
        h.wait(|r| match r {
            Report::TimersSet(n) => Some(n),
            _ => None,
        }),
        0
    );
    // Cancelling a timer that already fired does nothing.
    h.send(Ev::CancelTimer(1));
    assert!(!h.wait(|r| match r {
        Report::Cancelled(1, c) => Some(c),
        _ => None,
    }));
}

#[test]
fn a_completion_for_a_closed_endpoint_is_dropped_even_when_its_slot_is_reused() {
    let h = Harness::default();
    let mut c = client(h.plain);
    let old = h.opened(EndpointKind::Accepted);
    say(&mut c, "!job"); // blocks on the gate
    h.send(Ev::Ping);
    h.wait(|r| match r {
        Report::Pong(1) => Some(()),
        Report::Pong(_) => {
            h.send(Ev::Ping);
            None
        }
        _ => None,
    });
    drop(c);
    assert_eq!(h.closed(old).0, CloseReason::Eof);
    // A new connection takes the freed slot, with a new generation.
    let mut c2 = client(h.plain);
    let new = h.opened(EndpointKind::Accepted);
    assert_ne!(old, new);
    h.gate.open();
    // Wait until the job's result is where the loop finds it, then one more turn.
    loop {
        h.send(Ev::Ping);
        let in_flight = h.wait(|r| match r {
            Report::Completion(id, v) => panic!("completion {v} delivered to {id:?}"),
            Report::Pong(n) => Some(n),
            _ => None,
        });
        if in_flight == 0 {
            break;
        }
    }
    h.send(Ev::Ping);
    h.wait(|r| match r {
        Report::Completion(id, v) => panic!("completion {v} delivered to {id:?}"),
        Report::Pong(_) => Some(()),
        _ => None,
    });
    // A stale id cannot be written to either; the new endpoint works.
    h.send(Ev::Send(old, b"stale\n".to_vec()));
    let sent = h.wait(|r| match r {
        Report::Sent(id, sent) if id == old => Some(sent),
        _ => None,
    });
    assert!(!sent);
    say(&mut c2, "fresh");
    assert_eq!(read_n(&mut c2, 6), b"fresh\n");
}
