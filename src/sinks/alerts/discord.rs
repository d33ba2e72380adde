//! The Discord alerter (`[alerts.<name>.discord]`): a message with an
//! embed in a channel, through the channel's webhook.
//!
//! What is sent is what Discord documents for "Execute Webhook"
//! (<https://discord.com/developers/docs/resources/webhook#execute-webhook>)
//! and embeds (<https://discord.com/developers/docs/resources/message#embed-object>):
//! `POST <webhook URL>` with `username`, `allowed_mentions` (`parse` empty,
//! so `@everyone` in a job's output mentions nobody) and one embed with
//! `title` (at most 256 characters), `description` (at most 4096), `url`,
//! a `color` as an integer, `fields` and an ISO 8601 `timestamp`.
//! Discord answers 204, or 429 with `Retry-After` when rate-limited.
//!
//! A chat groups: the changes of `group_interval` go in one message.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{secret_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::SecretUrl;
use super::delivery::Senders;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};

/// Red, as Discord shows an integer color.
pub(super) const RED: u32 = 0xD0_30_30;
/// Green.
pub(super) const GREEN: u32 = 0x2E_A0_43;

/// `[alerts.<name>.discord]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The channel's webhook URL (a secret: its path is the token).
    pub webhook_url: SecretUrl,
}

/// Discord's Markdown made literal: `\` before each character it
/// formats with, so an alarm name or job line cannot bold, link or quote.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']' | '(' | ')' | '-'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The message for one change or a group.
pub(super) fn body(group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        output,
        error,
        url,
    } = text::plain(group);
    let mut description = escape(&text);
    if let Some(out) = output {
        description.push_str(&format!(
            "\n```\n{}\n```",
            text::in_fence(&text::tail(&out, 3000))
        ));
    }
    let mut embed = json!({
        "title": super::text::cut(&title, 256),
        "description": super::text::cut(&description, 4096),
        "color": if error { RED } else { GREEN },
        "timestamp": chrono::DateTime::from_timestamp_millis(group.iter().map(|n| n.ts).max().unwrap_or(0))
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let [n] = group {
        embed["fields"] = json!([
            {"name": "Alarm", "value": super::text::cut(&n.alarm.name, 1024), "inline": true},
            {"name": "Incident", "value": format!("#{}", n.alarm.incident_nbr), "inline": true},
        ]);
    }
    if let Some(u) = url {
        embed["url"] = json!(u);
    }
    json!({
        "username": "Lovebeat",
        "allowed_mentions": {"parse": []},
        "embeds": [embed],
    })
}

/// Posts one message.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &DiscordConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    super::http::post(client, &config.webhook_url.0 .0, body(group), &[]).await
}

impl Alerter for DiscordConfig {
    fn kind(&self) -> &'static str {
        "discord"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        secret_url(&mut out, &self.webhook_url.0 .0);
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!("Discord webhook {}", shown(self.webhook_url.0 .0.as_str()))
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for DiscordConfig {
    const SECRET_KEYS: &'static [&'static str] = &["webhook_url"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::notice;

    #[test]
    fn markdown_in_names_is_shown_not_applied() {
        let mut n = notice(0, None);
        n.alarm.name = "**web**".into();
        let b = body(&[&n]);
        let d = b["embeds"][0]["description"].as_str().unwrap_or_default();
        assert!(d.contains("\\*\\*web\\*\\*"), "{d}");
        assert_eq!(b["allowed_mentions"]["parse"], json!([]));
    }
}
