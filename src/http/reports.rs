//! `GET /api/reports` (README, "Reports"): the figures a mailed report
//! holds (`crate::reports`), for any range of at most 400 days, as JSON or
//! CSV. Computed on the blocking pool (SQLite is synchronous), at most
//! `[limits] max_http_lists` at once with the other whole-table answers.

use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::router::{error, full, json, query_param};
use super::uptime::{time, zone};
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::reports::period::{self, Every, Period};
use crate::reports::{self as report, render};

type Refusal = Box<Response<Body>>;

fn bad(message: String) -> Refusal {
    Box::new(error(StatusCode::BAD_REQUEST, message))
}

/// `?alarms=a,b`, else every configured alarm and every alarm a template
/// made, but lovebeat's own, by name.
fn alarms<B>(req: &Request<B>, state: &AppState) -> Result<Vec<String>, Refusal> {
    let list: Vec<String> = match query_param(req, "alarms") {
        Some(v) => {
            let mut out = Vec::new();
            for a in v.split(',').map(str::trim) {
                if a.is_empty() || a.len() > crate::engine::MAX_NAME_LEN {
                    return Err(bad(format!(
                        "invalid alarm name '{}' in alarms: 1 to {} bytes each, comma-separated",
                        a.chars().take(64).collect::<String>().escape_debug(),
                        crate::engine::MAX_NAME_LEN
                    )));
                }
                if out.len() == report::MAX_ALARMS {
                    return Err(bad(format!(
                        "alarms names more than {}",
                        report::MAX_ALARMS
                    )));
                }
                out.push(a.to_string());
            }
            out
        }
        None => {
            let mut names: Vec<String> = state
                .engine
                .alarm_names()
                .iter()
                .filter(|n| &***n != crate::engine::SELF_ALARM)
                .map(|n| n.to_string())
                .chain(state.configured_alarms.iter().cloned())
                .collect();
            names.sort();
            names.dedup();
            if names.len() > report::MAX_ALARMS {
                return Err(bad(format!(
                    "there are more than {} alarms: name those to report with alarms=",
                    report::MAX_ALARMS
                )));
            }
            names
        }
    };
    Ok(list)
}

/// The range asked for: both `since` and `until`, or neither for the last
/// whole calendar month of `tz`.
fn range<B>(req: &Request<B>, tz: &chrono_tz::Tz, now: i64) -> Result<Period, Refusal> {
    match (time(req, "since")?, time(req, "until")?) {
        (Some(since), Some(until)) => {
            report::check_range(since, until).map_err(|e| bad(e.to_string()))?;
            Ok(Period { since, until })
        }
        (None, None) => period::last_ended(Every::Month, tz, now)
            .ok_or_else(|| bad("no calendar month ended before now".into())),
        _ => Err(bad(
            "pass both since and until, or neither for the last whole month".into(),
        )),
    }
}

/// `GET /api/reports?since=&until=&alarms=&tz=&format=json|csv`.
pub(super) async fn reports<B>(req: &Request<B>, state: &AppState) -> Response<Body> {
    let history = match super::history::open(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let now = now_ms();
    let csv = match query_param(req, "format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid format '{}': json or csv",
                    other.chars().take(64).collect::<String>().escape_debug()
                ),
            )
        }
    };
    let asked = zone(req).and_then(|tz| Ok((tz, range(req, &tz, now)?, alarms(req, state)?)));
    let (tz, this, names) = match asked {
        Ok(a) => a,
        Err(r) => return *r,
    };
    // A report over every alarm is a whole-table answer: it takes one of
    // their places (`lists.rs`), held by the computation itself, so that
    // clients that leave do not leave its threads unbounded.
    let admitted = match state.lists.admit(super::lists::peer(req)) {
        Ok(a) => a,
        Err(busy) => return *busy,
    };
    let built = tokio::task::spawn_blocking(move || {
        let _place = admitted;
        report::build(&history, None, &names, &tz, this, now)
    })
    .await;
    let report = match built {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!("cannot read the history file for a report: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the history file: {e}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the report failed: {e}"),
            )
        }
    };
    if !csv {
        return json(StatusCode::OK, &report);
    }
    let mut r = Response::new(full(render::csv(&report)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"lovebeat-report.csv\""),
    );
    r
}
