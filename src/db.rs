//! The database file: 1.x's format, read and written (SPEC §7).
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

use crate::engine::job::JobRecord;
use crate::engine::{Engine, Name, State, StoredAlarm, StoredService};

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
}

/// What a load found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The services.
    pub services: Vec<StoredService>,
    /// The alarms.
    pub alarms: Vec<StoredAlarm>,
    /// Lines of unknown record types, skipped.
    pub skipped: usize,
}

#[derive(Deserialize)]
struct ServiceRecord {
    name: String,
    #[serde(default = "minus_one")]
    last_beat: i64,
    #[serde(default)]
    beat_history: Option<Vec<i64>>,
    #[serde(flatten)]
    job: JobRecord,
    #[serde(default = "minus_one")]
    timeout: i64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    muted_since: i64,
    #[serde(default)]
    last_state_change: i64,
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
}

fn minus_one() -> i64 {
    -1
}

/// Reads the database at `path`; `Ok(None)` if there is no file.
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
    let mut data = Vec::new();
    MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 16, file))
        .read_to_end(&mut data)
        .map_err(io)?;
    decode(&mut data, path).map(Some)
}

/// Parses decompressed database content (modified in place by simd-json).
pub fn decode(data: &mut [u8], path: &Path) -> Result<Loaded, DbError> {
    let mut loaded = Loaded::default();
    let bad = |line: usize, message: String| DbError::Record {
        path: path.to_path_buf(),
        line,
        message,
    };
    for (i, line) in data.split_mut(|c| *c == b'\n').enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(json) = line.strip_prefix(b"SERV\t") {
            let json = json.to_vec();
            let r: ServiceRecord =
                parse(json).map_err(|e| bad(n, format!("bad SERV record: {e}")))?;
            let state = parse_state(&r.state)
                .ok_or_else(|| bad(n, format!("unknown state '{}'", r.state)))?;
            r.job
                .to_ext()
                .map_err(|e| bad(n, format!("service '{}': {e}", r.name)))?;
            loaded.services.push(StoredService {
                name: r.name,
                last_beat: r.last_beat,
                timeout: r.timeout,
                state,
                muted_since: r.muted_since,
                last_state_change: r.last_state_change,
                beat_history: r
                    .beat_history
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.clamp(0, i64::from(u32::MAX)) as u32)
                    .collect(),
                job: (r.job != JobRecord::default()).then_some(r.job),
            });
        } else if let Some(json) = line.strip_prefix(b"ALARM\t") {
            let r: AlarmRecord =
                parse(json.to_vec()).map_err(|e| bad(n, format!("bad ALARM record: {e}")))?;
            let state = parse_state(&r.state)
                .ok_or_else(|| bad(n, format!("unknown state '{}'", r.state)))?;
            loaded.alarms.push(StoredAlarm {
                name: r.name,
                state,
                incident_nbr: r.incident_nbr.max(0) as u64,
                last_state_change: r.last_state_change,
                listed: !r.deleted,
            });
        } else {
            loaded.skipped += 1;
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

fn parse<T: for<'de> Deserialize<'de>>(mut json: Vec<u8>) -> Result<T, String> {
    simd_json::serde::from_slice(&mut json).map_err(|e| e.to_string())
}

/// An empty stored state counts as OK (1.x wrote "new" rarely, "" never).
fn parse_state(s: &str) -> Option<State> {
    if s.is_empty() {
        return Some(State::Ok);
    }
    State::parse(s)
}

/// Encodes one service line into `out` (without allocating for history).
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

/// Writes the engine's whole state to `path` atomically. Blocking: run it
/// off the async runtime. The engine keeps serving while it runs.
pub fn save(engine: &Engine, path: &Path) -> std::io::Result<Saved> {
    let start = Instant::now();
    let tmp = temp_path(path);
    let file = File::create(&tmp)?;
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
        for (name, svc) in items {
            let from = intervals.len();
            intervals.extend(svc.intervals());
            shard.push(Snapshot {
                name: name.clone(),
                last_beat: svc.last_beat,
                intervals: from..intervals.len(),
                timeout: svc.timeout,
                state: svc.state.as_str(),
                muted_since: svc.muted_since,
                last_state_change: svc.last_state_change,
                job: svc.ext.as_deref().map(JobRecord::from_ext),
            });
        }
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
        }
        buf.extend_from_slice(b"ALARM\t");
        serde_json::to_writer(
            &mut buf,
            &Rec {
                alarm: a,
                deleted: !listed,
            },
        )
        .map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    gz.write_all(&buf)?;
    let file = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok(Saved {
        services,
        alarms: alarms.len(),
        bytes,
        duration: start.elapsed(),
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
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
    use crate::engine::{AlarmDef, EngineConfig, Update};

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
        assert_eq!(l.skipped, 1);
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
                service_defaults: vec![],
            },
            T0,
        );
        e.update(
            "x",
            Update {
                beat: true,
                timeout: Some(0),
            },
            T0,
        )
        .expect("valid");
        e.beat("y", T0).expect("valid");
        e.beat("y", T0 + 5000).expect("valid");
        e.mute("z", T0).expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let saved = save(&e, &path).expect("saved");
        assert_eq!((saved.services, saved.alarms), (3, 1));
        assert!(!temp_path(&path).exists());
        let l = load(&path).expect("ok").expect("exists");
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
}
