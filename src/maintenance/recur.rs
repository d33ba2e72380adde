//! A recurring window's occurrences: a cron schedule read in an IANA zone
//! (croner and chrono-tz, as job schedules are: daylight-saving changes
//! follow Vixie cron), each occurrence lasting a fixed duration. Computed
//! when asked, from the time asked about: nothing is generated ahead.

use crate::engine::job::Schedule;

/// Shortest time between two openings: a window that opens more often
/// than hourly is a mistake, and the bound keeps any range's occurrences
/// countable.
pub const MIN_GAP_MS: i64 = 3_600_000;
/// Occurrences of one window one range counts at most (more than a year of
/// hourly openings).
pub const MAX_OCCURRENCES: usize = 10_000;
/// Openings looked at to check [`MIN_GAP_MS`].
const GAP_CHECKS: usize = 48;
/// Longest duration text read.
const MAX_DURATION_TEXT: usize = 32;
/// Longest cron expression read.
const MAX_EXPR_LEN: usize = 200;
/// Longest zone name read (the longest IANA name is 32 bytes).
const MAX_TZ_LEN: usize = 64;

/// A schedule and how long each of its occurrences lasts.
#[derive(Debug)]
pub struct Recurrence {
    schedule: Schedule,
    duration_ms: i64,
}

impl Recurrence {
    /// Reads `expr` in zone `tz` (UTC when `None`), each occurrence
    /// lasting `duration` (`2h`, or seconds); the error says what is wrong.
    /// `check_gaps`: refuse a schedule that opens more often than
    /// [`MIN_GAP_MS`] (a window read back from the store was checked when
    /// it was made, and a schedule's gaps do not change).
    pub fn new(
        expr: &str,
        tz: Option<&str>,
        duration: &str,
        check_gaps: bool,
    ) -> Result<Recurrence, String> {
        if duration.len() > MAX_DURATION_TEXT {
            return Err(format!(
                "duration is longer than {MAX_DURATION_TEXT} bytes (write 90m, 2h or seconds)"
            ));
        }
        if expr.len() > MAX_EXPR_LEN {
            return Err(format!("schedule is longer than {MAX_EXPR_LEN} bytes"));
        }
        if tz.is_some_and(|z| z.len() > MAX_TZ_LEN) {
            return Err(format!(
                "tz is longer than {MAX_TZ_LEN} bytes: not an IANA zone"
            ));
        }
        let duration_ms = crate::settings::duration::parse_duration_input(duration)
            .map_err(|e| e.to_string())
            .and_then(|ms| i64::try_from(ms).map_err(|_| "duration too large".to_string()))?;
        if duration_ms <= 0 {
            return Err("duration must be more than 0".into());
        }
        if duration_ms > super::MAX_DURATION_MS {
            return Err("an occurrence lasts at most 7 days (duration)".into());
        }
        let schedule = Schedule::parse(expr, tz.unwrap_or("UTC"), 0).map_err(|e| {
            // croner's reasons can be long; the zone is echoed short.
            let text = e.to_string();
            text.chars().take(200).collect::<String>()
        })?;
        let rec = Recurrence {
            schedule,
            duration_ms,
        };
        if !check_gaps {
            return Ok(rec);
        }
        let mut at = crate::clock::now_ms();
        let mut previous: Option<i64> = None;
        for _ in 0..GAP_CHECKS {
            let Some(next) = rec.schedule.next_fire(at) else {
                break;
            };
            if previous.is_some_and(|p| next - p < MIN_GAP_MS) {
                return Err(format!(
                    "schedule '{}' opens more often than once an hour",
                    rec.schedule.expr
                ));
            }
            previous = Some(next);
            at = next;
        }
        Ok(rec)
    }

    /// The occurrence open at `t` (the earliest, if several overlap), or
    /// else the next one: `(start, end)`.
    pub fn open_or_next(&self, t: i64) -> Option<(i64, i64)> {
        // An occurrence starting at `s` is open at `t` when
        // `t - duration < s <= t`: the first opening after `t - duration`
        // is open now if it is not after `t`, and is the next one if it is.
        let s = self.schedule.next_fire(t.checked_sub(self.duration_ms)?)?;
        Some((s, s.saturating_add(self.duration_ms)))
    }

    /// The occurrences' times within `[lo, hi)`, sorted, merged where they
    /// overlap, and clipped to the range; at most [`MAX_OCCURRENCES`], and
    /// at most `budget` (which is decreased by those found).
    pub fn intervals(&self, lo: i64, hi: i64, budget: &mut usize) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let Some(from) = lo.checked_sub(self.duration_ms) else {
            return out;
        };
        let mut next = self.schedule.next_fire(from);
        while let Some(s) = next {
            if s >= hi || out.len() >= MAX_OCCURRENCES || *budget == 0 {
                break;
            }
            *budget -= 1;
            out.push((s.max(lo), s.saturating_add(self.duration_ms).min(hi)));
            next = self.schedule.next_fire(s);
        }
        super::merge(out)
    }
}
