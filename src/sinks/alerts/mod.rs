//! Alert delivery (SPEC §6): subscribes to alarm state changes and fires the
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::engine::{AlarmView, Event, EventKind, State};

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
                        notice.alarm.name,
                        notice.alarm.incident_nbr
                    );
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("alert task for alarm {} died: {e}", notice.alarm.name);
                }
            }
        }
    }
}

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct Failure {
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
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let start = tokio::time::Instant::now();
    let mut delay = FIRST_BACKOFF;
    loop {
        match attempt(notice.clone()).await {
            Ok(()) => return Ok(()),
            Err(f) => {
                tracing::warn!(
                    "{what} alert for alarm {} (incident {}) failed: {}",
                    notice.alarm.name,
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

/// Subscribes to alarm changes and delivers alerts until `shutdown`.
pub async fn run(
    alerters: Alerters,
    mut events: broadcast::Receiver<Arc<Event>>,
    stats: Arc<AlertStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let public_url = alerters.config.public_url();
    let mut queues: HashMap<String, Arc<AlarmQueue>> = HashMap::new();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.changed() => return,
        };
        let event = match event {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::error!("alert dispatcher fell behind: {n} events lost");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let EventKind::AlarmStateChanged { alarm, previous } = &event.kind else {
            continue;
        };
        if !fires(*previous, alarm.state) {
            continue;
        }
        let has_alerts = alarm
            .def
            .and_then(|d| alerters.defs.get(d).map(|def| !def.alerts.is_empty()))
            .unwrap_or(false);
        if !has_alerts {
            continue;
        }
        let notice = Notice {
            alarm: alarm.clone(),
            previous: *previous,
            ts: event.ts,
            url: public_url
                .as_ref()
                .map(|u| format!("{u}alarms/{}", alarm.name)),
        };
        let queue = queues.entry(alarm.name.to_string()).or_insert_with(|| {
            let q = Arc::new(AlarmQueue::default());
            tokio::spawn(worker(q.clone(), alerters.clone(), stats.clone()));
            q
        });
        {
            let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push_back(notice);
            if pending.len() > QUEUE_CAP {
                if let Some(old) = pending.pop_front() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "alert queue of alarm {} is full: dropped the alert of incident {} ({} to {})",
                        old.alarm.name,
                        old.alarm.incident_nbr,
                        old.previous.as_upper(),
                        old.alarm.state.as_upper()
                    );
                }
            }
        }
        queue.wake.notify_one();
    }
}

/// Delivers one alarm's alerts in order.
async fn worker(queue: Arc<AlarmQueue>, alerters: Alerters, stats: Arc<AlertStats>) {
    loop {
        let next = queue
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next {
            Some(notice) => alerters.deliver(&notice, &stats).await,
            None => queue.wake.notified().await,
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
