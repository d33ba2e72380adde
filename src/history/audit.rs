//! The audit trail (README, "History"): who changed what, and when,
//! through the API (which the UI and the command line use too), and what
//! the configuration changed at a start. Who is the key's list and
//! position in the configuration (`write_keys[1]`), never the key; `none`
//! where no key was needed; `config` for the configuration.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::query::{Range, MAX_LIMIT};

/// Bytes of a target or a detail kept at most.
const TEXT_MAX: usize = 512;

/// One change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When (ms).
    pub ts: i64,
    /// Who: `write_keys[0]`, `none`, `config`.
    pub who: String,
    /// What: `service.create`, `service.mute`, `alarm.add`, ...
    pub action: &'static str,
    /// The name of the service, alarm or alert it changed.
    pub target: String,
    /// What was set (`timeout=30000`), if anything.
    pub detail: Option<String>,
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Writes `entries` in the writer's transaction.
pub fn write(conn: &Connection, entries: &[Entry]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit (ts, who, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in entries {
        stmt.execute(params![
            e.ts,
            bounded(&e.who, TEXT_MAX),
            e.action,
            bounded(&e.target, TEXT_MAX),
            e.detail.as_deref().map(|d| bounded(d, TEXT_MAX))
        ])?;
    }
    Ok(())
}

/// Retention: the audit rows before `cutoff`, at most `step` of them per
/// call so the writer is never held long. Returns how many went.
pub fn prune(conn: &Connection, cutoff: i64, step: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
    )?
    .execute(params![cutoff, step])
}

/// One configured item as a start sees it: its kind (`alarm`, `alert`),
/// name and a fingerprint of its settings (a digest: no secret is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigItem {
    /// `alarm` or `alert`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// A digest of its settings.
    pub digest: String,
}

/// Compares the configured `items` with those the last start saw
/// (`config_seen`), records each one added, removed or changed as an
/// audit row by `config` at `now`, and remembers `items` for the next
/// start. Returns how many rows it wrote.
pub fn config_changes(
    conn: &mut Connection,
    items: &[ConfigItem],
    now: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    {
        let mut stmt = tx.prepare("SELECT kind, name, digest FROM config_seen")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            seen.insert((r.get(0)?, r.get(1)?), r.get(2)?);
        }
    }
    let mut entries = Vec::new();
    let entry = |kind: &str, verb: &str, name: &str| Entry {
        ts: now,
        who: "config".into(),
        action: action(kind, verb),
        target: name.to_string(),
        detail: None,
    };
    for item in items {
        match seen.remove(&(item.kind.to_string(), item.name.clone())) {
            None => entries.push(entry(item.kind, "add", &item.name)),
            Some(d) if d != item.digest => entries.push(entry(item.kind, "change", &item.name)),
            Some(_) => {}
        }
    }
    let mut removed: Vec<_> = seen.into_keys().collect();
    removed.sort();
    for (kind, name) in removed {
        entries.push(entry(&kind, "remove", &name));
    }
    write(&tx, &entries)?;
    tx.execute("DELETE FROM config_seen", [])?;
    {
        let mut stmt = tx.prepare(
            "INSERT OR REPLACE INTO config_seen (kind, name, digest) VALUES (?1, ?2, ?3)",
        )?;
        for item in items {
            stmt.execute(params![item.kind, item.name, item.digest])?;
        }
    }
    tx.commit()?;
    Ok(entries.len())
}

/// The action name of a configuration change (a fixed set, so the rows
/// hold no text that a file could make up).
fn action(kind: &str, verb: &str) -> &'static str {
    match (kind, verb) {
        ("alarm", "add") => "alarm.add",
        ("alarm", "change") => "alarm.change",
        ("alarm", "remove") => "alarm.remove",
        ("alert", "add") => "alert.add",
        ("alert", "change") => "alert.change",
        ("alert", "remove") => "alert.remove",
        _ => "config.change",
    }
}

/// One audit row as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditView {
    /// When (ms).
    pub ts: i64,
    /// Who: `write_keys[0]`, `read_keys[1]`, `none` or `config`.
    pub who: String,
    /// What (README, "History").
    pub action: String,
    /// The service, alarm or alert it changed.
    pub target: String,
    /// What was set, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A page of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Its rows, newest first.
    pub entries: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of the audit rows in the range, newest first.
pub fn list(conn: &Connection, range: Range) -> rusqlite::Result<Page> {
    let limit = range.limit.clamp(1, MAX_LIMIT);
    let (bts, bid) = range.before.unwrap_or((i64::MAX, i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT ts, id, who, action, target, detail FROM audit \
         WHERE ts >= ?1 AND ts < ?2 AND (ts, id) < (?3, ?4) \
         ORDER BY ts DESC, id DESC LIMIT ?5",
    )?;
    let mut rows = stmt.query(params![
        range.since,
        range.until,
        bts,
        bid,
        (limit + 1) as i64
    ])?;
    let (entries, next_cursor) = super::query::keyset_page(&mut rows, limit, |r| {
        let ts: i64 = r.get(0)?;
        let id: i64 = r.get(1)?;
        let entry = AuditView {
            ts,
            who: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: r.get(5)?,
        };
        Ok(((ts, id), entry))
    })?;
    Ok(Page {
        entries,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &'static str, name: &str, digest: &str) -> ConfigItem {
        ConfigItem {
            kind,
            name: name.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn a_start_records_what_the_configuration_added_changed_and_removed() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("schema");
        let first = [item("alarm", "web", "1"), item("alert", "ops", "a")];
        assert_eq!(config_changes(&mut conn, &first, 10).expect("first"), 2);
        assert_eq!(config_changes(&mut conn, &first, 20).expect("same"), 0);
        let second = [item("alarm", "web", "2"), item("alarm", "db", "1")];
        assert_eq!(config_changes(&mut conn, &second, 30).expect("second"), 3);
        let range = Range {
            since: 0,
            until: i64::MAX,
            limit: 100,
            before: None,
        };
        let got: Vec<(i64, String, String, String)> = list(&conn, range)
            .expect("list")
            .entries
            .into_iter()
            .map(|e| (e.ts, e.who, e.action, e.target))
            .collect();
        let want = [
            (30, "alert.remove", "ops"),
            (30, "alarm.add", "db"),
            (30, "alarm.change", "web"),
            (10, "alert.add", "ops"),
            (10, "alarm.add", "web"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(t, a, n)| (*t, "config".to_string(), a.to_string(), n.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
