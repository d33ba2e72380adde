//! The Pushover alerter (`[alerts.<name>.pushover]`): a push notification
//! to a Pushover user or group.
//!
//! What is sent is what Pushover's Message API documents
//! (<https://pushover.net/api>): `POST
//! https://api.pushover.net/1/messages.json`, form-encoded, with `token`
//! (the application's), `user` (the user or group key), `message` (at most
//! 1024 characters), `title` (at most 250), `url` and `url_title`,
//! `priority` (-2 to 2; 2, an emergency, also needs `retry` of at least 30
//! seconds and `expire`, and takes `tags`, by which
//! `/1/receipts/cancel_by_tag/<tag>.json` cancels it: an emergency is
//! tagged with its incident's key and cancelled by its recovery; a test
//! is never an emergency) and `timestamp` (Unix seconds). Pushover answers
//! 4xx for a bad request (not retried) and 429 when over quota.
//!
//! A push groups: the changes of `group_interval` go in one notification.

use serde::Deserialize;

use futures_util::future::BoxFuture;

use super::alerter::{server_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::{HttpUrl, Secret};
use super::delivery::Senders;
use super::incident::Action;
use super::text::{self, Plain};
use super::{DeliveryError, Notice};
use crate::redact::url_for_log;

/// Pushover's endpoint.
pub(super) const PUSHOVER_URL: &str = "https://api.pushover.net/1/messages.json";

/// `[alerts.<name>.pushover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushoverConfig {
    /// The application's API token (a secret).
    pub token: Secret,
    /// The user or group key (a secret).
    pub user: Secret,
    /// The priority of an ERROR, -2 to 2 (default 1: bypasses quiet
    /// hours; 2 repeats every minute for an hour until acknowledged).
    #[serde(default = "one")]
    pub priority_error: i8,
    /// The priority of a recovery (default 0).
    #[serde(default)]
    pub priority_ok: i8,
    /// The endpoint (default [`PUSHOVER_URL`]).
    #[serde(default)]
    pub url: Option<HttpUrl>,
}

fn one() -> i8 {
    1
}

impl PushoverConfig {
    /// Pushover refuses priorities outside -2 to 2.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        let ok = |p: i8| (-2..=2).contains(&p);
        if !ok(self.priority_error) || !ok(self.priority_ok) {
            return Err(crate::settings::ConfigError::Invalid(format!(
                "[alerts.{alert}.pushover] priorities are from -2 to 2"
            )));
        }
        Ok(())
    }
}

/// The form for one change or a group.
pub(super) fn form(config: &PushoverConfig, group: &[&Notice]) -> Vec<(&'static str, String)> {
    let Plain {
        title,
        text,
        output,
        error,
        url,
    } = text::plain(group);
    // The output's end is kept whole; the text is cut to make room.
    let message = match output {
        Some(out) => {
            let out = text::tail(&out, 400);
            let room = 1024 - 2 - out.chars().count();
            format!("{}\n\n{out}", super::text::cut(&text, room))
        }
        None => super::text::cut(&text, 1024),
    };
    let mut priority = if error {
        config.priority_error
    } else {
        config.priority_ok
    };
    // A test never starts an emergency, which repeats for an hour.
    if group.iter().any(|n| n.test) {
        priority = priority.min(1);
    }
    let ts = group.iter().map(|n| n.ts).max().unwrap_or(0) / 1000;
    let mut form = vec![
        ("token", config.token.0.clone()),
        ("user", config.user.0.clone()),
        ("title", super::text::cut(&title, 250)),
        ("message", message),
        ("priority", priority.to_string()),
        ("timestamp", ts.to_string()),
    ];
    if priority == 2 {
        form.push(("retry", "60".into()));
        form.push(("expire", "3600".into()));
        // Tagged with the incidents it opens, as a pager keys them, so
        // what closes them cancels it.
        form.push(("tags", tags(group, Action::Open).join(",")));
    }
    if let Some(u) = url {
        form.push(("url", u));
        form.push(("url_title", "Open in lovebeat".into()));
    }
    form
}

/// At most this many incidents tag an emergency, and a recovery cancels
/// at most this many: a mass outage's one grouped message would otherwise
/// carry 100 000 tags (megabytes, refused, the page lost) and its
/// recovery make as many cancels in a row while the receiver's slot waits.
/// As many as the message lists changes.
const TAGGED: usize = text::GROUP_LINES;

/// The keys of the incidents that `group` opens or closes, each once: the
/// first [`TAGGED`] in key order, so a recovery that closes the same
/// incidents, in whatever order they recovered, cancels what their
/// failure tagged.
fn tags(group: &[&Notice], which: Action) -> Vec<String> {
    let mut keys: Vec<String> = group
        .iter()
        .filter(|n| !n.test)
        .flat_map(|n| incident_keys(n, which))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(TAGGED);
    keys
}

/// The keys of the incidents a notice opens or closes, as the pagers
/// decide ([`super::incident::actions`]): a recovery after a restart
/// closes the incident its receivers were told of, not the current one.
fn incident_keys(n: &Notice, which: Action) -> Vec<String> {
    super::incident::actions(n)
        .into_iter()
        .filter(|(a, _)| *a == which)
        .map(|(_, incident)| super::incident::key(&n.alarm.name, incident))
        .collect()
}

/// Sends one notification. A failed cancel is logged scrubbed of
/// `secrets`, every alerter's ([`super::delivery::Senders`]).
pub(super) async fn send(
    client: &reqwest::Client,
    config: &PushoverConfig,
    group: &[&Notice],
    secrets: &[String],
) -> Result<(), DeliveryError> {
    let url = config.url.as_ref().map_or(PUSHOVER_URL, |u| u.0.as_str());
    let result = client.post(url).form(&form(config, group)).send().await;
    super::http::outcome(&format!("POST {}", url_for_log(url)), result).await?;
    if config.priority_error == 2 {
        cancel_emergencies(client, config, url, group, secrets).await;
    }
    Ok(())
}

/// Stops the emergencies of the recovered incidents in `group` from
/// repeating (`POST /1/receipts/cancel_by_tag/<tag>.json`, Pushover's
/// "Canceling Retries by Tag"). The recovery itself was delivered: a
/// cancel that fails is logged, the rest are not tried (the receiver is
/// failing), and the emergency expires within its hour.
async fn cancel_emergencies(
    client: &reqwest::Client,
    config: &PushoverConfig,
    url: &str,
    group: &[&Notice],
    secrets: &[String],
) {
    let Ok(base) = reqwest::Url::parse(url) else {
        return;
    };
    let tags = tags(group, Action::Close);
    for (i, tag) in tags.iter().enumerate() {
        // Escaped as a path segment, as Opsgenie's alias is.
        let tag = percent_encoding::utf8_percent_encode(tag, crate::redact::PATH_SEGMENT);
        let Ok(cancel) = base.join(&format!("receipts/cancel_by_tag/{tag}.json")) else {
            continue;
        };
        let result = client
            .post(cancel)
            .form(&[("token", config.token.0.as_str())])
            .send()
            .await;
        if let Err(e) = super::http::outcome(&format!("cancel of {tag}"), result).await {
            tracing::warn!(
                "pushover emergency not cancelled: {} ({} more not tried)",
                super::delivery::scrub(&e.reason, secrets),
                tags.len() - i - 1
            );
            return;
        }
    }
}

impl Alerter for PushoverConfig {
    fn kind(&self) -> &'static str {
        "pushover"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.extend([self.token.0.clone(), self.user.0.clone()]);
        server_url(&mut out, self.url.as_ref());
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!(
            "Pushover via {}",
            shown(self.url.as_ref().map_or(PUSHOVER_URL, |u| u.0.as_str()))
        )
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        PushoverConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.client, self, group, &senders.secrets))
    }
}

impl AlerterTable for PushoverConfig {
    const SECRET_KEYS: &'static [&'static str] = &["token", "user"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::State;
    use crate::sinks::alerts::tests::{failed_job, notice};

    fn emergency() -> PushoverConfig {
        PushoverConfig {
            token: Secret("app".into()),
            user: Secret("usr".into()),
            priority_error: 2,
            priority_ok: 0,
            url: None,
        }
    }

    fn field(form: &[(&'static str, String)], k: &str) -> Option<String> {
        form.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn an_emergency_is_tagged_with_its_incident_and_a_test_is_never_one() {
        let n = notice(0, None);
        let form = form(&emergency(), &[&n]);
        assert_eq!(field(&form, "priority").as_deref(), Some("2"));
        assert_eq!(field(&form, "tags").as_deref(), Some("lovebeat-jobs-7"));
        let mut t = notice(0, None);
        t.test = true;
        let form = super::form(&emergency(), &[&t]);
        assert_eq!(field(&form, "priority").as_deref(), Some("1"));
        assert_eq!(field(&form, "retry"), None);
    }

    #[test]
    fn a_mass_outage_tags_and_cancels_a_bounded_number_of_incidents() {
        let outage: Vec<Notice> = (0..10_000)
            .map(|i| {
                let mut n = notice(0, None);
                n.alarm.name = format!("a{i}").into();
                n
            })
            .collect();
        let group: Vec<&Notice> = outage.iter().chain(outage.iter()).collect();
        let form = form(&emergency(), &group);
        let tags = field(&form, "tags").unwrap_or_default();
        let tags: Vec<&str> = tags.split(',').collect();
        assert_eq!(tags.len(), TAGGED);
        assert_eq!((tags[0], tags[1]), ("lovebeat-a0-7", "lovebeat-a1-7"));
        // They recover in another order.
        let recovered: Vec<Notice> = outage
            .iter()
            .rev()
            .map(|n| {
                let mut n = n.clone();
                (n.previous, n.alarm.state) = (State::Error, State::Ok);
                n
            })
            .collect();
        let closes = super::tags(&recovered.iter().collect::<Vec<_>>(), Action::Close);
        assert_eq!(closes.len(), TAGGED);
        assert_eq!(closes[..], tags[..]);
    }

    #[test]
    fn the_output_end_survives_a_long_failed_list() {
        let f = failed_job(Some(1), "why it failed");
        let mut n = notice(0, Some(f));
        n.alarm.state = State::Error;
        n.alarm.failed_services = (0..100)
            .map(|i| format!("{}{i}", "s".repeat(60)).into())
            .collect();
        let message = field(&form(&emergency(), &[&n]), "message").unwrap_or_default();
        assert!(message.chars().count() <= 1024, "{}", message.len());
        assert!(message.ends_with("why it failed"), "{message}");
    }
}
