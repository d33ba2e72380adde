//! The hot path allocates nothing: parsing a statsd line that names an
//! existing service and applying it, proven with a counting allocator.
//!
//! Only the measuring thread's allocations count: the test harness's own
//! thread may still be filing the test it just spawned while the loop runs
//! (CI once saw 4 such allocations on a loaded machine), and `apply_packet`
//! does all its work on the caller's thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use lovebeat::engine::{Change, Engine, EngineConfig, Timeout};
use lovebeat::ingest::{apply_packet, IngestStats};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set only on the thread whose hot path is measured. A const
    /// initializer, so reading it allocates nothing itself.
    static MEASURED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if MEASURED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator and only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: i64 = 1_700_000_000_000;

#[test]
fn beat_line_for_existing_service_allocates_nothing() {
    let engine = Engine::new(EngineConfig::default(), T0);
    let stats = IngestStats::default();
    let _events = engine.subscribe(); // a listening sink must not change this
    engine
        .change(
            "app.fixed",
            Change {
                beat: true,
                ..Change::timeout(Timeout::After(60_000))
            },
            T0,
        )
        .expect("valid");
    engine
        .change(
            "app.auto",
            Change {
                beat: true,
                ..Change::timeout(Timeout::Auto)
            },
            T0,
        )
        .expect("valid");
    // Fill the histories so the ring buffers have reached their final size.
    let mut now = T0;
    for _ in 0..101 {
        now += 1000;
        apply_packet(
            &engine,
            &stats,
            b"app.fixed.beat:1|c\napp.auto.autobeat:1|c\n",
            now,
        );
    }
    let packet = b"app.fixed.beat:1|c\napp.auto.beat:1|c|@0.5\napp.fixed.timeout:60|g\n";
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    MEASURED.with(|m| m.set(true));
    for i in 0..1000 {
        // Half rate limited, half accepted.
        apply_packet(&engine, &stats, packet, now + i * 500);
    }
    MEASURED.with(|m| m.set(false));
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations on the hot path");
    assert_eq!(stats.lines_dropped.load(Ordering::Relaxed), 0);
}
