//! Uptime reports (README, "Reports"): per alarm, over a period and
//! against the period before it, the figures of the history's uptime
//! (`history::uptime`, whose arithmetic this module never repeats): uptime
//! with maintenance and muted time left out, the raw uptime, incidents,
//! total and longest downtime, mean time to recovery and maintenance
//! time. `GET /api/reports` and `lovebeat report` answer them for any
//! range; `[[reports]]` mails them each month or week (`schedule.rs`).

pub mod period;
pub mod render;
pub mod schedule;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::history::record::Kind;
use crate::history::uptime::{self, Figures};
use crate::settings::ConfigError;
use period::{Every, Period};

/// The longest range a report covers: a year and a month, as the history
/// keeps by default (`[history] retention = "400d"`).
pub const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Alarms one report names at most: each is one range read of its history.
pub const MAX_ALARMS: usize = 1000;

/// `[[reports]]`: a report mailed each month or week.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Its name: in the subject, the log, and the history's record of
    /// what was sent (so renaming it starts its record anew).
    pub name: String,
    /// The alarms it covers, in this order.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// A status page whose alarm entries it covers too (after `alarms`).
    /// Status pages resolve it to their entries where the configuration
    /// gathers them (`Config::report_alarms`); until they are part of the
    /// build, a report covers its `alarms`.
    #[serde(default)]
    pub status_page: Option<String>,
    /// `month` or `week` (ISO, from Monday).
    pub every: Every,
    /// The time zone whose midnights bound the periods (IANA; default UTC).
    #[serde(default = "utc")]
    pub tz: String,
    /// The alert whose mail alerter sends it (its other alerters are not
    /// used): `[alerts.<mail>] mail = "..."`.
    pub mail: String,
}

fn utc() -> String {
    "UTC".into()
}

impl ReportConfig {
    /// The time zone (checked at load, so UTC is only a fallback).
    pub fn zone(&self) -> chrono_tz::Tz {
        self.tz.parse().unwrap_or(chrono_tz::UTC)
    }

    /// Checks what the report says on its own and of the alerts: a name,
    /// something to cover, a known time zone, and an alert that mails.
    pub fn validate(
        &self,
        alerts: &std::collections::BTreeMap<String, crate::sinks::alerts::AlertConfig>,
    ) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::Invalid(format!("[[reports]] {why}")));
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return bad("name must be 1 to 200 characters".into());
        }
        let name = &self.name;
        if self.alarms.is_empty() && self.status_page.is_none() {
            return bad(format!(
                "'{name}' covers nothing: set alarms = [\"...\"] or status_page = \"...\""
            ));
        }
        if self.alarms.len() > MAX_ALARMS {
            return bad(format!("'{name}' names more than {MAX_ALARMS} alarms"));
        }
        if self.tz.parse::<chrono_tz::Tz>().is_err() {
            return bad(format!(
                "'{name}': tz '{}' is not an IANA time zone such as Europe/Berlin",
                self.tz
            ));
        }
        match alerts.get(&self.mail) {
            None => bad(format!(
                "'{name}' is mailed by alert '{}', but there is no [alerts.{}] section",
                self.mail, self.mail
            )),
            Some(a) if a.mail.as_ref().is_none_or(|r| r.0.is_empty()) => bad(format!(
                "'{name}' is mailed by alert '{}', which has no mail alerter: give [alerts.{}] a mail = \"address\" (a report is sent by mail only)",
                self.mail, self.mail
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The figures of one alarm in one period, as a report shows them:
/// `history::uptime::Figures`' public fields, so the API and the client
/// read and write the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodFigures {
    /// The period's start (ms), included.
    pub since: i64,
    /// The period's end (ms), excluded.
    pub until: i64,
    /// `up / (up + down)`: maintenance, muted and unknown time left out.
    pub uptime: Option<f64>,
    /// `up / period length`.
    pub uptime_raw: Option<f64>,
    /// Milliseconds OK.
    pub up_ms: i64,
    /// Milliseconds in ERROR: the total downtime.
    pub down_ms: i64,
    /// Milliseconds muted or snoozed.
    pub muted_ms: i64,
    /// Milliseconds in a maintenance window.
    pub maintenance_ms: i64,
    /// Milliseconds not known (lovebeat down, before the alarm existed).
    pub unknown_ms: i64,
    /// Incidents: transitions into ERROR within the period.
    pub incidents: u64,
    /// ERROR periods that ended within the period.
    pub recoveries: u64,
    /// Mean time to recovery of those; `null` when none ended.
    pub mttr_ms: Option<i64>,
    /// The longest unbroken downtime within the period.
    pub longest_down_ms: i64,
}

impl From<Figures> for PeriodFigures {
    fn from(f: Figures) -> Self {
        PeriodFigures {
            since: f.since,
            until: f.until,
            uptime: f.uptime,
            uptime_raw: f.uptime_raw,
            up_ms: f.up_ms,
            down_ms: f.down_ms,
            muted_ms: f.muted_ms,
            maintenance_ms: f.maintenance_ms,
            unknown_ms: f.unknown_ms,
            incidents: f.incidents,
            recoveries: f.recoveries,
            mttr_ms: f.mttr_ms,
            longest_down_ms: f.longest_down_ms,
        }
    }
}

/// The period's figures less the period before's: what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Uptime difference (a fraction: 0.001 is 0.1 percentage points);
    /// `null` when either side has none.
    pub uptime: Option<f64>,
    /// Raw uptime difference.
    pub uptime_raw: Option<f64>,
    /// Incidents difference.
    pub incidents: i64,
    /// Downtime difference (ms).
    pub down_ms: i64,
    /// Longest downtime difference (ms).
    pub longest_down_ms: i64,
    /// MTTR difference (ms); `null` when either side has none.
    pub mttr_ms: Option<i64>,
    /// Maintenance time difference (ms).
    pub maintenance_ms: i64,
}

impl Delta {
    fn of(now: &PeriodFigures, before: &PeriodFigures) -> Delta {
        let both = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let count = |a: u64, b: u64| {
            i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
        };
        Delta {
            uptime: both(now.uptime, before.uptime),
            uptime_raw: both(now.uptime_raw, before.uptime_raw),
            incidents: count(now.incidents, before.incidents),
            down_ms: now.down_ms - before.down_ms,
            longest_down_ms: now.longest_down_ms - before.longest_down_ms,
            mttr_ms: now.mttr_ms.zip(before.mttr_ms).map(|(a, b)| a - b),
            maintenance_ms: now.maintenance_ms - before.maintenance_ms,
        }
    }
}

/// One alarm of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The alarm's name.
    pub alarm: String,
    /// When it was deleted (ms), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Its figures over the period; `null` when the history never knew it.
    pub period: Option<PeriodFigures>,
    /// Over the period before.
    pub previous: Option<PeriodFigures>,
    /// `period` less `previous`.
    pub delta: Option<Delta>,
}

/// A report: the range, the one before it, and an entry per alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The report's name (a `[[reports]]` name), if it is a mailed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The period's start (ms).
    pub since: i64,
    /// The period's end (ms), excluded.
    pub until: i64,
    /// The period before's start (ms).
    pub previous_since: i64,
    /// The period before's end (ms): `since`.
    pub previous_until: i64,
    /// The time zone that named the period (and shows its times).
    pub tz: String,
    /// `month` or `week` when the range is a whole calendar month or ISO
    /// week of `tz` (the period before is then the calendar one before);
    /// `null` for another range (the period before is as long).
    pub every: Option<Every>,
    /// When the figures were computed (ms): time from then on is unknown.
    pub now: i64,
    /// The alarms, in the order asked.
    pub alarms: Vec<Entry>,
}

/// Why a range cannot be reported.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RangeError {
    /// `since` is not before `until`.
    #[error("since ({0}) must be before until ({1})")]
    Empty(i64, i64),
    /// Longer than [`MAX_RANGE_MS`].
    #[error("the range covers more than 400 days")]
    TooLong,
}

/// The period before `[since, until)`: the calendar month or week before
/// when the range is one of `tz` (so a report for March compares with
/// February), else the same length just before.
pub fn previous(tz: &chrono_tz::Tz, since: i64, until: i64) -> (Option<Every>, Period) {
    let this = Period { since, until };
    match period::whole(tz, since, until).and_then(|e| Some((e, period::before(e, tz, this)?))) {
        Some((e, p)) => (Some(e), p),
        None => (
            None,
            Period {
                since: since.saturating_sub(until - since),
                until: since,
            },
        ),
    }
}

/// Checks a range a report is asked for.
pub fn check_range(since: i64, until: i64) -> Result<(), RangeError> {
    if since >= until {
        return Err(RangeError::Empty(since, until));
    }
    if until - since > MAX_RANGE_MS {
        return Err(RangeError::TooLong);
    }
    Ok(())
}

/// The report of `alarm` for `[since, until)` against the period before,
/// from one uptime computation of both periods (`history::uptime`).
pub fn entry(
    conn: &Connection,
    alarm: &str,
    this: Period,
    before: Period,
    now: i64,
) -> rusqlite::Result<Entry> {
    let spans = [(before.since, before.until), (this.since, this.until)];
    let computed = uptime::compute(conn, Kind::Alarm, alarm, &spans, now)?;
    let Some(r) = computed else {
        return Ok(Entry {
            alarm: alarm.to_string(),
            deleted_at: None,
            period: None,
            previous: None,
            delta: None,
        });
    };
    let mut windows = r.windows.into_iter().map(PeriodFigures::from);
    let (previous, period) = (windows.next(), windows.next());
    let delta = period
        .as_ref()
        .zip(previous.as_ref())
        .map(|(a, b)| Delta::of(a, b));
    Ok(Entry {
        alarm: r.name,
        deleted_at: r.deleted_at,
        period,
        previous,
        delta,
    })
}

/// A whole report: [`entry`] per alarm, each under its own hold of the
/// history's read connection, so other readers wait for one alarm, never
/// for the whole report. Call it off the async runtime.
pub fn build(
    history: &crate::history::History,
    name: Option<String>,
    alarms: &[String],
    tz: &chrono_tz::Tz,
    this: Period,
    now: i64,
) -> rusqlite::Result<Report> {
    let (every, before) = previous(tz, this.since, this.until);
    let mut entries = Vec::with_capacity(alarms.len());
    for alarm in alarms {
        entries.push(history.read(|conn| entry(conn, alarm, this, before, now))?);
    }
    Ok(Report {
        name,
        since: this.since,
        until: this.until,
        previous_since: before.since,
        previous_until: before.until,
        tz: tz.name().to_string(),
        every,
        now,
        alarms: entries,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n[alerts.ops]\nmail = \"ops@example.com\"\n[alerts.chat]\nwebhook = \"http://127.0.0.1:1/hook\"\n";

    fn refused(report: &str) -> String {
        match Config::parse(&format!("{BASE}[[reports]]\n{report}")) {
            Ok(_) => panic!("accepted: {report}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_report_is_read_with_its_zone_and_period() {
        let c = Config::parse(&format!(
            "{BASE}[[reports]]\nname = \"monthly\"\nalarms = [\"web\", \"web\"]\nevery = \"month\"\ntz = \"Europe/Berlin\"\nmail = \"ops\"\n[[reports]]\nname = \"page\"\nstatus_page = \"public\"\nevery = \"week\"\nmail = \"ops\"\n\
             [[status_pages]]\nslug = \"public\"\ntitle = \"Status\"\n[[status_pages.groups]]\ntitle = \"G\"\nentries = [{{ alarm = \"web\", display_name = \"Website\" }}]\n"
        ))
        .expect("valid");
        assert_eq!(c.reports.len(), 2);
        assert_eq!(c.reports[0].zone(), chrono_tz::Europe::Berlin);
        assert_eq!(c.reports[0].every, super::Every::Month);
        assert_eq!(c.report_alarms(&c.reports[0]), ["web"]);
        assert_eq!(c.reports[1].zone(), chrono_tz::UTC);
        assert_eq!(c.reports[1].status_page.as_deref(), Some("public"));
        assert_eq!(c.report_alarms(&c.reports[1]), ["web"]);
        let e = refused("name = \"x\"\nstatus_page = \"nope\"\nevery = \"week\"\nmail = \"ops\"\n");
        assert!(e.contains("no [[status_pages]] has that slug"), "{e}");
        let summary = c.summary();
        assert!(
            summary.contains(
                "report monthly: every month (Europe/Berlin), mailed by alert ops: web\n"
            ),
            "{summary}"
        );
        assert!(
            summary.contains(
                "report page: every week (UTC), mailed by alert ops: web, status page public\n"
            ),
            "{summary}"
        );
    }

    #[test]
    fn a_report_whose_alert_cannot_mail_it_is_refused_at_load() {
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"month\"\nmail = \"chat\"\n");
        assert!(e.contains("alert 'chat', which has no mail alerter"), "{e}");
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"month\"\nmail = \"nope\"\n");
        assert!(e.contains("no [alerts.nope] section"), "{e}");
    }

    #[test]
    fn a_report_that_cannot_be_computed_is_refused_at_load() {
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"month\"\ntz = \"Mars/Olympus\"\nmail = \"ops\"\n");
        assert!(e.contains("not an IANA time zone"), "{e}");
        let e = refused("name = \"m\"\nalarms = [\"webb\"]\nevery = \"month\"\nmail = \"ops\"\n");
        assert!(e.contains("alarm 'webb'"), "{e}");
        let e = refused("name = \"m\"\nevery = \"month\"\nmail = \"ops\"\n");
        assert!(e.contains("covers nothing"), "{e}");
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"day\"\nmail = \"ops\"\n");
        assert!(e.contains("every") || e.contains("variant"), "{e}");
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"week\"\nmail = \"ops\"\n[[reports]]\nname = \"m\"\nalarms = [\"web\"]\nevery = \"month\"\nmail = \"ops\"\n");
        assert!(e.contains("used twice"), "{e}");
        let e = refused("name = \"m\"\nalarms = [\"web\"]\nevery = \"week\"\nmail = \"ops\"\n[history]\nenabled = false\n");
        assert!(e.contains("history"), "{e}");
    }
}
