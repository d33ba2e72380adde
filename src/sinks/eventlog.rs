//! The event log (README, "Watching lovebeat itself"): one JSON object per
//! line for every state change, appended to a file created with the
//! configured mode, reopened on SIGHUP so logrotate can move it away. It
//! reads the engine's lossless feed (`engine/journal.rs`), not the
//! broadcast that views may fall behind on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::journal::{Batch, Journal};
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
        EventKind::ServiceUpdated(_) | EventKind::AlarmUpdated(_) | EventKind::JobRun(_) => None,
    }
}

fn open(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
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
/// Lines are written whole (a line torn by a failed write is cut off), and
/// the events that could not be written are counted as lost
/// (`lovebeat_eventlog_lost_total`) and marked by a gap record once the
/// file takes lines again.
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

/// The writer: a batch at a time, each written as whole lines.
fn write_loop(
    path: &Path,
    mode: u32,
    journal: &Journal,
    reopen: &AtomicBool,
    stop: &AtomicBool,
    trouble: &Trouble,
) {
    let mut out: Option<File> = None;
    let mut writer = Writer::default();
    let mut failing = false;
    let mut last_try = std::time::Instant::now();
    // Events not written since the last error logged, and when that was:
    // a full disk fails every batch, and the log may be on that disk.
    let mut unreported = 0u64;
    let mut reported: Option<std::time::Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let batch = journal.take(std::time::Duration::from_millis(100));
        if reopen.swap(false, Ordering::Relaxed) {
            out = None;
        }
        let news = !batch.events.is_empty() || batch.lost_after > 0;
        // A gap record still owed is tried again on its own now and then,
        // so it lands (and the trouble clears) without waiting for events.
        let owed_due = writer.owes() && (stopping || last_try.elapsed() >= RETRY_OWED);
        if !news && !owed_due {
            if stopping {
                // Input had stopped before this empty take: all is written.
                return;
            }
            continue;
        }
        last_try = std::time::Instant::now();
        let result = match out.take().map_or_else(|| open(path, mode), Ok) {
            Ok(mut f) => {
                let r = writer.write(&mut f, &batch, crate::clock::now_ms());
                // A file that failed is reopened at the next try.
                if r.is_ok() {
                    out = Some(f);
                }
                r
            }
            Err(e) => Err(writer.not_opened(&batch, e)),
        };
        match result {
            Ok(()) if failing => {
                failing = false;
                if unreported > 0 {
                    tracing::error!(
                        "the event log {} is written again; {unreported} events were not written since the last report",
                        path.display()
                    );
                    (unreported, reported) = (0, Some(std::time::Instant::now()));
                } else {
                    tracing::info!("the event log {} is written again", path.display());
                }
                trouble.ok(crate::trouble::Part::Eventlog);
            }
            Ok(()) => {}
            Err(Unwritten { events, error }) => {
                journal.count_unwritten(events);
                unreported += events;
                let what = format!(
                    "cannot write the event log {} ({events} events not written, {} owed a gap record): {error}",
                    path.display(),
                    writer.owed,
                );
                let due = reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY);
                if due && (!failing || unreported > 0) {
                    tracing::error!(
                        "cannot write the event log {} ({unreported} events not written since the last report, {} owed a gap record): {error}",
                        path.display(),
                        writer.owed,
                    );
                    (unreported, reported) = (0, Some(std::time::Instant::now()));
                } else {
                    tracing::debug!("{what}");
                }
                if !failing {
                    failing = true;
                    trouble.fail(crate::trouble::Part::Eventlog, &what);
                }
                if stopping && !news {
                    // The last try of a shutdown: what is owed stays
                    // counted in /metrics.
                    if unreported > 0 {
                        tracing::error!(
                            "the event log {} was not written again before the stop: {unreported} events were not written since the last report",
                            path.display()
                        );
                    }
                    return;
                }
            }
        }
    }
}

/// How often, at most, a failing event log logs an error (each says how
/// many events were not written since the one before); its recovery and
/// the stop say how many since the last, however soon.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a gap record owed for a failed write is tried again while no
/// events come.
const RETRY_OWED: std::time::Duration = std::time::Duration::from_secs(1);

/// Where the writer appends: the event log's file, or a stand-in in tests.
trait LogFile {
    /// Writes some of `buf`, as write(2) does.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
    /// Removes the last `bytes` bytes: the torn line a failed write left.
    fn trim(&mut self, bytes: u64) -> std::io::Result<()>;
}

impl LogFile for File {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Write::write(self, buf)
    }

    fn trim(&mut self, bytes: u64) -> std::io::Result<()> {
        let len = self.metadata()?.len();
        if len < bytes {
            // Truncated under us (logrotate's copytruncate): nothing of
            // ours to cut.
            return Err(std::io::Error::other("the file shrank"));
        }
        self.set_len(len - bytes)
    }
}

/// Bytes of whole lines gathered before they are written: a batch of up
/// to [`crate::engine::journal::CAPACITY`] events is written in pieces,
/// never held as one buffer.
const PIECE: usize = 256 * 1024;

/// Events the writer took but could not write, and why.
struct Unwritten {
    /// How many (newly lost: not yet in `lovebeat_eventlog_lost_total`).
    events: u64,
    /// What the system said.
    error: std::io::Error,
}

/// What the writer carries from one batch to the next when a write
/// fails: the events it owes a gap record for, and whether a torn line is
/// left in the file.
#[derive(Default)]
struct Writer {
    /// Events lost since the last line that was written, by the writer
    /// or by the journal: the gap record written once writing works again.
    owed: u64,
    /// A failed write left part of a line that could not be cut off: the
    /// next write starts a new line first, so only that line is broken.
    torn: bool,
}

/// Whole lines to be written together, and where each ends.
#[derive(Default)]
struct Piece {
    bytes: Vec<u8>,
    /// For each line: where it ends in `bytes`, how many events it stands
    /// for, and whether they are counted in the journal's lost total
    /// already (a gap record's are; an event's are not).
    lines: Vec<(usize, u64, bool)>,
}

impl Piece {
    fn push(&mut self, line: &str, events: u64, counted: bool) {
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
        self.lines.push((self.bytes.len(), events, counted));
    }
}

impl Writer {
    /// Whether a gap record or a line break is still to be written.
    fn owes(&self) -> bool {
        self.owed > 0 || self.torn
    }

    /// Appends `batch`: first, if earlier writes failed, the gap record
    /// for what they lost; then one line per event; then the gap record
    /// for events the journal counted after them. Lines go out whole, a
    /// piece at a time; when a write fails, a torn line is cut off, and
    /// every event not written in full is owed a gap record and returned.
    fn write(&mut self, f: &mut impl LogFile, batch: &Batch, now: i64) -> Result<(), Unwritten> {
        let mut piece = Piece::default();
        if std::mem::take(&mut self.torn) {
            piece.push("", 0, true);
        }
        let owed = std::mem::take(&mut self.owed);
        if owed > 0 {
            piece.push(&gap_line(now, owed), owed, true);
        }
        for (i, e) in batch.events.iter().enumerate() {
            if let Some(l) = line(e) {
                piece.push(&l, 1, false);
            }
            if piece.bytes.len() >= PIECE {
                if let Err(mut u) = self.write_piece(f, &mut piece) {
                    let rest = (batch.events.len() - i - 1) as u64;
                    u.events += rest;
                    self.owed += rest + batch.lost_after;
                    return Err(u);
                }
            }
        }
        if batch.lost_after > 0 {
            piece.push(&gap_line(now, batch.lost_after), batch.lost_after, true);
        }
        self.write_piece(f, &mut piece)
    }

    /// Writes `piece` and empties it; see [`Writer::write`].
    fn write_piece(&mut self, f: &mut impl LogFile, piece: &mut Piece) -> Result<(), Unwritten> {
        let mut written = 0;
        let error = loop {
            if written == piece.bytes.len() {
                piece.bytes.clear();
                piece.lines.clear();
                return Ok(());
            }
            match f.write(&piece.bytes[written..]) {
                Ok(0) => break std::io::Error::from(std::io::ErrorKind::WriteZero),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        let whole = piece
            .lines
            .iter()
            .map(|l| l.0)
            .take_while(|end| *end <= written)
            .last()
            .unwrap_or(0);
        if written > whole && f.trim((written - whole) as u64).is_err() {
            self.torn = true;
        }
        let mut events = 0;
        for &(end, n, counted) in &piece.lines {
            if end > whole {
                // A line break is owed again; the rest are events.
                self.torn |= n == 0;
                self.owed += n;
                if !counted {
                    events += n;
                }
            }
        }
        Err(Unwritten { events, error })
    }

    /// The file could not be opened: the whole batch is owed.
    fn not_opened(&mut self, batch: &Batch, error: std::io::Error) -> Unwritten {
        let events = batch.events.len() as u64;
        self.owed += events + batch.lost_after;
        Unwritten { events, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk that takes `room` bytes, then fails every write (as a full
    /// disk or a file-size limit does: the write that reaches the limit
    /// is cut short first); optionally one whose file cannot be trimmed.
    struct Disk {
        data: Vec<u8>,
        room: usize,
        trims: bool,
    }

    impl LogFile for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room.saturating_sub(self.data.len()));
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn trim(&mut self, bytes: u64) -> std::io::Result<()> {
            if !self.trims {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.data.truncate(self.data.len() - bytes as usize);
            Ok(())
        }
    }

    /// `n` alarm_removed events of the same length, named `<prefix>.<i>`.
    fn batch(prefix: &str, n: usize) -> Batch {
        let events = (0..n)
            .map(|i| {
                Arc::new(Event {
                    ts: 1,
                    kind: EventKind::AlarmRemoved(crate::engine::AlarmView::standalone(
                        &format!("{prefix}.{i:06}"),
                        State::Ok,
                        0,
                        Vec::new(),
                        0,
                    )),
                })
            })
            .collect();
        Batch {
            events,
            lost_after: 0,
        }
    }

    fn lines(disk: &Disk) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(&disk.data).expect("utf-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "whole lines: {text}"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The length of one line of [`batch`], with its newline.
    fn line_len() -> usize {
        line(&batch("xxxxx", 1).events[0]).expect("a line").len() + 1
    }

    #[test]
    fn a_failed_write_loses_counted_events_leaves_whole_lines_and_is_marked_by_a_gap_record() {
        let len = line_len();
        // Room for two and a half lines: the third is torn by the limit.
        let mut disk = Disk {
            data: Vec::new(),
            room: 2 * len + len / 2,
            trims: true,
        };
        let mut writer = Writer::default();
        let first = batch("first", 10);
        let Err(u) = writer.write(&mut disk, &first, 1) else {
            panic!("the write must fail")
        };
        assert_eq!(u.events, 8, "two of ten lines were written whole");
        assert_eq!(u.error.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(lines(&disk).len(), 2, "the torn third line was cut off");
        assert!(writer.owes());
        // Full to the last byte: nothing more is written, the debt grows.
        disk.room = disk.data.len();
        let second = batch("second", 3);
        let Err(u) = writer.write(&mut disk, &second, 2) else {
            panic!("the write must fail")
        };
        assert_eq!(u.events, 3);
        assert_eq!(lines(&disk).len(), 2);
        // Room again: the gap record comes first, where the events went.
        disk.room = usize::MAX;
        let third = batch("third", 2);
        assert!(writer.write(&mut disk, &third, 3).is_ok());
        assert!(!writer.owes());
        let got = lines(&disk);
        let kinds: Vec<&str> = got.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "alarm_removed",
                "alarm_removed",
                "events_lost",
                "alarm_removed",
                "alarm_removed"
            ]
        );
        assert_eq!(got[2]["events_lost"]["count"], 11);
        assert_eq!(got[2]["ts"], 3);
        assert_eq!(got[1]["alarm_removed"]["name"], "first.000001");
        assert_eq!(got[3]["alarm_removed"]["name"], "third.000000");
    }

    #[test]
    fn a_torn_line_that_cannot_be_cut_off_breaks_only_itself() {
        let len = line_len();
        let mut disk = Disk {
            data: Vec::new(),
            room: len + len / 2,
            trims: false,
        };
        let mut writer = Writer::default();
        let first = batch("first", 4);
        assert_eq!(
            writer.write(&mut disk, &first, 1).err().map(|u| u.events),
            Some(3)
        );
        disk.room = usize::MAX;
        assert!(writer.write(&mut disk, &Batch::default(), 2).is_ok());
        let text = String::from_utf8(disk.data.clone()).expect("utf-8");
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 3, "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(got[0]).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(got[1]).is_err());
        assert_eq!(
            got[2],
            gap_line(2, 3),
            "the gap record starts a line of its own"
        );
    }

    #[test]
    fn a_batch_larger_than_a_piece_is_written_in_whole_lines_and_the_rest_is_owed() {
        let len = line_len();
        let n = 3 * PIECE / len;
        let mut disk = Disk {
            data: Vec::new(),
            room: PIECE + PIECE / 2,
            trims: true,
        };
        let mut writer = Writer::default();
        let big = batch("big", n);
        let written_before = |disk: &Disk| lines(disk).len() as u64;
        let u = writer.write(&mut disk, &big, 1).expect_err("fails");
        let written = written_before(&disk);
        assert!(written > 0 && written < n as u64);
        assert_eq!(u.events + written, n as u64, "every event written or lost");
        assert_eq!(writer.owed, u.events);
    }
}
