//! A hashed timer wheel whose entries live inside the connections' slab slots.
//!
//! Each connection has at most one entry: a [`Link`] of 12 bytes (next, prev, deadline tick)
//! stored in its own slot, so the wheel allocates nothing per timer. The wheel owns only the
//! bucket heads and an occupancy bitmap, which finds the next non-empty bucket without
//! visiting empty ones. Deadlines are whole ticks (the loop uses 100 ms); an entry whose
//! deadline lies more than one rotation ahead waits in its bucket and is skipped until its
//! rotation comes round.
//!
//! Activity does not touch the wheel: callers stamp times in the slot and, when an entry
//! fires, re-check those stamps and insert it again (lazy rescheduling).

/// End of a bucket list.
const NIL: u32 = u32::MAX;
/// `prev` of an entry that is not in the wheel.
const UNLINKED: u32 = u32::MAX;
/// `prev` of the first entry of a bucket.
const HEAD: u32 = u32::MAX - 1;

/// Buckets per rotation (a power of two): 4096 × 100 ms ≈ 6.8 minutes.
pub const BUCKETS: usize = 4096;
const WORDS: usize = BUCKETS / 64;

/// Largest index a linked slot may have (two values are reserved as markers).
pub const MAX_SLOT: u32 = u32::MAX - 2;

/// The intrusive part of a timer entry, stored in the owner's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    next: u32,
    prev: u32,
    /// Deadline tick, truncated to 32 bits (compared with wrapping arithmetic).
    deadline: u32,
}

const _: () = assert!(
    std::mem::size_of::<Link>() == 12,
    "a timer costs 12 bytes per slot"
);

impl Default for Link {
    fn default() -> Self {
        Link {
            next: NIL,
            prev: UNLINKED,
            deadline: 0,
        }
    }
}

impl Link {
    pub fn is_linked(&self) -> bool {
        self.prev != UNLINKED
    }

    /// The deadline tick (low 32 bits) of a linked entry.
    pub fn deadline(&self) -> u32 {
        self.deadline
    }
}

/// Where the wheel finds an entry's link, by slot index.
pub trait Links {
    /// The link of `slot`. Only slots that are linked, or being linked, are asked for.
    fn link(&mut self, slot: u32) -> &mut Link;
}

/// True when `deadline` (32-bit tick) is at or before `tick`.
fn is_due(deadline: u32, tick: u64) -> bool {
    (tick as u32).wrapping_sub(deadline) as i32 >= 0
}

/// The wheel: bucket heads, occupancy bitmap and the last tick processed.
pub struct Wheel {
    heads: Box<[u32]>,
    occupied: Box<[u64]>,
    /// Every deadline up to and including this tick has been fired.
    current: u64,
    len: usize,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel::new(0)
    }
}

impl std::fmt::Debug for Wheel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheel")
            .field("current", &self.current)
            .field("len", &self.len)
            .finish()
    }
}

impl Wheel {
    /// A wheel whose ticks up to `now` count as processed.
    pub fn new(now: u64) -> Wheel {
        Wheel {
            heads: vec![NIL; BUCKETS].into_boxed_slice(),
            occupied: vec![0; WORDS].into_boxed_slice(),
            current: now,
            len: 0,
        }
    }

    /// Entries in the wheel.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last tick processed.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Links `slot` to fire at `deadline` (a tick). A deadline already past fires at the
    /// next tick processed. An entry already linked is moved.
    pub fn insert<L: Links>(&mut self, links: &mut L, slot: u32, deadline: u64) {
        debug_assert!(slot <= MAX_SLOT);
        self.cancel(links, slot);
        let deadline = deadline.max(self.current + 1);
        debug_assert!(
            deadline - self.current < (1 << 31),
            "deadline too far ahead"
        );
        let b = (deadline as usize) & (BUCKETS - 1);
        let head = self.heads[b];
        if head != NIL {
            links.link(head).prev = slot;
        }
        *links.link(slot) = Link {
            next: head,
            prev: HEAD,
            deadline: deadline as u32,
        };
        self.heads[b] = slot;
        self.occupied[b / 64] |= 1 << (b % 64);
        self.len += 1;
    }

    /// Unlinks `slot` if it is linked. O(1).
    pub fn cancel<L: Links>(&mut self, links: &mut L, slot: u32) {
        let Link {
            next,
            prev,
            deadline,
        } = *links.link(slot);
        if prev == UNLINKED {
            return;
        }
        let b = (deadline as usize) & (BUCKETS - 1);
        if prev == HEAD {
            debug_assert_eq!(self.heads[b], slot);
            self.heads[b] = next;
            if next == NIL {
                self.occupied[b / 64] &= !(1 << (b % 64));
            }
        } else {
            links.link(prev).next = next;
        }
        if next != NIL {
            links.link(next).prev = prev;
        }
        *links.link(slot) = Link::default();
        self.len -= 1;
    }

    /// Fires every entry due at or before `now`, in tick order, at most `budget` of them,
    /// appending their slots to `fired` (they are unlinked). Returns how many fired; when the
    /// budget ran out, the rest fire on the next call.
    pub fn advance<L: Links>(
        &mut self,
        links: &mut L,
        now: u64,
        budget: usize,
        fired: &mut Vec<u32>,
    ) -> usize {
        let mut n = 0;
        while self.current < now {
            let Some(tick) = self.next_occupied(self.current + 1).filter(|&t| t <= now) else {
                self.current = now;
                break;
            };
            let b = (tick as usize) & (BUCKETS - 1);
            let mut cur = self.heads[b];
            while cur != NIL {
                let link = *links.link(cur);
                if is_due(link.deadline, tick) {
                    if n == budget {
                        // Resume this bucket next time; `current` stays before it.
                        self.current = tick - 1;
                        return n;
                    }
                    self.cancel(links, cur);
                    fired.push(cur);
                    n += 1;
                }
                cur = link.next;
            }
            self.current = tick;
        }
        n
    }

    /// The first tick after the last processed one whose bucket holds an entry. The entry may
    /// belong to a later rotation, which only makes the caller wake early.
    pub fn next_tick(&self) -> Option<u64> {
        if self.len == 0 {
            None
        } else {
            self.next_occupied(self.current + 1)
        }
    }

    /// The smallest tick `t >= from` whose bucket is occupied, looking one rotation ahead.
    fn next_occupied(&self, from: u64) -> Option<u64> {
        let start = (from as usize) & (BUCKETS - 1);
        let (w0, bit0) = (start / 64, start % 64);
        // The starting word from the starting bit up, the other words in order, then the
        // starting word's lower bits (a full circle).
        let first = self.occupied[w0] & (!0u64 << bit0);
        if first != 0 {
            return Some(from + (first.trailing_zeros() as usize - bit0) as u64);
        }
        for i in 1..=WORDS {
            let w = (w0 + i) % WORDS;
            let mut word = self.occupied[w];
            if i == WORDS {
                word &= (1u64 << bit0).wrapping_sub(1);
            }
            if word != 0 {
                let bucket = w * 64 + word.trailing_zeros() as usize;
                let distance = (bucket + BUCKETS - start) % BUCKETS;
                return Some(from + distance as u64);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Links for Vec<Link> {
        fn link(&mut self, slot: u32) -> &mut Link {
            &mut self[slot as usize]
        }
    }

    fn fire(w: &mut Wheel, links: &mut Vec<Link>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(links, now, usize::MAX, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut links = vec![Link::default(); 4];
        let mut w = Wheel::new(100);
        w.insert(&mut links, 0, 105);
        w.insert(&mut links, 1, 103);
        w.insert(&mut links, 2, 105);
        assert_eq!(w.len(), 3);
        assert_eq!(w.next_tick(), Some(103));
        assert_eq!(fire(&mut w, &mut links, 102), Vec::<u32>::new());
        assert_eq!(fire(&mut w, &mut links, 104), vec![1]);
        assert_eq!(w.next_tick(), Some(105));
        assert_eq!(fire(&mut w, &mut links, 200), vec![0, 2]);
        assert!(w.is_empty());
        assert_eq!(w.next_tick(), None);
        assert!(!links[0].is_linked());
    }

    #[test]
    fn links_report_their_state_and_the_wheel_its_own() {
        let mut links = vec![Link::default(); 2];
        let mut w = Wheel::new(10);
        assert!(w.is_empty() && !links[0].is_linked());
        w.insert(&mut links, 0, 17);
        assert!(!w.is_empty());
        assert!(links[0].is_linked());
        assert_eq!(links[0].deadline(), 17);
        assert_eq!(format!("{w:?}"), "Wheel { current: 10, len: 1 }");
        assert_eq!(fire(&mut w, &mut links, 16), Vec::<u32>::new());
        assert_eq!(w.current(), 16);
        assert_eq!(fire(&mut w, &mut links, 30), vec![0]);
        assert_eq!(w.current(), 30);
        // The occupancy bitmap is one bit per bucket.
        assert_eq!(w.occupied.len() * 64, BUCKETS);
    }

    #[test]
    fn next_tick_is_exact_after_cancels_and_across_the_circle() {
        let mut links = vec![Link::default(); 3];
        let mut w = Wheel::new(100);
        w.insert(&mut links, 0, 105);
        w.insert(&mut links, 1, 300);
        w.cancel(&mut links, 0);
        assert_eq!(
            w.next_tick(),
            Some(300),
            "a cancelled entry leaves no bit behind"
        );
        w.cancel(&mut links, 1);
        assert_eq!(w.next_tick(), None);
        // Next rotation, same bucket as the current tick: a whole circle away.
        w.insert(&mut links, 2, 100 + BUCKETS as u64);
        assert_eq!(w.next_tick(), Some(100 + BUCKETS as u64));
        w.cancel(&mut links, 2);
        // Behind the start within its own bitmap word: found on the way round.
        let mut w = Wheel::new(70);
        w.insert(&mut links, 0, 65 + BUCKETS as u64);
        assert_eq!(w.next_tick(), Some(65 + BUCKETS as u64));
        // Ahead in a later word, and ahead past the end of the circle.
        let mut w = Wheel::new(4000);
        w.insert(&mut links, 1, 4100);
        assert_eq!(w.next_tick(), Some(4100));
        w.insert(&mut links, 2, 4030);
        assert_eq!(w.next_tick(), Some(4030));
    }

    #[test]
    fn cancel_and_move() {
        let mut links = vec![Link::default(); 3];
        let mut w = Wheel::new(0);
        for s in 0..3 {
            w.insert(&mut links, s, 10);
        }
        w.cancel(&mut links, 1); // middle of the bucket list
        w.cancel(&mut links, 1); // twice is harmless
        w.insert(&mut links, 2, 20); // head moves to another bucket
        assert_eq!(fire(&mut w, &mut links, 10), vec![0]);
        assert_eq!(fire(&mut w, &mut links, 20), vec![2]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let mut links = vec![Link::default(); 1];
        let mut w = Wheel::new(50);
        w.insert(&mut links, 0, 3);
        assert_eq!(w.next_tick(), Some(51));
        assert_eq!(fire(&mut w, &mut links, 51), vec![0]);
    }

    #[test]
    fn entries_beyond_one_rotation_wait_for_their_turn() {
        let mut links = vec![Link::default(); 2];
        let mut w = Wheel::new(0);
        w.insert(&mut links, 0, 5 + BUCKETS as u64);
        w.insert(&mut links, 1, 5);
        assert_eq!(fire(&mut w, &mut links, 5), vec![1]);
        assert_eq!(
            fire(&mut w, &mut links, 4 + BUCKETS as u64),
            Vec::<u32>::new()
        );
        assert_eq!(fire(&mut w, &mut links, 5 + BUCKETS as u64), vec![0]);
    }

    #[test]
    fn budget_caps_the_work_and_the_rest_follows() {
        let mut links = vec![Link::default(); 10];
        let mut w = Wheel::new(0);
        for s in 0..10 {
            w.insert(&mut links, s, 1 + u64::from(s % 2));
        }
        let mut out = Vec::new();
        assert_eq!(w.advance(&mut links, 5, 3, &mut out), 3);
        assert_eq!(w.advance(&mut links, 5, 3, &mut out), 3);
        assert_eq!(w.advance(&mut links, 5, 100, &mut out), 4);
        // Tick order is kept across budgets: every deadline-1 entry (even slots) fired
        // before any deadline-2 entry (odd slots); within a tick the order is not promised.
        let (first, second) = out.split_at(5);
        assert!(first.iter().all(|s| s % 2 == 0), "{out:?}");
        assert!(second.iter().all(|s| s % 2 == 1), "{out:?}");
        let mut all = out.clone();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<u32>>());
        assert!(w.is_empty());
    }

    #[test]
    fn wrapping_tick_arithmetic() {
        let start = u64::from(u32::MAX) - 5;
        let mut links = vec![Link::default(); 1];
        let mut w = Wheel::new(start);
        w.insert(&mut links, 0, start + 10);
        assert_eq!(fire(&mut w, &mut links, start + 9), Vec::<u32>::new());
        assert_eq!(fire(&mut w, &mut links, start + 10), vec![0]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};

    /// The reference: a binary heap of (deadline, slot) with lazy deletion.
    #[derive(Default)]
    struct Model {
        heap: BinaryHeap<Reverse<(u64, u32)>>,
        live: HashMap<u32, u64>,
        now: u64,
    }

    impl Model {
        fn insert(&mut self, slot: u32, deadline: u64) {
            let d = deadline.max(self.now + 1);
            self.live.insert(slot, d);
            self.heap.push(Reverse((d, slot)));
        }
        fn cancel(&mut self, slot: u32) {
            self.live.remove(&slot);
        }
        fn advance(&mut self, now: u64) -> Vec<u32> {
            let mut out = Vec::new();
            while let Some(&Reverse((d, s))) = self.heap.peek() {
                if d > now {
                    break;
                }
                self.heap.pop();
                if self.live.get(&s) == Some(&d) {
                    self.live.remove(&s);
                    out.push(s);
                }
            }
            self.now = now;
            out.sort_unstable();
            out
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u64),
        Cancel(u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..64, 0u64..(2 * BUCKETS as u64)).prop_map(|(s, d)| Op::Insert(s, d)),
            1 => (0u32..64).prop_map(Op::Cancel),
            3 => (0u64..40).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #[test]
        fn wheel_fires_what_a_heap_fires_in_the_same_ticks(
            ops in proptest::collection::vec(op(), 1..300)
        ) {
            let mut links = vec![Link::default(); 64];
            let mut wheel = Wheel::new(0);
            let mut model = Model::default();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Insert(s, delay) => {
                        wheel.insert(&mut links, s, now + delay);
                        model.insert(s, now + delay);
                    }
                    Op::Cancel(s) => {
                        wheel.cancel(&mut links, s);
                        model.cancel(s);
                    }
                    Op::Advance(by) => {
                        // Tick by tick, so "the same ticks" is checked, not just the same set.
                        for _ in 0..by {
                            now += 1;
                            let mut got = Vec::new();
                            wheel.advance(&mut links, now, usize::MAX, &mut got);
                            got.sort_unstable();
                            prop_assert_eq!(got, model.advance(now), "tick {}", now);
                        }
                    }
                }
                prop_assert_eq!(wheel.len(), model.live.len());
                if let Some(next) = wheel.next_tick() {
                    let earliest = model.live.values().min().copied();
                    prop_assert!(earliest.is_some_and(|e| next <= e), "wakes no later than the earliest deadline");
                }
            }
        }
    }
}
