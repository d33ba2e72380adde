//! Sending one message to one receiver, with retries. The dispatcher
//! decides what is sent, to whom and how many at a time; this module only
//! knows how to get it there.

use std::sync::Arc;
use std::time::Duration;

use super::config::{AlertConfig, AlertsConfig, HttpUrl, Recipients};
use super::discord::DiscordConfig;
use super::gotify::GotifyConfig;
use super::matrix::MatrixConfig;
use super::ntfy::NtfyConfig;
use super::opsgenie::OpsgenieConfig;
use super::pagerduty::PagerDutyConfig;
use super::pushover::PushoverConfig;
use super::teams::TeamsConfig;
use super::telegram::TelegramConfig;
use super::templated::TemplatedWebhookConfig;
use super::{
    discord, gotify, http, mail, matrix, ntfy, opsgenie, pagerduty, pushover, script, teams,
    telegram, templated, DeliveryError, Notice,
};

/// How long a failing delivery is retried, from its first attempt.
pub(super) const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long a delivery is retried once the receiver has asked for a wait
/// (a rate limit, Telegram's flood wait of a minute or more): the message
/// is fine, it is only early.
pub(super) const ASKED_RETRY_FOR: Duration = Duration::from_secs(600);
/// First retry delay; doubled after each failure.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one HTTP attempt may take.
pub(super) const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One channel of an alert: who receives, and how.
#[derive(Debug, Clone)]
pub(super) enum Channel {
    /// Mail to these addresses (SMTP or Mailgun).
    Mail(Recipients),
    /// 1.x's webhook POST.
    Webhook(HttpUrl),
    /// A Slack channel through `[slack] webhook_url`, or through the
    /// alert's own `slack_webhook_url`.
    Slack(String, Option<reqwest::Url>),
    /// An executable.
    Script(String),
    /// PagerDuty's Events API v2.
    PagerDuty(Arc<PagerDutyConfig>),
    /// Opsgenie's Alert API.
    Opsgenie(Arc<OpsgenieConfig>),
    /// A request made from the user's templates.
    Templated(Arc<TemplatedWebhookConfig>),
    /// Discord: an embed through a channel's webhook.
    Discord(Arc<DiscordConfig>),
    /// Microsoft Teams: an Adaptive Card through a Workflows webhook.
    Teams(Arc<TeamsConfig>),
    /// Telegram: a bot's message to a chat.
    Telegram(Arc<TelegramConfig>),
    /// ntfy: a push to a topic's subscribers.
    Ntfy(Arc<NtfyConfig>),
    /// Pushover: a push to a user or group.
    Pushover(Arc<PushoverConfig>),
    /// Gotify: a push through a self-hosted server.
    Gotify(Arc<GotifyConfig>),
    /// Matrix: a message in a room.
    Matrix(Arc<MatrixConfig>),
}

impl Channel {
    /// The channels an alert names, empty values left out as 1.x does.
    pub(super) fn of(alert: &AlertConfig) -> Vec<Channel> {
        let mut out = Vec::new();
        if let Some(to) = alert.mail.as_ref().filter(|r| !r.0.is_empty()) {
            out.push(Channel::Mail(to.clone()));
        }
        if let Some(url) = &alert.webhook {
            out.push(Channel::Webhook(url.clone()));
        }
        let channel = alert.slack_channel.clone().unwrap_or_default();
        let own = alert.slack_webhook_url.as_ref().map(|u| u.0 .0.clone());
        if !channel.is_empty() || own.is_some() {
            out.push(Channel::Slack(channel, own));
        }
        if let Some(s) = alert.script.as_ref().filter(|s| !s.is_empty()) {
            out.push(Channel::Script(s.clone()));
        }
        if let Some(pd) = &alert.pagerduty {
            out.push(Channel::PagerDuty(Arc::new(pd.clone())));
        }
        if let Some(og) = &alert.opsgenie {
            out.push(Channel::Opsgenie(Arc::new(og.clone())));
        }
        if let Some(t) = &alert.templated_webhook {
            out.push(Channel::Templated(Arc::new(t.clone())));
        }
        if let Some(c) = &alert.discord {
            out.push(Channel::Discord(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.teams {
            out.push(Channel::Teams(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.telegram {
            out.push(Channel::Telegram(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.ntfy {
            out.push(Channel::Ntfy(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.pushover {
            out.push(Channel::Pushover(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.gotify {
            out.push(Channel::Gotify(Arc::new(c.clone())));
        }
        if let Some(c) = &alert.matrix {
            out.push(Channel::Matrix(Arc::new(c.clone())));
        }
        out
    }

    /// Its kind, for the log.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Channel::Mail(_) => "mail",
            Channel::Webhook(_) => "webhook",
            Channel::Slack(..) => "slack",
            Channel::Script(_) => "script",
            Channel::PagerDuty(_) => "pagerduty",
            Channel::Opsgenie(_) => "opsgenie",
            Channel::Templated(_) => "templated_webhook",
            Channel::Discord(_) => "discord",
            Channel::Teams(_) => "teams",
            Channel::Telegram(_) => "telegram",
            Channel::Ntfy(_) => "ntfy",
            Channel::Pushover(_) => "pushover",
            Channel::Gotify(_) => "gotify",
            Channel::Matrix(_) => "matrix",
        }
    }

    /// Mail, Slack and the other chats and pushes group the changes of
    /// `group_interval` in one message (a mass outage is one message, not
    /// a flood a phone or a rate limit cannot take); a webhook POST and a
    /// script run stay one per change (the 1.x shape receivers rely on),
    /// and so do the pagers, whose every event opens or closes one
    /// incident, and the templated webhook, which is a webhook.
    pub(super) fn groups(&self) -> bool {
        matches!(
            self,
            Channel::Mail(_)
                | Channel::Slack(..)
                | Channel::Discord(_)
                | Channel::Teams(_)
                | Channel::Telegram(_)
                | Channel::Ntfy(_)
                | Channel::Pushover(_)
                | Channel::Gotify(_)
                | Channel::Matrix(_)
        )
    }

    /// The pagers: what they open stays open until it is closed.
    pub(super) fn is_pager(&self) -> bool {
        matches!(self, Channel::PagerDuty(_) | Channel::Opsgenie(_))
    }

    /// A script takes a `max_scripts` slot, the others a
    /// `max_alert_deliveries` one.
    pub(super) fn is_script(&self) -> bool {
        matches!(self, Channel::Script(_))
    }
}

/// What the senders share.
pub(super) struct Senders {
    config: Arc<AlertsConfig>,
    client: reqwest::Client,
    /// Every secret of every alerter ([`Senders::secrets`]), which no
    /// error may name.
    secrets: Vec<String>,
}

impl Senders {
    /// One HTTP client (its connection pool) for every HTTP receiver.
    pub(super) fn new(config: Arc<AlertsConfig>) -> anyhow::Result<Senders> {
        // Redirects are not followed: a redirected POST comes back as a
        // GET without its body (an alert "delivered" nowhere), and headers
        // that hold keys would go to whatever host the answer names.
        let client = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .user_agent("Lovebeat")
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut senders = Senders {
            config,
            client,
            secrets: Vec::new(),
        };
        let mut secrets: Vec<String> = senders
            .config
            .alerts
            .values()
            .flat_map(Channel::of)
            .flat_map(|c| senders.secrets(&c))
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        senders.secrets = secrets;
        Ok(senders)
    }

    /// One try at sending `group` on `channel`. What went wrong names no
    /// secret of any alerter's, even when the receiver echoed one back
    /// ([`Senders::secrets`]).
    pub(super) async fn attempt(
        &self,
        channel: &Channel,
        group: &[&Notice],
    ) -> Result<(), DeliveryError> {
        self.attempt_once(channel, group).await.map_err(|mut e| {
            e.reason = scrub(&e.reason, &self.secrets);
            e
        })
    }

    /// What of a channel's configuration is, or may hold, a secret: keys,
    /// tokens and passwords, and the parts of its URLs' paths and queries
    /// that are not plain words (a webhook's token is its path). Many
    /// receivers echo the request in an error (a framework's "Cannot POST
    /// /bot<token>/sendMessage"), and what went wrong is logged, reported
    /// and kept as `lovebeat.self.alerts`'s output.
    fn secrets(&self, channel: &Channel) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let url = |out: &mut Vec<String>, u: &reqwest::Url| {
            out.push(u.as_str().to_string());
            let parts = u
                .path_segments()
                .into_iter()
                .flatten()
                .map(str::to_string)
                .chain(u.query_pairs().map(|(_, v)| v.into_owned()));
            out.extend(parts.filter(|p| {
                p.len() >= 6 && !p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            }));
        };
        match channel {
            Channel::Mail(_) => {
                out.push(self.config.mailgun.api_key.clone());
                out.extend(self.config.mail.password.clone());
            }
            Channel::Webhook(u) => url(&mut out, &u.0),
            Channel::Slack(_, own) => match own {
                Some(u) => url(&mut out, u),
                None => {
                    if let Ok(u) = reqwest::Url::parse(&self.config.slack.webhook_url) {
                        url(&mut out, &u);
                    }
                }
            },
            Channel::Script(_) => {}
            Channel::PagerDuty(c) => {
                out.push(c.routing_key.clone());
                if let Some(u) = &c.url {
                    url(&mut out, &u.0);
                }
            }
            Channel::Opsgenie(c) => out.push(c.api_key.clone()),
            Channel::Templated(c) => {
                url(&mut out, &c.url.0);
                out.extend(c.headers.values().flat_map(|v| {
                    v.split_whitespace()
                        .map(str::to_string)
                        .chain(std::iter::once(v.clone()))
                        .collect::<Vec<_>>()
                }));
            }
            Channel::Discord(c) => url(&mut out, &c.webhook_url.0 .0),
            Channel::Teams(c) => url(&mut out, &c.webhook_url.0 .0),
            Channel::Telegram(c) => out.push(c.bot_token.0.clone()),
            Channel::Ntfy(c) => {
                out.push(c.topic.clone());
                out.extend(c.token.iter().map(|t| t.0.clone()));
            }
            Channel::Pushover(c) => out.extend([c.token.0.clone(), c.user.0.clone()]),
            Channel::Gotify(c) => out.push(c.token.0.clone()),
            Channel::Matrix(c) => out.push(c.access_token.0.clone()),
        }
        out
    }

    /// [`Senders::attempt`], before its error is scrubbed.
    async fn attempt_once(
        &self,
        channel: &Channel,
        group: &[&Notice],
    ) -> Result<(), DeliveryError> {
        match channel {
            Channel::Mail(to) => mail::send(&self.config, &self.client, group, to).await,
            Channel::Slack(c, own) => {
                let url = own
                    .as_ref()
                    .map_or(self.config.slack.webhook_url.as_str(), |u| u.as_str());
                http::slack(&self.client, url, c, group).await
            }
            // Webhooks and scripts are given one notice at a time.
            Channel::Webhook(url) => {
                for n in group {
                    http::webhook(&self.client, &url.0, n).await?;
                }
                Ok(())
            }
            Channel::PagerDuty(pd) => {
                for n in group {
                    pagerduty::send(&self.client, pd, n).await?;
                }
                Ok(())
            }
            Channel::Opsgenie(og) => {
                for n in group {
                    opsgenie::send(&self.client, og, n).await?;
                }
                Ok(())
            }
            Channel::Discord(c) => discord::send(&self.client, c, group).await,
            Channel::Teams(c) => teams::send(&self.client, c, group).await,
            Channel::Telegram(c) => telegram::send(&self.client, c, group).await,
            Channel::Ntfy(c) => ntfy::send(&self.client, c, group).await,
            Channel::Pushover(c) => pushover::send(&self.client, c, group).await,
            Channel::Gotify(c) => gotify::send(&self.client, c, group).await,
            Channel::Matrix(c) => matrix::send(&self.client, c, group).await,
            Channel::Templated(t) => {
                for n in group {
                    templated::send(&self.client, t, n).await?;
                }
                Ok(())
            }
            Channel::Script(path) => {
                for n in group {
                    script::run(path, n)
                        .await
                        .map_err(|e| DeliveryError::permanent(e.to_string()))?;
                }
                Ok(())
            }
        }
    }

    /// Sends `notices` as one message until it is delivered, fails for
    /// good, or [`RETRY_FOR`] has passed ([`ASKED_RETRY_FOR`] once the
    /// receiver asked for a wait), waiting between tries as long as the
    /// receiver asks (`Retry-After`) or twice as long each time. Each
    /// failed attempt is logged; the error is the last one's reason.
    pub(super) async fn deliver(
        &self,
        channel: &Channel,
        notices: &[Arc<Notice>],
    ) -> Result<(), String> {
        let group: Vec<&Notice> = notices.iter().map(|n| n.as_ref()).collect();
        let start = tokio::time::Instant::now();
        let mut delay = FIRST_BACKOFF;
        loop {
            let failure = match self.attempt(channel, &group).await {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            tracing::warn!(
                "{} alert {} failed: {}",
                channel.kind(),
                about(&group),
                failure.reason
            );
            // A receiver's Retry-After may lengthen the backoff, never
            // shorten it (`Retry-After: 0` must not make a busy loop).
            let wait = failure.retry_after.map_or(delay, |after| after.max(delay));
            let budget = if failure.retry_after.is_some() {
                ASKED_RETRY_FOR
            } else {
                RETRY_FOR
            };
            if !failure.retry || start.elapsed().saturating_add(wait) > budget {
                return Err(failure.reason);
            }
            tokio::time::sleep(wait).await;
            delay *= 2;
        }
    }
}

/// `text` with every secret in `secrets` of 4 bytes or more replaced by
/// `…`, longest first (so a URL goes before the token inside it).
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| s.len() >= 4)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, "…");
        }
    }
    out
}

/// What a message is about, for the log: the alarm and incident, or how
/// many changes a group holds.
pub(super) fn about(group: &[&Notice]) -> String {
    match group {
        [n] => format!(
            "for alarm {} (incident {})",
            n.alarm.name.escape_debug(),
            n.alarm.incident_nbr
        ),
        _ => format!("for {} alarm changes", group.len()),
    }
}
