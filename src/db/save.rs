//! Writing a database file: one shard copied at a time under its read
//! lock, encoded (`format.rs`) and compressed with no lock held, into a
//! temporary file of its own that is fsynced and renamed over the old.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::engine::job::JobRecord;
use crate::engine::Engine;
use crate::prefetch;

use super::format::{encode_alarm, encode_saved, encode_service, Snapshot};

/// What a save wrote.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// Services written.
    pub services: usize,
    /// Alarms written.
    pub alarms: usize,
    /// Size of the file.
    pub bytes: u64,
    /// Time taken.
    pub duration: Duration,
}

/// Bytes of JSON gathered before they are compressed.
const CHUNK: usize = 256 * 1024;
/// How many services ahead a save's copy prefetches (enough to keep a
/// memory round trip busy, few enough to stay in cache).
const PREFETCH_AHEAD: usize = 8;

/// Saves of this process, one at a time: a periodic save still running
/// when the final one starts is waited for, never raced.
static ONE_SAVE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the engine's whole state to `path` atomically: to a temporary
/// file of its own, created 0600 (it holds job output), fsynced, then
/// renamed over `path`; the temporary file is removed if anything fails.
/// Blocking: run it off the async runtime. The engine keeps serving while
/// it runs.
pub fn save(engine: &Engine, path: &Path) -> std::io::Result<Saved> {
    let _one = ONE_SAVE.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(test)]
    let _saving = super::tests::Saving::enter();
    let tmp = temp_path(path);
    let result = write(engine, path, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The save itself, into `tmp`, then renamed over `path`.
fn write(engine: &Engine, path: &Path, tmp: &Path) -> std::io::Result<Saved> {
    use std::os::unix::fs::OpenOptionsExt;
    let start = Instant::now();
    let at = crate::clock::now_ms();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    let mut gz = GzEncoder::new(BufWriter::with_capacity(1 << 16, file), Compression::fast());
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut services = 0;
    // Each shard is copied under its read lock (plain memory copies, no
    // allocation for most services); encoding and compression happen with
    // no lock held.
    let mut shard: Vec<Snapshot> = Vec::new();
    let mut intervals: Vec<u32> = Vec::new();
    let mut result = Ok(());
    engine.for_each_shard(|items| {
        if result.is_err() {
            return;
        }
        shard.clear();
        intervals.clear();
        // Walking the buckets is sequential and cheap; what costs is each
        // service's out-of-line history, one cache miss apiece: the copy
        // prefetches a few services ahead, which cuts the time this shard
        // is locked several times over.
        prefetch::ahead::<_, PREFETCH_AHEAD>(
            items,
            &[],
            |(_, svc)| svc.prefetch_out_of_line(),
            |_, _| {},
            |(name, svc)| {
                let from = intervals.len();
                intervals.extend(svc.intervals());
                shard.push(Snapshot {
                    name: name.clone(),
                    last_beat: svc.last_beat,
                    intervals: from..intervals.len(),
                    timeout: svc.timeout_wire(),
                    state: svc.state.as_str(),
                    muted_since: svc.muted_since,
                    last_state_change: svc.last_state_change,
                    job: svc.job.as_deref().map(JobRecord::from_ext),
                });
            },
        );
        for snap in &shard {
            if let Err(e) = encode_service(&mut buf, snap, &intervals[snap.intervals.clone()]) {
                result = Err(std::io::Error::other(e));
                return;
            }
            services += 1;
            if buf.len() >= CHUNK {
                if let Err(e) = gz.write_all(&buf) {
                    result = Err(e);
                    return;
                }
                buf.clear();
            }
        }
    });
    result?;
    let alarms = engine.stored_alarms();
    for (a, listed) in &alarms {
        encode_alarm(&mut buf, a, *listed).map_err(std::io::Error::other)?;
    }
    encode_saved(&mut buf, at).map_err(std::io::Error::other)?;
    gz.write_all(&buf)?;
    let file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(tmp, path)?;
    sync_dir(path)?;
    Ok(Saved {
        services,
        alarms: alarms.len(),
        bytes,
        duration: start.elapsed(),
    })
}

/// A temporary file beside `path` that no other save, here or in another
/// process, uses: `<path>.tmp.<pid>.<n>`.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp.{}.{n}", std::process::id()));
    PathBuf::from(s)
}

/// Makes the rename durable: the directory entry is on disk too.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
