//! The incidents of public status pages (README, "Status pages"): what a
//! visitor reads, kept in the history file (schema 6). An operator makes
//! and updates them through the API; an alarm entry going ERROR opens one
//! titled by the entry's display name, and its recovery resolves it (the
//! history writer does both, in the transaction of the alarm's change, so
//! neither is lost nor made twice across a restart). The alarm's name is
//! kept to find the incident again, and never shown.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// The statuses an incident moves through, as the API takes them.
pub const STATUSES: [&str; 4] = ["investigating", "identified", "monitoring", "resolved"];
/// Characters of an incident's title at most.
pub const MAX_TITLE: usize = 200;
/// Characters of an update's text at most.
pub const MAX_TEXT: usize = 10_000;
/// Characters of a postmortem at most.
pub const MAX_POSTMORTEM: usize = 100_000;
/// Updates one incident holds at most.
pub const MAX_UPDATES: i64 = 200;
/// Incidents one page holds at most; past it, resolved ones beyond the
/// newest are dropped as new ones come (open ones always stay).
pub const MAX_INCIDENTS: i64 = 10_000;
/// Incidents a list answers at most.
pub const MAX_LIST: usize = 100;
/// Open incidents a page shows at most (the newest).
pub const PAGE_OPEN: usize = 20;

/// Which pages show an alarm, and under what display name: alarm name to
/// `(slug, display name)` pairs. The writer opens and resolves their
/// automatic incidents from it.
pub type AutoPages = HashMap<String, Vec<(String, String)>>;

/// One update of a page incident.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PageUpdate {
    /// Its number, unique in the file.
    pub id: i64,
    /// When it was posted (ms).
    pub ts: i64,
    /// One of [`STATUSES`].
    pub status: String,
    /// What it says.
    pub text: String,
}

/// One page incident, with its updates (oldest first).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PageIncident {
    /// Its number, unique in the file.
    pub id: i64,
    /// Its heading.
    pub title: String,
    /// Its latest status.
    pub status: String,
    /// When it opened (ms).
    pub opened: i64,
    /// When it last changed (ms).
    pub updated: i64,
    /// When it was resolved (ms), `null` while not.
    pub resolved: Option<i64>,
    /// What was learnt, when written.
    pub postmortem: Option<String>,
    /// True when an entry's alarm going ERROR opened it.
    pub automatic: bool,
    /// Its updates, oldest first.
    pub updates: Vec<PageUpdate>,
}

/// Why a change to a page incident is refused.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// The incident is not one of the page's.
    #[error("no incident {0} on this page")]
    NotFound(i64),
    /// The incident holds [`MAX_UPDATES`] already.
    #[error("incident {0} holds {MAX_UPDATES} updates already: open a new one")]
    Full(i64),
    /// SQLite refused.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PageIncident> {
    Ok(PageIncident {
        id: r.get(0)?,
        title: r.get(1)?,
        status: r.get(2)?,
        opened: r.get(3)?,
        updated: r.get(4)?,
        resolved: r.get(5)?,
        postmortem: r.get(6)?,
        automatic: r.get::<_, Option<String>>(7)?.is_some(),
        updates: Vec::new(),
    })
}

const COLUMNS: &str = "id, title, status, opened, updated, resolved, postmortem, auto_alarm";

/// Updates a list of incidents (the API's, a page's) shows of each at
/// most, the newest: a list stays within a few megabytes however long
/// its incidents ran. One incident's own answer has them all.
pub const LISTED_UPDATES: i64 = 20;

/// `i` with its newest `limit` updates, oldest first.
fn with_updates(
    conn: &Connection,
    mut i: PageIncident,
    limit: i64,
) -> rusqlite::Result<PageIncident> {
    i.updates = conn
        .prepare_cached(
            "SELECT id, ts, status, text FROM (SELECT * FROM page_updates WHERE incident = ?1 \
             ORDER BY ts DESC, id DESC LIMIT ?2) ORDER BY ts, id",
        )?
        .query_map(params![i.id, limit], |r| {
            Ok(PageUpdate {
                id: r.get(0)?,
                ts: r.get(1)?,
                status: r.get(2)?,
                text: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(i)
}

/// Incident `id` of `page`, with its updates.
pub fn get(conn: &Connection, page: &str, id: i64) -> rusqlite::Result<Option<PageIncident>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM page_incidents WHERE id = ?1 AND page = ?2"
        ))?
        .query_row(params![id, page], incident_row)
        .optional()?;
    found
        .map(|i| with_updates(conn, i, MAX_UPDATES))
        .transpose()
}

/// The newest `limit` incidents of `page` (at most [`MAX_LIST`]), newest
/// first, with their updates.
pub fn list(conn: &Connection, page: &str, limit: usize) -> rusqlite::Result<Vec<PageIncident>> {
    let limit = limit.min(MAX_LIST) as i64;
    let found: Vec<PageIncident> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM page_incidents WHERE page = ?1 ORDER BY opened DESC, id DESC LIMIT ?2"
        ))?
        .query_map(params![page, limit], incident_row)?
        .collect::<rusqlite::Result<_>>()?;
    found
        .into_iter()
        .map(|i| with_updates(conn, i, LISTED_UPDATES))
        .collect()
}

/// What a page shows: its incidents still open (at most [`PAGE_OPEN`]),
/// then the newest `past` resolved ones, each newest first.
pub fn for_page(
    conn: &Connection,
    page: &str,
    past: usize,
) -> rusqlite::Result<(Vec<PageIncident>, Vec<PageIncident>)> {
    let query = |resolved: bool, limit: usize| -> rusqlite::Result<Vec<PageIncident>> {
        let found: Vec<PageIncident> = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM page_incidents WHERE page = ?1 AND (resolved IS NOT NULL) = ?2 \
                 ORDER BY opened DESC, id DESC LIMIT ?3"
            ))?
            .query_map(params![page, resolved, limit as i64], incident_row)?
            .collect::<rusqlite::Result<_>>()?;
        found
            .into_iter()
            .map(|i| with_updates(conn, i, LISTED_UPDATES))
            .collect()
    };
    Ok((query(false, PAGE_OPEN)?, query(true, past.min(MAX_LIST))?))
}

fn add_update(
    conn: &Connection,
    id: i64,
    ts: i64,
    status: &str,
    text: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO page_updates (incident, ts, status, text) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, ts, status, text])?;
    Ok(())
}

/// Keeps `page` within [`MAX_INCIDENTS`]: the oldest resolved incidents
/// beyond it go, with their updates.
fn bound(conn: &Connection, page: &str) -> rusqlite::Result<()> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM page_incidents WHERE page = ?1")?
        .query_row([page], |r| r.get(0))?;
    if n <= MAX_INCIDENTS {
        return Ok(());
    }
    let gone: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM page_incidents WHERE page = ?1 AND resolved IS NOT NULL \
             ORDER BY opened, id LIMIT ?2",
        )?
        .query_map(params![page, n - MAX_INCIDENTS], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in gone {
        conn.prepare_cached("DELETE FROM page_updates WHERE incident = ?1")?
            .execute([id])?;
        conn.prepare_cached("DELETE FROM page_incidents WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(())
}

/// A new incident on `page` from the API, with its first update.
pub fn create(
    conn: &mut Connection,
    page: &str,
    title: &str,
    status: &str,
    text: &str,
    postmortem: Option<&str>,
    ts: i64,
) -> rusqlite::Result<PageIncident> {
    let tx = conn.transaction()?;
    let resolved = (status == "resolved").then_some(ts);
    tx.prepare_cached(
        "INSERT INTO page_incidents (page, title, status, opened, updated, resolved, postmortem) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
    )?
    .execute(params![page, title, status, ts, resolved, postmortem])?;
    let id = tx.last_insert_rowid();
    add_update(&tx, id, ts, status, text)?;
    bound(&tx, page)?;
    let made = get(&tx, page, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.commit()?;
    Ok(made)
}

/// An update to incident `id` of `page`: its status becomes the
/// update's (resolved sets when; another status opens it again), and a
/// postmortem given replaces the one it had.
pub fn update(
    conn: &mut Connection,
    page: &str,
    id: i64,
    status: &str,
    text: &str,
    postmortem: Option<&str>,
    ts: i64,
) -> Result<PageIncident, PagesError> {
    let tx = conn.transaction()?;
    let count: Option<i64> = tx
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM page_updates WHERE incident = i.id) \
             FROM page_incidents i WHERE i.id = ?1 AND i.page = ?2",
        )?
        .query_row(params![id, page], |r| r.get(0))
        .optional()?;
    match count {
        None => return Err(PagesError::NotFound(id)),
        Some(n) if n >= MAX_UPDATES => return Err(PagesError::Full(id)),
        Some(_) => {}
    }
    let resolved = (status == "resolved").then_some(ts);
    // An automatic incident reopened by hand would collide with the next
    // automatic one of its alarm: it becomes the operator's.
    tx.prepare_cached(
        "UPDATE page_incidents SET status = ?2, updated = ?3, \
         resolved = CASE WHEN ?4 IS NULL THEN NULL ELSE COALESCE(resolved, ?4) END, \
         postmortem = COALESCE(?5, postmortem), \
         auto_alarm = CASE WHEN ?4 IS NULL AND resolved IS NOT NULL THEN NULL ELSE auto_alarm END \
         WHERE id = ?1",
    )?
    .execute(params![id, status, ts, resolved, postmortem])?;
    add_update(&tx, id, ts, status, text)?;
    let made = get(&tx, page, id)?.ok_or(PagesError::NotFound(id))?;
    tx.commit()?;
    Ok(made)
}

/// How soon after its resolution an alarm's automatic incident is opened
/// again rather than a new one made: a flapping alarm makes one incident
/// (and one mail per change), not one per flap.
pub const REOPEN_WITHIN_MS: i64 = 15 * 60_000;

/// The automatic incident of `alarm` on `page` that is still open, if any:
/// what both an ERROR and a recovery look for first.
fn open_auto_incident(conn: &Connection, page: &str, alarm: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT id FROM page_incidents WHERE page = ?1 AND auto_alarm = ?2 AND resolved IS NULL",
    )?
    .query_row(params![page, alarm], |r| r.get(0))
    .optional()
}

/// An alarm shown on `page` as `display` went ERROR at `ts`: opens its
/// automatic incident unless one is open already (the same change
/// written again, or an ERROR that outlived a restart), or opens again
/// the one resolved less than [`REOPEN_WITHIN_MS`] ago.
pub fn auto_open(
    conn: &Connection,
    page: &str,
    alarm: &str,
    display: &str,
    ts: i64,
) -> rusqlite::Result<()> {
    let open = open_auto_incident(conn, page, alarm)?;
    if open.is_some() {
        return Ok(());
    }
    let recent: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM page_incidents WHERE page = ?1 AND auto_alarm = ?2 AND resolved >= ?3 \
             AND (SELECT COUNT(*) FROM page_updates WHERE incident = page_incidents.id) < ?4 \
             ORDER BY resolved DESC LIMIT 1",
        )?
        .query_row(
            params![page, alarm, ts - REOPEN_WITHIN_MS, MAX_UPDATES],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = recent {
        conn.prepare_cached(
            "UPDATE page_incidents SET status = 'investigating', updated = ?2, resolved = NULL WHERE id = ?1",
        )?
        .execute(params![id, ts])?;
        return add_update(
            conn,
            id,
            ts,
            "investigating",
            &format!("{display} is down again."),
        );
    }
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO page_incidents (page, title, status, opened, updated, auto_alarm) \
             VALUES (?1, ?2, 'investigating', ?3, ?3, ?4)",
        )?
        .execute(params![page, display, ts, alarm])?;
    if n == 1 {
        let id = conn.last_insert_rowid();
        add_update(
            conn,
            id,
            ts,
            "investigating",
            &format!("{display} is down."),
        )?;
        bound(conn, page)?;
    }
    Ok(())
}

/// An alarm shown on `page` as `display` left ERROR at `ts`: resolves its
/// open automatic incident, if there is one.
pub fn auto_resolve(
    conn: &Connection,
    page: &str,
    alarm: &str,
    display: &str,
    ts: i64,
) -> rusqlite::Result<()> {
    let open = open_auto_incident(conn, page, alarm)?;
    if let Some(id) = open {
        conn.prepare_cached(
            "UPDATE page_incidents SET status = 'resolved', updated = ?2, resolved = ?2 WHERE id = ?1",
        )?
        .execute(params![id, ts])?;
        add_update(conn, id, ts, "resolved", &format!("{display} is up again."))?;
    }
    Ok(())
}

/// At a start: resolves the open automatic incidents whose page no
/// longer shows their alarm, which nothing else would ever resolve.
pub fn resolve_unshown(conn: &Connection, auto: &AutoPages, ts: i64) -> rusqlite::Result<()> {
    let open: Vec<(i64, String, String)> = conn
        .prepare(
            "SELECT id, page, auto_alarm FROM page_incidents \
             WHERE resolved IS NULL AND auto_alarm IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, page, alarm) in open {
        let shown = auto
            .get(&alarm)
            .is_some_and(|pages| pages.iter().any(|(p, _)| *p == page));
        if !shown {
            conn.execute(
                "UPDATE page_incidents SET status = 'resolved', updated = ?2, resolved = ?2 WHERE id = ?1",
                params![id, ts],
            )?;
            add_update(conn, id, ts, "resolved", "No longer shown on this page.")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::schema::migrate(&mut conn).expect("schema");
        conn
    }

    #[test]
    fn an_automatic_incident_opens_once_and_resolves_once() {
        let conn = db();
        auto_open(&conn, "p", "web", "Website", 1000).expect("open");
        auto_open(&conn, "p", "web", "Website", 1500).expect("open again");
        let (open, past) = for_page(&conn, "p", 10).expect("read");
        assert_eq!((open.len(), past.len()), (1, 0));
        assert_eq!(open[0].title, "Website");
        assert!(open[0].automatic);
        auto_resolve(&conn, "p", "web", "Website", 2000).expect("resolve");
        auto_resolve(&conn, "p", "web", "Website", 2500).expect("resolve again");
        let (open, past) = for_page(&conn, "p", 10).expect("read");
        assert_eq!((open.len(), past.len()), (0, 1));
        assert_eq!(past[0].resolved, Some(2000));
        assert_eq!(past[0].updates.len(), 2);
        // Down again soon after: the same incident, opened again.
        auto_open(&conn, "p", "web", "Website", 3000).expect("again");
        let all = list(&conn, "p", 10).expect("list");
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].resolved, all[0].updates.len()), (None, 3));
        assert_eq!(all[0].updates[2].text, "Website is down again.");
        auto_resolve(&conn, "p", "web", "Website", 4000).expect("resolve");
        auto_open(&conn, "p", "web", "Website", 4000 + REOPEN_WITHIN_MS + 1).expect("later");
        assert_eq!(
            list(&conn, "p", 10).expect("list").len(),
            2,
            "a new one later"
        );
    }

    #[test]
    fn a_list_shows_the_newest_updates_and_an_incident_all_of_them() {
        let mut conn = db();
        let i = create(&mut conn, "p", "Long", "investigating", "0", None, 0).expect("made");
        for n in 1..=25 {
            update(&mut conn, "p", i.id, "monitoring", &n.to_string(), None, n).expect("update");
        }
        let listed = &list(&conn, "p", 10).expect("list")[0];
        assert_eq!(listed.updates.len(), LISTED_UPDATES as usize);
        assert_eq!(listed.updates.first().map(|u| u.text.as_str()), Some("6"));
        assert_eq!(listed.updates.last().map(|u| u.text.as_str()), Some("25"));
        assert_eq!(
            get(&conn, "p", i.id)
                .expect("get")
                .expect("found")
                .updates
                .len(),
            26
        );
    }

    #[test]
    fn updates_move_the_status_and_stay_on_their_page() {
        let mut conn = db();
        let i = create(&mut conn, "p", "Slow", "investigating", "Looking", None, 10).expect("made");
        let u =
            update(&mut conn, "p", i.id, "resolved", "Fixed", Some("Disk"), 20).expect("update");
        assert_eq!((u.status.as_str(), u.resolved), ("resolved", Some(20)));
        assert_eq!(u.postmortem.as_deref(), Some("Disk"));
        assert!(matches!(
            update(&mut conn, "other", i.id, "resolved", "x", None, 30),
            Err(PagesError::NotFound(_))
        ));
        let again = update(&mut conn, "p", i.id, "monitoring", "Back", None, 40).expect("reopen");
        assert_eq!(again.resolved, None);
        assert_eq!(again.updates.len(), 3);
    }
}
