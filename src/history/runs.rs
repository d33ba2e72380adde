//! The runs of jobs (README, "History"): each run that ends (a beat after
//! a start, or a fail) is a row with its start, end, exit code, duration
//! and the tail of its output. Rows are written by the history writer from
//! the `JobRun` events only its feed gets (`engine/journal.rs`).

use rusqlite::{params, Connection};
use serde::Serialize;

use super::query::{Range, MAX_LIMIT};
use super::record::Kind;
use crate::engine::job::OUTPUT_LIMIT;
use crate::engine::JobRun;

/// The last `max` bytes of `s`, cut on a character boundary: a run's
/// output is bounded however it came (the engine already keeps 10 KiB).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.get(start..).unwrap_or_default()
}

/// Writes the run of `name_id` that ended at `ended`, inside the
/// writer's transaction.
pub fn write(conn: &Connection, name_id: i64, ended: i64, run: &JobRun) -> rusqlite::Result<()> {
    let output = tail(&run.output, OUTPUT_LIMIT);
    conn.prepare_cached(
        "INSERT INTO runs (name_id, started, ended, exit_code, ok, ran_too_long, output) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        name_id,
        run.started,
        ended,
        run.exit_code,
        run.ok,
        run.ran_too_long,
        (!output.is_empty()).then_some(output)
    ])?;
    Ok(())
}

/// Retention for the runs of names `[from, to)`: those that ended before
/// `cutoff`. Returns how many went.
pub fn prune(conn: &Connection, from: i64, to: i64, cutoff: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM runs WHERE name_id >= ?1 AND name_id < ?2 AND ended < ?3")?
        .execute(params![from, to, cutoff])
}

/// One run as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunView {
    /// When it started (ms); `null` for a fail with no start before it.
    pub started: Option<i64>,
    /// When it ended (ms).
    pub ended: i64,
    /// `ended - started` (ms); `null` without a start.
    pub duration_ms: Option<i64>,
    /// 0 for a beat, a fail's code, `null` for a fail without one.
    pub exit_code: Option<i64>,
    /// `ok` (ended by a beat) or `fail`.
    pub result: &'static str,
    /// It went past `max_runtime` before it ended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ran_too_long: bool,
    /// The tail of its output (at most 10 KiB), absent when it had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A page of a service's runs.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The service asked for.
    pub name: String,
    /// When it was deleted (ms), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Its runs, the latest ended first.
    pub runs: Vec<RunView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of `name`'s runs that ended in the range, or `None` when the
/// history never knew the service.
pub fn list(conn: &Connection, name: &str, range: Range) -> rusqlite::Result<Option<Page>> {
    let Some((id, deleted_at)) = super::query::known(conn, Kind::Service, name)? else {
        return Ok(None);
    };
    let limit = range.limit.clamp(1, MAX_LIMIT);
    let (bts, bid) = range.before.unwrap_or((i64::MAX, i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT ended, id, started, exit_code, ok, ran_too_long, output FROM runs \
         WHERE name_id = ?1 AND ended >= ?2 AND ended < ?3 AND (ended, id) < (?4, ?5) \
         ORDER BY ended DESC, id DESC LIMIT ?6",
    )?;
    let mut rows = stmt.query(params![
        id,
        range.since,
        range.until,
        bts,
        bid,
        (limit + 1) as i64
    ])?;
    let (runs, next_cursor) = super::query::keyset_page(&mut rows, limit, |r| {
        let ended: i64 = r.get(0)?;
        let rid: i64 = r.get(1)?;
        let started: Option<i64> = r.get(2)?;
        let run = RunView {
            started,
            ended,
            duration_ms: started.map(|s| ended.saturating_sub(s)),
            exit_code: r.get(3)?,
            result: if r.get::<_, bool>(4)? { "ok" } else { "fail" },
            ran_too_long: r.get(5)?,
            output: r.get(6)?,
        };
        Ok(((ended, rid), run))
    })?;
    Ok(Some(Page {
        name: name.to_string(),
        deleted_at,
        runs,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_to_its_tail_on_a_character_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aéb", 2), "b");
    }
}
