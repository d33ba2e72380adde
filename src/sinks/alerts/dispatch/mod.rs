//! The alert dispatcher: one task that takes every alarm transition from
//! the engine, in order, and decides what each receiver is told.
//!
//! A change fires (OK→ERROR, ERROR→OK, NEW→ERROR) and reaches every
//! receiver (each alerter of each alert of the alarm, [`receiver`])
//! unless a part says otherwise; each part is a type of its own, with
//! its rule and its unit tests on a paused clock:
//!
//! - [`holds`]: held while a `depends_on` alarm is ERROR or a maintenance
//!   window holds the alarm, released (or dropped, if nothing new) when
//!   it recovers or the window ends;
//! - [`flaps`]: folded while the alarm is flapping, announced as it
//!   starts and settles;
//! - [`reminders`]: repeated every `repeat` while it stays ERROR;
//! - [`grouping`]: grouped within `group_interval` for the receivers
//!   that group;
//! - [`slots`]: delivered as tasks, a bounded number at a time, shared so
//!   that a receiver that hangs delays no other (waiting messages are
//!   data, not tasks);
//! - [`reports`]: once every receiver has had a change, the engine is
//!   told, so a restart announces what was not and nothing twice.
//!
//! Reminders, group flushes and flapping checks are timers in one
//! `DelayQueue`, not a task each.

mod flaps;
mod grouping;
mod holds;
mod receiver;
mod reminders;
mod reports;
mod slots;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;

use super::alerter::{alerters_of, Pool};
use super::config::AlertsConfig;
use super::delivery::{about, Senders};
use super::flapping::Verdict;
use super::{fires, AlertStats, Flapping, MaintenanceNote, Notice};
use crate::engine::{AlarmDef, AlarmView, Engine, State, Transition};
use crate::maintenance::Window;
use crate::sinks::notify::{Part, Reporter, REPORT_EVERY};
use crate::trouble::{self, Trouble};
use flaps::{Flaps, Look};
use holds::Holds;
use receiver::{Done, Job, Receiver, Starter};
use reminders::Reminders;
use reports::{Heard, Reports};
use slots::Slots;

/// Identifies a change being delivered.
type NoticeId = u64;

/// What a timer is for.
enum Timed {
    /// Remind `alert`'s receivers that `alarm` is still ERROR.
    Reminder {
        alarm: Arc<str>,
        alert: Arc<str>,
        incident: u64,
        n: u32,
        every: Duration,
    },
    /// Send a receiver's group.
    Flush(usize),
    /// See whether a flapping alarm settled.
    FlapCheck(Arc<str>),
}

struct Dispatcher {
    config: Arc<AlertsConfig>,
    /// The alarms as configured, indexed like `AlarmView::def`.
    defs: Arc<Vec<AlarmDef>>,
    engine: Engine,
    stats: Arc<AlertStats>,
    trouble: Trouble,
    senders: Arc<Senders>,
    public_url: Option<String>,
    receivers: Vec<Receiver>,
    /// Alert name → its receivers.
    by_alert: HashMap<String, Vec<usize>>,
    /// The changes on their way, until every receiver has had them.
    reports: Reports,
    /// What each alarm's receivers last heard.
    heard: Heard,
    /// Changes held by a failing dependency.
    holds: Holds,
    /// Flapping alarms and their checks.
    flaps: Flaps,
    /// Every timer: reminders, group flushes, flapping checks.
    timers: DelayQueue<Timed>,
    /// The reminders armed in `timers`.
    reminders: Reminders,
    /// The delivery slots.
    slots: Slots,
    /// Receivers whose last message failed.
    failing: usize,
    done: mpsc::UnboundedSender<Done>,
    tasks: TaskTracker,
    /// Input has stopped: groups go at once, no timer is armed.
    draining: bool,
    /// The maintenance windows with `notify = true` open at the last
    /// look, each with its occurrence's end: the next look tells their
    /// receivers of those that opened or ended since.
    maintenance_open: HashMap<Arc<str>, (i64, Arc<Window>)>,
}

/// Takes alarm transitions from `engine` and delivers their alerts until
/// `drain` is cancelled (input has stopped, so no new change comes); then
/// takes what is left, sends every group at once, and returns when every
/// message has been delivered or has failed. The daemon bounds how long
/// it waits for that (what is still undelivered then is counted in
/// `AlertStats::dropped` and announced after the restart). Reports to the
/// `[[notify]]` peers every `REPORT_EVERY` that it serves.
pub async fn run(
    config: Arc<AlertsConfig>,
    defs: Arc<Vec<AlarmDef>>,
    engine: Engine,
    stats: Arc<AlertStats>,
    trouble: Trouble,
    reporter: Reporter,
    drain: CancellationToken,
) -> anyhow::Result<()> {
    let senders = Arc::new(Senders::new(config.clone())?);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut receivers = Vec::new();
    let mut by_alert: HashMap<String, Vec<usize>> = HashMap::new();
    for (name, alert) in &config.alerts {
        for channel in alerters_of(alert) {
            by_alert
                .entry(name.clone())
                .or_default()
                .push(receivers.len());
            receivers.push(Receiver::new(name, channel, alert.group_interval()));
        }
    }
    let mut d = Dispatcher {
        public_url: config.public_url.clone(),
        flaps: Flaps::new(config.flapping.clone()),
        slots: Slots::new(config.max_deliveries, config.max_scripts),
        config,
        defs,
        engine: engine.clone(),
        stats,
        trouble,
        senders,
        receivers,
        by_alert,
        reports: Reports::default(),
        heard: Heard::default(),
        holds: Holds::default(),
        timers: DelayQueue::new(),
        reminders: Reminders::default(),
        failing: 0,
        done: done_tx,
        tasks: TaskTracker::new(),
        draining: false,
        maintenance_open: HashMap::new(),
    };
    // Windows open at start were announced before the stop, or opened
    // while lovebeat was down: only their end is told.
    d.maintenance_open = d.notify_windows_open(crate::clock::now_ms());
    d.resume_reminders();
    let mut alive = tokio::time::interval(REPORT_EVERY);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        if d.draining && d.idle() {
            break;
        }
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => d.on_done(done),
            _ = engine.transitions_waiting(), if !d.draining => d.take(),
            Some(t) = std::future::poll_fn(|cx| d.timers.poll_expired(cx)), if !d.timers.is_empty() => {
                d.on_timer(t.into_inner());
            }
            _ = housekeeping.tick() => {
                ticks += 1;
                d.housekeeping(ticks % 60 == 0);
            }
            _ = alive.tick() => reporter.report(Part::Alerter),
            _ = drain.cancelled(), if !d.draining => d.start_draining(),
        }
    }
    d.tasks.close();
    d.tasks.wait().await;
    Ok(())
}

impl Dispatcher {
    /// Nothing waiting, grouped or running.
    fn idle(&self) -> bool {
        self.slots.idle()
            && self
                .receivers
                .iter()
                .all(|r| r.queue.is_empty() && r.group.pending.is_empty())
    }

    /// At start: alarms that are ERROR and whose receivers heard of this
    /// incident before the restart get their reminders again.
    fn resume_reminders(&mut self) {
        if !self
            .config
            .alerts
            .values()
            .any(|a| a.repeat.is_some_and(|r| r.ms > 0))
        {
            return;
        }
        for alarm in self.engine.alarms() {
            if alarm.state != State::Error
                || alarm.flapping
                || alarm.announced != (State::Error, alarm.incident_nbr)
            {
                continue;
            }
            for alert in self.alerts_of(&alarm).to_vec() {
                self.start_reminder(&alarm.name, alarm.incident_nbr, &alert);
            }
        }
    }

    fn take(&mut self) {
        for t in self.engine.take_transitions() {
            self.on_transition(t);
        }
    }

    /// Input has stopped: handle what is left, send every group now, stop
    /// reminders and flapping checks (a restart starts them again).
    fn start_draining(&mut self) {
        self.draining = true;
        self.take();
        self.timers.clear();
        self.reminders.clear();
        self.flaps.clear();
        for r in &mut self.receivers {
            r.group.flush = None;
        }
        for idx in 0..self.receivers.len() {
            self.flush(idx);
        }
        self.pump();
    }

    fn notice(
        &self,
        alarm: AlarmView,
        previous: State,
        ts: i64,
        flapping: Option<Flapping>,
    ) -> Notice {
        let failure = if alarm.state == State::Error {
            alarm
                .cause
                .as_ref()
                .and_then(|c| self.engine.service(c, false))
                .and_then(|s| s.job.and_then(|j| j.last_failure))
        } else {
            None
        };
        let url = self.public_url.as_ref().map(|u| {
            format!(
                "{u}alarms/{}",
                percent_encoding::utf8_percent_encode(&alarm.name, crate::redact::PATH_SEGMENT)
            )
        });
        Notice {
            alarm,
            previous,
            ts,
            url,
            failure,
            repeat: 0,
            flapping,
            open_incident: None,
            test: false,
            maintenance: None,
        }
    }

    fn alerts_of(&self, alarm: &AlarmView) -> &[String] {
        alarm
            .def
            .and_then(|d| self.defs.get(d))
            .map_or(&[], |def| def.alerts.as_slice())
    }

    /// True when `alarm` is ERROR as of the transitions handled so far (an
    /// alarm none has mentioned is as the engine holds it; one that no
    /// longer exists holds nothing).
    fn in_error(&self, alarm: &str) -> bool {
        match self.holds.state(alarm) {
            Some(state) => state == State::Error && self.engine.alarm(alarm).is_some(),
            None => self.engine.alarm_in_error(alarm),
        }
    }

    /// Tells the engine what `alarm`'s receivers heard, when no change of
    /// it is still on its way.
    fn mark_if_settled(&self, alarm: &Arc<str>, state: State, incident: u64) {
        if self.reports.settled(alarm) {
            self.engine.mark_announced(alarm, state, incident);
        }
    }

    fn on_transition(&mut self, t: Transition) {
        let name = t.alarm.name.clone();
        let (mut previous, state) = (t.previous, t.alarm.state);
        if t.merged > 0 && previous == state {
            // The engine merged a round trip (ERROR→OK→ERROR) into one
            // transition: it is still a change, with a new incident.
            previous = match state {
                State::Error => State::Ok,
                State::Ok => State::Error,
                other => other,
            };
        }
        self.holds.record(name.clone(), state);
        if previous == State::Error {
            self.release_dependents(&name);
        }
        if !fires(previous, state) || self.alerts_of(&t.alarm).is_empty() {
            self.mark_if_settled(&name, state, t.alarm.incident_nbr);
            return;
        }
        let changes = 1 + t.merged as usize;
        let flapping = match self.flaps.change(&name, t.ts, changes) {
            Verdict::Hold => return,
            Verdict::Announce => None,
            Verdict::Start { changes } => {
                self.stats.flapping.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "alarm {} is flapping ({changes} changes within the window): its changes are held until it settles",
                    name.escape_debug()
                );
                self.engine
                    .set_flapping(&name, true, crate::clock::now_ms());
                self.flaps
                    .schedule(&mut self.timers, &name, crate::clock::now_ms());
                Some(Flapping::Started { changes })
            }
        };
        let notice = self.notice(t.alarm, previous, t.ts, flapping);
        self.route(notice);
    }

    /// The maintenance windows open now that hold `notice` (README,
    /// "Maintenance windows").
    fn windows_holding(&self, notice: &Notice) -> Vec<Arc<str>> {
        self.engine.maintenance().holding_alarm(
            &notice.alarm.name,
            &notice.alarm.failed_services,
            crate::clock::now_ms(),
        )
    }

    /// True while a maintenance window holds `alarm`: by its name, or
    /// through its failed services as they are now (a member outside the
    /// windows that failed since the change was held releases it; no
    /// transition would).
    fn still_in_maintenance(&self, alarm: &str) -> bool {
        let now = crate::clock::now_ms();
        let maintenance = self.engine.maintenance();
        if maintenance.open_windows(now).is_empty() {
            return false;
        }
        if !maintenance.active_for_alarm(alarm, now).is_empty() {
            return true;
        }
        // The view comes with its windows filled in from its failed list.
        self.engine
            .alarm(alarm)
            .is_some_and(|v| !v.maintenance.is_empty())
    }

    /// Sends `notice` unless a dependency or a maintenance window holds it.
    fn route(&mut self, notice: Notice) {
        let name = notice.alarm.name.clone();
        let holding = Holds::holding(&notice, |d| self.in_error(d));
        let windows = self.windows_holding(&notice);
        if holding.is_empty() && windows.is_empty() {
            self.holds.unhold(&name);
            self.send(notice);
        } else {
            if holding.is_empty() {
                tracing::info!(
                    "alert of alarm {} (incident {}) held during maintenance window {}",
                    name.escape_debug(),
                    notice.alarm.incident_nbr,
                    windows.join(", ")
                );
            } else {
                tracing::info!(
                    "alert of alarm {} (incident {}) held while {} is in ERROR",
                    name.escape_debug(),
                    notice.alarm.incident_nbr,
                    holding.join(", ")
                );
            }
            self.reminders.stop(&mut self.timers, &name);
            self.holds.hold(notice);
        }
    }

    /// After `recovered` left ERROR: sends each held change none of whose
    /// dependencies is ERROR any more, if its alarm's state differs from
    /// the state it last announced; drops it otherwise.
    fn release_dependents(&mut self, recovered: &str) {
        let ready = self.holds.ready(Some(recovered), |d| self.in_error(d));
        self.release(ready);
    }

    fn release(&mut self, ready: Vec<Arc<str>>) {
        for name in ready {
            // Still in a maintenance window: the window's end releases it
            // (housekeeping looks every second).
            if self.holds.peek(&name).is_some() && self.still_in_maintenance(&name) {
                continue;
            }
            let Some(notice) = self.holds.take(&name) else {
                continue;
            };
            let current = notice.alarm.state;
            if !self.heard.is_news(&notice) {
                tracing::info!(
                    "held alert of alarm {} dropped: it is {} again",
                    name.escape_debug(),
                    current.as_upper()
                );
                self.mark_if_settled(&name, current, notice.alarm.incident_nbr);
                continue;
            }
            tracing::info!("held alert of alarm {} released", name.escape_debug());
            self.send(notice);
        }
    }

    /// Hands a change to every receiver of the alarm's alerts and starts
    /// its reminders.
    fn send(&mut self, mut notice: Notice) {
        let name = notice.alarm.name.clone();
        self.reminders.stop(&mut self.timers, &name);
        let (state, incident) = (notice.alarm.state, notice.alarm.incident_nbr);
        notice.open_incident = self.heard.open_incident(&notice.alarm);
        let opens = self.heard.sending(&notice);
        let alerts: Vec<String> = self.alerts_of(&notice.alarm).to_vec();
        // Its receivers, known before it is tracked: a change none hears
        // is settled at once.
        let receivers: Vec<usize> = alerts
            .iter()
            .flat_map(|a| self.by_alert.get(a).cloned().unwrap_or_default())
            .collect();
        // What its receivers hear is saved as the alarm's announced
        // state: the start of flapping counts as an ERROR, since it opens
        // an incident that a restart must not forget to close.
        let heard = if opens { State::Error } else { state };
        let id = (!receivers.is_empty()).then(|| {
            self.reports
                .track(name.clone(), heard, incident, receivers.len())
        });
        // A flapping alarm is not reminded of; one that settled in ERROR is.
        let reminders = state == State::Error
            && !matches!(notice.flapping, Some(Flapping::Started { .. }))
            && !self.draining;
        let notice = Arc::new(notice);
        for idx in receivers {
            self.enqueue(idx, notice.clone(), id);
        }
        if reminders {
            for alert in &alerts {
                self.start_reminder(&name, incident, alert);
            }
        }
        if id.is_none() {
            self.mark_if_settled(&name, heard, incident);
            return;
        }
        self.pump();
    }

    fn start_reminder(&mut self, alarm: &Arc<str>, incident: u64, alert: &str) {
        let every = self
            .config
            .alerts
            .get(alert)
            .and_then(|a| a.repeat)
            .map(|r| Duration::from_millis(r.ms))
            .filter(|d| !d.is_zero());
        let Some(every) = every else { return };
        self.reminders.arm(
            &mut self.timers,
            alarm.clone(),
            alert.into(),
            incident,
            1,
            every,
        );
    }

    /// Gives a receiver a change: at once, or into its group. A reminder is
    /// skipped while the receiver still holds the alarm's last one.
    fn enqueue(&mut self, idx: usize, notice: Arc<Notice>, id: Option<NoticeId>) {
        let now = Instant::now();
        let r = &mut self.receivers[idx];
        if notice.repeat > 0 && !r.reminding.insert(notice.alarm.name.clone()) {
            return;
        }
        // A receiver that groups sends at once only the first change
        // after a quiet interval with nothing waiting or under way.
        let groups = r.channel.groups();
        let idle = r.running == 0 && r.queue.is_empty();
        if groups && !r.group.sends_at_once(now, idle) {
            r.group.pending.push((notice, id));
            self.schedule_flush(idx);
            return;
        }
        if groups {
            r.group.last_sent = Some(now);
        }
        let job = Job {
            notices: vec![notice],
            ids: id.into_iter().collect(),
        };
        self.push_job(idx, job);
    }

    /// Puts a message in a receiver's queue, for [`Dispatcher::pump`].
    fn push_job(&mut self, idx: usize, job: Job) {
        self.receivers[idx].queue.push_back(job);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Arms a receiver's flush for when its interval since the last
    /// message has passed (at once if it has), unless one is armed or a
    /// message is still on its way (its end arms it).
    fn schedule_flush(&mut self, idx: usize) {
        let r = &mut self.receivers[idx];
        if r.running > 0 || !r.queue.is_empty() {
            return;
        }
        if let Some(at) = r.group.flush_at(Instant::now()) {
            r.group.flush = Some(self.timers.insert_at(Timed::Flush(idx), at));
        }
    }

    /// Makes one message of a receiver's group.
    fn flush(&mut self, idx: usize) {
        let Some((notices, ids)) = self.receivers[idx].group.take(Instant::now()) else {
            return;
        };
        self.push_job(idx, Job { notices, ids });
    }

    /// Starts what the slots allow ([`Slots::fill`]), oldest message
    /// first (skipping, for receivers that send one message per change,
    /// alarms with one in flight, so an alarm's changes arrive in order).
    fn pump(&mut self) {
        let share = [
            self.slots.share(Pool::Deliveries),
            self.slots.share(Pool::Scripts),
        ];
        let mut starter = Starter {
            receivers: &mut self.receivers,
            share,
            senders: &self.senders,
            done: &self.done,
            tasks: &self.tasks,
        };
        self.slots.fill(&mut starter);
    }

    fn on_done(&mut self, done: Done) {
        // Saturating, so a miscount can never wrap the gauge.
        let _ = self
            .stats
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| q.checked_sub(1));
        let r = &mut self.receivers[done.receiver];
        for n in &done.job.notices {
            if n.repeat > 0 {
                r.reminding.remove(&n.alarm.name);
            }
        }
        r.running -= 1;
        self.slots.release(r.channel.pool());
        if !r.channel.groups() {
            r.busy.remove(&done.job.notices[0].alarm.name);
        }
        let group: Vec<&Notice> = done.job.notices.iter().map(|n| n.as_ref()).collect();
        match &done.result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.stats.count_kind(r.channel.kind(), true);
                if r.failing {
                    r.failing = false;
                    self.failing -= 1;
                    tracing::info!(
                        "{} of alert {} delivers again",
                        r.channel.kind(),
                        r.alert.escape_debug()
                    );
                    if self.failing == 0 {
                        self.trouble.ok(trouble::Part::Alerts);
                    }
                }
            }
            Err(reason) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.stats.count_kind(r.channel.kind(), false);
                tracing::error!(
                    "{} of alert {} not delivered {}: {reason}",
                    r.channel.kind(),
                    r.alert.escape_debug(),
                    about(&group)
                );
                if !r.failing {
                    r.failing = true;
                    self.failing += 1;
                }
                let what = format!("{} of alert {} fails: {reason}", r.channel.kind(), r.alert);
                self.trouble.fail(trouble::Part::Alerts, &what);
            }
        }
        for id in done.job.ids {
            self.finish(id);
        }
        if self.draining {
            self.flush(done.receiver);
        } else {
            self.schedule_flush(done.receiver);
        }
        self.pump();
    }

    /// One receiver is done with change `id`; once all are, what its
    /// alarm's receivers heard is told to the engine ([`Reports::finish`]).
    fn finish(&mut self, id: NoticeId) {
        if let Some((alarm, state, incident)) = self.reports.finish(id) {
            self.engine.mark_announced(&alarm, state, incident);
        }
    }

    fn on_timer(&mut self, t: Timed) {
        match t {
            Timed::Flush(idx) => {
                self.receivers[idx].group.flush = None;
                if self.receivers[idx].running == 0 {
                    self.flush(idx);
                    self.pump();
                }
            }
            Timed::Reminder {
                alarm,
                alert,
                incident,
                n,
                every,
            } => {
                self.reminders.fired(&alarm, &alert);
                self.remind(alarm, alert, incident, n, every);
            }
            Timed::FlapCheck(alarm) => {
                self.flap_check(alarm);
            }
        }
    }

    /// While the alarm stays ERROR in the same incident, queues the n-th
    /// reminder for `alert` (skipped while a dependency holds the alarm)
    /// and arms the next.
    fn remind(&mut self, alarm: Arc<str>, alert: Arc<str>, incident: u64, n: u32, every: Duration) {
        let Some(now) = self.engine.alarm(&alarm) else {
            return;
        };
        if now.state != State::Error || now.incident_nbr != incident || now.flapping {
            return;
        }
        let mut next = n;
        // `now` comes with its suppression and maintenance filled in.
        if now.suppressed_by.is_empty() && now.maintenance.is_empty() && !self.holds.is_held(&alarm)
        {
            let mut notice = self.notice(now, State::Ok, crate::clock::now_ms(), None);
            notice.repeat = n;
            notice.open_incident = Some(incident);
            let notice = Arc::new(notice);
            for idx in self.by_alert.get(&*alert).cloned().unwrap_or_default() {
                self.enqueue(idx, notice.clone(), None);
            }
            self.pump();
            next += 1;
        }
        self.reminders
            .arm(&mut self.timers, alarm, alert, incident, next, every);
    }

    /// A flapping alarm settled when its changes in the window fell to
    /// `stop`: announce its final state; else look again later.
    fn flap_check(&mut self, alarm: Arc<str>) {
        let now = crate::clock::now_ms();
        if self.flaps.look(&mut self.timers, &alarm, now) != Look::Settled {
            return;
        }
        self.engine.set_flapping(&alarm, false, now);
        let Some(view) = self.engine.alarm(&alarm) else {
            self.flaps.forget(&alarm);
            return;
        };
        tracing::info!(
            "alarm {} stopped flapping; it is {}",
            alarm.escape_debug(),
            view.state.as_upper()
        );
        let previous = self.heard.last_heard(&view);
        let notice = self.notice(view, previous, now, Some(Flapping::Stopped));
        self.route(notice);
    }

    /// The windows with `notify = true` open at `now`.
    fn notify_windows_open(&self, now: i64) -> HashMap<Arc<str>, (i64, Arc<Window>)> {
        self.engine
            .maintenance()
            .list()
            .iter()
            .filter(|w| w.spec.notify)
            .filter_map(|w| {
                let (start, end) = w.current_or_next(now)?;
                (start <= now).then(|| (Arc::from(w.name()), (end, w.clone())))
            })
            .collect()
    }

    /// Tells the receivers of the windows with `notify = true` that
    /// opened or ended since the last look (README, "Maintenance
    /// windows"); a window deleted while open has ended.
    fn maintenance_notices(&mut self) {
        let now = crate::clock::now_ms();
        let open = self.notify_windows_open(now);
        if open.is_empty() && self.maintenance_open.is_empty() {
            return;
        }
        let ended: Vec<Arc<Window>> = self
            .maintenance_open
            .iter()
            .filter(|(k, _)| !open.contains_key(*k))
            .map(|(_, (_, w))| w.clone())
            .collect();
        let started: Vec<(Arc<Window>, i64)> = open
            .iter()
            .filter(|(k, _)| !self.maintenance_open.contains_key(*k))
            .map(|(_, (end, w))| (w.clone(), *end))
            .collect();
        self.maintenance_open = open;
        for w in ended {
            self.tell_maintenance(&w, false, now, now);
        }
        for (w, end) in started {
            self.tell_maintenance(&w, true, now, end);
        }
    }

    /// Queues a maintenance notice for the mail and chat receivers of the
    /// alerts of the alarms `w` names ([`super::alerter::Alerter::hears_maintenance`]):
    /// each receiver once, however many of its alarms the window holds.
    fn tell_maintenance(&mut self, w: &Window, opened: bool, now: i64, until: i64) {
        if self.draining {
            return;
        }
        let alarms: Vec<Arc<str>> = self
            .engine
            .alarm_names()
            .into_iter()
            .filter(|a| w.covers_alarm(a))
            .collect();
        let mut receivers: Vec<usize> = Vec::new();
        for a in &alarms {
            let Some(view) = self.engine.alarm(a) else {
                continue;
            };
            for alert in self.alerts_of(&view) {
                for &idx in self.by_alert.get(alert).map_or(&[][..], |v| v.as_slice()) {
                    let hears = self
                        .receivers
                        .get(idx)
                        .is_some_and(|r| r.channel.hears_maintenance());
                    if hears && !receivers.contains(&idx) {
                        receivers.push(idx);
                    }
                }
            }
        }
        tracing::info!(
            "maintenance window {} {}",
            w.name(),
            if opened { "opened" } else { "ended" }
        );
        if receivers.is_empty() {
            return;
        }
        let notice = Arc::new(Notice {
            alarm: AlarmView::standalone(w.name(), State::Ok, 0, Vec::new(), now),
            previous: State::Ok,
            ts: now,
            url: None,
            failure: None,
            repeat: 0,
            flapping: None,
            open_incident: None,
            test: false,
            maintenance: Some(MaintenanceNote {
                window: w.name().to_string(),
                opened,
                until,
                comment: w.spec.comment.clone(),
                alarms: alarms.iter().map(|a| a.to_string()).collect(),
            }),
        });
        for idx in receivers {
            self.enqueue(idx, notice.clone(), None);
        }
        self.pump();
    }

    /// Every second: releases held changes whose dependencies were deleted
    /// while ERROR (no transition will release them) and those whose
    /// maintenance window ended (no transition marks that); every minute, forgets
    /// alarms that no longer exist.
    fn housekeeping(&mut self, prune: bool) {
        self.maintenance_notices();
        if !self.holds.is_empty() {
            let ready = self.holds.ready(None, |d| self.in_error(d));
            self.release(ready);
        }
        if prune {
            // `alarm_status` is O(1); `alarm` would copy each alarm's view.
            let engine = &self.engine;
            let exists = |a: &str| engine.alarm_status(a).is_some();
            self.holds.prune(exists);
            self.heard.prune(exists);
            self.flaps.prune(crate::clock::now_ms(), exists);
        }
    }
}
