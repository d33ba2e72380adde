//! Uptime that tells the truth (README, "History"): time-weighted from a
//! name's state changes, never counted from beats, exact to the
//! millisecond. Every millisecond of a window is exactly one of up (OK),
//! down (ERROR), muted, maintenance or unknown (before the name existed,
//! after it was deleted, while it was new, after now, or while lovebeat
//! itself was down, which its `lifecycle` rows say).
//!
//! The arithmetic is a pure fold ([`Fold`]) over the changes in time order
//! and lovebeat's own down intervals, feeding any number of windows at
//! once; the query streams the rows into it, so memory stays bounded by
//! the windows however many changes a name has.

use chrono::{NaiveDate, TimeZone};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::record::{self, Kind};
use crate::engine::State;

/// What a millisecond counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// OK.
    Up,
    /// ERROR.
    Down,
    /// Muted or snoozed.
    Muted,
    /// Not known: before creation, after deletion, new, or lovebeat down.
    Unknown,
}

/// The class of a stored `to_state`.
pub fn class_of(to_state: i64) -> Class {
    match record::state_from_code(to_state) {
        Some(State::Ok) => Class::Up,
        Some(State::Error) => Class::Down,
        Some(State::Muted) => Class::Muted,
        _ => Class::Unknown,
    }
}

/// The figures of one window, as the API shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// The window's start (ms), included.
    pub since: i64,
    /// The window's end (ms), excluded.
    pub until: i64,
    /// Milliseconds OK.
    pub up_ms: i64,
    /// Milliseconds in ERROR.
    pub down_ms: i64,
    /// Milliseconds muted (or snoozed).
    pub muted_ms: i64,
    /// Milliseconds in a maintenance window (none yet: kept so the field
    /// is there when maintenance windows come).
    pub maintenance_ms: i64,
    /// Milliseconds not known (see the module's comment).
    pub unknown_ms: i64,
    /// `up / (up + down)`: muted, maintenance and unknown time left out of
    /// both sides; `null` when nothing was up or down.
    pub uptime: Option<f64>,
    /// `up / window length`, beside it.
    pub uptime_raw: Option<f64>,
    /// Transitions into ERROR within the window.
    pub incidents: u64,
    /// ERROR periods that ended within the window.
    pub recoveries: u64,
    /// The mean length of those periods (rounded to the ms); `null` when
    /// none ended.
    pub mttr_ms: Option<i64>,
    /// The longest unbroken time in ERROR within the window.
    pub longest_down_ms: i64,
    #[serde(skip)]
    recovery_total: i128,
    #[serde(skip)]
    run_end: i64,
    #[serde(skip)]
    run_len: i64,
}

impl Figures {
    fn new(since: i64, until: i64) -> Figures {
        Figures {
            since,
            until,
            run_end: i64::MIN,
            ..Figures::default()
        }
    }

    fn add(&mut self, start: i64, end: i64, class: Class) {
        let (a, b) = (start.max(self.since), end.min(self.until));
        if a >= b {
            return;
        }
        let len = b - a;
        match class {
            Class::Up => self.up_ms += len,
            Class::Muted => self.muted_ms += len,
            Class::Unknown => self.unknown_ms += len,
            Class::Down => {
                self.down_ms += len;
                self.run_len = if a == self.run_end {
                    self.run_len + len
                } else {
                    len
                };
                self.run_end = b;
                self.longest_down_ms = self.longest_down_ms.max(self.run_len);
            }
        }
    }

    fn contains(&self, t: i64) -> bool {
        self.since <= t && t < self.until
    }

    fn finish(&mut self) {
        let known = self.up_ms + self.down_ms;
        self.uptime = (known > 0).then(|| self.up_ms as f64 / known as f64);
        let len = self.until.saturating_sub(self.since);
        self.uptime_raw = (len > 0).then(|| self.up_ms as f64 / len as f64);
        self.mttr_ms = (self.recoveries > 0).then(|| {
            let n = i128::from(self.recoveries);
            ((self.recovery_total + n / 2) / n) as i64
        });
    }
}

/// Lovebeat's own down intervals from its `lifecycle` rows (oldest run
/// first: `(started, last_seen, stopped)`), as sorted, disjoint
/// `[from, to)` pairs: between a run's end (its clean stop, or its last
/// sign of life) and the next run's start; the last run is alive until
/// `now` unless it stopped; and everything from `now` on is not known yet.
pub fn downtime(runs: &[(i64, i64, Option<i64>)], now: i64) -> Vec<(i64, i64)> {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|r| r.0);
    let mut gaps: Vec<(i64, i64)> = Vec::with_capacity(sorted.len() + 1);
    for (i, &(_, last_seen, stopped)) in sorted.iter().enumerate() {
        let end = stopped.unwrap_or(last_seen);
        match sorted.get(i + 1) {
            Some(next) => gaps.push((end, next.0)),
            None if stopped.is_some() => gaps.push((end, now)),
            None => {}
        }
    }
    merge(gaps, now)
}

/// `gaps` and everything from `now` on, sorted and merged.
fn merge(mut gaps: Vec<(i64, i64)>, now: i64) -> Vec<(i64, i64)> {
    gaps.push((now, i64::MAX));
    gaps.retain(|g| g.0 < g.1);
    gaps.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(gaps.len());
    for (a, b) in gaps {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// [`downtime`] computed by SQLite, keeping only the gaps that touch
/// `[lo, hi)`: the `lifecycle` table is never pruned, and a crash loop
/// may have made many runs.
fn downtime_in(conn: &Connection, lo: i64, hi: i64, now: i64) -> rusqlite::Result<Vec<(i64, i64)>> {
    let gaps = conn
        .prepare_cached(
            "SELECT a, COALESCE(b, ?3) FROM ( \
               SELECT COALESCE(stopped, last_seen) AS a, stopped, \
                      LEAD(started) OVER (ORDER BY started, id) AS b \
               FROM lifecycle) \
             WHERE (b IS NOT NULL OR stopped IS NOT NULL) \
               AND a < ?2 AND COALESCE(b, ?3) > ?1",
        )?
        .query_map(params![lo, hi, now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
    Ok(merge(gaps, now))
}

/// The fold: feed it the changes in time order (`(ts, to_state)`), then
/// [`Fold::finish`] it. Windows must be sorted by `since`, with `until`
/// never decreasing (rolling windows ending now, or consecutive days).
pub struct Fold<'a> {
    windows: Vec<Figures>,
    down: &'a [(i64, i64)],
    /// The first down interval that may still matter.
    down_at: usize,
    /// The first window that may still matter.
    first: usize,
    /// Where the emitted time ends, and the class from there on.
    at: i64,
    class: Class,
    /// When the current ERROR period began, if in one.
    error_since: Option<i64>,
    hi: i64,
}

impl<'a> Fold<'a> {
    /// A fold over `windows` (`(since, until)` pairs, sorted as said),
    /// with lovebeat's down intervals from [`downtime`].
    pub fn new(windows: &[(i64, i64)], down: &'a [(i64, i64)]) -> Fold<'a> {
        let lo = windows.iter().map(|w| w.0).min().unwrap_or(0);
        let hi = windows.iter().map(|w| w.1).max().unwrap_or(0);
        Fold {
            windows: windows.iter().map(|&(a, b)| Figures::new(a, b)).collect(),
            down,
            down_at: 0,
            first: 0,
            at: lo,
            class: Class::Unknown,
            error_since: None,
            hi,
        }
    }

    /// Where the windows begin: changes before it only set the state.
    pub fn lo(&self) -> i64 {
        self.windows.iter().map(|w| w.since).min().unwrap_or(0)
    }

    /// Where the windows end: changes from it on matter not.
    pub fn hi(&self) -> i64 {
        self.hi
    }

    /// One change, in time order.
    pub fn change(&mut self, ts: i64, to_state: i64) {
        let ts = ts.min(self.hi);
        if ts > self.at {
            self.emit(self.at, ts, self.class);
            self.at = ts;
        }
        let class = class_of(to_state);
        match (self.error_since, class == Class::Down) {
            (None, true) => {
                self.error_since = Some(ts);
                self.each_containing(ts, |w| w.incidents += 1);
            }
            (Some(from), false) => {
                self.error_since = None;
                self.each_containing(ts, |w| {
                    w.recoveries += 1;
                    w.recovery_total += i128::from(ts) - i128::from(from);
                });
            }
            _ => {}
        }
        self.class = class;
    }

    /// The figures, in the windows' order.
    pub fn finish(mut self) -> Vec<Figures> {
        if self.hi > self.at {
            self.emit(self.at, self.hi, self.class);
            self.at = self.hi;
        }
        for w in &mut self.windows {
            w.finish();
        }
        self.windows
    }

    fn each_containing(&mut self, t: i64, mut f: impl FnMut(&mut Figures)) {
        let from = self.windows.partition_point(|w| w.until <= t);
        for w in self.windows.iter_mut().skip(from) {
            if w.since > t {
                break;
            }
            if w.contains(t) {
                f(w);
            }
        }
    }

    /// `[a, b)` in `class`, split where lovebeat was down.
    fn emit(&mut self, mut a: i64, b: i64, class: Class) {
        while a < b {
            while self.down.get(self.down_at).is_some_and(|d| d.1 <= a) {
                self.down_at += 1;
            }
            let (end, c) = match self.down.get(self.down_at) {
                Some(&(ds, de)) if ds <= a => (de.min(b), Class::Unknown),
                Some(&(ds, _)) => (ds.min(b), class),
                None => (b, class),
            };
            self.segment(a, end, c);
            a = end;
        }
    }

    fn segment(&mut self, a: i64, b: i64, class: Class) {
        while self.windows.get(self.first).is_some_and(|w| w.until <= a) {
            self.first += 1;
        }
        for w in self.windows.iter_mut().skip(self.first) {
            if w.since >= b {
                break;
            }
            w.add(a, b, class);
        }
    }
}

/// A name's figures, or `None` when the history never knew it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The name asked for.
    pub name: String,
    /// When it was deleted (ms), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// The figures of each window asked for.
    pub windows: Vec<Figures>,
}

/// Computes `windows` (sorted as [`Fold::new`] says) for `name` with one
/// range read of its changes (plus the two rows that give the state and
/// the ERROR period in force at the first window's start) and the
/// `lifecycle` rows.
pub fn compute(
    conn: &Connection,
    kind: Kind,
    name: &str,
    windows: &[(i64, i64)],
    now: i64,
) -> rusqlite::Result<Option<Report>> {
    let Some((id, deleted_at)) = conn
        .prepare_cached("SELECT id, deleted_at FROM names WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind as u8, name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let lo = windows.iter().map(|w| w.0).min().unwrap_or(0);
    let hi = windows.iter().map(|w| w.1).max().unwrap_or(0);
    let down = downtime_in(conn, lo, hi, now)?;
    let mut fold = Fold::new(windows, &down);
    // The state in force at `lo`, and when its ERROR period began.
    let before: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT ts, to_state FROM changes WHERE name_id = ?1 AND ts < ?2 \
             ORDER BY ts DESC, seq DESC LIMIT 1",
        )?
        .query_row(params![id, lo], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((ts, to)) = before {
        let error = State::Error as i64;
        let start = if to == error {
            // The first change after the last one out of ERROR: (ts, seq)
            // order, so changes of one millisecond keep their order.
            let last_other: (i64, i64) = conn
                .prepare_cached(
                    "SELECT ts, seq FROM changes WHERE name_id = ?1 AND ts < ?2 AND to_state != ?3 \
                     ORDER BY ts DESC, seq DESC LIMIT 1",
                )?
                .query_row(params![id, lo, error], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((i64::MIN, i64::MIN));
            conn.prepare_cached(
                "SELECT ts FROM changes WHERE name_id = ?1 AND ts < ?2 AND (ts, seq) > (?3, ?4) \
                 ORDER BY ts, seq LIMIT 1",
            )?
            .query_row(params![id, lo, last_other.0, last_other.1], |r| r.get(0))
            .optional()?
            .unwrap_or(ts)
        } else {
            ts
        };
        fold.change(start, to);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT ts, to_state FROM changes WHERE name_id = ?1 AND ts >= ?2 AND ts < ?3 \
         ORDER BY ts, seq",
    )?;
    let mut rows = stmt.query(params![id, lo, hi])?;
    while let Some(r) = rows.next()? {
        fold.change(r.get(0)?, r.get(1)?);
    }
    Ok(Some(Report {
        name: name.to_string(),
        deleted_at,
        windows: fold.finish(),
    }))
}

/// Days a `daily` answer covers at most.
pub const MAX_DAYS: usize = 400;

/// Why a day range cannot be split.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DaysError {
    /// More than [`MAX_DAYS`] days.
    #[error("the range covers more than {MAX_DAYS} days")]
    TooMany,
    /// `since` is not before `until`, or out of the calendar's range.
    #[error("since must be before until, both within the calendar")]
    Empty,
}

/// The first instant of `date` in `tz` (midnight, or the first time that
/// exists where a DST jump skips midnight).
pub fn day_start<Z: TimeZone>(tz: &Z, date: NaiveDate) -> Option<i64> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    (0..=24 * 4).find_map(|q| {
        tz.from_local_datetime(&(midnight + chrono::Duration::minutes(15 * q)))
            .earliest()
            .map(|t| t.timestamp_millis())
    })
}

/// `[since, until)` cut at the days of `tz`: `(date, since, until)` per
/// calendar day (23 or 25 hours long on DST days), the first and last
/// clipped to the range.
pub fn days<Z: TimeZone>(
    tz: &Z,
    since: i64,
    until: i64,
) -> Result<Vec<(NaiveDate, i64, i64)>, DaysError> {
    if since >= until {
        return Err(DaysError::Empty);
    }
    let local = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.with_timezone(tz).date_naive())
            .ok_or(DaysError::Empty)
    };
    let mut date = local(since)?;
    let mut out = Vec::new();
    let mut at = since;
    while at < until {
        if out.len() == MAX_DAYS {
            return Err(DaysError::TooMany);
        }
        let next_date = date.succ_opt().ok_or(DaysError::Empty)?;
        let next = day_start(tz, next_date).ok_or(DaysError::Empty)?;
        let end = next.min(until);
        if end > at {
            out.push((date, at, end));
        }
        at = at.max(end);
        date = next_date;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
