//! Alarm changes on their way to the alert dispatcher: a path that cannot
//! lose one.
//!
//! The event broadcast (`events.rs`) is for views: a subscriber that falls
//! behind loses the oldest events. Alerts cannot be lost, so every alarm
//! transition is also kept in its alarm's record until the dispatcher
//! takes it, and a queue lists the alarms that have any. Memory is bounded
//! by the number of alarms: an alarm keeps at most [`MAX_PENDING`]
//! transitions; beyond that the oldest ones after the first are merged
//! into the next (counted in [`Transition::merged`]), which only happens to
//! an alarm changing state faster than its alerts can be dispatched: one
//! that is flapping.
//!
//! The dispatcher also tells the engine what it announced, per alarm (the
//! state and incident its receivers last heard of), so a save keeps it and
//! a restart announces what was not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::alarms::{Alarm, Transition};
use super::service::State;
use super::Engine;

/// Transitions an alarm keeps for the dispatcher at most.
pub const MAX_PENDING: usize = 16;

/// The queue of alarms with transitions waiting, and the dispatcher's bell.
#[derive(Default)]
pub(super) struct Announcements {
    waiting: Mutex<Waiting>,
    /// Rung when an alarm joins `waiting`.
    wake: Notify,
    /// Transitions merged so far (`/metrics`).
    pub(super) merged: AtomicU64,
}

/// Numbered and listed under one lock, so that a take sees every
/// transition numbered before it: the dispatcher gets them in order across
/// alarms, never one alarm's later change before another's earlier one.
#[derive(Default)]
struct Waiting {
    /// Alarms with a transition waiting, each once.
    names: Vec<Arc<str>>,
    /// The next transition's `seq`.
    next_seq: u64,
}

impl Announcements {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine {
    /// Keeps a transition of `alarm` (its lock held by the caller) for the
    /// dispatcher.
    pub(super) fn announce(&self, name: &Arc<str>, a: &mut Alarm, previous: State, ts: i64) {
        let inner = &self.inner;
        let view = a.view(name);
        if a.unannounced.len() >= MAX_PENDING {
            // Keep the first (the incident that started it) and the latest:
            // the second is merged into the third.
            let gone = a.unannounced.remove(1);
            a.unannounced[1].merged += gone.merged + 1;
            a.unannounced[1].previous = gone.previous;
            inner.announcements.merged.fetch_add(1, Ordering::Relaxed);
        }
        let first = a.unannounced.is_empty();
        {
            let mut waiting = inner.announcements.waiting();
            let seq = waiting.next_seq;
            waiting.next_seq += 1;
            a.unannounced.push(Transition {
                seq,
                alarm: view,
                previous,
                ts,
                merged: 0,
            });
            if first {
                waiting.names.push(name.clone());
            }
        }
        if first {
            inner.announcements.wake.notify_one();
        }
    }

    /// Waits until a transition may be waiting (returns at once if one was
    /// kept since the last [`Engine::take_transitions`]).
    pub async fn transitions_waiting(&self) {
        self.inner.announcements.wake.notified().await;
    }

    /// Every transition waiting, in the order they happened. One made
    /// while this runs is left for the next call (its alarm stays listed),
    /// so no call returns a transition before one numbered earlier.
    pub fn take_transitions(&self) -> Vec<Transition> {
        let (names, cutoff) = {
            let mut w = self.inner.announcements.waiting();
            (std::mem::take(&mut w.names), w.next_seq)
        };
        let mut out = Vec::new();
        for name in names {
            if let Some(mut a) = self.inner.alarms.get_mut(&*name) {
                let later = a.unannounced.iter().position(|t| t.seq >= cutoff);
                match later {
                    None => out.append(&mut a.unannounced),
                    Some(at) => {
                        out.extend(a.unannounced.drain(..at));
                        // Its later ones found the list non-empty and did
                        // not list the alarm: list it for the next take.
                        self.inner.announcements.waiting().names.push(name.clone());
                        self.inner.announcements.wake.notify_one();
                    }
                }
            }
        }
        out.sort_unstable_by_key(|t| t.seq);
        out
    }

    /// Transitions merged because an alarm had too many waiting.
    pub fn transitions_merged(&self) -> u64 {
        self.inner.announcements.merged.load(Ordering::Relaxed)
    }

    /// Records that `alarm`'s receivers have heard of `state` in incident
    /// `incident` (kept in the database, so a restart does not repeat it).
    pub fn mark_announced(&self, alarm: &str, state: State, incident: u64) {
        if let Some(mut a) = self.inner.alarms.get_mut(alarm) {
            a.announced = (state, incident);
        }
    }

    /// Marks an alarm flapping (or no longer), for the API and the UI; the
    /// alert dispatcher decides it.
    pub fn set_flapping(&self, alarm: &str, flapping: bool, now: i64) {
        if let Some(mut a) = self.inner.alarms.get_mut(alarm) {
            if a.flapping != flapping {
                a.flapping = flapping;
                let key = a.key().clone();
                self.emit(now, || super::EventKind::AlarmUpdated(key));
            }
        }
    }

    /// After a restart: every alarm whose receivers last heard of another
    /// state or incident than the one it is in gets a transition from what
    /// they heard, so an incident that was not announced before the stop
    /// is announced now (and one that was is not repeated).
    pub(super) fn announce_what_was_not(&self, now: i64) {
        for mut a in self.inner.alarms.iter_mut() {
            let (state, incident) = a.announced;
            let current = (a.state, a.incident_nbr);
            if a.listed && a.members > 0 && current != (state, incident) && a.state != State::New {
                let key = a.key().clone();
                // A new ERROR incident is announced as a change from OK
                // (the previous one ended; pagers close what they were
                // told is open as they open this one). An OK is announced
                // from what was heard: receivers told of an ERROR or of
                // flapping get the recovery that closes it.
                let previous = if incident != a.incident_nbr && a.state == State::Error {
                    State::Ok
                } else {
                    state
                };
                self.announce(&key, &mut a, previous, now);
            }
        }
    }
}
