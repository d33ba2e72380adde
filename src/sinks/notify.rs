//! Watching the watcher (SPEC §9): beats `lovebeat.<host>.monitor`, `.save`
//! and `.alerter` on every `[[notify]]` lovebeat, with an auto timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::persistence::SaveStats;
use crate::config::Notify;

/// How often `monitor` and `alerter` are beaten.
const PERIOD: Duration = Duration::from_secs(60);

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

/// Beats the peers until `shutdown`.
pub async fn run(peers: Vec<Notify>, saves: Arc<SaveStats>, mut shutdown: watch::Receiver<bool>) {
    let peers: Vec<Notify> = peers
        .into_iter()
        .filter(|p| !p.lovebeat.is_empty())
        .collect();
    if peers.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("[[notify]] is off: {e}");
            return;
        }
    };
    let host = host_part();
    let beat = |part: &'static str| {
        let (client, peers, host) = (client.clone(), peers.clone(), host.clone());
        async move {
            for p in &peers {
                let url = format!(
                    "{}/api/services/lovebeat.{host}.{part}",
                    p.lovebeat.trim_end_matches('/')
                );
                let mut req = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body("{\"timeout\": -2}");
                if let Some(key) = &p.key {
                    req = req.bearer_auth(key);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => tracing::warn!("notify {url}: HTTP {}", r.status()),
                    Err(e) => tracing::warn!("notify {url}: {e}"),
                }
            }
        }
    };
    let mut period = tokio::time::interval(PERIOD);
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    let mut seen = saves.saves.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = period.tick() => {
                beat("monitor").await;
                beat("alerter").await;
            }
            _ = poll.tick() => {
                let now = saves.saves.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    beat("save").await;
                }
            }
            _ = shutdown.changed() => return,
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
