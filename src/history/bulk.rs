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
