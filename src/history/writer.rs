//! The history's one writer: a thread that takes the engine's lossless
//! feed (`engine/journal.rs`) and writes it in batched transactions, so a
//! mass outage never waits on SQLite inside the engine's locks, and a
//! failing file never stops monitoring.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use super::record::{self, Change, Kind};
use super::Shared;
use crate::clock::now_ms;
use crate::engine::journal::Journal;

/// Rows written in one transaction at most.
pub(super) const BATCH_ROWS: usize = 4096;
/// How long the writer waits for changes before it writes what it has.
pub(super) const BATCH_WAIT: Duration = Duration::from_millis(100);
/// How often the current run's `last_seen` is renewed.
const ALIVE_EVERY: Duration = Duration::from_secs(10);
/// Names whose ids the writer remembers at most (then it forgets them all
/// and asks the file again): bounds its memory at a million services.
const NAME_CACHE: usize = 100_000;
/// How often retention is pruned, and how many names one step covers.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_STEP: i64 = 2_000;

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
    /// The status pages that show each alarm, for their automatic
    /// incidents (`pages.rs`).
    auto: super::pages::AutoPages,
}

impl Writer {
    /// Starts this run's `lifecycle` row.
    pub(super) fn open(
        conn: Connection,
        now: i64,
        auto: super::pages::AutoPages,
    ) -> rusqlite::Result<Writer> {
        let seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM changes", [], |r| {
                r.get(0)
            })?;
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
            auto,
        })
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

    /// Writes `changes` in one transaction.
    pub(super) fn write(&mut self, changes: &[Change]) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN")?;
        let result = self.write_rows(changes);
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
    pub(super) fn prune(&mut self, retention_ms: u64, now: i64) -> rusqlite::Result<usize> {
        if retention_ms == 0 || (self.prune_from == 0 && self.last_prune.elapsed() < PRUNE_EVERY) {
            return Ok(0);
        }
        let cutoff = now.saturating_sub(retention_ms as i64);
        let to = self.prune_from + PRUNE_STEP;
        // Each name's last change before the cutoff stays (unless it is
        // its deletion): it says the state from then on, without which
        // uptime would count a name steady for longer than the retention
        // as unknown.
        let n = self.conn.execute(
            "DELETE FROM changes AS c WHERE name_id >= ?1 AND name_id < ?2 AND ts < ?3 \
             AND (to_state = ?4 OR EXISTS (SELECT 1 FROM changes AS n \
                  WHERE n.name_id = c.name_id AND n.ts < ?3 AND (n.ts, n.seq) > (c.ts, c.seq)))",
            params![self.prune_from, to, cutoff, record::DELETED],
        )?;
        super::incidents::prune(&self.conn, self.prune_from, to, cutoff)?;
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM names", [], |r| r.get(0))?;
        if to > max {
            self.prune_from = 0;
            self.last_prune = Instant::now();
        } else {
            self.prune_from = to;
        }
        Ok(n)
    }

    /// One page of the start's reconciliation: the names after `from`
    /// (an id) whose last state in the history is not what lovebeat holds
    /// now (`now_state`; `None`: gone) get a `restored` change, or a
    /// deletion. Returns where the next page starts, `None` when done.
    pub(super) fn reconcile(
        &mut self,
        from: i64,
        now: i64,
        now_state: &dyn Fn(Kind, &str) -> Option<u8>,
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
        for (_, kind, name, last_state) in rows {
            let kind = if kind == Kind::Alarm as u8 {
                Kind::Alarm
            } else {
                Kind::Service
            };
            let state = now_state(kind, &name);
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
            changes.push(Change {
                kind,
                name,
                ts: now,
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
        Ok(Some(last))
    }

    /// Starts a pass of pruning at the next call (tests, and the start).
    pub(super) fn prune_now(&mut self) {
        self.prune_from = 1;
    }
}

/// Takes the feed and writes it until the feed is closed and drained.
/// Errors are counted, logged at most every 10 s, and reported as
/// lovebeat's own trouble; the changes of a failed batch are lost (and
/// counted), never retried forever.
pub(super) fn run(
    mut w: Writer,
    journal: &Journal,
    shared: &Arc<Shared>,
    stop: &dyn Fn() -> bool,
    now_state: &dyn Fn(Kind, &str) -> Option<u8>,
) {
    let mut last_error_log: Option<Instant> = None;
    let mut failing = false;
    w.prune_now();
    // The start's reconciliation goes a page at a time between batches,
    // so the feed is never held long, however many names there are.
    let started = now_ms();
    let mut reconcile_from = Some(0);
    loop {
        if let Some(from) = reconcile_from {
            reconcile_from = match w.reconcile(from, started, now_state) {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("cannot compare the history with the loaded state: {e}");
                    None
                }
            };
        }
        let stopping = stop();
        let batch = journal.take(if stopping { Duration::ZERO } else { BATCH_WAIT });
        if batch.lost_after > 0 {
            shared.lost.fetch_add(batch.lost_after, Ordering::Relaxed);
        }
        let changes: Vec<Change> = batch
            .events
            .iter()
            .filter_map(|e| record::change(e))
            .collect();
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
                }
            }
        }
        let now = now_ms();
        let wrote_changes = !changes.is_empty() && result.is_ok();
        let result = result
            .and_then(|()| w.alive(now, false))
            .and_then(|alive| w.prune(shared.retention_ms, now).map(|_| alive));
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
        let mut w = Writer::open(conn, 10_000, Default::default()).expect("writer");
        w.prune_now();
        assert_eq!(w.prune(9_000, 10_000).expect("prune"), 4);
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
