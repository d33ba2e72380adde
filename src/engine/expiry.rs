//! Deadlines: the timer wheel that holds them and the task that expires
//! them.
//!
//! A service's next wake time (its deadline, the end of a snooze, a run's
//! `max_runtime`) goes into the wheel only when it moves earlier than the
//! entry already there (lazy re-arming): a beat that pushes the deadline
//! later touches no wheel, and the old entry, when it fires, finds the
//! service not due and arms the later time instead.

use std::sync::MutexGuard;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::service::{Name, Service, NOT_ARMED};
use super::wheel::{self, Wheel};
use super::Engine;
use crate::clock::now_ms;

/// The wheel and the time its driver will next wake, kept under one lock so
/// an insert can tell whether the driver must be woken early.
pub(super) struct Timers {
    wheel: Wheel<Name>,
    /// When the driver wakes next (`i64::MAX`: not before notified).
    next_wake: i64,
}

impl Timers {
    /// Empty timers whose clock starts at `now`.
    pub(super) fn new(now: i64) -> Timers {
        Timers {
            wheel: Wheel::new(now.max(0) as u64),
            next_wake: i64::MAX,
        }
    }
}

impl Engine {
    /// Puts the service's next wake time in the wheel unless an entry at or
    /// before it is live already.
    pub(super) fn arm(&self, key: &Name, svc: &mut Service, now: i64) {
        let Some(deadline) = svc.next_wake() else {
            return;
        };
        if deadline >= svc.armed {
            return;
        }
        let at = deadline.min(now.saturating_add(wheel::MAX_AHEAD as i64));
        svc.armed = at;
        let mut timers = self.timers();
        timers.wheel.insert(at.max(0) as u64, key.clone());
        if at < timers.next_wake {
            timers.next_wake = at;
            self.inner.wake.notify_one();
        }
    }

    fn timers(&self) -> MutexGuard<'_, Timers> {
        // A panic while holding this lock would be a bug in the wheel; the
        // data stays consistent enough to keep going, so ignore poisoning.
        self.inner.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles a wheel entry for `key` armed at `when`.
    fn expire(&self, key: &Name, when: i64, now: i64) {
        let Some(mut guard) = self.inner.services.get_mut(&**key) else {
            return;
        };
        if guard.armed != when {
            return; // superseded by an earlier entry
        }
        guard.armed = NOT_ARMED;
        let before = guard.state;
        self.settle(key, &mut guard, before, false, now);
    }

    /// Drives the timer wheel until `stop` is cancelled: sleeps until the
    /// next deadline (or an earlier one is armed) and expires what is due.
    /// Calls `alive` at start and every `alive_every` after, from this loop,
    /// so whoever watches it (the `[[notify]]` peers) hears from the engine
    /// only while its driver really runs.
    pub async fn run_expiry(
        self,
        stop: CancellationToken,
        alive_every: Duration,
        mut alive: impl FnMut(),
    ) {
        let mut due = Vec::new();
        let mut next_alive = tokio::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                return;
            }
            if tokio::time::Instant::now() >= next_alive {
                alive();
                // From now, not from when it was due: a driver held up for
                // minutes reports once, not once per minute missed.
                next_alive = tokio::time::Instant::now() + alive_every;
            }
            let wake = {
                let mut timers = self.timers();
                let wake = timers.wheel.next_wake().map_or(i64::MAX, |t| t as i64);
                timers.next_wake = wake;
                wake
            };
            let now = now_ms();
            if wake > now {
                let nap = if wake == i64::MAX {
                    Duration::MAX
                } else {
                    Duration::from_millis((wake - now) as u64)
                };
                let until_alive = next_alive.saturating_duration_since(tokio::time::Instant::now());
                tokio::select! {
                    _ = tokio::time::sleep(nap.min(until_alive)) => {}
                    _ = self.inner.wake.notified() => continue,
                    _ = stop.cancelled() => return,
                }
                if now_ms() < wake {
                    continue; // woke to report, nothing is due yet
                }
            }
            self.tick_with_clock(now_ms(), &mut due, now_ms);
        }
    }

    /// Expires everything due at `now`. For tests that drive time
    /// themselves.
    #[cfg(test)]
    pub(crate) fn tick(&self, now: i64, due: &mut Vec<(u64, Name)>) {
        self.tick_with_clock(now, due, || now);
    }

    /// Expires everything due at `now`, stamping each change with `clock()`
    /// read every 256 services, so a long batch records when each change
    /// really happened.
    fn tick_with_clock(&self, now: i64, due: &mut Vec<(u64, Name)>, clock: impl Fn() -> i64) {
        self.timers().wheel.advance(now.max(0) as u64, due);
        let mut stamp = now;
        for (i, (when, key)) in due.drain(..).enumerate() {
            if i % 256 == 255 {
                stamp = clock().max(now);
            }
            self.expire(&key, when as i64, stamp);
        }
    }
}
