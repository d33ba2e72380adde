//! The event log (README, "Watching lovebeat itself"): one JSON object per
//! line for every state change, appended to a file created with the
//! configured mode, reopened on SIGHUP so logrotate can move it away. It
//! reads the engine's lossless feed (`engine/journal.rs`), not the
//! broadcast that views may fall behind on.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::journal::Journal;
use crate::engine::{Event, EventKind, ServiceWatch, State};
use crate::trouble::Trouble;

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

/// The line that stands where events were counted instead of logged
/// (the writer was [`crate::engine::journal::MAX_WAIT`] behind): how many.
pub fn gap_line(ts: i64, count: u64) -> String {
    format!("{{\"ts\":{ts},\"type\":\"events_lost\",\"events_lost\":{{\"count\":{count}}}}}")
}

/// Appends every event of `journal` to `path` until `stop` (asking for
/// service events with `_services`), on a thread of its own so a slow disk
/// never blocks the runtime; reopens the file whenever `reopen` is
/// notified. A file that cannot be opened or written is logged and puts
/// `lovebeat.self.eventlog` in ERROR; it is retried at the next batch.
/// Once `stop` is cancelled (input has stopped) it writes what is queued
/// and returns.
pub async fn run(
    _services: ServiceWatch,
    path: PathBuf,
    mode: u32,
    journal: Arc<Journal>,
    reopen: Arc<Notify>,
    trouble: Trouble,
    stop: CancellationToken,
) {
    let flags = Arc::new((AtomicBool::new(false), AtomicBool::new(false)));
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let (flags, journal) = (flags.clone(), journal.clone());
        std::thread::Builder::new()
            .name("eventlog".into())
            .spawn(move || {
                write_loop(&path, mode, &journal, &flags.0, &flags.1, &trouble);
                journal.close();
                let _ = done_tx.send(());
            })
    };
    if let Err(e) = writer {
        tracing::error!("cannot start the event log's writer: {e}");
        journal.close();
        return;
    }
    loop {
        tokio::select! {
            _ = reopen.notified() => flags.0.store(true, Ordering::Relaxed),
            _ = stop.cancelled() => break,
            _ = &mut done_rx => return,
        }
    }
    flags.1.store(true, Ordering::Relaxed);
    let _ = done_rx.await;
}

/// The writer: a batch at a time, flushed after each.
fn write_loop(
    path: &Path,
    mode: u32,
    journal: &Journal,
    reopen: &AtomicBool,
    stop: &AtomicBool,
    trouble: &Trouble,
) {
    let mut out: Option<BufWriter<File>> = None;
    let mut failing = false;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let batch = journal.take(std::time::Duration::from_millis(100));
        if reopen.swap(false, Ordering::Relaxed) {
            if let Some(mut o) = out.take() {
                let _ = o.flush();
            }
        }
        if !batch.events.is_empty() || batch.lost_after > 0 {
            let result = (|| {
                if out.is_none() {
                    out = Some(open(path, mode)?);
                }
                let o = out.as_mut().expect("opened above");
                for e in &batch.events {
                    if let Some(l) = line(e) {
                        writeln!(o, "{l}")?;
                    }
                }
                if batch.lost_after > 0 {
                    writeln!(o, "{}", gap_line(crate::clock::now_ms(), batch.lost_after))?;
                }
                o.flush()
            })();
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the event log {} is written again", path.display());
                    trouble.ok(crate::trouble::Part::Eventlog);
                }
                Ok(()) => {}
                Err(e) => {
                    // Reopened at the next batch.
                    out = None;
                    let what = format!(
                        "cannot write the event log {} ({} events not written): {e}",
                        path.display(),
                        batch.events.len()
                    );
                    tracing::error!("{what}");
                    if !failing {
                        failing = true;
                        trouble.fail(crate::trouble::Part::Eventlog, &what);
                    }
                }
            }
        } else if stopping {
            // Input had stopped before this empty take: all is written.
            return;
        }
    }
}
