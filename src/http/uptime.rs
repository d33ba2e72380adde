//! The uptime endpoints (README, "History"): a service's or an alarm's
//! time-weighted figures over rolling windows or a range
//! (`/api/{services,alarms}/<name>/uptime`), and per calendar day of a
//! time zone (`.../daily`), computed by `history::uptime` on the blocking
//! pool.

use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::history::{open, parse_time};
use super::router::{error, json, query_param};
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::history::record::Kind;
use crate::history::uptime::{self, Figures};

/// The rolling windows answered when the request names none.
const DEFAULT_WINDOWS: &str = "24h,7d,30d,90d,365d";
/// Windows one request may name at most.
const MAX_WINDOWS: usize = 10;
/// The last millisecond of year 9999: times beyond it (or before 1970)
/// are refused, so no window's arithmetic can overflow.
const MAX_TIME: i64 = 253_402_300_799_999;

type Refusal = Box<Response<Body>>;

fn bad(message: String) -> Refusal {
    Box::new(error(StatusCode::BAD_REQUEST, message))
}

/// `?tz=`: an IANA zone, UTC when absent.
pub(super) fn zone<B>(req: &Request<B>) -> Result<chrono_tz::Tz, Refusal> {
    match query_param(req, "tz") {
        None => Ok(chrono_tz::UTC),
        Some(v) => v.parse::<chrono_tz::Tz>().map_err(|_| {
            bad(format!(
                "invalid tz '{}': an IANA time zone such as Europe/Stockholm",
                // A zone name is short: a long one is not echoed whole.
                v.chars().take(64).collect::<String>().escape_debug()
            ))
        }),
    }
}

/// `?since=` or `?until=`, within 1970 to 9999.
pub(super) fn time<B>(req: &Request<B>, key: &str) -> Result<Option<i64>, Refusal> {
    match query_param(req, key) {
        None => Ok(None),
        Some(v) => match parse_time(&v) {
            Some(t) if (0..=MAX_TIME).contains(&t) => Ok(Some(t)),
            _ => Err(bad(format!(
                "invalid {key} '{}': milliseconds since the epoch or an RFC 3339 time, \
                 from 1970 to 9999",
                v.escape_debug()
            ))),
        },
    }
}

fn ordered(since: i64, until: i64) -> Result<(), Refusal> {
    if since >= until {
        return Err(bad(format!(
            "since ({since}) must be before until ({until})"
        )));
    }
    Ok(())
}

/// The windows a request asks for: labels and `(since, until)`.
fn windows<B>(req: &Request<B>, now: i64) -> Result<Vec<(String, i64, i64)>, Refusal> {
    let (since, until) = (time(req, "since")?, time(req, "until")?);
    let named = query_param(req, "windows");
    if since.is_some() || until.is_some() {
        if named.is_some() {
            return Err(bad(
                "pass either windows or since and until, not both".into()
            ));
        }
        let until = until.unwrap_or(now);
        let since = since.unwrap_or(0);
        ordered(since, until)?;
        return Ok(vec![("range".into(), since, until)]);
    }
    let list = named.unwrap_or_else(|| DEFAULT_WINDOWS.into());
    let mut out = Vec::new();
    for w in list.split(',') {
        if out.len() == MAX_WINDOWS {
            return Err(bad(format!("at most {MAX_WINDOWS} windows")));
        }
        let ms = crate::settings::duration::parse_duration_ms(w.trim())
            .ok()
            .and_then(|ms| i64::try_from(ms).ok())
            .filter(|ms| *ms > 0 && *ms <= now)
            .ok_or_else(|| {
                bad(format!(
                    "invalid window '{}': a duration such as 24h, 7d or 30d",
                    w.escape_debug()
                ))
            })?;
        out.push((w.trim().to_string(), now - ms, now));
    }
    Ok(out)
}

/// One window of an uptime answer.
#[derive(Serialize)]
struct Window {
    /// As asked (`24h`), or `range` for `since`/`until`.
    window: String,
    #[serde(flatten)]
    figures: Figures,
}

/// An uptime answer.
#[derive(Serialize)]
struct UptimeAnswer {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<i64>,
    tz: String,
    now: i64,
    windows: Vec<Window>,
}

/// One day of a daily answer.
#[derive(Serialize)]
struct Day {
    /// The calendar day in the zone asked for.
    date: String,
    #[serde(flatten)]
    figures: Figures,
}

/// A daily answer.
#[derive(Serialize)]
struct DailyAnswer {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<i64>,
    tz: String,
    days: Vec<Day>,
}

/// Computes `spans` for `name` on the blocking pool; the report, or the
/// answer that says why there is none.
async fn compute(
    state: &AppState,
    kind: Kind,
    name: &str,
    spans: Vec<(i64, i64)>,
    now: i64,
) -> Result<uptime::Report, Refusal> {
    let history = open(state)?;
    let raw_from = history.raw_from(now);
    super::history::read_named(
        history,
        super::history::what(kind),
        name,
        move |conn, name| uptime::rollup::compute(conn, kind, name, &spans, now, raw_from),
    )
    .await
}

/// `GET /api/services/<name>/uptime` and `/api/alarms/<name>/uptime`.
pub(super) async fn uptime<B>(
    req: &Request<B>,
    state: &AppState,
    kind: Kind,
    name: &str,
) -> Response<Body> {
    if let Err(r) = open(state) {
        return *r;
    }
    let now = now_ms();
    let (tz, asked) = match zone(req).and_then(|tz| Ok((tz, windows(req, now)?))) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    // The fold takes windows by start; the answer keeps the order asked.
    let mut order: Vec<usize> = (0..asked.len()).collect();
    order.sort_by_key(|&i| asked.get(i).map(|w| (w.1, w.2)));
    let spans = order
        .iter()
        .filter_map(|&i| asked.get(i).map(|w| (w.1, w.2)))
        .collect();
    let report = match compute(state, kind, name, spans, now).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let mut figures: Vec<Option<Figures>> = vec![None; asked.len()];
    for (&i, f) in order.iter().zip(report.windows) {
        if let Some(slot) = figures.get_mut(i) {
            *slot = Some(f);
        }
    }
    let windows = asked
        .into_iter()
        .zip(figures)
        .filter_map(|((window, _, _), f)| {
            Some(Window {
                window,
                figures: f?,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &UptimeAnswer {
            name: report.name,
            deleted_at: report.deleted_at,
            tz: tz.name().to_string(),
            now,
            windows,
        },
    )
}

/// `GET /api/services/<name>/daily` and `/api/alarms/<name>/daily`.
pub(super) async fn daily<B>(
    req: &Request<B>,
    state: &AppState,
    kind: Kind,
    name: &str,
) -> Response<Body> {
    if let Err(r) = open(state) {
        return *r;
    }
    let now = now_ms();
    let tz = match zone(req) {
        Ok(tz) => tz,
        Err(r) => return *r,
    };
    let (since, until) = match (time(req, "since"), time(req, "until")) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let until = until.unwrap_or(now);
    // By default the last 30 days, today included.
    let since = since.unwrap_or_else(|| {
        chrono::DateTime::from_timestamp_millis(until.saturating_sub(1))
            .map(|t| t.with_timezone(&tz).date_naive())
            .and_then(|d| d.checked_sub_days(chrono::Days::new(29)))
            .and_then(|d| {
                d.and_hms_opt(0, 0, 0)
                    .and_then(|m| m.and_local_timezone(tz).earliest())
            })
            .map(|t| t.timestamp_millis())
            .unwrap_or(until.saturating_sub(30 * 86_400_000))
    });
    if let Err(r) = ordered(since, until) {
        return *r;
    }
    let days = match uptime::days(&tz, since, until) {
        Ok(d) => d,
        Err(e) => return *bad(e.to_string()),
    };
    let spans = days.iter().map(|d| (d.1, d.2)).collect();
    let report = match compute(state, kind, name, spans, now).await {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let days = days
        .into_iter()
        .zip(report.windows)
        .map(|((date, _, _), figures)| Day {
            date: date.to_string(),
            figures,
        })
        .collect();
    json(
        StatusCode::OK,
        &DailyAnswer {
            name: report.name,
            deleted_at: report.deleted_at,
            tz: tz.name().to_string(),
            days,
        },
    )
}
