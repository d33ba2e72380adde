//! The ntfy alerter (`[alerts.<name>.ntfy]`): a push notification to the
//! phones subscribed to an ntfy topic, on ntfy.sh or a server of your own.
//!
//! What is sent is ntfy's "publish as JSON"
//! (<https://docs.ntfy.sh/publish/#publish-as-json>): `POST` to the
//! server's root URL with `topic`, `message`, `title`, `priority` (1 to 5,
//! 5 being "max/urgent"), `tags` (emoji short codes) and `click` (the
//! link opened on a tap); an access token goes in `Authorization: Bearer`
//! (<https://docs.ntfy.sh/publish/#access-tokens>). JSON rather than
//! headers, so a name in any script reaches the title intact.
//!
//! Priority and tags follow the state: an ERROR is urgent with a
//! `rotating_light`, a recovery default with a `white_check_mark`. A push
//! groups: the changes of `group_interval` go in one notification.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{server_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::{HttpUrl, Secret};
use super::delivery::Senders;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};

/// The public server.
pub(super) const NTFY_URL: &str = "https://ntfy.sh";

/// `[alerts.<name>.ntfy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// The topic (on ntfy.sh, anyone who knows it can read it: pick one
    /// hard to guess, or use a token).
    pub topic: String,
    /// The server (default [`NTFY_URL`]).
    #[serde(default)]
    pub url: Option<HttpUrl>,
    /// An access token (`tk_...`) for a protected topic (a secret).
    #[serde(default)]
    pub token: Option<Secret>,
    /// The priority of an ERROR, 1 to 5 (default 5).
    #[serde(default = "five")]
    pub priority_error: u8,
    /// The priority of a recovery, 1 to 5 (default 3).
    #[serde(default = "three")]
    pub priority_ok: u8,
}

fn five() -> u8 {
    5
}

fn three() -> u8 {
    3
}

impl NtfyConfig {
    /// ntfy refuses priorities outside 1 to 5 and an empty topic.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        let ok = |p: u8| (1..=5).contains(&p);
        if self.topic.trim().is_empty() || !ok(self.priority_error) || !ok(self.priority_ok) {
            return Err(crate::settings::ConfigError::Invalid(format!(
                "[alerts.{alert}.ntfy] needs a topic and priorities from 1 to 5"
            )));
        }
        Ok(())
    }
}

/// The JSON message for one change or a group.
pub(super) fn body(config: &NtfyConfig, group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        error,
        url,
        ..
    } = text::plain_with_output(group, 1500);
    let mut body = json!({
        "topic": config.topic,
        "title": title,
        "message": super::text::cut(&text, 3500),
        "priority": if error { config.priority_error } else { config.priority_ok },
        "tags": [if error { "rotating_light" } else { "white_check_mark" }],
    });
    if let Some(u) = url {
        body["click"] = json!(u);
    }
    body
}

/// Publishes one notification.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &NtfyConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    let url = match &config.url {
        Some(u) => u.0.clone(),
        None => reqwest::Url::parse(NTFY_URL).expect("a valid URL"),
    };
    let auth = config.token.as_ref().map(|t| format!("Bearer {}", t.0));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    super::http::post(client, &url, body(config, group), &headers).await
}

impl Alerter for NtfyConfig {
    fn kind(&self) -> &'static str {
        "ntfy"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        // On ntfy.sh a topic is read by whoever knows it.
        if self.topic.len() >= 8 {
            out.push(self.topic.clone());
        }
        out.extend(self.token.iter().map(|t| t.0.clone()));
        server_url(&mut out, self.url.as_ref());
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!(
            "ntfy at {}",
            shown(self.url.as_ref().map_or(NTFY_URL, |u| u.0.as_str()))
        )
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        NtfyConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for NtfyConfig {
    const SECRET_KEYS: &'static [&'static str] = &["token"];
}
