//! The history file's tables. The file is plain SQLite: an operator opens
//! it with `sqlite3` (README, "History"). Each change of the schema bumps
//! `user_version` and adds a step to [`migrate`]; a file newer than this
//! build is refused rather than written wrongly.

use rusqlite::Connection;

/// The schema this build writes.
pub const VERSION: i64 = 9;

/// Version 1: names, their state changes, and lovebeat's own runs.
///
/// - `names`: one row per service (`kind` 0) or alarm (`kind` 1) ever
///   seen; `deleted_at` (ms) while it is deleted. Changes refer to it by
///   `id`, so a long name is stored once, not per change.
/// - `changes`: one row per state change, clustered by name and time (a
///   name's history is one range read). `seq` orders changes of one
///   millisecond and makes the key unique; states are `State as u8`,
///   `reason` a [`super::record::Reason`], `detail` its number (an exit
///   code, an incident number) or NULL.
/// - `lifecycle`: one row per run of lovebeat, `started`, `last_seen`
///   (renewed while it runs) and `stopped` (a clean stop): the time
///   between one run's last sign of life and the next start is time
///   lovebeat was down, which uptime counts as unknown.
const V1: &str = "
CREATE TABLE names (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    name TEXT NOT NULL,
    deleted_at INTEGER,
    UNIQUE (kind, name)
);
CREATE TABLE changes (
    name_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    from_state INTEGER,
    to_state INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    detail INTEGER,
    PRIMARY KEY (name_id, ts, seq)
) WITHOUT ROWID;
CREATE TABLE lifecycle (
    id INTEGER PRIMARY KEY,
    started INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    stopped INTEGER
);
";

/// Version 2: the incidents of alarms (`incidents.rs`), one row per
/// incident, clustered by the alarm and when it opened (a range of them is
/// one range read), and indexed by its number (so the close of an incident
/// open at a stop finds it after the restart). The number is not the key:
/// an alarm removed from the configuration and added again counts from 1
/// again, and its new incidents must not be taken for the old ones.
/// Version 3: each name's state after its last change (`names.last_state`,
/// `DELETED` after a deletion), which the start compares with the state
/// the engine loaded: after a kill -9 the database file can be older than
/// the history, and the history must say what lovebeat now holds.
const V3: &str = "
ALTER TABLE names ADD COLUMN last_state INTEGER;
UPDATE names SET last_state = (
    SELECT to_state FROM changes c WHERE c.name_id = names.id
    ORDER BY ts DESC, seq DESC LIMIT 1
);
";

/// Version 4: maintenance windows (`maintenance.rs`, README "Maintenance
/// windows"), one row per window as it was made: the API's (which live
/// here only) and the configuration's (copied at each start, so uptime
/// finds every window in one place). A window changes no state: it is
/// its own row, read beside the changes. `deleted_at` ends it (a
/// deletion through the API, or a window gone from or changed in the
/// configuration): its past stays maintenance, until retention.
/// `first_ms` and `last_ms` bound the time it may cover (a one-off
/// window's start and end; a recurring one's creation, and NULL), so that
/// uptime reads only the rows of its range.
const V4: &str = "
CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    source INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deleted_at INTEGER,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER
);
CREATE INDEX IF NOT EXISTS maintenance_live ON maintenance (deleted_at);
";

/// Version 5: job runs, the audit trail and daily rollups.
///
/// - `runs`: one row per ended job run (`engine::JobRun`); a rowid table,
///   since a run carries up to 10 KiB of output, indexed by the service
///   and its end (a range of runs is one range read).
/// - `audit`: who changed what through the API, or the configuration at a
///   start: `who` is the key's list and position (`write_keys[1]`), never
///   the key, or `none` or `config`; indexed by time.
/// - `config_seen`: each configured alarm's and alert's fingerprint (a
///   SHA-256 of its settings, so no secret is stored), which the next
///   start compares with its own to audit what the configuration changed.
/// - `daily`: per name and finished UTC day (`day`: days since the epoch),
///   the figures of `uptime::compute` for it; kept past `retention`
///   (`rollup_retention`), so a year's uptime never scans raw rows.
///   `names.rolled_until` is the first day not rolled up yet.
const V5: &str = "
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name_id INTEGER NOT NULL,
    started INTEGER,
    ended INTEGER NOT NULL,
    exit_code INTEGER,
    ok INTEGER NOT NULL,
    ran_too_long INTEGER NOT NULL DEFAULT 0,
    output TEXT
);
CREATE INDEX runs_name ON runs (name_id, ended, id);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_ts ON audit (ts, id);
CREATE TABLE config_seen (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE daily (
    name_id INTEGER NOT NULL,
    day INTEGER NOT NULL,
    up_ms INTEGER NOT NULL,
    down_ms INTEGER NOT NULL,
    muted_ms INTEGER NOT NULL,
    maintenance_ms INTEGER NOT NULL,
    unknown_ms INTEGER NOT NULL,
    incidents INTEGER NOT NULL,
    recoveries INTEGER NOT NULL,
    recovery_ms INTEGER NOT NULL,
    longest_down_ms INTEGER NOT NULL,
    lead_down_ms INTEGER NOT NULL,
    tail_down_ms INTEGER NOT NULL,
    PRIMARY KEY (name_id, day)
) WITHOUT ROWID;
ALTER TABLE names ADD COLUMN rolled_until INTEGER;
";

const V2: &str = "
CREATE TABLE incidents (
    name_id INTEGER NOT NULL,
    opened INTEGER NOT NULL,
    number INTEGER NOT NULL,
    closed INTEGER,
    failed_at_open INTEGER NOT NULL,
    first_failed TEXT,
    PRIMARY KEY (name_id, opened, number)
) WITHOUT ROWID;
CREATE INDEX incidents_number ON incidents (name_id, number);
";

/// Version 7: what each `[[reports]]` has sent (`history/report_log.rs`):
/// one row per report name, `covered_until` the end (ms) of the last
/// period it sent, or where it began to be owed (the start of the period
/// it was first seen in, `sent_at` NULL), so that a restart neither skips
/// nor repeats a period.
const V7: &str = "
CREATE TABLE IF NOT EXISTS reports_sent (
    name TEXT PRIMARY KEY,
    covered_until INTEGER NOT NULL,
    sent_at INTEGER
);
";

/// Version 8: the maintenance each status page announced to its
/// subscribers (`subscribers.rs`): one row per page, window name and
/// occurrence start (ms), so an occurrence is announced once however
/// often lovebeat restarts during it.
const V8: &str = "
CREATE TABLE IF NOT EXISTS page_maintenance_told (
    page TEXT NOT NULL,
    name TEXT NOT NULL,
    start INTEGER NOT NULL,
    told_at INTEGER NOT NULL,
    PRIMARY KEY (page, name, start)
) WITHOUT ROWID;
";

/// Version 6: the public status pages' own incidents (`pages.rs`, README,
/// "Status pages"), what a visitor reads: made through the API or opened
/// by an alarm entry going ERROR (`auto_alarm`, which at most one open
/// incident of a page has per alarm, so a restart never opens it twice),
/// each with its updates in order. Their subscribers by mail
/// (`subscribers.rs`): an address, its unguessable token (in the link to
/// confirm and in every mail's link to leave), when it was last mailed to
/// confirm, and when it confirmed; and per page the last update mailed,
/// so a restart neither repeats a mail nor skips one.
const V6: &str = "
CREATE TABLE IF NOT EXISTS page_incidents (
    id INTEGER PRIMARY KEY,
    page TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    opened INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    resolved INTEGER,
    postmortem TEXT,
    auto_alarm TEXT
);
CREATE INDEX IF NOT EXISTS page_incidents_page ON page_incidents (page, opened);
CREATE UNIQUE INDEX IF NOT EXISTS page_incidents_auto ON page_incidents (page, auto_alarm)
    WHERE resolved IS NULL AND auto_alarm IS NOT NULL;
CREATE TABLE IF NOT EXISTS page_updates (
    id INTEGER PRIMARY KEY,
    incident INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS page_updates_incident ON page_updates (incident, ts);
CREATE TABLE IF NOT EXISTS page_subscribers (
    id INTEGER PRIMARY KEY,
    page TEXT NOT NULL,
    address TEXT NOT NULL,
    token TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL,
    mailed INTEGER NOT NULL,
    confirmed INTEGER,
    UNIQUE (page, address)
);
CREATE TABLE IF NOT EXISTS page_mail_cursor (
    page TEXT PRIMARY KEY,
    last_update INTEGER NOT NULL
);
";

/// Version 9: the writer's next `seq`, in one row written in the same
/// transaction as the changes it numbers, so that a start reads one row
/// instead of scanning every change for the highest (`MAX(seq)` has no
/// index: seconds at a hundred million changes, at every start; loadtest
/// `history-queries`). Filled once, from that scan, when a file is
/// upgraded.
const V9: &str = "
CREATE TABLE IF NOT EXISTS next_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO next_seq (id, seq) SELECT 1, COALESCE(MAX(seq), 0) + 1 FROM changes;
";

/// Why a history file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// SQLite refused (not a database, unreadable, read-only, ...).
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A later lovebeat wrote it.
    #[error("it was written by a newer lovebeat (schema {0}, this one knows {VERSION})")]
    Newer(i64),
}

/// Brings the file's tables to [`VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(SchemaError::Newer(version));
    }
    if version < 1 {
        let tx = conn.transaction()?;
        tx.execute_batch(V1)?;
        tx.execute_batch("PRAGMA user_version = 1")?;
        tx.commit()?;
    }
    if version < 2 {
        let tx = conn.transaction()?;
        tx.execute_batch(V2)?;
        tx.execute_batch("PRAGMA user_version = 2")?;
        tx.commit()?;
    }
    if version < 3 {
        let tx = conn.transaction()?;
        tx.execute_batch(V3)?;
        tx.execute_batch("PRAGMA user_version = 3")?;
        tx.commit()?;
    }
    if version < 4 {
        let tx = conn.transaction()?;
        tx.execute_batch(V4)?;
        tx.execute_batch("PRAGMA user_version = 4")?;
        tx.commit()?;
    }
    if version < 5 {
        let tx = conn.transaction()?;
        tx.execute_batch(V5)?;
        tx.execute_batch("PRAGMA user_version = 5")?;
        tx.commit()?;
    }
    if version < 6 {
        let tx = conn.transaction()?;
        tx.execute_batch(V6)?;
        tx.execute_batch("PRAGMA user_version = 6")?;
        tx.commit()?;
    }
    if version < 7 {
        let tx = conn.transaction()?;
        tx.execute_batch(V7)?;
        tx.execute_batch("PRAGMA user_version = 7")?;
        tx.commit()?;
    }
    if version < 8 {
        let tx = conn.transaction()?;
        tx.execute_batch(V8)?;
        tx.execute_batch("PRAGMA user_version = 8")?;
        tx.commit()?;
    }
    if version < 9 {
        let tx = conn.transaction()?;
        tx.execute_batch(V9)?;
        tx.execute_batch("PRAGMA user_version = 9")?;
        tx.commit()?;
    }
    Ok(())
}

/// The settings every connection to the file gets: WAL (readers never
/// wait for the writer), a busy wait instead of an immediate error, and
/// `NORMAL` sync (a power cut may lose the last transactions, never
/// corrupt the file).
pub fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}
