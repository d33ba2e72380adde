//! What each `[[reports]]` has sent (schema version 7, `reports_sent`):
//! the end of the last period it mailed, so that the schedule
//! (`reports/schedule.rs`) mails each period once, across restarts, and
//! the one that ended while lovebeat was down at the next start.

use rusqlite::{params, Connection, OptionalExtension};

/// What a report owes at `now`, given the start of the period `now` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Nothing: the last period that ended was sent.
    Nothing,
    /// The report is new: it is owed from the period now under way, and
    /// none before (a report added today does not mail last month).
    Started,
    /// The period that ended at `current_since` (only the latest: one
    /// missed further back is not sent).
    Latest,
}

/// Whether `name` owes the period that ends at `current_since` (the
/// start of the period under way), recording a new report as owed from
/// there.
pub fn owed(conn: &Connection, name: &str, current_since: i64) -> rusqlite::Result<Owed> {
    let covered: Option<i64> = conn
        .prepare_cached("SELECT covered_until FROM reports_sent WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?;
    Ok(match covered {
        None => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO reports_sent (name, covered_until, sent_at) VALUES (?1, ?2, NULL)",
            )?
            .execute(params![name, current_since])?;
            Owed::Started
        }
        Some(c) if c < current_since => Owed::Latest,
        Some(_) => Owed::Nothing,
    })
}

/// Records that `name` sent the period that ended at `until`, at `at`.
pub fn sent(conn: &Connection, name: &str, until: i64, at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO reports_sent (name, covered_until, sent_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET covered_until = MAX(covered_until, ?2), sent_at = ?3",
    )?
    .execute(params![name, until, at])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_owes_each_ended_period_once_and_none_before_it_began() {
        let mut conn = Connection::open_in_memory().expect("sqlite");
        crate::history::schema::migrate(&mut conn).expect("schema");
        assert_eq!(owed(&conn, "m", 100).ok(), Some(Owed::Started));
        assert_eq!(owed(&conn, "m", 100).ok(), Some(Owed::Nothing));
        // The boundary passed (or passed while lovebeat was down).
        assert_eq!(owed(&conn, "m", 200).ok(), Some(Owed::Latest));
        assert_eq!(owed(&conn, "m", 300).ok(), Some(Owed::Latest));
        sent(&conn, "m", 300, 301).expect("sent");
        assert_eq!(owed(&conn, "m", 300).ok(), Some(Owed::Nothing));
        // An older period's record never moves it back.
        sent(&conn, "m", 200, 302).expect("sent");
        assert_eq!(owed(&conn, "m", 300).ok(), Some(Owed::Nothing));
        assert_eq!(owed(&conn, "other", 300).ok(), Some(Owed::Started));
    }
}
