//! The Gotify alerter (`[alerts.<name>.gotify]`): a push notification
//! through a self-hosted Gotify server.
//!
//! What is sent is what Gotify documents for pushing a message
//! (<https://gotify.net/docs/pushmsg>, and the API's `POST /message`):
//! the application token in the `X-Gotify-Key` header and a JSON body of
//! `title`, `message` and an integer `priority` (0 to 10; 8 and above
//! alert loudest on Android), with `extras` `client::notification`
//! `click` `url` opening the alarm (<https://gotify.net/docs/msgextras>).
//!
//! A push groups: the changes of `group_interval` go in one message.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{server_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::{HttpUrl, Secret};
use super::delivery::Senders;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};

/// `[alerts.<name>.gotify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GotifyConfig {
    /// The server, e.g. `https://gotify.example.com`.
    pub url: HttpUrl,
    /// An application token (a secret).
    pub token: Secret,
    /// The priority of an ERROR, 0 to 10 (default 8).
    #[serde(default = "eight")]
    pub priority_error: u8,
    /// The priority of a recovery (default 4).
    #[serde(default = "four")]
    pub priority_ok: u8,
}

fn eight() -> u8 {
    8
}

fn four() -> u8 {
    4
}

impl GotifyConfig {
    /// Gotify's priorities run from 0 to 10.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        if self.priority_error > 10 || self.priority_ok > 10 {
            return Err(crate::settings::ConfigError::Invalid(format!(
                "[alerts.{alert}.gotify] priorities are from 0 to 10"
            )));
        }
        Ok(())
    }
}

/// The message for one change or a group.
pub(super) fn body(config: &GotifyConfig, group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        error,
        url,
        ..
    } = text::plain_with_output(group, 3000);
    let mut body = json!({
        "title": title,
        "message": text,
        "priority": if error { config.priority_error } else { config.priority_ok },
    });
    if let Some(u) = url {
        body["extras"] = json!({"client::notification": {"click": {"url": u}}});
    }
    body
}

/// Pushes one message.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &GotifyConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    let url = super::http::endpoint(config.url.0.as_str(), "/message", "[gotify] url")?;
    super::http::post(
        client,
        &url,
        body(config, group),
        &[("X-Gotify-Key", config.token.0.as_str())],
    )
    .await
}

impl Alerter for GotifyConfig {
    fn kind(&self) -> &'static str {
        "gotify"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.push(self.token.0.clone());
        server_url(&mut out, Some(&self.url));
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!("Gotify at {}", shown(self.url.0.as_str()))
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        GotifyConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for GotifyConfig {
    const SECRET_KEYS: &'static [&'static str] = &["token"];
}
