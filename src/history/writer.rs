//! The history's one writer: a thread that takes the engine's lossless
//! feed (`engine/journal.rs`) and writes it in batched transactions, so a
//! mass outage never waits on SQLite inside the engine's locks, and a
//! failing file never stops monitoring.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use super::record::{self, Change, Kind};
use super::Shared;
use crate::clock::now_ms;
use crate::engine::journal::Journal;
use crate::engine::{EventKind, JobRun};

/// Rows written in one transaction at most.
pub(super) const BATCH_ROWS: usize = 4096;
/// How long the writer waits for changes before it writes what it has.
pub(super) const BATCH_WAIT: Duration = Duration::from_millis(100);
/// How often the current run's `last_seen` is renewed.
const ALIVE_EVERY: Duration = Duration::from_secs(10);
/// Names whose ids the writer remembers at most (then it forgets them all
/// and asks the file again): bounds its memory at a million services.
const NAME_CACHE: usize = 100_000;
/// A batch this long means the writer is behind: a service's changes in
/// it are coalesced ([`coalesce`]).
pub(super) const COALESCE_AT: usize = BATCH_ROWS;

/// Coalesces each service's changes in a batch the writer took while
/// behind: of three or more, the first and the last stay (their times and
/// reasons), and so do a creation and a deletion; the ones between are
/// dropped, and the `from` of each kept change is the `to` of the one
/// kept before it, so the history stays a chain. Alarms keep every change
/// (each opens or closes an incident). Returns how many were dropped.
pub(super) fn coalesce(changes: &mut Vec<Change>) -> u64 {
    let mut keep = vec![true; changes.len()];
    {
        let mut of: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            if c.kind == Kind::Service {
                of.entry(c.name.as_str()).or_default().push(i);
            }
        }
        for idx in of.values().filter(|idx| idx.len() >= 3) {
            for &i in idx.iter().skip(1).take(idx.len() - 2) {
                let boundary = changes
                    .get(i)
                    .is_none_or(|c| c.from.is_none() || c.to == record::DELETED);
                if let (false, Some(k)) = (boundary, keep.get_mut(i)) {
                    *k = false;
                }
            }
        }
    }
    let dropped = keep.iter().filter(|k| !**k).count() as u64;
    if dropped == 0 {
        return 0;
    }
    let mut flags = keep.into_iter();
    changes.retain(|_| flags.next().unwrap_or(true));
    let mut last: HashMap<String, u8> = HashMap::new();
    for c in changes.iter_mut().filter(|c| c.kind == Kind::Service) {
        if let (Some(_), Some(prev)) = (c.from, last.get(c.name.as_str())) {
            c.from = Some(*prev);
        }
        last.insert(c.name.clone(), c.to);
    }
    dropped
}

/// [`coalesce`] for the job runs of a batch taken while behind: of each
/// service's three or more, the first and the last stay. Returns how many
/// were dropped.
pub(super) fn coalesce_runs(runs: &mut Vec<(i64, &JobRun)>) -> u64 {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, r) in runs.iter() {
        *count.entry(r.name.as_str()).or_default() += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let before = runs.len();
    runs.retain(|(_, r)| {
        let n = count.get(r.name.as_str()).copied().unwrap_or(0);
        let i = seen.entry(r.name.to_string()).or_default();
        *i += 1;
        *i == 1 || *i == n
    });
    (before - runs.len()) as u64
}

/// How often retention is pruned, and how many names one step covers.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_STEP: i64 = 2_000;
/// How often a pass of daily rollups starts (a day is rolled up once it
/// is over), and how many names one step covers: each is a range read of
/// its changes of the days not rolled up yet.
const ROLL_EVERY: Duration = Duration::from_secs(300);
const ROLL_STEP: i64 = 200;

/// Retention of one name (`?1`) before its cutoff (`?2`): its changes
/// before it but the last (unless that one is its deletion, `?3`). The
/// name and the cutoff are values, so SQLite seeks `(name_id, ts)`.
const PRUNE_NAME: &str = "DELETE FROM changes AS c WHERE name_id = ?1 AND ts < ?2 \
     AND (to_state = ?3 OR EXISTS (SELECT 1 FROM changes AS n \
          WHERE n.name_id = ?1 AND n.ts < ?2 AND (n.ts, n.seq) > (c.ts, c.seq)))";

/// The writer's connection and what it remembers between batches.
pub(super) struct Writer {
    conn: Connection,
    /// (kind, name) to `names.id`.
    ids: HashMap<(u8, String), i64>,
    /// The next `seq`.
    seq: i64,
    /// This run's `lifecycle` row.
    run: i64,
    last_alive: Instant,
    /// Where the retention pruning goes on (a `names.id`), and when it ran.
    prune_from: i64,
    last_prune: Instant,
    /// Where the daily rollups go on (a `names.id`), and when a pass ran.
    roll_from: i64,
    last_roll: Instant,
    /// The file and its (device, inode) when opened, and when they were
    /// last compared with what the path names now.
    watched: Option<(PathBuf, (u64, u64))>,
    last_check: Instant,
    /// The status pages that show each alarm, for their automatic
    /// incidents (`pages.rs`).
    auto: super::pages::AutoPages,
}

/// How often the writer checks that its file is still the one at its
/// path (not deleted nor replaced while lovebeat runs).
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The (device, inode) of the file at `path`, if there is one.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Writer {
    /// Starts this run's `lifecycle` row.
    pub(super) fn open(
        conn: Connection,
        now: i64,
        auto: super::pages::AutoPages,
    ) -> rusqlite::Result<Writer> {
        // Kept with the changes (schema version 9): never a scan of them.
        let seq: i64 = conn
            .query_row("SELECT seq FROM next_seq WHERE id = 1", [], |r| r.get(0))
            .optional()?
            .unwrap_or(1);
        conn.execute(
            "INSERT INTO lifecycle (started, last_seen) VALUES (?1, ?1)",
            [now],
        )?;
        let run = conn.last_insert_rowid();
        super::pages::resolve_unshown(&conn, &auto, now)?;
        Ok(Writer {
            conn,
            ids: HashMap::new(),
            seq,
            run,
            last_alive: Instant::now(),
            prune_from: 0,
            last_prune: Instant::now(),
            roll_from: 1,
            last_roll: Instant::now(),
            watched: None,
            last_check: Instant::now(),
            auto,
        })
    }

    /// Watches the file at `path`: [`Writer::moved`] tells when it is no
    /// longer the one written.
    pub(super) fn watch(&mut self, path: &Path) {
        self.watched = file_id(path).map(|id| (path.to_path_buf(), id));
    }

    /// Every [`CHECK_EVERY`]: whether the watched file was deleted or
    /// replaced (the path names another file, or none): writes would go
    /// to a file nobody can open any more.
    pub(super) fn moved(&mut self) -> bool {
        if self.last_check.elapsed() < CHECK_EVERY {
            return false;
        }
        self.last_check = Instant::now();
        match &self.watched {
            Some((path, id)) => file_id(path) != Some(*id),
            None => false,
        }
    }

    /// The watched file, if any.
    fn watched_path(&self) -> Option<PathBuf> {
        self.watched.as_ref().map(|(p, _)| p.clone())
    }

    fn name_id(&mut self, kind: Kind, name: &str) -> rusqlite::Result<i64> {
        let key = (kind as u8, name.to_string());
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        if self.ids.len() >= NAME_CACHE {
            self.ids.clear();
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM names WHERE kind = ?1 AND name = ?2")?
            .query_row(params![kind as u8, name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO names (kind, name) VALUES (?1, ?2)")?
                    .execute(params![kind as u8, name])?;
                self.conn.last_insert_rowid()
            }
        };
        self.ids.insert(key, id);
        Ok(id)
    }

    /// Writes ended job runs (`(ended, run)`) and audit entries in one
    /// transaction.
    pub(super) fn write_extras(
        &mut self,
        runs: &[(i64, &JobRun)],
        audit: &[super::audit::Entry],
    ) -> rusqlite::Result<()> {
        if runs.is_empty() && audit.is_empty() {
            return Ok(());
        }
        self.conn.execute_batch("BEGIN")?;
        let mut result = Ok(());
        for (ended, run) in runs {
            result = self
                .name_id(Kind::Service, &run.name)
                .and_then(|id| super::runs::write(&self.conn, id, *ended, run));
            if result.is_err() {
                break;
            }
        }
        let result = result.and_then(|()| super::audit::write(&self.conn, audit));
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT"),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                // The ids cached in the rolled-back transaction are gone.
                self.ids.clear();
                Err(e)
            }
        }
    }

    /// Writes `changes` in one transaction.
    pub(super) fn write(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN")?;
        let result = self.write_rows(changes).and_then(|()| {
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO next_seq (id, seq) VALUES (1, ?1)")?
                .execute([self.seq])
                .map(|_| ())
        });
        match result {
            Ok(()) => self.conn.execute_batch("COMMIT"),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn write_rows(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        for c in changes {
            let id = self.name_id(c.kind, &c.name)?;
            self.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO changes (name_id, ts, seq, from_state, to_state, reason, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    id,
                    c.ts,
                    self.seq,
                    c.from,
                    c.to,
                    c.reason as u8,
                    c.detail
                ])?;
            self.seq += 1;
            if let Some(edge) = &c.incident {
                super::incidents::write(&self.conn, id, c.ts, edge)?;
            }
            if c.kind == Kind::Alarm {
                self.page_incidents(c)?;
            }
            // A deleted name is marked, one that comes back unmarked.
            let deleted = (c.to == record::DELETED).then_some(c.ts);
            self.conn
                .prepare_cached("UPDATE names SET deleted_at = ?2, last_state = ?3 WHERE id = ?1")?
                .execute(params![id, deleted, c.to])?;
        }
        Ok(())
    }

    /// The automatic page incidents of an alarm's change: ERROR opens one
    /// on every page that shows the alarm, any other state resolves them.
    fn page_incidents(&self, c: &Change) -> rusqlite::Result<()> {
        let Some(pages) = self.auto.get(&c.name) else {
            return Ok(());
        };
        let error = c.to == crate::engine::State::Error as u8;
        for (page, display) in pages {
            if error {
                super::pages::auto_open(&self.conn, page, &c.name, display, c.ts)?;
            } else {
                super::pages::auto_resolve(&self.conn, page, &c.name, display, c.ts)?;
            }
        }
        Ok(())
    }

    /// Renews this run's `last_seen` every [`ALIVE_EVERY`], or at `stop`.
    /// True when it wrote (a failed try waits its turn again, so a file
    /// that cannot be written is not retried in a hot loop).
    pub(super) fn alive(&mut self, now: i64, stop: bool) -> rusqlite::Result<bool> {
        if stop {
            self.conn.execute(
                "UPDATE lifecycle SET last_seen = ?2, stopped = ?2 WHERE id = ?1",
                params![self.run, now],
            )?;
            return Ok(true);
        }
        if self.last_alive.elapsed() < ALIVE_EVERY {
            return Ok(false);
        }
        self.last_alive = Instant::now();
        self.conn.execute(
            "UPDATE lifecycle SET last_seen = ?2 WHERE id = ?1",
            params![self.run, now],
        )?;
        Ok(true)
    }

    /// One small step of retention: the changes older than `retention_ms`
    /// of the next [`PRUNE_STEP`] names, so the writer is never held long.
    /// A pass over every name runs every [`PRUNE_EVERY`].
    pub(super) fn prune(
        &mut self,
        retention_ms: u64,
        rollup_retention_ms: u64,
        now: i64,
    ) -> rusqlite::Result<usize> {
        let all = |ms: u64| ms == 0;
        if (all(retention_ms) && all(rollup_retention_ms))
            || (self.prune_from == 0 && self.last_prune.elapsed() < PRUNE_EVERY)
        {
            return Ok(0);
        }
        if rollup_retention_ms > 0 {
            let cutoff = now.saturating_sub(rollup_retention_ms as i64);
            super::uptime::rollup::prune(
                &self.conn,
                self.prune_from,
                self.prune_from + PRUNE_STEP,
                cutoff,
            )?;
        }
        if all(retention_ms) {
            return self.prune_step_done().map(|()| 0);
        }
        let cutoff = now.saturating_sub(retention_ms as i64);
        let to = self.prune_from + PRUNE_STEP;
        // Each name's last change before the cutoff stays (unless it is
        // its deletion): it says the state from then on, without which
        // uptime would count a name steady for longer than the retention
        // as unknown.
        // A name's changes go only once its days are rolled up
        // (`uptime/rollup.rs`): its cutoff is the earlier of the
        // retention's and the first day not rolled up yet.
        // Name by name, each cutoff known before the DELETE, so that it
        // seeks the name's old changes by key: over a range of names,
        // with the cutoff a subquery, it read every change of the step's
        // names, a pass that read the whole table every `PRUNE_EVERY`.
        let mut cutoffs: Vec<(i64, i64)> = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, COALESCE(rolled_until, 0) FROM names WHERE id >= ?1 AND id < ?2",
            )?;
            let mut rows = stmt.query(params![self.prune_from, to])?;
            while let Some(r) = rows.next()? {
                let (id, rolled): (i64, i64) = (r.get(0)?, r.get(1)?);
                let upto = cutoff.min(rolled.saturating_mul(super::uptime::rollup::DAY));
                if upto > i64::MIN {
                    cutoffs.push((id, upto));
                }
            }
        }
        let mut n = 0;
        for (id, upto) in cutoffs {
            n += self.conn.prepare_cached(PRUNE_NAME)?.execute(params![
                id,
                upto,
                record::DELETED
            ])?;
        }
        super::incidents::prune(&self.conn, self.prune_from, to, cutoff)?;
        super::runs::prune(&self.conn, self.prune_from, to, cutoff)?;
        super::audit::prune(&self.conn, cutoff, PRUNE_STEP)?;
        self.prune_step_done()?;
        Ok(n)
    }

    /// Moves the pruning on to the next names, or ends its pass.
    fn prune_step_done(&mut self) -> rusqlite::Result<()> {
        let to = self.prune_from + PRUNE_STEP;
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM names", [], |r| r.get(0))?;
        if to > max {
            self.prune_from = 0;
            self.last_prune = Instant::now();
        } else {
            self.prune_from = to;
        }
        Ok(())
    }

    /// One step of the daily rollups (`uptime/rollup.rs`): the finished
    /// days of the next [`ROLL_STEP`] names, in one transaction. A pass
    /// over every name starts at each start and every [`ROLL_EVERY`].
    pub(super) fn roll(&mut self, now: i64) -> rusqlite::Result<usize> {
        if self.roll_from == 0 {
            if self.last_roll.elapsed() < ROLL_EVERY {
                return Ok(0);
            }
            self.roll_from = 1;
        }
        let to = self.roll_from + ROLL_STEP;
        let n = match self.roll_range(self.roll_from, to, now) {
            Ok(n) => n,
            Err(e) => {
                // The pass is tried again at the next: a file that fails
                // is not asked again ten times a second.
                self.roll_from = 0;
                self.last_roll = Instant::now();
                return Err(e);
            }
        };
        if to > self.max_name_id()? {
            self.roll_from = 0;
            self.last_roll = Instant::now();
        } else {
            self.roll_from = to;
        }
        Ok(n)
    }

    /// The rollups of the names with ids in `[from, to)` at `now`, in one
    /// transaction (rolled back on an error). Returns the day rows written.
    pub(super) fn roll_range(&mut self, from: i64, to: i64, now: i64) -> rusqlite::Result<usize> {
        self.conn.execute_batch("BEGIN")?;
        match super::uptime::rollup::roll(&self.conn, from, to, now) {
            Ok(n) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(n)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The highest `names.id` (0 with none): where a pass over the names
    /// ends.
    pub(super) fn max_name_id(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM names", [], |r| r.get(0))
    }

    /// Folds the WAL into the file and empties it (`bulk.rs`, before the
    /// file's size is read).
    pub(super) fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// One page of a reconciliation (see [`Catchup`]): the names after
    /// `from` (an id) whose last state in the history is not what lovebeat
    /// holds now (`now_state`: the state and when it changed to it;
    /// `None`: gone) get a `restored` change, or a deletion. Returns where
    /// the next page starts, `None` when done.
    ///
    /// A name whose change in the engine is newer than `taken` (the newest
    /// change the writer has taken from its feed) is left alone: that
    /// change waits in the feed and will be written as it is, and a
    /// `restored` row now would write it twice, out of order. A name whose
    /// lock is held ends the page there; it is read again next time.
    pub(super) fn reconcile(
        &mut self,
        from: i64,
        why: Catchup,
        taken: i64,
        now_state: &NowState<'_>,
    ) -> rusqlite::Result<Option<i64>> {
        const PAGE: i64 = 10_000;
        let mut rows: Vec<(i64, u8, String, Option<u8>)> = Vec::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, kind, name, last_state FROM names \
                 WHERE id > ?1 AND deleted_at IS NULL ORDER BY id LIMIT ?2",
            )?;
            let mut q = stmt.query(params![from, PAGE])?;
            while let Some(r) = q.next()? {
                rows.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
            }
        }
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(None);
        };
        let mut changes = Vec::new();
        let mut next = last;
        for (id, kind, name, last_state) in rows {
            let kind = if kind == Kind::Alarm as u8 {
                Kind::Alarm
            } else {
                Kind::Service
            };
            let Some(found) = now_state(kind, &name) else {
                // Busy: this page ends before this name.
                next = id - 1;
                break;
            };
            if found.is_some_and(|(_, since)| since > taken) {
                continue;
            }
            let state = found.map(|(s, _)| s);
            // A name written before version 3 has no last state, and one
            // not evaluated yet (NEW) no state to tell: nothing to compare.
            let Some(before) = last_state else { continue };
            if state == Some(crate::engine::State::New as u8) {
                continue;
            }
            let after = state.unwrap_or(record::DELETED);
            if before == after {
                continue;
            }
            let ts = match why {
                Catchup::Start(at) => at,
                // The change it holds now was made at `since`; never
                // before the gap began, so the rows stay in time order.
                Catchup::Gap(began) => found.map_or(began, |(_, since)| since.max(began)),
            };
            changes.push(Change {
                kind,
                name,
                ts,
                from: Some(before),
                to: after,
                reason: if state.is_some() {
                    record::Reason::Restored
                } else {
                    record::Reason::Deleted
                },
                detail: None,
                incident: None,
            });
        }
        for chunk in changes.chunks(BATCH_ROWS) {
            self.write(chunk)?;
        }
        Ok(Some(next))
    }

    /// Starts a pass of pruning at the next call (tests, and the start).
    pub(super) fn prune_now(&mut self) {
        self.prune_from = 1;
    }
}

/// Replaces the writer of a deleted (or replaced) file by one of a new
/// file at `path`: the old connection is closed first and the old file's
/// `-wal` and `-shm` removed, so the new file never takes the old one's
/// journal for its own.
fn replace(
    w: &mut Writer,
    path: &Path,
    reopen: &dyn Fn() -> Result<Writer, super::HistoryError>,
) -> Result<(), super::HistoryError> {
    let placeholder = Connection::open_in_memory().map_err(|e| super::HistoryError::Open {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    drop(std::mem::replace(&mut w.conn, placeholder));
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    let mut new = reopen()?;
    new.prune_now();
    *w = new;
    Ok(())
}

/// Takes the feed and writes it until the feed is closed and drained.
/// Errors are counted, logged at most every 10 s, and reported as
/// What the engine holds of a name now: its state and when it changed
/// to it (`Some(None)` when it is gone), or `None` when the engine's lock
/// of it is held: the writer never waits for an engine lock, since its
/// holder may be waiting for the writer to take its queue.
pub(super) type NowState<'a> = dyn Fn(Kind, &str) -> Option<Option<(u8, i64)>> + 'a;

/// Why the writer compares the history's last states with the engine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Catchup {
    /// At the start (ms): the state loaded may not be the history's last
    /// (after a kill -9 the database is older); the difference is written
    /// at the start's time.
    Start(i64),
    /// After the feed lost changes (the writer fell past its bound during
    /// a mass outage): the gap began at this time (ms), and each name whose
    /// last change was lost gets its current state at the time it changed
    /// to it, so uptime is right again from there; the flaps in between
    /// stay lost and counted.
    Gap(i64),
}

impl Catchup {
    /// The catch-up to run after changes from `began` on were lost, given
    /// the one under way: a gap pass from the first name, beginning at the
    /// earliest gap (a pass under way may have passed the names just lost).
    fn after_gap(under_way: Option<(i64, Catchup)>, began: i64) -> Option<(i64, Catchup)> {
        let began = match under_way {
            Some((_, Catchup::Gap(earlier))) => earlier.min(began),
            _ => began,
        };
        Some((0, Catchup::Gap(began)))
    }
}

/// lovebeat's own trouble; the changes of a failed batch are lost (and
/// counted), never retried forever.
pub(super) fn run(
    mut w: Writer,
    journal: &Journal,
    shared: &Arc<Shared>,
    stop: &dyn Fn() -> bool,
    now_state: &NowState<'_>,
    reopen: &dyn Fn() -> Result<Writer, super::HistoryError>,
) {
    let mut last_error_log: Option<Instant> = None;
    let mut failing = false;
    w.prune_now();
    // The start's reconciliation goes a page at a time between batches,
    // so the feed is never held long, however many names there are.
    let mut catchup = Some((0, Catchup::Start(now_ms())));
    let mut catchup_failing = false;
    // The time of the last change taken from the feed: where a gap begins.
    let mut last_taken = now_ms();
    loop {
        if w.moved() {
            if let Some(path) = w.watched_path() {
                match replace(&mut w, &path, reopen) {
                    Ok(()) => {
                        let why = format!(
                            "the history file {} was deleted or replaced while lovebeat ran: \
                             a new one was started, the history before it is not in it",
                            path.display()
                        );
                        tracing::error!("{why}");
                        shared.generation.fetch_add(1, Ordering::Relaxed);
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        // ERROR until the new file has taken a write.
                        failing = true;
                        shared.trouble.fail(crate::trouble::Part::History, &why);
                    }
                    Err(e) => {
                        let why =
                            format!("the history file was deleted and cannot be made again: {e}");
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_error_log = Some(Instant::now());
                            tracing::error!("{why}");
                        }
                        if !failing {
                            failing = true;
                            shared.set_failing(Some(why.clone()));
                            shared.trouble.fail(crate::trouble::Part::History, &why);
                        }
                    }
                }
            }
        }
        if let Some((from, why)) = catchup {
            match w.reconcile(from, why, last_taken, now_state) {
                Ok(next) => {
                    catchup = next.map(|n| (n, why));
                    catchup_failing = false;
                }
                // Kept, and tried again after the next batch: the file
                // may take writes again by then (a lock, a full disk).
                Err(e) => {
                    if !catchup_failing {
                        tracing::error!("cannot compare the history with lovebeat's state: {e}");
                    }
                    catchup_failing = true;
                }
            }
        }
        let stopping = stop();
        // While a catch-up is under way, its next page follows at once.
        let wait = if stopping || (catchup.is_some() && !catchup_failing) {
            Duration::ZERO
        } else {
            BATCH_WAIT
        };
        let batch = journal.take(wait);
        if let Some(e) = batch.events.last() {
            last_taken = last_taken.max(e.ts);
        }
        if batch.lost_after > 0 {
            shared.lost.fetch_add(batch.lost_after, Ordering::Relaxed);
            // Once this batch is written, the names whose last change was
            // lost are given their current state (again from the first
            // name if a pass was under way: it may have passed them).
            catchup = Catchup::after_gap(catchup, last_taken);
        }
        let mut changes: Vec<Change> = batch
            .events
            .iter()
            .filter_map(|e| record::change(e))
            .collect();
        if batch.events.len() >= COALESCE_AT {
            let dropped = coalesce(&mut changes);
            shared.coalesced.fetch_add(dropped, Ordering::Relaxed);
        }
        let mut runs: Vec<(i64, &JobRun)> = batch
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::JobRun(r) => Some((e.ts, &**r)),
                _ => None,
            })
            .collect();
        if batch.events.len() >= COALESCE_AT {
            let dropped = coalesce_runs(&mut runs);
            shared.runs_coalesced.fetch_add(dropped, Ordering::Relaxed);
        }
        let audit = shared.take_audit();
        let mut result = Ok(());
        for chunk in changes.chunks(BATCH_ROWS) {
            result = w.write(chunk);
            match &result {
                Ok(()) => {
                    shared
                        .written
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    shared.lost.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    journal.count_unwritten(chunk.len() as u64);
                    // Lost as a feed's gap is: caught up once the file
                    // takes writes again.
                    let first = chunk.first().map_or(last_taken, |c| c.ts);
                    catchup = Catchup::after_gap(catchup, first);
                }
            }
        }
        if !runs.is_empty() || !audit.is_empty() {
            let extras = w.write_extras(&runs, &audit);
            match &extras {
                Ok(()) => {
                    shared
                        .runs_written
                        .fetch_add(runs.len() as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    shared.lost.fetch_add(runs.len() as u64, Ordering::Relaxed);
                    shared
                        .audit_lost
                        .fetch_add(audit.len() as u64, Ordering::Relaxed);
                }
            }
            if result.is_ok() {
                result = extras;
            }
        }
        let now = now_ms();
        let wrote_changes =
            (!changes.is_empty() || !runs.is_empty() || !audit.is_empty()) && result.is_ok();
        let result = result
            .and_then(|()| w.alive(now, false))
            .and_then(|alive| w.roll(now).map(|_| alive))
            .and_then(|alive| {
                w.prune(shared.retention_ms, shared.rollup_retention_ms, now)
                    .map(|_| alive)
            });
        match result {
            // Only a write that happened says the file works again: a
            // batch with nothing to write proves nothing (taking it for a
            // recovery turned lovebeat.self ERROR and OK ten times a
            // second, each turn a change that failed to be written).
            Ok(alive) => {
                if failing && (wrote_changes || alive) {
                    failing = false;
                    shared.set_failing(None);
                    tracing::info!("the history file is written again");
                    shared.trouble.ok(crate::trouble::Part::History);
                }
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_error_log = Some(Instant::now());
                    tracing::error!("cannot write the history file: {e}");
                }
                if !failing {
                    failing = true;
                    let why = format!("cannot write the history file: {e}");
                    shared.set_failing(Some(why.clone()));
                    shared.trouble.fail(crate::trouble::Part::History, &why);
                }
            }
        }
        if stopping && batch.events.is_empty() {
            break;
        }
    }
    if let Err(e) = w.alive(now_ms(), true) {
        tracing::error!("cannot record the stop in the history file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, ts: i64, from: Option<u8>, to: u8) -> Change {
        Change {
            kind: Kind::Service,
            name: name.into(),
            ts,
            from,
            to,
            reason: record::Reason::Other,
            detail: None,
            incident: None,
        }
    }

    /// A gap's catch-up writes a name's state only when the engine's
    /// change is one the writer has taken (or lost): a newer one waits in
    /// the feed and would be written twice, out of order. A name whose
    /// engine lock is held ends the page before it, to be read again,
    /// and the writer never waits for that lock (its holder may be waiting
    /// for the writer). Found by the review of the catch-up.
    #[test]
    fn a_catch_up_leaves_queued_changes_to_the_feed_and_never_waits_for_a_lock() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("schema");
        let mut w = Writer::open(conn, 0, Default::default()).expect("writer");
        let ok = crate::engine::State::Ok as u8;
        let err = crate::engine::State::Error as u8;
        w.write(&[change("queued", 10, None, ok), change("lost", 10, None, ok)])
            .expect("write");
        let taken = 100;
        // "queued" changed after the last change taken (its event is in
        // the feed), "lost" before it (its event was lost).
        let state = |_: Kind, name: &str| match name {
            "queued" => Some(Some((err, taken + 1))),
            _ => Some(Some((err, taken - 1))),
        };
        let next = w
            .reconcile(0, Catchup::Gap(50), taken, &state)
            .expect("reconcile");
        assert_eq!(next, Some(2));
        let rows: Vec<(String, i64, u8)> = w
            .conn
            .prepare(
                "SELECT n.name, c.ts, c.to_state FROM changes c JOIN names n ON n.id = c.name_id \
                 WHERE c.reason = ?1 ORDER BY c.seq",
            )
            .expect("query")
            .query_map([record::Reason::Restored as u8], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, vec![("lost".to_string(), taken - 1, err)]);
        // A held lock: nothing is written, and the page resumes at it.
        let busy = |_: Kind, _: &str| None;
        assert_eq!(
            w.reconcile(0, Catchup::Gap(50), taken, &busy)
                .expect("busy"),
            Some(0)
        );
    }

    #[test]
    fn a_flipper_keeps_its_first_and_last_change_and_the_rest_is_counted() {
        let (ok, err) = (1, 2);
        let mut c = vec![
            change("f", 1, Some(ok), err),
            change("calm", 2, Some(ok), err),
            change("f", 3, Some(err), ok),
            change("f", 4, Some(ok), err),
            change("f", 5, Some(err), ok),
            change("f", 6, Some(ok), err),
            change("two", 7, Some(ok), err),
            change("two", 8, Some(err), ok),
        ];
        assert_eq!(coalesce(&mut c), 3);
        let got: Vec<(&str, i64, Option<u8>, u8)> = c
            .iter()
            .map(|c| (c.name.as_str(), c.ts, c.from, c.to))
            .collect();
        assert_eq!(
            got,
            vec![
                ("f", 1, Some(ok), err),
                ("calm", 2, Some(ok), err),
                ("f", 6, Some(err), err),
                ("two", 7, Some(ok), err),
                ("two", 8, Some(err), ok),
            ]
        );
        // A deletion and a creation between stay, and the chain holds.
        let mut c = vec![
            change("d", 1, Some(ok), err),
            change("d", 2, Some(err), ok),
            change("d", 3, Some(ok), record::DELETED),
            change("d", 4, None, ok),
            change("d", 5, Some(ok), err),
            change("d", 6, Some(err), ok),
        ];
        assert_eq!(coalesce(&mut c), 2);
        let got: Vec<(i64, Option<u8>, u8)> = c.iter().map(|c| (c.ts, c.from, c.to)).collect();
        assert_eq!(
            got,
            vec![
                (1, Some(ok), err),
                (3, Some(err), record::DELETED),
                (4, None, ok),
                (6, Some(ok), ok)
            ]
        );
    }

    /// A start finds the next `seq` in its row (schema version 9), not
    /// by reading every change for the highest (a scan of seconds at a
    /// hundred million, at every start); numbering goes on where it
    /// stopped; and a file from before version 9 gets the row from that
    /// scan, once.
    #[test]
    fn a_start_numbers_on_from_the_row_kept_with_the_changes() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("schema");
        let mut w = Writer::open(conn, 0, Default::default()).expect("writer");
        let changes: Vec<Change> = (0..10_000)
            .map(|i| change(&format!("s{}", i % 100), i, Some(1), 2))
            .collect();
        for chunk in changes.chunks(BATCH_ROWS) {
            w.write(chunk).expect("write");
        }
        let conn = w.conn;
        let w = Writer::open(conn, 1, Default::default()).expect("writer");
        assert_eq!(w.seq, 10_001);
        // The row is what a start reads: the changes are not.
        let mut conn = w.conn;
        conn.execute("UPDATE next_seq SET seq = 777777", [])
            .expect("row");
        let w = Writer::open(conn, 2, Default::default()).expect("writer");
        assert_eq!(w.seq, 777_777);
        // A file written before version 9: the row comes from the scan.
        conn = w.conn;
        conn.execute_batch("DROP TABLE next_seq; PRAGMA user_version = 8")
            .expect("downgrade");
        super::super::schema::migrate(&mut conn).expect("upgrade");
        let w = Writer::open(conn, 3, Default::default()).expect("writer");
        assert_eq!(w.seq, 10_001);
    }

    /// Pruning seeks each name's changes before its cutoff by key, never
    /// reads all of a name's changes (a pass over every name every ten
    /// minutes read the whole table: 100 M rows at the figures' size).
    #[test]
    fn pruning_seeks_a_names_old_changes_by_key() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_NAME}"))
            .expect("plan")
            .query_map(params![1, 2, 3], |r| r.get::<_, String>(3))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert!(
            plan.iter()
                .filter(|p| p.contains("changes"))
                .all(|p| p.contains("name_id=? AND ts<?")),
            "{plan:?}"
        );
    }

    #[test]
    fn pruning_keeps_the_last_change_before_the_cutoff_unless_it_is_a_deletion() {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("schema");
        conn.execute_batch(
            "INSERT INTO names (id, kind, name) VALUES (1, 0, 'steady'), (2, 0, 'gone'); \
             INSERT INTO changes VALUES (1, 100, 1, NULL, 1, 0, NULL); \
             INSERT INTO changes VALUES (1, 200, 2, 1, 2, 1, NULL); \
             INSERT INTO changes VALUES (1, 200, 3, 2, 1, 3, NULL); \
             INSERT INTO changes VALUES (1, 5000, 4, 1, 2, 1, NULL); \
             INSERT INTO changes VALUES (2, 100, 5, NULL, 1, 0, NULL); \
             INSERT INTO changes VALUES (2, 300, 6, 1, 255, 7, NULL);",
        )
        .expect("rows");
        // Rolled up: the changes may go.
        conn.execute_batch("UPDATE names SET rolled_until = 1")
            .expect("rolled");
        let mut w = Writer::open(conn, 10_000, Default::default()).expect("writer");
        w.prune_now();
        assert_eq!(w.prune(9_000, 0, 10_000).expect("prune"), 4);
        let left: Vec<(i64, i64, i64)> = w
            .conn
            .prepare("SELECT name_id, ts, seq FROM changes ORDER BY name_id, ts, seq")
            .expect("stmt")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(left, vec![(1, 200, 3), (1, 5000, 4)]);
    }
}
