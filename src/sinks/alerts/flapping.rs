//! Flap detection (`[flapping]`), as Nagios does it with two thresholds
//! for hysteresis, on a window of time: an alarm whose changes within
//! `window` reach `start` is flapping; it settles when they fall to `stop`.
//! While it flaps its changes are not announced one by one: the
//! dispatcher sends one notice when it starts and one, in its final
//! state, when it settles.
//!
//! Memory is bounded per alarm: changes close together share one entry
//! (a bucket of `window / BUCKETS`), so an alarm flipping a thousand times
//! a second holds [`BUCKETS`] entries at most, and an alarm's record is
//! dropped once its window is empty.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::config::FlappingConfig;

/// Entries an alarm's window is cut into at most.
pub(super) const BUCKETS: i64 = 64;

/// What to do with one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Announce it as usual.
    Announce,
    /// The alarm starts flapping with this change: announce that instead.
    Start {
        /// Changes counted in the window.
        changes: usize,
    },
    /// The alarm is flapping: say nothing.
    Hold,
}

#[derive(Debug, Default)]
struct Record {
    /// (time of the latest change in the bucket, changes in it), oldest
    /// first.
    changes: VecDeque<(i64, usize)>,
    total: usize,
    flapping: bool,
}

impl Record {
    fn forget_before(&mut self, cutoff: i64) {
        while let Some(&(ts, n)) = self.changes.front() {
            if ts > cutoff {
                break;
            }
            self.changes.pop_front();
            self.total -= n;
        }
    }
}

/// The alarms' recent changes.
#[derive(Debug)]
pub(super) struct Detector {
    config: FlappingConfig,
    alarms: HashMap<Arc<str>, Record>,
}

impl Detector {
    pub(super) fn new(config: FlappingConfig) -> Detector {
        Detector {
            config,
            alarms: HashMap::new(),
        }
    }

    fn window(&self) -> i64 {
        i64::try_from(self.config.window.ms).unwrap_or(i64::MAX)
    }

    /// `changes` changes of `alarm` at `ts` (more than one when the engine
    /// merged some).
    pub(super) fn change(&mut self, alarm: &Arc<str>, ts: i64, changes: usize) -> Verdict {
        if !self.config.enabled {
            return Verdict::Announce;
        }
        let window = self.window();
        let bucket = (window / BUCKETS).max(1);
        let rec = self.alarms.entry(alarm.clone()).or_default();
        rec.forget_before(ts.saturating_sub(window));
        match rec.changes.back_mut() {
            Some((last, n)) if ts.saturating_sub(*last) < bucket => {
                *last = (*last).max(ts);
                *n += changes;
            }
            _ => rec.changes.push_back((ts, changes)),
        }
        rec.total += changes;
        if rec.flapping {
            Verdict::Hold
        } else if rec.total >= self.config.start {
            rec.flapping = true;
            Verdict::Start { changes: rec.total }
        } else {
            Verdict::Announce
        }
    }

    /// Forgets the records of alarms `keep` rejects (deleted ones), and of
    /// alarms that are not flapping and changed within no window, so the
    /// records are bounded by the alarms that changed lately.
    pub(super) fn prune(&mut self, now: i64, keep: impl Fn(&str) -> bool) {
        let since = now.saturating_sub(self.window());
        self.alarms.retain(|alarm, rec| {
            keep(alarm)
                && (rec.flapping || rec.changes.back().is_some_and(|(last, _)| *last >= since))
        });
    }

    /// When a flapping alarm should be looked at again: its oldest
    /// counted change leaves the window then.
    pub(super) fn next_check(&self, alarm: &str) -> Option<i64> {
        let rec = self.alarms.get(alarm)?;
        let (oldest, _) = rec.changes.front()?;
        Some(oldest.saturating_add(self.window()))
    }

    /// Looks at `alarm` at `now`: true when it was flapping and has
    /// settled (its changes in the window are down to `stop`).
    pub(super) fn settle(&mut self, alarm: &str, now: i64) -> bool {
        let window = self.window();
        let stop = self.config.stop;
        let Some(rec) = self.alarms.get_mut(alarm) else {
            return false;
        };
        rec.forget_before(now.saturating_sub(window));
        let settled = rec.flapping && rec.total <= stop;
        if settled {
            rec.flapping = false;
        }
        if !rec.flapping && rec.changes.is_empty() {
            self.alarms.remove(alarm);
        }
        settled
    }

    /// Whether `alarm` is flapping now.
    pub(super) fn is_flapping(&self, alarm: &str) -> bool {
        self.alarms.get(alarm).is_some_and(|r| r.flapping)
    }

    /// Forgets an alarm that no longer exists.
    pub(super) fn forget(&mut self, alarm: &str) {
        self.alarms.remove(alarm);
    }

    /// The changes `alarm`'s record holds (for tests of its bound).
    #[cfg(test)]
    fn entries(&self, alarm: &str) -> usize {
        self.alarms.get(alarm).map_or(0, |r| r.changes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::duration::DurationSetting;

    fn detector() -> Detector {
        Detector::new(FlappingConfig {
            enabled: true,
            window: DurationSetting { ms: 600_000 },
            start: 6,
            stop: 2,
        })
    }

    #[test]
    fn a_thousand_toggles_start_flapping_once_and_settle_once() {
        let mut d = detector();
        let a: Arc<str> = "a".into();
        let mut verdicts = Vec::new();
        for i in 0..1000 {
            verdicts.push(d.change(&a, 1_000_000 + i * 10, 1));
        }
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Announce));
        assert_eq!(verdicts[5], Verdict::Start { changes: 6 });
        assert!(verdicts[6..].iter().all(|v| *v == Verdict::Hold));
        assert!(d.entries("a") <= BUCKETS as usize + 1, "{}", d.entries("a"));
        // Still flapping while the changes are in the window.
        let last = 1_000_000 + 999 * 10;
        assert!(!d.settle("a", last + 1000));
        assert!(d.is_flapping("a"));
        let check = d.next_check("a").expect("a check is due");
        assert!(check > last && check <= last + 600_000 + 1, "{check}");
        assert!(d.settle("a", last + 600_001));
        assert!(!d.is_flapping("a"));
        // Settled once: the record is gone, a later look says nothing.
        assert!(!d.settle("a", last + 700_000));
        assert_eq!(d.entries("a"), 0);
    }

    #[test]
    fn changes_spread_wider_than_the_window_never_flap() {
        let mut d = detector();
        let a: Arc<str> = "a".into();
        for i in 0..100 {
            // Five changes every ten minutes and a bit.
            let v = d.change(&a, i * 130_000, 1);
            assert_eq!(v, Verdict::Announce, "change {i}");
        }
    }

    #[test]
    fn hysteresis_keeps_it_flapping_until_the_low_threshold() {
        let mut d = detector();
        let a: Arc<str> = "a".into();
        for i in 0..6 {
            d.change(&a, i * 60_000, 1);
        }
        assert!(d.is_flapping("a"));
        // Three changes left in the window (3 > stop 2): still flapping.
        assert!(!d.settle("a", 3 * 60_000 + 600_000 - 1));
        assert!(d.settle("a", 3 * 60_000 + 600_000));
    }

    #[test]
    fn records_of_quiet_and_deleted_alarms_are_pruned() {
        let mut d = detector();
        let (quiet, busy, gone): (Arc<str>, Arc<str>, Arc<str>) =
            ("quiet".into(), "busy".into(), "gone".into());
        d.change(&quiet, 0, 1);
        for i in 0..6 {
            d.change(&busy, i, 1);
        }
        d.change(&gone, 700_000, 1);
        d.prune(700_001, |a| a != "gone");
        assert_eq!(d.entries("quiet"), 0, "no change within the window");
        assert!(d.is_flapping("busy"), "a flapping alarm keeps its record");
        assert_eq!(d.entries("gone"), 0, "a deleted alarm's record goes");
    }

    #[test]
    fn merged_changes_count_and_disabled_announces_everything() {
        let mut d = detector();
        let a: Arc<str> = "a".into();
        assert_eq!(d.change(&a, 0, 7), Verdict::Start { changes: 7 });
        let mut off = Detector::new(FlappingConfig {
            enabled: false,
            ..FlappingConfig::default()
        });
        for i in 0..100 {
            assert_eq!(off.change(&a, i, 1), Verdict::Announce);
        }
    }
}
