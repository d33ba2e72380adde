//! Sending one message to one receiver, with retries. The dispatcher
//! decides what is sent, to whom and how many at a time; this module only
//! knows how to get it there.

use std::sync::Arc;
use std::time::Duration;

use super::alerter::{alerters_of, Alerter};
use super::config::AlertsConfig;
use super::{DeliveryError, Notice};

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

/// A message that was not delivered: failed for good, or retried for as
/// long as retries are allowed. Its reason names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(super) struct Undelivered {
    /// The last attempt's reason, scrubbed.
    pub(super) reason: String,
}

/// What the senders share.
pub(super) struct Senders {
    /// The sections alerters read besides their own (`[mail]`, `[slack]`).
    pub(super) config: Arc<AlertsConfig>,
    /// One HTTP client (its connection pool) for every HTTP receiver.
    pub(super) client: reqwest::Client,
    /// Every secret of every alerter ([`Alerter::secrets`]) with its
    /// escaped forms, which no error may name.
    pub(super) secrets: Vec<String>,
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
            .flat_map(alerters_of)
            .flat_map(|a| a.secrets(&senders.config))
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

    /// One try at sending `group` with `alerter`. What went wrong names no
    /// secret of any alerter's, even when the receiver echoed one back
    /// ([`Senders::secrets`]).
    pub(super) async fn attempt(
        &self,
        alerter: &dyn Alerter,
        group: &[&Notice],
    ) -> Result<(), DeliveryError> {
        alerter.send(self, group).await.map_err(|mut e| {
            e.reason = told(&e.reason, &self.secrets);
            e
        })
    }

    /// Sends `notices` as one message until it is delivered, fails for
    /// good, or [`RETRY_FOR`] has passed ([`ASKED_RETRY_FOR`] once the
    /// receiver asked for a wait), waiting between tries as long as the
    /// receiver asks (`Retry-After`) or twice as long each time. Each
    /// failed attempt is logged; the error is the last one's reason.
    pub(super) async fn deliver(
        &self,
        alerter: &dyn Alerter,
        notices: &[Arc<Notice>],
    ) -> Result<(), Undelivered> {
        let group: Vec<&Notice> = notices.iter().map(|n| n.as_ref()).collect();
        let start = tokio::time::Instant::now();
        let mut delay = FIRST_BACKOFF;
        loop {
            let failure = match self.attempt(alerter, &group).await {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            tracing::warn!(
                "{} alert {} failed: {}",
                alerter.kind(),
                about(&group),
                failure.reason
            );
            let Some(wait) = next_wait(&failure, delay, start.elapsed()) else {
                return Err(Undelivered {
                    reason: failure.reason,
                });
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
