//! The Pushover alerter (`[alerts.<name>.pushover]`): a push notification
//! to a Pushover user or group.
//!
//! What is sent is what Pushover's Message API documents
//! (<https://pushover.net/api>): `POST
//! https://api.pushover.net/1/messages.json`, form-encoded, with `token`
//! (the application's), `user` (the user or group key), `message` (at most
//! 1024 characters), `title` (at most 250), `url` and `url_title`,
//! `priority` (-2 to 2; 2, an emergency, also needs `retry` of at least 30
//! seconds and `expire`) and `timestamp` (Unix seconds). Pushover answers
//! 4xx for a bad request (not retried) and 429 when over quota.
//!
//! A push groups: the changes of `group_interval` go in one notification.

use serde::Deserialize;

use super::config::{HttpUrl, Secret};
use super::text::{self, Plain};
use super::{DeliveryError, Notice};
use crate::redact::url_for_log;

/// Pushover's endpoint.
pub(super) const PUSHOVER_URL: &str = "https://api.pushover.net/1/messages.json";

/// `[alerts.<name>.pushover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushoverConfig {
    /// The application's API token (a secret).
    pub token: Secret,
    /// The user or group key (a secret).
    pub user: Secret,
    /// The priority of an ERROR, -2 to 2 (default 1: bypasses quiet
    /// hours; 2 repeats every minute for an hour until acknowledged).
    #[serde(default = "one")]
    pub priority_error: i8,
    /// The priority of a recovery (default 0).
    #[serde(default)]
    pub priority_ok: i8,
    /// The endpoint (default [`PUSHOVER_URL`]).
    #[serde(default)]
    pub url: Option<HttpUrl>,
}

fn one() -> i8 {
    1
}

impl PushoverConfig {
    /// Pushover refuses priorities outside -2 to 2.
    pub fn validate(&self, alert: &str) -> Result<(), crate::config::ConfigError> {
        let ok = |p: i8| (-2..=2).contains(&p);
        if !ok(self.priority_error) || !ok(self.priority_ok) {
            return Err(crate::config::ConfigError::Invalid(format!(
                "[alerts.{alert}.pushover] priorities are from -2 to 2"
            )));
        }
        Ok(())
    }
}

/// The form for one change or a group.
pub(super) fn form(config: &PushoverConfig, group: &[&Notice]) -> Vec<(&'static str, String)> {
    let Plain {
        title,
        text,
        error,
        url,
        ..
    } = text::plain_with_output(group, 400);
    let priority = if error {
        config.priority_error
    } else {
        config.priority_ok
    };
    let ts = group.iter().map(|n| n.ts).max().unwrap_or(0) / 1000;
    let mut form = vec![
        ("token", config.token.0.clone()),
        ("user", config.user.0.clone()),
        ("title", super::incident::cut(&title, 250)),
        ("message", super::incident::cut(&text, 1024)),
        ("priority", priority.to_string()),
        ("timestamp", ts.to_string()),
    ];
    if priority == 2 {
        form.push(("retry", "60".into()));
        form.push(("expire", "3600".into()));
    }
    if let Some(u) = url {
        form.push(("url", u));
        form.push(("url_title", "Open in lovebeat".into()));
    }
    form
}

/// Sends one notification.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &PushoverConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    let url = config.url.as_ref().map_or(PUSHOVER_URL, |u| u.0.as_str());
    let result = client.post(url).form(&form(config, group)).send().await;
    super::http::outcome(&format!("POST {}", url_for_log(url)), result).await
}
