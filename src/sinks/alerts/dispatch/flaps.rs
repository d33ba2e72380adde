//! Flapping, as the dispatcher runs it: the [`Detector`] counts each
//! alarm's changes; this part keeps the timers that look again at a
//! flapping alarm until it settles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::time::delay_queue::{self, DelayQueue};

use super::Timed;
use crate::sinks::alerts::config::FlappingConfig;
use crate::sinks::alerts::flapping::{Detector, Verdict};

/// What a look at a flapping alarm found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Look {
    /// It settled: announce its final state.
    Settled,
    /// It still flaps: looked at again later (armed).
    Flapping,
    /// It is not flapping (any more): nothing to do.
    Quiet,
}

/// The flapping alarms and their checks.
pub(super) struct Flaps {
    /// Each alarm's recent changes, and whether it flaps.
    detector: Detector,
    /// Each flapping alarm's armed check: at most one per alarm, at the
    /// time its oldest counted change leaves the window.
    checks: HashMap<Arc<str>, delay_queue::Key>,
}

impl Flaps {
    /// Flapping as `[flapping]` configures it.
    pub(super) fn new(config: FlappingConfig) -> Flaps {
        Flaps {
            detector: Detector::new(config),
            checks: HashMap::new(),
        }
    }

    /// Counts `changes` of `alarm` at `ts` (ms).
    pub(super) fn change(&mut self, alarm: &Arc<str>, ts: i64, changes: usize) -> Verdict {
        self.detector.change(alarm, ts, changes)
    }

    /// Arms (or moves) `alarm`'s check for when its oldest change leaves
    /// the window, seen from `now` (ms).
    pub(super) fn schedule(&mut self, timers: &mut DelayQueue<Timed>, alarm: &Arc<str>, now: i64) {
        if let Some(at) = self.detector.next_check(alarm) {
            let wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0) + 1);
            if let Some(key) = self.checks.remove(alarm) {
                timers.try_remove(&key);
            }
            let key = timers.insert(Timed::FlapCheck(alarm.clone()), wait);
            self.checks.insert(alarm.clone(), key);
        }
    }

    /// `alarm`'s check fired at `now` (ms): did it settle? If it still
    /// flaps, the next check is armed.
    pub(super) fn look(
        &mut self,
        timers: &mut DelayQueue<Timed>,
        alarm: &Arc<str>,
        now: i64,
    ) -> Look {
        self.checks.remove(alarm);
        if self.detector.settle(alarm, now) {
            return Look::Settled;
        }
        if self.detector.is_flapping(alarm) {
            self.schedule(timers, alarm, now);
            return Look::Flapping;
        }
        Look::Quiet
    }

    /// Forgets every check (the queue was cleared at shutdown).
    pub(super) fn clear(&mut self) {
        self.checks.clear();
    }

    /// Forgets an alarm that no longer exists.
    pub(super) fn forget(&mut self, alarm: &str) {
        self.detector.forget(alarm);
    }

    /// Forgets the records of alarms that no longer exist or changed
    /// within no window.
    pub(super) fn prune(&mut self, now: i64, exists: impl Fn(&str) -> bool) {
        self.detector.prune(now, exists);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn flapping_starts_at_six_changes_in_ten_minutes_and_settles_at_two() {
        // The README's defaults: `start` 6 within a `window` of 10m,
        // settled when the changes within it fall to `stop` 2.
        let mut flaps = Flaps::new(FlappingConfig::default());
        let mut timers = DelayQueue::new();
        let web: Arc<str> = "web".into();
        let t0 = 1_000_000_000_000_i64;
        let start = tokio::time::Instant::now();
        let now = || t0 + i64::try_from(start.elapsed().as_millis()).unwrap_or(0);
        // A change a minute: the first five are announced, the sixth
        // starts flapping, the rest are held.
        let mut verdicts = Vec::new();
        for _ in 0..8 {
            verdicts.push(flaps.change(&web, now(), 1));
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        assert_eq!(verdicts[..5], [Verdict::Announce; 5]);
        assert_eq!(verdicts[5], Verdict::Start { changes: 6 });
        assert_eq!(verdicts[6..], [Verdict::Hold; 2]);
        flaps.schedule(&mut timers, &web, now());
        // It settles when only two of its changes are left in the window:
        // the last change was at 7 min, so at 15 min 8 (or a moment after).
        let mut looks = Vec::new();
        while let Some(t) = std::future::poll_fn(|cx| timers.poll_expired(cx)).await {
            let Timed::FlapCheck(alarm) = t.into_inner() else {
                continue;
            };
            looks.push((
                start.elapsed().as_secs(),
                flaps.look(&mut timers, &alarm, now()),
            ));
        }
        let settled = looks.iter().find(|(_, l)| *l == Look::Settled);
        assert_eq!(settled.map(|(at, _)| *at), Some(15 * 60), "{looks:?}");
        assert!(looks[..looks.len() - 1]
            .iter()
            .all(|(_, l)| *l == Look::Flapping));
        // Settled, a change is announced again.
        assert_eq!(flaps.change(&web, now(), 1), Verdict::Announce);
    }
}
