//! The alert dispatcher: one task that takes every alarm transition from
//! the engine, in order, and decides what each receiver is told.
//!
//! - A change fires (OK→ERROR, ERROR→OK, NEW→ERROR) unless the alarm is
//!   flapping ([`super::flapping`]) or a `depends_on` alarm is ERROR: then
//!   its latest change is held and released, or dropped if the alarm is
//!   back where its receivers last heard it, when the dependency recovers.
//! - Each channel of each alert of the alarm is a receiver. Webhooks,
//!   pagers, templated webhooks and scripts get one message per change,
//!   in order per alarm, several alarms at a time. The receivers that
//!   group (mail, Slack, the chats and pushes: `Alerter::groups`) get
//!   the first change at once and the changes of the next
//!   `group_interval` together in one message, one message at a time.
//! - Deliveries run as tasks, at most `max_alert_deliveries` (and
//!   `max_scripts`) at a time: a quarter of them for one HTTP receiver
//!   that sends per change, and a slot kept for every receiver that has
//!   none (up to half), so a receiver that hangs delays no other. Messages waiting for a slot are
//!   data, not tasks: a mass outage queues a record per change.
//! - When every receiver of a change has had its message (delivered, or
//!   failed for good: logged and counted), the engine is told that the
//!   alarm's receivers heard of it; a save keeps that, so a restart
//!   announces what was not.
//! - Reminders (`repeat`), group flushes and flapping checks are timers in
//!   one `DelayQueue`, not a task each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::delay_queue::{self, DelayQueue};

use super::alerter::{alerters_of, Alerter, Pool};
use super::config::AlertsConfig;
use super::delivery::{about, Senders, Undelivered};
use super::flapping::{Detector, Verdict};
use super::{fires, AlertStats, Flapping, Notice};
use crate::engine::{AlarmDef, AlarmView, Engine, State, Transition};
use crate::sinks::notify::{Part, Reporter, REPORT_EVERY};
use crate::trouble::{self, Trouble};

/// Jobs looked at, from the front of a receiver's queue, for one whose
/// alarm has no message in flight.
const SCAN: usize = 256;

/// Identifies a change being delivered.
type NoticeId = u64;

/// A change on its way to its receivers.
struct Tracked {
    alarm: Arc<str>,
    state: State,
    incident: u64,
    /// Receivers that have not had it yet.
    remaining: usize,
}

/// One message for one receiver: a change, or a group of them.
struct Job {
    notices: Vec<Arc<Notice>>,
    /// The tracked changes it carries (reminders are not tracked).
    ids: Vec<NoticeId>,
}

/// One channel of one alert.
struct Receiver {
    alert: Arc<str>,
    channel: Arc<dyn Alerter>,
    interval: Duration,
    /// Messages waiting for a delivery slot.
    queue: VecDeque<Job>,
    /// Messages being delivered.
    running: usize,
    /// Alarms with a message in flight here (receivers that send per
    /// change keep each alarm's order).
    busy: HashSet<Arc<str>>,
    /// Changes waiting for the group's next message (receivers that
    /// group).
    group: Vec<(Arc<Notice>, Option<NoticeId>)>,
    /// When the last grouped message was made.
    last_sent: Option<Instant>,
    /// The pending flush timer.
    flush: Option<delay_queue::Key>,
    /// Its last message failed for good.
    failing: bool,
    /// Alarms with a reminder waiting or in flight here: the next reminder
    /// is skipped while one is, so a receiver that fails for hours holds
    /// one reminder per alarm, not one per `repeat`.
    reminding: HashSet<Arc<str>>,
}

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

/// The pool of delivery slots a channel draws from: 0 for HTTP and mail
/// (`max_alert_deliveries`), 1 for scripts (`max_scripts`).
fn pool(channel: &dyn Alerter) -> usize {
    channel.pool() as usize
}

/// What a delivery task reports when it ends.
struct Done {
    receiver: usize,
    job: Job,
    result: Result<(), Undelivered>,
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
    tracked: HashMap<NoticeId, Tracked>,
    /// Each alarm's tracked changes, oldest first.
    order: HashMap<Arc<str>, VecDeque<NoticeId>>,
    next_id: NoticeId,
    /// The state each alarm last announced (absent: never, counts as OK).
    alerted: HashMap<Arc<str>, State>,
    /// The incident each alarm's receivers were last told is open (by an
    /// ERROR or the start of flapping), in this run; absent, the database
    /// says ([`Dispatcher::open_incident`]).
    opened: HashMap<Arc<str>, Option<u64>>,
    /// The latest change held back by a failing dependency.
    held: HashMap<Arc<str>, Notice>,
    /// Each alarm's state as of the latest transition handled.
    /// Dependencies are judged by it, not by the engine's state now, which
    /// may already be transitions ahead: a parent that failed and
    /// recovered before its child's transitions were handled must still
    /// hold them.
    states: HashMap<Arc<str>, State>,
    flapping: Detector,
    timers: DelayQueue<Timed>,
    reminders: HashMap<(Arc<str>, Arc<str>), delay_queue::Key>,
    flap_checks: HashMap<Arc<str>, delay_queue::Key>,
    /// Deliveries running, per pool ([`pool`]): HTTP and mail, scripts.
    running: [usize; 2],
    /// Receivers whose last message failed.
    failing: usize,
    done: mpsc::UnboundedSender<Done>,
    tasks: TaskTracker,
    /// The receiver the next [`Dispatcher::pump`] serves first.
    pump_from: usize,
    draining: bool,
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
            receivers.push(Receiver {
                alert: name.as_str().into(),
                channel,
                interval: alert.group_interval(),
                queue: VecDeque::new(),
                running: 0,
                busy: HashSet::new(),
                group: Vec::new(),
                last_sent: None,
                flush: None,
                failing: false,
                reminding: HashSet::new(),
            });
        }
    }
    let mut d = Dispatcher {
        public_url: config.public_url.clone(),
        flapping: Detector::new(config.flapping.clone()),
        config,
        defs,
        engine: engine.clone(),
        stats,
        trouble,
        senders,
        receivers,
        by_alert,
        tracked: HashMap::new(),
        order: HashMap::new(),
        next_id: 0,
        alerted: HashMap::new(),
        opened: HashMap::new(),
        held: HashMap::new(),
        states: HashMap::new(),
        timers: DelayQueue::new(),
        reminders: HashMap::new(),
        flap_checks: HashMap::new(),
        running: [0, 0],
        failing: 0,
        done: done_tx,
        tasks: TaskTracker::new(),
        pump_from: 0,
        draining: false,
    };
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
        self.running == [0, 0]
            && self
                .receivers
                .iter()
                .all(|r| r.queue.is_empty() && r.group.is_empty())
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

    /// The state `alarm`'s receivers last heard: what this run sent, else
    /// what the database says was announced before the restart.
    fn last_heard(&self, alarm: &AlarmView) -> State {
        match self.alerted.get(&alarm.name) {
            Some(state) => *state,
            None if alarm.announced.0 == State::Error => State::Error,
            None => State::Ok,
        }
    }

    /// The incident `alarm`'s receivers were last told is open: what this
    /// run sent, else an ERROR announced before the restart.
    fn open_incident(&self, alarm: &AlarmView) -> Option<u64> {
        match self.opened.get(&alarm.name) {
            Some(open) => *open,
            None if alarm.announced.0 == State::Error => Some(alarm.announced.1),
            None => None,
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
        self.flap_checks.clear();
        for r in &mut self.receivers {
            r.flush = None;
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
        match self.states.get(alarm) {
            Some(state) => *state == State::Error && self.engine.alarm(alarm).is_some(),
            None => self.engine.alarm_in_error(alarm),
        }
    }

    /// Tells the engine what `alarm`'s receivers heard, when no change of
    /// it is still on its way.
    fn mark_if_settled(&self, alarm: &Arc<str>, state: State, incident: u64) {
        if self.order.get(alarm).is_none_or(VecDeque::is_empty) {
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
        self.states.insert(name.clone(), state);
        if previous == State::Error {
            self.release_dependents(&name);
        }
        if !fires(previous, state) || self.alerts_of(&t.alarm).is_empty() {
            self.mark_if_settled(&name, state, t.alarm.incident_nbr);
            return;
        }
        let changes = 1 + t.merged as usize;
        let flapping = match self.flapping.change(&name, t.ts, changes) {
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
                self.schedule_flap_check(&name);
                Some(Flapping::Started { changes })
            }
        };
        let notice = self.notice(t.alarm, previous, t.ts, flapping);
        self.route(notice);
    }

    fn schedule_flap_check(&mut self, alarm: &Arc<str>) {
        if let Some(at) = self.flapping.next_check(alarm) {
            let wait =
                Duration::from_millis(u64::try_from(at - crate::clock::now_ms()).unwrap_or(0) + 1);
            if let Some(key) = self.flap_checks.remove(alarm) {
                self.timers.try_remove(&key);
            }
            let key = self.timers.insert(Timed::FlapCheck(alarm.clone()), wait);
            self.flap_checks.insert(alarm.clone(), key);
        }
    }

    /// Sends `notice` unless a dependency holds it.
    fn route(&mut self, notice: Notice) {
        let name = notice.alarm.name.clone();
        let holding: Vec<&str> = notice
            .alarm
            .depends_on
            .iter()
            .filter(|d| self.in_error(d))
            .map(|d| d.as_ref())
            .collect();
        if holding.is_empty() {
            self.held.remove(&name);
            self.send(notice);
        } else {
            tracing::info!(
                "alert of alarm {} (incident {}) held while {} is in ERROR",
                name.escape_debug(),
                notice.alarm.incident_nbr,
                holding.join(", ")
            );
            self.stop_reminders(&name);
            self.held.insert(name, notice);
        }
    }

    /// After `recovered` left ERROR: sends each held change none of whose
    /// dependencies is ERROR any more, if its alarm's state differs from
    /// the state it last announced; drops it otherwise.
    fn release_dependents(&mut self, recovered: &str) {
        let ready: Vec<Arc<str>> = self
            .held
            .iter()
            .filter(|(_, n)| n.alarm.depends_on.iter().any(|d| &**d == recovered))
            .filter(|(_, n)| !n.alarm.depends_on.iter().any(|d| self.in_error(d)))
            .map(|(k, _)| k.clone())
            .collect();
        self.release(ready);
    }

    fn release(&mut self, ready: Vec<Arc<str>>) {
        for name in ready {
            let Some(notice) = self.held.remove(&name) else {
                continue;
            };
            let current = notice.alarm.state;
            let last = self.last_heard(&notice.alarm);
            if current == last && notice.flapping.is_none() {
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
        self.stop_reminders(&name);
        let (state, incident) = (notice.alarm.state, notice.alarm.incident_nbr);
        self.alerted.insert(name.clone(), state);
        notice.open_incident = self.open_incident(&notice.alarm);
        let opens =
            state == State::Error || matches!(notice.flapping, Some(Flapping::Started { .. }));
        self.opened.insert(name.clone(), opens.then_some(incident));
        let alerts: Vec<String> = self.alerts_of(&notice.alarm).to_vec();
        let id = self.next_id;
        self.next_id += 1;
        // A flapping alarm is not reminded of; one that settled in ERROR is.
        let reminders = state == State::Error
            && !matches!(notice.flapping, Some(Flapping::Started { .. }))
            && !self.draining;
        let notice = Arc::new(notice);
        let mut remaining = 0;
        for alert in &alerts {
            for idx in self.by_alert.get(alert).cloned().unwrap_or_default() {
                remaining += 1;
                self.enqueue(idx, notice.clone(), Some(id));
            }
            if reminders {
                self.start_reminder(&name, incident, alert);
            }
        }
        // What its receivers hear is saved as the alarm's announced
        // state: the start of flapping counts as an ERROR, since it opens
        // an incident that a restart must not forget to close.
        let heard = if opens { State::Error } else { state };
        if remaining == 0 {
            self.mark_if_settled(&name, heard, incident);
            return;
        }
        self.tracked.insert(
            id,
            Tracked {
                alarm: name.clone(),
                state: heard,
                incident,
                remaining,
            },
        );
        self.order.entry(name).or_default().push_back(id);
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
        self.arm_reminder(alarm.clone(), alert.into(), incident, 1, every);
    }

    /// Arms reminder `n` of `alert` for `alarm`, `every` from now,
    /// replacing one armed before.
    fn arm_reminder(
        &mut self,
        alarm: Arc<str>,
        alert: Arc<str>,
        incident: u64,
        n: u32,
        every: Duration,
    ) {
        let key = self.timers.insert(
            Timed::Reminder {
                alarm: alarm.clone(),
                alert: alert.clone(),
                incident,
                n,
                every,
            },
            every,
        );
        if let Some(old) = self.reminders.insert((alarm, alert), key) {
            self.timers.try_remove(&old);
        }
    }

    fn stop_reminders(&mut self, alarm: &Arc<str>) {
        if self.reminders.is_empty() {
            return;
        }
        let keys: Vec<(Arc<str>, Arc<str>)> = self
            .reminders
            .keys()
            .filter(|(a, _)| a == alarm)
            .cloned()
            .collect();
        for k in keys {
            if let Some(key) = self.reminders.remove(&k) {
                self.timers.try_remove(&key);
            }
        }
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
        let at_once = !groups
            || (r.group.is_empty()
                && r.flush.is_none()
                && r.running == 0
                && r.queue.is_empty()
                && r.last_sent.is_none_or(|t| now >= t + r.interval));
        if !at_once {
            r.group.push((notice, id));
            self.schedule_flush(idx);
            return;
        }
        if groups {
            r.last_sent = Some(now);
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
        if r.flush.is_some() || r.group.is_empty() || r.running > 0 || !r.queue.is_empty() {
            return;
        }
        let at = r
            .last_sent
            .map_or_else(Instant::now, |t| t + r.interval)
            .max(Instant::now());
        r.flush = Some(self.timers.insert_at(Timed::Flush(idx), at));
    }

    /// Makes one message of a receiver's group.
    fn flush(&mut self, idx: usize) {
        let r = &mut self.receivers[idx];
        if r.group.is_empty() {
            return;
        }
        let (notices, ids): (Vec<Arc<Notice>>, Vec<Option<NoticeId>>) =
            std::mem::take(&mut r.group).into_iter().unzip();
        r.last_sent = Some(Instant::now());
        let job = Job {
            notices,
            ids: ids.into_iter().flatten().collect(),
        };
        self.push_job(idx, job);
    }

    /// Starts what the slots allow: every receiver in turn, up to its
    /// share, oldest message first (skipping, for receivers that send one
    /// message per change, alarms with one in flight, so an alarm's
    /// changes arrive in order). A receiver's first slot is kept for
    /// it: one that has a delivery under way takes another only while a
    /// slot stays free for every receiver that has none (up to half the
    /// slots), so receivers that hang (each holding slots through a
    /// minute of retries) never leave another without one.
    fn pump(&mut self) {
        let size = [
            self.config.max_deliveries.max(1),
            self.config.max_scripts.max(1),
        ];
        let share = (size[0] / 4).max(1);
        // Receivers with nothing under way, per pool.
        let mut idle = [0, 0];
        for r in self.receivers.iter().filter(|r| r.running == 0) {
            idle[pool(r.channel.as_ref())] += 1;
        }
        // Each pump starts with the next receiver: when slots are short,
        // none is always served last.
        let n = self.receivers.len();
        self.pump_from = if n == 0 { 0 } else { (self.pump_from + 1) % n };
        for idx in (self.pump_from..n).chain(0..self.pump_from) {
            loop {
                let r = &self.receivers[idx];
                let p = pool(r.channel.as_ref());
                let cap = if r.channel.groups() {
                    1
                } else if r.channel.pool() == Pool::Scripts {
                    size[p]
                } else {
                    share
                };
                let (in_use, slots, waiting) = (self.running[p], size[p], idle[p]);
                // A first slot is any free one; another leaves one free
                // for each receiver that has none, up to half the pool
                // (many receivers must not shrink a busy one's share to
                // nothing).
                let full = if r.running == 0 {
                    in_use >= slots
                } else {
                    in_use + waiting.min(slots / 2) >= slots
                };
                if r.running >= cap || full || r.queue.is_empty() {
                    break;
                }
                let pos = if r.channel.groups() {
                    Some(0)
                } else {
                    r.queue
                        .iter()
                        .take(SCAN)
                        .position(|j| !r.busy.contains(&j.notices[0].alarm.name))
                };
                let Some(pos) = pos else { break };
                let r = &mut self.receivers[idx];
                let Some(job) = r.queue.remove(pos) else {
                    break;
                };
                if !r.channel.groups() {
                    r.busy.insert(job.notices[0].alarm.name.clone());
                }
                if r.running == 0 {
                    idle[p] -= 1;
                }
                r.running += 1;
                self.running[p] += 1;
                let (senders, channel, done) =
                    (self.senders.clone(), r.channel.clone(), self.done.clone());
                self.tasks.spawn(async move {
                    use futures_util::FutureExt;
                    // An alerter that panics still gives its slot, its
                    // alarm and its change back: a task that never says
                    // it is done would hold them for good.
                    let result = std::panic::AssertUnwindSafe(
                        senders.deliver(channel.as_ref(), &job.notices),
                    )
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(Undelivered {
                            reason: format!("{} alerter failed unexpectedly", channel.kind()),
                        })
                    });
                    let _ = done.send(Done {
                        receiver: idx,
                        job,
                        result,
                    });
                });
            }
        }
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
        self.running[pool(r.channel.as_ref())] -= 1;
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

    /// One receiver is done with change `id`; once all are, the changes of
    /// its alarm that are all done, in order, are marked announced.
    fn finish(&mut self, id: NoticeId) {
        let Some(t) = self.tracked.get_mut(&id) else {
            return;
        };
        t.remaining -= 1;
        if t.remaining > 0 {
            return;
        }
        let alarm = t.alarm.clone();
        let Some(order) = self.order.get_mut(&alarm) else {
            return;
        };
        let mut last = None;
        while let Some(front) = order.front() {
            match self.tracked.get(front) {
                Some(t) if t.remaining > 0 => break,
                _ => {}
            }
            let front = order.pop_front().unwrap_or_default();
            if let Some(t) = self.tracked.remove(&front) {
                last = Some((t.state, t.incident));
            }
        }
        if order.is_empty() {
            self.order.remove(&alarm);
        }
        if let Some((state, incident)) = last {
            self.engine.mark_announced(&alarm, state, incident);
        }
    }

    fn on_timer(&mut self, t: Timed) {
        match t {
            Timed::Flush(idx) => {
                self.receivers[idx].flush = None;
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
                self.reminders.remove(&(alarm.clone(), alert.clone()));
                self.remind(alarm, alert, incident, n, every);
            }
            Timed::FlapCheck(alarm) => {
                self.flap_checks.remove(&alarm);
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
        if now.suppressed_by.is_empty() && !self.held.contains_key(&alarm) {
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
        self.arm_reminder(alarm, alert, incident, next, every);
    }

    /// A flapping alarm settled when its changes in the window fell to
    /// `stop`: announce its final state; else look again later.
    fn flap_check(&mut self, alarm: Arc<str>) {
        let now = crate::clock::now_ms();
        if !self.flapping.settle(&alarm, now) {
            if self.flapping.is_flapping(&alarm) {
                self.schedule_flap_check(&alarm);
            }
            return;
        }
        self.engine.set_flapping(&alarm, false, now);
        let Some(view) = self.engine.alarm(&alarm) else {
            self.flapping.forget(&alarm);
            return;
        };
        tracing::info!(
            "alarm {} stopped flapping; it is {}",
            alarm.escape_debug(),
            view.state.as_upper()
        );
        let previous = self.last_heard(&view);
        let notice = self.notice(view, previous, now, Some(Flapping::Stopped));
        self.route(notice);
    }

    /// Every second: releases held changes whose dependencies were deleted
    /// while ERROR (no transition will release them); every minute, forgets
    /// alarms that no longer exist.
    fn housekeeping(&mut self, prune: bool) {
        if !self.held.is_empty() {
            let ready: Vec<Arc<str>> = self
                .held
                .iter()
                .filter(|(_, n)| !n.alarm.depends_on.iter().any(|d| self.in_error(d)))
                .map(|(k, _)| k.clone())
                .collect();
            self.release(ready);
        }
        if prune {
            // `alarm_status` is O(1); `alarm` would copy each alarm's view.
            let engine = &self.engine;
            let exists = |a: &str| engine.alarm_status(a).is_some();
            self.states.retain(|a, _| exists(a));
            self.alerted.retain(|a, _| exists(a));
            self.opened.retain(|a, _| exists(a));
            self.flapping.prune(crate::clock::now_ms(), exists);
        }
    }
}
