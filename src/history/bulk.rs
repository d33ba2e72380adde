//! Writing a history file outside the daemon, through the daemon's own
//! writer (`writer.rs`): the load figures (`loadtest`, BENCHMARKS.md) need
//! files of a year and of a hundred million changes, which the daemon
//! would take hours to make, and a file written any other way would not
//! be the store under test. The same schema, the same statements, the
//! same batches of `BATCH_ROWS`, the same rollups; only the feed is the
//! caller's instead of the engine's journal.

use std::path::Path;

use super::record::Change;
use super::writer::{Writer, BATCH_ROWS};
use super::{create_private, flags, open_file, HistoryError};

/// A history file being written by one caller, as the daemon's writer
/// writes it.
pub struct BulkWriter {
    w: Writer,
    roll_from: i64,
}

impl BulkWriter {
    /// Opens (or creates, mode 0600) the history file at `path` and
    /// begins a run of lovebeat at `started` (ms): uptime counts the time
    /// before a file's first run as unknown, so a file that holds a year
    /// begins its run a year ago.
    pub fn create(path: &Path, started: i64) -> Result<BulkWriter, HistoryError> {
        let err = |source| HistoryError::Open {
            path: path.display().to_string(),
            source,
        };
        create_private(path);
        let conn = open_file(path, flags()).map_err(err)?;
        let w = Writer::open(conn, started, Default::default()).map_err(|e| err(e.into()))?;
        Ok(BulkWriter { w, roll_from: 1 })
    }

    /// Writes `changes` (in time order, as the engine makes them) in
    /// transactions of at most `BATCH_ROWS`, as the daemon's writer does.
    pub fn write(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        for chunk in changes.chunks(BATCH_ROWS) {
            self.w.write(chunk)?;
        }
        Ok(())
    }

    /// Rolls up the finished days of the next `names` names (by id) at
    /// `now`, in one transaction, as the writer's rollup pass does; false
    /// once every name has been rolled up.
    pub fn roll_step(&mut self, names: i64, now: i64) -> rusqlite::Result<bool> {
        let from = self.roll_from;
        let to = from.saturating_add(names.max(1));
        self.w.roll_range(from, to, now)?;
        self.roll_from = to;
        let max = self.w.max_name_id()?;
        Ok(to <= max)
    }

    /// Folds the WAL into the file and empties it, so that the file's size
    /// on disk is all of what was written.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.w.checkpoint()
    }

    /// Records the run's stop at `now` and folds the WAL into the file, so
    /// its size on disk is the file's alone.
    pub fn finish(mut self, now: i64) -> rusqlite::Result<()> {
        self.w.alive(now, true)?;
        self.w.checkpoint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::query::{self, Range};
    use crate::history::record::{Kind, Reason};
    use crate::history::uptime::rollup::DAY;

    fn change(ts: i64, from: Option<u8>, to: u8) -> Change {
        Change {
            kind: Kind::Service,
            name: "web".into(),
            ts,
            from,
            to,
            reason: Reason::Other,
            detail: None,
            incident: None,
        }
    }

    /// A file written in bulk is one the daemon reads: its changes answer
    /// the history's query, its finished days are rolled up, its run is
    /// closed, and its WAL is folded into the file.
    #[test]
    fn a_bulk_file_answers_as_the_daemons_own() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("h.history");
        let now = 10 * DAY + 3_600_000;
        let mut w = BulkWriter::create(&path, 0).expect("create");
        w.write(&[
            change(DAY, None, 1),
            change(2 * DAY, Some(1), 2),
            change(2 * DAY + 600_000, Some(2), 1),
        ])
        .expect("write");
        while w.roll_step(200, now).expect("roll") {}
        w.finish(now).expect("finish");
        let wal = dir.path().join("h.history-wal");
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
        let conn = rusqlite::Connection::open(&path).expect("open");
        let range = Range {
            since: 0,
            until: now,
            limit: 10,
            before: None,
        };
        let page = query::changes(&conn, Kind::Service, "web", range)
            .expect("query")
            .expect("known");
        assert_eq!(page.changes.len(), 3);
        let (days, down): (i64, i64) = conn
            .query_row("SELECT COUNT(*), SUM(down_ms) FROM daily", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("daily");
        // Days 1 to 9 (day 10 is not over), ten minutes down on day 2.
        assert_eq!((days, down), (9, 600_000));
        let stopped: Option<i64> = conn
            .query_row("SELECT stopped FROM lifecycle", [], |r| r.get(0))
            .expect("run");
        assert_eq!(stopped, Some(now));
    }
}
