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

/// How a stored service comes into the engine, which decides what its
/// deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// A load at start: beats sent while lovebeat was down were lost, so
    /// the deadline counts from now (the restart grace), and a service
    /// stored ERROR stays so.
    Restart,
    /// A cluster handover: the beats of the handover waited in the stream
    /// and were replayed, so the deadline counts from the real last beat.
    Handover,
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

/// What a load took in, and what it merged: a file made by concatenating
/// two databases (`cat old.db new.db > lovebeat.db`: the loader reads
/// every gzip member) holds some services and alarms twice. Loaded twice,
/// a service counted twice in the status and in its alarms, and its
/// alarm stayed ERROR for ever once it was deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Services in the engine after the load.
    pub services: usize,
    /// Service records dropped for a newer record of the same name.
    pub duplicate_services: usize,
    /// Alarm records dropped for a newer record of the same name.
    pub duplicate_alarms: usize,
}

/// How far ahead of its insert a record's place in the table is
/// prefetched: its control bytes on arrival, its bucket half way.
const AHEAD: usize = 16;

impl Engine {
    /// Loads a database into an empty engine at start, applying the restart
    /// grace: a service stored as ERROR stays ERROR; every other one counts
    /// its deadline from `now`. Alarms keep state and incident, and are
    /// evaluated once every member is in. Publishes no events.
    ///
    /// A name stored twice is loaded once: the newest record wins (a
    /// service's by its last beat, then its last state change; an alarm's
    /// by its last state change, then its incident number), and the
    /// merge is logged with its count.
    pub fn load(
        &self,
        services: Vec<StoredService>,
        stored_alarms: Vec<StoredAlarm>,
        now: i64,
    ) -> LoadReport {
        let inner = &*self.inner;
        let mut report = LoadReport::default();
        for a in stored_alarms {
            let mut alarm = Alarm::new(None, a.last_state_change);
            alarm.state = a.state;
            alarm.incident_nbr = a.incident_nbr;
            alarm.listed = a.listed;
            alarm.announced = a.announced.unwrap_or((a.state, a.incident_nbr));
            let takes = super::alarms::takes_a_place(&a.name);
            let listed = i64::from(alarm.listed && takes);
            let counted = match inner.alarms.entry(Arc::from(a.name)) {
                dashmap::Entry::Vacant(v) => {
                    v.insert(alarm);
                    listed
                }
                dashmap::Entry::Occupied(mut o) => {
                    report.duplicate_alarms += 1;
                    let old = o.get();
                    let was = i64::from(old.listed && takes);
                    if (alarm.last_state_change, alarm.incident_nbr)
                        < (old.last_state_change, old.incident_nbr)
                    {
                        continue;
                    }
                    o.insert(alarm);
                    listed - was
                }
            };
            if counted > 0 {
                inner
                    .alarm_count
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else if counted < 0 {
                inner
                    .alarm_count
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
            |(_, s)| {
                if self.restore_service(s, now) {
                    report.duplicate_services += 1;
                }
            },
        );
        report.services = inner.services.len();
        if report.duplicate_services + report.duplicate_alarms > 0 {
            tracing::warn!(
                "the database held {} service and {} alarm records of names already loaded (two databases concatenated?): kept the newest record of each name",
                report.duplicate_services,
                report.duplicate_alarms
            );
        }
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
        report
    }

    /// Inserts one loaded service and counts it in its alarms. A record
    /// of a name already loaded replaces that one if it is newer (its
    /// last beat, then its last state change) and is dropped if not:
    /// either way the name is counted once. True for such a record.
    fn restore_service(&self, s: StoredService, now: i64) -> bool {
        let inner = &*self.inner;
        let older = inner
            .services
            .get(s.name.as_str())
            .map(|old| (s.last_beat, s.last_state_change) < (old.last_beat, old.last_state_change));
        match older {
            None => {}
            Some(true) => return true,
            Some(false) => self.unload_service(&s.name),
        }
        self.insert_stored(s, now, Arrival::Restart);
        older.is_some()
    }

    /// Puts a stored service into the engine as `arrival` says, and into
    /// its counts, alarms and timers: the one way a record becomes a live
    /// service, for a load at start and for a cluster handover alike.
    pub(super) fn insert_stored(&self, s: StoredService, now: i64, arrival: Arrival) {
        let inner = &*self.inner;
        let (memberships, refused) = self.resolve_alarms(&s.name);
        let key = s.name;
        let mut svc = Service::new(
            s.last_state_change,
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
        svc.state = match arrival {
            Arrival::Restart => {
                svc.restart_grace(now);
                let state = if s.state == State::Error && s.muted_since == 0 {
                    State::Error
                } else {
                    svc.evaluate(now)
                };
                if state != s.state {
                    svc.last_state_change = now;
                }
                state
            }
            Arrival::Handover => {
                svc.anchor = if s.last_beat >= 0 {
                    s.last_beat
                } else {
                    s.last_state_change
                };
                let anchor = svc.anchor;
                if let Some(j) = svc.job.as_deref_mut() {
                    if let Some(sched) = &j.schedule {
                        j.next_deadline = sched.deadline_after(anchor);
                    }
                }
                if s.muted_since > 0 {
                    State::Muted
                } else if s.state == State::Error {
                    State::Error
                } else {
                    State::Ok
                }
            }
        };
        self.count(svc.state, 1);
        for (alarm, def) in &memberships {
            let mut a = self.alarm_entry(alarm, *def, now);
            a.add_member(
                *def,
                || inner.matcher.dependencies(*def, &key),
                &key,
                svc.state,
            );
            self.set_listed(alarm, &mut a, true);
        }
        self.arm(&key, &mut svc, now);
        self.orphan(&key, &refused);
        inner.services.insert(key, svc);
    }

    /// Takes back what [`Engine::restore_service`] did for `name`, whose
    /// record a newer one replaces: its count, its timer and its place in
    /// its alarms. The alarms are evaluated when the load ends.
    pub(super) fn unload_service(&self, name: &str) {
        let Some((key, old)) = self.inner.services.remove(name) else {
            return;
        };
        // The newer record is resolved again, orphaned again if it must be.
        self.forget_orphan(name);
        self.count(old.state, -1);
        self.disarm(&old);
        for alarm in old.alarms.iter() {
            if let Some(mut a) = self.inner.alarms.get_mut(&**alarm) {
                a.members = a.members.saturating_sub(1);
                if old.state == State::Muted {
                    a.count_muted(false);
                }
                if old.state == State::Error {
                    a.failed.remove(&key);
                }
                if a.cause.as_ref() == Some(&key) {
                    a.cause = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AlarmDef, EngineConfig};

    const T0: i64 = 1_700_000_000_000;

    fn stored(name: &str, state: State, last_beat: i64, timeout: i64) -> StoredService {
        StoredService {
            name: name.into(),
            last_beat,
            timeout,
            state,
            muted_since: if state == State::Muted { last_beat } else { 0 },
            last_state_change: last_beat,
            beat_history: vec![],
            job: None,
        }
    }

    fn stored_alarm(incident_nbr: u64, last_state_change: i64, listed: bool) -> StoredAlarm {
        StoredAlarm {
            name: "all".into(),
            state: State::Error,
            incident_nbr,
            last_state_change,
            listed,
            announced: None,
        }
    }

    fn engine() -> Engine {
        Engine::new(
            EngineConfig {
                alarms: vec![AlarmDef {
                    name: "all".into(),
                    includes: vec!["*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            T0,
        )
    }

    /// Two databases concatenated: a service and its alarm stored twice
    /// are loaded once, so the service counts once, and deleting it
    /// leaves its alarm OK, ready to alert on the next failure.
    #[test]
    fn a_name_stored_twice_is_loaded_once_and_its_deletion_clears_the_alarm() {
        let e = engine();
        let report = e.load(
            vec![
                stored("dup", State::Error, T0 - 90_000, 10_000),
                stored("other", State::Ok, T0 - 1000, 10_000),
                stored("dup", State::Error, T0 - 60_000, 10_000),
            ],
            vec![
                stored_alarm(3, T0 - 90_000, true),
                stored_alarm(4, T0 - 60_000, true),
            ],
            T0,
        );
        assert_eq!(
            report,
            LoadReport {
                services: 2,
                duplicate_services: 1,
                duplicate_alarms: 1
            }
        );
        assert_eq!(e.status(), (1, 1), "each service counted once");
        let all = e.alarm("all").expect("alarm");
        assert_eq!((all.state, all.incident_nbr), (State::Error, 4), "newest");
        assert_eq!(all.failed_services, vec![Name::from("dup")]);
        assert_eq!(
            e.service("dup", false).expect("kept").last_beat,
            T0 - 60_000
        );
        assert_eq!(e.alarms().len(), 1);
        e.delete("dup", T0 + 1);
        assert_eq!(e.alarm("all").expect("alarm").state, State::Ok);
        let _ = e.take_transitions();
        let mut due = Vec::new();
        e.tick(T0 + 10_000, &mut due);
        let all = e.alarm("all").expect("alarm");
        assert_eq!((all.state, all.incident_nbr), (State::Error, 5));
        assert!(
            e.take_transitions()
                .iter()
                .any(|t| t.alarm.state == State::Error && t.alarm.incident_nbr == 5),
            "the next failure is announced"
        );
    }

    /// The newest record wins wherever it is in the file: an older one
    /// after it is dropped, and nothing of the older one stays counted.
    #[test]
    fn the_newest_record_wins_wherever_it_stands() {
        let e = engine();
        let report = e.load(
            vec![
                stored("dup", State::Muted, T0 - 1000, 10_000),
                stored("dup", State::Error, T0 - 90_000, 10_000),
                stored("flip", State::Error, T0 - 90_000, 10_000),
                stored("flip", State::Ok, T0 - 1000, 10_000),
            ],
            vec![
                stored_alarm(4, T0 - 1000, false),
                stored_alarm(3, T0 - 90_000, true),
            ],
            T0,
        );
        assert_eq!(report.duplicate_services, 2);
        assert_eq!(e.state_counts(), (1, 0, 1));
        assert_eq!(e.service("dup", false).expect("kept").state, State::Muted);
        assert_eq!(e.service("flip", false).expect("kept").state, State::Ok);
        let all = e.alarm("all").expect("alarm");
        assert!(all.failed_services.is_empty(), "{all:?}");
        assert_eq!(all.state, State::Ok);
    }
}
