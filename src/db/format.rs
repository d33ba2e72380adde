//! The records of 1.x's format, decoded from a decompressed file and
//! encoded for a save: one `SERV` line per service, one `ALARM` line per
//! alarm, then a `SAVED` line with the save's time (which 1.x skips).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::job::{JobFailure, JobRecord};
use crate::engine::{Name, State, StoredAlarm, StoredService};

use super::{DbError, Loaded};

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

/// An `ALARM` line: 1.x's fields, and what its receivers last heard.
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

/// 1.x's "never" for a time or a timeout that a record leaves out.
fn minus_one() -> i64 {
    -1
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
pub(super) struct Snapshot {
    pub(super) name: Name,
    pub(super) last_beat: i64,
    /// Its intervals, as a range of the shard's shared interval buffer.
    pub(super) intervals: std::ops::Range<usize>,
    pub(super) timeout: i64,
    pub(super) state: &'static str,
    pub(super) muted_since: i64,
    pub(super) last_state_change: i64,
    pub(super) job: Option<JobRecord>,
}

/// Encodes one service line into `out` (without allocating for history).
pub(super) fn encode_service(
    out: &mut Vec<u8>,
    snap: &Snapshot,
    intervals: &[u32],
) -> serde_json::Result<()> {
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

/// Encodes one alarm line into `out`: its view, whether it was deleted
/// (kept so a restart does not bring it back from the config's
/// templates), and what its receivers last heard.
pub(super) fn encode_alarm(
    out: &mut Vec<u8>,
    alarm: &crate::engine::AlarmView,
    listed: bool,
) -> serde_json::Result<()> {
    #[derive(Serialize)]
    struct Rec<'a> {
        #[serde(flatten)]
        alarm: &'a crate::engine::AlarmView,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
        announced: State,
        announced_incident: u64,
    }
    out.extend_from_slice(b"ALARM\t");
    serde_json::to_writer(
        &mut *out,
        &Rec {
            alarm,
            deleted: !listed,
            announced: alarm.announced.0,
            announced_incident: alarm.announced.1,
        },
    )?;
    out.push(b'\n');
    Ok(())
}

/// Encodes the closing `SAVED` line: when the save began.
pub(super) fn encode_saved(out: &mut Vec<u8>, at: i64) -> serde_json::Result<()> {
    out.extend_from_slice(b"SAVED\t");
    serde_json::to_writer(&mut *out, &SavedRecord { at })?;
    out.push(b'\n');
    Ok(())
}
