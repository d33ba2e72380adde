//! The lossless event feeds, for the event log (README promises it holds
//! every state change) and the history store (`history/`): one queue per
//! [`Feed`], each taken by its own writer.
//!
//! The broadcast in `events.rs` is for views: a subscriber that falls
//! behind loses the oldest events, which a browser can afford and a log
//! cannot. The journal is a bounded queue instead: when it is full, the
//! engine waits for the writer (backpressure: a burst of a hundred
//! thousand new services is written, not dropped), but never longer than
//! [`MAX_WAIT`] in all. A writer that stalls that long (a hung disk) must
//! not stall ingestion with it: from then on events are counted instead
//! of queued until the writer has caught up to half the queue, and the
//! writer puts the count in the log where the gap is.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::events::{Event, EventKind};
use super::Engine;

/// Events waiting for the writer at most.
pub const CAPACITY: usize = 1 << 16;
/// Events a batch (a mass expiry) may queue beyond [`CAPACITY`] before it
/// waits for the writer: a million services expiring at once are all ERROR
/// within 200 ms of their deadline (issue 32) only if their state changes
/// do not wait for the history's writer, which takes seconds to write a
/// million rows. The queue then holds one event per expired service (about
/// 250 B each) until the writer has taken them. Past this bound a batch
/// waits for the writer as `Journal::push` does, and once the writer is
/// [`MAX_WAIT`] behind, events are counted as lost (the history then
/// catches the names up, `history::writer::Catchup::Gap`).
pub const BATCH_OVERSHOOT: usize = 1 << 20;
/// How long the engine waits for room before it counts events instead.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    /// Events counted instead of queued since the last batch taken.
    lost: u64,
    /// The writer fell [`MAX_WAIT`] behind: count, do not wait, until it
    /// has caught up to half the queue.
    overflowing: bool,
    /// No writer any more (it stopped): nothing waits for room.
    closed: bool,
}

/// The queue between the engine and the event log's writer.
#[derive(Default)]
pub struct Journal {
    queue: Mutex<Queue>,
    /// Rung when events are queued.
    filled: Condvar,
    /// Rung when the writer took events.
    drained: Condvar,
    /// Events lost, in all (`/metrics`): counted instead of queued, or
    /// taken by the writer and not written.
    lost: AtomicU64,
}

/// What the writer takes at once: events in order, and how many were lost
/// after them.
#[derive(Default)]
pub struct Batch {
    /// The events, oldest first.
    pub events: Vec<Arc<Event>>,
    /// Events lost after the last of them (0 normally).
    pub lost_after: u64,
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the event log keeps this kind (frequent updates it does
    /// not need are never queued).
    fn keeps(kind: &EventKind) -> bool {
        !matches!(
            kind,
            EventKind::ServiceUpdated(_) | EventKind::AlarmUpdated(_)
        )
    }

    /// Queues an event, waiting for room if the queue is full (see the
    /// module's doc for the bound).
    pub(super) fn push(&self, event: &Arc<Event>) {
        if !Self::keeps(&event.kind) {
            return;
        }
        let q = self.lock();
        drop(self.queue_one(q, event, CAPACITY));
        self.filled.notify_one();
    }

    /// Queues events in order under one lock and one wake-up of the writer
    /// (a mass expiry's, a shard at a time), waiting for room as `push`
    /// does only past [`BATCH_OVERSHOOT`] beyond the queue's capacity.
    pub(super) fn push_all(&self, events: &[Arc<Event>]) {
        let mut q = self.lock();
        for event in events.iter().filter(|e| Self::keeps(&e.kind)) {
            q = self.queue_one(q, event, CAPACITY + BATCH_OVERSHOOT);
        }
        drop(q);
        self.filled.notify_one();
    }

    /// Queues one event the log keeps, under the lock `q`: waits for room
    /// while the queue holds `limit` events (the writer is woken first, so
    /// it takes what waits), counts the event as lost once the writer is
    /// [`MAX_WAIT`] behind. Returns the lock.
    fn queue_one<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        event: &Arc<Event>,
        limit: usize,
    ) -> MutexGuard<'a, Queue> {
        if q.closed {
            return q;
        }
        if q.events.len() >= limit && !q.overflowing {
            self.filled.notify_one();
            let (guard, timeout) = self
                .drained
                .wait_timeout_while(q, MAX_WAIT, |q| {
                    q.events.len() >= limit && !q.overflowing && !q.closed
                })
                .unwrap_or_else(|e| e.into_inner());
            q = guard;
            if timeout.timed_out() && q.events.len() >= limit {
                q.overflowing = true;
                tracing::error!(
                    "the event log's writer is {} s behind: events are counted, not logged, until it catches up",
                    MAX_WAIT.as_secs()
                );
            }
        }
        if q.closed {
            return q;
        }
        if q.overflowing || q.events.len() >= limit {
            q.lost += 1;
            self.lost.fetch_add(1, Ordering::Relaxed);
            return q;
        }
        q.events.push_back(event.clone());
        q
    }

    /// Takes what is queued, waiting up to `wait` for something to come.
    pub fn take(&self, wait: Duration) -> Batch {
        let q = self.lock();
        let (mut q, _) = self
            .filled
            .wait_timeout_while(q, wait, |q| q.events.is_empty() && q.lost == 0)
            .unwrap_or_else(|e| e.into_inner());
        let batch = Batch {
            events: q.events.drain(..).collect(),
            lost_after: std::mem::take(&mut q.lost),
        };
        // A batch beyond the capacity (a mass expiry) grew the queue: its
        // room goes back, so memory stays in proportion to the capacity.
        if q.events.capacity() > 2 * CAPACITY {
            q.events.shrink_to(CAPACITY);
        }
        if q.overflowing && q.events.len() < CAPACITY / 2 {
            q.overflowing = false;
        }
        drop(q);
        self.drained.notify_all();
        batch
    }

    /// Events lost so far: counted instead of logged, or not written.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The writer took `events` but could not write them (a full disk):
    /// they are lost too, and `lovebeat_eventlog_lost_total` must say so.
    pub fn count_unwritten(&self, events: u64) {
        self.lost.fetch_add(events, Ordering::Relaxed);
    }

    /// The writer is gone: nothing waits for room any more.
    pub fn close(&self) {
        self.lock().closed = true;
        self.drained.notify_all();
    }
}

/// The writers that take a lossless feed of the engine's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The JSON event log (`sinks/eventlog.rs`).
    EventLog = 0,
    /// The history store (`history/`).
    History = 1,
}

/// How many feeds there are.
pub(super) const FEEDS: usize = 2;

impl Engine {
    /// Starts a lossless event feed (one per [`Feed`]). Events from now on
    /// are queued until taken.
    pub fn journal(&self, feed: Feed) -> Arc<Journal> {
        self.inner.journals[feed as usize]
            .get_or_init(Arc::default)
            .clone()
    }

    /// Events a feed lost: counted instead of queued, or not written (0
    /// without it).
    pub fn journal_lost(&self, feed: Feed) -> u64 {
        self.inner.journals[feed as usize]
            .get()
            .map_or(0, |j| j.lost())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> Arc<Event> {
        Arc::new(Event {
            ts: n,
            kind: EventKind::AlarmRemoved(crate::engine::AlarmView::standalone(
                "a",
                crate::engine::State::Ok,
                0,
                Vec::new(),
                0,
            )),
        })
    }

    #[test]
    fn a_burst_larger_than_the_queue_waits_for_the_writer_and_loses_nothing() {
        let j = Arc::new(Journal::default());
        let writer = {
            let j = j.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 3 * CAPACITY {
                    let b = j.take(Duration::from_millis(100));
                    assert_eq!(b.lost_after, 0);
                    seen.extend(b.events.iter().map(|e| e.ts));
                }
                seen
            })
        };
        for n in 0..(3 * CAPACITY) as i64 {
            j.push(&event(n));
        }
        let seen = writer.join().expect("writer");
        assert_eq!(seen, (0..(3 * CAPACITY) as i64).collect::<Vec<_>>());
        assert_eq!(j.lost(), 0);
    }

    #[test]
    fn a_stalled_writer_costs_one_wait_then_events_are_counted_where_they_went() {
        let j = Journal::default();
        for n in 0..CAPACITY as i64 {
            j.push(&event(n));
        }
        let start = std::time::Instant::now();
        j.push(&event(-1));
        assert!(start.elapsed() >= MAX_WAIT, "it waited for room first");
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            j.push(&event(-1));
        }
        assert!(
            start.elapsed() < MAX_WAIT,
            "overflowing: no more waiting ({:?})",
            start.elapsed()
        );
        let b = j.take(Duration::ZERO);
        assert_eq!((b.events.len(), b.lost_after), (CAPACITY, 1001));
        assert_eq!(j.lost(), 1001);
        // Caught up: queued again.
        j.push(&event(7));
        let b = j.take(Duration::ZERO);
        assert_eq!((b.events.len(), b.lost_after), (1, 0));
    }
}
