//! Prefetching ahead of use: the CPU hint, and the pipeline that ingestion,
//! database restore and saves share.
//!
//! With a million services each record touched is a cache (and TLB) miss.
//! Work that walks many records knows which ones it will touch next, so it
//! asks for them a few records early, in stages that each need what the
//! previous one loaded (a table's control bytes, then the entry they point
//! to, then the memory the entry points to). The misses of consecutive
//! records then overlap instead of adding up.

/// A hint to load the cache line at `p`; never faults, whatever `p` is.
#[inline(always)]
pub fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that does not access memory
    // architecturally: it cannot fault, even on an invalid address.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to load every cache line of `len` bytes from `start` (the
/// first byte, every 64 after it, and the last, so a range that does not
/// start on a line boundary loses no line). Never faults.
#[inline(always)]
pub fn prefetch_range(start: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    for offset in (0..len).step_by(64).chain([len - 1]) {
        prefetch_line(start.wrapping_add(offset));
    }
}

/// Items waiting `N` steps between arriving and being applied, in arrival
/// order. Each [`Pipeline::push`] calls `stage(k, item)` for every waiting
/// item that is `k` steps from being applied, for each `k` in the stages
/// the caller names, then applies the oldest item once `N` are waiting.
/// The caller runs its first stage itself, as an item arrives.
pub struct Pipeline<T, const N: usize> {
    /// A ring whose oldest item is at `next`: the item at `next + k` is
    /// applied `k + 1` pushes from now.
    waiting: [Option<T>; N],
    next: usize,
}

impl<T, const N: usize> Default for Pipeline<T, N> {
    fn default() -> Self {
        Pipeline {
            waiting: std::array::from_fn(|_| None),
            next: 0,
        }
    }
}

impl<T, const N: usize> Pipeline<T, N> {
    /// Adds `item`; runs the stages `at` (each a distance in steps from
    /// being applied, below `N`) on the items at those distances, then
    /// applies the oldest item if the pipeline was full.
    #[inline(always)]
    pub fn push(
        &mut self,
        item: T,
        at: &[usize],
        mut stage: impl FnMut(usize, &T),
        apply: impl FnOnce(T),
    ) {
        for &k in at {
            if let Some(waiting) = &self.waiting[(self.next + k) % N] {
                stage(k, waiting);
            }
        }
        if let Some(oldest) = self.waiting[self.next].replace(item) {
            apply(oldest);
        }
        self.next = (self.next + 1) % N;
    }

    /// Applies what is still waiting, oldest first.
    pub fn finish(mut self, mut apply: impl FnMut(T)) {
        for i in 0..N {
            if let Some(item) = self.waiting[(self.next + i) % N].take() {
                apply(item);
            }
        }
    }
}

/// Applies `apply` to each of `items` in order while running `stage(k, x)`
/// on the item `k` places ahead, for each `k` in `at` (each below `N`):
/// the slice form of [`Pipeline`].
pub fn ahead<T, const N: usize>(
    items: impl IntoIterator<Item = T>,
    at: &[usize],
    mut first: impl FnMut(&T),
    mut stage: impl FnMut(usize, &T),
    mut apply: impl FnMut(T),
) {
    let mut pipeline = Pipeline::<T, N>::default();
    for item in items {
        first(&item);
        pipeline.push(item, at, &mut stage, &mut apply);
    }
    pipeline.finish(apply);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_applied_in_order_after_every_stage() {
        let mut log = Vec::new();
        let stages = std::cell::RefCell::new(Vec::new());
        ahead::<u32, 4>(
            0..10,
            &[2, 1],
            |x| stages.borrow_mut().push((*x, 4)),
            |k, x| stages.borrow_mut().push((*x, k)),
            |x| log.push(x),
        );
        assert_eq!(log, (0..10).collect::<Vec<_>>());
        let stages = stages.into_inner();
        // Every item but those too close to the end went through every
        // stage, in order of decreasing distance, before it was applied.
        for x in 0..10u32 {
            let seen: Vec<usize> = stages.iter().filter(|s| s.0 == x).map(|s| s.1).collect();
            let want: Vec<usize> = [4, 2, 1]
                .into_iter()
                .filter(|k| *k == 4 || x + (4 - *k as u32) < 10)
                .collect();
            assert_eq!(seen, want, "stages of {x}");
        }
    }

    #[test]
    fn fewer_items_than_the_pipeline_holds_are_all_applied() {
        let mut log = Vec::new();
        ahead::<u32, 8>(0..3, &[4], |_| {}, |_, _| {}, |x| log.push(x));
        assert_eq!(log, vec![0, 1, 2]);
    }

    #[test]
    fn prefetching_any_address_is_harmless() {
        prefetch_line(std::ptr::null());
        prefetch_range(usize::MAX as *const u8, 256);
        prefetch_range(std::ptr::null(), 0);
    }
}
