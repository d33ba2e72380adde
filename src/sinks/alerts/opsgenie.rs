//! The Opsgenie alerter (`[alerts.<name>.opsgenie]`): an alert is created
//! in Opsgenie when an alarm fails and closed when it recovers.
//!
//! What is sent is what Opsgenie's Alert API documents
//! (<https://docs.opsgenie.com/docs/alert-api>): `POST /v2/alerts` with
//! `message` (at most 130 characters), `alias` (the de-duplication key,
//! at most 512), `description` (at most 15 000), `details` (string
//! values), `entity`, `source`, `tags` and `priority` (`P1` to `P5`);
//! closing is `POST /v2/alerts/<alias>/close?identifierType=alias` with
//! `source` and `note`. Both carry `Authorization: GenieKey <key>` and are
//! answered 202. The API is at `https://api.opsgenie.com`, or
//! `https://api.eu.opsgenie.com` for accounts in the EU.
//!
//! The alias is `lovebeat-<alarm>-<incident>` ([`super::incident`]), so a
//! restart or a flapping episode opens no second alert. One request per
//! change: Opsgenie de-duplicates and groups alerts itself.

use serde::Deserialize;
use serde_json::json;

use futures_util::future::BoxFuture;

use super::alerter::{each, server_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::HttpUrl;
use super::delivery::Senders;
use super::incident::{self, Action};
use super::{failed_list, DeliveryError, Notice};
use crate::redact::url_for_log;

/// `[alerts.<name>.opsgenie]`: the API integration alerts go to.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// The API key of an Opsgenie "API" integration (a secret: never
    /// logged).
    pub api_key: String,
    /// `us` (default) or `eu`: which of Opsgenie's two services the
    /// account lives in.
    #[serde(default)]
    pub region: OpsgenieRegion,
    /// `P1` (highest) to `P5`; unset, Opsgenie's default (`P3`).
    #[serde(default)]
    pub priority: Option<String>,
    /// Tags added to every alert (`lovebeat` is always one).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The API's base URL, replacing the region's (a proxy, or a test).
    #[serde(default)]
    pub url: Option<HttpUrl>,
}

impl std::fmt::Debug for OpsgenieConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsgenieConfig")
            .field("api_key", &"(secret)")
            .field("region", &self.region)
            .field("priority", &self.priority)
            .field("tags", &self.tags)
            .field("url", &self.url.as_ref().map(|u| url_for_log(u.0.as_str())))
            .finish()
    }
}

/// Opsgenie's two services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpsgenieRegion {
    /// `https://api.opsgenie.com`.
    #[default]
    Us,
    /// `https://api.eu.opsgenie.com`.
    Eu,
}

impl OpsgenieConfig {
    /// A key and a priority Opsgenie would refuse are refused as the file
    /// is read.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        let invalid = |what: &str| {
            crate::settings::ConfigError::Invalid(format!("[alerts.{alert}.opsgenie] {what}"))
        };
        if self.api_key.trim().is_empty() {
            return Err(invalid("api_key is empty"));
        }
        if let Some(p) = &self.priority {
            if !matches!(p.as_str(), "P1" | "P2" | "P3" | "P4" | "P5") {
                return Err(invalid("priority must be one of P1, P2, P3, P4, P5"));
            }
        }
        Ok(())
    }

    fn base(&self) -> String {
        match (&self.url, self.region) {
            (Some(u), _) => u.0.as_str().trim_end_matches('/').to_string(),
            (None, OpsgenieRegion::Us) => "https://api.opsgenie.com".into(),
            (None, OpsgenieRegion::Eu) => "https://api.eu.opsgenie.com".into(),
        }
    }
}

/// The body that creates the alert of a notice.
pub(super) fn create_body(config: &OpsgenieConfig, n: &Notice, incident: u64) -> serde_json::Value {
    let mut description = super::text::sentence(n);
    description.push('.');
    let failed = failed_list(&n.alarm);
    if !failed.is_empty() {
        description.push_str(&format!("\nFailed services: {failed}"));
    }
    let mut details = json!({
        "alarm": n.alarm.name,
        "incident": n.alarm.incident_nbr.to_string(),
        "state": n.alarm.state.as_str(),
        "failed_services": failed,
    });
    if let Some(f) = &n.failure {
        let line = super::text::failure_line(f);
        description.push_str(&format!("\n{line}"));
        if !f.output.is_empty() {
            // Its end: where a job says why it failed.
            description.push_str(&format!(
                "\nOutput:\n{}",
                super::text::tail(&f.output, 3000)
            ));
        }
        details["job_failure"] = json!(line);
    }
    if let Some(url) = &n.url {
        description.push_str(&format!("\n{url}"));
        details["url"] = json!(url);
    }
    let mut tags = vec!["lovebeat".to_string()];
    tags.extend(config.tags.iter().cloned());
    let mut body = json!({
        "message": super::text::cut(&super::text::headline(n), 130),
        "alias": incident::key(&n.alarm.name, incident),
        "description": super::text::cut(&description, 15_000),
        "details": details,
        "entity": n.alarm.name,
        "source": "Lovebeat",
        "tags": tags,
    });
    if let Some(p) = &config.priority {
        body["priority"] = json!(p);
    }
    body
}

/// Sends the requests of one notice, in order.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &OpsgenieConfig,
    n: &Notice,
) -> Result<(), DeliveryError> {
    let auth = format!("GenieKey {}", config.api_key);
    let headers = [("Authorization", auth.as_str())];
    let base = config.base();
    for (action, incident) in incident::actions(n) {
        let (path, body) = match action {
            Action::Open => ("/v2/alerts".to_string(), create_body(config, n, incident)),
            Action::Close => {
                let alias = incident::key(&n.alarm.name, incident);
                let alias =
                    percent_encoding::utf8_percent_encode(&alias, crate::redact::PATH_SEGMENT);
                (
                    format!("/v2/alerts/{alias}/close?identifierType=alias"),
                    json!({
                        "source": "Lovebeat",
                        "note": super::text::sentence(n),
                    }),
                )
            }
        };
        let url = super::http::endpoint(&base, &path, "[opsgenie] url")?;
        super::http::post(client, &url, body, &headers).await?;
    }
    Ok(())
}

impl Alerter for OpsgenieConfig {
    fn kind(&self) -> &'static str {
        "opsgenie"
    }

    fn groups(&self) -> bool {
        false
    }

    fn is_pager(&self) -> bool {
        true
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        out.push(self.api_key.clone());
        server_url(&mut out, self.url.as_ref());
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        match &self.url {
            Some(u) => format!("Opsgenie at {}", shown(u.0.as_str())),
            None => format!("Opsgenie ({:?})", self.region),
        }
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        OpsgenieConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(each(group, |n| send(&senders.client, self, n)))
    }
}

impl AlerterTable for OpsgenieConfig {
    const SECRET_KEYS: &'static [&'static str] = &["api_key"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_picks_the_api_and_a_url_replaces_it() {
        let parse = |t: &str| toml::from_str::<OpsgenieConfig>(t).expect("config");
        assert_eq!(parse("api_key = \"k\"").base(), "https://api.opsgenie.com");
        assert_eq!(
            parse("api_key = \"k\"\nregion = \"eu\"").base(),
            "https://api.eu.opsgenie.com"
        );
        assert_eq!(
            parse("api_key = \"k\"\nregion = \"eu\"\nurl = \"http://127.0.0.1:9/\"").base(),
            "http://127.0.0.1:9"
        );
        assert!(toml::from_str::<OpsgenieConfig>("api_key = \"k\"\nregion = \"asia\"").is_err());
        assert!(parse("api_key = \"k\"\npriority = \"P9\"")
            .validate("ops")
            .is_err());
    }
}
