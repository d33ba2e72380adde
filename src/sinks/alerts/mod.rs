//! Alert delivery (README, "Alerts"): subscribes to alarm state changes and fires the
//! alarm's configured alerts on OK→ERROR, ERROR→OK and NEW→ERROR.
//!
//! Delivery runs beside the engine: each alarm has its own queue and worker,
//! so alerts of one alarm keep their order while a slow mail server or a hung
//! webhook delays nothing else. A queue holds at most `QUEUE_CAP` alerts;
//! when full the oldest is dropped, logged and counted. HTTP and SMTP
//! deliveries are retried with exponential backoff for `RETRY_FOR`.

mod http;
mod mail;
mod script;

pub use http::SlackConfig;
pub use mail::{MailConfig, MailgunConfig, Tls};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::{AlarmView, Engine, Event, EventKind, State};
use crate::sinks::notify::{Part, Reporter, REPORT_EVERY};

/// `[alerts.<name>]`: the channels an alarm's changes are announced on.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Comma-separated addresses.
    pub mail: Option<String>,
    /// URL to POST to.
    pub webhook: Option<String>,
    /// Slack channel.
    pub slack_channel: Option<String>,
    /// Executable to run.
    pub script: Option<String>,
    /// Send again every this long while the alarm stays ERROR.
    pub repeat: Option<crate::duration::DurationSetting>,
}

impl AlertConfig {
    /// A reminder more often than every second would flood its receivers.
    pub fn validate(&self, name: &str) -> Result<(), crate::config::ConfigError> {
        match self.repeat {
            Some(r) if r.ms < 1000 => Err(crate::config::ConfigError::Invalid(format!(
                "[alerts.{name}] repeat must be at least 1s"
            ))),
            _ => Ok(()),
        }
    }
}

/// Alerts waiting per alarm before the oldest is dropped.
pub const QUEUE_CAP: usize = 100;
/// How long a failing HTTP or SMTP delivery is retried.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// First retry delay; doubled after each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Alert delivery counters, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Deliveries that succeeded.
    pub sent: AtomicU64,
    /// Deliveries that failed for good (after retries).
    pub failed: AtomicU64,
    /// Alerts dropped because their alarm's queue was full.
    pub dropped: AtomicU64,
}

/// One alarm transition to announce.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The alarm after the change.
    pub alarm: AlarmView,
    /// Its state before.
    pub previous: State,
    /// When it changed (ms).
    pub ts: i64,
    /// `<public_url>alarms/<name>`, if a public URL is configured.
    pub url: Option<String>,
    /// The `last_failure` of the service whose change fired it.
    pub failure: Option<crate::engine::JobFailure>,
    /// 0 for the alert itself, n for its n-th reminder.
    pub repeat: u32,
    /// A reminder goes only to the alert whose `repeat` it follows.
    pub only_alert: Option<String>,
}

/// Everything the alerters need from the configuration.
#[derive(Debug, Clone)]
pub struct Alerters {
    config: Arc<Config>,
    /// The alarms as configured, indexed like `AlarmView::def`.
    defs: Arc<Vec<crate::engine::AlarmDef>>,
    client: reqwest::Client,
}

impl Alerters {
    /// Builds the alerters from the configuration.
    pub fn new(config: Arc<Config>) -> anyhow::Result<Alerters> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent("Lovebeat")
            .build()?;
        let defs = Arc::new(config.alarm_defs());
        Ok(Alerters {
            config,
            defs,
            client,
        })
    }

    /// Delivers every channel of every alert of the alarm, concurrently, and
    /// returns once all are done (delivered, failed for good, or killed).
    async fn deliver(&self, notice: &Notice, stats: &AlertStats) {
        let Some(def) = notice.alarm.def.and_then(|d| self.defs.get(d)) else {
            return;
        };
        let mut jobs = Vec::new();
        for name in &def.alerts {
            if notice.only_alert.as_ref().is_some_and(|only| only != name) {
                continue;
            }
            let Some(alert) = self.config.alerts.get(name) else {
                continue;
            };
            if let Some(to) = alert.mail.as_deref().filter(|m| !m.trim().is_empty()) {
                let to: Vec<String> = to
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                jobs.push(tokio::spawn(retrying("mail", notice.clone(), {
                    let (this, to) = (self.clone(), to);
                    move |n: Notice| {
                        let (this, to) = (this.clone(), to.clone());
                        async move { mail::send(&this.config, &this.client, &n, &to).await }
                    }
                })));
            }
            if let Some(url) = alert.webhook.as_deref().filter(|u| !u.is_empty()) {
                let (this, url) = (self.clone(), url.to_string());
                jobs.push(tokio::spawn(retrying(
                    "webhook",
                    notice.clone(),
                    move |n: Notice| {
                        let (this, url) = (this.clone(), url.clone());
                        async move { http::webhook(&this.client, &url, &n).await }
                    },
                )));
            }
            if let Some(channel) = alert.slack_channel.as_deref().filter(|c| !c.is_empty()) {
                let (this, channel) = (self.clone(), channel.to_string());
                jobs.push(tokio::spawn(retrying(
                    "slack",
                    notice.clone(),
                    move |n: Notice| {
                        let (this, channel) = (this.clone(), channel.clone());
                        async move {
                            http::slack(&this.client, &this.config.slack.webhook_url, &channel, &n)
                                .await
                        }
                    },
                )));
            }
            if let Some(path) = alert.script.as_deref().filter(|p| !p.is_empty()) {
                let (path, n) = (path.to_string(), notice.clone());
                jobs.push(tokio::spawn(async move {
                    script::run(&path, &n).await.map_err(|e| e.to_string())
                }));
            }
        }
        for job in jobs {
            match job.await {
                Ok(Ok(())) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "alert for alarm {} (incident {}) failed: {e}",
                        notice.alarm.name.escape_debug(),
                        notice.alarm.incident_nbr
                    );
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "alert task for alarm {} died: {e}",
                        notice.alarm.name.escape_debug()
                    );
                }
            }
        }
    }
}

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct DeliveryError {
    /// What went wrong, for the log.
    pub reason: String,
    /// Connection errors, timeouts and 5xx answers are worth retrying;
    /// 4xx answers and bad addresses are not.
    pub retry: bool,
}

/// Runs `attempt` until it succeeds, fails for good, or `RETRY_FOR` has
/// passed, doubling the delay between tries; logs each failure.
async fn retrying<F, Fut>(what: &'static str, notice: Notice, attempt: F) -> Result<(), String>
where
    F: Fn(Notice) -> Fut,
    Fut: std::future::Future<Output = Result<(), DeliveryError>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = FIRST_BACKOFF;
    loop {
        match attempt(notice.clone()).await {
            Ok(()) => return Ok(()),
            Err(f) => {
                tracing::warn!(
                    "{what} alert for alarm {} (incident {}) failed: {}",
                    notice.alarm.name.escape_debug(),
                    notice.alarm.incident_nbr,
                    f.reason
                );
                if !f.retry || start.elapsed() + delay > RETRY_FOR {
                    return Err(format!("{what}: {}", f.reason));
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// True for the transitions that fire alerts (not NEW→OK, which 1.x
/// reported as noise).
pub fn fires(previous: State, current: State) -> bool {
    matches!(
        (previous, current),
        (State::Ok, State::Error) | (State::Error, State::Ok) | (State::New, State::Error)
    )
}

/// One alarm's pending alerts.
#[derive(Default)]
struct AlarmQueue {
    pending: Mutex<VecDeque<Notice>>,
    wake: Notify,
}

/// What the dispatcher remembers between events.
struct Dispatch {
    alerters: Alerters,
    engine: Engine,
    stats: Arc<AlertStats>,
    public_url: Option<String>,
    queues: HashMap<Arc<str>, Arc<AlarmQueue>>,
    /// The state each alarm last alerted (absent: never, counts as OK).
    alerted: HashMap<Arc<str>, State>,
    /// The latest transition held back by a failing dependency.
    held: HashMap<Arc<str>, Notice>,
    /// Each alarm's state as of the latest event handled. Dependencies are
    /// judged by it, not by the engine's state now, which may already be
    /// events ahead: a parent that failed and recovered before its child's
    /// events were handled must still hold them.
    states: HashMap<Arc<str>, State>,
    /// Reminder tasks of alarms in ERROR.
    reminders: HashMap<Arc<str>, Vec<tokio::task::JoinHandle<()>>>,
    /// The alarms' workers, waited for when draining.
    workers: TaskTracker,
    /// Cancelled when the daemon stops: workers finish their queues.
    drain: CancellationToken,
}

impl Dispatch {
    fn queue(&mut self, alarm: &Arc<str>) -> Arc<AlarmQueue> {
        self.queues
            .entry(alarm.clone())
            .or_insert_with(|| {
                let q = Arc::new(AlarmQueue::default());
                self.workers.spawn(worker(
                    q.clone(),
                    self.alerters.clone(),
                    self.stats.clone(),
                    self.drain.clone(),
                ));
                q
            })
            .clone()
    }

    fn notice(&self, alarm: &AlarmView, previous: State, ts: i64) -> Notice {
        let failure = if alarm.state == State::Error {
            alarm
                .cause
                .as_ref()
                .and_then(|c| self.engine.service(c, false))
                .and_then(|s| s.job.and_then(|j| j.last_failure))
        } else {
            None
        };
        Notice {
            alarm: alarm.clone(),
            previous,
            ts,
            url: self.public_url.as_ref().map(|u| {
                format!(
                    "{u}alarms/{}",
                    percent_encoding::utf8_percent_encode(&alarm.name, crate::redact::PATH_SEGMENT)
                )
            }),
            failure,
            repeat: 0,
            only_alert: None,
        }
    }

    /// True when `alarm` is ERROR as of the events handled so far (an
    /// alarm no event has mentioned yet is as the database loaded it).
    fn in_error(&self, alarm: &str) -> bool {
        match self.states.get(alarm) {
            Some(state) => *state == State::Error,
            None => self.engine.alarm_in_error(alarm),
        }
    }

    fn stop_reminders(&mut self, alarm: &Arc<str>) {
        for task in self.reminders.remove(alarm).unwrap_or_default() {
            task.abort();
        }
    }

    /// Queues an alert and starts or stops the alarm's reminders.
    fn send(&mut self, notice: Notice) {
        let name = notice.alarm.name.clone();
        self.stop_reminders(&name);
        self.alerted.insert(name.clone(), notice.alarm.state);
        let queue = self.queue(&name);
        if notice.alarm.state == State::Error {
            let tasks = self.start_reminders(&notice, &queue);
            if !tasks.is_empty() {
                self.reminders.insert(name, tasks);
            }
        }
        push(&queue, notice, &self.stats);
    }

    /// One task per alert with `repeat`: while the alarm stays ERROR in the
    /// same incident, it queues a reminder every interval (skipped while a
    /// dependency holds the alarm's alerts).
    fn start_reminders(
        &self,
        notice: &Notice,
        queue: &Arc<AlarmQueue>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(def) = notice.alarm.def.and_then(|d| self.alerters.defs.get(d)) else {
            return Vec::new();
        };
        let mut tasks = Vec::new();
        for alert in &def.alerts {
            let every = self
                .alerters
                .config
                .alerts
                .get(alert)
                .and_then(|a| a.repeat)
                .map(|r| r.ms)
                .filter(|ms| *ms > 0);
            let Some(every) = every else { continue };
            let (engine, queue, stats) = (self.engine.clone(), queue.clone(), self.stats.clone());
            let mut reminder = notice.clone();
            reminder.only_alert = Some(alert.clone());
            tasks.push(tokio::spawn(async move {
                let every = Duration::from_millis(every);
                let mut n = 0;
                loop {
                    tokio::time::sleep(every).await;
                    let Some(now) = engine.alarm(&reminder.alarm.name) else {
                        return;
                    };
                    if now.state != State::Error || now.incident_nbr != reminder.alarm.incident_nbr
                    {
                        return;
                    }
                    if !now.suppressed_by.is_empty() {
                        continue;
                    }
                    n += 1;
                    let mut r = reminder.clone();
                    r.repeat = n;
                    r.alarm = now;
                    r.ts = crate::clock::now_ms();
                    push(&queue, r, &stats);
                }
            }));
        }
        tasks
    }

    fn on_event(&mut self, event: &Event) {
        let (alarm, previous) = match &event.kind {
            EventKind::AlarmStateChanged { alarm, previous } => (alarm, *previous),
            EventKind::AlarmRemoved(a) => {
                self.states.insert(a.name.clone(), a.state);
                self.release_dependents(&a.name);
                return;
            }
            _ => return,
        };
        self.states.insert(alarm.name.clone(), alarm.state);
        if previous == State::Error {
            self.release_dependents(&alarm.name);
        }
        if !fires(previous, alarm.state) {
            return;
        }
        let has_alerts = alarm
            .def
            .and_then(|d| self.alerters.defs.get(d).map(|def| !def.alerts.is_empty()))
            .unwrap_or(false);
        if !has_alerts {
            return;
        }
        let notice = self.notice(alarm, previous, event.ts);
        let holding: Vec<&Arc<str>> = alarm
            .depends_on
            .iter()
            .filter(|d| self.in_error(d))
            .collect();
        if holding.is_empty() {
            self.held.remove(&alarm.name);
            self.send(notice);
        } else {
            tracing::info!(
                "alert of alarm {} (incident {}) held while {} is in ERROR",
                alarm.name.escape_debug(),
                alarm.incident_nbr,
                holding
                    .iter()
                    .map(|h| h.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.stop_reminders(&alarm.name);
            self.held.insert(alarm.name.clone(), notice);
        }
    }

    /// After `recovered` left ERROR: sends each held alert none of whose
    /// dependencies is ERROR any more, if its alarm's state differs from
    /// the state it last alerted; drops it otherwise.
    fn release_dependents(&mut self, recovered: &Arc<str>) {
        let ready: Vec<Arc<str>> = self
            .held
            .iter()
            .filter(|(_, n)| n.alarm.depends_on.contains(recovered))
            .filter(|(_, n)| !n.alarm.depends_on.iter().any(|d| self.in_error(d)))
            .map(|(k, _)| k.clone())
            .collect();
        for name in ready {
            // The held transition is the alarm's latest: its state is the
            // alarm's state as of this event.
            let Some(notice) = self.held.remove(&name) else {
                continue;
            };
            let current = notice.alarm.state;
            let last = self.alerted.get(&name).copied().unwrap_or(State::Ok);
            if current == last {
                tracing::info!(
                    "held alert of alarm {} dropped: it is {} again",
                    name.escape_debug(),
                    current.as_upper()
                );
                continue;
            }
            tracing::info!("held alert of alarm {} released", name.escape_debug());
            self.send(notice);
        }
    }
}

/// Appends to an alarm's queue, dropping the oldest when full.
fn push(queue: &AlarmQueue, notice: Notice, stats: &AlertStats) {
    {
        let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.push_back(notice);
        if pending.len() > QUEUE_CAP {
            if let Some(old) = pending.pop_front() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "alert queue of alarm {} is full: dropped the alert of incident {} ({} to {})",
                    old.alarm.name.escape_debug(),
                    old.alarm.incident_nbr,
                    old.previous.as_upper(),
                    old.alarm.state.as_upper()
                );
            }
        }
    }
    queue.wake.notify_one();
}

/// Subscribes to alarm changes and delivers alerts; reports to the
/// `[[notify]]` peers every `REPORT_EVERY` that it serves. When `drain` is
/// cancelled (input has stopped, so no new change comes) it handles the
/// changes already published, lets every alarm's worker deliver what is
/// queued, and returns once they are done: the daemon bounds how long it
/// waits for that.
pub async fn run(
    alerters: Alerters,
    engine: Engine,
    mut events: broadcast::Receiver<Arc<Event>>,
    stats: Arc<AlertStats>,
    reporter: Reporter,
    drain: CancellationToken,
) {
    let mut d = Dispatch {
        public_url: alerters.config.public_url(),
        alerters,
        engine,
        stats,
        queues: HashMap::new(),
        alerted: HashMap::new(),
        held: HashMap::new(),
        states: HashMap::new(),
        reminders: HashMap::new(),
        workers: TaskTracker::new(),
        drain: drain.clone(),
    };
    let mut alive = tokio::time::interval(REPORT_EVERY);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = alive.tick() => {
                reporter.report(Part::Alerter);
                continue;
            }
            _ = drain.cancelled() => break,
        };
        match event {
            Ok(e) => d.on_event(&e),
            Err(RecvError::Lagged(n)) => {
                tracing::error!("alert dispatcher fell behind: {n} events lost");
            }
            Err(RecvError::Closed) => break,
        }
    }
    // What was published before input stopped is still announced.
    while let Ok(e) = events.try_recv() {
        d.on_event(&e);
    }
    for (_, tasks) in d.reminders.drain() {
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
    for queue in d.queues.values() {
        queue.wake.notify_one();
    }
    d.workers.close();
    d.workers.wait().await;
}

/// Delivers one alarm's alerts in order; once `drain` is cancelled it
/// returns as soon as its queue is empty.
async fn worker(
    queue: Arc<AlarmQueue>,
    alerters: Alerters,
    stats: Arc<AlertStats>,
    drain: CancellationToken,
) {
    loop {
        let next = queue
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next {
            Some(notice) => alerters.deliver(&notice, &stats).await,
            None if drain.is_cancelled() => return,
            None => {
                tokio::select! {
                    _ = queue.wake.notified() => {}
                    _ = drain.cancelled() => {}
                }
            }
        }
    }
}

/// The failed services as one comma-separated string.
pub fn failed_list(alarm: &AlarmView) -> String {
    alarm
        .failed_services
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::JobFailure;

    fn notice(repeat: u32, failure: Option<JobFailure>) -> Notice {
        Notice {
            alarm: AlarmView {
                name: "jobs".into(),
                state: State::Error,
                incident_nbr: 7,
                failed_services: vec!["job.etl".into()],
                last_state_change: 1,
                def: None,
                depends_on: Arc::new([]),
                suppressed_by: Vec::new(),
                cause: None,
                flapping: false,
                announced: (State::Ok, 6),
            },
            previous: State::Ok,
            ts: 1,
            url: None,
            failure,
            repeat,
            only_alert: None,
        }
    }

    #[test]
    fn a_failure_and_a_reminder_reach_every_alerter() {
        let f = JobFailure {
            ts: 1,
            exit_code: Some(3),
            output: "disk full\n".into(),
            reason: None,
        };
        let n = notice(2, Some(f.clone()));
        assert_eq!(mail::subject(&n), "[LOVEBEAT] jobs-7 (reminder 2)");
        let body = mail::body(&n);
        assert!(
            body.contains("exit code 3") && body.contains("Output:\ndisk full\n"),
            "{body}"
        );
        let slack = http::slack_body("#ops", &n);
        let att = &slack["attachments"][0];
        assert_eq!(att["title"], "jobs is in ERROR (reminder 2)");
        assert!(att["text"].as_str().unwrap_or("").contains("disk full"));
        let hook = http::webhook_body(&n);
        assert_eq!(hook["repeat"], 2);
        assert_eq!(hook["failure"]["exit_code"], 3);
        assert_eq!(hook["failure"]["output"], "disk full\n");
        // Without them, the 1.x shapes are untouched.
        let plain = notice(0, None);
        assert_eq!(mail::subject(&plain), "[LOVEBEAT] jobs-7");
        let hook = http::webhook_body(&plain);
        assert!(hook.get("repeat").is_none() && hook.get("failure").is_none());
        let ran_long = JobFailure {
            reason: Some("ran too long".into()),
            exit_code: None,
            ..f
        };
        assert!(mail::body(&notice(0, Some(ran_long))).contains("ran too long"));
    }

    #[test]
    fn slack_text_from_a_job_cannot_mention_or_format() {
        let f = JobFailure {
            ts: 1,
            exit_code: Some(1),
            output: "<!channel> wake up & <@U123> ```\n*bold*".into(),
            reason: None,
        };
        let mut n = notice(0, Some(f));
        n.alarm.name = "a<b>".into();
        n.alarm.failed_services = vec!["x<!here>".into()];
        let body = http::slack_body("#ops", &n);
        let att = &body["attachments"][0];
        let text = att["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("&lt;!channel&gt; wake up &amp; &lt;@U123&gt;"),
            "{text}"
        );
        // The output's own fence is broken up; only lovebeat's two remain.
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert!(!att["title"].as_str().unwrap_or_default().contains('<'));
        let fields = att["fields"].to_string();
        assert!(
            !fields.contains("<!here>") && fields.contains("&lt;!here&gt;"),
            "{fields}"
        );
    }
}
