//! The database file: 1.x's format, read and written (README,
//! "Configuration"; docs/ARCHITECTURE.md, "Persistence").
//!
//! A gzip stream of lines `SERV\t<service JSON>\n` and `ALARM\t<alarm
//! JSON>\n`. Lines are parsed with simd-json; a save writes a temporary
//! file, fsyncs it, renames it over the old one and fsyncs the directory, so
//! a crash leaves either the old or the new file, never a partial one.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

use crate::engine::job::{JobFailure, JobRecord};
use crate::engine::{Engine, Name, State, StoredAlarm, StoredService};
use crate::prefetch;

/// A database that exists but cannot be used; the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Reading or decompressing failed.
    #[error("database {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A `SERV` or `ALARM` line is malformed.
    #[error("database {path}, line {line}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line in the decompressed stream.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The content decompresses to more than a database could: a gzip
    /// bomb, or not a database.
    #[error("database {path} cannot be read: {read} compressed bytes decompress to {content} bytes or more, over {MAX_RATIO} times as many (plus {} MiB), which no lovebeat database does: damaged, or not a database", RATIO_FLOOR >> 20)]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Compressed bytes read.
        read: u64,
        /// What they decompressed to, when the read stopped.
        content: u64,
    },
    /// The records would not fit in memory.
    #[error("database {path} cannot be read: no memory for its records after line {line}")]
    NoMemory {
        /// The file.
        path: PathBuf,
        /// The line reached.
        line: usize,
    },
}

/// What a load found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The services.
    pub services: Vec<StoredService>,
    /// The alarms.
    pub alarms: Vec<StoredAlarm>,
    /// When it was saved (its `SAVED` record; none in a 1.x file).
    pub saved_at: Option<i64>,
}

/// A `SERV` line: the 1.x fields, then the job fields of [`JobRecord`].
/// Those are listed here again rather than taken in with
/// `#[serde(flatten)]`, which buffers every field of every record into an
/// intermediate map first and made loading a million services twice as
/// slow. Unknown fields are ignored, as 1.x does.
#[derive(Deserialize)]
struct ServiceRecord<'a> {
    /// Borrowed from the line unless it has escapes: the name is kept
    /// inline in the table (`Name`), so no allocation is needed for it.
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default = "minus_one")]
    last_beat: i64,
    #[serde(default, deserialize_with = "intervals")]
    beat_history: Vec<u32>,
    #[serde(default = "minus_one")]
    timeout: i64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    muted_since: i64,
    #[serde(default)]
    last_state_change: i64,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    tz: Option<String>,
    #[serde(default)]
    grace: Option<i64>,
    #[serde(default)]
    max_runtime: Option<i64>,
    #[serde(default)]
    muted_until: Option<i64>,
    #[serde(default)]
    started_at: Option<i64>,
    #[serde(default)]
    running: Option<bool>,
    #[serde(default)]
    run_history: Option<Vec<u32>>,
    #[serde(default)]
    last_failure: Option<JobFailure>,
    #[serde(default)]
    failed: Option<bool>,
}

impl ServiceRecord<'_> {
    /// Moves the job fields out; `None` when none is set.
    fn take_job(&mut self) -> Option<Box<JobRecord>> {
        let job = JobRecord {
            schedule: self.schedule.take(),
            tz: self.tz.take(),
            grace: self.grace.take(),
            max_runtime: self.max_runtime.take(),
            muted_until: self.muted_until.take(),
            started_at: self.started_at.take(),
            running: self.running.take(),
            run_history: self.run_history.take(),
            last_failure: self.last_failure.take(),
            failed: self.failed.take(),
        };
        (job != JobRecord::default()).then(|| Box::new(job))
    }
}

#[derive(Deserialize)]
struct AlarmRecord {
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    incident_nbr: i64,
    #[serde(default)]
    last_state_change: i64,
    #[serde(default)]
    deleted: bool,
    /// The state its receivers last heard of (not in 1.x's files).
    #[serde(default)]
    announced: Option<String>,
    /// The incident they last heard of.
    #[serde(default)]
    announced_incident: Option<i64>,
}

/// The last line of a file lovebeat 2 saved: when, which makes a local
/// file and its S3 copy comparable without trusting file times. 1.x skips
/// record types it does not know.
#[derive(Deserialize, Serialize)]
struct SavedRecord {
    /// When the save began (ms).
    at: i64,
}

fn minus_one() -> i64 {
    -1
}

/// Reads the database at `path`; `Ok(None)` if there is no file.
///
/// What it holds in memory is bounded by the file: as it is read, the
/// content may grow to at most [`MAX_RATIO`] times the compressed bytes
/// read so far, plus [`RATIO_FLOOR`], which a real database never
/// approaches; and the records are kept as they are parsed, never
/// reserved ahead by a count of lines. A few hundred KB of gzipped
/// newlines (a poisoned file or S3 copy) would decompress to gigabytes:
/// refused as "cannot be read" after at most the floor, not an abort.
pub fn load(path: &Path) -> Result<Option<Loaded>, DbError> {
    let io = |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut data = read_content(file, RATIO_FLOOR, path)?;
    decode(&mut data, path).map(Some)
}

/// Decompresses `file` whole, refusing it once its content outgrows
/// [`MAX_RATIO`] times the compressed bytes read plus `floor`.
fn read_content(file: File, floor: u64, path: &Path) -> Result<Vec<u8>, DbError> {
    let io = |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    // Only a hint: without the room, the buffer grows as it is filled.
    let _ = data.try_reserve_exact(uncompressed_size_hint(&file));
    let mut gz = MultiGzDecoder::new(std::io::BufReader::with_capacity(
        1 << 16,
        Counted { file, read: 0 },
    ));
    let allowed = |gz: &MultiGzDecoder<_>| {
        compressed_read(gz)
            .saturating_mul(MAX_RATIO)
            .saturating_add(floor)
    };
    loop {
        let budget = allowed(&gz).saturating_sub(data.len() as u64);
        let got = (&mut gz)
            .take(budget.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(io)? as u64;
        if got <= budget {
            return Ok(data); // the end, within the allowance
        }
        // Over what was allowed when the read began: the allowance has
        // grown with what the read consumed, or the file is a bomb.
        if data.len() as u64 > allowed(&gz) {
            return Err(DbError::TooBig {
                path: path.to_path_buf(),
                read: compressed_read(&gz),
                content: data.len() as u64,
            });
        }
    }
}

/// The file under a decoder, counting the compressed bytes it gives.
struct Counted {
    file: File,
    read: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Compressed bytes the decoder has taken from the file.
fn compressed_read(gz: &MultiGzDecoder<std::io::BufReader<Counted>>) -> u64 {
    gz.get_ref().get_ref().read
}

/// Most that a database's content may be larger than its file. Deflate
/// can expand 1032-fold; lovebeat's records compress 80 to 140-fold when
/// every service has the same 100 intervals (measured, gzip levels 1 and
/// 6), and a file of identical records recompressed with `gzip -9`
/// reaches about 290. 400 leaves room above that and still refuses a file
/// of newlines or other filler (over 1 000-fold).
pub const MAX_RATIO: u64 = 400;

/// Content allowed whatever the ratio, so that a small database, or the
/// start of one, is never refused for its ratio (64 MiB).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// Most that deflate can expand its input (a stream of maximal matches).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The size of a gzip file's content as its trailer states it (modulo
/// 4 GiB, and of the last member only), so the buffer it is read into
/// need not be regrown and copied a dozen times. Only a hint: 0 when the
/// file is too short or cannot be read, and never more than the file
/// could expand to nor than [`load`] allows, so that a truncated or
/// corrupt file, whose last four bytes are not a size, cannot ask for
/// gigabytes.
fn uncompressed_size_hint(file: &File) -> usize {
    use std::os::unix::fs::FileExt;
    let Ok(meta) = file.metadata() else {
        return 0;
    };
    let mut trailer = [0u8; 4];
    if meta.len() < 18 || file.read_exact_at(&mut trailer, meta.len() - 4).is_err() {
        return 0;
    }
    let stated = u64::from(u32::from_le_bytes(trailer));
    let most = meta.len().saturating_mul(MAX_DEFLATE_RATIO).min(
        meta.len()
            .saturating_mul(MAX_RATIO)
            .saturating_add(RATIO_FLOOR),
    );
    usize::try_from(stated.min(most)).unwrap_or(0)
}

/// Parses decompressed database content (modified in place by simd-json).
pub fn decode(data: &mut [u8], path: &Path) -> Result<Loaded, DbError> {
    let mut loaded = Loaded::default();
    // The list grows with the records parsed, never ahead of them by a
    // count of lines: 400 M empty lines would ask for 38 GB. A large list
    // regrows in place (glibc moves big blocks with mremap, not copies),
    // and a failed reservation is an error, not an abort.
    let bad = |line: usize, message: String| DbError::Record {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut buffers = simd_json::Buffers::default();
    let mut start = 0;
    let mut n = 0;
    while start < data.len() {
        // memchr finds each line end with vector instructions: at a
        // million records, a byte-by-byte split was a tenth of the load.
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let line = &mut data[start..end];
        start = end + 1;
        n += 1;
        if line.is_empty() {
            continue;
        }
        if line.starts_with(b"SERV\t") {
            let json = &mut line[b"SERV\t".len()..];
            let mut r: ServiceRecord =
                parse(json, &mut buffers).map_err(|e| bad(n, format!("bad SERV record: {e}")))?;
            let state = parse_state(&r.state)
                .ok_or_else(|| bad(n, format!("unknown state '{}'", r.state)))?;
            let job = r.take_job();
            if let Some(job) = &job {
                job.to_ext()
                    .map_err(|e| bad(n, format!("service '{}': {e}", r.name)))?;
            }
            if loaded.services.len() == loaded.services.capacity() {
                let more = loaded.services.len().max(1024);
                loaded
                    .services
                    .try_reserve(more)
                    .map_err(|_| DbError::NoMemory {
                        path: path.to_path_buf(),
                        line: n,
                    })?;
            }
            loaded.services.push(StoredService {
                name: Name::from(&*r.name),
                last_beat: r.last_beat,
                timeout: r.timeout,
                state,
                muted_since: r.muted_since,
                last_state_change: r.last_state_change,
                beat_history: r.beat_history,
                job,
            });
        } else if line.starts_with(b"ALARM\t") {
            let json = &mut line[b"ALARM\t".len()..];
            let r: AlarmRecord =
                parse(json, &mut buffers).map_err(|e| bad(n, format!("bad ALARM record: {e}")))?;
            let state = parse_state(&r.state)
                .ok_or_else(|| bad(n, format!("unknown state '{}'", r.state)))?;
            let announced = match (
                r.announced.as_deref().map(parse_state),
                r.announced_incident,
            ) {
                (Some(Some(s)), Some(i)) => Some((s, i.max(0) as u64)),
                (Some(None), _) => {
                    return Err(bad(
                        n,
                        format!("unknown announced state in alarm '{}'", r.name),
                    ))
                }
                _ => None,
            };
            loaded.alarms.push(StoredAlarm {
                name: r.name,
                state,
                incident_nbr: r.incident_nbr.max(0) as u64,
                last_state_change: r.last_state_change,
                listed: !r.deleted,
                announced,
            });
        } else if line.starts_with(b"SAVED\t") {
            let json = &mut line[b"SAVED\t".len()..];
            let r: SavedRecord =
                parse(json, &mut buffers).map_err(|e| bad(n, format!("bad SAVED record: {e}")))?;
            loaded.saved_at = Some(r.at);
        } else {
            let kind =
                String::from_utf8_lossy(line.split(|c| *c == b'\t').next().unwrap_or_default())
                    .into_owned();
            tracing::warn!(
                "database {}, line {n}: skipping record of unknown type '{kind}'",
                path.display()
            );
        }
    }
    Ok(loaded)
}

/// Reads `beat_history` (ms, any integers; `null` is none) into the
/// vector the service will keep as its ring, sized as the ring
/// (`history_capacity`), each value saturated into `u32`: a loaded
/// history costs one allocation, not one for the list and more for the
/// ring.
fn intervals<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct Intervals;
    impl<'de> serde::de::Visitor<'de> for Intervals {
        type Value = Vec<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of intervals in ms")
        }
        fn visit_unit<E>(self) -> Result<Vec<u32>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E>(self) -> Result<Vec<u32>, E> {
            Ok(Vec::new())
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<u32>, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            let mut out = Vec::with_capacity(if hint <= crate::engine::service::HISTORY_LEN {
                crate::engine::service::history_capacity(hint)
            } else {
                hint
            });
            while let Some(v) = seq.next_element::<i64>()? {
                out.push(v.clamp(0, i64::from(u32::MAX)) as u32);
            }
            Ok(out)
        }
    }
    d.deserialize_option(Intervals)
}

/// Parses one record in place (simd-json rewrites the bytes it reads),
/// reusing `buffers` from record to record instead of allocating new ones.
fn parse<'a, T: Deserialize<'a>>(
    json: &'a mut [u8],
    buffers: &mut simd_json::Buffers,
) -> Result<T, simd_json::Error> {
    simd_json::serde::from_slice_with_buffers(json, buffers)
}

/// An empty stored state counts as OK (1.x wrote "new" rarely, "" never).
fn parse_state(s: &str) -> Option<State> {
    if s.is_empty() {
        return Some(State::Ok);
    }
    State::parse(s)
}

/// One service as copied out of its shard for a save.
struct Snapshot {
    name: Name,
    last_beat: i64,
    /// Its intervals, as a range of the shard's shared interval buffer.
    intervals: std::ops::Range<usize>,
    timeout: i64,
    state: &'static str,
    muted_since: i64,
    last_state_change: i64,
    job: Option<JobRecord>,
}

/// Encodes one service line into `out` (without allocating for history).
fn encode_service(out: &mut Vec<u8>, snap: &Snapshot, intervals: &[u32]) -> serde_json::Result<()> {
    #[derive(Serialize)]
    struct Rec<'a> {
        name: &'a str,
        last_beat: i64,
        #[serde(skip_serializing_if = "<[u32]>::is_empty")]
        beat_history: &'a [u32],
        timeout: i64,
        state: &'a str,
        muted_since: i64,
        last_state_change: i64,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        job: Option<&'a JobRecord>,
    }
    out.extend_from_slice(b"SERV\t");
    serde_json::to_writer(
        &mut *out,
        &Rec {
            name: &snap.name,
            last_beat: snap.last_beat,
            beat_history: intervals,
            timeout: snap.timeout,
            state: snap.state,
            muted_since: snap.muted_since,
            last_state_change: snap.last_state_change,
            job: snap.job.as_ref(),
        },
    )?;
    out.push(b'\n');
    Ok(())
}

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
    let _saving = tests::Saving::enter();
    let tmp = temp_path(path);
    let result = write(engine, path, &tmp);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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
        #[derive(Serialize)]
        struct Rec<'a> {
            #[serde(flatten)]
            alarm: &'a crate::engine::AlarmView,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            deleted: bool,
            announced: State,
            announced_incident: u64,
        }
        buf.extend_from_slice(b"ALARM\t");
        serde_json::to_writer(
            &mut buf,
            &Rec {
                alarm: a,
                deleted: !listed,
                announced: a.announced.0,
                announced_incident: a.announced.1,
            },
        )
        .map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    buf.extend_from_slice(b"SAVED\t");
    serde_json::to_writer(&mut buf, &SavedRecord { at }).map_err(std::io::Error::other)?;
    buf.push(b'\n');
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
fn temp_path(path: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp.{}.{n}", std::process::id()));
    PathBuf::from(s)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AlarmDef, Change, EngineConfig, Timeout};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: i64 = 1_700_000_000_000;

    fn gz(text: &str) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(text.as_bytes()).expect("in memory");
        e.finish().expect("in memory")
    }

    #[test]
    fn reads_a_1x_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lovebeat.db");
        std::fs::write(
            &path,
            gz(concat!(
                "SERV\t{\"name\":\"a.b\",\"last_beat\":1490000000000,\"beat_history\":[60000,61000],\"timeout\":-2,\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":1490000000000,\"in_alarms\":[\"all\"]}\n",
                "SERV\t{\"name\":\"c\",\"last_beat\":-1,\"timeout\":5000,\"state\":\"error\",\"muted_since\":0,\"last_state_change\":1}\n",
                "VIEW\t{\"name\":\"old\"}\n",
                "ALARM\t{\"name\":\"all\",\"state\":\"error\",\"incident_nbr\":4,\"failed_services\":[\"c\"],\"last_state_change\":1}\n",
            )),
        )
        .expect("write");
        let l = load(&path).expect("readable").expect("exists");
        assert_eq!(l.services.len(), 2);
        assert_eq!(l.services[0].beat_history, vec![60000, 61000]);
        assert_eq!(l.services[0].timeout, -2);
        assert_eq!(l.services[1].state, State::Error);
        assert_eq!(l.alarms[0].incident_nbr, 4);
    }

    #[test]
    fn histories_load_saturated_and_names_with_escapes_decoded() {
        let long: Vec<String> = (1..=150).map(|v| v.to_string()).collect();
        let text = format!(
            concat!(
                "SERV\t{{\"name\":\"n\",\"beat_history\":null,\"timeout\":-1,\"state\":\"ok\"}}\n",
                "SERV\t{{\"name\":\"s\",\"beat_history\":[-5,99999999999,7],\"timeout\":-1,\"state\":\"ok\"}}\n",
                "SERV\t{{\"name\":\"l\\u002e1\",\"beat_history\":[{}],\"timeout\":-2,\"state\":\"ok\"}}\n",
            ),
            long.join(",")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lovebeat.db");
        std::fs::write(&path, gz(&text)).expect("write");
        let l = load(&path).expect("readable").expect("exists");
        assert!(l.services[0].beat_history.is_empty());
        assert_eq!(l.services[1].beat_history, vec![0, u32::MAX, 7]);
        assert_eq!(l.services[2].name, "l.1");
        let e = Engine::new(EngineConfig::default(), T0);
        e.load(l.services, l.alarms, T0);
        let kept = e.service("l.1", true).expect("loaded").beat_history;
        assert_eq!(kept, Some((51..=150).collect::<Vec<u32>>()), "the last 100");
    }

    #[test]
    fn missing_file_is_an_empty_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(&dir.path().join("none.db")).expect("ok").is_none());
    }

    #[test]
    fn corrupt_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.db");
        std::fs::write(&path, b"not gzip at all").expect("write");
        assert!(matches!(load(&path), Err(DbError::Io { .. })));
        std::fs::write(&path, gz("SERV\t{\"name\":\"a\"}\nSERV\t{broken\n")).expect("write");
        let err = load(&path).expect_err("malformed line");
        assert!(err.to_string().contains("line 2"), "{err}");
        let full = gz("SERV\t{\"name\":\"a\"}\n");
        std::fs::write(&path, &full[..full.len() - 6]).expect("write");
        assert!(load(&path).is_err());
    }

    #[test]
    fn save_then_load_round_trips() {
        let e = Engine::new(
            EngineConfig {
                alarms: vec![AlarmDef {
                    name: "all".into(),
                    includes: vec!["*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            T0,
        );
        e.change(
            "x",
            Change {
                beat: true,
                ..Change::timeout(Timeout::Always)
            },
            T0,
        )
        .expect("valid");
        e.beat("y", T0).expect("valid");
        e.beat("y", T0 + 5000).expect("valid");
        e.mute("z", T0).expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        e.mark_announced("all", State::Error, 1);
        let before = crate::clock::now_ms();
        let saved = save(&e, &path).expect("saved");
        assert_eq!((saved.services, saved.alarms), (3, 1));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("db")],
            "no temporary file left"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "job output is not for other users");
        let l = load(&path).expect("ok").expect("exists");
        assert!(l.saved_at.is_some_and(|t| t >= before));
        assert_eq!(l.alarms[0].announced, Some((State::Error, 1)));
        let mut names: Vec<_> = l
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.state))
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![("x", State::Error), ("y", State::Ok), ("z", State::Muted)]
        );
        let y = l.services.iter().find(|s| s.name == "y").expect("y");
        assert_eq!(y.beat_history, vec![5000]);
        assert_eq!(l.alarms[0].incident_nbr, 1);
    }

    /// A save that fails (here: the directory is gone) leaves no temporary
    /// file and the old database as it was; two saves at once take turns.
    #[test]
    fn a_failed_save_leaves_nothing_and_saves_never_overlap() {
        let e = Engine::new(EngineConfig::default(), T0);
        for i in 0..5000 {
            e.beat(&format!("s{i}"), T0).expect("valid");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        save(&e, &path).expect("first save");
        let old = std::fs::read(&path).expect("saved");
        let gone = dir.path().join("gone/db");
        assert!(save(&e, &gone).is_err());
        assert_eq!(std::fs::read(&path).expect("kept"), old);
        // A save that fails after its temp file was written (the rename
        // over a directory fails) removes the temp file.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).expect("dir");
        assert!(save(&e, &blocked).is_err());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (e, path) = (e.clone(), path.clone());
                std::thread::spawn(move || save(&e, &path).map(|s| s.services))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread").expect("saved"), 5000);
        }
        assert_eq!(
            load(&path).expect("ok").expect("exists").services.len(),
            5000
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "only the database and the directory: {left:?}"
        );
        assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 1, "saves overlapped");
    }

    /// Saves running at once, and the most seen, in this test binary.
    static AT_ONCE: AtomicUsize = AtomicUsize::new(0);
    static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

    /// Counts a save from its start to its end (see [`save`]).
    pub(super) struct Saving;

    impl Saving {
        pub(super) fn enter() -> Saving {
            let now = AT_ONCE.fetch_add(1, Ordering::SeqCst) + 1;
            MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
            // Long enough for racing saves to meet if nothing kept them apart.
            std::thread::sleep(std::time::Duration::from_millis(20));
            Saving
        }
    }

    impl Drop for Saving {
        fn drop(&mut self) {
            AT_ONCE.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Many services per shard, each with its own number of intervals:
    /// every one comes back with exactly its own history.
    #[test]
    fn histories_survive_the_shard_snapshot() {
        let e = Engine::new(EngineConfig::default(), T0);
        for i in 0..2000i64 {
            let name = format!("s{i}");
            for k in 0..=(i % 7) {
                e.beat(&name, T0 + k * (1000 + i)).expect("valid");
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        assert_eq!(save(&e, &path).expect("saved").services, 2000);
        let l = load(&path).expect("ok").expect("exists");
        assert_eq!(l.services.len(), 2000);
        for s in &l.services {
            let i: i64 = s.name[1..].parse().expect("numbered");
            let want = vec![(1000 + i) as u32; (i % 7) as usize];
            assert_eq!(s.beat_history, want, "{}", s.name);
        }
    }

    /// Every job field of a `SERV` record is read back: the record lists
    /// them by hand (no `flatten`), so one left out of either list would
    /// silently be lost at the next restart.
    #[test]
    fn every_job_field_round_trips() {
        let job = JobRecord {
            schedule: Some("0 3 * * *".into()),
            tz: Some("Europe/Stockholm".into()),
            grace: Some(600_000),
            max_runtime: Some(3_600_000),
            muted_until: Some(T0 + 7_200_000),
            started_at: Some(T0 - 1000),
            running: Some(true),
            run_history: Some(vec![1200, 3400]),
            last_failure: Some(JobFailure {
                ts: T0 - 5000,
                exit_code: Some(3),
                output: "boom\n".into(),
                reason: Some("ran too long".into()),
            }),
            failed: Some(true),
        };
        let snap = Snapshot {
            name: Name::new("nightly.backup"),
            last_beat: T0,
            intervals: 0..1,
            timeout: crate::engine::TIMEOUT_SCHEDULE,
            state: "error",
            muted_since: T0,
            last_state_change: T0,
            job: Some(job.clone()),
        };
        let mut line = Vec::new();
        encode_service(&mut line, &snap, &[60_000]).expect("encodes");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, gz(std::str::from_utf8(&line).expect("utf-8"))).expect("write");
        let l = load(&path).expect("ok").expect("exists");
        assert_eq!(l.services.len(), 1);
        assert_eq!(l.services[0].job.as_deref(), Some(&job));
        assert_eq!(l.services[0].beat_history, vec![60_000]);
    }

    /// A truncated or corrupt file's last four bytes are not a size: the
    /// hint for the read buffer stays within what the file could expand to.
    #[test]
    fn size_hint_trusts_the_trailer_only_as_far_as_deflate_can_expand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let text = "SERV\t{\"name\":\"a\"}\n".repeat(100);
        std::fs::write(&path, gz(&text)).expect("write");
        let file = File::open(&path).expect("open");
        assert_eq!(uncompressed_size_hint(&file), text.len());
        let mut bad = vec![0u8; 40];
        bad.extend_from_slice(&[0xff; 4]);
        std::fs::write(&path, &bad).expect("write");
        let file = File::open(&path).expect("open");
        assert_eq!(uncompressed_size_hint(&file), 44 * 1032);
    }

    /// `n` gzip members of 1 MB of newlines each, concatenated: a gzip
    /// bomb that compresses about 1 000-fold, made in milliseconds.
    fn newline_bomb(n: usize) -> Vec<u8> {
        let member = gz(&"\n".repeat(1_000_000));
        member.repeat(n)
    }

    /// A file whose content outgrows 400 times what was read of it (plus
    /// the floor) is refused as it is read, with "cannot be read": its
    /// memory is the floor and a little, not what it expands to.
    #[test]
    fn a_gzip_bomb_is_refused_once_it_outgrows_the_ratio() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        std::fs::write(&path, newline_bomb(40)).expect("write");
        let floor = 1 << 20;
        let err = read_content(File::open(&path).expect("open"), floor, &path).expect_err("a bomb");
        let DbError::TooBig { read, content, .. } = &err else {
            panic!("{err}");
        };
        assert!(*content <= read * MAX_RATIO + floor + (1 << 20), "{err}");
        assert!(*content < 20_000_000, "stopped early: {err}");
        assert!(err.to_string().contains("cannot be read"), "{err}");
        // A real database of the same content size is read whole.
        let text = (0..100_000)
            .map(|i| {
                format!(
                    "SERV\t{{\"name\":\"svc.{i:06}\",\"beat_history\":[{}]}}\n",
                    ["60000"; 100].join(",")
                )
            })
            .collect::<String>();
        std::fs::write(&path, gz(&text)).expect("write");
        let data =
            read_content(File::open(&path).expect("open"), floor, &path).expect("a database");
        assert_eq!(data.len(), text.len());
    }

    /// Lines are not records: a file of empty lines reserves nothing for
    /// them (a reservation per line asked 38 GB for 400 M newlines).
    #[test]
    fn empty_lines_reserve_no_records() {
        let mut data = vec![b'\n'; 1 << 20];
        let l = decode(&mut data, Path::new("db")).expect("empty lines are fine");
        assert_eq!(l.services.capacity(), 0);
        let mut data = "SERV\t{\"name\":\"a\"}\n\n\n\n".repeat(1000).into_bytes();
        let l = decode(&mut data, Path::new("db")).expect("valid");
        assert_eq!(l.services.len(), 1000);
        assert!(l.services.capacity() <= 2048, "{}", l.services.capacity());
    }

    mod adversarial {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of records, valid and not: a file made of them is what
        /// a damaged or hostile database looks like.
        fn piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "SERV\t",
                "ALARM\t",
                "SAVED\t",
                "VIEW\t",
                "\n",
                "\n\n\n",
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"",
                "\"name\":",
                "\"a\"",
                "\"b.c\"",
                "\"My Service\"",
                "\"state\":",
                "\"error\"",
                "\"ok\"",
                "\"muted\"",
                "\"bogus\"",
                "\"last_beat\":",
                "\"timeout\":",
                "\"beat_history\":",
                "\"incident_nbr\":",
                "\"last_state_change\":",
                "\"deleted\":",
                "\"at\":",
                "true",
                "null",
                "-1",
                "0",
                "99999999999999999999",
                "1700000000000",
                "-9223372036854775808",
                "\"\\u0000\"",
                "\"\\ud800\"",
                "\u{feff}",
                "\t",
                "SERV\t{\"name\":\"a\",\"state\":\"error\",\"last_beat\":5}\n",
                "SERV\t{\"name\":\"a\",\"state\":\"ok\",\"last_beat\":7}\n",
                "ALARM\t{\"name\":\"x\",\"state\":\"error\",\"incident_nbr\":2}\n",
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            /// Whatever the bytes: decoded or refused, never a panic;
            /// what decodes reserved no more than twice its records (and
            /// a first block), and loads with each name counted once.
            #[test]
            fn the_loader_survives_adversarial_files(pieces in prop::collection::vec(piece(), 0..60), junk in prop::collection::vec(any::<u8>(), 0..40)) {
                let mut data = pieces.concat().into_bytes();
                data.extend_from_slice(&junk);
                if let Ok(l) = decode(&mut data, Path::new("fuzz.db")) {
                    prop_assert!(l.services.capacity() <= (2 * l.services.len()).max(1024));
                    let mut names: Vec<_> = l.services.iter().map(|s| s.name.to_string()).collect();
                    names.sort();
                    names.dedup();
                    let e = Engine::new(EngineConfig::default(), T0);
                    let report = e.load(l.services, l.alarms, T0);
                    let (ok, error, muted) = e.state_counts();
                    prop_assert_eq!(report.services, names.len());
                    prop_assert_eq!((ok + error + muted) as usize, names.len());
                }
                // The same bytes gzipped go through the reader too.
                let path_dir = tempfile::tempdir().expect("tempdir");
                let path = path_dir.path().join("db");
                let mut raw = pieces.concat().into_bytes();
                raw.extend_from_slice(&junk);
                let mut e = GzEncoder::new(Vec::new(), Compression::fast());
                e.write_all(&raw).expect("in memory");
                let mut file = e.finish().expect("in memory");
                file.extend_from_slice(&junk);
                std::fs::write(&path, &file).expect("write");
                let _ = load(&path);
            }
        }
    }
}
