//! Job monitoring (README, "Cron jobs and scripts"): cron schedules, start/fail signals, run
//! times, `max_runtime` and snooze.
//!
//! None of it is on the path of a plain service: the fields live in a
//! [`JobExt`] that a service allocates only when it first uses one of them.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// Grace after a fire time when none is given: 5 minutes.
pub const DEFAULT_GRACE_MS: i64 = 5 * 60 * 1000;
/// Run times kept per service.
pub const RUN_HISTORY_LEN: usize = 100;
/// Output kept from a failure: its last 10 KiB.
pub const OUTPUT_LIMIT: usize = 10 * 1024;

/// Why a schedule (or its zone, or its grace) cannot be used; the message
/// names the problem for a 400 or a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not a cron expression croner reads.
    #[error("schedule '{expr}' is not a valid cron expression: {reason}")]
    BadExpression {
        /// The expression as given.
        expr: String,
        /// croner's reason.
        reason: String,
    },
    /// Not an IANA zone name.
    #[error("time zone '{0}' is not an IANA zone name (like Europe/Stockholm)")]
    BadZone(String),
    /// A negative grace.
    #[error("grace must be 0 or more, not {0} ms")]
    NegativeGrace(i64),
    /// Valid syntax for a time that never comes (`0 0 30 2 *`).
    #[error("schedule '{0}' never fires")]
    NeverFires(String),
    /// `tz` or `grace` without a schedule.
    #[error("tz and grace need a schedule")]
    SettingsWithoutSchedule,
    /// Both a timeout and a schedule.
    #[error("give either a timeout or a schedule, not both")]
    TimeoutAndSchedule,
}

/// A parsed cron schedule in a time zone, with its grace.
#[derive(Debug)]
pub struct Schedule {
    /// The expression as given.
    pub expr: String,
    cron: Cron,
    /// The zone its fields are read in.
    pub tz: Tz,
    /// How long after a fire time the beat may come.
    pub grace_ms: i64,
}

/// Two schedules are the same when they fire at the same times with the
/// same grace: the same expression in the same zone.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expr == other.expr && self.tz == other.tz && self.grace_ms == other.grace_ms
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parses a 5-field expression (or `@hourly`…) in zone `tz`; errors name
    /// the problem for a 400.
    pub fn parse(expr: &str, tz: &str, grace_ms: i64) -> Result<Schedule, ScheduleError> {
        let expr = expr.trim();
        // croner reads an empty list item (`0 , * * *`) as a field that
        // matches nothing, and the never-fires check below would then walk
        // every day to the year 5000: seconds of CPU for one request.
        if expr
            .split_whitespace()
            .any(|field| field.split(',').any(str::is_empty))
        {
            return Err(ScheduleError::BadExpression {
                expr: expr.to_string(),
                reason: "a list has an empty item".into(),
            });
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let cron = parser
            .parse(expr)
            .map_err(|e| ScheduleError::BadExpression {
                expr: expr.to_string(),
                reason: e.to_string(),
            })?;
        let tz: Tz = tz
            .trim()
            .parse()
            .map_err(|_| ScheduleError::BadZone(tz.to_string()))?;
        if grace_ms < 0 {
            return Err(ScheduleError::NegativeGrace(grace_ms));
        }
        let schedule = Schedule {
            expr: expr.to_string(),
            cron,
            tz,
            grace_ms,
        };
        // `0 0 30 2 *` is valid syntax for a day that never comes: refuse
        // it here, once, rather than search to the year 5000 on every beat.
        if schedule.next_fire(crate::clock::now_ms()).is_none() {
            return Err(ScheduleError::NeverFires(expr.to_string()));
        }
        Ok(schedule)
    }

    /// The schedule that `schedule`, `tz` and `grace` (ms) ask for, as a
    /// request or a `[[services]]` section gives them: `None` without an
    /// expression; `tz` and `grace` need one, and a timeout excludes one.
    pub fn from_settings(
        expr: Option<&str>,
        tz: Option<&str>,
        grace_ms: Option<i64>,
        has_timeout: bool,
    ) -> Result<Option<Schedule>, ScheduleError> {
        let Some(expr) = expr else {
            if tz.is_some() || grace_ms.is_some() {
                return Err(ScheduleError::SettingsWithoutSchedule);
            }
            return Ok(None);
        };
        if has_timeout {
            return Err(ScheduleError::TimeoutAndSchedule);
        }
        Schedule::parse(
            expr,
            tz.unwrap_or("UTC"),
            grace_ms.unwrap_or(DEFAULT_GRACE_MS),
        )
        .map(Some)
    }

    /// The first fire time strictly after `after_ms` (ms), in real time.
    /// Daylight-saving changes follow Vixie cron (croner implements it).
    pub fn next_fire(&self, after_ms: i64) -> Option<i64> {
        let start = self
            .tz
            .from_utc_datetime(&Utc.timestamp_millis_opt(after_ms).single()?.naive_utc());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The deadline counted from `from_ms`: next fire time plus grace.
    pub fn deadline_after(&self, from_ms: i64) -> i64 {
        self.next_fire(from_ms)
            .map_or(i64::MAX, |t| t.saturating_add(self.grace_ms))
    }
}

/// A job's failure, as `last_failure` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobFailure {
    /// When it was reported (ms).
    pub ts: i64,
    /// The exit code, if one was reported.
    pub exit_code: Option<i32>,
    /// The last 10 KiB of the output sent with it.
    pub output: String,
    /// Why lovebeat itself declared the failure ("ran too long").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The last `OUTPUT_LIMIT` bytes of `raw`, cut at a character boundary,
/// invalid UTF-8 replaced by U+FFFD.
pub fn output_tail(raw: &[u8]) -> String {
    let mut start = raw.len().saturating_sub(OUTPUT_LIMIT);
    // Skip continuation bytes so the cut lands on a character boundary.
    while start < raw.len() && start > 0 && (raw[start] & 0xC0) == 0x80 {
        start += 1;
    }
    let text = String::from_utf8_lossy(&raw[start..]).into_owned();
    if text.len() <= OUTPUT_LIMIT {
        return text;
    }
    // Replacement characters can make it longer; cut again on a boundary.
    let mut cut = text.len() - OUTPUT_LIMIT;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}

/// The rarely used fields of a service, allocated on first use.
#[derive(Debug, Default, Clone)]
pub struct JobExt {
    /// The cron schedule, when the timeout is `Timeout::Schedule`.
    pub schedule: Option<Arc<Schedule>>,
    /// The current deadline of a scheduled service (ms): computed once per
    /// beat or schedule change, never per tick.
    pub next_deadline: i64,
    /// When the current run started (ms), 0 if never.
    pub started_at: i64,
    /// A start with no beat or fail after it yet.
    pub running: bool,
    /// Run times (beat − start, ms), oldest first, at most 100.
    pub run_history: VecDeque<u32>,
    /// A fail (or "ran too long") keeps the service ERROR until a beat.
    pub failed: bool,
    /// The latest failure.
    pub last_failure: Option<JobFailure>,
    /// Longest a run may take before it is a failure (ms).
    pub max_runtime: Option<i64>,
    /// End of a snooze (ms), 0 for a plain mute or none.
    pub muted_until: i64,
}

impl JobExt {
    /// When the current run becomes "ran too long", if it can.
    pub fn runtime_deadline(&self) -> Option<i64> {
        match (self.running, self.max_runtime) {
            (true, Some(max)) if !self.failed => Some(self.started_at.saturating_add(max)),
            _ => None,
        }
    }

    /// A beat ends the run (recording its time) and any failure.
    pub fn on_beat(&mut self, now: i64) {
        if self.running {
            let ran = u32::try_from((now - self.started_at).max(0)).unwrap_or(u32::MAX);
            if self.run_history.len() == RUN_HISTORY_LEN {
                self.run_history.pop_front();
            }
            self.run_history.push_back(ran);
            self.running = false;
        }
        self.failed = false;
    }

    /// True when nothing in it is in use any more.
    pub fn is_unused(&self) -> bool {
        self.schedule.is_none()
            && self.started_at == 0
            && !self.running
            && self.run_history.is_empty()
            && !self.failed
            && self.last_failure.is_none()
            && self.max_runtime.is_none()
            && self.muted_until == 0
    }
}

/// The job fields as the database stores them, beside the 1.x fields of
/// a `SERV` record; each is left out while unused, so a database without
/// job monitoring is byte for byte what 1.x writes. Read back by
/// `db/format.rs` `ServiceRecord`, which lists the same fields (see there why).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct JobRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tz: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) grace: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_runtime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) muted_until: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) running: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_history: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_failure: Option<JobFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failed: Option<bool>,
}

impl JobRecord {
    /// What to store for `ext`.
    pub fn from_ext(e: &JobExt) -> JobRecord {
        let s = e.schedule.as_deref();
        JobRecord {
            schedule: s.map(|s| s.expr.clone()),
            tz: s.map(|s| s.tz.name().to_string()),
            grace: s.map(|s| s.grace_ms),
            max_runtime: e.max_runtime,
            muted_until: (e.muted_until > 0).then_some(e.muted_until),
            started_at: (e.started_at > 0).then_some(e.started_at),
            running: e.running.then_some(true),
            run_history: (!e.run_history.is_empty())
                .then(|| e.run_history.iter().copied().collect()),
            last_failure: e.last_failure.clone(),
            failed: e.failed.then_some(true),
        }
    }

    /// The fields back, or why they cannot be used; `None` when empty.
    /// `next_deadline` is left for the engine to compute.
    pub fn to_ext(&self) -> Result<Option<JobExt>, ScheduleError> {
        if *self == JobRecord::default() {
            return Ok(None);
        }
        let schedule = match &self.schedule {
            Some(expr) => Some(Arc::new(Schedule::parse(
                expr,
                self.tz.as_deref().unwrap_or("UTC"),
                self.grace.unwrap_or(DEFAULT_GRACE_MS),
            )?)),
            None => None,
        };
        let mut run_history: VecDeque<u32> = self.run_history.clone().unwrap_or_default().into();
        while run_history.len() > RUN_HISTORY_LEN {
            run_history.pop_front();
        }
        Ok(Some(JobExt {
            schedule,
            next_deadline: 0,
            started_at: self.started_at.unwrap_or(0),
            running: self.running.unwrap_or(false),
            run_history,
            failed: self.failed.unwrap_or(false),
            last_failure: self.last_failure.clone(),
            max_runtime: self.max_runtime.filter(|m| *m > 0),
            muted_until: self.muted_until.unwrap_or(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, 0))
            .expect("valid date");
        tz.from_local_datetime(&naive)
            .earliest()
            .expect("exists")
            .timestamp_millis()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        at(Tz::UTC, y, mo, d, h, mi)
    }

    #[test]
    fn bad_input_names_the_problem() {
        let e = Schedule::parse("61 * * * *", "UTC", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("61 * * * *"), "{e}");
        let e = Schedule::parse("* * * * * *", "UTC", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid cron"), "{e}");
        let e = Schedule::parse("0 3 * * *", "Mars/Olympus", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Olympus"), "{e}");
        assert!(Schedule::parse("0 3 * * *", "UTC", -1).is_err());
        let e = Schedule::parse("0 0 30 2 *", "UTC", 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("never fires"), "{e}");
        // Found by fuzzing the config: an empty list item took seconds.
        for expr in ["0 , * * *", "0 1,,2 * * *", "0 1, * * *", ",0 * * * *"] {
            let start = std::time::Instant::now();
            let e = Schedule::parse(expr, "UTC", 0).expect_err(expr).to_string();
            assert!(e.contains("empty item"), "{e}");
            assert!(start.elapsed() < std::time::Duration::from_millis(100));
        }
    }

    #[test]
    fn names_nicknames_lists_ranges_and_steps() {
        let t0 = utc(2026, 11, 25, 10, 7); // a Wednesday
        let s = |e: &str| Schedule::parse(e, "UTC", 0).expect(e);
        assert_eq!(s("@hourly").next_fire(t0), Some(utc(2026, 11, 25, 11, 0)));
        assert_eq!(s("@daily").next_fire(t0), Some(utc(2026, 11, 26, 0, 0)));
        assert_eq!(s("@weekly").next_fire(t0), Some(utc(2026, 11, 29, 0, 0)));
        assert_eq!(s("@monthly").next_fire(t0), Some(utc(2026, 12, 1, 0, 0)));
        assert_eq!(s("@yearly").next_fire(t0), Some(utc(2027, 1, 1, 0, 0)));
        assert_eq!(
            s("*/15 * * * *").next_fire(t0),
            Some(utc(2026, 11, 25, 10, 15))
        );
        assert_eq!(
            s("0 9-17/4 * * mon-fri").next_fire(t0),
            Some(utc(2026, 11, 25, 13, 0))
        );
        assert_eq!(
            s("30 2 1,15 jan,dec *").next_fire(t0),
            Some(utc(2026, 12, 1, 2, 30))
        );
        // Strictly after: a beat exactly at a fire time waits for the next.
        let t = utc(2026, 11, 25, 11, 0);
        assert_eq!(s("@hourly").next_fire(t), Some(utc(2026, 11, 25, 12, 0)));
        assert_eq!(
            Schedule::parse("0 3 * * *", "UTC", 600_000)
                .expect("ok")
                .deadline_after(t0),
            utc(2026, 11, 26, 3, 10)
        );
    }

    // Europe/Stockholm: 2026-03-29 02:00 CET jumps to 03:00 CEST;
    // 2026-10-25 03:00 CEST falls back to 02:00 CET.
    const STO: Tz = chrono_tz::Europe::Stockholm;

    #[test]
    fn fixed_time_in_the_spring_gap_fires_at_the_next_valid_minute() {
        let s = Schedule::parse("30 2 * * *", "Europe/Stockholm", 0).expect("ok");
        let before = at(STO, 2026, 3, 28, 12, 0);
        // 02:30 does not exist on 29 March: it fires at 03:00 CEST,
        // which is 01:00 UTC (hand-checked).
        let fire = s.next_fire(before).expect("fires");
        assert_eq!(fire, utc(2026, 3, 29, 1, 0));
        // And the day after at 02:30 CEST = 00:30 UTC.
        assert_eq!(s.next_fire(fire), Some(utc(2026, 3, 30, 0, 30)));
    }

    #[test]
    fn fixed_time_in_the_autumn_overlap_fires_once() {
        let s = Schedule::parse("30 2 * * *", "Europe/Stockholm", 0).expect("ok");
        let before = at(STO, 2026, 10, 24, 12, 0);
        // 02:30 happens twice on 25 October; the first is 02:30 CEST,
        // 00:30 UTC (hand-checked), and the second is skipped.
        let fire = s.next_fire(before).expect("fires");
        assert_eq!(fire, utc(2026, 10, 25, 0, 30));
        assert_eq!(s.next_fire(fire), Some(utc(2026, 10, 26, 1, 30)));
    }

    #[test]
    fn wildcard_hours_fire_at_every_real_instant_across_the_overlap() {
        let s = Schedule::parse("30 * * * *", "Europe/Stockholm", 0).expect("ok");
        // From 00:00 UTC on 25 October: 02:30 CEST (00:30 UTC), then 02:30
        // CET (01:30 UTC), then 03:30 CET (02:30 UTC): an hour apart each.
        let mut t = utc(2026, 10, 25, 0, 0);
        let mut fires = Vec::new();
        for _ in 0..3 {
            t = s.next_fire(t).expect("fires");
            fires.push(t);
        }
        assert_eq!(
            fires,
            vec![
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 25, 1, 30),
                utc(2026, 10, 25, 2, 30)
            ]
        );
        // In the spring gap the 02:30 instant does not exist and is skipped.
        let mut t = utc(2026, 3, 29, 0, 0);
        t = s.next_fire(t).expect("fires");
        assert_eq!(t, utc(2026, 3, 29, 0, 30)); // 01:30 CET
        t = s.next_fire(t).expect("fires");
        assert_eq!(t, utc(2026, 3, 29, 1, 30)); // 03:30 CEST
    }

    #[test]
    fn agrees_with_the_crate_over_a_year_of_daily_fires() {
        // Our wrapper must add nothing to croner's own answers.
        let s = Schedule::parse("0 3 * * *", "Europe/Stockholm", 0).expect("ok");
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse("0 3 * * *")
            .expect("ok");
        let mut t = at(STO, 2026, 1, 1, 0, 0);
        let mut local = STO.timestamp_millis_opt(t).single().expect("valid");
        for _ in 0..365 {
            local = cron.find_next_occurrence(&local, false).expect("next");
            t = s.next_fire(t).expect("next");
            assert_eq!(t, local.timestamp_millis());
            assert_eq!(local.format("%H:%M").to_string(), "03:00");
        }
    }

    #[test]
    fn output_keeps_the_last_10_kib_on_a_character_boundary() {
        assert_eq!(output_tail(b"short"), "short");
        let mut raw = "é".repeat(OUTPUT_LIMIT).into_bytes(); // 2 bytes each
        raw.extend_from_slice(b"end");
        let t = output_tail(&raw);
        assert!(t.len() <= OUTPUT_LIMIT);
        assert!(t.ends_with("end"));
        assert!(t.starts_with('é'));
        assert_eq!(output_tail(b"bad \xff byte"), "bad \u{fffd} byte");
    }

    #[test]
    fn a_beat_records_the_run_time_and_clears_the_failure() {
        let mut j = JobExt {
            started_at: 1000,
            running: true,
            max_runtime: Some(500),
            ..Default::default()
        };
        assert_eq!(j.runtime_deadline(), Some(1500));
        j.on_beat(1800);
        assert_eq!(j.run_history, [800]);
        assert!(!j.running);
        assert_eq!(j.runtime_deadline(), None);
        for i in 0..150 {
            j.running = true;
            j.started_at = i;
            j.on_beat(i + 10);
        }
        assert_eq!(j.run_history.len(), RUN_HISTORY_LEN);
    }
}
