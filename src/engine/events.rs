//! The events the engine publishes; sinks subscribe to them.

use std::sync::Arc;

use super::alarms::AlarmView;
use super::service::{Name, ServiceView, State};

/// One change, stamped with the engine's time.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened, ms since epoch.
    pub ts: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What changed. State changes carry the full object as it became; the
/// frequent, cheap-to-coalesce updates carry only the name.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// A service was created (already evaluated).
    ServiceAdded(ServiceView),
    /// A service changed state.
    ServiceStateChanged {
        /// The service after the change.
        service: ServiceView,
        /// The state before (`New` right after creation).
        previous: State,
    },
    /// A service changed without changing state (timeout, mute time,
    /// accepted beat); sinks read its current value when they need it.
    ServiceUpdated(Name),
    /// A service was deleted; the object as it was.
    ServiceRemoved(ServiceView),
    /// An alarm appeared (its first member, or back after a delete).
    AlarmAdded(AlarmView),
    /// An alarm changed state.
    AlarmStateChanged {
        /// The alarm after the change.
        alarm: AlarmView,
        /// The state before (`New` on first evaluation).
        previous: State,
    },
    /// An alarm's failed services changed without a state change.
    AlarmUpdated(Arc<str>),
    /// An alarm was deleted through the API.
    AlarmRemoved(AlarmView),
    /// A job run ended (README, "History"): only the history's feed gets
    /// it, never the broadcast nor the event log, which keep state changes.
    JobRun(Arc<JobRun>),
}

/// One ended run of a job, as the history keeps it: the event's time is
/// its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The service.
    pub name: Name,
    /// When it started (ms); `None` for a fail with no start before it.
    pub started: Option<i64>,
    /// The exit code: 0 for a beat (as `/exit/0` is one), the reported
    /// code of a fail, `None` for a fail without one.
    pub exit_code: Option<i32>,
    /// Ended by a beat (true) or a fail.
    pub ok: bool,
    /// It had gone past `max_runtime` before it ended.
    pub ran_too_long: bool,
    /// The tail of its output (a fail's body, at most
    /// [`super::job::OUTPUT_LIMIT`] bytes).
    pub output: String,
}
