//! The timers' unit tests: tick rounding and stamps across the 32-bit wrap, keep-alive
//! jitter, server timers, the loop's wake-up and the order of deferred completions.

use super::*;
use crate::endpoint::ConnId;

fn config() -> ReactorConfig {
    ReactorConfig {
        linger: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        max_timers: 2,
        ..ReactorConfig::default()
    }
}

#[test]
fn endpoint_slots_stop_below_the_server_timer_range() {
    assert_eq!(MAX_ENDPOINT_SLOT + 1, TIMER_SLOT_BASE as usize);
    assert!(endpoint_slot_fits(0));
    assert!(endpoint_slot_fits(MAX_ENDPOINT_SLOT));
    assert!(!endpoint_slot_fits(MAX_ENDPOINT_SLOT + 1));
}

#[test]
fn only_keep_alive_deadlines_are_jittered_within_a_tenth_capped_at_a_second() {
    let mut rng = fastrand::Rng::with_seed(7);
    let sample = |due: Due, keepalive: u64, rng: &mut fastrand::Rng| {
        let p = Profile {
            keepalive,
            idle: 50,
            handshake: 50,
        };
        let v: Vec<u64> = (0..500).map(|_| due.jitter(p, rng)).collect();
        (
            *v.iter().min().expect("samples"),
            *v.iter().max().expect("samples"),
        )
    };
    // 5 s interval (50 ticks): 0..=5 ticks; 60 s: capped at 10 ticks; 0.5 s: none.
    assert_eq!(sample(Due::KeepAlive, 50, &mut rng), (0, 5));
    assert_eq!(sample(Due::KeepAlive, 600, &mut rng), (0, MAX_JITTER_TICKS));
    assert_eq!(sample(Due::KeepAlive, 5, &mut rng), (0, 0));
    for due in [Due::OutputLimit, Due::Handshake, Due::Idle] {
        assert_eq!(sample(due, 600, &mut rng), (0, 0), "{due:?} is exact");
    }
}

#[test]
fn deferred_completions_are_equal_by_instant_and_arrival_only() {
    let at = Instant::now();
    let d = |at, seq, slot| Deferred {
        at,
        seq,
        id: ConnId::new(slot, 1),
        payload: (),
    };
    assert!(
        d(at, 1, 1) == d(at, 1, 2),
        "the endpoint does not order them"
    );
    assert!(d(at, 1, 1) != d(at, 2, 1));
    assert!(d(at, 1, 1) != d(at + Duration::from_millis(1), 1, 1));
    assert!(d(at, 1, 1) < d(at, 2, 1));
}

#[test]
fn never_is_beyond_any_real_deadline_and_leaves_room_to_add() {
    let millennium = Duration::from_secs(1000 * 365 * 24 * 3600);
    assert!(NEVER > ticks(millennium));
    assert!(NEVER.checked_add(u64::from(u32::MAX)).is_some());
}

#[test]
fn durations_round_up_to_ticks_and_saturate() {
    assert_eq!(ticks(Duration::ZERO), 0);
    assert_eq!(ticks(Duration::from_millis(1)), 1);
    assert_eq!(ticks(Duration::from_millis(100)), 1);
    assert_eq!(ticks(Duration::from_millis(101)), 2);
    assert_eq!(
        ticks(Duration::from_nanos(100_000_001)),
        2,
        "not truncated to ms"
    );
    assert_eq!(ticks(Duration::from_secs(60)), 600);
    assert_eq!(ticks(Duration::MAX), NEVER);
}

#[test]
fn stamps_widen_across_the_32_bit_wrap() {
    let now = (1u64 << 32) + 5;
    assert_eq!(widen((now - 3) as u32, now), now - 3);
    assert_eq!(widen(u32::MAX, now), (1 << 32) - 1);
    assert_eq!(widen(now as u32, now), now);
    // Stamped at `now - 3`, due 10 ticks later: one tick of stamp uncertainty on top.
    assert_eq!(due((now - 3) as u32, 10, now), now - 3 + 1 + 10);
}

#[test]
fn turns_start_at_whole_ticks_and_deadlines_count_from_them() {
    let origin = Instant::now();
    let mut t: Timers<(), u64> = Timers::new(&config(), origin);
    assert_eq!(t.tick_at(origin + Duration::from_millis(250)), 2);
    t.set_now(origin + Duration::from_millis(1_050));
    assert_eq!(t.tick32(), 10);
    // Linger 5 s = 50 ticks, grace 2 s = 20 ticks, each after one tick of slack.
    assert_eq!(t.linger_deadline(), 61);
    assert_eq!(t.begin_shutdown(), 31);
    // Once shutting down, nothing lingers past the grace.
    assert_eq!(t.linger_deadline(), 31);
}

#[test]
fn server_timers_are_bounded_generational_and_hand_their_event_back() {
    let mut t: Timers<&str, u64> = Timers::new(&config(), Instant::now());
    let mut endpoints: Slab<Endpoint<()>> = Slab::new();
    let a = t
        .set(
            &mut endpoints,
            Duration::from_secs(1),
            TimerAction::Event("a"),
        )
        .expect("first");
    let b = t
        .set(
            &mut endpoints,
            Duration::from_secs(2),
            TimerAction::Event("b"),
        )
        .expect("second");
    let refused = t.set(
        &mut endpoints,
        Duration::from_secs(3),
        TimerAction::Event("c"),
    );
    assert_eq!(refused, Err(TimerError::TooMany { limit: 2 }));
    assert_eq!(
        TimerError::TooMany { limit: 2 }.to_string(),
        "too many server-level timers (limit 2)"
    );
    assert_eq!(t.cancel(&mut endpoints, a), Some("a"));
    assert_eq!(t.cancel(&mut endpoints, a), None, "already cancelled");
    // The slot is reused with a new generation: the old id does not cancel the new timer.
    let c = t
        .set(
            &mut endpoints,
            Duration::from_secs(3),
            TimerAction::Event("c"),
        )
        .expect("room again");
    assert_eq!(c.slot, a.slot);
    assert_eq!(t.cancel(&mut endpoints, a), None);
    assert_eq!(t.cancel(&mut endpoints, b), Some("b"));
    assert_eq!(t.cancel(&mut endpoints, c), Some("c"));
}

#[test]
fn the_loop_wakes_for_the_earliest_timer_never_before_it() {
    let origin = Instant::now();
    let mut t: Timers<&str, u64> = Timers::new(&config(), origin);
    let mut endpoints: Slab<Endpoint<()>> = Slab::new();
    assert_eq!(t.next_wake(), None);
    let set_at = Instant::now();
    t.set(
        &mut endpoints,
        Duration::from_millis(1_000),
        TimerAction::Event("x"),
    )
    .expect("set");
    let wake = t.next_wake().expect("a wake-up");
    assert!(wake >= set_at + Duration::from_millis(1_000));
    assert!(wake <= Instant::now() + Duration::from_millis(1_000) + TICK);
    // A deferred completion due sooner wakes the loop sooner, at its exact instant.
    let soon = origin + Duration::from_millis(30);
    t.defer(soon, ConnId::new(0, 0), 1);
    assert_eq!(t.next_wake(), Some(soon));
}

#[test]
fn deferred_completions_come_in_time_order_then_arrival_order() {
    let origin = Instant::now();
    let mut t: Timers<(), u64> = Timers::new(&config(), origin);
    let id = ConnId::new(3, 7);
    let at = |ms| origin + Duration::from_millis(ms);
    t.defer(at(300), id, 1);
    t.defer(at(100), id, 2);
    for payload in 3..=6 {
        t.defer(at(200), id, payload);
    }
    assert_eq!(t.due_deferred(at(99)), None, "nothing is due early");
    let mut order = Vec::new();
    while let Some((i, p)) = t.due_deferred(at(300)) {
        assert_eq!(i, id);
        order.push(p);
    }
    assert_eq!(order, [2, 3, 4, 5, 6, 1]);
    assert_eq!(t.next_wake(), None);
}
