//! The incidents of alarms (README, "History"): an alarm entering ERROR
//! opens incident `incident_nbr`, leaving it closes that incident. Rows are
//! written by the history writer from the alarm changes it already takes
//! from the journal. A close finds its incident by number, so an incident
//! open when lovebeat stops stays open until its close arrives after the
//! restart (the restored alarm keeps its number).

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::query::{Range, MAX_LIMIT};
use super::record::Kind;
use crate::engine::{AlarmView, State};

/// Bytes of the first failed service's name kept at most: names are at
/// most 255 bytes today, but a 1.x database may hold longer ones.
pub const FIRST_FAILED_MAX: usize = 255;

/// What an alarm change does to its incidents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// Into ERROR: incident `number` opens with `failed` members failed,
    /// `first` the one whose failure opened it.
    Open {
        /// The incident number.
        number: i64,
        /// Members in ERROR at the open.
        failed: i64,
        /// The member that opened it, bounded to [`FIRST_FAILED_MAX`].
        first: Option<String>,
    },
    /// Out of ERROR: incident `number` closes.
    Close {
        /// The incident number.
        number: i64,
    },
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What an alarm's move from `previous` to its state now does to its
/// incidents, if anything.
pub fn edge(alarm: &AlarmView, previous: State) -> Option<Edge> {
    let number = i64::try_from(alarm.incident_nbr).ok()?;
    if number == 0 {
        return None;
    }
    match (previous == State::Error, alarm.state == State::Error) {
        (false, true) => {
            // The member whose failure opened it (the view's cause), else
            // the first failed one by name (a restored alarm's).
            let first = alarm
                .cause
                .as_ref()
                .filter(|c| alarm.failed_services.contains(c))
                .or_else(|| alarm.failed_services.first())
                .map(|n| bounded(n, FIRST_FAILED_MAX));
            Some(Edge::Open {
                number,
                failed: i64::try_from(alarm.failed_services.len()).unwrap_or(i64::MAX),
                first,
            })
        }
        (true, false) => Some(Edge::Close { number }),
        _ => None,
    }
}

/// Writes `edge` of the alarm `name_id` at `ts`, inside the writer's
/// transaction. An open that is already there (the same change written
/// twice) keeps the first; a close closes the open incidents of its
/// number, and changes nothing when there is none (it opened before the
/// history was kept).
pub fn write(conn: &Connection, name_id: i64, ts: i64, edge: &Edge) -> rusqlite::Result<()> {
    match edge {
        Edge::Open {
            number,
            failed,
            first,
        } => conn
            .prepare_cached(
                "INSERT OR IGNORE INTO incidents (name_id, number, opened, failed_at_open, first_failed) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![name_id, number, ts, failed, first])?,
        Edge::Close { number } => conn
            .prepare_cached(
                "UPDATE incidents SET closed = ?3 \
                 WHERE name_id = ?1 AND number = ?2 AND closed IS NULL",
            )?
            .execute(params![name_id, number, ts])?,
    };
    Ok(())
}

/// Retention for the incidents of names `[from, to)`: those closed before
/// `cutoff` go with the changes of their time; open ones stay, however
/// old (they are still going on). Returns how many went.
pub fn prune(conn: &Connection, from: i64, to: i64, cutoff: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM incidents WHERE name_id >= ?1 AND name_id < ?2 AND closed < ?3",
    )?
    .execute(params![from, to, cutoff])
}

/// One incident as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentView {
    /// The alarm's incident number.
    pub number: i64,
    /// When it opened (ms).
    pub opened: i64,
    /// When it closed (ms); `null` while open.
    pub closed: Option<i64>,
    /// `closed - opened`; `null` while open.
    pub duration_ms: Option<i64>,
    /// Members in ERROR when it opened.
    pub failed_at_open: i64,
    /// The member whose failure opened it (at most 255 bytes).
    pub first_failed: Option<String>,
}

/// A page of an alarm's incidents.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentPage {
    /// The alarm asked for.
    pub name: String,
    /// When it was deleted (ms), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Its incidents, newest first.
    pub incidents: Vec<IncidentView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of the incidents of alarm `name` that overlap the range (open
/// at some time in `[since, until)`), newest first by opening time, or
/// `None` when the history never knew the alarm. The cursor is the last
/// incident's (opened, number).
pub fn list(conn: &Connection, name: &str, range: Range) -> rusqlite::Result<Option<IncidentPage>> {
    let Some((id, deleted_at)) = super::query::known(conn, Kind::Alarm, name)? else {
        return Ok(None);
    };
    // Incidents of one alarm do not overlap: of those opened before
    // `since`, only the latest can reach into the range. Reading from its
    // opening keeps the scan to the range (one index seek), whatever the
    // alarm's past holds.
    let floor: i64 = conn
        .prepare_cached(
            "SELECT opened FROM incidents WHERE name_id = ?1 AND opened < ?2 \
             ORDER BY opened DESC LIMIT 1",
        )?
        .query_row(params![id, range.since], |r| r.get(0))
        .optional()?
        .unwrap_or(range.since);
    let limit = range.limit.clamp(1, MAX_LIMIT);
    let (bts, bnum) = range.before.unwrap_or((i64::MAX, i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT number, opened, closed, failed_at_open, first_failed FROM incidents \
         WHERE name_id = ?1 AND opened >= ?2 AND opened < ?3 \
         AND (opened >= ?4 OR closed IS NULL OR closed >= ?4) \
         AND (opened, number) < (?5, ?6) \
         ORDER BY opened DESC, number DESC LIMIT ?7",
    )?;
    let mut rows = stmt.query(params![
        id,
        floor,
        range.until,
        range.since,
        bts,
        bnum,
        (limit + 1) as i64
    ])?;
    let (incidents, next_cursor) = super::query::keyset_page(&mut rows, limit, |r| {
        let number: i64 = r.get(0)?;
        let opened: i64 = r.get(1)?;
        let closed: Option<i64> = r.get(2)?;
        let incident = IncidentView {
            number,
            opened,
            closed,
            duration_ms: closed.map(|c| c.saturating_sub(opened)),
            failed_at_open: r.get(3)?,
            first_failed: r.get(4)?,
        };
        Ok(((opened, number), incident))
    })?;
    Ok(Some(IncidentPage {
        name: name.to_string(),
        deleted_at,
        incidents,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Name;

    fn alarm(state: State, nbr: u64, failed: &[&str], cause: Option<&str>) -> AlarmView {
        let failed = failed.iter().map(|f| Name::from(*f)).collect();
        let mut a = AlarmView::standalone("web", state, nbr, failed, 0);
        a.cause = cause.map(Name::from);
        a
    }

    #[test]
    fn entering_error_opens_the_incident_its_cause_opened_and_leaving_closes_it() {
        let open = edge(
            &alarm(State::Error, 3, &["web.a", "web.b"], Some("web.b")),
            State::Ok,
        );
        assert_eq!(
            open,
            Some(Edge::Open {
                number: 3,
                failed: 2,
                first: Some("web.b".into())
            })
        );
        // A cause no longer failed: the first failed by name.
        let open = edge(
            &alarm(State::Error, 1, &["web.a"], Some("web.z")),
            State::New,
        );
        assert!(matches!(open, Some(Edge::Open { first: Some(f), .. }) if f == "web.a"));
        assert_eq!(
            edge(&alarm(State::Ok, 3, &[], None), State::Error),
            Some(Edge::Close { number: 3 })
        );
        assert_eq!(edge(&alarm(State::Ok, 3, &[], None), State::New), None);
        assert_eq!(edge(&alarm(State::Muted, 3, &[], None), State::Ok), None);
    }

    #[test]
    fn a_version_1_file_gets_the_incidents_table() {
        let mut conn = Connection::open_in_memory().expect("memory");
        crate::history::schema::migrate(&mut conn).expect("schema");
        // What a file written by the build before looks like.
        conn.execute_batch(
            "DROP TABLE incidents; ALTER TABLE names DROP COLUMN last_state; \
             DROP TABLE runs; DROP TABLE audit; DROP TABLE config_seen; DROP TABLE daily; \
             ALTER TABLE names DROP COLUMN rolled_until; PRAGMA user_version = 1",
        )
        .expect("v1");
        crate::history::schema::migrate(&mut conn).expect("migrated");
        conn.execute("INSERT INTO names (kind, name) VALUES (1, 'web')", [])
            .expect("name");
        let id = conn.last_insert_rowid();
        let open = Edge::Open {
            number: 7,
            failed: 1,
            first: Some("web.a".into()),
        };
        write(&conn, id, 1000, &open).expect("open");
        write(&conn, id, 1000, &open).expect("the same open again");
        write(&conn, id, 1500, &Edge::Close { number: 7 }).expect("close");
        write(&conn, id, 1600, &Edge::Close { number: 6 }).expect("unknown close");
        let range = Range {
            since: 0,
            until: i64::MAX,
            limit: 10,
            before: None,
        };
        let page = list(&conn, "web", range).expect("list").expect("known");
        assert_eq!(
            page.incidents,
            vec![IncidentView {
                number: 7,
                opened: 1000,
                closed: Some(1500),
                duration_ms: Some(500),
                failed_at_open: 1,
                first_failed: Some("web.a".into()),
            }]
        );
        assert!(list(&conn, "nope", range).expect("list").is_none());
        // An alarm that counts from 1 again: a new incident, and the close
        // of number 1 closes only the open one.
        let one = Edge::Open {
            number: 1,
            failed: 1,
            first: None,
        };
        write(&conn, id, 1100, &one).expect("open 1");
        write(&conn, id, 1200, &Edge::Close { number: 1 }).expect("close 1");
        write(&conn, id, 1300, &one).expect("open 1 again");
        write(&conn, id, 1400, &Edge::Close { number: 1 }).expect("close 1 again");
        let page = list(&conn, "web", range).expect("list").expect("known");
        let got: Vec<(i64, i64, Option<i64>)> = page
            .incidents
            .iter()
            .map(|i| (i.number, i.opened, i.closed))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 1300, Some(1400)),
                (1, 1100, Some(1200)),
                (7, 1000, Some(1500))
            ]
        );
        conn.execute("DELETE FROM incidents WHERE number = 1", [])
            .expect("tidy");
        // Retention takes closed incidents only.
        let open = Edge::Open {
            number: 8,
            failed: 1,
            first: None,
        };
        write(&conn, id, 1700, &open).expect("open");
        assert_eq!(prune(&conn, id, id + 1, 1_000_000).expect("prune"), 1);
        let page = list(&conn, "web", range).expect("list").expect("known");
        let left: Vec<i64> = page.incidents.iter().map(|i| i.number).collect();
        assert_eq!(left, vec![8]);
    }

    #[test]
    fn a_long_name_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("abc", 255), "abc");
        let long = "é".repeat(200); // 400 bytes
        let cut = bounded(&long, FIRST_FAILED_MAX);
        assert_eq!(cut.len(), 254);
        assert!(long.starts_with(&cut));
    }
}
