//! Loading a database into an empty engine at start, with the restart
//! grace (README, "Configuration"): beats sent while the daemon was down
//! were lost, so a service that was not failing gets its deadline counted
//! from the start, and one stored as ERROR stays ERROR with its alarms'
//! incidents unchanged.

use std::sync::Arc;

use super::alarms::Alarm;
use super::job::{self, JobRecord};
use super::service::{Name, Service, State};
use super::{table, Engine};
use crate::prefetch;

/// A service as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    /// Name, taken as it is.
    pub name: Name,
    /// Last accepted beat or -1.
    pub last_beat: i64,
    /// Timeout, as its wire number (ms or special).
    pub timeout: i64,
    /// State when saved.
    pub state: State,
    /// When muting began, 0 if not muted.
    pub muted_since: i64,
    /// Time of its latest state change.
    pub last_state_change: i64,
    /// Beat intervals, oldest first.
    pub beat_history: Vec<u32>,
    /// Job monitoring fields, if any are in use. Boxed: they are rare, and
    /// a million loaded records should not each carry their 200 bytes.
    pub job: Option<Box<JobRecord>>,
}

/// An alarm as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlarm {
    /// Alarm name.
    pub name: String,
    /// State when saved.
    pub state: State,
    /// Latest incident number.
    pub incident_nbr: u64,
    /// Time of its latest state change.
    pub last_state_change: i64,
    /// False if it had been deleted through the API.
    pub listed: bool,
    /// The state and incident its receivers last heard of; `None` in a
    /// database that does not say (1.x's), taken as what it is in.
    pub announced: Option<(State, u64)>,
}

/// How far ahead of its insert a record's place in the table is
/// prefetched: its control bytes on arrival, its bucket half way.
const AHEAD: usize = 16;

impl Engine {
    /// Loads a database into an empty engine at start, applying the restart
    /// grace: a service stored as ERROR stays ERROR; every other one counts
    /// its deadline from `now`. Alarms keep state and incident, and are
    /// evaluated once every member is in. Publishes no events.
    pub fn load(&self, services: Vec<StoredService>, stored_alarms: Vec<StoredAlarm>, now: i64) {
        let inner = &*self.inner;
        for a in stored_alarms {
            let mut alarm = Alarm::new(None, a.last_state_change);
            alarm.state = a.state;
            alarm.incident_nbr = a.incident_nbr;
            alarm.listed = a.listed;
            alarm.announced = a.announced.unwrap_or((a.state, a.incident_nbr));
            let listed = alarm.listed && super::alarms::takes_a_place(&a.name);
            if inner.alarms.insert(Arc::from(a.name), alarm).is_none() && listed {
                inner
                    .alarm_count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        table::reserve(&inner.services, services.len());
        // Each insert writes to a random place in a table of hundreds of
        // megabytes: a record's place is prefetched in two stages ahead of
        // its insert, so the cache misses of consecutive inserts overlap.
        let map = &inner.services;
        prefetch::ahead::<_, AHEAD>(
            services.into_iter().map(|s| (table::hash(map, &s.name), s)),
            &[AHEAD / 2],
            |(hash, _)| table::prefetch_control(map, *hash),
            |_, (hash, _)| table::prefetch_entry(map, *hash),
            |(_, s)| self.restore_service(s, now),
        );
        for mut a in inner.alarms.iter_mut() {
            let after = a.evaluate();
            if a.members > 0 && after != a.state {
                tracing::info!(
                    "alarm {} loaded as {}, its services make it {}",
                    a.key().escape_debug(),
                    a.state.as_upper(),
                    after.as_upper()
                );
                a.transition(after, now);
            }
        }
        self.announce_what_was_not(now);
    }

    /// Inserts one loaded service and counts it in its alarms.
    fn restore_service(&self, s: StoredService, now: i64) {
        let inner = &*self.inner;
        let (memberships, refused) = self.resolve_alarms(&s.name);
        let key = s.name;
        let mut svc = Service::new(
            now,
            s.timeout,
            memberships.iter().map(|(k, _)| k.clone()).collect(),
        );
        svc.last_beat = s.last_beat;
        svc.muted_since = s.muted_since;
        svc.set_algorithm(inner.algorithm);
        svc.set_history(s.beat_history);
        match s.job.as_deref().map(job::JobRecord::to_ext) {
            Some(Ok(Some(ext))) => svc.job = Some(Box::new(ext)),
            Some(Err(e)) => tracing::warn!(
                "service {}: ignoring its job settings: {e}",
                key.escape_debug()
            ),
            _ => {}
        }
        svc.restart_grace(now);
        let state = if s.state == State::Error && s.muted_since == 0 {
            State::Error
        } else {
            svc.evaluate(now)
        };
        svc.state = state;
        svc.last_state_change = if state == s.state {
            s.last_state_change
        } else {
            now
        };
        self.count(state, 1);
        for (alarm, def) in &memberships {
            let mut a = self.alarm_entry(alarm, *def, now);
            a.add_member(*def, || inner.matcher.dependencies(*def, &key), &key, state);
            self.set_listed(alarm, &mut a, true);
        }
        self.arm(&key, &mut svc, now);
        self.orphan(&key, &refused);
        inner.services.insert(key, svc);
    }
}
