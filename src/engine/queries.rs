//! The reads: what the API, the views and the saves ask of the engine.
//! Each holds a lock only briefly, and none calls back into the engine
//! while holding one.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::alarms::AlarmView;
use super::service::{Name, Service, ServiceView, State};
use super::{table, Engine};

impl Engine {
    /// One service as the API shows it.
    pub fn service(&self, name: &str, details: bool) -> Option<ServiceView> {
        self.inner
            .services
            .get(name)
            .map(|s| s.view(s.key(), details))
    }

    /// A service's state, if it exists: O(1), no copy (the history's
    /// start-up reconciliation asks it of every name it knows).
    pub fn service_state(&self, name: &str) -> Option<State> {
        self.inner.services.get(name).map(|s| s.state)
    }

    /// A service's state and the time it changed to it (`Some(None)`: no
    /// such service), without waiting for its shard's lock: `None` while
    /// the lock is held. What the history's writer reads when it catches
    /// up with changes it lost, and it must never wait on a lock whose
    /// holder may be waiting for the writer to take its queue.
    pub fn service_state_since(&self, name: &str) -> Option<Option<(State, i64)>> {
        match self.inner.services.try_get(name) {
            dashmap::try_result::TryResult::Present(s) => {
                Some(Some((s.state, s.last_state_change)))
            }
            dashmap::try_result::TryResult::Absent => Some(None),
            dashmap::try_result::TryResult::Locked => None,
        }
    }

    /// [`Engine::service_state_since`] for a listed alarm.
    pub fn alarm_state_since(&self, name: &str) -> Option<Option<(State, i64)>> {
        match self.inner.alarms.try_get(name) {
            dashmap::try_result::TryResult::Present(a) => {
                Some(a.listed.then_some((a.state, a.last_state_change)))
            }
            dashmap::try_result::TryResult::Absent => Some(None),
            dashmap::try_result::TryResult::Locked => None,
        }
    }

    /// A listed alarm's state, if it exists: O(1), no copy.
    pub fn alarm_state(&self, name: &str) -> Option<State> {
        self.inner
            .alarms
            .get(name)
            .filter(|a| a.listed)
            .map(|a| a.state)
    }

    /// Calls `f` for every service. Holds one shard's read lock at a time:
    /// keep `f` short and never call back into the engine from it.
    pub(crate) fn for_each_service(&self, mut f: impl FnMut(&Name, &Service)) {
        for r in self.inner.services.iter() {
            f(r.key(), r.value());
        }
    }

    /// Calls `f` once per shard with that shard's services, under the
    /// shard's read lock. For a save: `f` should only copy what it needs
    /// (cheap, sequential memory) and do slow work such as encoding after
    /// it returns, so the lock is held for as little of the save as
    /// possible. A save thread runs at low priority, and one that is
    /// descheduled while holding a lock stalls every beat to that shard.
    pub(crate) fn for_each_shard(
        &self,
        f: impl FnMut(&mut dyn Iterator<Item = (&Name, &Service)>),
    ) {
        table::for_each_shard(&self.inner.services, f);
    }

    /// The names of all services at this moment: a snapshot that holds no
    /// lock afterwards, for long walks (lists) that must not block
    /// ingestion.
    pub fn names(&self) -> Vec<Name> {
        let mut names = Vec::with_capacity(self.service_count());
        self.for_each_service(|name, _| names.push(name.clone()));
        names
    }

    /// Runs `f` on one service under its shard's read lock, briefly.
    #[cfg(test)]
    pub(crate) fn inspect<R>(&self, name: &str, f: impl FnOnce(&Name, &Service) -> R) -> Option<R> {
        self.inner.services.get(name).map(|s| f(s.key(), s.value()))
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.inner.services.len()
    }

    /// Services by state: `(ok, error, muted)`. O(1).
    pub fn state_counts(&self) -> (i64, i64, i64) {
        let c = &self.inner.counts;
        (
            c[State::Ok as usize].load(Ordering::Relaxed),
            c[State::Error as usize].load(Ordering::Relaxed),
            c[State::Muted as usize].load(Ordering::Relaxed),
        )
    }

    /// `(num_ok, num_error)` over all services, as `/api/status` counts. O(1).
    pub fn status(&self) -> (i64, i64) {
        let (ok, error, muted) = self.state_counts();
        (ok + muted, error)
    }

    /// `(num_ok, num_error)` over an alarm's services, or `None` if it is
    /// not listed. O(1).
    pub fn alarm_status(&self, name: &str) -> Option<(i64, i64)> {
        let a = self.inner.alarms.get(name)?;
        if !a.listed {
            return None;
        }
        let error = a.failed.len() as i64;
        Some((a.members as i64 - error, error))
    }

    /// Listed alarms by state: `(error, others)`. A walk of the alarms
    /// that copies nothing (`/metrics` asks on every scrape; [`Engine::alarms`]
    /// would copy every failed-services list).
    pub fn alarm_state_counts(&self) -> (usize, usize) {
        let (mut error, mut others) = (0, 0);
        for a in self.inner.alarms.iter().filter(|a| a.listed) {
            if a.state == State::Error {
                error += 1;
            } else {
                others += 1;
            }
        }
        (error, others)
    }

    /// The names of the `[alerts.<name>]` sections a listed alarm fires,
    /// or `None` if it is not listed. O(1).
    pub fn alarm_alerts(&self, name: &str) -> Option<Vec<String>> {
        let a = self.inner.alarms.get(name)?;
        if !a.listed {
            return None;
        }
        let defs = self.inner.matcher.defs();
        Some(
            a.def
                .and_then(|d| defs.get(d))
                .map_or_else(Vec::new, |d| d.alerts.clone()),
        )
    }

    /// The names of the listed alarms that depend on `name` (the websocket
    /// asks on every alarm state change, and sends their views later,
    /// coalesced: copying views here would copy failed lists per change).
    pub fn alarm_names_depending_on(&self, name: &str) -> Vec<Arc<str>> {
        self.inner
            .alarms
            .iter()
            .filter(|a| a.listed && a.depends_on.iter().any(|d| **d == *name))
            .map(|a| a.key().clone())
            .collect()
    }

    /// Every listed alarm.
    pub fn alarms(&self) -> Vec<AlarmView> {
        self.listed_views(|_| true)
    }

    /// Views of the listed alarms `keep` chooses, copied only for them.
    /// The suppression is added once the map's locks are let go (it looks
    /// other alarms up).
    fn listed_views(&self, keep: impl Fn(&super::alarms::Alarm) -> bool) -> Vec<AlarmView> {
        let views: Vec<AlarmView> = self
            .inner
            .alarms
            .iter()
            .filter(|a| a.listed && keep(a))
            .map(|a| a.view(a.key()))
            .collect();
        views
            .into_iter()
            .map(|v| self.with_suppression(v))
            .collect()
    }

    /// One listed alarm.
    pub fn alarm(&self, name: &str) -> Option<AlarmView> {
        let view = self
            .inner
            .alarms
            .get(name)
            .filter(|a| a.listed)
            .map(|a| a.view(a.key()))?;
        Some(self.with_suppression(view))
    }

    /// True when the alarm has members and every one is muted. O(1).
    pub fn alarm_all_muted(&self, name: &str) -> bool {
        self.inner
            .alarms
            .get(name)
            .is_some_and(|a| a.members > 0 && a.muted == a.members)
    }

    /// True when the alarm exists and is ERROR.
    pub(crate) fn alarm_in_error(&self, name: &str) -> bool {
        self.inner
            .alarms
            .get(name)
            .is_some_and(|a| a.listed && a.state == State::Error)
    }

    /// Fills `suppressed_by`: the alarms it depends on that are ERROR now;
    /// and `maintenance`: the windows open now that hold its alerts.
    /// Takes no lock of its own alarm, so call it with none held.
    pub(crate) fn with_suppression(&self, mut view: AlarmView) -> AlarmView {
        view.maintenance = self.maintenance().holding_alarm(
            &view.name,
            &view.failed_services,
            crate::clock::now_ms(),
        );
        view.suppressed_by = view
            .depends_on
            .iter()
            .filter(|d| self.alarm_in_error(d))
            .cloned()
            .collect::<Vec<Arc<str>>>();
        view
    }

    /// The names of an alarm's members at this moment: a snapshot that
    /// holds no lock afterwards, for an alarm's page, which views each
    /// member one at a time (a whole-table walk: off the runtime).
    pub fn alarm_member_names(&self, alarm: &str) -> Vec<Name> {
        let mut out = Vec::new();
        self.for_each_service(|name, svc| {
            if svc.alarms.binary_search_by(|a| (**a).cmp(alarm)).is_ok() {
                out.push(name.clone());
            }
        });
        out
    }

    /// The names of the listed alarms at this moment, for the list of
    /// alarms, which views each one at a time.
    pub fn alarm_names(&self) -> Vec<Arc<str>> {
        self.inner
            .alarms
            .iter()
            .filter(|a| a.listed)
            .map(|a| a.key().clone())
            .collect()
    }

    /// Every alarm including deleted ones (whose incident numbers are kept),
    /// for the database.
    pub(crate) fn stored_alarms(&self) -> Vec<(AlarmView, bool)> {
        self.inner
            .alarms
            .iter()
            .map(|a| (a.view(a.key()), a.listed))
            .collect()
    }
}
