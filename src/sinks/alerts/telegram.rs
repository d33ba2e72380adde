//! The Telegram alerter (`[alerts.<name>.telegram]`): a message from a
//! bot to a chat, group or channel.
//!
//! What is sent is what the Bot API documents for `sendMessage`
//! (<https://core.telegram.org/bots/api#sendmessage>): `POST
//! https://api.telegram.org/bot<token>/sendMessage` with `chat_id`,
//! `text` (at most 4096 characters), `parse_mode` `HTML` and
//! `link_preview_options`. In HTML mode `<`, `>` and `&` in text must be
//! written `&lt;`, `&gt;` and `&amp;`
//! (<https://core.telegram.org/bots/api#html-style>): everything that
//! does not come from lovebeat is escaped so, and a job's output is shown
//! in `<pre>`. Telegram answers 429 with `parameters.retry_after` when
//! flooded; the shared retries back off (and honour a `Retry-After`
//! header when one is sent).
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
use crate::escape::html_text;

/// The Bot API's address.
pub(super) const TELEGRAM_URL: &str = "https://api.telegram.org";

/// `[alerts.<name>.telegram]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather (a secret: it is in the URL's
    /// path, which is never logged).
    pub bot_token: Secret,
    /// The chat: a number (`-1001234567890`, quoted or not) or a
    /// channel's `@name`.
    pub chat_id: ChatId,
    /// The Bot API server (default [`TELEGRAM_URL`]; a local Bot API
    /// server, or a test).
    #[serde(default)]
    pub url: Option<HttpUrl>,
}

/// A chat id as the Bot API takes it: an integer or a `@channel` name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum ChatId {
    /// A chat's number.
    Number(i64),
    /// A number as a string, or `@channelusername`.
    Name(String),
}

// Text made literal in Telegram's HTML parse mode.

/// Characters of title, text and output in one message at most: 4096
/// (`sendMessage`'s limit) less the mark, line breaks and link words.
const VISIBLE_TEXT: usize = 4000;

/// The `sendMessage` body for one change or a group.
pub(super) fn body(config: &TelegramConfig, group: &[&Notice]) -> serde_json::Value {
    let Plain {
        title,
        text,
        output,
        error,
        url,
    } = text::plain(group);
    // Telegram refuses, for good, a text over 4096 characters once its
    // markup is read: the visible text is budgeted before it is escaped,
    // the output's end first, then the title, the text what is left.
    let output = output.map(|o| text::tail(&o, 1500));
    let title = super::text::cut(&title, 200);
    let room =
        VISIBLE_TEXT - title.chars().count() - output.as_ref().map_or(0, |o| o.chars().count());
    let text = super::text::cut(&text, room);
    let mark = if error { "🔴" } else { "🟢" };
    let mut html = format!("{mark} <b>{}</b>\n{}", html_text(&title), html_text(&text));
    if let Some(out) = output {
        html.push_str(&format!("\n<pre>{}</pre>", html_text(&out)));
    }
    if let Some(u) = url {
        html.push_str(&format!(
            "\n<a href=\"{}\">Open in lovebeat</a>",
            crate::escape::html_attr(&u)
        ));
    }
    json!({
        "chat_id": config.chat_id,
        "text": html,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    })
}

/// Sends one message.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &TelegramConfig,
    group: &[&Notice],
) -> Result<(), DeliveryError> {
    let base = config.url.as_ref().map_or(TELEGRAM_URL, |u| u.0.as_str());
    let path = format!("/bot{}/sendMessage", config.bot_token.0);
    let url = super::http::endpoint(base, &path, "[telegram] url")?;
    super::http::post(client, &url, body(config, group), &[]).await
}

impl Alerter for TelegramConfig {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.push(self.bot_token.0.clone());
        server_url(&mut out, self.url.as_ref());
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        {
            let chat = match &self.chat_id {
                ChatId::Number(n) => n.to_string(),
                ChatId::Name(s) => s.clone(),
            };
            let at = self.url.as_ref().map_or(TELEGRAM_URL, |u| u.0.as_str());
            format!("Telegram chat {chat} via {}", shown(at))
        }
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group))
    }
}

impl AlerterTable for TelegramConfig {
    const SECRET_KEYS: &'static [&'static str] = &["bot_token"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::{failed_job, notice};

    #[test]
    fn job_output_cannot_open_a_tag() {
        let f = failed_job(None, "</pre><a href=\"x\">&");
        let mut n = notice(0, Some(f));
        n.alarm.name = "<b>".into();
        let c = TelegramConfig {
            bot_token: Secret("t".into()),
            chat_id: ChatId::Number(1),
            url: None,
        };
        let t = body(&c, &[&n])["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            t.contains("<pre>&lt;/pre&gt;&lt;a href=\"x\"&gt;&amp;</pre>"),
            "{t}"
        );
        assert!(t.contains("&lt;b&gt; is in ERROR"), "{t}");
        assert_eq!(t.matches("<b>").count(), 1, "{t}");
    }

    /// What Telegram counts: the text once its HTML is read.
    fn visible(html: &str) -> usize {
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .chars()
            .count()
    }

    #[test]
    fn a_mass_outage_fits_one_message() {
        let c = TelegramConfig {
            bot_token: Secret("t".into()),
            chat_id: ChatId::Number(1),
            url: None,
        };
        let f = failed_job(None, "<&>".repeat(5000));
        // One change with ten thousand long failed names and a long
        // output, and a group of thirty such changes.
        let mut n = notice(0, Some(f));
        n.url = Some("http://lb/alarms/jobs".into());
        n.alarm.failed_services = (0..10_000)
            .map(|i| format!("{}.{i}", "a".repeat(200)).into())
            .collect();
        let one = body(&c, &[&n])["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(visible(&one) <= 4096, "{}", visible(&one));
        assert!(one.contains("<pre>"), "the output's end is kept");
        let group: Vec<&Notice> = std::iter::repeat_n(&n, 30).collect();
        let many = body(&c, &group)["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(visible(&many) <= 4096, "{}", visible(&many));
    }
}
