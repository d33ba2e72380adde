//! The outgoing webhook (README, "Alerts") and Slack (README, "Alerts") alerters.

use serde_json::json;

use super::{failed_list, DeliveryError, Notice};
use crate::engine::State;
use crate::redact::url_for_log;

/// `[slack]`: the incoming webhook that `slack_channel` alerts post to.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Incoming webhook URL (a secret: its path is the token).
    pub webhook_url: String,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    extra: &[(&str, &str)],
) -> Result<(), DeliveryError> {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("User-Agent", "Lovebeat");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    outcome(
        &format!("POST {}", url_for_log(url)),
        req.body(body.to_string()).send().await,
    )
}

/// Maps the result of an HTTP delivery: connection errors, timeouts, 5xx
/// and 429 are worth retrying; other non-2xx answers are final. `what`
/// names the receiver without its secrets ([`url_for_log`]), and the
/// error is stripped of the URL reqwest would put in it.
pub(super) fn outcome(
    what: &str,
    result: reqwest::Result<reqwest::Response>,
) -> Result<(), DeliveryError> {
    let resp = result.map_err(|e| DeliveryError {
        reason: format!("{what}: {}", e.without_url()),
        retry: true,
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError {
            reason: format!("{what}: HTTP {status}"),
            retry: status.is_server_error() || status.as_u16() == 429,
        })
    }
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
    body
}

/// POSTs the webhook.
pub(super) async fn webhook(
    client: &reqwest::Client,
    url: &str,
    n: &Notice,
) -> Result<(), DeliveryError> {
    post(client, url, webhook_body(n), &[("X-Lovebeat", "1")]).await
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

/// The Slack message. Everything that does not come from the config is
/// escaped ([`slack_escape`]).
pub(super) fn slack_body(channel: &str, n: &Notice) -> serde_json::Value {
    let name = slack_escape(&n.alarm.name);
    let name = name.as_str();
    let link = match &n.url {
        Some(u) => format!("<{u}|{name}>"),
        None => name.to_string(),
    };
    let error = n.alarm.state == State::Error;
    let title = if error {
        format!("{link} is in ERROR{}", super::mail::reminder(n))
    } else {
        format!("{link} has recovered")
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
    let mut text = format!(
        "Changed from {} to {}.",
        n.previous.as_upper(),
        n.alarm.state.as_upper()
    );
    if let Some(f) = &n.failure {
        text.push(' ');
        text.push_str(&slack_escape(&super::mail::failure_line(f)));
        if !f.output.is_empty() {
            text.push_str(&format!("\n```\n{}\n```", slack_escape(&f.output)));
        }
    }
    json!({
        "username": "Lovebeat",
        "channel": channel,
        "attachments": [{
            "color": if error { "danger" } else { "good" },
            "title": title,
            "text": text,
            "fields": fields,
        }],
    })
}

/// POSTs to Slack's incoming webhook.
pub(super) async fn slack(
    client: &reqwest::Client,
    webhook_url: &str,
    channel: &str,
    n: &Notice,
) -> Result<(), DeliveryError> {
    if webhook_url.is_empty() {
        return Err(DeliveryError {
            reason: "slack_channel is set but [slack] webhook_url is not".into(),
            retry: false,
        });
    }
    post(client, webhook_url, slack_body(channel, n), &[]).await
}
