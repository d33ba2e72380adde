//! The templated webhook (`[alerts.<name>.templated_webhook]`): any HTTP
//! service lovebeat has no alerter for is reached without code, with a
//! method, a URL, headers and a body written as templates of the alert's
//! fields (README, "Templated webhook", has recipes).
//!
//! Templates are MiniJinja (Jinja2's syntax,
//! <https://docs.rs/minijinja/latest/minijinja/syntax/index.html>) with
//! strict undefined variables: a misspelt field is an error, caught when
//! the configuration is read by rendering every template once with a
//! sample alert. When the content type is JSON, `{{ ... }}` in the body
//! writes JSON values (a string with its quotes and escapes, a list as an
//! array), so a job's output can never break the document; the `tojson`
//! filter does the same anywhere, and `urlencode` escapes a form's value.
//! Headers are rendered as plain text, control characters as spaces. A
//! rendering has a bounded number of instructions ([`FUEL`]). One request
//! per change, like the 1.x webhook.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use super::alerter::{each, secret_url, shown, Alerter, AlerterTable};
use super::config::AlertsConfig;
use super::config::HttpUrl;
use super::delivery::token_like;
use super::delivery::Senders;
use super::{incident, DeliveryError, Flapping, Notice};
use crate::engine::State;
use crate::redact::url_for_log;

/// `[alerts.<name>.templated_webhook]`: the request made for each change.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatedWebhookConfig {
    /// Where the request goes (a secret: only its host is logged).
    pub url: HttpUrl,
    /// `POST` (default), `PUT`, `PATCH` or `GET` (sent without a body).
    #[serde(default = "default_method")]
    pub method: String,
    /// Header name → value template (values may be secrets: never
    /// logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body template.
    #[serde(default)]
    pub body: String,
    /// The body's `Content-Type` (default `application/json`, which
    /// makes `{{ ... }}` in the body write JSON values).
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

fn default_method() -> String {
    "POST".into()
}

fn default_content_type() -> String {
    "application/json".into()
}

impl std::fmt::Debug for TemplatedWebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplatedWebhookConfig")
            .field("url", &url_for_log(self.url.0.as_str()))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// What a template sees: the alert's fields.
#[derive(Debug, Serialize)]
pub(super) struct Fields<'a> {
    /// The alarm's name.
    name: &'a str,
    /// `error` or `ok`.
    state: &'a str,
    /// The state its receivers heard before.
    previous_state: &'a str,
    /// The incident number.
    incident: u64,
    /// `lovebeat-<alarm>-<incident>`: a de-duplication key.
    key: String,
    /// The failed services.
    failed_services: Vec<&'a str>,
    /// The same, comma-separated.
    failed_list: String,
    /// A one-line title ("web is in ERROR").
    title: String,
    /// A sentence saying what changed.
    message: String,
    /// The link to the alarm, or none.
    url: Option<&'a str>,
    /// When it changed (ms since 1970).
    timestamp: i64,
    /// The job's output, or none.
    output: Option<&'a str>,
    /// The job's exit code, or none.
    exit_code: Option<i32>,
    /// 0, or n for the n-th reminder.
    repeat: u32,
    /// True when flapping starts, false when it stops, else none.
    flapping: Option<bool>,
    /// True for a test sent on request.
    test: bool,
}

impl<'a> Fields<'a> {
    pub(super) fn of(n: &'a Notice) -> Fields<'a> {
        Fields {
            name: &n.alarm.name,
            state: n.alarm.state.as_str(),
            previous_state: n.previous.as_str(),
            incident: n.alarm.incident_nbr,
            key: incident::key(&n.alarm.name, n.alarm.incident_nbr),
            failed_services: n.alarm.failed_services.iter().map(|s| s.as_str()).collect(),
            failed_list: super::failed_list(&n.alarm),
            title: super::text::headline(n),
            message: super::text::sentence(n),
            url: n.url.as_deref(),
            timestamp: n.ts,
            output: n.failure.as_ref().map(|f| f.output.as_str()),
            exit_code: n.failure.as_ref().and_then(|f| f.exit_code),
            repeat: n.repeat,
            flapping: match n.flapping {
                Some(Flapping::Started { .. }) => Some(true),
                Some(Flapping::Stopped) => Some(false),
                None => None,
            },
            test: n.test,
        }
    }
}

/// Instructions one rendering may run: enough for a loop over the failed
/// services of a mass outage (100 000 of them fit, a unit test checks),
/// and a bound on one that loops for ever (a render runs on a runtime
/// thread, where nothing could stop it).
const FUEL: u64 = 20_000_000;

fn environment(json: bool) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(move |_| {
        if json {
            AutoEscape::Json
        } else {
            AutoEscape::None
        }
    });
    env
}

/// A template that does not render: which one, and why (never its
/// source or a header's value: a header template may hold a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum RenderError {
    /// A header's template.
    #[error("header {name}: {why}")]
    Header {
        /// The header's name.
        name: String,
        /// The kind of error and its line.
        why: String,
    },
    /// The body's template.
    #[error("body: {0}")]
    Body(String),
}

/// A rendered request.
#[derive(Debug)]
pub(super) struct Rendered {
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl TemplatedWebhookConfig {
    /// Any JSON type: `application/json`, `text/json`, `+json`, ndjson;
    /// the type a `Content-Type` header of the user's sends, if there is
    /// one, else `content_type`.
    fn json(&self) -> bool {
        let sent = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Content-Type"))
            .map_or(&self.content_type, |(_, v)| v);
        sent.to_ascii_lowercase().contains("json")
    }

    /// True when the user's headers set `name` (case aside).
    fn sets(&self, name: &str) -> bool {
        self.headers.keys().any(|k| k.eq_ignore_ascii_case(name))
    }

    fn method(&self) -> Option<reqwest::Method> {
        match self.method.to_ascii_uppercase().as_str() {
            "POST" => Some(reqwest::Method::POST),
            "PUT" => Some(reqwest::Method::PUT),
            "PATCH" => Some(reqwest::Method::PATCH),
            "GET" => Some(reqwest::Method::GET),
            _ => None,
        }
    }

    /// The request for one notice. An error names the template that
    /// failed and why, never a header's value.
    pub(super) fn render(&self, n: &Notice) -> Result<Rendered, RenderError> {
        let fields = Fields::of(n);
        let mut headers = Vec::new();
        let plain = environment(false);
        for (name, template) in &self.headers {
            let value = plain
                .render_str(template, &fields)
                .map_err(|e| RenderError::Header {
                    name: name.clone(),
                    why: describe(&e),
                })?;
            // A line break (from a job's output, say) would make the
            // value invalid and the alert undeliverable: it is a space.
            let value = crate::escape::one_line(&value);
            headers.push((name.clone(), value));
        }
        let body = environment(self.json())
            .render_str(&self.body, &fields)
            .map_err(|e| RenderError::Body(describe(&e)))?;
        Ok(Rendered { headers, body })
    }

    /// Refuses, as the file is read, a method lovebeat does not send, a
    /// header name HTTP does not allow, and templates that do not render
    /// (a syntax error, a misspelt field) for a sample alert.
    pub fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        let invalid = |what: String| {
            crate::settings::ConfigError::Invalid(format!(
                "[alerts.{alert}.templated_webhook] {what}"
            ))
        };
        if self.method().is_none() {
            return Err(invalid(format!(
                "method must be POST, PUT, PATCH or GET, not {}",
                self.method
            )));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(format!("{name:?} is not a header name")));
            }
        }
        self.render(&sample())
            .map(|_| ())
            .map_err(|e| invalid(format!("template does not render: {e}")))
    }
}

/// The kind of error and its detail, without the template's source (a
/// header template may hold a token).
fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{} ({d}, line {})", e.kind(), e.line().unwrap_or(0)),
        None => format!("{} (line {})", e.kind(), e.line().unwrap_or(0)),
    }
}

/// An alarm in ERROR with a failed job: what templates are checked with.
pub(super) fn sample() -> Notice {
    Notice {
        alarm: crate::engine::AlarmView::standalone(
            "sample",
            State::Error,
            1,
            vec!["sample.job".into()],
            0,
        ),
        previous: State::Ok,
        ts: 0,
        url: None,
        failure: Some(crate::engine::JobFailure {
            ts: 0,
            exit_code: Some(1),
            output: "output".into(),
            reason: None,
        }),
        repeat: 0,
        flapping: None,
        open_incident: None,
        test: false,
        maintenance: None,
    }
}

/// Makes the request of one notice.
pub(super) async fn send(
    client: &reqwest::Client,
    config: &TemplatedWebhookConfig,
    n: &Notice,
) -> Result<(), DeliveryError> {
    let rendered = config
        .render(n)
        .map_err(|e| DeliveryError::permanent(e.to_string()))?;
    let method = config.method().unwrap_or(reqwest::Method::POST);
    let what = format!("{method} {}", url_for_log(config.url.0.as_str()));
    // The client says `User-Agent: Lovebeat` unless a header does.
    let mut req = client.request(method.clone(), config.url.0.clone());
    for (name, value) in &rendered.headers {
        let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
            DeliveryError::permanent(format!("{what}: header {name} is not a valid value"))
        })?;
        req = req.header(name.as_str(), value);
    }
    // A header of the user's of the same name wins, as for Content-Type.
    if !config.sets("Idempotency-Key") {
        req = req.header("Idempotency-Key", incident::idempotency_key(n));
    }
    if method != reqwest::Method::GET {
        if !config.sets("Content-Type") {
            req = req.header("Content-Type", config.content_type.as_str());
        }
        req = req.body(rendered.body);
    }
    super::http::outcome(&what, req.send().await).await
}

impl Alerter for TemplatedWebhookConfig {
    fn kind(&self) -> &'static str {
        "templated_webhook"
    }

    fn groups(&self) -> bool {
        false
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        secret_url(&mut out, &self.url.0);
        for v in self.headers.values() {
            out.extend(token_like(v));
        }
        out.extend(token_like(&self.body));
        out
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!(
            "templated webhook {} {}",
            self.method.to_ascii_uppercase(),
            shown(self.url.0.as_str())
        )
    }

    fn validate(&self, alert: &str) -> Result<(), crate::settings::ConfigError> {
        TemplatedWebhookConfig::validate(self, alert)
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(each(group, |n| send(&senders.client, self, n)))
    }
}

impl AlerterTable for TemplatedWebhookConfig {
    const SECRET_KEYS: &'static [&'static str] = &[];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(body: &str) -> TemplatedWebhookConfig {
        TemplatedWebhookConfig {
            url: HttpUrl(reqwest::Url::parse("http://127.0.0.1:9/x").expect("url")),
            method: "POST".into(),
            headers: BTreeMap::new(),
            body: body.into(),
            content_type: default_content_type(),
        }
    }

    #[test]
    fn job_output_cannot_break_a_json_body() {
        let mut n = sample();
        if let Some(f) = n.failure.as_mut() {
            f.output = "\"}, \"evil\": true, {\"\n\\".into();
        }
        let c = config(r#"{"text": {{ output }}, "who": {{ failed_services }}}"#);
        let body = c.render(&n).expect("renders").body;
        let v: serde_json::Value = serde_json::from_str(&body).expect("still JSON");
        assert_eq!(v["text"], "\"}, \"evil\": true, {\"\n\\");
        assert_eq!(v["who"], serde_json::json!(["sample.job"]));
        assert!(v.get("evil").is_none());
    }

    #[test]
    fn every_readme_recipe_renders_and_a_json_one_is_json() {
        let readme = include_str!("../../../README.md");
        let mut seen = 0;
        for block in readme.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if !block.contains(".templated_webhook]") {
                continue;
            }
            let table: toml::Table =
                toml::from_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            for alert in table["alerts"].as_table().expect("alerts").values() {
                let c: TemplatedWebhookConfig = alert["templated_webhook"]
                    .clone()
                    .try_into()
                    .unwrap_or_else(|e| panic!("{e}\n{block}"));
                c.validate("recipe")
                    .unwrap_or_else(|e| panic!("{e}\n{block}"));
                let mut n = sample();
                n.url = Some("http://lb.example.com/alarms/sample".into());
                let body = c.render(&n).expect("renders").body;
                if c.json() {
                    let v: serde_json::Value =
                        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
                    assert!(v.is_object(), "{body}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "the README's recipes were found: {seen}");
    }

    #[test]
    fn a_misspelt_field_or_bad_syntax_is_refused_when_the_file_is_read() {
        assert!(config("{{ name }}").validate("ops").is_ok());
        let e = config("{{ nmae }}").validate("ops").expect_err("strict");
        assert!(e.to_string().contains("undefined"), "{e}");
        assert!(config("{% if %}").validate("ops").is_err());
        let mut c = config("{{ name }}");
        c.headers
            .insert("X-Token".into(), "{{ secret_typo }} tok-123".into());
        let e = c.validate("ops").expect_err("header typo");
        assert!(!e.to_string().contains("tok-123"), "{e}");
        c.headers.clear();
        c.method = "BREW".into();
        assert!(c.validate("ops").is_err());
    }

    #[test]
    fn a_looping_template_runs_out_of_fuel_and_output_in_a_header_is_one_line() {
        let c = config(
            "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
        );
        let e = c.render(&sample()).expect_err("out of fuel");
        assert!(e.to_string().contains("fuel"), "{e}");
        assert!(c.validate("ops").is_err(), "refused as the file is read");
        // A loop over a mass outage's failed services is not cut short.
        let mut n = sample();
        n.alarm.failed_services = (0..100_000).map(|i| format!("s.{i}").into()).collect();
        let c = config(
            "[{% for s in failed_services %}{{ s }}{% if not loop.last %},{% endif %}{% endfor %}]",
        );
        let body = c.render(&n).expect("100 000 failed services").body;
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(100_000));

        let mut c = config("{}");
        c.headers.insert("X-Why".into(), "{{ output }}".into());
        let mut n = sample();
        if let Some(f) = n.failure.as_mut() {
            f.output = "line one\r\nInjected: yes\n".into();
        }
        let r = c.render(&n).expect("render");
        assert_eq!(
            r.headers,
            [("X-Why".to_string(), "line one  Injected: yes".to_string())]
        );
        assert!(reqwest::header::HeaderValue::from_str(&r.headers[0].1).is_ok());
    }

    #[test]
    fn every_json_type_is_escaped_and_a_form_value_can_be() {
        let mut n = sample();
        if let Some(f) = n.failure.as_mut() {
            f.output = "\"},\"x\":\"&y=1".into();
        }
        let mut c = config(r#"{"text": {{ output }}}"#);
        c.content_type = "text/json".into();
        let body = c.render(&n).expect("render").body;
        let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(v["text"], "\"},\"x\":\"&y=1");
        // A Content-Type header of the user's decides, as it is what is sent.
        let mut c = config(r#"{"text": {{ output }}}"#);
        c.headers
            .insert("content-type".into(), "application/json".into());
        c.content_type = "text/plain".into();
        let body = c.render(&n).expect("render").body;
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "{body}"
        );
        let mut c = config("text={{ output | urlencode }}");
        c.content_type = "application/x-www-form-urlencoded".into();
        let body = c.render(&n).expect("render").body;
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form, [("text".to_string(), "\"},\"x\":\"&y=1".to_string())]);
    }
}
