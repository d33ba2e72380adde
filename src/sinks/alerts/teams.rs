//! The Microsoft Teams alerter (`[alerts.<name>.teams]`): an Adaptive
//! Card in a channel, through a Workflows ("Post to a channel when a
//! webhook request is received") webhook, which replaced Office 365
//! connectors.
//!
//! What is sent is what Microsoft documents for sending Adaptive Cards to
//! an incoming webhook
//! (<https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook>):
//! `{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "content": <card>}]}`, the
//! card an `AdaptiveCard` of version 1.4 with a `TextBlock` title,
//! `RichTextBlock`s of plain `TextRun`s, a `FactSet`
//! and an `Action.OpenUrl` (<https://adaptivecards.io/explorer/>). A
//! Workflows webhook answers 202.
//!
//! A chat groups: the changes of `group_interval` go in one card.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{secret_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::SecretUrl;
use super::delivery::Senders;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};

/// `[alerts.<name>.teams]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The workflow's webhook URL (a secret: its query is the signature).
    pub webhook_url: SecretUrl,
}

/// Text that is shown as it is: a `RichTextBlock` of one `TextRun`, which
/// Teams does not read as Markdown (a `TextBlock` would, and a job's
/// output could then put a link in the on-call channel).
fn plain_block(text: &str, monospace: bool) -> serde_json::Value {
    let mut run = json!({"type": "TextRun", "text": text});
    if monospace {
        run["fontType"] = json!("Monospace");
    }
    json!({"type": "RichTextBlock", "inlines": [run]})
}

/// The message for one change or a group. The title comes from names
/// (no Markdown in them); the text and the job's output, in a monospace
/// block of its own, go in blocks that are not read as Markdown.
pub(super) fn body(group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        output,
        error,
        url,
    } = text::plain(group);
    let mut blocks = vec![
        json!({
            "type": "TextBlock",
            "text": title,
            "weight": "Bolder",
            "size": "Medium",
            "color": if error { "Attention" } else { "Good" },
            "wrap": true,
        }),
        plain_block(&text, false),
    ];
    if let [n] = group {
        blocks.push(json!({
            "type": "FactSet",
            "facts": [
                {"title": "Alarm", "value": n.alarm.name},
                {"title": "Incident", "value": format!("#{}", n.alarm.incident_nbr)},
                {"title": "State", "value": n.alarm.state.as_upper()},
            ],
        }));
    }
    if let Some(out) = output {
        blocks.push(plain_block(&text::tail(&out, 3000), true));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
    });
    if let Some(u) = url {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open in lovebeat", "url": u}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// Posts one card.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &TeamsConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    super::http::post(client, &config.webhook_url.0 .0, body(group), &[]).await
}

impl Alerter for TeamsConfig {
    fn kind(&self) -> &'static str {
        "teams"
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
        format!("Teams workflow {}", shown(self.webhook_url.0 .0.as_str()))
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for TeamsConfig {
    const SECRET_KEYS: &'static [&'static str] = &["webhook_url"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::JobFailure;
    use crate::sinks::alerts::tests::{failed_job, notice};

    #[test]
    fn job_output_is_never_read_as_markdown() {
        let f = JobFailure {
            reason: Some("[x](https://evil.example)".into()),
            ..failed_job(None, "[Sign in again](https://evil.example) **now**")
        };
        let n = notice(0, Some(f));
        let card = &body(&[&n])["attachments"][0]["content"];
        let blocks = card["body"].as_array().expect("blocks");
        // Whatever holds the output or the reason is a plain text run,
        // never a Markdown TextBlock.
        let holding: Vec<_> = blocks
            .iter()
            .filter(|b| b.to_string().contains("evil.example"))
            .collect();
        assert!(!holding.is_empty(), "the output is shown: {card}");
        for b in holding {
            if b.to_string().contains("evil.example") {
                assert_eq!(b["type"], "RichTextBlock", "{b}");
                assert_eq!(b["inlines"][0]["type"], "TextRun", "{b}");
            }
        }
        let runs = blocks
            .iter()
            .filter(|b| b["type"] == "RichTextBlock")
            .count();
        assert_eq!(runs, 2, "the text and the output: {card}");
        let output = blocks.last().expect("output");
        assert_eq!(output["inlines"][0]["fontType"], "Monospace");
    }
}
