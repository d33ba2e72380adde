//! Maintenance windows in the history store (schema version 4): the
//! windows made through the API live here only, and survive restarts; the
//! configuration's are copied here at each start, so that uptime finds
//! every window, past ones included, in one table. A window is a row of
//! its own beside the changes: it changes no state.

use rusqlite::{params, Connection};

use super::record::Kind;
use crate::maintenance::{Source, Window, WindowSpec};

/// Rows one uptime query reads at most: windows are bounded while they
/// live (`maintenance::MAX_WINDOWS`), deleted ones only by retention.
const MAX_ROWS: i64 = 10_000;
/// Occurrences of recurring windows one uptime query computes at most,
/// all windows together (the hourly openings of five windows over a year).
pub const MAX_OCCURRENCES: usize = 50_000;

fn source_code(s: Source) -> i64 {
    match s {
        Source::Config => 0,
        Source::Api => 1,
    }
}

fn source_of(code: i64) -> Source {
    if code == 0 {
        Source::Config
    } else {
        Source::Api
    }
}

fn spec_json(spec: &WindowSpec) -> String {
    // A spec is plain strings and lists: encoding it cannot fail.
    serde_json::to_string(spec).unwrap_or_default()
}

/// One row, compiled; `None` for a row this build cannot read (written by
/// another, or a schedule that no longer fires): it is left out.
fn window(
    spec: &str,
    source: i64,
    created_by: String,
    created_at: i64,
    deleted_at: Option<i64>,
) -> Option<Window> {
    let spec: WindowSpec = serde_json::from_str(spec).ok()?;
    let mut w = Window::from_store(spec, source_of(source), created_by, created_at).ok()?;
    w.deleted_at = deleted_at;
    Some(w)
}

/// Keeps a window: one made through the API, or a configuration's new
/// or changed one.
pub fn insert(conn: &Connection, w: &Window) -> rusqlite::Result<()> {
    let (first, last) = w.span();
    conn.prepare_cached(
        "INSERT INTO maintenance (name, source, spec, created_by, created_at, first_ms, last_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        w.name(),
        source_code(w.source),
        spec_json(&w.spec),
        w.created_by,
        w.created_at,
        first,
        last
    ])?;
    Ok(())
}

/// Ends the live API window `w` at `now`: its past stays maintenance. A
/// window that covered no time yet is removed whole.
pub fn delete(conn: &Connection, w: &Window, now: i64) -> rusqlite::Result<()> {
    if w.intervals(i64::MIN / 2, now).is_empty() {
        conn.prepare_cached(
            "DELETE FROM maintenance WHERE name = ?1 AND source = 1 AND deleted_at IS NULL",
        )?
        .execute(params![w.name()])?;
    } else {
        conn.prepare_cached(
            "UPDATE maintenance SET deleted_at = ?2 \
             WHERE name = ?1 AND source = 1 AND deleted_at IS NULL",
        )?
        .execute(params![w.name(), now])?;
    }
    Ok(())
}

/// At start: copies the configuration's windows (`config`) into the
/// table, ending the rows of windows that left it or changed (an unchanged
/// window keeps its row, and so when it was made); prunes rows that ended
/// before `now - retention_ms` (0: kept for ever); and returns every live
/// window, the configuration's first, for the registry.
pub fn load(
    conn: &mut Connection,
    config: &[WindowSpec],
    now: i64,
    retention_ms: u64,
) -> rusqlite::Result<Vec<Window>> {
    let tx = conn.transaction()?;
    let live: Vec<(i64, String, String, i64)> = tx
        .prepare("SELECT id, name, spec, created_at FROM maintenance WHERE source = 0 AND deleted_at IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out: Vec<Window> = Vec::with_capacity(config.len());
    for spec in config {
        let json = spec_json(spec);
        let by = crate::maintenance::BY_CONFIG.to_string();
        let kept = live
            .iter()
            .find(|(_, name, s, _)| *name == spec.name && *s == json);
        let w = match kept {
            Some(&(_, _, _, at)) => Window::from_store(spec.clone(), Source::Config, by, at),
            None => Window::new(spec.clone(), Source::Config, by, now),
        };
        // The configuration was checked at start; a window it no longer
        // makes is left out rather than stopping lovebeat here.
        let Ok(w) = w else { continue };
        if kept.is_none() {
            insert(&tx, &w)?;
        }
        out.push(w);
    }
    for (id, name, s, _) in &live {
        if !config.iter().any(|c| c.name == *name && spec_json(c) == *s) {
            tx.execute(
                "UPDATE maintenance SET deleted_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
    }
    if retention_ms > 0 {
        let cutoff = now.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
        tx.execute(
            "DELETE FROM maintenance WHERE deleted_at IS NOT NULL AND deleted_at < ?1",
            params![cutoff],
        )?;
    }
    tx.commit()?;
    let api: Vec<(String, String, i64)> = conn
        .prepare(
            "SELECT spec, created_by, created_at FROM maintenance \
             WHERE source = 1 AND deleted_at IS NULL ORDER BY id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (spec, by, at) in api {
        if out.len() >= crate::maintenance::MAX_WINDOWS {
            break;
        }
        match window(&spec, 1, by, at, None) {
            Some(w) if !out.iter().any(|o| o.name() == w.name()) => out.push(w),
            Some(w) => tracing::warn!(
                "maintenance window {} made through the API is shadowed by the configuration's of that name",
                w.name()
            ),
            None => tracing::warn!("a maintenance window of the history store cannot be read: left out"),
        }
    }
    Ok(out)
}

/// The times within `[lo, hi)` that windows covering `name` (by its kind:
/// an alarm by `alarms`, a service by `services`) covered, sorted and
/// merged: what uptime counts as maintenance.
pub fn intervals(
    conn: &Connection,
    kind: Kind,
    name: &str,
    lo: i64,
    hi: i64,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT spec, source, created_by, created_at, deleted_at FROM maintenance \
         WHERE (deleted_at IS NULL OR deleted_at > ?1) AND first_ms < ?2 \
           AND (last_ms IS NULL OR last_ms > ?1) \
         ORDER BY id LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![lo, hi, MAX_ROWS])?;
    let mut spans = Vec::new();
    let mut budget = MAX_OCCURRENCES;
    while let Some(r) = rows.next()? {
        let Some(w) = window(
            &r.get::<_, String>(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ) else {
            continue;
        };
        let covers = match kind {
            Kind::Alarm => w.covers_alarm(name),
            Kind::Service => w.covers_service(name),
        };
        if covers {
            spans.extend(w.intervals_within(lo, hi, &mut budget));
        }
    }
    Ok(crate::maintenance::merge(spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().expect("sqlite");
        super::super::schema::migrate(&mut c).expect("schema");
        c
    }

    fn once(name: &str, start: &str, end: &str) -> WindowSpec {
        WindowSpec {
            name: name.into(),
            alarms: vec!["db".into()],
            services: vec!["db.*".into()],
            start: Some(start.into()),
            end: Some(end.into()),
            ..WindowSpec::default()
        }
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_configuration_window_keeps_its_row_until_it_changes_or_leaves_and_its_past_stays() {
        let mut c = conn();
        // 1970-01-01T01:00 to 03:00.
        let a = once("a", "1970-01-01T01:00:00Z", "1970-01-01T03:00:00Z");
        let w = load(&mut c, std::slice::from_ref(&a), 10, 0).expect("load");
        assert_eq!((w.len(), w[0].created_at), (1, 10));
        // Unchanged at the next start: the same row, made at 10.
        let w = load(&mut c, std::slice::from_ref(&a), 20, 0).expect("load");
        assert_eq!(w[0].created_at, 10);
        // Changed (ends at 02:00 now): the old row ends at the start.
        let b = once("a", "1970-01-01T01:00:00Z", "1970-01-01T02:00:00Z");
        let w = load(&mut c, std::slice::from_ref(&b), 90 * 60_000, 0).expect("load");
        assert_eq!(w[0].created_at, 90 * 60_000);
        let spans = intervals(&c, Kind::Alarm, "db", 0, 5 * H).expect("read");
        // The old row covered 01:00 to 01:30 (its end), the new 01:00 to 02:00.
        assert_eq!(spans, vec![(H, 2 * H)]);
        assert!(intervals(&c, Kind::Alarm, "web", 0, 5 * H)
            .expect("read")
            .is_empty());
        assert_eq!(
            intervals(&c, Kind::Service, "db.main", 0, 5 * H).expect("read"),
            vec![(H, 2 * H)]
        );
        // Gone from the configuration: ended, its past kept.
        let w = load(&mut c, &[], 10 * H, 0).expect("load");
        assert!(w.is_empty());
        assert_eq!(
            intervals(&c, Kind::Alarm, "db", 0, 5 * H).expect("read"),
            vec![(H, 2 * H)]
        );
        // Retention prunes what ended before it.
        load(&mut c, &[], 100 * H, 50 * H as u64).expect("load");
        assert!(intervals(&c, Kind::Alarm, "db", 0, 5 * H)
            .expect("read")
            .is_empty());
    }

    #[test]
    fn an_api_window_comes_back_and_a_deletion_keeps_what_it_covered() {
        let c = conn();
        let spec = once("api", "1970-01-01T01:00:00Z", "1970-01-01T03:00:00Z");
        let w = Window::new(spec, Source::Api, "write_keys[0]".into(), 0).expect("window");
        insert(&c, &w).expect("insert");
        let mut c = c;
        let back = load(&mut c, &[], 0, 0).expect("load");
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].name(), back[0].created_by.as_str()),
            ("api", "write_keys[0]")
        );
        delete(&c, &w, 2 * H).expect("delete");
        assert!(load(&mut c, &[], 2 * H, 0).expect("load").is_empty());
        assert_eq!(
            intervals(&c, Kind::Alarm, "db", 0, 5 * H).expect("read"),
            vec![(H, 2 * H)]
        );
        // A window deleted before it began leaves nothing.
        let later = once("later", "1970-01-01T04:00:00Z", "1970-01-01T05:00:00Z");
        let w = Window::new(later, Source::Api, "none".into(), 0).expect("window");
        insert(&c, &w).expect("insert");
        delete(&c, &w, 3 * H).expect("delete");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM maintenance", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }
}
