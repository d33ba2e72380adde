//! Watching the watcher (README, "Watching lovebeat itself"): beats `lovebeat.<host>.monitor`, `.save`
//! and `.alerter` on every `[[notify]]` lovebeat, with an auto timeout. The
//! beats are reported by the loops they vouch for (the deadline driver, the
//! saver, the alert dispatcher), as in 1.x, so a hung loop falls silent.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::redact::url_for_log;

/// `[[notify]]`: another lovebeat that watches this one.
#[derive(Debug, Clone, serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Base URL of the other lovebeat.
    pub lovebeat: String,
    /// API key for a peer that requires one (empty: none).
    #[serde(deserialize_with = "crate::settings::empty_is_none")]
    pub key: Option<String>,
}

/// How often the engine and the alert dispatcher report that they run.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Reports waiting to be sent; more are dropped (and logged), as in 1.x.
const QUEUE: usize = 16;

/// A part of lovebeat whose liveness peers watch: each is beaten as
/// `lovebeat.<host>.<part>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The engine's deadline driver runs (every `REPORT_EVERY`).
    Monitor,
    /// A database save completed.
    Save,
    /// The alert dispatcher serves its queue (every `REPORT_EVERY`).
    Alerter,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Monitor => "monitor",
            Part::Save => "save",
            Part::Alerter => "alerter",
        }
    }
}

/// What the engine driver, the saver and the alert dispatcher call to say
/// they are alive. Reports come from the loops themselves, so a loop that
/// hangs stops its beats and the peer raises the alarm. Cheap to clone; a
/// no-op when no peer is configured.
#[derive(Debug, Clone, Default)]
pub struct Reporter(Option<mpsc::Sender<Part>>);

impl Reporter {
    /// Queues a beat of `part` for every peer; never waits.
    pub fn report(&self, part: Part) {
        if let Some(tx) = &self.0 {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(part) {
                tracing::warn!(
                    "notify: too many beats waiting, dropped '{}'",
                    part.as_str()
                );
            }
        }
    }
}

/// The reporter and the queue `run` sends from; no queue without peers.
pub fn reporter(peers: &[NotifyConfig]) -> (Reporter, Option<mpsc::Receiver<Part>>) {
    if peers.iter().all(|p| p.lovebeat.is_empty()) {
        return (Reporter(None), None);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    (Reporter(Some(tx)), Some(rx))
}

/// The short host name in lower case, with characters outside service names
/// replaced by `-`.
pub fn host_part() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let raw = if ok {
        let end = buf.iter().position(|c| *c == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    };
    sanitize(raw.split('.').next().unwrap_or("unknown"))
}

fn sanitize(host: &str) -> String {
    let s: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if matches!(c, 'a'..='z' | '0'..='9' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// Beats the peers with every report from `reports` until `stop` is
/// cancelled.
pub async fn run(
    peers: Vec<NotifyConfig>,
    reports: Option<mpsc::Receiver<Part>>,
    stop: CancellationToken,
) {
    let Some(mut reports) = reports else {
        return;
    };
    let peers: Vec<NotifyConfig> = peers
        .into_iter()
        .filter(|p| !p.lovebeat.is_empty())
        .collect();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("Lovebeat")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("[[notify]] is off: {e}");
            return;
        }
    };
    let host = host_part();
    loop {
        let part = tokio::select! {
            p = reports.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        for p in &peers {
            let url = format!(
                "{}/api/services/lovebeat.{host}.{}",
                p.lovebeat.trim_end_matches('/'),
                part.as_str()
            );
            let mut req = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body("{\"timeout\": -2}");
            if let Some(key) = &p.key {
                req = req.bearer_auth(key);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(
                    "notify {} ({}): HTTP {}",
                    url_for_log(&url),
                    part.as_str(),
                    r.status()
                ),
                Err(e) => tracing::warn!(
                    "notify {} ({}): {}",
                    url_for_log(&url),
                    part.as_str(),
                    e.without_url()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn host_names_become_valid_name_parts() {
        assert_eq!(sanitize("Web01"), "web01");
        assert_eq!(sanitize("my host!"), "my-host-");
        assert_eq!(sanitize(""), "unknown");
    }
}
