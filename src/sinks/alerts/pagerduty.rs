//! The PagerDuty alerter (`[alerts.<name>.pagerduty]`): an on-call team's
//! pager opens an incident when an alarm fails and resolves it when the
//! alarm recovers, through the Events API v2.
//!
//! What is sent is what PagerDuty documents for alert events
//! (<https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>,
//! overview at <https://developer.pagerduty.com/docs/events-api-v2/overview/>):
//! `POST https://events.pagerduty.com/v2/enqueue` with `routing_key`,
//! `event_action` (`trigger` or `resolve`), `dedup_key`, and for a trigger
//! a `payload` with `summary` (at most 1024 characters), `source`,
//! `severity` (`critical`, `error`, `warning` or `info`), `timestamp`,
//! `component`, `class` and `custom_details`; `client`, `client_url` and
//! `links` point back at lovebeat. PagerDuty answers 202; 400 is a bad
//! event (not retried), 429 and 5xx are retried.
//!
//! The `dedup_key` is `lovebeat-<alarm>-<incident>` ([`super::incident`]):
//! one PagerDuty incident per lovebeat incident, the same key after a
//! restart, and one trigger and one resolve for a flapping episode. One
//! event per change: PagerDuty groups alerts itself.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{each, secret_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::HttpUrl;
use super::delivery::Senders;
use super::incident::{self, Action};
use super::{failed_list, DeliveryError, Notice};
use crate::redact::url_for_log;

/// PagerDuty's Events API v2 endpoint.
pub(super) const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `[alerts.<name>.pagerduty]`: where the events go.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration key of an "Events API v2" integration of a
    /// PagerDuty service (a secret: never logged).
    pub routing_key: String,
    /// The severity of triggered alerts (default `critical`: an alarm is
    /// something to be woken for).
    #[serde(default)]
    pub severity: PagerDutySeverity,
    /// `payload.source`: the affected system as PagerDuty shows it
    /// (default `lovebeat`).
    #[serde(default)]
    pub source: Option<String>,
    /// The endpoint (default [`PAGERDUTY_URL`]; the EU service is
    /// `https://events.eu.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    pub url: Option<HttpUrl>,
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("routing_key", &"(secret)")
            .field("severity", &self.severity)
            .field("source", &self.source)
            .field("url", &self.url.as_ref().map(|u| url_for_log(u.0.as_str())))
            .finish()
    }
}

/// PagerDuty's severities, as its API spells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    /// Wakes people up.
    #[default]
    Critical,
    /// An error.
    Error,
    /// A warning.
    Warning,
    /// Information.
    Info,
}

impl PagerDutySeverity {
    fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }
}

impl PagerDutyConfig {
    /// An empty routing key can only be refused by PagerDuty: say so when
    /// the file is read.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        if self.routing_key.trim().is_empty() {
            return Err(crate::settings::ConfigError::Invalid(format!(
                "[alerts.{alert}.pagerduty] routing_key is empty"
            )));
        }
        Ok(())
    }

    fn endpoint(&self) -> reqwest::Url {
        match &self.url {
            Some(u) => u.0.clone(),
            None => reqwest::Url::parse(PAGERDUTY_URL).expect("a valid URL"),
        }
    }
}

/// The event for one action of a notice.
pub(super) fn event(
    config: &PagerDutyConfig,
    n: &Notice,
    action: Action,
    incident: u64,
) -> serde_json::Value {
    let dedup_key = incident::key(&n.alarm.name, incident);
    let mut body = match action {
        Action::Close => json!({
            "routing_key": config.routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        Action::Open => {
            let mut details = json!({
                "alarm": n.alarm.name,
                "incident": n.alarm.incident_nbr,
                "state": n.alarm.state.as_str(),
                "previous_state": n.previous.as_str(),
                "failed_services": n.alarm.failed_services.iter().take(super::FAILED_LISTED).collect::<Vec<_>>(),
                "failed_count": n.alarm.failed_services.len(),
                "failed_services_list": failed_list(&n.alarm),
            });
            if let Some(f) = &n.failure {
                details["job_failure"] = json!(super::text::failure_line(f));
                details["job_output"] = json!(f.output);
                if let Some(code) = f.exit_code {
                    details["job_exit_code"] = json!(code);
                }
            }
            if n.repeat > 0 {
                details["reminder"] = json!(n.repeat);
            }
            if n.flapping.is_some() {
                details["flapping"] =
                    json!(matches!(n.flapping, Some(super::Flapping::Started { .. })));
            }
            let timestamp = chrono::DateTime::from_timestamp_millis(n.ts)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            json!({
                "routing_key": config.routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "client": "Lovebeat",
                "payload": {
                    "summary": super::text::cut(&super::text::headline(n), 1024),
                    "source": config.source.as_deref().unwrap_or("lovebeat"),
                    "severity": config.severity.as_str(),
                    "timestamp": timestamp,
                    "component": n.alarm.name,
                    "class": "alarm",
                    "custom_details": details,
                },
            })
        }
    };
    if let (Some(url), Action::Open) = (&n.url, action) {
        body["client_url"] = json!(url);
        body["links"] = json!([{"href": url, "text": "The alarm in lovebeat"}]);
    }
    body
}

/// Sends the events of one notice, in order.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &PagerDutyConfig,
    n: &Notice,
) -> Result<(), DeliveryError> {
    let url = config.endpoint();
    for (action, incident) in incident::actions(n) {
        super::http::post(client, &url, event(config, n, action, incident), &[]).await?;
    }
    Ok(())
}

impl Alerter for PagerDutyConfig {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn groups(&self) -> bool {
        false
    }

    fn is_pager(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.push(self.routing_key.clone());
        if let Some(u) = &self.url {
            secret_url(&mut out, &u.0);
        }
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!("PagerDuty at {}", shown(self.endpoint().as_str()))
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        PagerDutyConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(each(group, |n| send(&senders.client, self, n)))
    }
}

impl AlerterTable for PagerDutyConfig {
    const SECRET_KEYS: &'static [&'static str] = &["routing_key"];
}
