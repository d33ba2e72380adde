//! A service's beat history: a ring of at most `HISTORY_LEN` intervals
//! that grows as it fills, the automatic timeout learned from it, and the
//! prefetches that let a walk over many services overlap their misses.

use super::*;
use crate::prefetch::{prefetch_line, prefetch_range};

impl Service {
    /// Learns automatic timeouts with `algorithm` from now on.
    pub fn set_algorithm(&mut self, algorithm: Algorithm) {
        if self.algorithm != algorithm {
            self.algorithm = algorithm;
            self.relearn();
        }
    }

    /// Recomputes the learned timeout after the history or the mode changed.
    pub(super) fn relearn(&mut self) {
        self.auto_ms = if self.timeout == TIMEOUT_AUTO && self.history_len > 0 {
            u32::try_from(self.algorithm.timeout(self.intervals()).max(0)).unwrap_or(NO_AUTO - 1)
        } else {
            NO_AUTO
        };
    }

    /// Appends one interval to the ring, dropping the oldest when full.
    pub(super) fn push_interval(&mut self, v: u32) {
        let len = usize::from(self.history_len);
        if len < self.history.len() {
            self.history[len] = v;
            self.history_len += 1;
        } else if len < HISTORY_LEN {
            let cap = history_capacity(len + 1);
            let mut grown = vec![0u32; cap].into_boxed_slice();
            grown[..len].copy_from_slice(&self.history[..len]);
            grown[len] = v;
            self.history = grown;
            self.history_len += 1;
        } else {
            let head = usize::from(self.history_head);
            self.history[head] = v;
            self.history_head = ((head + 1) % HISTORY_LEN) as u8;
        }
    }

    /// Replaces the history (oldest first), keeping the last `HISTORY_LEN`.
    /// Takes the vector's memory as the ring when its capacity is the
    /// ring's ([`history_capacity`]), as the database loader makes it: one
    /// allocation per service for a million loaded at start.
    pub fn set_history(&mut self, mut intervals: Vec<u32>) {
        if intervals.len() > HISTORY_LEN {
            intervals.drain(..intervals.len() - HISTORY_LEN);
        }
        let len = intervals.len();
        let cap = history_capacity(len);
        if intervals.capacity() != cap {
            let mut exact = Vec::with_capacity(cap);
            exact.extend_from_slice(&intervals);
            intervals = exact;
        }
        intervals.resize(cap, 0);
        self.history = intervals.into_boxed_slice();
        // `len` ≤ HISTORY_LEN = 100 fits a u8.
        self.history_len = len as u8;
        self.history_head = 0;
        self.relearn();
    }

    /// Starts loading the memory this service points to (its intervals and
    /// job fields) without waiting for it. A walk over many services, such
    /// as a save copying a shard under its lock, calls it a few services
    /// ahead, so their cache misses overlap instead of adding up.
    #[inline]
    pub fn prefetch_out_of_line(&self) {
        let bytes = usize::from(self.history_len) * std::mem::size_of::<u32>();
        prefetch_range(self.history.as_ptr().cast(), bytes);
        if let Some(ext) = &self.job {
            prefetch_line((&**ext as *const JobExt).cast());
        }
    }

    /// Starts loading what the next accepted beat touches out of line: the
    /// history slot it writes and, for an auto service, the intervals it
    /// learns from. Ingestion calls it a few lines ahead of applying a beat.
    #[inline]
    pub fn prefetch_beat(&self) {
        if self.timeout == TIMEOUT_AUTO {
            self.prefetch_out_of_line();
            return;
        }
        let next = if usize::from(self.history_len) < HISTORY_LEN {
            usize::from(self.history_len)
        } else {
            usize::from(self.history_head)
        };
        if next < self.history.len() {
            prefetch_line(self.history[next..].as_ptr().cast());
        }
    }

    /// The beat intervals, oldest first.
    pub fn intervals(&self) -> impl DoubleEndedIterator<Item = u32> + ExactSizeIterator + '_ {
        let stored = &self.history[..usize::from(self.history_len)];
        let (newer, older) = stored.split_at(usize::from(self.history_head));
        older.iter().chain(newer.iter()).copied().exact()
    }

    /// The timeout that was in force for each interval of `history`: what
    /// the algorithm learned from the intervals before it (none before the
    /// first), so a chart can draw the learned timeout as a step line
    /// against the intervals.
    pub(super) fn learned_timeouts(&self, history: &[u32]) -> Vec<Option<i64>> {
        (0..history.len())
            .map(|i| (i > 0).then(|| self.algorithm.timeout(history[..i].iter().copied())))
            .collect()
    }
}

/// The ring a history of `len` intervals lives in: 4, 8, 16, ... slots as
/// it grows, and never more than `HISTORY_LEN`.
pub fn history_capacity(len: usize) -> usize {
    match len {
        0 => 0,
        n => n.next_power_of_two().clamp(4, HISTORY_LEN),
    }
}

/// `chain` is not `ExactSizeIterator`; this adapter restores the length,
/// which the auto algorithm uses to skip to its window without allocating.
trait Exact: Iterator + Sized {
    fn exact(self) -> ExactChain<Self> {
        ExactChain(self)
    }
}
impl<I: Iterator> Exact for I {}

/// An iterator of known exact length (see `Exact`).
pub struct ExactChain<I>(I);

impl<I: Iterator> Iterator for ExactChain<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}
impl<I: DoubleEndedIterator> DoubleEndedIterator for ExactChain<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        self.0.next_back()
    }
}
// Chained slice iterators report an exact size_hint.
impl<I: Iterator> ExactSizeIterator for ExactChain<I> {}
