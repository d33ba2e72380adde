//! The Mattermost alerter (README, "Alerts"): a Markdown post through an
//! incoming webhook (<https://developers.mattermost.com/integrate/webhooks/incoming/>),
//! one per change or group of changes.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use super::alerter::{secret_url, shown, Alerter, AlerterTable};
use super::config::{AlertsConfig, HttpUrl, SecretUrl};
use super::delivery::Senders;
use super::{http, text, DeliveryError, Notice};
use crate::settings::ConfigError;

/// Characters of a post's text at most: Mattermost refuses a post over
/// 16 383 characters.
const MAX_TEXT: usize = 16_000;

/// Characters of a job's output shown at most (its end).
const MAX_OUTPUT: usize = 4_000;

/// `[alerts.<name>.mattermost]`: a post through a Mattermost incoming
/// webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MattermostConfig {
    /// The incoming webhook, `https://<server>/hooks/<key>` (a secret: its
    /// key is the credential).
    pub webhook_url: SecretUrl,
    /// The name the post is shown under (if the server lets webhooks
    /// override it); "Lovebeat" if not given.
    #[serde(default)]
    pub username: Option<String>,
    /// The picture the post is shown with (if the server lets webhooks
    /// override it).
    #[serde(default)]
    pub icon_url: Option<HttpUrl>,
    /// A channel other than the webhook's own (its name, as in its URL:
    /// `town-square`, or `@user` for a direct message).
    #[serde(default)]
    pub channel: Option<String>,
}

/// Text in which `@channel`, `@here`, `@all` or a user's name mentions
/// nobody: a zero-width space after each `@`.
fn no_mentions(text: &str) -> String {
    text.replace('@', "@\u{200b}")
}

/// The post for one change or a group: the headline in bold, what
/// changed, the job's output in a code block, the link to the alarm.
pub(super) fn body(config: &MattermostConfig, group: &[&Notice]) -> serde_json::Value {
    let p = text::plain(group);
    let mut out = format!(
        "{} **{}**\n{}",
        if p.error {
            ":red_circle:"
        } else {
            ":large_green_circle:"
        },
        no_mentions(&p.title),
        no_mentions(&p.text)
    );
    if let Some(output) = &p.output {
        out.push_str("\n```\n");
        out.push_str(&text::in_fence(&text::tail(output, MAX_OUTPUT)));
        out.push_str("\n```");
    }
    if let Some(url) = &p.url {
        out.push_str(&format!("\n[Open the alarm]({url})"));
    }
    let mut body = json!({
        "text": text::cut(&out, MAX_TEXT),
        "username": config.username.as_deref().unwrap_or("Lovebeat"),
    });
    if let Some(icon) = &config.icon_url {
        body["icon_url"] = json!(icon.0.as_str());
    }
    if let Some(channel) = &config.channel {
        body["channel"] = json!(channel);
    }
    body
}

impl Alerter for MattermostConfig {
    fn kind(&self) -> &'static str {
        "mattermost"
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
        let mut out = format!(
            "Mattermost webhook {}",
            shown(self.webhook_url.0 .0.as_str())
        );
        if let Some(channel) = &self.channel {
            out.push_str(&format!(" to {channel}"));
        }
        out
    }

    fn validate(&self, alert: &str) -> Result<(), ConfigError> {
        if self.channel.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "[alerts.{alert}.mattermost] channel must not be empty"
            )));
        }
        Ok(())
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            http::post(
                &senders.client,
                &self.webhook_url.0 .0,
                body(self, group),
                &[],
            )
            .await
        })
    }
}

impl AlerterTable for MattermostConfig {
    const SECRET_KEYS: &'static [&'static str] = &["webhook_url"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::State;
    use crate::sinks::alerts::tests::{failed_job, notice};

    fn config(extra: &str) -> MattermostConfig {
        toml::from_str(&format!(
            "webhook_url = \"https://mattermost.example/hooks/SECRETKEY\"\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn a_post_says_what_changed_and_names_no_one() {
        let mut n = notice(0, Some(failed_job(Some(3), "@channel disk ```full")));
        n.url = Some("http://lb.example.com/alarms/jobs".into());
        let c =
            config("username = \"lb\"\nicon_url = \"https://x.example/i.png\"\nchannel = \"ops\"");
        let b = body(&c, &[&n]);
        let text = b["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":red_circle: **jobs is in ERROR**\n"),
            "{text}"
        );
        assert!(text.contains("Failed services: job.etl"), "{text}");
        assert!(text.contains("exit code 3"), "{text}");
        assert!(
            text.contains("```\n@channel disk `\u{200b}`\u{200b}`full\n```"),
            "{text}"
        );
        assert!(
            text.ends_with("[Open the alarm](http://lb.example.com/alarms/jobs)"),
            "{text}"
        );
        assert_eq!(b["username"], "lb");
        assert_eq!(b["icon_url"], "https://x.example/i.png");
        assert_eq!(b["channel"], "ops");

        // Without the options, the webhook's own channel, under our name.
        let mut ok = notice(0, None);
        ok.alarm.state = State::Ok;
        ok.previous = State::Error;
        let b = body(&config(""), &[&ok, &n]);
        assert_eq!(b["username"], "Lovebeat");
        assert!(
            b.get("channel").is_none() && b.get("icon_url").is_none(),
            "{b}"
        );
        let text = b["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":red_circle: **2 alarm changes**"),
            "{text}"
        );

        // The key never shows.
        let c = config("");
        assert!(!c.describe(&AlertsConfig::default()).contains("SECRETKEY"));
        assert!(c
            .secrets(&AlertsConfig::default())
            .iter()
            .any(|s| s == "SECRETKEY"));
        assert!(!format!("{c:?}").contains("SECRETKEY"));
    }
}
