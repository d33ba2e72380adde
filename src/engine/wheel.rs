//! A hierarchical timer wheel of deadlines, modelled on tokio's.
//!
//! Six levels of 64 slots; level `l` slots are `64^l` ms wide. Each level
//! keeps a bitmap of occupied slots so the next deadline is found with
//! `trailing_zeros` instead of a scan, and entries cascade to finer levels as
//! time approaches them. Inserting is O(1); an entry is moved at most once
//! per level on its way down before it expires; advancing past empty time
//! costs nothing per idle entry.
//!
//! Times are absolute milliseconds. An entry is never removed when its
//! service's deadline changes: the engine (`expiry.rs` `arm`) inserts a new
//! entry only when the deadline moved earlier than the live one, and
//! ignores an entry that no longer matches its service when it fires
//! (lazy re-arming), so most beats, which move a deadline later, do no
//! wheel operation. The superseded entries are counted, and when they
//! outnumber the live ones `drain_all` takes everything out for the engine
//! to put back only what is live.

const LEVEL_BITS: u32 = 6;
const SLOTS: usize = 1 << LEVEL_BITS;
const LEVELS: usize = 6;
/// The span (ms) the six levels cover.
const WHEEL_SPAN: u64 = (1 << (LEVEL_BITS as usize * LEVELS)) - 1;
/// The farthest ahead (ms) an entry is placed: half the span, so a clamped
/// entry never shares its top-level slot index with the clock. Later entries
/// fire at this point and the caller re-arms them (about 397 days).
pub const MAX_AHEAD: u64 = 1 << 35;

/// One level of the wheel.
struct Level<T> {
    /// Bit `s` is set iff `slots[s]` is non-empty.
    occupied: u64,
    /// Entries whose deadline falls in each slot of this level's current
    /// range, as `(deadline, item)`.
    slots: Box<[Vec<(u64, T)>]>,
}

impl<T> Level<T> {
    fn new() -> Self {
        Level {
            occupied: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
        }
    }
}

/// Deadlines with payloads, polled by a single driver.
pub struct Wheel<T> {
    /// Every entry in `levels` has a deadline strictly after `elapsed`; time
    /// up to and including `elapsed` has been processed.
    elapsed: u64,
    /// Entries inserted at or before `elapsed`, returned by the next advance.
    due: Vec<(u64, T)>,
    levels: [Level<T>; LEVELS],
}

fn slot_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

fn level_range(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * (level + 1))
}

/// The level at which `when` lives, seen from `elapsed` (tokio's rule: the
/// highest bit in which they differ).
fn level_for(elapsed: u64, when: u64) -> usize {
    let mut masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    if masked >= WHEEL_SPAN {
        masked = WHEEL_SPAN - 1;
    }
    let significant = 63 - masked.leading_zeros() as usize;
    significant / LEVEL_BITS as usize
}

impl<T> Wheel<T> {
    /// An empty wheel whose clock starts at `now` (ms).
    pub fn new(now: u64) -> Self {
        Wheel {
            elapsed: now,
            due: Vec::new(),
            levels: std::array::from_fn(|_| Level::new()),
        }
    }

    /// Number of entries held (tests: the engine never needs it).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.due.len()
            + self
                .levels
                .iter()
                .flat_map(|l| l.slots.iter())
                .map(Vec::len)
                .sum::<usize>()
    }

    /// True when nothing is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `item` to fire at `when`. A `when` beyond `MAX_AHEAD` is placed at
    /// the far end and fires early; the caller re-arms it then.
    pub fn insert(&mut self, when: u64, item: T) {
        if when <= self.elapsed {
            self.due.push((when, item));
            return;
        }
        let when = when.min(self.elapsed + MAX_AHEAD);
        let level = level_for(self.elapsed, when);
        let slot = ((when >> (LEVEL_BITS as usize * level)) as usize) & (SLOTS - 1);
        let lvl = &mut self.levels[level];
        lvl.slots[slot].push((when, item));
        lvl.occupied |= 1 << slot;
    }

    /// The next time at which `advance` has work: the start of the earliest
    /// occupied slot, which is never after the earliest deadline held.
    pub fn next_wake(&self) -> Option<u64> {
        if !self.due.is_empty() {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|(_, _, t)| t)
    }

    /// The earliest occupied slot as `(level, slot, slot start)`.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let now_slot = (self.elapsed / slot_range(level)) as u32 % SLOTS as u32;
            let rotated = lvl.occupied.rotate_right(now_slot);
            let slot = (rotated.trailing_zeros() + now_slot) as usize % SLOTS;
            let level_start = self.elapsed & !(level_range(level) - 1);
            let mut start = level_start + slot as u64 * slot_range(level);
            if start <= self.elapsed && level > 0 && slot as u32 != now_slot {
                // The slot lies in the next rotation of this level.
                start += level_range(level);
            }
            return Some((level, slot, start.max(self.elapsed)));
        }
        None
    }

    /// Takes every entry out, whatever its deadline, keeping the clock
    /// where it is.
    pub fn drain_all(&mut self, out: &mut Vec<(u64, T)>) {
        out.append(&mut self.due);
        for level in &mut self.levels {
            level.occupied = 0;
            for slot in level.slots.iter_mut() {
                out.append(slot);
            }
        }
    }

    /// Moves the clock to `now` and appends every entry whose deadline is at
    /// or before `now` to `out`, as `(deadline, item)`.
    pub fn advance(&mut self, now: u64, out: &mut Vec<(u64, T)>) {
        out.append(&mut self.due);
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > now {
                break;
            }
            self.elapsed = self.elapsed.max(start);
            let lvl = &mut self.levels[level];
            lvl.occupied &= !(1 << slot);
            let entries = std::mem::take(&mut lvl.slots[slot]);
            for (when, item) in entries {
                if when <= now {
                    out.push((when, item));
                } else {
                    self.insert(when, item);
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(w: &mut Wheel<u32>, now: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        out.sort();
        out
    }

    #[test]
    fn fires_entries_at_their_deadline_and_not_before() {
        let mut w = Wheel::new(1_000);
        w.insert(1_010, 1);
        w.insert(1_050, 2);
        assert!(drain(&mut w, 1_009).is_empty());
        assert_eq!(drain(&mut w, 1_010), vec![(1_010, 1)]);
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, 2_000), vec![(1_050, 2)]);
        assert!(w.is_empty());
    }

    #[test]
    fn cascades_from_high_levels() {
        let start = 1_700_000_000_000;
        let mut w = Wheel::new(start);
        let far = start + 3_600_000 * 5 + 17; // level 4
        w.insert(far, 7);
        assert!(w.next_wake().expect("something held") <= far);
        assert!(drain(&mut w, far - 1).is_empty());
        assert_eq!(drain(&mut w, far), vec![(far, 7)]);
    }

    #[test]
    fn entry_in_the_past_fires_on_next_advance() {
        let mut w = Wheel::new(500);
        w.insert(100, 1);
        assert_eq!(w.next_wake(), Some(500));
        assert_eq!(drain(&mut w, 500), vec![(100, 1)]);
    }

    #[test]
    fn next_wake_never_after_earliest_deadline() {
        let mut w = Wheel::new(0);
        w.insert(4_000_000, 1);
        w.insert(70, 2);
        assert!(w.next_wake().expect("held") <= 70);
    }

    #[test]
    fn drain_all_takes_everything_and_the_wheel_goes_on() {
        let mut w = Wheel::new(1_000);
        for (i, when) in [900, 1_001, 70_000, 5_000_000].into_iter().enumerate() {
            w.insert(when, i as u32);
        }
        let mut out = Vec::new();
        w.drain_all(&mut out);
        out.sort();
        assert_eq!(out.len(), 4);
        assert!(w.is_empty());
        w.insert(2_000, 9);
        assert_eq!(drain(&mut w, 2_000), vec![(2_000, 9)]);
    }

    #[test]
    fn too_far_ahead_is_clamped_and_fires_early() {
        let mut w = Wheel::new(0);
        w.insert(u64::MAX / 2, 1);
        let out = drain(&mut w, MAX_AHEAD);
        assert_eq!(out.len(), 1);
    }

    proptest! {
        /// Whatever the insert times and however the clock is advanced, every
        /// entry comes out exactly once, in the first advance whose `now`
        /// reaches its deadline.
        #[test]
        fn every_entry_fires_once_at_the_right_advance(
            start in 0u64..1u64 << 40,
            deltas in proptest::collection::vec(0u64..20_000_000, 1..200),
            steps in proptest::collection::vec(1u64..5_000_000, 1..60),
        ) {
            let mut w = Wheel::new(start);
            for (i, d) in deltas.iter().enumerate() {
                w.insert(start + d, i as u32);
            }
            let mut fired = vec![false; deltas.len()];
            let mut now = start;
            let mut prev = start;
            for s in steps.iter().chain(std::iter::once(&30_000_000)) {
                now += s;
                let mut out = Vec::new();
                w.advance(now, &mut out);
                for (when, i) in out {
                    let i = i as usize;
                    prop_assert!(!fired[i]);
                    fired[i] = true;
                    prop_assert_eq!(when, start + deltas[i]);
                    prop_assert!(when <= now);
                    prop_assert!(when > prev || (deltas[i] == 0 && prev == start));
                }
                if let Some(t) = w.next_wake() {
                    prop_assert!(t > now);
                }
                prev = now;
            }
            prop_assert!(fired.iter().all(|f| *f));
            prop_assert!(w.is_empty());
        }
    }
}
