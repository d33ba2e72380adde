//! The mail subscribers of public status pages (README, "Status pages"),
//! kept in the history file (schema 6): double opt-in (a row is pending
//! until its token comes back through the mailed link), one token per
//! address and page (a new one at each request to subscribe), bounded per
//! page, and a cursor per page over the incidents' updates so each is
//! mailed once.

use rusqlite::{params, Connection, OptionalExtension};

use super::pages::PageIncident;

/// Subscribers (confirmed or not) a page holds at most.
pub const MAX_SUBSCRIBERS: i64 = 10_000;
/// Subscribers not confirmed yet a page holds at most: a flood of
/// requests fills this, not the page; past it the oldest makes room.
pub const MAX_PENDING: i64 = 1_000;
/// How long an address waits before it is mailed to confirm again.
pub const REMAIL_AFTER_MS: i64 = 10 * 60_000;
/// How long a request to subscribe waits for its confirmation; older
/// pending rows make room for new ones.
pub const PENDING_FOR_MS: i64 = 7 * 86_400_000;

/// What a request to subscribe leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Subscribe {
    /// Mail this token to the address to confirm.
    Mail(String),
    /// Nothing to send: confirmed already, or mailed too recently.
    Nothing,
    /// The page holds as many subscribers as it may.
    Full,
}

/// A request to subscribe `address` (lower-case) to `page` at `now`, with
/// a fresh `token`.
pub fn subscribe(
    conn: &mut Connection,
    page: &str,
    address: &str,
    token: &str,
    now: i64,
) -> rusqlite::Result<Subscribe> {
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM page_subscribers WHERE page = ?1 AND confirmed IS NULL AND created < ?2",
        params![page, now - PENDING_FOR_MS],
    )?;
    let found: Option<(i64, i64, Option<i64>)> = tx
        .query_row(
            "SELECT id, mailed, confirmed FROM page_subscribers WHERE page = ?1 AND address = ?2",
            params![page, address],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let outcome = match found {
        Some((_, _, Some(_))) => Subscribe::Nothing,
        Some((_, mailed, None)) if now - mailed < REMAIL_AFTER_MS => Subscribe::Nothing,
        Some((id, _, None)) => {
            tx.execute(
                "UPDATE page_subscribers SET token = ?2, mailed = ?3 WHERE id = ?1",
                params![id, token, now],
            )?;
            Subscribe::Mail(token.to_string())
        }
        None => {
            let (all, pending): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COUNT(*) - COUNT(confirmed) FROM page_subscribers WHERE page = ?1",
                [page],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let evict = (all >= MAX_SUBSCRIBERS || pending >= MAX_PENDING) && pending > 0;
            if evict {
                // The oldest request not confirmed makes room: refusing
                // the new one instead let a flood of requests from a
                // hundred clients shut the page to every visitor for a
                // week (PENDING_FOR_MS), where now it must go on.
                tx.execute(
                    "DELETE FROM page_subscribers WHERE id = (SELECT id FROM page_subscribers \
                     WHERE page = ?1 AND confirmed IS NULL ORDER BY created, id LIMIT 1)",
                    [page],
                )?;
            }
            if all - i64::from(evict) >= MAX_SUBSCRIBERS {
                Subscribe::Full
            } else {
                tx.execute(
                    "INSERT INTO page_subscribers (page, address, token, created, mailed) \
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![page, address, token, now],
                )?;
                Subscribe::Mail(token.to_string())
            }
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Starts `page`'s cursor after the newest update, unless it has one:
/// the page's updates go out from then on, not its past.
pub fn start_cursor(conn: &Connection, page: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO page_mail_cursor (page, last_update) \
         VALUES (?1, (SELECT COALESCE(MAX(id), 0) FROM page_updates))",
        [page],
    )?;
    Ok(())
}

/// Confirms the subscriber of `page` holding `token`; false when none
/// does. The page's first confirmation starts its mail after the newest
/// update: a page does not mail its past.
pub fn confirm(conn: &Connection, page: &str, token: &str, now: i64) -> rusqlite::Result<bool> {
    let done = conn.execute(
        "UPDATE page_subscribers SET confirmed = COALESCE(confirmed, ?3) WHERE page = ?1 AND token = ?2",
        params![page, token, now],
    )? == 1;
    if done {
        start_cursor(conn, page)?;
    }
    Ok(done)
}

/// Removes the subscriber of `page` holding `token`; false when none does.
pub fn unsubscribe(conn: &Connection, page: &str, token: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM page_subscribers WHERE page = ?1 AND token = ?2",
        params![page, token],
    )? == 1)
}

/// The confirmed subscribers of `page`: address and token.
pub fn confirmed(conn: &Connection, page: &str) -> rusqlite::Result<Vec<(String, String)>> {
    conn.prepare_cached(
        "SELECT address, token FROM page_subscribers WHERE page = ?1 AND confirmed IS NOT NULL ORDER BY id",
    )?
    .query_map([page], |r| Ok((r.get(0)?, r.get(1)?)))?
    .collect()
}

/// The updates of `page` not mailed yet, oldest first, at most `limit`,
/// each with its incident (as it is now); none before the page's first
/// confirmed subscriber.
pub fn unmailed(
    conn: &Connection,
    page: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, PageIncident)>> {
    let cursor: Option<i64> = conn
        .query_row(
            "SELECT last_update FROM page_mail_cursor WHERE page = ?1",
            [page],
            |r| r.get(0),
        )
        .optional()?;
    let Some(cursor) = cursor else {
        return Ok(Vec::new());
    };
    let found: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT u.id, u.incident FROM page_updates u JOIN page_incidents i ON i.id = u.incident \
             WHERE i.page = ?1 AND u.id > ?2 ORDER BY u.id LIMIT ?3",
        )?
        .query_map(params![page, cursor, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (update, incident) in found {
        if let Some(i) = super::pages::get(conn, page, incident)? {
            out.push((update, i));
        }
    }
    Ok(out)
}

/// Marks the updates of `page` up to `update` as mailed.
pub fn mailed(conn: &Connection, page: &str, update: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE page_mail_cursor SET last_update = MAX(last_update, ?2) WHERE page = ?1",
        params![page, update],
    )?;
    Ok(())
}

/// True when `page` already announced the occurrence of the maintenance
/// window `name` that starts at `start` (ms).
pub fn maintenance_told(
    conn: &Connection,
    page: &str,
    name: &str,
    start: i64,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM page_maintenance_told WHERE page = ?1 AND name = ?2 AND start = ?3",
        )?
        .query_row(params![page, name, start], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Records that `page` announced that occurrence, so that no restart
/// announces it again.
pub fn tell_maintenance(
    conn: &Connection,
    page: &str,
    name: &str,
    start: i64,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO page_maintenance_told (page, name, start, told_at) VALUES (?1, ?2, ?3, ?4)",
        params![page, name, start, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_is_mailed_once_per_while_until_confirmed_and_leaves_by_token() {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::schema::migrate(&mut conn).expect("schema");
        let sub = |c: &mut Connection, token: &str, now| subscribe(c, "p", "a@x.org", token, now);
        assert_eq!(
            sub(&mut conn, "t1", 0).expect("s"),
            Subscribe::Mail("t1".into())
        );
        assert_eq!(sub(&mut conn, "t2", 1000).expect("s"), Subscribe::Nothing);
        assert!(
            !confirm(&conn, "p", "t2", 2000).expect("c"),
            "t2 was never mailed"
        );
        assert_eq!(
            sub(&mut conn, "t3", REMAIL_AFTER_MS + 1).expect("s"),
            Subscribe::Mail("t3".into())
        );
        assert!(
            !confirm(&conn, "p", "t1", 2000).expect("c"),
            "t1 was replaced"
        );
        assert!(!confirm(&conn, "other", "t3", 2000).expect("c"));
        assert!(confirm(&conn, "p", "t3", 2000).expect("c"));
        assert_eq!(
            confirmed(&conn, "p").expect("list"),
            [("a@x.org".into(), "t3".into())]
        );
        assert_eq!(
            sub(&mut conn, "t4", 10 * REMAIL_AFTER_MS).expect("s"),
            Subscribe::Nothing
        );
        assert!(unsubscribe(&conn, "p", "t3").expect("u"));
        assert!(confirmed(&conn, "p").expect("list").is_empty());
    }

    #[test]
    fn updates_are_mailed_once_from_the_first_confirmation_on() {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::schema::migrate(&mut conn).expect("schema");
        super::super::pages::auto_open(&conn, "p", "a", "A", 1).expect("old");
        assert!(unmailed(&conn, "p", 10).expect("nobody").is_empty());
        subscribe(&mut conn, "p", "a@x.org", "t", 1).expect("subscribe");
        assert!(confirm(&conn, "p", "t", 1).expect("confirm"));
        assert!(unmailed(&conn, "p", 10).expect("the past").is_empty());
        super::super::pages::auto_resolve(&conn, "p", "a", "A", 2).expect("new");
        let got = unmailed(&conn, "p", 10).expect("next");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.status, "resolved");
        mailed(&conn, "p", got[0].0).expect("mark");
        assert!(unmailed(&conn, "p", 10).expect("after").is_empty());
    }

    #[test]
    fn a_flood_of_requests_makes_room_by_its_oldest_and_never_shuts_the_page() {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::schema::migrate(&mut conn).expect("schema");
        for n in 0..MAX_PENDING {
            let got = subscribe(
                &mut conn,
                "p",
                &format!("flood{n}@x.org"),
                &format!("f{n}"),
                n,
            )
            .expect("flood");
            assert_eq!(got, Subscribe::Mail(format!("f{n}")));
        }
        // A visitor after the flood is still taken, and can confirm; the
        // flood's oldest request made room.
        let got = subscribe(&mut conn, "p", "visitor@x.org", "v", MAX_PENDING).expect("visitor");
        assert_eq!(got, Subscribe::Mail("v".into()));
        assert!(confirm(&conn, "p", "v", MAX_PENDING + 1).expect("confirm"));
        assert!(!confirm(&conn, "p", "f0", MAX_PENDING + 1).expect("confirm"));
        assert!(confirm(&conn, "p", "f1", MAX_PENDING + 1).expect("confirm"));
        let held: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM page_subscribers WHERE page = 'p'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(held, MAX_PENDING);
    }

    #[test]
    fn a_version_7_file_gets_the_table_of_told_maintenance_and_tells_once() {
        let mut conn = Connection::open_in_memory().expect("memory");
        super::super::schema::migrate(&mut conn).expect("schema");
        conn.execute_batch("DROP TABLE page_maintenance_told; PRAGMA user_version = 7")
            .expect("back to 7");
        super::super::schema::migrate(&mut conn).expect("to 8");
        assert!(!maintenance_told(&conn, "p", "w", 10).expect("read"));
        tell_maintenance(&conn, "p", "w", 10, 11).expect("tell");
        tell_maintenance(&conn, "p", "w", 10, 12).expect("told twice is fine");
        assert!(maintenance_told(&conn, "p", "w", 10).expect("read"));
        assert!(!maintenance_told(&conn, "p", "w", 20).expect("next occurrence"));
        assert!(!maintenance_told(&conn, "q", "w", 10).expect("other page"));
    }
}
