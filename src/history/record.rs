//! What one engine event becomes in the history: a state change of a
//! service or an alarm, with its reason.

use crate::engine::events::{Event, EventKind};
use crate::engine::{ServiceView, State};

/// Services and alarms share the `names` table, told apart by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A service.
    Service = 0,
    /// An alarm.
    Alarm = 1,
}

/// Why a state changed, as the history keeps it (stored as its number;
/// the API shows its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It appeared (first beat, or an alarm's first member).
    Created = 0,
    /// Its deadline passed (or a tripwire timeout, or a run too long).
    Timeout = 1,
    /// A job reported failure; `detail` is its exit code when it gave one.
    Fail = 2,
    /// A beat brought it back to OK.
    Beat = 3,
    /// Muted.
    Mute = 4,
    /// Unmuted (by hand, or a snooze's end).
    Unmute = 5,
    /// Snoozed: muted until a time.
    Snooze = 6,
    /// Deleted.
    Deleted = 7,
    /// An alarm's members failed: `detail` is the incident number.
    MembersFailed = 8,
    /// An alarm's members recovered.
    Recovered = 9,
    /// Any other change (a timeout raised past the silence).
    Other = 10,
    /// At a start, the state lovebeat loaded differs from the history's
    /// last: the database was saved before changes the history kept (a
    /// kill -9), or the name is gone.
    Restored = 11,
}

impl Reason {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Created => "created",
            Reason::Timeout => "timeout",
            Reason::Fail => "fail",
            Reason::Beat => "beat",
            Reason::Mute => "mute",
            Reason::Unmute => "unmute",
            Reason::Snooze => "snooze",
            Reason::Deleted => "deleted",
            Reason::MembersFailed => "members failed",
            Reason::Recovered => "recovered",
            Reason::Other => "other",
            Reason::Restored => "restored",
        }
    }

    /// The reason a stored number stands for.
    pub fn from_code(code: i64) -> Reason {
        match code {
            0 => Reason::Created,
            1 => Reason::Timeout,
            2 => Reason::Fail,
            3 => Reason::Beat,
            4 => Reason::Mute,
            5 => Reason::Unmute,
            6 => Reason::Snooze,
            7 => Reason::Deleted,
            8 => Reason::MembersFailed,
            9 => Reason::Recovered,
            11 => Reason::Restored,
            _ => Reason::Other,
        }
    }
}

/// The state a stored number stands for; `None` for "deleted" (stored as
/// 255) or an unknown number.
pub fn state_from_code(code: i64) -> Option<State> {
    match code {
        0 => Some(State::New),
        1 => Some(State::Ok),
        2 => Some(State::Error),
        3 => Some(State::Muted),
        _ => None,
    }
}

/// The stored number of "deleted", which is no engine state.
pub const DELETED: u8 = 255;

/// One row of `changes`, before its name has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Service or alarm.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// When (ms).
    pub ts: i64,
    /// The state before; `None` when it appeared.
    pub from: Option<u8>,
    /// The state after ([`DELETED`] when deleted).
    pub to: u8,
    /// Why.
    pub reason: Reason,
    /// The reason's number, if it has one.
    pub detail: Option<i64>,
    /// An alarm's incident opened or closed by this change.
    pub incident: Option<super::incidents::Edge>,
}

/// Why a service went from `previous` to its state now.
fn service_reason(s: &ServiceView, previous: State) -> (Reason, Option<i64>) {
    let job = s.job.as_deref();
    match (previous, s.state) {
        (_, State::Muted) => {
            if job.and_then(|j| j.muted_until).is_some() {
                (Reason::Snooze, None)
            } else {
                (Reason::Mute, None)
            }
        }
        (State::Muted, _) => (Reason::Unmute, None),
        (_, State::Error) => match job.and_then(|j| j.last_failure.as_ref()) {
            // The failure this change reports: reported at the change.
            Some(f) if f.ts == s.last_state_change && f.reason.is_none() => {
                (Reason::Fail, f.exit_code.map(i64::from))
            }
            _ => (Reason::Timeout, None),
        },
        (State::Error, State::Ok) => (Reason::Beat, None),
        _ => (Reason::Other, None),
    }
}

/// The history row an event makes, if it is a state change.
pub fn change(event: &Event) -> Option<Change> {
    let row = |kind, name: &str, from, to, (reason, detail)| Change {
        kind,
        name: name.to_string(),
        ts: event.ts,
        from,
        to,
        reason,
        detail,
        incident: None,
    };
    Some(match &event.kind {
        EventKind::ServiceAdded(s) => row(
            Kind::Service,
            &s.name,
            None,
            s.state as u8,
            (Reason::Created, None),
        ),
        // Creation is recorded by ServiceAdded, which carries the state.
        EventKind::ServiceStateChanged {
            previous: State::New,
            ..
        } => return None,
        EventKind::ServiceStateChanged { service, previous } => row(
            Kind::Service,
            &service.name,
            Some(*previous as u8),
            service.state as u8,
            service_reason(service, *previous),
        ),
        EventKind::ServiceRemoved(s) => row(
            Kind::Service,
            &s.name,
            Some(s.state as u8),
            DELETED,
            (Reason::Deleted, None),
        ),
        // A new alarm is evaluated at once: its first state change is
        // its creation.
        EventKind::AlarmAdded(a) if a.state == State::New => return None,
        EventKind::AlarmAdded(a) => row(
            Kind::Alarm,
            &a.name,
            None,
            a.state as u8,
            (Reason::Created, None),
        ),
        EventKind::AlarmStateChanged { alarm, previous } => {
            let incident = (alarm.incident_nbr > 0).then_some(alarm.incident_nbr as i64);
            let why = match (previous, alarm.state) {
                (State::New, _) => (Reason::Created, incident),
                (_, State::Error) => (Reason::MembersFailed, incident),
                (_, State::Ok) => (Reason::Recovered, incident),
                _ => (Reason::Other, None),
            };
            let from = (*previous != State::New).then_some(*previous as u8);
            Change {
                incident: super::incidents::edge(alarm, *previous),
                ..row(Kind::Alarm, &alarm.name, from, alarm.state as u8, why)
            }
        }
        EventKind::AlarmRemoved(a) => row(
            Kind::Alarm,
            &a.name,
            Some(a.state as u8),
            DELETED,
            (Reason::Deleted, None),
        ),
        EventKind::ServiceUpdated(_) | EventKind::AlarmUpdated(_) | EventKind::JobRun(_) => {
            return None
        }
    })
}
