//! Alarms: their records, and how members joining, leaving and changing
//! state move them between OK and ERROR and open incidents (README,
//! "Alarms"). Which alarms a service joins is `membership.rs`'s answer.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::service::{Name, State};
use super::{Engine, EngineError, EventKind};

/// One alarm transition the dispatcher has not taken yet (kept in its
/// alarm's record until taken: `announce.rs`).
#[derive(Debug, Clone)]
pub struct Transition {
    /// Its place in the order of all alarms' transitions.
    pub seq: u64,
    /// The alarm just after the change.
    pub alarm: AlarmView,
    /// Its state before.
    pub previous: State,
    /// When it changed (ms).
    pub ts: i64,
    /// Earlier transitions of this alarm merged into this one because too
    /// many were waiting (0 normally).
    pub merged: u32,
}

/// A live alarm.
#[derive(Debug, Clone)]
pub struct Alarm {
    /// The configured section it came from, if known.
    pub def: Option<usize>,
    /// Current state: `New` until first evaluated, then `Ok` or `Error`.
    pub state: State,
    /// Number of the current or latest incident; survives restarts.
    pub incident_nbr: u64,
    /// Time of the latest state change.
    pub last_state_change: i64,
    /// Number of member services.
    pub members: usize,
    /// Members in ERROR, sorted by name; the alarm is ERROR iff non-empty.
    pub failed: BTreeSet<Name>,
    /// Members that are MUTED (for the `muted` badge).
    pub muted: usize,
    /// False once deleted through the API: hidden from lists, but its
    /// incident counter is kept until a member brings it back.
    pub listed: bool,
    /// The alarms it depends on, resolved when it was created.
    pub depends_on: Arc<[Arc<str>]>,
    /// The member whose change last changed its failed set.
    pub cause: Option<Name>,
    /// Transitions the alert dispatcher has not taken yet (`announce.rs`).
    pub(super) unannounced: Vec<Transition>,
    /// The state and incident its receivers last heard of.
    pub announced: (State, u64),
    /// Changing state too often to alert each change (the dispatcher's
    /// flap detection decides).
    pub flapping: bool,
}

impl Alarm {
    /// A new, unevaluated alarm.
    pub fn new(def: Option<usize>, now: i64) -> Alarm {
        Alarm {
            def,
            state: State::New,
            incident_nbr: 0,
            last_state_change: now,
            members: 0,
            failed: BTreeSet::new(),
            muted: 0,
            listed: true,
            depends_on: Arc::new([]),
            cause: None,
            unannounced: Vec::new(),
            announced: (State::New, 0),
            flapping: false,
        }
    }

    /// The state its members give.
    pub fn evaluate(&self) -> State {
        if self.failed.is_empty() {
            State::Ok
        } else {
            State::Error
        }
    }

    /// Moves to `state`; entering ERROR opens a new incident.
    pub fn transition(&mut self, state: State, now: i64) {
        if state == State::Error {
            self.incident_nbr += 1;
        }
        self.state = state;
        self.last_state_change = now;
    }

    /// Counts a new member in `state`: the accounting that live changes
    /// and a database restore share. The alarm's `def` and dependencies are
    /// (re)set when it has none yet: it was loaded from a database, which
    /// does not say which section made it, or it was emptied and its next
    /// member may come from another section. Returns whether its failed
    /// set changed.
    pub fn add_member(
        &mut self,
        def: usize,
        depends_on: impl FnOnce() -> Vec<Arc<str>>,
        service: &Name,
        state: State,
    ) -> bool {
        if self.def.is_none() || (self.depends_on.is_empty() && self.members == 0) {
            self.def = Some(def);
            self.depends_on = depends_on().into();
        }
        self.members += 1;
        if state == State::Muted {
            self.count_muted(true);
        }
        if state == State::Error {
            self.failed.insert(service.clone());
            self.cause = Some(service.clone());
            return true;
        }
        false
    }

    /// One member more (`true`) or less in MUTED.
    pub fn count_muted(&mut self, muted: bool) {
        if muted {
            self.muted += 1;
        } else {
            self.muted = self.muted.saturating_sub(1);
        }
    }

    /// The externally visible object (README, "HTTP API").
    pub fn view(&self, name: &Arc<str>) -> AlarmView {
        AlarmView {
            name: name.clone(),
            state: self.state,
            incident_nbr: self.incident_nbr,
            failed_services: self.failed.iter().cloned().collect(),
            last_state_change: self.last_state_change,
            def: self.def,
            depends_on: self.depends_on.clone(),
            suppressed_by: Vec::new(),
            maintenance: Vec::new(),
            cause: self.cause.clone(),
            flapping: self.flapping,
            announced: self.announced,
        }
    }
}

/// An alarm as the API, events and the database show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    /// The alarm name.
    pub name: Arc<str>,
    /// Current state.
    pub state: State,
    /// Number of the current or latest incident.
    pub incident_nbr: u64,
    /// Members in ERROR, sorted by name.
    pub failed_services: Vec<Name>,
    /// Time of the latest state change.
    pub last_state_change: i64,
    /// The configured section it came from (not shown): where its alerts are.
    #[serde(skip)]
    pub def: Option<usize>,
    /// The alarms it depends on (not shown).
    #[serde(skip)]
    pub depends_on: Arc<[Arc<str>]>,
    /// Those of them in ERROR now, which hold its alerts; left out when
    /// empty. Filled by `Engine::with_suppression`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed_by: Vec<Arc<str>>,
    /// The maintenance windows open now that hold its alerts (README,
    /// "Maintenance windows"); left out when none. Filled by
    /// `Engine::with_suppression`, so the database never holds it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<Arc<str>>,
    /// The member whose change caused this state (not shown): alerts carry
    /// its `last_failure`.
    #[serde(skip)]
    pub cause: Option<Name>,
    /// Changing state too often to alert each change; left out when not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
    /// The state and incident its receivers last heard of (not shown; kept
    /// in the database).
    #[serde(skip)]
    pub announced: (State, u64),
}

impl AlarmView {
    /// A view of an alarm no configured section made and no engine holds:
    /// the test alert's, the sample templates are checked with, and tests'.
    /// Nothing depends on it, and its receivers last heard it was OK.
    pub fn standalone(
        name: &str,
        state: State,
        incident_nbr: u64,
        failed_services: Vec<Name>,
        last_state_change: i64,
    ) -> AlarmView {
        AlarmView {
            name: name.into(),
            state,
            incident_nbr,
            failed_services,
            last_state_change,
            def: None,
            depends_on: Arc::new([]),
            suppressed_by: Vec::new(),
            maintenance: Vec::new(),
            cause: None,
            flapping: false,
            announced: (State::Ok, 0),
        }
    }
}

/// An alarm a service belongs to: its name (the alarm's shared key where it
/// exists) and the `[[alarms]]` section that makes it.
pub(super) type Membership = (Arc<str>, usize);

/// Whether the alarm `name` counts against `[limits] max_alarms`: every
/// alarm but lovebeat's own, which reports the lack of room and must not
/// take one of the user's places.
pub(super) fn takes_a_place(name: &str) -> bool {
    name != super::SELF_ALARM
}

impl Engine {
    /// The alarms a new service joins, with the alarm's shared key where the
    /// alarm exists already, and those it cannot join yet.
    /// An alarm that would be a new instance beyond `[limits] max_alarms`
    /// is left out (counted; logged at most every ten thousand) and
    /// returned second: the service waits for it as an orphan
    /// (`orphans.rs`) and joins it when a place frees.
    pub(super) fn resolve_alarms(&self, name: &str) -> (Vec<Membership>, Vec<Membership>) {
        let inner = &self.inner;
        let mut refused = Vec::new();
        let joined = inner
            .matcher
            .alarms_for(name)
            .into_iter()
            .filter_map(|(alarm, def)| {
                let place = if super::is_internal(name) {
                    // lovebeat's own trouble is never refused for lack of
                    // room: it is what reports the lack.
                    self.alarm_place(&alarm).or_else(|| Some(Arc::from(alarm.as_str())))
                } else {
                    self.alarm_place(&alarm)
                };
                let key = match place {
                    Some(key) => key,
                    None => {
                        let n = inner.alarms_refused.fetch_add(1, Ordering::Relaxed);
                        if n % 10_000 == 0 {
                            tracing::warn!(
                                "[limits] max_alarms ({}) reached: service {} waits to join a new alarm {} ({} refused so far)",
                                inner.max_alarms,
                                name.escape_debug(),
                                alarm.escape_debug(),
                                n + 1
                            );
                        }
                        refused.push((Arc::from(alarm), def));
                        return None;
                    }
                };
                Some((key, def))
            })
            .collect();
        (joined, refused)
    }

    /// The key a member of `alarm` joins under: the alarm's own where it
    /// is listed, a new one where a new alarm fits under `max_alarms`;
    /// `None` when it does not fit. A deleted alarm coming back counts as
    /// a new one. Takes (briefly) the alarm's shard lock.
    pub(super) fn alarm_place(&self, alarm: &str) -> Option<Arc<str>> {
        let inner = &self.inner;
        let full = || inner.alarm_count.load(Ordering::Relaxed) >= inner.max_alarms;
        match inner.alarms.get(alarm) {
            Some(a) if a.listed || !full() => Some(a.key().clone()),
            _ if full() => None,
            _ => Some(Arc::from(alarm)),
        }
    }

    /// Lists or unlists an alarm, keeping `alarm_count` (the listed alarms,
    /// which `max_alarms` bounds) right: a deleted alarm frees its place.
    pub(super) fn set_listed(&self, name: &str, a: &mut Alarm, listed: bool) {
        if a.listed != listed {
            a.listed = listed;
            if takes_a_place(name) {
                if listed {
                    self.inner.alarm_count.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.inner.alarm_count.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The alarm `name`, made (and counted) if it does not exist.
    pub(super) fn alarm_entry(
        &self,
        name: &Arc<str>,
        def: usize,
        now: i64,
    ) -> dashmap::mapref::one::RefMut<'_, Arc<str>, Alarm> {
        self.inner.alarms.entry(name.clone()).or_insert_with(|| {
            if takes_a_place(name) {
                self.inner.alarm_count.fetch_add(1, Ordering::Relaxed);
            }
            Alarm::new(Some(def), now)
        })
    }

    /// A new member of `alarm` (created if needed) in `state`.
    pub(super) fn alarm_join(
        &self,
        alarm: &Arc<str>,
        def: usize,
        service: &Name,
        state: State,
        now: i64,
    ) {
        let mut a = self.alarm_entry(alarm, def, now);
        let failed_changed = a.add_member(
            def,
            || self.inner.matcher.dependencies(def, service),
            service,
            state,
        );
        if a.state == State::New || !a.listed {
            self.set_listed(alarm, &mut a, true);
            self.emit(now, || EventKind::AlarmAdded(a.view(alarm)));
        }
        self.alarm_settle(alarm, &mut a, failed_changed, now);
    }

    /// A member of `alarms` moved from `before` to `after`: into or out of
    /// ERROR changes their failed sets, into or out of MUTED their counts.
    pub(super) fn alarms_member_changed(
        &self,
        service: &Name,
        alarms: &[Arc<str>],
        before: State,
        after: State,
        now: i64,
    ) {
        let (was, is) = (before == State::Error, after == State::Error);
        let error_changed = was != is;
        let muted_changed = (before == State::Muted) != (after == State::Muted);
        if !error_changed && !muted_changed {
            return;
        }
        for alarm in alarms {
            let Some(mut a) = self.inner.alarms.get_mut(&**alarm) else {
                continue;
            };
            if muted_changed {
                a.count_muted(after == State::Muted);
            }
            if error_changed {
                a.cause = Some(service.clone());
                if is {
                    a.failed.insert(service.clone());
                } else {
                    a.failed.remove(service);
                }
                self.alarm_settle(alarm, &mut a, true, now);
            }
        }
    }

    /// Members of `alarm` moved between states in one batch (a mass
    /// expiry), given as `(alarm, service, before, after)` in name order:
    /// the alarm's lock is taken once and it settles once, with one event,
    /// where one member at a time took it and settled it per member.
    pub(super) fn alarm_members_changed(
        &self,
        alarm: &Arc<str>,
        members: &[(Arc<str>, Name, State, State)],
        now: i64,
    ) {
        let Some(mut a) = self.inner.alarms.get_mut(&**alarm) else {
            return;
        };
        let mut cause = None;
        for (_, service, before, after) in members {
            if (*before == State::Muted) != (*after == State::Muted) {
                a.count_muted(*after == State::Muted);
            }
            if (*before == State::Error) != (*after == State::Error) {
                if *after == State::Error {
                    a.failed.insert(service.clone());
                } else {
                    a.failed.remove(service);
                }
                cause = Some(service);
            }
        }
        if let Some(cause) = cause {
            a.cause = Some(cause.clone());
            self.alarm_settle(alarm, &mut a, true, now);
        }
    }

    /// A member in `state` left `alarm` (it was deleted).
    pub(super) fn alarm_leave(&self, alarm: &Arc<str>, service: &Name, state: State, now: i64) {
        if let Some(mut a) = self.inner.alarms.get_mut(&**alarm) {
            a.members = a.members.saturating_sub(1);
            if state == State::Muted {
                a.count_muted(false);
            }
            let removed = state == State::Error && a.failed.remove(service);
            self.alarm_settle(alarm, &mut a, removed, now);
        }
    }

    /// Re-evaluates an alarm; emitted while its lock is held, so events of
    /// one alarm are published in order.
    pub(super) fn alarm_settle(
        &self,
        name: &Arc<str>,
        a: &mut Alarm,
        failed_changed: bool,
        now: i64,
    ) {
        let after = a.evaluate();
        if after != a.state {
            let previous = a.state;
            a.transition(after, now);
            self.announce(name, a, previous, now);
            self.emit(now, || EventKind::AlarmStateChanged {
                alarm: a.view(name),
                previous,
            });
        } else if failed_changed {
            self.emit(now, || EventKind::AlarmUpdated(name.clone()));
        }
    }

    /// Deletes an alarm that has no services. `Ok(false)` if unknown.
    pub fn delete_alarm(&self, name: &str, now: i64) -> Result<bool, EngineError> {
        let Some(mut a) = self.inner.alarms.get_mut(name) else {
            return Ok(false);
        };
        if !a.listed {
            return Ok(false);
        }
        if a.members > 0 {
            return Err(EngineError::AlarmNotEmpty(name.to_string()));
        }
        self.set_listed(name, &mut a, false);
        let key = a.key().clone();
        self.emit(now, || EventKind::AlarmRemoved(a.view(&key)));
        drop(a);
        // Its place goes first to the services waiting for one.
        self.adopt_orphans(now);
        Ok(true)
    }
}
