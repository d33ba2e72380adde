//! Slots and fairness: at most `max_alert_deliveries` (and
//! `max_scripts`) deliveries at a time, a quarter of them for one
//! receiver that sends per change, and a slot kept for every receiver that
//! has none (up to half), so a receiver that hangs delays no other.

use crate::sinks::alerts::alerter::Pool;

/// What the slots need to know of one receiver.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// The pool its deliveries draw from.
    pub(super) pool: Pool,
    /// Deliveries it may have under way at most.
    pub(super) cap: usize,
    /// Deliveries it has under way.
    pub(super) running: usize,
    /// True when it has a message waiting.
    pub(super) waiting: bool,
}

/// The receivers as the slots see them.
pub(super) trait Queues {
    /// How many receivers there are.
    fn len(&self) -> usize;
    /// Receiver `idx`'s load now.
    fn load(&self, idx: usize) -> Load;
    /// Starts one delivery of receiver `idx`; false if none of its
    /// messages may start (each alarm's in flight already).
    fn start(&mut self, idx: usize) -> bool;
}

/// The delivery slots of both pools.
pub(super) struct Slots {
    /// Slots per pool (indexed by [`Pool`]): at least 1 each.
    size: [usize; 2],
    /// Deliveries under way per pool: never above `size`, and the sum of
    /// the receivers' `running`.
    pub(super) running: [usize; 2],
    /// The receiver the next [`Slots::fill`] serves first: it moves on
    /// each time, so when slots are short none is always served last.
    from: usize,
}

impl Slots {
    /// `deliveries` and `scripts` slots (0 counts as 1).
    pub(super) fn new(deliveries: usize, scripts: usize) -> Slots {
        Slots {
            size: [deliveries.max(1), scripts.max(1)],
            running: [0, 0],
            from: 0,
        }
    }

    /// Deliveries one receiver that sends per change may have under way:
    /// a quarter of the HTTP slots (a script may have them all).
    pub(super) fn share(&self, pool: Pool) -> usize {
        match pool {
            Pool::Deliveries => (self.size[0] / 4).max(1),
            Pool::Scripts => self.size[1],
        }
    }

    /// True when nothing is under way.
    pub(super) fn idle(&self) -> bool {
        self.running == [0, 0]
    }

    /// A delivery of `pool` ended.
    pub(super) fn release(&mut self, pool: Pool) {
        let r = &mut self.running[pool as usize];
        *r = r.saturating_sub(1);
    }

    /// Starts what the slots allow: every receiver in turn, up to its
    /// cap. A receiver's first slot is any free one; one that has a
    /// delivery under way takes another only while a slot stays free for
    /// every receiver that has none (up to half the pool: many receivers
    /// must not shrink a busy one's share to nothing), so receivers that
    /// hang (each holding slots through a minute of retries) never leave
    /// another without one.
    pub(super) fn fill(&mut self, q: &mut dyn Queues) {
        let n = q.len();
        // Receivers with nothing under way, per pool.
        let mut idle = [0, 0];
        for idx in 0..n {
            let l = q.load(idx);
            if l.running == 0 {
                idle[l.pool as usize] += 1;
            }
        }
        self.from = if n == 0 { 0 } else { (self.from + 1) % n };
        for idx in (self.from..n).chain(0..self.from) {
            loop {
                let l = q.load(idx);
                let p = l.pool as usize;
                let (in_use, slots, waiting) = (self.running[p], self.size[p], idle[p]);
                let full = if l.running == 0 {
                    in_use >= slots
                } else {
                    in_use + waiting.min(slots / 2) >= slots
                };
                if l.running >= l.cap || full || !l.waiting || !q.start(idx) {
                    break;
                }
                if l.running == 0 {
                    idle[p] -= 1;
                }
                self.running[p] += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receivers whose deliveries never end (they hang), each with
    /// `jobs` messages waiting.
    struct Hanging {
        jobs: Vec<usize>,
        running: Vec<usize>,
        cap: usize,
    }

    impl Queues for Hanging {
        fn len(&self) -> usize {
            self.jobs.len()
        }
        fn load(&self, idx: usize) -> Load {
            Load {
                pool: Pool::Deliveries,
                cap: self.cap,
                running: self.running[idx],
                waiting: self.jobs[idx] > 0,
            }
        }
        fn start(&mut self, idx: usize) -> bool {
            self.jobs[idx] -= 1;
            self.running[idx] += 1;
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn four_hanging_receivers_never_starve_a_fifth() {
        // 8 slots, a share of 2 each: four receivers that hang could
        // hold all 8 through a minute of retries.
        let mut slots = Slots::new(8, 1);
        let share = slots.share(Pool::Deliveries);
        let mut q = Hanging {
            jobs: vec![100, 100, 100, 100, 0],
            running: vec![0; 5],
            cap: share,
        };
        for _ in 0..10 {
            slots.fill(&mut q);
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
        }
        assert!(q.running[..4].iter().all(|&r| r >= 1), "{:?}", q.running);
        // The fifth's first change, long after: a slot is still free.
        q.jobs[4] = 1;
        slots.fill(&mut q);
        assert_eq!(q.running[4], 1, "{:?}", q.running);
        assert!(slots.running[0] <= 8);
    }
}
