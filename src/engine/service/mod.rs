//! The service record and its state machine (README, "States"): what a
//! change does to it and what state it is in. Its beat history and what
//! is learned from it are in `history.rs`; how it is shown (the API,
//! events and the database) in `view.rs`.

use std::sync::Arc;

use thin_vec::ThinVec;

use serde::Serialize;

use super::auto::{self, Algorithm, BeatAnalysis};
use super::job::{JobExt, JobFailure};
use super::timeout::{Timeout, TIMEOUT_AUTO, TIMEOUT_SCHEDULE};
use super::{Change, FailReport};

/// A service name: stored inline (no allocation, no pointer to chase on
/// lookup) up to 24 bytes, which covers most names.
pub type Name = compact_str::CompactString;

/// How many beat intervals a service keeps.
pub const HISTORY_LEN: usize = 100;
/// A beat this soon (ms) after the last accepted one is not recorded.
pub const RATE_LIMIT_MS: i64 = 1000;
/// `armed` value when no wheel entry is live for the service.
pub const NOT_ARMED: i64 = i64::MAX;
/// `auto_ms` value while no timeout has been learned.
const NO_AUTO: u32 = u32::MAX;

/// State of a service or an alarm, lower case on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum State {
    /// Just created, before its first evaluation.
    New = 0,
    /// Beating in time.
    Ok = 1,
    /// Silent past its deadline, a tripwire, or failed.
    Error = 2,
    /// Muted: never an error.
    Muted = 3,
}

impl State {
    /// Lower-case name, as in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Ok => "ok",
            State::Error => "error",
            State::Muted => "muted",
        }
    }

    /// Upper-case name, as in mail bodies and script environments.
    pub fn as_upper(self) -> &'static str {
        match self {
            State::New => "NEW",
            State::Ok => "OK",
            State::Error => "ERROR",
            State::Muted => "MUTED",
        }
    }

    /// Parses a stored state name (either case).
    pub fn parse(s: &str) -> Option<State> {
        match s.to_ascii_lowercase().as_str() {
            "new" => Some(State::New),
            "ok" => Some(State::Ok),
            "error" => Some(State::Error),
            "muted" => Some(State::Muted),
            _ => None,
        }
    }
}

/// One monitored service. Kept small: it is stored a million times.
#[derive(Debug, Clone)]
pub struct Service {
    /// Last accepted beat (ms since epoch), -1 if never.
    pub(crate) last_beat: i64,
    /// The [`Timeout`] packed as its wire number (ms, or -1, -2, 0, -3);
    /// a schedule's expression is in `ext`. Set through `set_timeout`.
    timeout: i64,
    /// When muting began, 0 when not muted.
    pub(crate) muted_since: i64,
    /// Time of the latest state change.
    pub(crate) last_state_change: i64,
    /// Where the deadline is counted from: the last accepted beat, or, never
    /// beaten, when the timeout was set, or the daemon's start (restart grace).
    pub(crate) anchor: i64,
    /// Deadline of this service's live wheel entry, `NOT_ARMED` if none.
    /// Invariant: a service with a wake time (`next_wake`) has `armed` at or before it;
    /// a later wake time is found when the earlier entry expires.
    pub(crate) armed: i64,
    /// The learned timeout (ms) for auto services, `NO_AUTO` until an
    /// interval is known.
    auto_ms: u32,
    /// Beat intervals (ms). Its length is the capacity: it grows 4, 8, ...
    /// up to `HISTORY_LEN`, then is used as a ring whose oldest entry is at
    /// `history_head`. No allocation before the second beat.
    history: Box<[u32]>,
    /// Intervals stored in `history`.
    history_len: u8,
    /// Oldest entry once the ring is full, else 0.
    history_head: u8,
    /// How `auto_ms` is learned (`[auto] algorithm`); a byte that the
    /// record's padding had spare.
    algorithm: Algorithm,
    /// Current state; `New` only inside a single engine operation.
    pub(crate) state: State,
    /// Names of the alarms this service belongs to, sorted. A thin vector
    /// (one pointer, nothing allocated when empty) keeps `Service` small.
    pub(crate) alarms: ThinVec<Arc<str>>,
    /// Job monitoring fields (README, "Cron jobs and scripts"), allocated on first use only.
    pub(crate) job: Option<Box<JobExt>>,
}

impl Service {
    /// A service created at `now` with a timeout given as its wire number
    /// (not a schedule), learning with 1.x's algorithm, before its first
    /// evaluation.
    pub fn new(now: i64, timeout: i64, alarms: ThinVec<Arc<str>>) -> Service {
        Service {
            last_beat: -1,
            timeout,
            muted_since: 0,
            last_state_change: now,
            anchor: now,
            armed: NOT_ARMED,
            auto_ms: NO_AUTO,
            history: Box::new([]),
            history_len: 0,
            history_head: 0,
            algorithm: Algorithm::Lovebeat1,
            state: State::New,
            alarms,
            job: None,
        }
    }

    /// The timeout as its wire number (ms, or -1, -2, 0, -3).
    pub fn timeout_wire(&self) -> i64 {
        self.timeout
    }

    /// The timeout.
    pub fn timeout(&self) -> Timeout {
        match self.job.as_ref().and_then(|e| e.schedule.clone()) {
            Some(s) if self.timeout == TIMEOUT_SCHEDULE => Timeout::Schedule(s),
            _ => Timeout::from_wire(self.timeout).unwrap_or(Timeout::None),
        }
    }

    /// Applies a change (in the order [`Change`] documents). Returns
    /// whether it changed anything worth an event, and whether its beat
    /// was accepted (not rate limited).
    pub fn apply(&mut self, c: Change, now: i64, started_at: i64) -> (bool, bool) {
        let mut changed = false;
        if let Some(t) = c.timeout {
            changed |= self.timeout != t.wire() || matches!(t, Timeout::Schedule(_));
            self.set_timeout(t, now);
        }
        if let Some(max) = c.max_runtime {
            self.job_mut().max_runtime = (max > 0).then_some(max as i64);
            changed = true;
        }
        if c.start {
            let ext = self.job_mut();
            ext.started_at = now;
            ext.running = true;
            changed = true;
        }
        if let Some(FailReport { exit_code, output }) = c.fail {
            let ext = self.job_mut();
            ext.running = false;
            ext.failed = true;
            ext.last_failure = Some(JobFailure {
                ts: now,
                exit_code,
                output,
                reason: None,
            });
            changed = true;
        }
        let mut accepted = false;
        if c.beat {
            accepted = self.beat(now, started_at);
            // A job's beat may end a run or a failure: worth an event.
            changed |= self.job.is_some();
        }
        if self.job.is_some() {
            self.drop_unused_job();
        }
        (changed, accepted)
    }

    /// Mutes until `until` (ms; a snooze), or with no end. The latest
    /// request wins; `muted_since` keeps the start of the muting. Returns
    /// whether anything changed.
    pub fn mute(&mut self, until: Option<i64>, now: i64) -> bool {
        let mut changed = false;
        if self.muted_since == 0 {
            self.muted_since = now;
            changed = true;
        }
        let until = until.unwrap_or(0);
        if self.job.as_ref().map_or(0, |e| e.muted_until) != until {
            self.job_mut().muted_until = until;
            self.drop_unused_job();
            changed = true;
        }
        changed
    }

    /// Unmutes (a snooze too). Returns whether it was muted.
    pub fn unmute(&mut self) -> bool {
        let was = self.muted_since != 0;
        self.muted_since = 0;
        if let Some(e) = self.job.as_deref_mut() {
            e.muted_until = 0;
        }
        self.drop_unused_job();
        was
    }

    /// The job fields, allocated now if this is their first use.
    pub fn job_mut(&mut self) -> &mut JobExt {
        self.job.get_or_insert_with(Default::default)
    }

    /// Frees the job fields once nothing in them is used.
    pub fn drop_unused_job(&mut self) {
        if self.job.as_ref().is_some_and(|e| e.is_unused()) {
            self.job = None;
        }
    }

    /// The earliest time the service must be looked at again without any
    /// input: its deadline, the end of a snooze, or a run's `max_runtime`.
    pub fn next_wake(&self) -> Option<i64> {
        let ext = self.job.as_deref();
        match self.state {
            State::Muted => ext.map(|e| e.muted_until).filter(|t| *t > 0),
            State::Ok => {
                let runtime = ext.and_then(JobExt::runtime_deadline);
                match (self.deadline(), runtime) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => None,
        }
    }

    /// Applies what time alone changes (a snooze ending, a run exceeding
    /// `max_runtime`) before evaluating. Returns whether anything changed.
    pub fn advance(&mut self, now: i64) -> bool {
        let Some(ext) = self.job.as_deref_mut() else {
            return false;
        };
        let mut changed = false;
        if ext.muted_until > 0 && now >= ext.muted_until && self.muted_since > 0 {
            ext.muted_until = 0;
            self.muted_since = 0;
            changed = true;
        }
        if ext.runtime_deadline().is_some_and(|d| now >= d) && self.muted_since == 0 {
            ext.failed = true;
            ext.last_failure = Some(JobFailure {
                ts: now,
                exit_code: None,
                output: String::new(),
                reason: Some("ran too long".into()),
            });
            changed = true;
        }
        if changed {
            self.drop_unused_job();
        }
        changed
    }

    /// When the service expires, if it can.
    pub fn deadline(&self) -> Option<i64> {
        match self.timeout {
            t if t > 0 => Some(self.anchor.saturating_add(t)),
            TIMEOUT_AUTO => self.learned().map(|a| self.anchor.saturating_add(a)),
            TIMEOUT_SCHEDULE => self.job.as_ref().map(|e| e.next_deadline),
            _ => None,
        }
    }

    /// The state the rules of README, "States" give at `now`.
    pub fn evaluate(&self, now: i64) -> State {
        if self.muted_since > 0 {
            State::Muted
        } else if self.timeout == 0
            || self.deadline().is_some_and(|d| now >= d)
            || self.job.as_ref().is_some_and(|e| e.failed)
        {
            State::Error
        } else {
            State::Ok
        }
    }

    /// Records a beat at `now`. Returns false when rate limited. An interval
    /// is recorded only when the previous beat was accepted after
    /// `counting_since` (the daemon's start), so downtime never becomes one.
    pub fn beat(&mut self, now: i64, counting_since: i64) -> bool {
        if self.last_beat >= 0 && (0..RATE_LIMIT_MS).contains(&(now - self.last_beat)) {
            // Rate limited, but it still ends a run and clears a failure.
            if let Some(ext) = self.job.as_deref_mut() {
                ext.on_beat(now);
            }
            return false;
        }
        if self.last_beat >= counting_since && now > self.last_beat {
            let interval = u32::try_from(now - self.last_beat).unwrap_or(u32::MAX);
            self.push_interval(interval);
        }
        self.last_beat = now;
        self.anchor = now;
        if self.timeout == TIMEOUT_AUTO {
            self.relearn();
        }
        if let Some(ext) = self.job.as_deref_mut() {
            ext.on_beat(now);
            if let Some(s) = &ext.schedule {
                ext.next_deadline = s.deadline_after(now);
            }
        }
        true
    }

    /// Sets the timeout; a schedule replaces it, any other timeout clears
    /// a schedule. A never-beaten service counts its deadline from now.
    pub fn set_timeout(&mut self, timeout: Timeout, now: i64) {
        match timeout {
            Timeout::Schedule(s) => self.set_schedule(s, now),
            t => self.set_wire_timeout(t.wire(), now),
        }
    }

    /// Sets a timeout that is not a schedule, as its wire number.
    fn set_wire_timeout(&mut self, timeout: i64, now: i64) {
        self.timeout = timeout;
        if self.last_beat < 0 {
            self.anchor = now;
        }
        if timeout != TIMEOUT_SCHEDULE {
            if let Some(ext) = self.job.as_deref_mut() {
                ext.schedule = None;
            }
            self.drop_unused_job();
        }
        self.relearn();
    }

    /// Follows `schedule` from now on: its deadline is the first fire time
    /// after the last beat (never beaten: after now), plus grace.
    fn set_schedule(&mut self, schedule: Arc<super::job::Schedule>, now: i64) {
        self.timeout = TIMEOUT_SCHEDULE;
        let from = if self.last_beat >= 0 {
            self.last_beat
        } else {
            now
        };
        if self.last_beat < 0 {
            self.anchor = now;
        }
        self.relearn();
        let ext = self.job_mut();
        ext.next_deadline = schedule.deadline_after(from);
        ext.schedule = Some(schedule);
    }

    /// The learned timeout (ms) of an auto service with at least one
    /// interval.
    pub fn learned(&self) -> Option<i64> {
        (self.timeout == TIMEOUT_AUTO && self.auto_ms != NO_AUTO).then_some(i64::from(self.auto_ms))
    }

    /// Counts the deadline from `now` as if the service had beaten then,
    /// without changing `last_beat`: what a restart (or a jump of the
    /// clock, which is treated as one) gives every service, since beats
    /// sent meanwhile may have been lost. A schedule's next fire counts from
    /// now too, and a running job's `max_runtime`.
    pub fn restart_grace(&mut self, now: i64) {
        self.anchor = now;
        if let Some(job) = self.job.as_deref_mut() {
            if let Some(sched) = &job.schedule {
                job.next_deadline = sched.deadline_after(self.last_beat.max(now));
            }
            if job.running {
                job.started_at = job.started_at.max(now);
            }
        }
    }
}

/// A million services: every byte of `Service` counts, and job monitoring
/// (README, "Cron jobs and scripts") must not make a plain service bigger than before it (88 B).
const _: () = assert!(std::mem::size_of::<Service>() <= 88);

mod history;
mod view;

pub use history::{history_capacity, ExactChain};
pub use view::{JobView, ServiceView};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TIMEOUT_NONE;

    const T0: i64 = 1_700_000_000_000;

    fn fresh(timeout: i64) -> Service {
        Service::new(T0, timeout, ThinVec::new())
    }

    #[test]
    fn beats_within_a_second_are_rate_limited() {
        let mut s = fresh(TIMEOUT_NONE);
        assert!(s.beat(T0, 0));
        assert!(!s.beat(T0 + 999, 0));
        assert_eq!(s.last_beat, T0);
        assert!(s.beat(T0 + 1000, 0));
        assert_eq!(s.intervals().collect::<Vec<_>>(), vec![1000]);
    }

    #[test]
    fn first_beat_after_start_adds_no_interval() {
        let mut s = fresh(TIMEOUT_NONE);
        s.last_beat = T0 - 50_000; // beaten before the daemon started at T0
        assert!(s.beat(T0 + 10, T0));
        assert_eq!(s.intervals().count(), 0);
        assert!(s.beat(T0 + 2010, T0));
        assert_eq!(s.intervals().collect::<Vec<_>>(), vec![2000]);
    }

    #[test]
    fn history_keeps_last_hundred_in_order() {
        let mut s = fresh(TIMEOUT_NONE);
        s.set_history((0..250u32).collect());
        let got: Vec<u32> = s.intervals().collect();
        assert_eq!(got, (150..250).collect::<Vec<_>>());
        assert_eq!(s.intervals().len(), 100);
        assert_eq!(s.history.len(), HISTORY_LEN);
        s.set_history(vec![1, 2, 3, 4, 5]);
        assert_eq!(s.history.len(), 8);
        assert_eq!(s.intervals().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        // The ring grows from a loaded history as from beats.
        for v in 6..=9 {
            s.push_interval(v);
        }
        assert_eq!(s.history.len(), 16);
        assert_eq!(
            s.intervals().collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
    }

    #[test]
    fn state_rules() {
        let mut s = fresh(5000);
        assert_eq!(s.evaluate(T0 + 4999), State::Ok);
        assert_eq!(s.evaluate(T0 + 5000), State::Error);
        s.set_timeout(Timeout::Always, T0);
        assert_eq!(s.evaluate(T0), State::Error);
        s.muted_since = T0;
        assert_eq!(s.evaluate(T0), State::Muted);
        let never = fresh(TIMEOUT_NONE);
        assert_eq!(never.evaluate(i64::MAX), State::Ok);
    }

    #[test]
    fn never_beaten_service_expires_timeout_after_it_was_set() {
        let mut s = fresh(TIMEOUT_NONE);
        s.set_timeout(Timeout::After(2000), T0 + 500);
        assert_eq!(s.deadline(), Some(T0 + 2500));
        s.beat(T0 + 1000, 0);
        assert_eq!(s.deadline(), Some(T0 + 3000));
    }

    #[test]
    fn auto_service_does_not_expire_before_first_interval() {
        let mut s = fresh(TIMEOUT_AUTO);
        s.beat(T0, 0);
        assert_eq!(s.deadline(), None);
        s.beat(T0 + 60_000, 0);
        assert_eq!(s.deadline(), Some(T0 + 60_000 + 61_000));
    }
}
