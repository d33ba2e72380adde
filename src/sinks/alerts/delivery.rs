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
/// longer than the backoff's (a rate limit, Telegram's flood wait of a
/// minute or more): the message is fine, it is only early.
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
    /// One HTTP client (its connection pool) for every HTTP receiver, and
    /// the list of every alerter's secrets that errors are scrubbed of.
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
            .flat_map(|s| {
                // As a URL or a form would carry it.
                let escaped =
                    percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC)
                        .to_string();
                let form: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
                [s, escaped, form]
            })
            .collect();
        secrets.sort_unstable();
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
            e.reason = told(&e.reason, &self.secrets);
            e
        })
    }

    /// What of a channel's configuration is, or may hold, a secret: keys,
    /// tokens and passwords, and what looks like one ([`token_like`]) in
    /// its URLs' paths and queries (a webhook's token is its path) and in
    /// its templates. Many receivers echo the request in an error (a
    /// framework's "Cannot POST /bot<token>/sendMessage"), and what went
    /// wrong is logged, reported and kept as `lovebeat.self.alerts`'s
    /// output. [`Senders::new`] adds each one's escaped forms.
    fn secrets(&self, channel: &Channel) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        // As an `Authorization: Basic` header would quote a user and key.
        let basic = |user: &str, key: &str| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"))
        };
        // `https://user:password@host/`: sent as Basic authorization. Any
        // server URL may carry one, a receiver's own or a base.
        let credentials = |out: &mut Vec<String>, u: &reqwest::Url| {
            if let Some(password) = u.password() {
                let decoded = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                let password = decoded(password);
                out.push(basic(&decoded(u.username()), &password));
                out.push(password);
            }
        };
        // A URL that is itself a secret (a webhook's token is its path).
        let url = |out: &mut Vec<String>, u: &reqwest::Url| {
            out.push(u.as_str().to_string());
            out.extend(token_like(u.path()));
            out.extend(token_like(u.query().unwrap_or_default()));
            out.extend(u.query_pairs().flat_map(|(_, v)| token_like(&v)));
            credentials(out, u);
        };
        let base = |out: &mut Vec<String>, u: Option<&HttpUrl>| {
            if let Some(u) = u {
                credentials(out, &u.0);
            }
        };
        match channel {
            Channel::Mail(_) => {
                let key = &self.config.mailgun.api_key.0;
                out.push(key.clone());
                if !key.is_empty() {
                    out.push(basic("api", key));
                }
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
            Channel::Opsgenie(c) => {
                out.push(c.api_key.clone());
                base(&mut out, c.url.as_ref());
            }
            Channel::Templated(c) => {
                url(&mut out, &c.url.0);
                for v in c.headers.values() {
                    out.extend(token_like(v));
                }
                out.extend(token_like(&c.body));
            }
            Channel::Discord(c) => url(&mut out, &c.webhook_url.0 .0),
            Channel::Teams(c) => url(&mut out, &c.webhook_url.0 .0),
            Channel::Telegram(c) => {
                out.push(c.bot_token.0.clone());
                base(&mut out, c.url.as_ref());
            }
            Channel::Ntfy(c) => {
                // On ntfy.sh a topic is read by whoever knows it.
                if c.topic.len() >= 8 {
                    out.push(c.topic.clone());
                }
                out.extend(c.token.iter().map(|t| t.0.clone()));
                base(&mut out, c.url.as_ref());
            }
            Channel::Pushover(c) => {
                out.extend([c.token.0.clone(), c.user.0.clone()]);
                base(&mut out, c.url.as_ref());
            }
            Channel::Gotify(c) => {
                out.push(c.token.0.clone());
                base(&mut out, Some(&c.url));
            }
            Channel::Matrix(c) => {
                out.push(c.access_token.0.clone());
                base(&mut out, Some(&c.homeserver));
            }
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
            Channel::Pushover(c) => pushover::send(&self.client, c, group, &self.secrets).await,
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
            let Some(wait) = next_wait(&failure, delay, start.elapsed()) else {
                return Err(failure.reason);
            };
            tokio::time::sleep(wait).await;
            delay *= 2;
        }
    }
}

/// How long to wait before the next try after `failure`, `elapsed` since
/// the first, with the backoff at `delay`; `None` to give up. A
/// receiver's wait may lengthen the backoff, never shorten it (`Retry-After:
/// 0` must not make a busy loop). The longer budget is for a wait the
/// receiver asked for and the backoff did not already cover (a
/// `Retry-After: 1` on every 503 keeps the minute).
fn next_wait(failure: &DeliveryError, delay: Duration, elapsed: Duration) -> Option<Duration> {
    let wait = failure.retry_after.map_or(delay, |asked| asked.max(delay));
    let budget = if failure.retry_after.is_some_and(|asked| asked > delay) {
        ASKED_RETRY_FOR
    } else {
        RETRY_FOR
    };
    (failure.retry && elapsed.saturating_add(wait) <= budget).then_some(wait)
}

/// Characters of what went wrong that are kept: a receiver's answer is
/// read up to 2 KiB (`http::outcome`) and cut here, once scrubbed.
const REASON_CHARS: usize = 600;

/// What went wrong as it is logged and reported: scrubbed of `secrets`
/// before it is cut (so no secret is cut in two), on one line whatever
/// the receiver (an SMTP server as much as an HTTP one) answered.
fn told(reason: &str, secrets: &[String]) -> String {
    super::text::cut(
        &crate::escape::one_line(&scrub(reason, secrets)),
        REASON_CHARS,
    )
}

/// The words of `text` that look like a key or a token: 8 characters or
/// more of letters, digits and `_-.~+=:`, with a digit, a capital or an
/// underscore in them (so `application/json` or `webhooks` are not).
pub(super) fn token_like(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "_-.~+=:".contains(c)))
        .filter(|w| {
            w.len() >= 8
                && w.bytes()
                    .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b == b'_')
        })
        .map(str::to_string)
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_asked_for_is_kept_and_earns_ten_minutes_only_beyond_the_backoff() {
        let secs = Duration::from_secs;
        let failure = |retry, asked: Option<u64>| DeliveryError {
            reason: String::new(),
            retry,
            retry_after: asked.map(secs),
        };
        // The backoff, then the end of the minute.
        assert_eq!(
            next_wait(&failure(true, None), secs(4), secs(10)),
            Some(secs(4))
        );
        assert_eq!(next_wait(&failure(true, None), secs(8), secs(55)), None);
        // Asked for 0 or 1: the backoff, within the minute.
        assert_eq!(
            next_wait(&failure(true, Some(0)), secs(2), secs(1)),
            Some(secs(2))
        );
        assert_eq!(next_wait(&failure(true, Some(1)), secs(8), secs(55)), None);
        // A flood wait of 35 s after 40 s: kept, within ten minutes.
        assert_eq!(
            next_wait(&failure(true, Some(35)), secs(4), secs(40)),
            Some(secs(35))
        );
        assert_eq!(
            next_wait(&failure(true, Some(35)), secs(4), secs(580)),
            None
        );
        assert_eq!(
            next_wait(&failure(true, Some(86_400)), secs(1), secs(0)),
            None
        );
        // A final refusal is not retried.
        assert_eq!(next_wait(&failure(false, None), secs(1), secs(0)), None);
        // Nothing overflows.
        assert_eq!(
            next_wait(&failure(true, Some(u64::MAX)), secs(1), secs(2)),
            None
        );
    }

    #[test]
    fn token_like_words_are_keys_not_words() {
        assert_eq!(
            token_like("Bearer tk_AbCdEf12 application/json webhooks T0123456"),
            ["tk_AbCdEf12", "T0123456"]
        );
        assert_eq!(
            token_like("/services/T000AAAA/B000BBBB/xxxxxxxxxxxxXXXXxxxx"),
            ["T000AAAA", "B000BBBB", "xxxxxxxxxxxxXXXXxxxx"]
        );
        assert!(token_like("short A1 words-only").is_empty());
    }

    #[test]
    fn secrets_are_scrubbed_longest_first() {
        let secrets = [
            "tok".to_string(),
            "abcd1234".into(),
            "https://x/abcd1234".into(),
        ];
        assert_eq!(
            scrub("POST https://x/abcd1234 said abcd1234 tok", &secrets),
            "POST … said … tok",
            "a URL goes whole; 3-byte secrets are too short to scrub"
        );
    }

    #[test]
    fn every_escaped_form_of_a_secret_is_known_and_a_long_answer_is_cut_after_scrubbing() {
        let config = crate::config::Config::parse(
            "[alerts.ops.telegram]\nbot_token = \"1:S ecret+Key\"\nchat_id = 1\n",
        )
        .expect("config")
        .alerts_config();
        let senders = Senders::new(Arc::new(config)).expect("senders");
        let escaped = scrub(
            "1%3AS%20ecret%2BKey and 1%3AS+ecret%2BKey",
            &senders.secrets,
        );
        assert_eq!(escaped, "… and …");
        let long = format!("{}1:S ecret+Key", "x".repeat(595));
        let cut = told(&long, &senders.secrets);
        assert!(!cut.contains("1:S"), "{cut}");
        // A password in a webhook's URL, as it is sent.
        let config = crate::config::Config::parse(
            "[alerts.ops]\nwebhook = \"https://alerts:pass%20word@hook.example/in\"\n\
             [alerts.ops.ntfy]\ntopic = \"t\"\nurl = \"https://u:ntfy-pw@ntfy.internal\"\n",
        )
        .expect("config")
        .alerts_config();
        let senders = Senders::new(Arc::new(config)).expect("senders");
        assert_eq!(
            told(
                "401 for YWxlcnRzOnBhc3Mgd29yZA== (pass word)",
                &senders.secrets
            ),
            "401 for … (…)"
        );
        // A server's, too, where the URL itself is no secret.
        assert_eq!(
            told("401 for dTpudGZ5LXB3 (ntfy-pw)", &senders.secrets),
            "401 for … (…)"
        );
        // An SMTP server's reply is one line too.
        assert_eq!(
            told("535 denied\r\n\x1b[31mforged line", &[]),
            "535 denied   [31mforged line"
        );
    }
}
