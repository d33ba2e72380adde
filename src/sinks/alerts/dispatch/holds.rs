//! Dependency holds (`depends_on`): while an alarm's dependency is ERROR,
//! its latest change is held, and released (or dropped, if the alarm is
//! back where its receivers last heard it) when the dependency recovers.
//! A maintenance window holds a change the same way (the dispatcher asks
//! `Maintenance::holding_alarm` before it sends and before it releases).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::State;
use crate::sinks::alerts::Notice;

/// The held changes, and the states dependencies are judged by.
#[derive(Default)]
pub(super) struct Holds {
    /// Each held alarm's latest change: one per alarm (a newer change
    /// replaces it), and only while a `depends_on` alarm of it is ERROR
    /// (or until the next housekeeping, when one was deleted).
    held: HashMap<Arc<str>, Notice>,
    /// Each alarm's state as of the latest transition handled.
    /// Dependencies are judged by it, not by the engine's state now, which
    /// may already be transitions ahead: a parent that failed and
    /// recovered before its child's transitions were handled must still
    /// hold them.
    states: HashMap<Arc<str>, State>,
}

impl Holds {
    /// Records `alarm`'s state as of the transition being handled.
    pub(super) fn record(&mut self, alarm: Arc<str>, state: State) {
        self.states.insert(alarm, state);
    }

    /// `alarm`'s state as of the transitions handled; `None` if none has
    /// mentioned it.
    pub(super) fn state(&self, alarm: &str) -> Option<State> {
        self.states.get(alarm).copied()
    }

    /// The dependencies of `notice`'s alarm that hold it now.
    pub(super) fn holding(notice: &Notice, in_error: impl Fn(&str) -> bool) -> Vec<&str> {
        notice
            .alarm
            .depends_on
            .iter()
            .filter(|d| in_error(d))
            .map(|d| d.as_ref())
            .collect()
    }

    /// Holds `notice`, replacing the alarm's change held before.
    pub(super) fn hold(&mut self, notice: Notice) {
        self.held.insert(notice.alarm.name.clone(), notice);
    }

    /// Drops what `alarm` held: a newer change of it goes out.
    pub(super) fn unhold(&mut self, alarm: &str) {
        self.held.remove(alarm);
    }

    /// True while `alarm` has a change held.
    pub(super) fn is_held(&self, alarm: &str) -> bool {
        self.held.contains_key(alarm)
    }

    /// True when nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The held alarms that depend on `recovered` (`None`: on anything)
    /// and none of whose dependencies is ERROR any more.
    pub(super) fn ready(
        &self,
        recovered: Option<&str>,
        in_error: impl Fn(&str) -> bool,
    ) -> Vec<Arc<str>> {
        self.held
            .iter()
            .filter(|(_, n)| recovered.is_none_or(|r| n.alarm.depends_on.iter().any(|d| &**d == r)))
            .filter(|(_, n)| !n.alarm.depends_on.iter().any(|d| in_error(d)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// `alarm`'s held change, left held.
    pub(super) fn peek(&self, alarm: &str) -> Option<&Notice> {
        self.held.get(alarm)
    }

    /// Takes `alarm`'s held change out, to send or drop.
    pub(super) fn take(&mut self, alarm: &str) -> Option<Notice> {
        self.held.remove(alarm)
    }

    /// Forgets the states of alarms that no longer exist.
    pub(super) fn prune(&mut self, exists: impl Fn(&str) -> bool) {
        self.states.retain(|a, _| exists(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::notice;

    #[tokio::test(start_paused = true)]
    async fn a_held_depends_on_change_is_released_when_its_dependencies_recover() {
        let mut holds = Holds::default();
        let mut child = notice(0, None);
        child.alarm.depends_on = vec!["net".into(), "dns".into()].into();
        holds.record("net".into(), State::Error);
        holds.record("dns".into(), State::Error);
        fn in_error(h: &Holds) -> impl Fn(&str) -> bool + '_ {
            |a| h.state(a) == Some(State::Error)
        }
        assert_eq!(Holds::holding(&child, in_error(&holds)), ["net", "dns"]);
        holds.hold(child);
        assert!(holds.is_held("jobs"));
        // One dependency recovers; the other still holds it.
        holds.record("net".into(), State::Ok);
        assert!(holds.ready(Some("net"), in_error(&holds)).is_empty());
        // The other recovers: it is released, once.
        holds.record("dns".into(), State::Ok);
        assert!(holds.ready(Some("web"), in_error(&holds)).is_empty());
        let ready = holds.ready(Some("dns"), in_error(&holds));
        assert_eq!(ready, [Arc::<str>::from("jobs")]);
        assert_eq!(holds.ready(None, in_error(&holds)), ready);
        let released = holds.take("jobs").expect("held");
        assert_eq!(released.alarm.incident_nbr, 7);
        assert!(holds.is_empty() && holds.take("jobs").is_none());
    }
}
