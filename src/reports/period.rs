//! The calendar periods a report covers: a month or an ISO week (Monday
//! first) of an IANA time zone, as `[start, end)` in ms. Each is found
//! lazily from one instant (nothing is generated ahead), and its edges are
//! local midnights found by `history::uptime::day_start`, so a period with
//! a DST change is an hour shorter or longer, never shifted.

use chrono::{Datelike, Days, Months, NaiveDate};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::history::uptime::day_start;

/// How often a report is sent (`[[reports]] every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    /// An ISO week, Monday 00:00 to Monday 00:00.
    Week,
    /// A calendar month, the 1st 00:00 to the next 1st 00:00.
    Month,
}

impl Every {
    /// As the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Every::Week => "week",
            Every::Month => "month",
        }
    }
}

/// A period: `[since, until)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Its first millisecond.
    pub since: i64,
    /// The first millisecond after it.
    pub until: i64,
}

/// The local date of `ms` in `tz`.
fn local_date(tz: &Tz, ms: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(tz).date_naive())
}

/// The first day of the period that holds `date`, and of the next one.
fn bounds(every: Every, date: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
    match every {
        Every::Month => {
            let first = date.with_day(1)?;
            Some((first, first.checked_add_months(Months::new(1))?))
        }
        Every::Week => {
            let back = u64::from(date.weekday().num_days_from_monday());
            let first = date.checked_sub_days(Days::new(back))?;
            Some((first, first.checked_add_days(Days::new(7))?))
        }
    }
}

/// The period of `tz` that holds the instant `ms`; `None` only outside
/// the calendar chrono knows.
pub fn containing(every: Every, tz: &Tz, ms: i64) -> Option<Period> {
    let (first, next) = bounds(every, local_date(tz, ms)?)?;
    Some(Period {
        since: day_start(tz, first)?,
        until: day_start(tz, next)?,
    })
}

/// The period just before `p` (which must be one of [`containing`]).
pub fn before(every: Every, tz: &Tz, p: Period) -> Option<Period> {
    containing(every, tz, p.since.checked_sub(1)?)
}

/// The latest period that has ended at `now`.
pub fn last_ended(every: Every, tz: &Tz, now: i64) -> Option<Period> {
    before(every, tz, containing(every, tz, now)?)
}

/// `[since, until)` as a whole month or week of `tz`, if it is one.
pub fn whole(tz: &Tz, since: i64, until: i64) -> Option<Every> {
    [Every::Month, Every::Week]
        .into_iter()
        .find(|&e| containing(e, tz, since) == Some(Period { since, until }))
}

/// A period's name: `2026-11` for a month, `2026-W48` for a week.
pub fn label(every: Every, tz: &Tz, p: Period) -> String {
    match local_date(tz, p.since) {
        Some(d) => match every {
            Every::Month => format!("{:04}-{:02}", d.year(), d.month()),
            Every::Week => {
                let w = d.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
        },
        None => p.since.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_berlin_month_with_the_spring_dst_change_is_an_hour_short() {
        let p = containing(Every::Month, &BERLIN, ms("2026-03-29T12:00:00Z")).expect("period");
        assert_eq!(p.since, ms("2026-03-01T00:00:00+01:00"));
        assert_eq!(p.until, ms("2026-04-01T00:00:00+02:00"));
        assert_eq!(p.until - p.since, 31 * 24 * HOUR - HOUR);
        // Its last and first milliseconds belong to it, the next to April.
        assert_eq!(containing(Every::Month, &BERLIN, p.since), Some(p));
        assert_eq!(containing(Every::Month, &BERLIN, p.until - 1), Some(p));
        let april = containing(Every::Month, &BERLIN, p.until).expect("april");
        assert_eq!(april.since, p.until);
        assert_eq!(before(Every::Month, &BERLIN, april), Some(p));
        assert_eq!(label(Every::Month, &BERLIN, p), "2026-03");
    }

    #[test]
    fn a_berlin_month_with_the_autumn_dst_change_is_an_hour_long() {
        let p = containing(Every::Month, &BERLIN, ms("2026-10-25T01:30:00Z")).expect("period");
        assert_eq!(p.since, ms("2026-10-01T00:00:00+02:00"));
        assert_eq!(p.until, ms("2026-11-01T00:00:00+01:00"));
        assert_eq!(p.until - p.since, 31 * 24 * HOUR + HOUR);
        // Just after the boundary, the month that ended is October.
        let now = ms("2026-11-01T00:00:00+01:00") + 1;
        assert_eq!(last_ended(Every::Month, &BERLIN, now), Some(p));
        assert_eq!(
            last_ended(Every::Month, &BERLIN, p.until - 1).map(|q| q.until),
            Some(p.since)
        );
    }

    #[test]
    fn berlin_weeks_across_both_dst_changes_start_on_local_mondays() {
        // Sunday 29 March 2026: clocks jump from 02:00 to 03:00.
        let spring = containing(Every::Week, &BERLIN, ms("2026-03-29T01:30:00Z")).expect("week");
        assert_eq!(spring.since, ms("2026-03-23T00:00:00+01:00"));
        assert_eq!(spring.until, ms("2026-03-30T00:00:00+02:00"));
        assert_eq!(spring.until - spring.since, 7 * 24 * HOUR - HOUR);
        assert_eq!(label(Every::Week, &BERLIN, spring), "2026-W13");
        // Sunday 25 October 2026: clocks go back from 03:00 to 02:00.
        let autumn = containing(Every::Week, &BERLIN, ms("2026-10-25T00:30:00Z")).expect("week");
        assert_eq!(autumn.since, ms("2026-10-19T00:00:00+02:00"));
        assert_eq!(autumn.until, ms("2026-10-26T00:00:00+01:00"));
        assert_eq!(autumn.until - autumn.since, 7 * 24 * HOUR + HOUR);
        let next = containing(Every::Week, &BERLIN, autumn.until).expect("next");
        assert_eq!(next.until - next.since, 7 * 24 * HOUR);
        assert_eq!(before(Every::Week, &BERLIN, next), Some(autumn));
    }

    #[test]
    fn a_new_year_week_and_a_utc_month_are_whole_periods() {
        let tz = chrono_tz::UTC;
        // 1 January 2027 is a Friday: its ISO week began Monday 28 December.
        let w = containing(Every::Week, &tz, ms("2027-01-01T10:00:00Z")).expect("week");
        assert_eq!(w.since, ms("2026-12-28T00:00:00Z"));
        assert_eq!(label(Every::Week, &tz, w), "2026-W53");
        assert_eq!(whole(&tz, w.since, w.until), Some(Every::Week));
        let m = (ms("2026-02-01T00:00:00Z"), ms("2026-03-01T00:00:00Z"));
        assert_eq!(whole(&tz, m.0, m.1), Some(Every::Month));
        assert_eq!(whole(&tz, m.0, m.1 - 1), None);
        assert_eq!(whole(&BERLIN, m.0, m.1), None);
    }
}
