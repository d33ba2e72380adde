//! The mail alerter (README, "Alerts"): SMTP through lettre, or Mailgun's HTTP API.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use futures_util::future::BoxFuture;

use super::alerter::Alerter;
use super::config::{AlertsConfig, Recipients, Secret};
use super::delivery::Senders;
use super::text::{change_line, failure_line, reminder, sentence};
use super::{failed_list, DeliveryError, Flapping, Notice};
use crate::redact::url_for_log;

/// `[mail]`: the SMTP server mail alerts go through.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// SMTP server as host:port.
    pub server: HostPort,
    /// Sender address.
    pub from: String,
    /// SMTP user name, if the server needs one (empty: none).
    #[serde(deserialize_with = "crate::settings::empty_is_none")]
    pub username: Option<String>,
    /// SMTP password (empty: none).
    #[serde(deserialize_with = "crate::settings::empty_is_none")]
    pub password: Option<String>,
    /// How the connection is secured.
    pub tls: Tls,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("server", &self.server)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(secret)"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// A server as `host:port`, split when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host name or address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl<'de> serde::Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
        let text = String::deserialize(d)?;
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => match port.parse() {
                Ok(port) => Ok(HostPort {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port,
                }),
                Err(_) => Err(serde::de::Error::custom(format!(
                    "'{text}': the port is not a number from 0 to 65535"
                ))),
            },
            _ => Err(serde::de::Error::custom(format!(
                "'{text}' must be host:port"
            ))),
        }
    }
}

impl MailConfig {
    /// The sender must be an address mail servers accept; checked once,
    /// not at the first alert.
    pub fn validate(&self) -> Result<(), crate::settings::ConfigError> {
        self.from.parse::<Mailbox>().map(|_| ()).map_err(|e| {
            crate::settings::ConfigError::Invalid(format!("[mail] from '{}': {e}", self.from))
        })
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            server: HostPort {
                host: "localhost".into(),
                port: 25,
            },
            from: "lovebeat@example.com".into(),
            username: None,
            password: None,
            tls: Tls::None,
        }
    }
}

/// How an SMTP connection is secured (`[mail] tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain SMTP (a local relay).
    #[default]
    None,
    /// Plain, then upgraded with STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[mailgun]`: when `domain` is set, mail goes through Mailgun's HTTP API
/// instead of SMTP.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailgunConfig {
    /// Sending domain; empty disables Mailgun.
    pub domain: String,
    /// Sender address.
    pub from: String,
    /// API key (a secret: never logged).
    pub api_key: Secret,
    /// API base URL.
    pub api_base: String,
}

impl Default for MailgunConfig {
    fn default() -> Self {
        MailgunConfig {
            domain: String::new(),
            from: String::new(),
            api_key: Secret(String::new()),
            api_base: "https://api.mailgun.net".into(),
        }
    }
}

/// The subject: 1.x's `[LOVEBEAT] <alarm>-<incident>` for one change,
/// the count for a group.
pub(super) fn subject(group: &[&Notice]) -> String {
    match group {
        [n] if n.maintenance.is_some() => format!("[LOVEBEAT] {}", super::text::headline(n)),
        [n] => {
            let what = match n.flapping {
                Some(Flapping::Started { .. }) => " is flapping",
                Some(Flapping::Stopped) => " stopped flapping",
                None => "",
            };
            format!(
                "[LOVEBEAT] {}{}-{}{what}{}",
                if n.test { "[TEST] " } else { "" },
                n.alarm.name,
                n.alarm.incident_nbr,
                reminder(n)
            )
        }
        _ => format!("[LOVEBEAT] {} alarm changes", group.len()),
    }
}

/// The text body: for one change the 1.x sentence, the failed services,
/// the job's failure and the link; for a group a paragraph per change.
pub(super) fn body(group: &[&Notice]) -> String {
    if let [n] = group {
        let mut b = sentence(n);
        b.push('\n');
        if !n.alarm.failed_services.is_empty() {
            b.push_str(&format!("\nFailed services: {}\n", failed_list(&n.alarm)));
        }
        if let Some(f) = &n.failure {
            b.push_str(&format!("\n{}\n", failure_line(f)));
            if !f.output.is_empty() {
                b.push_str(&format!("\nOutput:\n{}\n", f.output));
            }
        }
        if let Some(url) = &n.url {
            b.push_str(&format!("\n{url}\n"));
        }
        return b;
    }
    let mut b = format!("{} alarm changes:\n", group.len());
    for n in group.iter().take(MAIL_GROUP_CHANGES) {
        b.push_str(&format!("\n- {}\n", change_line(n)));
        if !n.alarm.failed_services.is_empty() && n.alarm.state == crate::engine::State::Error {
            let listed = super::failed_list_max(&n.alarm, MAIL_GROUP_FAILED);
            b.push_str(&format!("  Failed services: {listed}\n"));
        }
        if let Some(f) = &n.failure {
            b.push_str(&format!("  {}\n", failure_line(f)));
        }
        if let Some(url) = &n.url {
            b.push_str(&format!("  {url}\n"));
        }
    }
    if let Some(more) = super::text::more_changes(group.len(), MAIL_GROUP_CHANGES) {
        b.push_str(&format!("\n{more}\n"));
    }
    b
}

/// Changes spelled out in one grouped mail at most, and failed services
/// named per change: a mass outage's mail stays far below the 10 MB a
/// mail server commonly accepts (the rest are counted).
pub(super) const MAIL_GROUP_CHANGES: usize = 500;
/// See [`MAIL_GROUP_CHANGES`].
pub(super) const MAIL_GROUP_FAILED: usize = 20;

/// Sends one mail about `group` to `to` via Mailgun when `[mailgun]
/// domain` is set, else via SMTP.
pub(super) async fn send(
    config: &AlertsConfig,
    client: &reqwest::Client,
    group: &[&Notice],
    to: &Recipients,
) -> Result<(), DeliveryError> {
    send_text(config, client, to, &subject(group), &body(group)).await
}

/// Sends one plain-text mail to `to`, through Mailgun when `[mailgun]
/// domain` is set, else `[mail]`'s SMTP server: the alerts' mail, and the
/// status pages' mail to their subscribers. The subject is encoded by
/// lettre, so no text in it can add a header.
pub async fn send_text(
    config: &AlertsConfig,
    client: &reqwest::Client,
    to: &Recipients,
    subject: &str,
    body: &str,
) -> Result<(), DeliveryError> {
    deliver(config, client, to, subject, body, None).await
}

/// Sends one mail to `to` through Mailgun when `[mailgun] domain` is set,
/// else `[mail]`'s SMTP server: plain text only when `html` is `None`, else
/// a plain text and HTML alternative. The one path both the plain-text mail
/// (alerts, subscriptions) and the reports take, so the two cannot drift.
async fn deliver(
    config: &AlertsConfig,
    client: &reqwest::Client,
    to: &Recipients,
    subject: &str,
    text: &str,
    html: Option<&str>,
) -> Result<(), DeliveryError> {
    if !config.mailgun.domain.is_empty() {
        return mailgun(config, client, to, subject, text, html).await;
    }
    let from: Mailbox = config.mail.from.parse().map_err(|e| {
        DeliveryError::permanent(format!("[mail] from '{}': {e}", config.mail.from))
    })?;
    let mut builder = Message::builder().from(from).subject(subject);
    for mbox in to.0.iter() {
        builder = builder.to(mbox.clone());
    }
    let message = match html {
        None => builder.body(text.to_string()),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            text.to_string(),
            html.to_string(),
        )),
    }
    .map_err(|e| DeliveryError::permanent(format!("building the mail: {e}")))?;
    smtp(config, message).await
}

/// Sends `message` through `[mail]`'s SMTP server.
async fn smtp(config: &AlertsConfig, message: Message) -> Result<(), DeliveryError> {
    let (host, port) = (&config.mail.server.host, config.mail.server.port);
    let transport = match config.mail.tls {
        Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| DeliveryError::permanent(format!("SMTP server {host}: {e}")))?
    .port(port)
    .timeout(Some(std::time::Duration::from_secs(10)));
    let transport = match (&config.mail.username, &config.mail.password) {
        (Some(u), Some(p)) => transport.credentials(Credentials::new(u.clone(), p.clone())),
        _ => transport,
    }
    .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| DeliveryError {
            retry: !e.is_permanent(),
            reason: format!("SMTP {}: {e}", config.mail.server),
            retry_after: None,
        })
}

/// A message that is no alert (a report): a subject, a plain text and the
/// same as HTML.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The subject (one line).
    pub subject: String,
    /// The plain text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Sends `mail` to `to` as the mail alerter sends an alert (through
/// `[mailgun]` when it has a domain, else `[mail]`'s SMTP server), as a
/// plain text and HTML alternative: for the reports, which an alert's
/// mail alerter sends and none of its other alerters.
pub async fn send_message(
    config: &AlertsConfig,
    to: &Recipients,
    mail: &Mail,
) -> Result<(), DeliveryError> {
    let subject = crate::escape::one_line(&mail.subject);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .user_agent("Lovebeat")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| DeliveryError::permanent(format!("the HTTP client: {e}")))?;
    deliver(config, &client, to, &subject, &mail.text, Some(&mail.html)).await
}

/// Posts one mail to Mailgun's messages API (an `html` part only when given).
async fn mailgun(
    config: &AlertsConfig,
    client: &reqwest::Client,
    to: &Recipients,
    subject: &str,
    text: &str,
    html: Option<&str>,
) -> Result<(), DeliveryError> {
    let mg = &config.mailgun;
    let url = format!(
        "{}/v3/{}/messages",
        mg.api_base.trim_end_matches('/'),
        mg.domain
    );
    let to =
        to.0.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ");
    let mut form = vec![
        ("from", mg.from.as_str()),
        ("to", to.as_str()),
        ("subject", subject),
        ("text", text),
    ];
    if let Some(html) = html {
        form.push(("html", html));
    }
    let result = client
        .post(&url)
        .basic_auth("api", Some(&mg.api_key.0))
        .form(&form)
        .send()
        .await;
    super::http::outcome(&format!("Mailgun {}", url_for_log(&url)), result).await
}

/// Mail to an alert's addresses, through `[mailgun]` when it has a domain,
/// else `[mail]`'s SMTP server.
#[derive(Debug, Clone)]
pub(super) struct MailAlerter {
    /// The alert's addresses (never empty: an empty `mail` is no alerter).
    to: Recipients,
}

/// The mail alerter of `alert`, if its `mail` names an address.
pub(super) fn alerter(alert: &super::config::AlertConfig) -> Option<std::sync::Arc<dyn Alerter>> {
    let to = alert.mail.as_ref().filter(|r| !r.0.is_empty())?;
    Some(std::sync::Arc::new(MailAlerter { to: to.clone() }))
}

impl Alerter for MailAlerter {
    fn kind(&self) -> &'static str {
        "mail"
    }

    fn groups(&self) -> bool {
        true
    }

    fn secrets(&self, shared: &AlertsConfig) -> Vec<String> {
        let mut out = Vec::new();
        let key = &shared.mailgun.api_key.0;
        out.push(key.clone());
        if !key.is_empty() {
            out.push(super::alerter::basic("api", key));
        }
        out.extend(shared.mail.password.clone());
        out
    }

    fn describe(&self, shared: &AlertsConfig) -> String {
        let to: Vec<String> = self.to.0.iter().map(|a| a.to_string()).collect();
        let via = if shared.mailgun.domain.is_empty() {
            format!("SMTP {}", shared.mail.server)
        } else {
            format!("Mailgun {}", shared.mailgun.domain)
        };
        format!("mail to {} via {via}", to.join(", "))
    }

    fn send<'a>(
        &'a self,
        senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(send(&senders.config, &senders.client, group, &self.to))
    }
}
