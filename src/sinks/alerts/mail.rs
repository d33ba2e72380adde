//! The mail alerter (SPEC §6.1): SMTP through lettre, or Mailgun's HTTP API.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{failed_list, DeliveryError, Notice};
use crate::config::Config;
use crate::redact::url_for_log;

/// `[LOVEBEAT] <alarm>-<incident>`.
pub fn subject(n: &Notice) -> String {
    format!(
        "[LOVEBEAT] {}-{}{}",
        n.alarm.name,
        n.alarm.incident_nbr,
        reminder(n)
    )
}

/// ` (reminder n)` for a repeated alert, else nothing.
pub fn reminder(n: &Notice) -> String {
    if n.repeat > 0 {
        format!(" (reminder {})", n.repeat)
    } else {
        String::new()
    }
}

/// The text body: the 1.x sentence, the failed services and the link.
pub fn body(n: &Notice) -> String {
    let mut b = format!(
        "The status for alarm '{}' has changed from '{}' to '{}'\n",
        n.alarm.name,
        n.previous.as_upper(),
        n.alarm.state.as_upper()
    );
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
    b
}

/// One line saying how the job failed.
pub fn failure_line(f: &crate::engine::JobFailure) -> String {
    match (&f.reason, f.exit_code) {
        (Some(r), _) => format!("The job failed: {r}."),
        (None, Some(c)) => format!("The job failed with exit code {c}."),
        (None, None) => "The job reported a failure.".to_string(),
    }
}

/// Sends the mail to `to` via Mailgun when `[mailgun] domain` is set, else
/// via SMTP.
pub async fn send(
    config: &Config,
    client: &reqwest::Client,
    n: &Notice,
    to: &[String],
) -> Result<(), DeliveryError> {
    if !config.mailgun.domain.is_empty() {
        return mailgun(config, client, n, to).await;
    }
    let permanent = |reason: String| DeliveryError {
        reason,
        retry: false,
    };
    let from: Mailbox = config
        .mail
        .from
        .parse()
        .map_err(|e| permanent(format!("[mail] from '{}': {e}", config.mail.from)))?;
    let mut builder = Message::builder().from(from).subject(subject(n));
    for addr in to {
        let mbox: Mailbox = addr
            .parse()
            .map_err(|e| permanent(format!("address '{addr}': {e}")))?;
        builder = builder.to(mbox);
    }
    let message = builder
        .body(body(n))
        .map_err(|e| permanent(format!("building the mail: {e}")))?;
    let (host, port) = split_host_port(&config.mail.server).map_err(permanent)?;
    let transport = match config.mail.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host),
        "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host),
        _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &host,
        )),
    }
    .map_err(|e| permanent(format!("SMTP server {host}: {e}")))?
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
        })
}

fn split_host_port(server: &str) -> Result<(String, u16), String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| format!("[mail] server '{server}' must be host:port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("[mail] server '{server}': bad port"))?;
    Ok((host.to_string(), port))
}

async fn mailgun(
    config: &Config,
    client: &reqwest::Client,
    n: &Notice,
    to: &[String],
) -> Result<(), DeliveryError> {
    let mg = &config.mailgun;
    let url = format!(
        "{}/v3/{}/messages",
        mg.api_base.trim_end_matches('/'),
        mg.domain
    );
    let to = to.join(", ");
    let form = [
        ("from", mg.from.as_str()),
        ("to", to.as_str()),
        ("subject", &subject(n)),
        ("text", &body(n)),
    ];
    let result = client
        .post(&url)
        .basic_auth("api", Some(&mg.api_key))
        .form(&form)
        .send()
        .await;
    super::http::outcome(&format!("Mailgun {}", url_for_log(&url)), result)
}
