//! Saves the database every `interval` seconds, off the async runtime, so a
//! save never stops ingestion or the API.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{self, Saved};
use crate::engine::Engine;
use crate::sinks::notify::{Part, Reporter};
use crate::sinks::s3::RemoteDb;

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
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            filename: "lovebeat.db".into(),
            interval: 60,
            remote_s3_url: String::new(),
            remote_s3_region: String::new(),
            remote_s3_endpoint: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// A zero interval would save in a loop; an S3 URL must name a bucket
    /// and a key.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let invalid = crate::config::ConfigError::Invalid;
        if self.interval == 0 {
            return Err(invalid(
                "[database] interval must be at least 1 second".into(),
            ));
        }
        if !self.remote_s3_url.is_empty() {
            crate::sinks::s3::parse_url(&self.remote_s3_url)
                .map_err(|e| invalid(format!("[database] {e}")))?;
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

/// Saves once, on a blocking thread, and counts the result.
pub async fn save_now(
    engine: &Engine,
    path: &std::path::Path,
    stats: &SaveStats,
) -> std::io::Result<Saved> {
    let (engine, path) = (engine.clone(), path.to_path_buf());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("save".into())
        .spawn(move || {
            lower_priority();
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
/// save to the `[[notify]]` peers. The final save at shutdown is the
/// caller's, after input has stopped.
pub async fn run(
    engine: Engine,
    path: PathBuf,
    interval: Duration,
    stats: Arc<SaveStats>,
    remote: Option<Arc<RemoteDb>>,
    reporter: Reporter,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        match save_now(&engine, &path, &stats).await {
            Ok(s) => tracing::debug!(
                "saved {} services and {} alarms to {} ({} bytes) in {} ms",
                s.services,
                s.alarms,
                path.display(),
                s.bytes,
                s.duration.as_millis()
            ),
            Err(e) => {
                tracing::error!("could not save the database to {}: {e}", path.display());
                continue;
            }
        }
        reporter.report(Part::Save);
        if let Some(remote) = &remote {
            // Off this task, so a slow store never delays the next save.
            let (remote, path) = (remote.clone(), path.clone());
            tokio::spawn(async move { remote.upload(&path).await });
        }
    }
}

/// Makes the calling thread yield the CPU to ingestion: a save is
/// background work, and on a busy core it should take longer rather than
/// slow beats down. `SCHED_IDLE` rather than a nice value: a woken
/// ingestion thread always preempts an idle-class thread at once, so a save
/// that holds a shard's lock when it is descheduled hands the core back as
/// soon as it lets go, instead of running out its time slice.
fn lower_priority() {
    // SAFETY: plain syscalls on our own thread id (Linux threads have
    // their own policy and nice value), with a parameter struct that lives
    // across the call; failure only means the save runs at a higher
    // priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 15);
        }
    }
}
