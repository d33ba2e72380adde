//! The outgoing webhook (README, "Alerts") and Slack (README, "Alerts") alerters.

use serde_json::json;

use std::time::Duration;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::alerter::{each, secret_url, shown, Alerter};
use super::config::{AlertConfig, AlertsConfig, HttpUrl};
use super::delivery::Senders;
use super::{failed_list, DeliveryError, Flapping, Notice};
use crate::engine::State;
use crate::redact::url_for_log;

/// `[slack]`: the incoming webhook that `slack_channel` alerts post to.
#[derive(Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Incoming webhook URL (a secret: its path is the token).
    pub webhook_url: String,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("webhook_url", &url_for_log(&self.webhook_url))
            .finish()
    }
}

/// POSTs `body` as JSON, with `extra` headers (values may be secrets:
/// they are never logged).
pub(super) async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: serde_json::Value,
    extra: &[(&str, &str)],
) -> Result<(), DeliveryError> {
    send_json(client, reqwest::Method::POST, url, body, extra).await
}

/// Sends `body` as JSON with `method`, with `extra` headers (values may
/// be secrets: they are never logged). The client says `User-Agent:
/// Lovebeat`.
pub(super) async fn send_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &reqwest::Url,
    body: serde_json::Value,
    extra: &[(&str, &str)],
) -> Result<(), DeliveryError> {
    let what = format!("{method} {}", url_for_log(url.as_str()));
    let mut req = client
        .request(method, url.clone())
        .header("Content-Type", "application/json")
        .header("Accept", "application/json");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    outcome(&what, req.body(body.to_string()).send().await).await
}

/// A configured server's `base` URL with `path` (which starts with `/`)
/// after it, a trailing `/` of the base or not; a failure names the
/// `setting` it came from.
pub(super) fn endpoint(
    base: &str,
    path: &str,
    setting: &str,
) -> Result<reqwest::Url, DeliveryError> {
    reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/')))
        .map_err(|_| DeliveryError::permanent(format!("{setting} is not a URL")))
}

/// Bytes of a refusing receiver's answer read for the log and the test
/// report: enough for the error message every service puts first. The
/// delivery scrubs secrets out of it, then cuts it shorter.
const ANSWER_BYTES: usize = 2048;

/// Maps the result of an HTTP delivery: connection errors, timeouts, 5xx
/// 408, 425 and 429 are worth retrying (after the wait the receiver asks
/// for, as a `Retry-After` header in seconds or, in a JSON body, as
/// Telegram's `parameters.retry_after` or Matrix's `retry_after_ms`);
/// other non-2xx answers, redirects included, are final. A refusal
/// carries the start of what the receiver answered, on one line, so a test
/// of the alert shows why. `what` names the receiver without its secrets
/// ([`url_for_log`]), and the error is stripped of the URL reqwest would
/// put in it.
pub(super) async fn outcome(
    what: &str,
    result: reqwest::Result<reqwest::Response>,
) -> Result<(), DeliveryError> {
    let mut resp = result.map_err(|e| DeliveryError {
        // A request that cannot even be built (a header value a token
        // with a line break makes) fails the same way every time.
        retry: !e.is_builder(),
        reason: format!("{what}: {}", crate::escape::error_chain(&e.without_url())),
        retry_after: None,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let header_wait = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // The start of the answer, read in chunks so a receiver that sends
    // megabytes costs at most one chunk more than the cap.
    let mut answer = Vec::new();
    while answer.len() < ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
            _ => break,
        }
    }
    // Telegram says `parameters.retry_after` (seconds), Matrix
    // `retry_after_ms`.
    let body_wait = || {
        let v = serde_json::from_slice::<serde_json::Value>(&answer).ok()?;
        v.pointer("/parameters/retry_after")
            .and_then(serde_json::Value::as_u64)
            .or_else(|| Some(v.get("retry_after_ms")?.as_u64()?.div_ceil(1000)))
    };
    let redirect = status
        .is_redirection()
        .then(|| resp.headers().get(reqwest::header::LOCATION))
        .flatten()
        .and_then(|l| l.to_str().ok())
        .and_then(|l| resp.url().join(l).ok())
        .map(|to| {
            format!(
                " (redirects are not followed: it points to {})",
                url_for_log(to.as_str())
            )
        });
    // A day is longer than any retry lasts: a wait beyond it means the
    // same, give up now, and cannot overflow a clock.
    let retry_after = header_wait
        .or_else(body_wait)
        .map(|s| Duration::from_secs(s.min(86_400)));
    let text = String::from_utf8_lossy(&answer[..answer.len().min(ANSWER_BYTES)]);
    let text = crate::escape::one_line(&text);
    let mut reason = format!("{what}: HTTP {status}{}", redirect.unwrap_or_default());
    if !text.is_empty() {
        reason.push_str(": ");
        reason.push_str(&text);
    }
    Err(DeliveryError {
        reason,
        // 408 (it timed out waiting) and 425 (too early) ask for another
        // try, as 429 and 5xx do.
        retry: status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429),
        retry_after,
    })
}

/// The webhook body: 1.x's documented fields plus ours.
pub(super) fn webhook_body(n: &Notice) -> serde_json::Value {
    let mut body = json!({
        "name": n.alarm.name,
        "from_state": n.previous.as_str(),
        "to_state": n.alarm.state.as_str(),
        "incident_number": n.alarm.incident_nbr,
        "failed_services": n.alarm.failed_services,
        "timestamp": n.ts,
    });
    if let Some(url) = &n.url {
        body["url"] = json!(url);
    }
    if let Some(f) = &n.failure {
        body["failure"] = json!(f);
    }
    if n.repeat > 0 {
        body["repeat"] = json!(n.repeat);
    }
    if n.test {
        body["test"] = json!(true);
    }
    match n.flapping {
        Some(Flapping::Started { .. }) => body["flapping"] = json!(true),
        Some(Flapping::Stopped) => body["flapping"] = json!(false),
        None => {}
    }
    body
}

/// POSTs the webhook.
pub(super) async fn webhook(
    client: &reqwest::Client,
    url: &reqwest::Url,
    n: &Notice,
) -> Result<(), DeliveryError> {
    let key = super::incident::idempotency_key(n);
    post(
        client,
        url,
        webhook_body(n),
        &[("X-Lovebeat", "1"), ("Idempotency-Key", &key)],
    )
    .await
}

/// Text as Slack reads it: `&`, `<` and `>` are escaped as Slack's
/// message formatting asks (so `<!channel>` in a job's output is text, not
/// a mention of everyone), and no two backticks stay adjacent (so output
/// cannot close the code block it is shown in and format what follows).
/// <https://api.slack.com/reference/surfaces/formatting#escaping>
pub(super) fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut prev = '\0';
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A zero-width space between backticks breaks up a fence.
            '`' if prev == '`' => out.push_str("\u{200b}`"),
            c => out.push(c),
        }
        prev = c;
    }
    out
}

/// Changes listed in one grouped Slack message at most (Slack cuts a
/// message's text at 40 000 characters); the rest are counted.
pub(super) const SLACK_GROUP_LINES: usize = 100;

/// The Slack message for one change, or for a group. Everything that does
/// not come from the config is escaped ([`slack_escape`]).
pub(super) fn slack_body(channel: &str, group: &[&Notice]) -> serde_json::Value {
    let attachment = match group {
        [n] => slack_attachment(n),
        _ => {
            let error = group.iter().any(|n| n.alarm.state == State::Error);
            let mut text = String::new();
            for n in group.iter().take(SLACK_GROUP_LINES) {
                let line = slack_escape(&super::text::change_line(n));
                match &n.url {
                    Some(u) => text.push_str(&format!("• <{u}|{line}>\n")),
                    None => text.push_str(&format!("• {line}\n")),
                }
            }
            if let Some(more) = super::text::more_changes(group.len(), SLACK_GROUP_LINES) {
                text.push_str(&format!("{more}\n"));
            }
            json!({
                "color": if error { "danger" } else { "good" },
                "title": format!("{} alarm changes", group.len()),
                "text": text,
            })
        }
    };
    let mut body = json!({
        "username": "Lovebeat",
        "attachments": [attachment],
    });
    // Empty: the webhook's own channel (a per-alert slack_webhook_url).
    if !channel.is_empty() {
        body["channel"] = json!(channel);
    }
    body
}

fn slack_attachment(n: &Notice) -> serde_json::Value {
    let name = slack_escape(&n.alarm.name);
    let name = name.as_str();
    let link = match &n.url {
        Some(u) => format!("<{u}|{name}>"),
        None => name.to_string(),
    };
    let error = n.alarm.state == State::Error;
    if n.maintenance.is_some() {
        return json!({
            "color": "#439FE0",
            "title": slack_escape(&super::text::headline(n)),
            "text": slack_escape(&super::text::sentence(n)),
        });
    }
    let title = match n.flapping {
        _ if n.test => format!("[TEST] {link}: a test sent on request"),
        Some(Flapping::Started { .. }) => format!("{link} is flapping"),
        Some(Flapping::Stopped) => format!("{link} stopped flapping"),
        None if error => format!("{link} is in ERROR{}", super::text::reminder(n)),
        None => format!("{link} has recovered"),
    };
    let mut fields = vec![
        json!({"title": "Alarm", "value": name, "short": true}),
        json!({"title": "Incident Number", "value": format!("#{}", n.alarm.incident_nbr), "short": true}),
    ];
    if error {
        fields.push(
            json!({"title": "Failed Service(s)", "value": slack_escape(&failed_list(&n.alarm)), "short": false}),
        );
    }
    let mut text = match n.flapping {
        Some(_) => slack_escape(&super::text::sentence(n)),
        None => format!(
            "Changed from {} to {}.",
            n.previous.as_upper(),
            n.alarm.state.as_upper()
        ),
    };
    if let Some(f) = &n.failure {
        text.push(' ');
        text.push_str(&slack_escape(&super::text::failure_line(f)));
        if !f.output.is_empty() {
            text.push_str(&format!("\n```\n{}\n```", slack_escape(&f.output)));
        }
    }
    json!({
        "color": if error { "danger" } else { "good" },
        "title": title,
        "text": text,
        "fields": fields,
    })
}

/// POSTs to Slack's incoming webhook.
pub(super) async fn slack(
    client: &reqwest::Client,
    webhook_url: &str,
    channel: &str,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    if webhook_url.is_empty() {
        return Err(DeliveryError::permanent(
            "slack_channel is set but neither [slack] webhook_url nor the alert's slack_webhook_url is".into(),
        ));
    }
    let url = reqwest::Url::parse(webhook_url)
        .map_err(|_| DeliveryError::permanent("[slack] webhook_url is not a URL".into()))?;
    post(client, &url, slack_body(channel, group), &[]).await
}

/// 1.x's webhook: one JSON POST per change.
#[derive(Debug, Clone)]
pub(super) struct WebhookAlerter {
    /// Where (a secret: its path often is a token).
    url: HttpUrl,
}

/// The webhook alerter of `alert`, if it has a `webhook`.
pub(super) fn webhook_alerter(alert: &AlertConfig) -> Option<Arc<dyn Alerter>> {
    let url = alert.webhook.clone()?;
    Some(Arc::new(WebhookAlerter { url }))
}

impl Alerter for WebhookAlerter {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn groups(&self) -> bool {
        false
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        secret_url(&mut out, &self.url.0);
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!("webhook {}", shown(self.url.0.as_str()))
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(each(group, |n| webhook(&senders.client, &self.url.0, n)))
    }
}

/// A Slack channel, through `[slack] webhook_url` or the alert's own
/// `slack_webhook_url`.
#[derive(Debug, Clone)]
pub(super) struct SlackAlerter {
    /// The channel named in the message (empty: the webhook's own).
    channel: String,
    /// The alert's own webhook (a secret), instead of `[slack]`'s.
    own: Option<reqwest::Url>,
}

/// The Slack alerter of `alert`, if it names a channel or a webhook of
/// its own.
pub(super) fn slack_alerter(alert: &AlertConfig) -> Option<Arc<dyn Alerter>> {
    let channel = alert.slack_channel.clone().unwrap_or_default();
    let own = alert.slack_webhook_url.as_ref().map(|u| u.0 .0.clone());
    if channel.is_empty() && own.is_none() {
        return None;
    }
    Some(Arc::new(SlackAlerter { channel, own }))
}

impl Alerter for SlackAlerter {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        match &self.own {
            Some(u) => secret_url(&mut out, u),
            None => {
                if let Ok(u) = reqwest::Url::parse(&shared.slack.webhook_url) {
                    secret_url(&mut out, &u);
                }
            }
        }
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        let mut out = "Slack".to_string();
        if !self.channel.is_empty() {
            out.push(' ');
            out.push_str(&self.channel);
        }
        if let Some(u) = &self.own {
            out.push_str(" via ");
            out.push_str(&shown(u.as_str()));
        }
        out
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let url = self
            .own
            .as_ref()
            .map_or(senders.config.slack.webhook_url.as_str(), |u| u.as_str());
        Box::pin(slack(&senders.client, url, &self.channel, group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal(status: u16, headers: &[(&str, &str)], body: &str) -> DeliveryError {
        let mut b = hyper::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = reqwest::Response::from(b.body(body.to_string()).expect("response"));
        outcome("POST x", Ok(resp)).await.expect_err("a refusal")
    }

    #[tokio::test]
    async fn a_wait_is_read_from_the_header_or_a_telegram_body_and_bounded() {
        let e = refusal(429, &[("Retry-After", "7")], "").await;
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(e.retry);
        let body = r#"{"ok":false,"error_code":429,"parameters":{"retry_after":4}}"#;
        assert_eq!(
            refusal(429, &[], body).await.retry_after,
            Some(Duration::from_secs(4))
        );
        // The header wins over the body.
        assert_eq!(
            refusal(429, &[("Retry-After", "2")], body)
                .await
                .retry_after,
            Some(Duration::from_secs(2))
        );
        // An absurd wait is a day, not an overflow.
        let e = refusal(503, &[("Retry-After", "18446744073709551615")], "").await;
        assert_eq!(e.retry_after, Some(Duration::from_secs(86_400)));
        assert!(!refusal(400, &[], "{}").await.retry, "a 4xx is final");
        for asks_again in [408, 425, 429, 500, 503] {
            assert!(refusal(asks_again, &[], "").await.retry, "{asks_again}");
        }
        // Matrix says it in milliseconds, rounded up here.
        let body = r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":2500}"#;
        assert_eq!(
            refusal(429, &[], body).await.retry_after,
            Some(Duration::from_secs(3))
        );
    }

    #[tokio::test]
    async fn a_refusal_says_what_the_receiver_answered_on_one_bounded_line() {
        let e = refusal(400, &[], "{\"error\":\"bad topic\"}\nforged: log line\r\n").await;
        assert_eq!(
            e.reason,
            "POST x: HTTP 400 Bad Request: {\"error\":\"bad topic\"} forged: log line"
        );
        let long = "é".repeat(10_000);
        let e = refusal(500, &[], &long).await;
        assert!(!e.reason.contains('\n'));
        assert!(e.reason.len() < 2100, "{}", e.reason.len());
        assert_eq!(
            refusal(502, &[], "").await.reason,
            "POST x: HTTP 502 Bad Gateway"
        );
    }
}
