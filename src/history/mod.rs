//! The history store (README, "History"): every state change of every
//! service and alarm, kept in a SQLite file beside the database, written by
//! one thread from the engine's lossless feed (`engine/journal.rs`) and
//! read by the API. The 1.x database file stays the source of the current
//! state; this file is the past. A history file that cannot be opened or
//! written never stops monitoring or alerting: lovebeat says so, counts it
//! and reports it as `lovebeat.self.history`.

pub mod export;
pub mod incidents;
pub mod pages;
pub mod query;
pub mod record;
pub mod schema;
pub mod subscribers;
pub mod uptime;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::engine::journal::Feed;
use crate::engine::Engine;
use crate::settings::duration::DurationSetting;
use crate::trouble::{Part, Trouble};

/// `[history]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep the history at all.
    pub enabled: bool,
    /// The file; empty: the database's file name with `.history` added.
    pub path: String,
    /// How long state changes are kept (0: forever).
    pub retention: DurationSetting,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            path: String::new(),
            retention: DurationSetting {
                ms: 400 * 86_400_000,
            },
        }
    }
}

impl HistoryConfig {
    /// The file, given the database's.
    pub fn file(&self, database: &Path) -> PathBuf {
        if self.path.is_empty() {
            let mut p = database.as_os_str().to_owned();
            p.push(".history");
            PathBuf::from(p)
        } else {
            PathBuf::from(&self.path)
        }
    }
}

/// What the writer and `/metrics` share.
pub(crate) struct Shared {
    /// Changes written.
    pub written: AtomicU64,
    /// Changes lost: counted by the feed, or in a batch that failed.
    pub lost: AtomicU64,
    /// Failed writes.
    pub errors: AtomicU64,
    retention_ms: u64,
    trouble: Trouble,
    /// Why the file is not being written now, while it is not.
    failing: Mutex<Option<String>>,
}

impl Shared {
    fn set_failing(&self, why: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// The history, as the API reads it.
pub struct History {
    /// A connection for reads; WAL lets it read while the writer writes.
    read: Mutex<Connection>,
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    /// Keeps the engine publishing service events (it skips them while
    /// nobody watches).
    _services: crate::engine::ServiceWatch,
}

/// Whether the API can answer from the history.
#[derive(Clone)]
pub enum HistoryState {
    /// `[history] enabled = false`.
    Off,
    /// The file could not be opened; why.
    Failed(Arc<str>),
    /// Open.
    On(Arc<History>),
}

/// Why the history file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Opening or preparing the file failed.
    #[error("cannot open the history file {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: schema::SchemaError,
    },
    /// Moving a damaged file aside, or starting the writer, failed.
    #[error("cannot {what} the history file {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn open_file(path: &Path, flags: OpenFlags) -> Result<Connection, schema::SchemaError> {
    let mut conn = Connection::open_with_flags(path, flags)?;
    schema::configure(&conn)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// True when SQLite says the file is no database or a damaged one.
fn is_corrupt(e: &schema::SchemaError) -> bool {
    matches!(
        e,
        schema::SchemaError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

impl History {
    /// Opens (or creates, mode 0600: it holds job output) the history file
    /// and starts its writer on the engine's history feed. A damaged file
    /// is moved aside (`<file>.corrupt-<ms>`) and a new one started; a file
    /// that cannot be opened at all leaves the history off, said in the log
    /// and by `lovebeat.self.history`, and monitoring goes on.
    pub fn start(
        config: &HistoryConfig,
        database: &Path,
        engine: &Engine,
        trouble: &Trouble,
        auto: pages::AutoPages,
        notifying: Vec<String>,
    ) -> HistoryState {
        if !config.enabled {
            return HistoryState::Off;
        }
        let path = config.file(database);
        match Self::open(&path, config, engine, trouble, auto, notifying) {
            Ok(h) => {
                tracing::info!("history kept in {}", path.display());
                HistoryState::On(h)
            }
            Err(e) => {
                tracing::error!("{e}; lovebeat goes on without history");
                trouble.fail(Part::History, &e.to_string());
                HistoryState::Failed(e.to_string().into())
            }
        }
    }

    fn open(
        path: &Path,
        config: &HistoryConfig,
        engine: &Engine,
        trouble: &Trouble,
        auto: pages::AutoPages,
        notifying: Vec<String>,
    ) -> Result<Arc<History>, HistoryError> {
        let err = |source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        create_private(path);
        let conn = match open_file(path, flags) {
            Err(e) if is_corrupt(&e) => {
                let aside = format!("{}.corrupt-{}", path.display(), crate::clock::now_ms());
                tracing::error!(
                    "the history file {} is damaged ({e}): moved to {aside}, a new one is started",
                    path.display()
                );
                std::fs::rename(path, &aside).map_err(|source| HistoryError::Io {
                    what: "move aside",
                    path: path.display().to_string(),
                    source,
                })?;
                create_private(path);
                open_file(path, flags).map_err(err)?
            }
            other => other.map_err(err)?,
        };
        let read = open_file(path, flags).map_err(err)?;
        // Before anything is written: a page's updates go out from here.
        for page in &notifying {
            subscribers::start_cursor(&read, page).map_err(|e| err(e.into()))?;
        }
        let writer =
            writer::Writer::open(conn, crate::clock::now_ms(), auto).map_err(|e| err(e.into()))?;
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retention_ms: config.retention.ms,
            trouble: trouble.clone(),
            failing: Mutex::new(None),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let journal = engine.journal(Feed::History);
        let handle = {
            let (shared, stopping) = (shared.clone(), stopping.clone());
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("history".into())
                .spawn(move || {
                    let now_state = |kind, name: &str| {
                        match kind {
                            record::Kind::Service => engine.service_state(name),
                            record::Kind::Alarm => engine.alarm_state(name),
                        }
                        .map(|s| s as u8)
                    };
                    writer::run(
                        writer,
                        &journal,
                        &shared,
                        &|| stopping.load(Ordering::Relaxed),
                        &now_state,
                    );
                    journal.close();
                })
                .map_err(|source| HistoryError::Io {
                    what: "start the writer of",
                    path: path.display().to_string(),
                    source,
                })?
        };
        Ok(Arc::new(History {
            read: Mutex::new(read),
            shared,
            stopping,
            writer: Mutex::new(Some(handle)),
            path: path.to_path_buf(),
            _services: engine.watch_services(),
        }))
    }

    /// Runs `f` on the read connection (call it off the async runtime).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.read.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `f` on the read connection with leave to write (the status
    /// pages' incidents, which the API makes): SQLite's busy wait lets it
    /// take turns with the writer thread. Call it off the async runtime.
    pub fn write<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.read.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes written so far (`/metrics`).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Changes lost so far (`/metrics`).
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Why changes are not being written now, if they are not: answers
    /// from the file would leave them out.
    pub fn failing(&self) -> Option<String> {
        self.shared
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failed writes so far (`/metrics`).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued, records the stop, and waits for the writer.
    /// Call it once the inputs have stopped.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the history writer panicked");
            }
        }
    }
}

/// Creates `path` empty with mode 0600 if it does not exist, so SQLite
/// never makes it readable by others (it holds job output). The WAL and
/// shared-memory files SQLite adds take the main file's mode.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

static WRITTEN: Metric = Metric {
    prometheus: "lovebeat_history_changes_written_total",
    statsd: None,
    help: "State changes written to the history file.",
    kind: Kind::Counter,
};

static LOST: Metric = Metric {
    prometheus: "lovebeat_history_changes_lost_total",
    statsd: None,
    help:
        "State changes the history lost: its writer was stalled past its bound, or a write failed.",
    kind: Kind::Counter,
};

static ERRORS: Metric = Metric {
    prometheus: "lovebeat_history_write_errors_total",
    statsd: None,
    help: "Failed writes to the history file.",
    kind: Kind::Counter,
};

/// The history store's counters, for `/metrics`.
impl Counted for History {
    fn read(&self, out: &mut Vec<Reading>) {
        out.push(Reading::of(&WRITTEN, Value::Count(self.written())));
        out.push(Reading::of(&LOST, Value::Count(self.lost())));
        out.push(Reading::of(&ERRORS, Value::Count(self.errors())));
    }
}
