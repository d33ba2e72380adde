//! lovebeat's own trouble, made visible like any other failure (README,
//! "Watching lovebeat itself"): each part that can fail on its own (saves,
//! uploads, alert deliveries, the event log, the history, room for
//! services or for statsd TCP senders, the statsd UDP port) is a service
//! `lovebeat.self.<part>` that a failure puts in ERROR (with the reason as
//! its job output) and a success brings back to OK. They belong
//! to the built-in alarm [`crate::engine::SELF_ALARM`], which alerts through the alerts
//! named in `[self_alarm]` like any other alarm: a full disk reaches a
//! person, not only the log.

use std::sync::{Arc, Mutex};

use crate::engine::{Change, Engine, FailReport, Timeout, INTERNAL_PREFIX};

/// A part of lovebeat that can be in trouble on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Saving the database file.
    Save,
    /// Uploading it to S3.
    Upload,
    /// Delivering alerts.
    Alerts,
    /// Writing the event log.
    Eventlog,
    /// Room for new services and alarms (`[limits]`).
    Capacity,
    /// Opening or writing the history file.
    History,
    /// The statsd UDP port, which another process may share
    /// (`ingest::owners`).
    Udp,
    /// Room for statsd TCP senders (`[limits] max_tcp_connections`).
    Tcp,
    /// Publishing to NATS in cluster mode (`crate::cluster`).
    Cluster,
}

/// Every part.
const PARTS: [Part; 9] = [
    Part::Save,
    Part::Upload,
    Part::Alerts,
    Part::Eventlog,
    Part::Capacity,
    Part::History,
    Part::Udp,
    Part::Tcp,
    Part::Cluster,
];

impl Part {
    /// The service that stands for it.
    pub fn service(self) -> &'static str {
        match self {
            Part::Save => "lovebeat.self.save",
            Part::Upload => "lovebeat.self.upload",
            Part::Alerts => "lovebeat.self.alerts",
            Part::Eventlog => "lovebeat.self.eventlog",
            Part::Capacity => "lovebeat.self.capacity",
            Part::History => "lovebeat.self.history",
            Part::Udp => "lovebeat.self.udp",
            Part::Tcp => "lovebeat.self.tcp",
            Part::Cluster => "lovebeat.self.cluster",
        }
    }
}

/// Reports trouble to the engine; clone freely. Only a change of a part's
/// health reaches the engine, so reporting every success costs a lock.
#[derive(Clone)]
pub struct Trouble {
    engine: Engine,
    /// Each part's health as last reported (absent: never failed).
    failing: Arc<Mutex<std::collections::HashMap<Part, bool>>>,
}

impl Trouble {
    /// Reports to `engine`, starting from the parts' states it holds (a
    /// failure saved before a restart is cleared by the next success).
    pub fn new(engine: Engine) -> Trouble {
        let failing = PARTS
            .iter()
            .filter_map(|p| {
                let s = engine.service(p.service(), false)?;
                Some((*p, s.state == crate::engine::State::Error))
            })
            .collect();
        Trouble {
            engine,
            failing: Arc::new(Mutex::new(failing)),
        }
    }

    /// `part` failed: its service goes ERROR with `reason` as its output
    /// (each new reason is recorded, so the alert shows the latest).
    pub fn fail(&self, part: Part, reason: &str) {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part, true);
        let change = Change {
            timeout: Some(Timeout::None),
            fail: Some(FailReport {
                exit_code: None,
                output: reason.chars().take(2000).collect(),
            }),
            ..Change::default()
        };
        let name = part.service();
        debug_assert!(name.starts_with(INTERNAL_PREFIX));
        if let Err(e) = self.engine.change(name, change, crate::clock::now_ms()) {
            tracing::error!("cannot record lovebeat's own trouble ({reason}): {e}");
        }
    }

    /// `part` works: its service goes back to OK if it had failed.
    pub fn ok(&self, part: Part) {
        let was = self
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part, false);
        if was == Some(true) {
            let change = Change {
                timeout: Some(Timeout::None),
                beat: true,
                ..Change::default()
            };
            if let Err(e) = self
                .engine
                .change(part.service(), change, crate::clock::now_ms())
            {
                tracing::error!("cannot record that {} works again: {e}", part.service());
            }
        }
    }

    /// Whether `part` is failing as last reported.
    pub fn is_failing(&self, part: Part) -> bool {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&part)
            .copied()
            .unwrap_or(false)
    }
}

/// How often the room left for services is looked at.
const CAPACITY_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Puts `lovebeat.self.capacity` in ERROR while new names are being refused
/// at `[limits] max_services` or `max_alarms` (a check finds more refused
/// than the one before) or while any service waits for a place under
/// `max_alarms` to join its alarm (an orphan, SPEC §5: it stays ERROR as
/// long as one waits, with their count), and back to OK after a check that
/// finds neither.
pub async fn watch_capacity(trouble: Trouble, stop: tokio_util::sync::CancellationToken) {
    let mut last = trouble.engine.refused();
    let mut last_reason = String::new();
    let mut tick = tokio::time::interval(CAPACITY_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = trouble.engine.refused();
        let refused = (now.0 - last.0, now.1 - last.1);
        last = now;
        match capacity_reason(refused, trouble.engine.orphans()) {
            // A reason already recorded is not recorded again every check.
            Some(reason) if reason == last_reason && trouble.is_failing(Part::Capacity) => {}
            Some(reason) => {
                trouble.fail(Part::Capacity, &reason);
                last_reason = reason;
            }
            None => {
                trouble.ok(Part::Capacity);
                last_reason.clear();
            }
        }
    }
}

/// Why `lovebeat.self.capacity` is in ERROR after a check that found
/// `(services, alarms)` refused since the one before and `orphans`
/// services waiting for an alarm; `None` when it is not.
fn capacity_reason((services, alarms): (u64, u64), orphans: usize) -> Option<String> {
    let mut parts = Vec::new();
    if services > 0 || alarms > 0 {
        parts.push(format!(
            "[limits] reached: {services} new services and {alarms} alarm memberships refused in the last {} s",
            CAPACITY_CHECK.as_secs()
        ));
    }
    if orphans > 0 {
        parts.push(format!(
            "{orphans} services wait for a place under [limits] max_alarms to join their alarm (delete an alarm, or raise max_alarms and restart)"
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_keep_capacity_failing_with_their_count() {
        assert_eq!(capacity_reason((0, 0), 0), None);
        let r = capacity_reason((0, 0), 3).expect("failing");
        assert!(r.starts_with("3 services wait"), "{r}");
        let r = capacity_reason((1, 2), 3).expect("failing");
        assert!(r.contains("1 new services and 2 alarm memberships"), "{r}");
        assert!(r.contains("; 3 services wait"), "{r}");
    }
}
