//! The alerter component: what every way of telling someone (mail, a
//! webhook, a pager, a chat) says about itself, so that the dispatcher,
//! delivery, test alerts and `check-config` only iterate over a list of
//! them (vector's sinks are components in the same way: a config that
//! builds one, and a trait the topology calls).
//!
//! Adding an alerter is its module (its config struct, `impl Alerter`,
//! and `impl AlerterTable` for its `[alerts.<name>.<kind>]` table) and
//! one line in the `alert_config!` list of `config.rs` that registers it.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::config::{AlertConfig, AlertsConfig, HttpUrl};
use super::delivery::{token_like, Senders};
use super::{http, mail, script, DeliveryError, Notice};
use crate::settings::ConfigError;

/// The delivery slots an alerter's messages draw from: a script is a
/// process, bounded on its own so that many cannot exhaust the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pool {
    /// `[limits] max_alert_deliveries`: HTTP requests and mails.
    Deliveries = 0,
    /// `[limits] max_scripts`: processes.
    Scripts = 1,
}

/// One way of telling an alert's receivers, built from the alert's config.
pub(super) trait Alerter: Send + Sync {
    /// Its kind, as `GET /api/alarms/<name>/alerts`, test results, the
    /// log and the `kind` label of `/metrics` name it (`mail`,
    /// `pagerduty`, ...): a name users graph and script against, so it
    /// never changes.
    fn kind(&self) -> &'static str;

    /// True when the changes of `group_interval` go together in one
    /// message (a mass outage is one mail or chat post, not a flood that a
    /// phone or a rate limit cannot take); false when each change is a
    /// message of its own (the webhook's 1.x shape, a pager's incident).
    fn groups(&self) -> bool;

    /// True for the alerters that tell people (mail and chats): they hear
    /// when a maintenance window with `notify = true` opens and ends.
    /// Webhooks, pagers and scripts keep their 1.x-shaped state changes,
    /// which a machine reads: those are the alerters that do not group.
    fn hears_maintenance(&self) -> bool {
        self.groups()
    }

    /// The slots its deliveries draw from.
    fn pool(&self) -> Pool {
        Pool::Deliveries
    }

    /// A pager: what it opens stays open until it is closed, so a test
    /// incident is closed after it is opened.
    fn is_pager(&self) -> bool {
        false
    }

    /// What of its configuration is, or may hold, a secret (keys, tokens,
    /// passwords, the token-like words of its URLs and templates): no
    /// error, log line or report may quote them, and receivers often echo
    /// the request in an error. `shared` holds the sections it may use
    /// (`[mail]`, `[mailgun]`, `[slack]`).
    fn secrets(&self, shared: &AlertsConfig) -> Vec<String>;

    /// What it sends to, for `check-config` and the log: a person can tell
    /// which receiver it is, and no secret is in it.
    fn describe(&self, shared: &AlertsConfig) -> String;

    /// Checks its settings as the file is read (`alert` names the
    /// section in the error), so a mistake is a clear error at start, not
    /// a failed delivery at 3 a.m.
    fn validate(&self, _alert: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    /// One try at sending `group` (one notice, unless it [`groups`]):
    /// delivery retries, scrubs and counts around it.
    ///
    /// [`groups`]: Alerter::groups
    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// An alerter configured as a table `[alerts.<name>.<kind>]`: what the
/// file's parser needs to know of it before any value is valid.
pub(super) trait AlerterTable: Alerter + Clone + 'static {
    /// Keys of its table whose values are secrets: a parse error about
    /// one never quotes the value.
    const SECRET_KEYS: &'static [&'static str];
}

/// Every alerter `alert` names, in the order tests and the alerts
/// endpoint report them: 1.x's keys first (empty values left out, as 1.x
/// does), then each registered table it has.
pub(super) fn alerters_of(alert: &AlertConfig) -> Vec<Arc<dyn Alerter>> {
    let mut out: Vec<Arc<dyn Alerter>> = Vec::new();
    out.extend(mail::alerter(alert));
    out.extend(http::webhook_alerter(alert));
    out.extend(http::slack_alerter(alert));
    out.extend(script::alerter(alert));
    out.extend(alert.tables());
    out
}

/// As an `Authorization: Basic` header would quote a user and key.
pub(super) fn basic(user: &str, key: &str) -> String {
    crate::redact::basic_credentials(user, key)
}

/// The password of `https://user:password@host/` (sent as Basic
/// authorization), and that header: any server URL may carry one, a
/// receiver's own or a base.
pub(super) fn credentials(out: &mut Vec<String>, u: &reqwest::Url) {
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
}

/// A URL that is itself a secret (a webhook's token is its path): the
/// whole of it, the token-like words of its path and query, and its
/// password.
pub(super) fn secret_url(out: &mut Vec<String>, u: &reqwest::Url) {
    out.push(u.as_str().to_string());
    out.extend(token_like(u.path()));
    out.extend(token_like(u.query().unwrap_or_default()));
    out.extend(u.query_pairs().flat_map(|(_, v)| token_like(&v)));
    credentials(out, u);
}

/// A server's URL, no secret itself, but perhaps with a password in it.
pub(super) fn server_url(out: &mut Vec<String>, u: Option<&HttpUrl>) {
    if let Some(u) = u {
        credentials(out, &u.0);
    }
}

/// `url` as it may be shown: scheme and host only.
pub(super) fn shown(url: &str) -> String {
    crate::redact::url_for_log(url)
}

/// Sends each notice of `group` in turn with `one`, stopping at the
/// first failure: the alerters that send one message per change.
pub(super) async fn each<'a, F, Fut>(
    group: &'a [&'a Notice],
    mut one: F,
) -> Result<(), DeliveryError>
where
    F: FnMut(&'a Notice) -> Fut,
    Fut: std::future::Future<Output = Result<(), DeliveryError>>,
{
    for n in group {
        one(n).await?;
    }
    Ok(())
}

/// What each alerter of `alert` sends to, as `check-config` lists it:
/// every alerter, described by itself, and never a secret. `None` when
/// the configuration has no such alert.
pub fn descriptions(config: &AlertsConfig, alert: &str) -> Option<Vec<String>> {
    Some(
        alerters_of(config.alerts.get(alert)?)
            .iter()
            .map(|a| a.describe(config))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert with every alerter there is.
    const EVERY: &str = r##"
[alerts.all]
mail = "ops@example.com"
webhook = "https://hook.example.com/in"
slack_channel = "#ops"
script = "/bin/true"
[alerts.all.pagerduty]
routing_key = "k"
[alerts.all.opsgenie]
api_key = "k"
[alerts.all.templated_webhook]
url = "https://t.example.com/"
body = "{{ message }}"
[alerts.all.discord]
webhook_url = "https://discord.example.com/api/webhooks/1/x"
[alerts.all.teams]
webhook_url = "https://teams.example.com/x"
[alerts.all.telegram]
bot_token = "1:x"
chat_id = 1
[alerts.all.ntfy]
topic = "t"
[alerts.all.pushover]
token = "t"
user = "u"
[alerts.all.gotify]
url = "https://gotify.example.com"
token = "t"
[alerts.all.matrix]
homeserver = "https://matrix.example.com"
room_id = "!r:example.com"
access_token = "t"
[alerts.all.mattermost]
webhook_url = "https://mm.example.com/hooks/x"
"##;

    #[test]
    fn every_alerter_keeps_its_kind_its_grouping_and_its_pool() {
        let config = crate::config::Config::parse(EVERY)
            .expect("config")
            .alerts_config();
        let all = alerters_of(&config.alerts["all"]);
        let kinds: Vec<(&str, bool, bool, Pool)> = all
            .iter()
            .map(|a| (a.kind(), a.groups(), a.is_pager(), a.pool()))
            .collect();
        let told: Vec<&str> = all
            .iter()
            .filter(|a| a.hears_maintenance())
            .map(|a| a.kind())
            .collect();
        assert_eq!(
            told,
            [
                "mail",
                "slack",
                "discord",
                "teams",
                "telegram",
                "ntfy",
                "pushover",
                "gotify",
                "matrix",
                "mattermost"
            ]
        );
        use Pool::{Deliveries as D, Scripts as S};
        // The kinds are what the alerts endpoint and `/metrics` say.
        assert_eq!(
            kinds,
            [
                ("mail", true, false, D),
                ("webhook", false, false, D),
                ("slack", true, false, D),
                ("script", false, false, S),
                ("pagerduty", false, true, D),
                ("opsgenie", false, true, D),
                ("templated_webhook", false, false, D),
                ("discord", true, false, D),
                ("teams", true, false, D),
                ("telegram", true, false, D),
                ("ntfy", true, false, D),
                ("pushover", true, false, D),
                ("gotify", true, false, D),
                ("matrix", true, false, D),
                ("mattermost", true, false, D),
            ]
        );
        assert_eq!(descriptions(&config, "all").map(|d| d.len()), Some(15));
    }

    #[test]
    fn the_tables_say_which_of_their_keys_are_secrets() {
        for key in [
            "routing_key",
            "api_key",
            "bot_token",
            "token",
            "user",
            "access_token",
            "webhook_url",
        ] {
            assert!(super::super::is_secret_key(key), "{key}");
        }
        assert!(!super::super::is_secret_key("chat_id"));
    }
}
