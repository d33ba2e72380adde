//! The event log (SPEC §9): one JSON object per line for every state
//! change, appended to a file created with the configured mode, reopened on
//! SIGHUP so logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{watch, Notify};

use crate::engine::{Event, EventKind, ServiceWatch, State};

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

/// Appends events to `path` until `shutdown` (asking for service events
/// with `_services`); reopens the file whenever `reopen` is notified. Returns an error only if the file cannot be opened
/// at start.
pub async fn run(
    _services: ServiceWatch,
    path: PathBuf,
    mode: u32,
    mut events: broadcast::Receiver<Arc<Event>>,
    reopen: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
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
            _ = shutdown.changed() => break,
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
