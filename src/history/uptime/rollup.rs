//! Daily rollups (README, "History"): each finished UTC day of each name,
//! computed once by the writer through the same [`super::compute`] that
//! answers `/uptime`, and kept past the raw changes' `retention`, so a
//! year's uptime reads a year of day rows, never a year of changes.
//!
//! An answer is then cut in three: the whole UTC days the rollups cover,
//! and the edges before and after them, computed from the raw changes as
//! before; the parts are added up by [`combine`], which joins an ERROR
//! period that runs across midnight, so the figures are those the raw
//! changes give, to the millisecond. A day with no row inside the rolled
//! range is one after the name's deletion: unknown.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Figures, Report};
use crate::history::record::Kind;

/// A UTC day, in ms.
pub const DAY: i64 = 86_400_000;
/// A day is rolled up once it ended this long ago: the changes of its
/// last moments are written by then (the feed waits a second at most),
/// and lovebeat's last sign of life (renewed every 10 s) is past it.
pub const MARGIN: i64 = 60_000;
/// Days of one name rolled up in one step at most.
const DAYS_PER_STEP: i64 = 400;

/// What one part of a window adds to it.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    since: i64,
    until: i64,
    up: i64,
    down: i64,
    muted: i64,
    maintenance: i64,
    unknown: i64,
    incidents: u64,
    recoveries: u64,
    recovery_total: i128,
    longest: i64,
    /// The ERROR run from `since`, and the one up to `until`.
    lead: i64,
    tail: i64,
}

impl Part {
    fn of(f: &Figures) -> Part {
        Part {
            since: f.since,
            until: f.until,
            up: f.up_ms,
            down: f.down_ms,
            muted: f.muted_ms,
            maintenance: f.maintenance_ms,
            unknown: f.unknown_ms,
            incidents: f.incidents,
            recoveries: f.recoveries,
            recovery_total: f.recovery_total,
            longest: f.longest_down_ms,
            lead: f.lead_down,
            tail: if f.run_end == f.until { f.run_len } else { 0 },
        }
    }

    /// A whole day nothing is known of (no row: after a deletion).
    fn unknown(since: i64, until: i64) -> Part {
        Part {
            since,
            until,
            up: 0,
            down: 0,
            muted: 0,
            maintenance: 0,
            unknown: until - since,
            incidents: 0,
            recoveries: 0,
            recovery_total: 0,
            longest: 0,
            lead: 0,
            tail: 0,
        }
    }
}

/// The figures of `[since, until)` from its consecutive `parts`.
fn combine(since: i64, until: i64, parts: &[Part]) -> Figures {
    let mut f = Figures::new(since, until);
    let mut carry = 0i64;
    let mut at = since;
    for p in parts {
        if p.since != at {
            carry = 0;
        }
        f.up_ms += p.up;
        f.down_ms += p.down;
        f.muted_ms += p.muted;
        f.maintenance_ms += p.maintenance;
        f.unknown_ms += p.unknown;
        f.incidents += p.incidents;
        f.recoveries += p.recoveries;
        f.recovery_total += p.recovery_total;
        let joined = if p.lead > 0 { carry + p.lead } else { 0 };
        f.longest_down_ms = f.longest_down_ms.max(p.longest).max(joined);
        if f.lead_down == p.since - since && p.lead > 0 {
            f.lead_down += p.lead;
        }
        carry = if p.lead > 0 && p.lead == p.until - p.since {
            carry + p.lead
        } else {
            p.tail
        };
        at = p.until;
    }
    if carry > 0 {
        f.run_end = at;
        f.run_len = carry;
    }
    f.finish();
    f
}

/// How one window is answered: raw edges around rolled days.
struct Plan {
    head: Option<(i64, i64)>,
    /// Day numbers `[a, b)`.
    days: Option<(i64, i64)>,
    tail: Option<(i64, i64)>,
}

/// [`super::compute`], reading whole UTC days from the rollups where
/// they cover them (README, "History"): the same figures, to the
/// millisecond, without reading those days' changes. `raw_from` is where
/// the raw changes are whole (now minus `retention`): a window that
/// begins or ends before it, inside a rolled-up day, is widened to that
/// whole day (its `since` and `until` say so), since the changes that
/// would cut the day are gone.
pub fn compute(
    conn: &Connection,
    kind: Kind,
    name: &str,
    windows: &[(i64, i64)],
    now: i64,
    raw_from: i64,
) -> rusqlite::Result<Option<Report>> {
    let Some((id, rolled_until)) = conn
        .prepare_cached("SELECT id, rolled_until FROM names WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind as u8, name], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let first: Option<i64> = conn
        .prepare_cached("SELECT MIN(day) FROM daily WHERE name_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let (lo_day, hi_day) = match (first, rolled_until) {
        (Some(f), Some(r)) if f < r => (f, r),
        _ => return super::compute(conn, kind, name, windows, now),
    };
    let rolled = |t: i64| (lo_day..hi_day).contains(&t.div_euclid(DAY));
    let windows: Vec<(i64, i64)> = windows
        .iter()
        .map(|&(since, until)| {
            let since = if since < raw_from && rolled(since) {
                since.div_euclid(DAY) * DAY
            } else {
                since
            };
            let until = if until < raw_from && rolled(until) && until.rem_euclid(DAY) != 0 {
                (until.div_euclid(DAY) + 1) * DAY
            } else {
                until
            };
            (since, until)
        })
        .collect();
    let plans: Vec<Plan> = windows
        .iter()
        .map(|&(since, until)| {
            let a = since.div_euclid(DAY) + i64::from(since.rem_euclid(DAY) != 0);
            let (a, b) = (a.max(lo_day), until.div_euclid(DAY).min(hi_day));
            if a < b {
                Plan {
                    head: (since < a * DAY).then_some((since, a * DAY)),
                    days: Some((a, b)),
                    tail: (b * DAY < until).then_some((b * DAY, until)),
                }
            } else {
                Plan {
                    head: Some((since, until)),
                    days: None,
                    tail: None,
                }
            }
        })
        .collect();
    // The raw pieces, computed in groups that touch, so no group reads
    // the changes of the rolled days between them.
    let mut pieces: Vec<(i64, i64)> = plans
        .iter()
        .flat_map(|p| p.head.into_iter().chain(p.tail))
        .collect();
    pieces.sort_unstable();
    pieces.dedup();
    let mut raw: HashMap<(i64, i64), Figures> = HashMap::new();
    let mut deleted_at = None;
    let mut group: Vec<(i64, i64)> = Vec::new();
    let mut flush = |group: &mut Vec<(i64, i64)>| -> rusqlite::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        if let Some(r) = super::compute(conn, kind, name, group, now)? {
            deleted_at = r.deleted_at;
            for (w, f) in group.iter().zip(r.windows) {
                raw.insert(*w, f);
            }
        }
        group.clear();
        Ok(())
    };
    for p in pieces {
        let joins = group
            .last()
            .is_some_and(|last| p.0 <= last.1 && p.1 >= last.1);
        if !joins {
            flush(&mut group)?;
        }
        group.push(p);
    }
    flush(&mut group)?;
    if deleted_at.is_none() {
        deleted_at = conn
            .prepare_cached("SELECT deleted_at FROM names WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
    }
    // The day rows every window needs, read once.
    let (a, b) = plans
        .iter()
        .filter_map(|p| p.days)
        .fold((i64::MAX, i64::MIN), |(a, b), d| (a.min(d.0), b.max(d.1)));
    let mut days: HashMap<i64, Part> = HashMap::new();
    if a < b {
        let mut stmt = conn.prepare_cached(
            "SELECT day, up_ms, down_ms, muted_ms, maintenance_ms, unknown_ms, incidents, \
             recoveries, recovery_ms, longest_down_ms, lead_down_ms, tail_down_ms \
             FROM daily WHERE name_id = ?1 AND day >= ?2 AND day < ?3",
        )?;
        let mut rows = stmt.query(params![id, a, b])?;
        while let Some(r) = rows.next()? {
            let day: i64 = r.get(0)?;
            days.insert(
                day,
                Part {
                    since: day * DAY,
                    until: (day + 1) * DAY,
                    up: r.get(1)?,
                    down: r.get(2)?,
                    muted: r.get(3)?,
                    maintenance: r.get(4)?,
                    unknown: r.get(5)?,
                    incidents: r.get(6)?,
                    recoveries: r.get(7)?,
                    recovery_total: i128::from(r.get::<_, i64>(8)?),
                    longest: r.get(9)?,
                    lead: r.get(10)?,
                    tail: r.get(11)?,
                },
            );
        }
    }
    let figures = windows
        .iter()
        .zip(&plans)
        .map(|(&(since, until), plan)| {
            let mut parts = Vec::new();
            let piece = |w: (i64, i64)| raw.get(&w).map(Part::of);
            parts.extend(plan.head.and_then(piece));
            if let Some((a, b)) = plan.days {
                for d in a..b {
                    parts.push(
                        days.get(&d)
                            .cloned()
                            .unwrap_or_else(|| Part::unknown(d * DAY, (d + 1) * DAY)),
                    );
                }
            }
            parts.extend(plan.tail.and_then(piece));
            combine(since, until, &parts)
        })
        .collect();
    Ok(Some(Report {
        name: name.to_string(),
        deleted_at,
        windows: figures,
    }))
}

/// One step of the rollups: the finished days not rolled up yet of the
/// names with ids in `[from, to)` (at most 400 days each), computed by
/// [`super::compute`] and written in the caller's transaction. A deleted
/// name is rolled up to its deletion's day. Returns the day rows written.
pub fn roll(conn: &Connection, from: i64, to: i64, now: i64) -> rusqlite::Result<usize> {
    let today = (now - MARGIN).div_euclid(DAY);
    /// A name to roll up: id, kind, name, `rolled_until`, `deleted_at`.
    type Due = (i64, u8, String, Option<i64>, Option<i64>);
    let mut names: Vec<Due> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, name, rolled_until, deleted_at FROM names \
             WHERE id >= ?1 AND id < ?2 AND (rolled_until IS NULL OR rolled_until < ?3) \
             AND (deleted_at IS NULL OR rolled_until IS NULL OR rolled_until * ?4 <= deleted_at)",
        )?;
        let mut rows = stmt.query(params![from, to, today, DAY])?;
        while let Some(r) = rows.next()? {
            names.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
        }
    }
    let mut written = 0;
    for (id, kind, name, rolled_until, deleted_at) in names {
        let kind = if kind == Kind::Alarm as u8 {
            Kind::Alarm
        } else {
            Kind::Service
        };
        let start = match rolled_until {
            Some(d) => d,
            None => {
                let first: Option<i64> = conn
                    .prepare_cached("SELECT MIN(ts) FROM changes WHERE name_id = ?1")?
                    .query_row([id], |r| r.get(0))?;
                match first {
                    Some(ts) => ts.div_euclid(DAY),
                    None => {
                        conn.prepare_cached("UPDATE names SET rolled_until = ?2 WHERE id = ?1")?
                            .execute(params![id, today])?;
                        continue;
                    }
                }
            }
        };
        let mut end = today.min(start.saturating_add(DAYS_PER_STEP));
        if let Some(d) = deleted_at {
            end = end.min(d.div_euclid(DAY) + 1);
        }
        if start >= end {
            continue;
        }
        let windows: Vec<(i64, i64)> = (start..end).map(|d| (d * DAY, (d + 1) * DAY)).collect();
        let Some(report) = super::compute(conn, kind, &name, &windows, now)? else {
            continue;
        };
        let mut insert = conn.prepare_cached(
            "INSERT OR REPLACE INTO daily (name_id, day, up_ms, down_ms, muted_ms, \
             maintenance_ms, unknown_ms, incidents, recoveries, recovery_ms, longest_down_ms, \
             lead_down_ms, tail_down_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for (day, f) in (start..end).zip(&report.windows) {
            let p = Part::of(f);
            insert.execute(params![
                id,
                day,
                p.up,
                p.down,
                p.muted,
                p.maintenance,
                p.unknown,
                p.incidents,
                p.recoveries,
                i64::try_from(p.recovery_total).unwrap_or(i64::MAX),
                p.longest,
                p.lead,
                p.tail
            ])?;
            written += 1;
        }
        conn.prepare_cached("UPDATE names SET rolled_until = ?2 WHERE id = ?1")?
            .execute(params![id, end])?;
    }
    Ok(written)
}

/// Rollup retention for names `[from, to)`: the day rows before
/// `cutoff` (ms). Returns how many went.
pub fn prune(conn: &Connection, from: i64, to: i64, cutoff: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM daily WHERE name_id >= ?1 AND name_id < ?2 AND day < ?3")?
        .execute(params![from, to, cutoff.div_euclid(DAY)])
}

#[cfg(test)]
mod tests;
