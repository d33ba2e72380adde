//! Every state change in a range, for `GET /api/export` (README,
//! "History"), read a page at a time: name by name (in the order the
//! history first saw them), each name's changes oldest first. Each page is
//! a few short queries, each one index seek, so an export of a hundred
//! million changes never holds one query (and the file's snapshot) open
//! against the writer, and a narrow range over a million names reads only
//! what is in it.

use rusqlite::{params, Connection};
use serde::Serialize;

use super::record::{self, Kind, Reason};

/// Rows a page holds at most.
pub const PAGE_ROWS: usize = 1000;
/// Names a page visits at most (most may have nothing in the range).
pub const PAGE_NAMES: usize = 256;

/// Where an export goes on: after this change of this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    name_id: i64,
    ts: i64,
    seq: i64,
}

impl Position {
    /// The start of an export.
    pub fn start() -> Position {
        Position {
            name_id: 0,
            ts: i64::MIN,
            seq: i64::MIN,
        }
    }
}

/// One exported change. `from` and `detail` are `null` when they have no
/// value, so every row has every field.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportRow {
    /// When (ms since the epoch).
    pub ts: i64,
    /// `service` or `alarm`.
    pub kind: &'static str,
    /// Its name, as stored.
    pub name: std::sync::Arc<str>,
    /// The state before; `null` when it appeared.
    pub from: Option<&'static str>,
    /// The state after, or `deleted`.
    pub to: &'static str,
    /// Why (the reasons of `/history`).
    pub reason: &'static str,
    /// A failed job's exit code, or an alarm's incident number.
    pub detail: Option<i64>,
}

fn state_name(code: i64) -> &'static str {
    match record::state_from_code(code) {
        Some(s) => s.as_str(),
        None => "deleted",
    }
}

/// The next page of the changes in `[since, until)` after `after`, and
/// where the one after it starts (`None`: the export is complete).
pub fn page(
    conn: &Connection,
    since: i64,
    until: i64,
    after: Position,
) -> rusqlite::Result<(Vec<ExportRow>, Option<Position>)> {
    let mut names_stmt = conn
        .prepare_cached("SELECT id, kind, name FROM names WHERE id >= ?1 ORDER BY id LIMIT ?2")?;
    let names: Vec<(i64, i64, String)> = names_stmt
        .query_map(params![after.name_id, PAGE_NAMES as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT ts, seq, from_state, to_state, reason, detail FROM changes \
         WHERE name_id = ?1 AND ts >= ?2 AND ts < ?3 AND (ts, seq) > (?4, ?5) \
         ORDER BY ts, seq LIMIT ?6",
    )?;
    let mut rows = Vec::new();
    for (id, kind, name) in &names {
        let (ats, aseq) = if *id == after.name_id {
            (after.ts, after.seq)
        } else {
            (i64::MIN, i64::MIN)
        };
        let kind = if *kind == Kind::Alarm as i64 {
            "alarm"
        } else {
            "service"
        };
        let name: std::sync::Arc<str> = name.as_str().into();
        let room = PAGE_ROWS - rows.len();
        let mut found = stmt.query(params![id, since, until, ats, aseq, room as i64])?;
        let mut last = None;
        let mut n = 0;
        while let Some(r) = found.next()? {
            let ts: i64 = r.get(0)?;
            let seq: i64 = r.get(1)?;
            rows.push(ExportRow {
                ts,
                kind,
                name: name.clone(),
                from: r.get::<_, Option<i64>>(2)?.map(state_name),
                to: state_name(r.get(3)?),
                reason: Reason::from_code(r.get(4)?).as_str(),
                detail: r.get(5)?,
            });
            last = Some((ts, seq));
            n += 1;
        }
        if n == room {
            // The page is full: the next one goes on after this row (and
            // finds out whether this name has more).
            let (ts, seq) = last.unwrap_or((ats, aseq));
            let next = Position {
                name_id: *id,
                ts,
                seq,
            };
            return Ok((rows, Some(next)));
        }
    }
    let next = match names.last() {
        Some((id, _, _)) if names.len() == PAGE_NAMES => Some(Position {
            name_id: id.saturating_add(1),
            ts: i64::MIN,
            seq: i64::MIN,
        }),
        _ => None,
    };
    Ok((rows, next))
}

/// `field` as a CSV field (RFC 4180): quoted, with its quotes doubled,
/// when it holds a comma, a quote, a line break or a leading or trailing
/// space; as it is otherwise.
pub fn csv_field(out: &mut Vec<u8>, field: &str) {
    let quote =
        field.contains([',', '"', '\r', '\n']) || field.starts_with(' ') || field.ends_with(' ');
    if !quote {
        out.extend_from_slice(field.as_bytes());
        return;
    }
    out.push(b'"');
    for part in field.split('"').enumerate() {
        if part.0 > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part.1.as_bytes());
    }
    out.push(b'"');
}

/// The CSV header line.
pub const CSV_HEADER: &[u8] = b"ts,kind,name,from,to,reason,detail\r\n";

/// `row` as a CSV line (CRLF-ended, as RFC 4180 has it); an empty field
/// where the JSON has `null`.
pub fn csv_line(out: &mut Vec<u8>, row: &ExportRow) {
    out.extend_from_slice(row.ts.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(row.kind.as_bytes());
    out.push(b',');
    csv_field(out, &row.name);
    out.push(b',');
    out.extend_from_slice(row.from.unwrap_or("").as_bytes());
    out.push(b',');
    out.extend_from_slice(row.to.as_bytes());
    out.push(b',');
    csv_field(out, row.reason);
    out.push(b',');
    if let Some(d) = row.detail {
        out.extend_from_slice(d.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        let mut out = Vec::new();
        csv_field(&mut out, s);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(field("web.a"), "web.a");
        assert_eq!(field("members failed"), "members failed");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines\r"), "\"two\nlines\r\"");
        assert_eq!(field(" pad"), "\" pad\"");
        assert_eq!(field("\""), "\"\"\"\"");
    }

    #[test]
    fn pages_cover_every_change_once_whatever_their_size() {
        let mut conn = Connection::open_in_memory().expect("memory");
        crate::history::schema::migrate(&mut conn).expect("schema");
        // 600 names, the odd ones with 3 changes, the even ones none in
        // range; one name with 2 500 changes (more than two pages).
        for id in 1..=600i64 {
            conn.execute(
                "INSERT INTO names (id, kind, name) VALUES (?1, ?2, ?3)",
                params![id, id % 2, format!("n{id}")],
            )
            .expect("name");
            let n = match id {
                300 => 2500,
                _ if id % 2 == 1 => 3,
                _ => 0,
            };
            for k in 0..n {
                conn.execute(
                    "INSERT INTO changes VALUES (?1, ?2, ?3, 1, 2, 1, NULL)",
                    params![id, 1000 + k, k],
                )
                .expect("change");
            }
            conn.execute(
                "INSERT INTO changes VALUES (?1, 10, 0, 1, 2, 1, NULL)",
                params![id],
            )
            .expect("out of range");
        }
        let mut all = Vec::new();
        let mut at = Position::start();
        for _ in 0..100 {
            let (rows, next) = page(&conn, 1000, i64::MAX, at).expect("page");
            assert!(rows.len() <= PAGE_ROWS);
            all.extend(rows.into_iter().map(|r| (r.name.to_string(), r.ts)));
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        assert_eq!(all.len(), 300 * 3 + 2500);
        let mut sorted = all.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "no change twice");
        assert_eq!(all.first(), Some(&("n1".to_string(), 1000)));
        assert_eq!(all.last(), Some(&("n599".to_string(), 1002)));
    }
}
