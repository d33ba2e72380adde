//! The alerts' configuration: `[alerts.<name>]` sections, `[flapping]`,
//! `[self_alarm]`, and what the alerters take from the rest of the file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use super::alerter::{alerters_of, Alerter, AlerterTable};
use super::discord::DiscordConfig;
use super::gotify::GotifyConfig;
use super::http::SlackConfig;
use super::mail::{MailConfig, MailgunConfig};
use super::matrix::MatrixConfig;
use super::mattermost::MattermostConfig;
use super::ntfy::NtfyConfig;
use super::opsgenie::OpsgenieConfig;
use super::pagerduty::PagerDutyConfig;
use super::pushover::PushoverConfig;
use super::teams::TeamsConfig;
use super::telegram::TelegramConfig;
use super::templated::TemplatedWebhookConfig;
use crate::settings::duration::DurationSetting;
use crate::settings::ConfigError;

/// Defines [`AlertConfig`] with 1.x's keys and one `[alerts.<name>.<kind>]`
/// table per registered alerter, and [`AlertConfig::tables`], which
/// builds the alerters of the tables an alert has: the one place an
/// alerter's table is registered.
macro_rules! alert_config {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty, )*) => {
        /// `[alerts.<name>]`: the channels an alarm's changes are announced on.
        #[derive(Debug, Clone, Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        pub struct AlertConfig {
            /// Mail addresses, comma-separated as 1.x writes them.
            pub mail: Option<Recipients>,
            /// URL each change is POSTed to (a secret: it is never logged).
            pub webhook: Option<HttpUrl>,
            /// Slack channel (through `[slack] webhook_url`).
            pub slack_channel: Option<String>,
            /// This alert's own Slack-compatible incoming webhook, instead of
            /// `[slack] webhook_url`: two chats (Slack and Mattermost, say) can
            /// then be reached side by side. Alone, it posts to the webhook's own
            /// channel.
            pub slack_webhook_url: Option<SecretUrl>,
            /// Executable run for each change.
            pub script: Option<String>,
            /// Send again every this long while the alarm stays ERROR.
            pub repeat: Option<DurationSetting>,
            /// Receivers that group (mail, Slack, chats, pushes): changes within
            /// this long of the last message to the same receiver go together in
            /// the next one (default 10 s).
            pub group_interval: Option<DurationSetting>,
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        impl AlertConfig {
            /// The alerters of the tables this alert has, in the order
            /// they are registered.
            pub(super) fn tables(&self) -> Vec<Arc<dyn Alerter>> {
                let mut out: Vec<Arc<dyn Alerter>> = Vec::new();
                $( if let Some(c) = &self.$field { out.push(Arc::new(c.clone())); } )*
                out
            }
        }

        /// True when `key`, in some alerter's table, holds a secret: a
        /// parse error about it does not quote its value.
        pub fn is_secret_key(key: &str) -> bool {
            false $( || <$ty as AlerterTable>::SECRET_KEYS.contains(&key) )*
        }
    };
}

// The registry: one line per alerter configured as a table.
alert_config! {
    /// `[alerts.<name>.pagerduty]`: a PagerDuty incident per alarm
    /// incident (Events API v2).
    pagerduty: PagerDutyConfig,
    /// `[alerts.<name>.opsgenie]`: an Opsgenie alert per alarm incident.
    opsgenie: OpsgenieConfig,
    /// `[alerts.<name>.templated_webhook]`: a request of the user's
    /// making, for services without an alerter of their own.
    templated_webhook: TemplatedWebhookConfig,
    /// `[alerts.<name>.discord]`: Discord: an embed through a channel's webhook.
    discord: DiscordConfig,
    /// `[alerts.<name>.teams]`: Microsoft Teams: an Adaptive Card through a Workflows webhook.
    teams: TeamsConfig,
    /// `[alerts.<name>.telegram]`: Telegram: a bot's message to a chat.
    telegram: TelegramConfig,
    /// `[alerts.<name>.ntfy]`: ntfy: a push to a topic's subscribers.
    ntfy: NtfyConfig,
    /// `[alerts.<name>.pushover]`: Pushover: a push to a user or group.
    pushover: PushoverConfig,
    /// `[alerts.<name>.gotify]`: Gotify: a push through a self-hosted server.
    gotify: GotifyConfig,
    /// `[alerts.<name>.matrix]`: Matrix: a message in a room.
    matrix: MatrixConfig,
    /// `[alerts.<name>.mattermost]`: Mattermost: a post through an incoming webhook.
    mattermost: MattermostConfig,
}

/// How long changes are grouped, for the receivers that group, when no
/// `group_interval` is given.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(10);

/// The longest `repeat`, `group_interval` and `[flapping] window`: the
/// dispatcher's timers hold about two years at most, and a value beyond
/// a year is a typo.
pub(super) const MAX_ALERT_TIMER: Duration = Duration::from_secs(365 * 86_400);

impl AlertConfig {
    /// Checks the alert as the file is read: each alerter's own settings
    /// ([`Alerter::validate`]), a reminder no more often than every
    /// second (more would flood its receivers), and `repeat` and
    /// `group_interval` within [`MAX_ALERT_TIMER`] (beyond is a typo, not
    /// a plan).
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        for alerter in alerters_of(self) {
            alerter.validate(name)?;
        }
        match self.repeat {
            Some(r) if r.ms < 1000 => {
                return Err(ConfigError::Invalid(format!(
                    "[alerts.{name}] repeat must be at least 1s"
                )))
            }
            Some(r) if r.ms > MAX_ALERT_TIMER.as_millis() as u64 => {
                return Err(ConfigError::Invalid(format!(
                    "[alerts.{name}] repeat must be at most 365d"
                )))
            }
            _ => {}
        }
        match self.group_interval {
            Some(g) if g.ms > MAX_ALERT_TIMER.as_millis() as u64 => Err(ConfigError::Invalid(
                format!("[alerts.{name}] group_interval must be at most 365d"),
            )),
            _ => Ok(()),
        }
    }

    /// `group_interval`, or its default.
    pub fn group_interval(&self) -> Duration {
        self.group_interval
            .map_or(DEFAULT_GROUP_INTERVAL, |g| Duration::from_millis(g.ms))
    }
}

/// Mail addresses, read from 1.x's comma-separated string and checked as
/// the file is read (an empty string is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipients(pub Arc<[Mailbox]>);

impl<'de> Deserialize<'de> for Recipients {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Recipients, D::Error> {
        let text = String::deserialize(d)?;
        let list: Result<Vec<Mailbox>, _> = text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| serde::de::Error::custom(format!("mail address '{a}': {e}")))
            })
            .collect();
        Ok(Recipients(list?.into()))
    }
}

/// An `http` or `https` URL, checked as the file is read. It may hold a
/// secret (a webhook's path often does): it is only ever logged through
/// `redact::url_for_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub reqwest::Url);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HttpUrl, D::Error> {
        let text = String::deserialize(d)?;
        let url = reqwest::Url::parse(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "not a URL ({e}): {}",
                crate::redact::url_for_log(&text)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(serde::de::Error::custom(format!(
                "{} is not an http or https URL",
                crate::redact::url_for_log(&text)
            )));
        }
        Ok(HttpUrl(url))
    }
}

/// `[flapping]`: an alarm that changes state too often is announced once
/// as flapping, and once when it settles, instead of at every change
/// (Nagios's flap detection, on a window of time: lovebeat has no
/// periodic checks to count).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    /// Off: every change is announced.
    pub enabled: bool,
    /// The window changes are counted in.
    pub window: DurationSetting,
    /// Flapping starts when this many changes fall in the window.
    pub start: usize,
    /// It ends when at most this many do.
    pub stop: usize,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        FlappingConfig {
            enabled: true,
            window: DurationSetting { ms: 10 * 60_000 },
            start: 6,
            stop: 2,
        }
    }
}

impl FlappingConfig {
    /// The thresholds must leave room between them (hysteresis).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let window_ok =
            self.window.ms >= 1000 && self.window.ms <= MAX_ALERT_TIMER.as_millis() as u64;
        if self.enabled && (self.start < 2 || self.stop >= self.start || !window_ok) {
            return Err(ConfigError::Invalid(
                "[flapping] needs start of at least 2, stop below start and a window from 1s to 365d".into(),
            ));
        }
        Ok(())
    }
}

/// `[self_alarm]`: the built-in alarm `lovebeat.self` that lovebeat's own
/// trouble (failed saves, uploads and alert deliveries, limits reached)
/// puts in ERROR, and the alerts it fires.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SelfAlarmConfig {
    /// Names of `[alerts.<name>]` sections.
    pub alerts: Vec<String>,
}

/// What the alerters take from the configuration.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    /// `[alerts.<name>]`.
    pub alerts: BTreeMap<String, AlertConfig>,
    /// `[mail]`.
    pub mail: MailConfig,
    /// `[mailgun]`.
    pub mailgun: MailgunConfig,
    /// `[slack]`.
    pub slack: SlackConfig,
    /// `[flapping]`.
    pub flapping: FlappingConfig,
    /// Links in alerts: `<public_url>alarms/<name>`.
    pub public_url: Option<String>,
    /// `[limits] max_alert_deliveries`.
    pub max_deliveries: usize,
    /// `[limits] max_scripts`.
    pub max_scripts: usize,
}

/// A token, key or secret URL from the file: shown as `(secret)` in any
/// `Debug` output, so a config printed for debugging leaks nothing.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

/// An [`HttpUrl`] that is itself a credential (a chat's webhook URL):
/// `Debug` shows only its scheme and host.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub HttpUrl);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redact::url_for_log(self.0 .0.as_str()))
    }
}
