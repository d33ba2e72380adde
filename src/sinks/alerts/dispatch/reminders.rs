//! Reminders (`repeat`): while an alarm stays ERROR, each of its alerts
//! is told again every `repeat`, until the alarm recovers, starts
//! flapping, or is held by a dependency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::time::delay_queue::{self, DelayQueue};

use super::Timed;

/// The reminders armed, one per alarm and alert.
#[derive(Default)]
pub(super) struct Reminders {
    /// (alarm, alert) → its armed timer in the dispatcher's queue: at most
    /// one per pair (arming again replaces it), and none for an alarm
    /// that is not ERROR in the incident it was armed for (its recovery
    /// or hold [`Reminders::stop`]s them).
    armed: HashMap<(Arc<str>, Arc<str>), delay_queue::Key>,
}

impl Reminders {
    /// Arms reminder `n` of `alert` for `alarm`, `every` from now,
    /// replacing one armed before.
    pub(super) fn arm(
        &mut self,
        timers: &mut DelayQueue<Timed>,
        alarm: Arc<str>,
        alert: Arc<str>,
        incident: u64,
        n: u32,
        every: Duration,
    ) {
        let key = timers.insert(
            Timed::Reminder {
                alarm: alarm.clone(),
                alert: alert.clone(),
                incident,
                n,
                every,
            },
            every,
        );
        if let Some(old) = self.armed.insert((alarm, alert), key) {
            timers.try_remove(&old);
        }
    }

    /// Stops every reminder of `alarm` (it recovered, or is held).
    pub(super) fn stop(&mut self, timers: &mut DelayQueue<Timed>, alarm: &Arc<str>) {
        if self.armed.is_empty() {
            return;
        }
        let keys: Vec<(Arc<str>, Arc<str>)> = self
            .armed
            .keys()
            .filter(|(a, _)| a == alarm)
            .cloned()
            .collect();
        for k in keys {
            if let Some(key) = self.armed.remove(&k) {
                timers.try_remove(&key);
            }
        }
    }

    /// The reminder of `alarm` for `alert` fired: its timer is gone.
    pub(super) fn fired(&mut self, alarm: &Arc<str>, alert: &Arc<str>) {
        self.armed.remove(&(alarm.clone(), alert.clone()));
    }

    /// Forgets every reminder (the queue was cleared at shutdown).
    pub(super) fn clear(&mut self) {
        self.armed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reminders that expire within `within`, as (alarm, n).
    async fn expired(
        timers: &mut DelayQueue<Timed>,
        within: Duration,
    ) -> Vec<(Arc<str>, Arc<str>, u32)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = std::future::poll_fn(|cx| timers.poll_expired(cx));
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Some(t)) => {
                    if let Timed::Reminder {
                        alarm, alert, n, ..
                    } = t.into_inner()
                    {
                        out.push((alarm, alert, n));
                    }
                }
                Ok(None) | Err(_) => return out,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reminder_repeats_and_stops_on_recovery() {
        let minute = Duration::from_secs(60);
        let mut timers = DelayQueue::new();
        let mut r = Reminders::default();
        let (web, ops): (Arc<str>, Arc<str>) = ("web".into(), "ops".into());
        r.arm(&mut timers, web.clone(), ops.clone(), 7, 1, minute);
        // Nothing before `repeat`, then reminder 1.
        assert!(expired(&mut timers, minute - Duration::from_millis(1))
            .await
            .is_empty());
        let got = expired(&mut timers, Duration::from_millis(1)).await;
        assert_eq!(got, [(web.clone(), ops.clone(), 1)]);
        // The dispatcher arms the next as it sends one: it repeats.
        r.fired(&web, &ops);
        r.arm(&mut timers, web.clone(), ops.clone(), 7, 2, minute);
        let got = expired(&mut timers, minute).await;
        assert_eq!(got, [(web.clone(), ops.clone(), 2)]);
        r.fired(&web, &ops);
        r.arm(&mut timers, web.clone(), ops.clone(), 7, 3, minute);
        // Arming again replaces, never adds.
        r.arm(&mut timers, web.clone(), ops.clone(), 7, 3, minute);
        assert_eq!(timers.len(), 1);
        // The alarm recovers: no reminder comes, however long it is.
        tokio::time::advance(minute / 2).await;
        r.stop(&mut timers, &web);
        assert!(expired(&mut timers, minute * 60).await.is_empty());
    }
}
