//! The timer wheel with 1,000,000 live timers: insert, cancel, reschedule, fire, and the
//! steady-state cost of keep-alive for 1,000,000 connections with a 30 s interval.
//!
//! `cargo bench -p actionwire-reactor --bench wheel`

use std::hint::black_box;
use std::time::{Duration, Instant};

use actionwire_reactor::wheel::{Link, Links, Wheel};
use criterion::{Criterion, criterion_group, criterion_main};

const N: u32 = 1_000_000;
/// 30 s in 100 ms ticks.
const INTERVAL: u64 = 300;

/// What the loop keeps per connection for its timers: the link and three stamps.
#[derive(Clone, Copy, Default)]
struct Slot {
    link: Link,
    last_rx: u32,
    last_ping: u32,
}

struct Slots(Vec<Slot>);

impl Links for Slots {
    fn link(&mut self, slot: u32) -> &mut Link {
        &mut self.0[slot as usize].link
    }
}

/// A wheel holding `N` timers spread over one interval, as after N connections arrived.
fn populated() -> (Wheel, Slots) {
    let mut slots = Slots(vec![Slot::default(); N as usize + 1]);
    let mut wheel = Wheel::new(0);
    let mut rng = fastrand::Rng::with_seed(7);
    for s in 0..N {
        wheel.insert(&mut slots, s, 1 + rng.u64(0..INTERVAL));
    }
    (wheel, slots)
}

fn operations(c: &mut Criterion) {
    let (mut wheel, mut slots) = populated();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut g = c.benchmark_group("wheel_1M");
    g.bench_function("insert", |b| {
        // Slot N is the spare one: insert it, then take it out again outside the timing.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let d = 1 + rng.u64(0..INTERVAL);
                let t = Instant::now();
                wheel.insert(&mut slots, black_box(N), d);
                total += t.elapsed();
                wheel.cancel(&mut slots, N);
            }
            total
        })
    });
    g.bench_function("cancel", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let s = rng.u32(0..N);
                let d = u64::from(slots.0[s as usize].link.deadline());
                let t = Instant::now();
                wheel.cancel(&mut slots, black_box(s));
                total += t.elapsed();
                wheel.insert(&mut slots, s, d);
            }
            total
        })
    });
    g.bench_function("reschedule", |b| {
        b.iter(|| {
            let s = rng.u32(0..N);
            wheel.insert(&mut slots, black_box(s), 1 + rng.u64(0..INTERVAL));
        })
    });
    g.finish();
}

/// One 100 ms tick of keep-alive for 1M connections with a 30 s interval: the ~3,333 entries
/// due fire, each re-checks its stamps (half of the connections were active, half silent),
/// and relinks one interval on. Ten of these make one second of the loop's timer work.
fn keepalive(c: &mut Criterion) {
    let (mut wheel, mut slots) = populated();
    let mut fired = Vec::with_capacity(8192);
    let mut now = 0u64;
    let mut g = c.benchmark_group("keepalive_1M_30s");
    g.bench_function("one_tick", |b| {
        b.iter(|| {
            now += 1;
            wheel.advance(&mut slots, now, usize::MAX, &mut fired);
            for &s in &fired {
                let slot = &mut slots.0[s as usize];
                // Lazy rescheduling: odd slots spoke recently, even ones are silent.
                if s % 2 == 1 {
                    slot.last_rx = now as u32;
                }
                let since = (now as u32).wrapping_sub(slot.last_rx.max(slot.last_ping));
                if u64::from(since) >= INTERVAL {
                    slot.last_ping = now as u32; // the ping itself is the handler's work
                }
                let base = u64::from(slot.last_rx.max(slot.last_ping));
                wheel.insert(&mut slots, s, base.max(now) + INTERVAL);
            }
            let n = fired.len();
            fired.clear();
            black_box(n)
        })
    });
    g.finish();
    println!(
        "per-connection timer state: {} B (link {} B + two 4-byte stamps); wheel fixed size {} KiB",
        std::mem::size_of::<Slot>(),
        std::mem::size_of::<Link>(),
        (actionwire_reactor::wheel::BUCKETS * 4 + actionwire_reactor::wheel::BUCKETS / 8) / 1024
    );
}

criterion_group!(benches, operations, keepalive);
criterion_main!(benches);
