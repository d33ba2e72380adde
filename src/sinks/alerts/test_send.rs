//! Test it before you need it: `POST /api/alerts/<name>/test` and
//! `lovebeat test-alert <name>` send a clearly marked test to every
//! alerter of an alert, at once and once each (no retries: the answer is
//! what the receiver says now), and report per alerter whether it was
//! delivered and, if not, what went wrong. A pager's test incident is
//! closed [`PAGER_CLOSE_AFTER`] after its open was answered, by a task of
//! its own, with retries, whatever the open's result: it is not cut short by a slow receiver or
//! a client that hangs up, and Opsgenie, which handles requests in the
//! background, has opened it before the close arrives.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::task::TaskTracker;

use super::alerter::{alerters_of, Alerter};
use super::config::AlertsConfig;
use super::delivery::Senders;
use super::Notice;
use crate::engine::{AlarmView, State};

/// How long one alerter's test may take (a script is killed after its
/// own [`super::script::SCRIPT_TIMEOUT`]).
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long after a pager's test incident is opened it is closed.
const PAGER_CLOSE_AFTER: Duration = Duration::from_secs(3);

/// One alerter's result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TestResult {
    /// Its kind (`pagerduty`, `mail`, ...).
    pub alerter: &'static str,
    /// True when the receiver accepted it.
    pub delivered: bool,
    /// What went wrong, when it was not (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The notice a test sends: an alarm `lovebeat.test.<alert>` in ERROR,
/// marked as a test, its incident the time in seconds (so a pager's key
/// is new each time).
fn notice(alert: &str, public_url: Option<&str>) -> Notice {
    let now = crate::clock::now_ms();
    let name = format!("lovebeat.test.{alert}");
    Notice {
        url: public_url.map(|u| u.to_string()),
        alarm: AlarmView::standalone(
            &name,
            State::Error,
            u64::try_from(now / 1000).unwrap_or(0),
            vec![name.as_str().into()],
            now,
        ),
        previous: State::Ok,
        ts: now,
        failure: None,
        repeat: 0,
        flapping: None,
        open_incident: None,
        test: true,
        maintenance: None,
    }
}

/// The kinds of the alerters an alert has (`webhook`, `pagerduty`, ...),
/// in the order a test reports them; `None` when the configuration has no
/// such alert. Kinds only: never an address or a secret.
pub fn alerter_kinds(config: &AlertsConfig, alert: &str) -> Option<Vec<&'static str>> {
    Some(
        alerters_of(config.alerts.get(alert)?)
            .iter()
            .map(|a| a.kind())
            .collect(),
    )
}

/// Closes a pager's test incident [`PAGER_CLOSE_AFTER`] after its open
/// was answered (or given up on: a request that got no answer may still
/// have opened it), in a task of its own among `tasks` (which a shutdown
/// waits for), with the usual retries.
fn close_later(
    tasks: &TaskTracker,
    senders: Arc<Senders>,
    channel: Arc<dyn Alerter>,
    opened: &Notice,
) {
    let mut close = opened.clone();
    close.alarm.state = State::Ok;
    close.previous = State::Error;
    let close = [Arc::new(close)];
    tasks.spawn(async move {
        tokio::time::sleep(PAGER_CLOSE_AFTER).await;
        if let Err(e) = senders.deliver(channel.as_ref(), &close).await {
            tracing::warn!(
                "the test incident of {} was not closed: {e}",
                channel.kind()
            );
        }
    });
}

/// Sends a test to every alerter of `alert`, all at once; `None` when the
/// configuration has no such alert. What outlives the answer (a pager's
/// close) runs among `tasks`.
pub async fn send_test(
    config: Arc<AlertsConfig>,
    alert: String,
    tasks: TaskTracker,
) -> Option<Vec<TestResult>> {
    let alert = alert.as_str();
    let channels = alerters_of(config.alerts.get(alert)?);
    let senders = match Senders::new(config.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            let error = Some(format!("no HTTP client: {e}"));
            return Some(
                channels
                    .iter()
                    .map(|c| TestResult {
                        alerter: c.kind(),
                        delivered: false,
                        error: error.clone(),
                    })
                    .collect(),
            );
        }
    };
    let notice = Arc::new(notice(alert, config.public_url.as_deref()));
    let mut sending = tokio::task::JoinSet::new();
    for (i, channel) in channels.into_iter().enumerate() {
        let (senders, notice) = (senders.clone(), notice.clone());
        let alert_name = alert.to_string();
        let later = tasks.clone();
        sending.spawn(async move {
            let kind = channel.kind();
            let result =
                tokio::time::timeout(TEST_TIMEOUT, senders.attempt(channel.as_ref(), &[&notice]))
                    .await;
            if channel.is_pager() {
                close_later(&later, senders.clone(), channel.clone(), &notice);
            }
            let error = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.reason),
                Err(_) => Some(format!("no answer within {} s", TEST_TIMEOUT.as_secs())),
            };
            match &error {
                None => tracing::info!(
                    "test of {kind} of alert {} delivered",
                    alert_name.escape_debug()
                ),
                Some(e) => tracing::warn!(
                    "test of {kind} of alert {} failed: {e}",
                    alert_name.escape_debug()
                ),
            }
            (
                i,
                TestResult {
                    alerter: kind,
                    delivered: error.is_none(),
                    error,
                },
            )
        });
    }
    let mut results: Vec<(usize, TestResult)> = sending.join_all().await.into_iter().collect();
    results.sort_by_key(|(i, _)| *i);
    Some(results.into_iter().map(|(_, r)| r).collect())
}
