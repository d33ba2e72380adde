//! The history endpoints (README, "History"): a service's or an alarm's
//! state changes over a range, paged. Queries run on the blocking pool:
//! SQLite is synchronous, and a runtime thread never waits on a file.

use hyper::{Request, Response, StatusCode};

use super::router::{error, json, query_param};
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::history::query::{self, Range};
use crate::history::record::Kind;
use crate::history::HistoryState;

/// A time as a request gives it: milliseconds since the epoch, or RFC 3339.
pub(super) fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The range and page a request asks for, or the 400 that says what is
/// wrong with it.
pub(super) fn range<B>(req: &Request<B>) -> Result<Range, Box<Response<Body>>> {
    let bad = |what: &str, v: &str| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid {what} '{}': {}",
                v.escape_debug(),
                match what {
                    "cursor" => "pass the next_cursor of a previous page",
                    "limit" => "a number from 1 to 1000",
                    _ => "milliseconds since the epoch or an RFC 3339 time",
                }
            ),
        ))
    };
    let time = |key: &str, default: i64| match query_param(req, key) {
        None => Ok(default),
        Some(v) => parse_time(&v).ok_or_else(|| bad(key, &v)),
    };
    let since = time("since", 0)?;
    let until = time("until", now_ms().saturating_add(1))?;
    let limit = match query_param(req, "limit") {
        None => query::DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=query::MAX_LIMIT).contains(&n) => n,
            _ => return Err(bad("limit", &v)),
        },
    };
    let before = match query_param(req, "cursor") {
        None => None,
        Some(v) => Some(query::parse_cursor(&v).ok_or_else(|| bad("cursor", &v))?),
    };
    Ok(Range {
        since,
        until,
        limit,
        before,
    })
}

/// The history, or the answer that says why there is none.
pub(super) fn open(
    state: &AppState,
) -> Result<std::sync::Arc<crate::history::History>, Box<Response<Body>>> {
    match &state.history {
        HistoryState::On(h) => match h.failing() {
            None => Ok(h.clone()),
            Some(why) => Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("history is unavailable: {why}"),
            ))),
        },
        HistoryState::Off => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "history is off ([history] enabled = false)".into(),
        ))),
        HistoryState::Failed(why) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("history is unavailable: {why}"),
        ))),
    }
}

/// `GET /api/services/<name>/history` and `/api/alarms/<name>/history`.
pub(super) async fn changes<B>(
    req: &Request<B>,
    state: &AppState,
    kind: Kind,
    name: &str,
) -> Response<Body> {
    named_page(req, state, what(kind), name, move |conn, name, range| {
        query::changes(conn, kind, name, range)
    })
    .await
}

/// Answers a request for one page of a named service's or alarm's history
/// (its changes, runs, incidents): the history and the range the request
/// asks for, `query` run on them, and its page as JSON, or the answer that
/// says why there is none: one path, so every such endpoint fails alike.
pub(super) async fn named_page<B, T: serde::Serialize + Send + 'static>(
    req: &Request<B>,
    state: &AppState,
    what: &'static str,
    name: &str,
    query: impl FnOnce(&rusqlite::Connection, &str, Range) -> rusqlite::Result<Option<T>>
        + Send
        + 'static,
) -> Response<Body> {
    let history = match open(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let range = match range(req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    match read_named(history, what, name, move |conn, name| {
        query(conn, name, range)
    })
    .await
    {
        Ok(page) => json(StatusCode::OK, &page),
        Err(r) => *r,
    }
}

/// "service" or "alarm", for messages.
pub(super) fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::Service => "service",
        Kind::Alarm => "alarm",
    }
}

/// Runs `query` for `name` on the blocking pool (SQLite is synchronous):
/// its answer, or the one that says why there is none, the same for every
/// history endpoint: 404 for a name the history never knew, 503 for a file
/// that cannot be read, 500 for a query that panicked.
pub(super) async fn read_named<T: Send + 'static>(
    history: std::sync::Arc<crate::history::History>,
    what: &'static str,
    name: &str,
    query: impl FnOnce(&rusqlite::Connection, &str) -> rusqlite::Result<Option<T>> + Send + 'static,
) -> Result<T, Box<Response<Body>>> {
    let owned = name.to_string();
    let answer =
        tokio::task::spawn_blocking(move || history.read(|conn| query(conn, &owned))).await;
    match answer {
        Ok(Ok(Some(t))) => Ok(t),
        Ok(Ok(None)) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no {what} '{name}' in the history"),
        ))),
        Ok(Err(e)) => {
            tracing::error!("cannot read the history file: {e}");
            Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the history file: {e}"),
            )))
        }
        Err(e) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the history query failed: {e}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_milliseconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("'; DROP TABLE changes; --"), None);
    }
}
