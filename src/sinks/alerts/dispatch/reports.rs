//! Delivery reports: what each alarm's receivers heard. The engine is
//! told (`mark_announced`, saved in the database) only once every
//! receiver of a change has had it, in order per alarm, so a restart
//! announces what was not and never again what was.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::NoticeId;
use crate::engine::{AlarmView, State};
use crate::sinks::alerts::{Flapping, Notice};

/// A change on its way to its receivers.
struct Tracked {
    alarm: Arc<str>,
    /// What its receivers hear (the start of flapping counts as ERROR).
    state: State,
    incident: u64,
    /// Receivers that have not had it yet; it is dropped at 0.
    remaining: usize,
}

/// The changes on their way, per alarm.
#[derive(Default)]
pub(super) struct Reports {
    /// Every change with receivers still to hear it; each is in `order`.
    tracked: HashMap<NoticeId, Tracked>,
    /// Each alarm's tracked changes, oldest first; an alarm with none has
    /// no entry (so "settled" is "absent").
    order: HashMap<Arc<str>, VecDeque<NoticeId>>,
    /// The next id: ids are never reused.
    next_id: NoticeId,
}

impl Reports {
    /// Starts tracking a change of `alarm` that `remaining` receivers
    /// (at least one) are to hear.
    pub(super) fn track(
        &mut self,
        alarm: Arc<str>,
        state: State,
        incident: u64,
        remaining: usize,
    ) -> NoticeId {
        let id = self.next_id;
        self.next_id += 1;
        self.tracked.insert(
            id,
            Tracked {
                alarm: alarm.clone(),
                state,
                incident,
                remaining,
            },
        );
        self.order.entry(alarm).or_default().push_back(id);
        id
    }

    /// True when no change of `alarm` is on its way.
    pub(super) fn settled(&self, alarm: &str) -> bool {
        self.order.get(alarm).is_none_or(VecDeque::is_empty)
    }

    /// One receiver is done with change `id` (delivered, or failed for
    /// good). Once all are, the changes of its alarm that are all done,
    /// in order, are reported: the last of them is what the engine is
    /// told its receivers heard.
    pub(super) fn finish(&mut self, id: NoticeId) -> Option<(Arc<str>, State, u64)> {
        let t = self.tracked.get_mut(&id)?;
        t.remaining = t.remaining.saturating_sub(1);
        if t.remaining > 0 {
            return None;
        }
        let alarm = t.alarm.clone();
        let order = self.order.get_mut(&alarm)?;
        let mut last = None;
        while let Some(&front) = order.front() {
            if self.tracked.get(&front).is_some_and(|t| t.remaining > 0) {
                break;
            }
            order.pop_front();
            if let Some(t) = self.tracked.remove(&front) {
                last = Some((t.state, t.incident));
            }
        }
        if order.is_empty() {
            self.order.remove(&alarm);
        }
        last.map(|(state, incident)| (alarm, state, incident))
    }
}

/// What each alarm's receivers last heard, in this run and before it.
#[derive(Default)]
pub(super) struct Heard {
    /// The state each alarm last announced in this run (absent: as the
    /// database says, [`Heard::last_heard`]).
    alerted: HashMap<Arc<str>, State>,
    /// The incident each alarm's receivers were last told is open (by an
    /// ERROR or the start of flapping), in this run; absent, the database
    /// says ([`Heard::open_incident`]).
    opened: HashMap<Arc<str>, Option<u64>>,
}

impl Heard {
    /// The state `alarm`'s receivers last heard: what this run sent, else
    /// what the database says was announced before the restart.
    pub(super) fn last_heard(&self, alarm: &AlarmView) -> State {
        match self.alerted.get(&alarm.name) {
            Some(state) => *state,
            None if alarm.announced.0 == State::Error => State::Error,
            None => State::Ok,
        }
    }

    /// The incident `alarm`'s receivers were last told is open: what this
    /// run sent, else an ERROR announced before the restart.
    pub(super) fn open_incident(&self, alarm: &AlarmView) -> Option<u64> {
        match self.opened.get(&alarm.name) {
            Some(open) => *open,
            None if alarm.announced.0 == State::Error => Some(alarm.announced.1),
            None => None,
        }
    }

    /// True when a held change says something its receivers have not
    /// heard: its state differs from the last heard, or it is about
    /// flapping.
    pub(super) fn is_news(&self, notice: &Notice) -> bool {
        notice.alarm.state != self.last_heard(&notice.alarm) || notice.flapping.is_some()
    }

    /// `notice` is being sent: its receivers hear its state, and the
    /// incident it opens (an ERROR, the start of flapping) is open.
    pub(super) fn sending(&mut self, notice: &Notice) -> bool {
        let name = notice.alarm.name.clone();
        let state = notice.alarm.state;
        let opens =
            state == State::Error || matches!(notice.flapping, Some(Flapping::Started { .. }));
        self.alerted.insert(name.clone(), state);
        self.opened
            .insert(name, opens.then_some(notice.alarm.incident_nbr));
        opens
    }

    /// Forgets alarms that no longer exist.
    pub(super) fn prune(&mut self, exists: impl Fn(&str) -> bool) {
        self.alerted.retain(|a, _| exists(a));
        self.opened.retain(|a, _| exists(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::notice;

    #[tokio::test(start_paused = true)]
    async fn a_change_is_reported_once_every_receiver_has_it_and_in_order() {
        let mut r = Reports::default();
        let web: Arc<str> = "web".into();
        let fail = r.track(web.clone(), State::Error, 7, 2);
        let recover = r.track(web.clone(), State::Ok, 7, 1);
        // The recovery is delivered first: nothing is reported while the
        // failure is still on its way to a receiver.
        assert_eq!(r.finish(recover), None);
        assert_eq!(r.finish(fail), None);
        assert!(!r.settled("web"));
        // The failure's last receiver: both are reported, as the latest.
        assert_eq!(r.finish(fail), Some((web.clone(), State::Ok, 7)));
        assert!(r.settled("web"));
        // Reported once: a late or repeated report says nothing.
        assert_eq!(r.finish(fail), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_reported_delivered_before_a_restart_is_not_sent_again() {
        // After the restart, this run has sent nothing; the database says
        // incident 7's ERROR was delivered.
        let heard = Heard::default();
        let mut n = notice(0, None);
        n.alarm.announced = (State::Error, 7);
        assert_eq!(heard.last_heard(&n.alarm), State::Error);
        assert_eq!(heard.open_incident(&n.alarm), Some(7));
        // The same ERROR, released by a dependency, is not news.
        assert!(!heard.is_news(&n));
        // Its recovery is, and one never delivered is.
        let mut ok = n.clone();
        ok.alarm.state = State::Ok;
        assert!(heard.is_news(&ok));
        let mut new = n.clone();
        new.alarm.announced = (State::Ok, 6);
        assert!(heard.is_news(&new));
        // Once this run sends the recovery, it is what was heard.
        let mut heard = heard;
        assert!(!heard.sending(&ok));
        assert!(!heard.is_news(&ok) && heard.open_incident(&ok.alarm).is_none());
    }
}
