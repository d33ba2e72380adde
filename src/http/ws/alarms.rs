//! The alarms' messages to the UI, coalesced: a change only marks its
//! alarm, and each tick sends one `UPDATE_ALARM` per marked alarm with its
//! state then, a big alarm's next one paced to `ALARM_BYTES_PER_SEC`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    alarm_msg, WsHub, ALARMS_BYTES_PER_SEC, ALARM_BYTES_PER_SEC, ALARM_MAX_HOLD, BEAT_COALESCE,
    CLIENT_QUEUE,
};
use crate::engine::{Engine, Event, EventKind};

/// The alarms whose `UPDATE_ALARM` an event calls for: the alarm itself,
/// and when it changed state, the alarms that depend on it, whose
/// `suppressed_by` (README, "Cron jobs and scripts") changed without an
/// event of their own. Alarms are few; this walks them only then.
pub(super) fn marks(engine: &Engine, event: &Event, updates: &mut AlarmUpdates) {
    match &event.kind {
        EventKind::AlarmUpdated(name) => updates.mark(name),
        EventKind::AlarmStateChanged { alarm, .. } => {
            updates.mark(&alarm.name);
            if engine
                .matcher()
                .defs()
                .iter()
                .any(|d| !d.depends_on.is_empty())
            {
                for name in engine.alarm_names_depending_on(&alarm.name) {
                    updates.mark(&name);
                }
            }
        }
        // Its REMOVE_ALARM goes at once; an update after it would bring it
        // back in the UI.
        EventKind::AlarmRemoved(a) => updates.forget(&a.name),
        _ => {}
    }
}

/// The alarms changed since the last tick, and the big ones whose next
/// message must wait: what makes an alarm cost one message per tick at
/// most, however many of its members change (SPEC §8), and a huge one no
/// more than `ALARM_BYTES_PER_SEC`.
#[derive(Default)]
pub(super) struct AlarmUpdates {
    /// Alarms changed since their last message; each gets one, with its
    /// state at the tick that sends it.
    changed: HashSet<Arc<str>>,
    /// Alarms whose last message was big, and when their next may go.
    /// Entries leave once their time has passed.
    held: HashMap<Arc<str>, Instant>,
    /// Bytes all alarms may still send, refilled at
    /// `ALARMS_BYTES_PER_SEC` up to one second's worth; never below
    /// `ALARM_MAX_HOLD` seconds' worth of debt.
    pub(super) budget: f64,
    /// When `budget` was last refilled.
    refilled: Option<Instant>,
}

impl AlarmUpdates {
    pub(super) fn mark(&mut self, name: &Arc<str>) {
        if !self.changed.contains(name) {
            self.changed.insert(name.clone());
        }
    }

    pub(super) fn forget(&mut self, name: &str) {
        self.changed.remove(name);
    }

    /// Drops every change: the clients were sent RESYNC and reload.
    pub(super) fn clear(&mut self) {
        self.changed.clear();
    }

    /// The changed alarms whose message may go at `now`, taken out.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Arc<str>> {
        self.held.retain(|_, until| *until > now);
        if self.held.is_empty() {
            return self.changed.drain().collect();
        }
        let held = &self.held;
        let due: Vec<Arc<str>> = self
            .changed
            .iter()
            .filter(|n| !held.contains_key(*n))
            .cloned()
            .collect();
        for n in &due {
            self.changed.remove(n);
        }
        due
    }

    /// Refills the shared budget for the time since the last refill, and
    /// says whether any is left to send with.
    pub(super) fn refill(&mut self, now: Instant) -> bool {
        let rate = ALARMS_BYTES_PER_SEC as f64;
        let elapsed = self
            .refilled
            .map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.refilled = Some(now);
        self.budget = (self.budget + elapsed * rate).min(rate);
        self.budget > 0.0
    }

    /// Puts a due alarm back: the budget ran out before its turn.
    pub(super) fn defer(&mut self, name: Arc<str>) {
        self.changed.insert(name);
    }

    /// A message of `bytes` went for `name` at `now`: a big one holds the
    /// alarm's next message for as long as it takes at the paced rate, and
    /// every message spends the shared budget.
    pub(super) fn sent(&mut self, name: &Arc<str>, bytes: usize, now: Instant) {
        let floor = -(ALARMS_BYTES_PER_SEC as f64) * ALARM_MAX_HOLD.as_secs_f64();
        self.budget = (self.budget - bytes as f64).max(floor);
        let hold = Duration::from_secs_f64(bytes as f64 / ALARM_BYTES_PER_SEC as f64);
        if hold > BEAT_COALESCE {
            self.held
                .insert(name.clone(), now + hold.min(ALARM_MAX_HOLD));
        }
    }
}

/// Sends the alarms `updates` says are due, each with its state now.
pub(super) fn send_alarm_updates(hub: &WsHub, engine: &Engine, updates: &mut AlarmUpdates) {
    let now = Instant::now();
    let due = updates.due(now);
    if due.len() > CLIENT_QUEUE {
        // More than a client may queue: each would get RESYNC anyway.
        hub.resync_all();
        updates.clear();
        return;
    }
    let mut left = updates.refill(now);
    for name in due {
        if !left {
            updates.defer(name);
            continue;
        }
        // An alarm deleted since its change has sent its REMOVE_ALARM.
        if let Some(msg) = engine
            .alarm(&name)
            .and_then(|a| alarm_msg("UPDATE_ALARM", &a))
        {
            updates.sent(&name, msg.len(), now);
            hub.broadcast(&msg);
            left = updates.budget > 0.0;
        }
    }
}
