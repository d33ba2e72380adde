//! The event log (README, "Watching lovebeat itself"): one JSON object per line for every state
//! change, appended to a file created with the configured mode, reopened on
//! SIGHUP so logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Event, EventKind, ServiceWatch, State};

/// `[eventlog]`: where every state change is appended.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventlogConfig {
    /// File to append to; empty = off.
    pub path: String,
    /// File mode.
    pub mode: FileMode,
}

impl Default for EventlogConfig {
    fn default() -> Self {
        EventlogConfig {
            path: String::new(),
            mode: FileMode(0o644),
        }
    }
}

/// A file mode, written in octal: bare digits as in 1.x (`mode = 644`) or
/// TOML's octal integer (`mode = 0o644`). TOML reads both as integers
/// (644 and 420), so the loader hands over the token as written, and this
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    /// Reads a mode as written in the file: `644`, `0644` or `0o644`.
    pub fn from_token(token: &str) -> Result<FileMode, BadMode> {
        let digits = token.strip_prefix("0o").unwrap_or(token).replace('_', "");
        match u32::from_str_radix(&digits, 8) {
            Ok(m) if m <= 0o7777 && !digits.is_empty() && !digits.starts_with('+') => {
                Ok(FileMode(m))
            }
            _ => Err(BadMode(token.to_string())),
        }
    }
}

/// A mode that is not one: the token as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mode = {0}: write the mode in octal, as 644 or 0o644")]
pub struct BadMode(String);

impl<'de> serde::Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileMode, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            /// The token as written (what the loader passes on).
            Token(String),
            /// An integer whose token is not known: its decimal digits are
            /// the octal digits, as 1.x read them.
            Digits(i64),
        }
        let token = match Written::deserialize(d)? {
            Written::Token(t) => t,
            Written::Digits(n) => n.to_string(),
        };
        FileMode::from_token(&token).map_err(serde::de::Error::custom)
    }
}

/// The object under the type key: the service or alarm object, plus
/// `previous` and `current` for state changes.
#[derive(Serialize)]
struct Inner<'a, T: Serialize> {
    #[serde(flatten)]
    object: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<State>,
}

/// The log line for an event, or `None` for events the log does not keep.
pub fn line(event: &Event) -> Option<String> {
    fn render<T: Serialize>(
        ts: i64,
        kind: &str,
        object: &T,
        change: Option<(State, State)>,
    ) -> Option<String> {
        let inner = Inner {
            object,
            previous: change.map(|c| c.0),
            current: change.map(|c| c.1),
        };
        let inner = serde_json::to_string(&inner).ok()?;
        Some(format!(
            "{{\"ts\":{ts},\"type\":\"{kind}\",\"{kind}\":{inner}}}"
        ))
    }
    let ts = event.ts;
    match &event.kind {
        EventKind::ServiceAdded(s) => render(ts, "service_added", s, None),
        EventKind::ServiceStateChanged { service, previous } => render(
            ts,
            "service_state_changed",
            service,
            Some((*previous, service.state)),
        ),
        EventKind::ServiceRemoved(s) => render(ts, "service_removed", s, None),
        EventKind::AlarmAdded(a) => render(ts, "alarm_added", a, None),
        EventKind::AlarmStateChanged { alarm, previous } => render(
            ts,
            "alarm_state_changed",
            alarm,
            Some((*previous, alarm.state)),
        ),
        EventKind::AlarmRemoved(a) => render(ts, "alarm_removed", a, None),
        EventKind::ServiceUpdated(_) | EventKind::AlarmUpdated(_) => None,
    }
}

fn open(path: &Path, mode: u32) -> std::io::Result<BufWriter<File>> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)?;
    Ok(BufWriter::with_capacity(64 * 1024, f))
}

/// Appends events to `path` until `stop` (asking for service events with
/// `_services`); reopens the file whenever `reopen` is notified. A file
/// that cannot be opened is logged, and retried at the next reopen.
pub async fn run(
    _services: ServiceWatch,
    path: PathBuf,
    mode: u32,
    mut events: broadcast::Receiver<Arc<Event>>,
    reopen: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut out = match open(&path, mode) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!("cannot open the event log {}: {e}", path.display());
            None
        }
    };
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = reopen.notified() => {
                if let Some(o) = out.as_mut() {
                    let _ = o.flush();
                }
                out = match open(&path, mode) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        tracing::error!("cannot reopen the event log {}: {e}", path.display());
                        None
                    }
                };
                continue;
            }
            _ = stop.cancelled() => break,
        };
        match event {
            Ok(e) => {
                if let (Some(o), Some(l)) = (out.as_mut(), line(&e)) {
                    if let Err(err) = writeln!(o, "{l}") {
                        tracing::error!("cannot write the event log {}: {err}", path.display());
                    }
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("event log fell behind and lost {n} events")
            }
            Err(RecvError::Closed) => break,
        }
        // Flush once the burst is written, not per line.
        if events.is_empty() {
            if let Some(o) = out.as_mut() {
                let _ = o.flush();
            }
        }
    }
    // Write what is still queued, then flush.
    while let Ok(e) = events.try_recv() {
        if let (Some(o), Some(l)) = (out.as_mut(), line(&e)) {
            let _ = writeln!(o, "{l}");
        }
    }
    if let Some(o) = out.as_mut() {
        let _ = o.flush();
    }
}
