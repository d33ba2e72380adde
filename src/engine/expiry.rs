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

/// Superseded entries allowed beyond the live ones before the wheel is
/// compacted.
const STALE_SLACK: usize = 4096;

/// The wheel and the time its driver will next wake, kept under one lock so
/// an insert can tell whether the driver must be woken early.
pub(super) struct Timers {
    wheel: Wheel<Name>,
    /// When the driver wakes next (`i64::MAX`: not before notified).
    next_wake: i64,
    /// Entries in the wheel.
    entries: usize,
    /// Of those, entries known to be superseded (their service armed an
    /// earlier one, or was deleted): they fire to no effect. When they
    /// outnumber the live ones (plus `STALE_SLACK`), the driver compacts
    /// the wheel, so a service holds one live entry however often its
    /// timeout changes, and memory stays in proportion to the services.
    stale: usize,
}

impl Timers {
    /// Empty timers whose clock starts at `now`.
    pub(super) fn new(now: i64) -> Timers {
        Timers {
            wheel: Wheel::new(now.max(0) as u64),
            next_wake: i64::MAX,
            entries: 0,
            stale: 0,
        }
    }

    fn needs_compaction(&self) -> bool {
        // `stale` may run ahead of `entries` for a moment (an entry taken
        // out to fire, then superseded before it does).
        self.stale > self.entries.saturating_sub(self.stale) + STALE_SLACK
    }
}

/// The deadline driver looks at the clocks at least this often.
const CLOCK_CHECK: Duration = Duration::from_secs(1);
/// How far the wall clock may drift from the monotonic one between two
/// looks before it counts as a jump.
const JUMP: Duration = Duration::from_secs(2);
/// How much longer than it meant to sleep the driver may have been gone
/// before it counts as a suspension.
const SUSPENDED: Duration = Duration::from_secs(5);

/// The wall and monotonic clocks as the driver last read them. Deadlines
/// are wall times (the API shows them), so a step of the wall clock (NTP,
/// an operator) or a suspension (a VM paused for an hour) would expire
/// every service at once; seen here, they are treated like a restart.
struct Clocks {
    wall: i64,
    mono: std::time::Instant,
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            wall: now_ms(),
            mono: std::time::Instant::now(),
        }
    }

    /// What happened since the last look, if the clocks say something did.
    fn gap(&mut self) -> Option<String> {
        let then = std::mem::replace(self, Clocks::now());
        let mono = self.mono.duration_since(then.mono);
        let wall = self.wall - then.wall;
        let drift = wall - mono.as_millis() as i64;
        if drift.unsigned_abs() > JUMP.as_millis() as u64 {
            Some(format!(
                "the wall clock jumped {} by {} s",
                if drift > 0 { "forward" } else { "back" },
                drift.unsigned_abs() / 1000
            ))
        } else if mono > CLOCK_CHECK + SUSPENDED {
            Some(format!(
                "lovebeat did not run for {} s (suspended, or starved of CPU)",
                mono.as_secs()
            ))
        } else {
            None
        }
    }
}

/// How soon expiry looks again at a closed gate (cluster mode).
const GATE_RETRY: Duration = Duration::from_millis(50);

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
        let superseded = svc.armed != NOT_ARMED;
        svc.armed = at;
        let mut timers = self.timers();
        timers.wheel.insert(at.max(0) as u64, key.clone());
        timers.entries += 1;
        timers.stale += usize::from(superseded);
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

    /// Counts a service's live entry as superseded (it was deleted).
    pub(super) fn disarm(&self, svc: &Service) {
        if svc.armed != NOT_ARMED {
            self.timers().stale += 1;
        }
    }

    /// Handles a wheel entry for `key` armed at `when`. Returns false for a
    /// stale entry (superseded, or its service deleted).
    fn expire(&self, key: &Name, when: i64, now: i64) -> bool {
        let Some(mut guard) = self.inner.services.get_mut(&**key) else {
            return false;
        };
        if guard.armed != when {
            return false;
        }
        guard.armed = NOT_ARMED;
        let before = guard.state;
        self.settle(key, &mut guard, before, false, now);
        true
    }

    /// Takes every entry out of the wheel, drops the stale ones and puts the
    /// live ones back. Run by the driver (so no deadline is advanced past
    /// meanwhile) when stale entries outnumber live ones; the timers' lock
    /// is held only to take and to put back, never while services are
    /// looked at.
    fn compact(&self) {
        let mut all = Vec::new();
        {
            let mut timers = self.timers();
            timers.wheel.drain_all(&mut all);
            timers.entries = timers.entries.saturating_sub(all.len());
        }
        let taken = all.len();
        all.retain(|(when, key)| {
            self.inner
                .services
                .get(&**key)
                .is_some_and(|s| s.armed == *when as i64)
        });
        let kept = all.len();
        let mut timers = self.timers();
        timers.stale = timers.stale.saturating_sub(taken - kept);
        timers.entries += kept;
        for (when, key) in all {
            timers.wheel.insert(when, key);
        }
        tracing::debug!(
            "timer wheel compacted: {} stale entries dropped",
            taken - kept
        );
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
        let mut clocks = Clocks::now();
        loop {
            if stop.is_cancelled() {
                return;
            }
            if let Some(gap) = clocks.gap() {
                tracing::warn!(
                    "{gap}: every service's deadline counts from now, as after a restart (beats sent meanwhile may have been lost)"
                );
                self.grant_grace(now_ms());
            }
            if tokio::time::Instant::now() >= next_alive {
                alive();
                // From now, not from when it was due: a driver held up for
                // minutes reports once, not once per minute missed.
                next_alive = tokio::time::Instant::now() + alive_every;
            }
            if self.timers().needs_compaction() {
                self.compact();
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
                    _ = tokio::time::sleep(nap.min(until_alive).min(CLOCK_CHECK)) => {}
                    _ = self.inner.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
                // Whatever woke it, the clocks are looked at before anything
                // expires: a wall clock that stepped during the sleep must
                // not expire everything it stepped over.
                continue;
            }
            if !self.expiry_allowed() {
                // Cluster mode: a lease this node relies on is past its
                // time (the node was paused, or cut from NATS), so what
                // this engine holds may be another node's now; nothing
                // expires until the partitions are let go or renewed.
                tokio::select! {
                    _ = tokio::time::sleep(GATE_RETRY) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            self.tick_with_clock(now_ms(), &mut due, now_ms);
        }
    }

    /// Gives every service that is not failing its restart grace (its
    /// deadline counts from `now`): after the clock jumped, or the process
    /// was not running for a while. Holds one shard's lock at a time.
    pub fn grant_grace(&self, now: i64) {
        for mut svc in self.inner.services.iter_mut() {
            if svc.state != super::State::Error {
                svc.restart_grace(now);
            }
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
        {
            let mut timers = self.timers();
            timers.wheel.advance(now.max(0) as u64, due);
            timers.entries = timers.entries.saturating_sub(due.len());
        }
        let mut stamp = now;
        let mut stale = 0;
        for (i, (when, key)) in due.drain(..).enumerate() {
            if i % 256 == 255 {
                stamp = clock().max(now);
            }
            stale += usize::from(!self.expire(&key, when as i64, stamp));
        }
        let compact = {
            let mut timers = self.timers();
            timers.stale = timers.stale.saturating_sub(stale);
            timers.needs_compaction()
        };
        if compact {
            self.compact();
        }
    }

    /// Entries in the timer wheel, and how many of them are superseded.
    pub fn timer_entries(&self) -> (usize, usize) {
        let t = self.timers();
        (t.entries, t.stale)
    }
}
