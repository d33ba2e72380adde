//! The history store (README, "History"): every state change of every
//! service and alarm, kept in a SQLite file beside the database, written by
//! one thread from the engine's lossless feed (`engine/journal.rs`) and
//! read by the API. The 1.x database file stays the source of the current
//! state; this file is the past. A history file that cannot be opened or
//! written never stops monitoring or alerting: lovebeat says so, counts it
//! and reports it as `lovebeat.self.history`.

pub mod audit;
pub mod bulk;
pub mod export;
pub mod incidents;
pub mod maintenance;
pub mod pages;
pub mod query;
pub mod record;
pub mod report_log;
pub mod runs;
pub mod schema;
pub mod subscribers;
pub mod uptime;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// How long the daily rollups are kept (0, the default: forever).
    pub rollup_retention: DurationSetting,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            path: String::new(),
            retention: DurationSetting {
                ms: 400 * 86_400_000,
            },
            rollup_retention: DurationSetting { ms: 0 },
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
    /// Job runs written.
    pub runs_written: AtomicU64,
    /// Changes of fast flippers coalesced away (`writer::coalesce`).
    pub coalesced: AtomicU64,
    /// Job runs coalesced away alike (`writer::coalesce_runs`).
    pub runs_coalesced: AtomicU64,
    /// Audit entries waiting for the writer, at most [`AUDIT_QUEUE`].
    audit: Mutex<std::collections::VecDeque<audit::Entry>>,
    /// Audit entries lost: the queue was full, or their write failed.
    pub audit_lost: AtomicU64,
    retention_ms: u64,
    rollup_retention_ms: u64,
    trouble: Trouble,
    /// Why the file is not being written now, while it is not.
    failing: Mutex<Option<String>>,
    /// Bumped at each opening of the file by the writer: the reader opens
    /// it again when it differs.
    generation: AtomicU64,
}

/// Audit entries waiting for the writer at most: an API that changes
/// faster than the file is written loses the excess, counted, rather than
/// memory without bound.
pub const AUDIT_QUEUE: usize = 1 << 16;

impl Shared {
    /// Says that the file could not be opened: the log, the count, the
    /// endpoints' 503 and `lovebeat.self.history`.
    fn failed_to_open(&self, e: &HistoryError) {
        tracing::error!("{e}; lovebeat goes on without history and tries again");
        self.errors.fetch_add(1, Ordering::Relaxed);
        let why = e.to_string();
        self.set_failing(Some(why.clone()));
        self.trouble.fail(Part::History, &why);
    }

    /// What the audit queue holds, taken by the writer.
    fn take_audit(&self) -> Vec<audit::Entry> {
        let mut q = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    }

    fn set_failing(&self, why: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// The history, as the API reads it.
pub struct History {
    /// A connection for reads; WAL lets it read while the writer writes.
    read: Mutex<Reader>,
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

/// The flags every connection to the file opens with.
fn flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// Opens (or creates, mode 0600) the file for the writer: a damaged one is
/// moved aside (`<file>.corrupt-<ms>`) and a new one started; what the
/// configuration changed since the last start goes into the audit trail;
/// a new `lifecycle` row is begun.
/// The writer connection's page cache, in KiB as SQLite's negative
/// `cache_size` takes it: 64 MiB at most, allocated as pages are used.
const WRITER_CACHE_KIB: i64 = -65_536;

fn open_writer(
    path: &Path,
    configured: &[audit::ConfigItem],
    pages: &Pages,
) -> Result<writer::Writer, HistoryError> {
    let err = |source| HistoryError::Open {
        path: path.display().to_string(),
        source,
    };
    create_private(path);
    let mut conn = match open_file(path, flags()) {
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
            open_file(path, flags()).map_err(err)?
        }
        other => other.map_err(err)?,
    };
    // The writer's inserts land all over the indexes of a file of
    // hundreds of megabytes: with SQLite's default 2 MB of cache, each
    // was a read from the kernel (half the writer's time in a mass outage
    // went to copying pages in). Bounded, and only this connection's.
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
        .map_err(|e| err(e.into()))?;
    let now = crate::clock::now_ms();
    if let Err(e) = audit::config_changes(&mut conn, configured, now) {
        tracing::error!("cannot record the configuration's changes in the history: {e}");
    }
    // Before anything is written: a page's updates go out from here.
    for page in &pages.notifying {
        subscribers::start_cursor(&conn, page).map_err(|e| err(e.into()))?;
    }
    let mut w = writer::Writer::open(conn, now, pages.auto.clone()).map_err(|e| err(e.into()))?;
    w.watch(path);
    Ok(w)
}

/// What the status pages need of the writer: the alarms whose changes
/// open and resolve their automatic incidents, and the pages whose
/// updates are sent to subscribers.
struct Pages {
    auto: pages::AutoPages,
    notifying: Vec<String>,
}

/// The read connection, and which opening of the file it reads.
struct Reader {
    conn: Option<Connection>,
    generation: u64,
}

/// Longest wait between two tries to open a history file that could not
/// be opened.
const RETRY_MAX: Duration = Duration::from_secs(60);

impl History {
    /// Opens (or creates, mode 0600: it holds job output) the history file
    /// and starts its writer on the engine's history feed. A damaged file
    /// is moved aside (`<file>.corrupt-<ms>`) and a new one started; a file
    /// that cannot be opened is tried again (after 1 s, then twice as
    /// long each time, at most a minute), said meanwhile in the log, by
    /// `lovebeat.self.history`, `/metrics` and a 503 from the endpoints,
    /// and monitoring goes on. `configured` is the configuration's alarms
    /// and alerts: what changed since the last start goes into the audit
    /// trail, by `config`.
    pub fn start(
        config: &HistoryConfig,
        database: &Path,
        engine: &Engine,
        trouble: &Trouble,
        configured: &[audit::ConfigItem],
        auto: pages::AutoPages,
        notifying: Vec<String>,
    ) -> HistoryState {
        if !config.enabled {
            return HistoryState::Off;
        }
        let path = config.file(database);
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            runs_written: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            runs_coalesced: AtomicU64::new(0),
            audit: Mutex::default(),
            audit_lost: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            retention_ms: config.retention.ms,
            rollup_retention_ms: config.rollup_retention.ms,
            trouble: trouble.clone(),
            failing: Mutex::new(None),
        });
        // The first try is made now, so a start says at once whether the
        // history is kept.
        let pages = Pages { auto, notifying };
        let first = open_writer(&path, configured, &pages);
        match &first {
            Ok(_) => {
                tracing::info!("history kept in {}", path.display());
                shared.generation.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => shared.failed_to_open(e),
        }
        let stopping = Arc::new(AtomicBool::new(false));
        let journal = engine.journal(Feed::History);
        let spawned = {
            let (shared, stopping) = (shared.clone(), stopping.clone());
            let engine = engine.clone();
            let (path, configured) = (path.clone(), configured.to_vec());
            std::thread::Builder::new()
                .name("history".into())
                .spawn(move || {
                    // Beats first: in a mass outage the writer takes what
                    // the ingestion leaves, and what it cannot keep up with
                    // is caught up later (`writer::Catchup::Gap`).
                    crate::background::lower_priority();
                    let now_state = |kind, name: &str| {
                        match kind {
                            record::Kind::Service => engine.service_state_since(name),
                            record::Kind::Alarm => engine.alarm_state_since(name),
                        }
                        .map(|found| found.map(|(s, since)| (s as u8, since)))
                    };
                    let stop = || stopping.load(Ordering::Relaxed);
                    let opened = retry(first, &path, &configured, &pages, &journal, &shared, &stop);
                    if let Some(w) = opened {
                        let reopen = || open_writer(&path, &[], &pages);
                        writer::run(w, &journal, &shared, &stop, &now_state, &reopen);
                    }
                    journal.close();
                })
        };
        let handle = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                let e = HistoryError::Io {
                    what: "start the writer of",
                    path: path.display().to_string(),
                    source: e,
                };
                tracing::error!("{e}; lovebeat goes on without history");
                trouble.fail(Part::History, &e.to_string());
                return HistoryState::Failed(e.to_string().into());
            }
        };
        HistoryState::On(Arc::new(History {
            read: Mutex::new(Reader {
                conn: None,
                generation: 0,
            }),
            shared,
            stopping,
            writer: Mutex::new(handle),
            path,
            _services: engine.watch_services(),
        }))
    }

    /// Runs `f` on the read connection (call it off the async runtime),
    /// opened again when the writer opened the file again (a file deleted
    /// while lovebeat ran, or one that could not be opened at first).
    pub fn read<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_connection(|c| f(c))
    }

    /// Runs `f` on the read connection to write the rare rows that are not
    /// the feed's (maintenance windows made through the API): WAL lets it
    /// write between the writer's batches, with the busy wait of
    /// `schema::configure`. Call it off the async runtime.
    pub fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.with_connection(f)
    }

    /// The read connection, opened (again) when it has none or the writer
    /// opened a new file since.
    fn with_connection<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut r = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.shared.generation.load(Ordering::Relaxed);
        if r.conn.is_none() || r.generation != generation {
            r.conn = None;
            match open_file(&self.path, flags()) {
                Ok(c) => {
                    r.conn = Some(c);
                    r.generation = generation;
                }
                Err(schema::SchemaError::Sqlite(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                        Some(e.to_string()),
                    )
                    .into())
                }
            }
        }
        match &mut r.conn {
            Some(c) => f(c),
            None => Err(rusqlite::Error::InvalidPath(self.path.clone()).into()),
        }
    }

    /// How long ended rows are kept (ms; 0: for ever).
    pub fn retention_ms(&self) -> u64 {
        self.shared.retention_ms
    }

    /// Changes written so far (`/metrics`).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Records a change made through the API for the audit trail; the
    /// writer writes it with its next batch. Never blocks: a full queue
    /// counts the entry as lost.
    pub fn audit(&self, entry: audit::Entry) {
        let mut q = self.shared.audit.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= AUDIT_QUEUE {
            drop(q);
            self.shared.audit_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(entry);
    }

    /// From when the raw changes are whole at `now` (`retention` back;
    /// the beginning of time with none): before it, answers come from the
    /// daily rollups in whole days.
    pub fn raw_from(&self, now: i64) -> i64 {
        match self.shared.retention_ms {
            0 => i64::MIN,
            ms => now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)),
        }
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

/// The audit's view of the configured alarms and alerts: each name with
/// a SHA-256 of its settings, so a change is seen and no secret is kept.
pub fn configured_items<'a>(
    alarms: impl IntoIterator<Item = &'a crate::engine::AlarmConfig>,
    alerts: impl IntoIterator<Item = (&'a String, &'a crate::sinks::alerts::AlertConfig)>,
) -> Vec<audit::ConfigItem> {
    use sha2::{Digest, Sha256};
    let digest = |text: String| {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let mut items: Vec<audit::ConfigItem> = alarms
        .into_iter()
        .map(|a| audit::ConfigItem {
            kind: "alarm",
            name: a.name.clone(),
            digest: digest(format!("{a:?}")),
        })
        .collect();
    items.extend(alerts.into_iter().map(|(name, a)| audit::ConfigItem {
        kind: "alert",
        name: name.clone(),
        digest: digest(format!("{a:?}")),
    }));
    items
}

/// Tries to open the file until it opens (`first` is the first try's
/// answer) or lovebeat stops, waiting 1 s, then twice as long each time
/// (at most [`RETRY_MAX`]); meanwhile the feed is taken and counted as
/// lost, so the engine never waits for a writer that is not there.
fn retry(
    first: Result<writer::Writer, HistoryError>,
    path: &Path,
    configured: &[audit::ConfigItem],
    pages: &Pages,
    journal: &crate::engine::journal::Journal,
    shared: &Shared,
    stop: &dyn Fn() -> bool,
) -> Option<writer::Writer> {
    let mut wait = Duration::from_secs(1);
    let mut attempt = first;
    loop {
        match attempt {
            Ok(w) => return Some(w),
            Err(_) => {
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    let batch = journal.take(Duration::from_millis(100));
                    let lost = batch.events.len() as u64 + batch.lost_after;
                    if lost > 0 {
                        shared.lost.fetch_add(lost, Ordering::Relaxed);
                        journal.count_unwritten(batch.events.len() as u64);
                    }
                    if stop() {
                        return None;
                    }
                }
                wait = (wait * 2).min(RETRY_MAX);
                attempt = open_writer(path, configured, pages);
                match &attempt {
                    Ok(_) => {
                        tracing::info!("the history file {} is open again", path.display());
                        shared.generation.fetch_add(1, Ordering::Relaxed);
                        shared.set_failing(None);
                        shared.trouble.ok(Part::History);
                    }
                    Err(e) => shared.failed_to_open(e),
                }
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

static COALESCED: Metric = Metric {
    prometheus: "lovebeat_history_changes_coalesced_total",
    statsd: None,
    help: "State changes of services that flipped faster than the history was written, coalesced away (the first and the last of each run of them are kept).",
    kind: Kind::Counter,
};

static FAILING: Metric = Metric {
    prometheus: "lovebeat_history_failing",
    statsd: None,
    help: "1 while the history file cannot be opened or written (lovebeat tries again), else 0.",
    kind: Kind::Gauge,
};

static RUNS_COALESCED: Metric = Metric {
    prometheus: "lovebeat_history_runs_coalesced_total",
    statsd: None,
    help: "Job runs of services that ended runs faster than the history was written, coalesced away (the first and the last of each are kept).",
    kind: Kind::Counter,
};

static RUNS: Metric = Metric {
    prometheus: "lovebeat_history_runs_written_total",
    statsd: None,
    help: "Job runs written to the history file.",
    kind: Kind::Counter,
};

static AUDIT_LOST: Metric = Metric {
    prometheus: "lovebeat_history_audit_lost_total",
    statsd: None,
    help: "Audit entries the history lost: its queue was full, or their write failed.",
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
        let failing = if self.failing().is_some() { 1.0 } else { 0.0 };
        out.push(Reading::of(&FAILING, Value::Level(failing)));
        let coalesced = self.shared.coalesced.load(Ordering::Relaxed);
        out.push(Reading::of(&COALESCED, Value::Count(coalesced)));
        let runs_coalesced = self.shared.runs_coalesced.load(Ordering::Relaxed);
        out.push(Reading::of(&RUNS_COALESCED, Value::Count(runs_coalesced)));
        let runs = self.shared.runs_written.load(Ordering::Relaxed);
        out.push(Reading::of(&RUNS, Value::Count(runs)));
        let lost = self.shared.audit_lost.load(Ordering::Relaxed);
        out.push(Reading::of(&AUDIT_LOST, Value::Count(lost)));
    }
}
