//! Saves the database every `interval` seconds, off the async runtime, so a
//! save never stops ingestion or the API; and chooses, at start, between
//! the local file and its S3 copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::db::{self, Loaded, Saved};
use crate::engine::Engine;
use crate::sinks::notify::{Part, Reporter};
use crate::sinks::s3::{IfBusy, RemoteDb};
use crate::trouble::{self, Trouble};

/// `[database]`: where the state is saved, how often, and its S3 backup.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Database file.
    pub filename: String,
    /// Seconds between saves.
    pub interval: u64,
    /// `s3://bucket/key` to download on start and upload after saves.
    pub remote_s3_url: String,
    /// Region of the bucket.
    pub remote_s3_region: String,
    /// Endpoint of an S3-compatible store.
    pub remote_s3_endpoint: String,
    /// How long one request to the store may take (plus 1 s per MiB it
    /// carries), so a store that accepts a connection and then says
    /// nothing can hold neither the start nor the uploads.
    pub remote_s3_timeout: crate::settings::duration::DurationSetting,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            filename: "lovebeat.db".into(),
            interval: 60,
            remote_s3_url: String::new(),
            remote_s3_region: String::new(),
            remote_s3_endpoint: String::new(),
            remote_s3_timeout: crate::settings::duration::DurationSetting { ms: 30_000 },
        }
    }
}

impl DatabaseConfig {
    /// A zero interval would save in a loop; an S3 URL must name a bucket
    /// and a key; a zero S3 timeout would fail every request.
    pub fn validate(&self) -> Result<(), crate::settings::ConfigError> {
        let invalid = crate::settings::ConfigError::Invalid;
        if self.interval == 0 {
            return Err(invalid(
                "[database] interval must be at least 1 second".into(),
            ));
        }
        if !self.remote_s3_url.is_empty() {
            crate::sinks::s3::parse_url(&self.remote_s3_url)
                .map_err(|e| invalid(format!("[database] {e}")))?;
        }
        if self.remote_s3_timeout.ms < 100 {
            return Err(invalid(
                "[database] remote_s3_timeout must be at least 100ms".into(),
            ));
        }
        Ok(())
    }
}

/// Counters of saves, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct SaveStats {
    /// Saves completed.
    pub saves: AtomicU64,
    /// Saves that failed.
    pub failures: AtomicU64,
    /// Duration of the latest save, ms.
    pub last_duration_ms: AtomicU64,
    /// Size of the file after the latest save.
    pub last_bytes: AtomicU64,
}

/// How a save shares the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Periodic saves yield to ingestion (`SCHED_IDLE`).
    Background,
    /// The final save has nothing to yield to, and a deadline.
    Normal,
}

/// Saves once, on a thread of its own, and counts the result.
pub async fn save_now(
    engine: &Engine,
    path: &std::path::Path,
    stats: &SaveStats,
    priority: Priority,
) -> std::io::Result<Saved> {
    let (engine, path) = (engine.clone(), path.to_path_buf());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("save".into())
        .spawn(move || {
            if priority == Priority::Background {
                crate::background::lower_priority();
            }
            let _ = tx.send(db::save(&engine, &path));
        })?;
    let result = rx
        .await
        .map_err(|_| std::io::Error::other("the save thread died"))
        .and_then(|r| r);
    match &result {
        Ok(s) => {
            stats.saves.fetch_add(1, Ordering::Relaxed);
            stats
                .last_duration_ms
                .store(s.duration.as_millis() as u64, Ordering::Relaxed);
            stats.last_bytes.store(s.bytes, Ordering::Relaxed);
        }
        Err(_) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

/// Saves every `interval` until `stop` is cancelled, and reports each
/// save to the `[[notify]]` peers; a failed save or upload puts its
/// `lovebeat.self` service in ERROR until one succeeds (the old file is
/// kept: a save only ever renames a complete file over it). The final
/// save at shutdown is the caller's, after input has stopped. Each
/// upload runs in `tasks` (the shutdown's sink tracker), so the shutdown
/// waits for it before the final save rather than the runtime dropping it
/// halfway, with its hard link left behind.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: Engine,
    path: PathBuf,
    interval: Duration,
    stats: Arc<SaveStats>,
    remote: Option<Arc<RemoteDb>>,
    reporter: Reporter,
    trouble: Trouble,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        match save_now(&engine, &path, &stats, Priority::Background).await {
            Ok(s) => {
                tracing::debug!(
                    "saved {} services and {} alarms to {} ({} bytes) in {} ms",
                    s.services,
                    s.alarms,
                    path.display(),
                    s.bytes,
                    s.duration.as_millis()
                );
                trouble.ok(trouble::Part::Save);
            }
            Err(e) => {
                tracing::error!("could not save the database to {}: {e}", path.display());
                trouble.fail(
                    trouble::Part::Save,
                    &format!("could not save the database to {}: {e}", path.display()),
                );
                continue;
            }
        }
        reporter.report(Part::Save);
        if let Some(remote) = &remote {
            // Off this task, so a slow store never delays the next save.
            let (remote, path, trouble) = (remote.clone(), path.clone(), trouble.clone());
            tasks.spawn(async move {
                match remote.upload(&path, IfBusy::Skip).await {
                    Ok(()) => trouble.ok(trouble::Part::Upload),
                    Err(e) => trouble.fail(trouble::Part::Upload, &e.to_string()),
                }
            });
        }
    }
}

/// What the daemon starts from.
pub struct Start {
    /// The database read, or `None` to start empty.
    pub loaded: Option<Loaded>,
    /// Why the S3 copy could not be had when the local file was used in
    /// its place: reported as upload trouble from the first moment.
    pub remote_trouble: Option<String>,
}

/// The database to start from. Without S3, the local file. With S3, the
/// remote copy is downloaded beside it and read (a file that is not a
/// database is refused, never put in place); then the newer of the two
/// by the save time recorded in each (its `SAVED` record, not the file's
/// mtime) is used, and the remote one replaces the local file when it
/// wins. A file without a save time (1.x's) loses to one with; when
/// neither has one the remote copy wins, as in 1.x. When the download
/// fails (the store unreachable or silent, a missing bucket) or the copy
/// cannot be read (damaged, poisoned, a gzip bomb) a readable local file
/// is used, with an error and upload trouble; without one the start is
/// refused, as starting empty would upload an empty database over the
/// copy. Which was used is logged.
pub async fn load_at_start(
    path: &std::path::Path,
    remote: Option<&RemoteDb>,
) -> anyhow::Result<Start> {
    use anyhow::Context;
    remove_stale_temps(path);
    let local = || {
        db::load(path)
            .context("refusing to start: the database cannot be read (move it away to start empty)")
    };
    let start = |loaded| Start {
        loaded,
        remote_trouble: None,
    };
    let Some(remote) = remote else {
        return local().map(start);
    };
    // A download that fails and a copy that cannot be read are treated
    // alike: the local file if it reads, loudly, with upload trouble from
    // the first moment (the next upload replaces the copy with it); else
    // no start, as starting empty would upload an empty database over
    // the copy.
    let fall_back = |why: String| -> anyhow::Result<Start> {
        match db::load(path) {
            Ok(Some(here)) => {
                let why = format!(
                    "{why}: started from the local {} instead, which the next upload puts in the copy's place",
                    path.display()
                );
                tracing::error!("{why}");
                Ok(Start {
                    loaded: Some(here),
                    remote_trouble: Some(why),
                })
            }
            Ok(None) => anyhow::bail!(
                "refusing to start: {why}; and there is no local {} to start from (starting empty would upload an empty database over the copy)",
                path.display()
            ),
            Err(le) => anyhow::bail!(
                "refusing to start: {why}; and the local {} cannot be read either: {le:#}",
                path.display()
            ),
        }
    };
    let tmp = match remote.download(path).await {
        Ok(Some(tmp)) => tmp,
        Ok(None) => {
            if path.exists() {
                tracing::warn!(
                    "no database at {}: using the local {}",
                    remote.url(),
                    path.display()
                );
            } else {
                tracing::info!("no database at {}: starting empty", remote.url());
            }
            return local().map(start);
        }
        Err(e) => return fall_back(e.to_string()),
    };
    let downloaded = match db::load(&tmp) {
        Ok(Some(l)) => l,
        Ok(None) => unreachable_download(&tmp)?,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return fall_back(format!(
                "the copy at {} is not a usable database ({e})",
                remote.url()
            ));
        }
    };
    let here = match db::load(path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "the local {} cannot be read ({e}): using the copy from {}",
                path.display(),
                remote.url()
            );
            None
        }
    };
    let keep_local = match (
        &here,
        here.as_ref().and_then(|l| l.saved_at),
        downloaded.saved_at,
    ) {
        (Some(_), Some(mine), Some(theirs)) => mine > theirs,
        (Some(_), Some(_), None) => true,
        _ => false,
    };
    if keep_local {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(
            "the local {} was saved after the copy at {}: using the local file",
            path.display(),
            remote.url()
        );
        return Ok(start(here));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("refusing to start: cannot replace {}", path.display()))?;
    tracing::info!("downloaded the database from {}", remote.url());
    Ok(start(Some(downloaded)))
}

/// Removes what a killed lovebeat left beside the database: its save's
/// temporary file, an upload's snapshot link, a download (`<db>.tmp.<pid>.<n>`,
/// `.upload.`, `.download.`), unless the process that made it still runs
/// (a second lovebeat on the same file, which is a mistake, but not ours
/// to break). Our own PID counts as dead: nothing of ours runs yet, and in
/// a container every start is PID 1.
fn remove_stale_temps(path: &std::path::Path) {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let base = base.to_string_lossy();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&*base) else {
            continue;
        };
        let pid = ["tmp", "upload", "download"].iter().find_map(|what| {
            let rest = rest
                .strip_prefix('.')?
                .strip_prefix(what)?
                .strip_prefix('.')?;
            let (pid, n) = rest.split_once('.')?;
            n.parse::<u64>().ok()?;
            pid.parse::<i32>().ok()
        });
        let Some(pid) = pid else { continue };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!("removed {name}, left by a lovebeat that was killed"),
                Err(e) => tracing::warn!("cannot remove {name}: {e}"),
            }
        }
    }
}

/// `db::load` answers `None` only for a missing file, and the download was
/// just written.
fn unreachable_download(tmp: &std::path::Path) -> anyhow::Result<Loaded> {
    anyhow::bail!(
        "refusing to start: {} vanished as it was read",
        tmp.display()
    )
}

static SAVES: Metric = Metric {
    prometheus: "lovebeat_db_saves_total",
    statsd: Some("db.save.count"),
    help: "Database saves completed.",
    kind: Kind::Counter,
};

static SAVE_FAILURES: Metric = Metric {
    prometheus: "lovebeat_db_save_failures_total",
    statsd: None,
    help: "Database saves that failed.",
    kind: Kind::Counter,
};

static SAVE_DURATION: Metric = Metric {
    prometheus: "lovebeat_db_save_duration_seconds",
    statsd: None,
    help: "Duration of the latest database save.",
    kind: Kind::Gauge,
};

static SIZE: Metric = Metric {
    prometheus: "lovebeat_db_size_bytes",
    statsd: None,
    help: "Size of the database file after the latest save.",
    kind: Kind::Gauge,
};

/// The saves' counters, for `/metrics` and the statsd sink.
impl Counted for SaveStats {
    fn read(&self, out: &mut Vec<Reading>) {
        out.push(Reading::of(
            &SAVES,
            Value::Count(self.saves.load(std::sync::atomic::Ordering::Relaxed)),
        ));
        let failures = self.failures.load(std::sync::atomic::Ordering::Relaxed);
        out.push(Reading::of(&SAVE_FAILURES, Value::Count(failures)));
        let ms = self
            .last_duration_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        out.push(Reading::of(
            &SAVE_DURATION,
            Value::Level(ms as f64 / 1000.0),
        ));
        let bytes = self.last_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64;
        out.push(Reading::of(&SIZE, Value::Level(bytes)));
    }
}
