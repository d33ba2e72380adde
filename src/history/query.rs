//! Reading the history: a name's changes in a range, newest first, paged
//! with a keyset cursor (the last row's time and sequence), so a page
//! costs the same however deep it is.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::record::{self, Kind, Reason};

/// Rows a page holds at most.
pub const MAX_LIMIT: usize = 1000;
/// Rows a page holds when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;

/// A range and a page of it, as a request gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// From this time (ms), inclusive.
    pub since: i64,
    /// Before this time (ms).
    pub until: i64,
    /// Rows at most.
    pub limit: usize,
    /// Rows strictly older than this (time, sequence) position.
    pub before: Option<(i64, i64)>,
}

/// One state change as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeView {
    /// When (ms since the epoch).
    pub ts: i64,
    /// The state before, absent when it appeared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'static str>,
    /// The state after, or `deleted`.
    pub to: &'static str,
    /// Why (README, "History").
    pub reason: &'static str,
    /// A failed job's exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// An alarm's incident number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
}

/// A page of a name's changes.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The name asked for.
    pub name: String,
    /// When it was deleted (ms), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Its changes, newest first.
    pub changes: Vec<ChangeView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A name's row (`names.id`) and when it was deleted, or `None` when the
/// history never knew it: the first step of every per-name answer (a
/// deleted name still answers, an unknown one is a 404).
pub fn known(
    conn: &Connection,
    kind: Kind,
    name: &str,
) -> rusqlite::Result<Option<(i64, Option<i64>)>> {
    conn.prepare_cached("SELECT id, deleted_at FROM names WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind as u8, name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()
}

/// One keyset page from `rows`, which were asked newest first with a
/// `LIMIT` of `limit + 1`: at most `limit` items, each made by `item`
/// with its key, and the cursor of the last one when more follow (the
/// extra row says so), `None` on the last page.
pub fn keyset_page<T>(
    rows: &mut rusqlite::Rows<'_>,
    limit: usize,
    mut item: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<((i64, i64), T)>,
) -> rusqlite::Result<(Vec<T>, Option<String>)> {
    let mut items = Vec::with_capacity(limit.min(64));
    let mut last = None;
    while let Some(r) = rows.next()? {
        if items.len() == limit {
            return Ok((items, last.map(|(a, b)| cursor(a, b))));
        }
        let (key, t) = item(r)?;
        items.push(t);
        last = Some(key);
    }
    Ok((items, None))
}

/// The cursor of a position.
pub fn cursor(ts: i64, seq: i64) -> String {
    format!("{ts}.{seq}")
}

/// The position a cursor names, if it is one of ours.
pub fn parse_cursor(s: &str) -> Option<(i64, i64)> {
    let (ts, seq) = s.split_once('.')?;
    let (ts, seq): (i64, i64) = (ts.parse().ok()?, seq.parse().ok()?);
    // Ours are a change's time and sequence: never negative, never 0.
    (ts >= 0 && seq > 0).then_some((ts, seq))
}

fn state_name(code: i64) -> &'static str {
    match record::state_from_code(code) {
        Some(s) => s.as_str(),
        None => "deleted",
    }
}

/// A page of `name`'s changes, or `None` when the history never knew it.
pub fn changes(
    conn: &Connection,
    kind: Kind,
    name: &str,
    range: Range,
) -> rusqlite::Result<Option<Page>> {
    let Some((id, deleted_at)) = known(conn, kind, name)? else {
        return Ok(None);
    };
    let limit = range.limit.clamp(1, MAX_LIMIT);
    let (bts, bseq) = range.before.unwrap_or((i64::MAX, i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT ts, seq, from_state, to_state, reason, detail FROM changes \
         WHERE name_id = ?1 AND ts >= ?2 AND ts < ?3 AND (ts, seq) < (?4, ?5) \
         ORDER BY ts DESC, seq DESC LIMIT ?6",
    )?;
    let mut rows = stmt.query(params![
        id,
        range.since,
        range.until,
        bts,
        bseq,
        (limit + 1) as i64
    ])?;
    let (changes, next_cursor) = keyset_page(&mut rows, limit, |r| {
        let ts: i64 = r.get(0)?;
        let seq: i64 = r.get(1)?;
        let reason = Reason::from_code(r.get(4)?);
        let detail: Option<i64> = r.get(5)?;
        let change = ChangeView {
            ts,
            from: r.get::<_, Option<i64>>(2)?.map(state_name),
            to: state_name(r.get(3)?),
            reason: reason.as_str(),
            exit_code: detail.filter(|_| reason == Reason::Fail),
            incident: detail.filter(|_| kind == Kind::Alarm),
        };
        Ok(((ts, seq), change))
    })?;
    Ok(Some(Page {
        name: name.to_string(),
        deleted_at,
        changes,
        next_cursor,
    }))
}
