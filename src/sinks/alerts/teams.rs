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
//! card an `AdaptiveCard` of version 1.4 with `TextBlock`s, a `FactSet`
//! and an `Action.OpenUrl` (<https://adaptivecards.io/explorer/>). A
//! Workflows webhook answers 202.
//!
//! A chat groups: the changes of `group_interval` go in one card.

use serde::Deserialize;
use serde_json::json;

use super::config::SecretUrl;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};

/// `[alerts.<name>.teams]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The workflow's webhook URL (a secret: its query is the signature).
    pub webhook_url: SecretUrl,
}

/// The message for one change or a group. Text blocks take a Markdown
/// subset: the job's output goes in a monospace block of its own.
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
        json!({"type": "TextBlock", "text": text, "wrap": true}),
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
        blocks.push(json!({
            "type": "TextBlock",
            "text": text::tail(&out, 3000),
            "fontType": "Monospace",
            "wrap": true,
        }));
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
