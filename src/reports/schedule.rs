//! Mails each `[[reports]]` when its period ends: a task per report that
//! sleeps until the next boundary of its time zone (found lazily, one
//! period ahead, `period.rs`), then mails the period just ended through
//! its alert's mail alerter and records it in the history
//! (`history::report_log`). At a start, a period that ended while
//! lovebeat was down is mailed at once (the latest only); one already
//! mailed is not mailed again.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::period::{self, Period};
use super::{render, ReportConfig};
use crate::clock::now_ms;
use crate::history::report_log::{self, Owed};
use crate::history::History;
use crate::sinks::alerts::{AlertsConfig, Mail};

/// The longest sleep: a wall clock that jumps (a suspended VM, a stepped
/// clock) is noticed within it, as the next boundary is found again.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The first wait after a failed mail or history read; it doubles up to
/// [`MAX_SLEEP`], and the period's end always ends it.
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// What one report's task needs.
pub struct Scheduled {
    /// The report.
    pub report: ReportConfig,
    /// The alarms it covers (`Config::report_alarms`).
    pub alarms: Vec<String>,
}

/// Runs `report`'s schedule until `stop`.
pub async fn run(
    scheduled: Scheduled,
    history: Arc<History>,
    alerts: Arc<AlertsConfig>,
    stop: CancellationToken,
) {
    let Scheduled { report, alarms } = scheduled;
    let (tz, every, name) = (report.zone(), report.every, report.name.clone());
    let Some(to) = alerts
        .alerts
        .get(&report.mail)
        .and_then(|a| a.mail.clone())
        .filter(|r| !r.0.is_empty())
    else {
        // The configuration's check refuses this: kept as a safe stop.
        tracing::error!(
            "report '{name}': alert '{}' has no mail address",
            report.mail
        );
        return;
    };
    let mut retry = FIRST_RETRY;
    let mut first = true;
    // The end of the period this run mailed last: if the history could
    // not record it, it is still not mailed twice by this run.
    let mut mailed: Option<i64> = None;
    loop {
        let now = now_ms();
        let Some(current) = period::containing(every, &tz, now) else {
            tracing::error!("report '{name}': no period holds the time now ({now} ms)");
            return;
        };
        let failed = match check(&history, &name, current).await {
            Ok(Owed::Latest) if mailed == Some(current.since) => false,
            Ok(Owed::Latest) => {
                let sent = send(&history, &report, &alarms, &to, &alerts, current, now).await;
                match sent {
                    Ok(()) => {
                        mailed = Some(current.since);
                        false
                    }
                    Err(why) => {
                        tracing::warn!(
                            "report '{name}' not mailed: {why}; trying again in {} s",
                            retry.as_secs()
                        );
                        true
                    }
                }
            }
            Ok(Owed::Started | Owed::Nothing) => false,
            Err(why) => {
                tracing::warn!(
                    "report '{name}': {why}; trying again in {} s",
                    retry.as_secs()
                );
                true
            }
        };
        if first && !failed {
            tracing::info!(
                "report '{name}' (every {}, {}): the next is due at {}",
                every.as_str(),
                tz.name(),
                shown(&tz, current.until)
            );
            first = false;
        }
        let until_boundary =
            Duration::from_millis(u64::try_from(current.until - now).unwrap_or(0).max(1));
        let wait = if failed {
            let w = retry.min(until_boundary);
            retry = (retry * 2).min(MAX_SLEEP);
            w
        } else {
            retry = FIRST_RETRY;
            until_boundary.min(MAX_SLEEP)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn shown(tz: &chrono_tz::Tz, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.with_timezone(tz).to_rfc3339())
}

/// Why a report could not be mailed this time.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The history could not be read or written.
    #[error("the history file: {0}")]
    History(String),
    /// The mail was refused or did not reach the server.
    #[error("{0}")]
    Mail(String),
}

/// What the report owes now, from the history, on the blocking pool.
async fn check(history: &Arc<History>, name: &str, current: Period) -> Result<Owed, Failure> {
    if let Some(why) = history.failing() {
        return Err(Failure::History(why));
    }
    let (h, n) = (history.clone(), name.to_string());
    tokio::task::spawn_blocking(move || h.read(|c| report_log::owed(c, &n, current.since)))
        .await
        .map_err(|e| Failure::History(e.to_string()))?
        .map_err(|e| Failure::History(e.to_string()))
}

/// Builds the report of the period that ended at `current.since`, mails
/// it, and records it as sent.
async fn send(
    history: &Arc<History>,
    report: &ReportConfig,
    alarms: &[String],
    to: &crate::sinks::alerts::Recipients,
    alerts: &AlertsConfig,
    current: Period,
    now: i64,
) -> Result<(), Failure> {
    let tz = report.zone();
    let ended = period::before(report.every, &tz, current)
        .ok_or_else(|| Failure::History("no period before the current one".into()))?;
    let (h, name, list) = (history.clone(), report.name.clone(), alarms.to_vec());
    let built =
        tokio::task::spawn_blocking(move || super::build(&h, Some(name), &list, &tz, ended, now))
            .await
            .map_err(|e| Failure::History(e.to_string()))?
            .map_err(|e| Failure::History(e.to_string()))?;
    let mail = Mail {
        subject: render::subject(&built),
        text: render::text(&built),
        html: render::html(&built),
    };
    crate::sinks::alerts::send_message(alerts, to, &mail)
        .await
        .map_err(|e| Failure::Mail(e.reason))?;
    let (h, name) = (history.clone(), report.name.clone());
    let at = now_ms();
    let recorded = tokio::task::spawn_blocking(move || {
        h.read(|c| report_log::sent(c, &name, ended.until, at))
    })
    .await;
    let label = period::label(report.every, &tz, ended);
    let addresses: Vec<String> = to.0.iter().map(|m| m.to_string()).collect();
    match recorded {
        Ok(Ok(())) => {
            tracing::info!(
                "report '{}' for {label} mailed to {}",
                report.name,
                addresses.join(", ")
            );
        }
        // Mailed, but not recorded: the next start mails it again, which
        // beats never mailing it.
        Ok(Err(e)) => tracing::error!(
            "report '{}' for {label} mailed, but the history did not record it ({e}): a restart mails it again",
            report.name
        ),
        Err(e) => tracing::error!(
            "report '{}' for {label} mailed, but not recorded: {e}",
            report.name
        ),
    }
    Ok(())
}
