//! The Matrix alerter (`[alerts.<name>.matrix]`): a message in a Matrix
//! room, sent as a bot user with an access token.
//!
//! What is sent is what the Client-Server API documents for sending a
//! room event
//! (<https://spec.matrix.org/latest/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid>)
//! with an `m.text` message
//! (<https://spec.matrix.org/latest/client-server-api/#mtext>): `PUT
//! /_matrix/client/v3/rooms/<room id>/send/m.room.message/<txnId>` with
//! `Authorization: Bearer <token>` and `msgtype`, `body` (plain text),
//! `format` `org.matrix.custom.html` and `formatted_body`. The
//! transaction id is the same for every attempt of a message, so a retry
//! after a lost answer does not post it twice. The homeserver answers
//! 429 with `Retry-After` (or `retry_after_ms`) when rate-limited.
//!
//! A chat groups: the changes of `group_interval` go in one message.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{server_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::{HttpUrl, Secret};
use super::delivery::Senders;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};
use crate::escape::html_attr;

/// `[alerts.<name>.matrix]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver, e.g. `https://matrix.example.org`.
    pub homeserver: HttpUrl,
    /// The room's id (`!abc123:example.org`; the bot must have joined).
    pub room_id: String,
    /// The bot user's access token (a secret).
    pub access_token: Secret,
}

/// The `m.room.message` content for one change or a group.
pub(super) fn body(group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        output,
        error,
        url,
    } = text::plain(group);
    let mark = if error { "🔴" } else { "🟢" };
    let mut plain = format!("{mark} {title}\n{text}");
    let mut html = format!(
        "{mark} <strong>{}</strong><br>{}",
        html_attr(&title),
        html_attr(&text).replace('\n', "<br>")
    );
    if let Some(out) = output {
        let out = text::tail(&out, 3000);
        plain.push_str(&format!("\n\n{out}"));
        html.push_str(&format!("<pre><code>{}</code></pre>", html_attr(&out)));
    }
    if let Some(u) = url {
        plain.push_str(&format!("\n{u}"));
        html.push_str(&format!(
            "<br><a href=\"{}\">Open in lovebeat</a>",
            html_attr(&u)
        ));
    }
    json!({
        "msgtype": "m.text",
        "body": plain,
        "format": "org.matrix.custom.html",
        "formatted_body": html,
    })
}

/// Sends one message.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &MatrixConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    let room = percent_encoding::utf8_percent_encode(&config.room_id, crate::redact::PATH_SEGMENT);
    let txn = text::message_id(group);
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let url = super::http::endpoint(config.homeserver.0.as_str(), &path, "[matrix] homeserver")?;
    let auth = format!("Bearer {}", config.access_token.0);
    super::http::send_json(
        client,
        reqwest::Method::PUT,
        &url,
        body(group),
        &[("Authorization", auth.as_str())],
    )
    .await
}

impl Alerter for MatrixConfig {
    fn kind(&self) -> &'static str {
        "matrix"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.push(self.access_token.0.clone());
        server_url(&mut out, Some(&self.homeserver));
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!(
            "Matrix room {} at {}",
            self.room_id,
            shown(self.homeserver.0.as_str())
        )
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for MatrixConfig {
    const SECRET_KEYS: &'static [&'static str] = &["access_token"];
}
