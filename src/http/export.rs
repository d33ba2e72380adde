//! `GET /api/export` (README, "History"): every state change in a range,
//! as NDJSON or CSV, streamed as a whole-table answer (`lists.rs`): at
//! most `[limits] max_http_lists` at once, read a page at a time on the
//! blocking pool, and cut when its reader is too slow, so an export of
//! millions of changes neither fills the memory nor keeps a thread (or
//! the file's snapshot) for ever.

use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::router::{error, query_param};
use super::{AppState, Body};
use crate::history::export::{self, Position};

/// The formats an export is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

/// `GET /api/export?since=&until=&format=ndjson|csv`.
pub(super) fn export<B>(req: &Request<B>, state: &AppState) -> Response<Body> {
    let history = match super::history::open(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let range = match super::history::range(req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let format = match query_param(req, "format").as_deref() {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid format '{}': ndjson or csv", other.escape_debug()),
            )
        }
    };
    let admitted = match state.lists.admit(super::lists::peer(req)) {
        Ok(a) => a,
        Err(busy) => return *busy,
    };
    let (since, until) = (range.since, range.until);
    let mut r = admitted.stream(move |out| {
        if format == Format::Csv {
            out.line(export::CSV_HEADER)?;
        }
        let mut at = Position::start();
        let mut line = Vec::with_capacity(512);
        loop {
            // One page under the read lock, then written out without it:
            // a slow reader holds neither the file nor other readers.
            let (rows, next) = match history.read(|c| export::page(c, since, until, at)) {
                Ok(p) => p,
                Err(e) => {
                    // The answer ends unfinished: its reader can tell.
                    tracing::error!("cannot read the history file for an export: {e}");
                    return None;
                }
            };
            out.holds(rows.len());
            for row in &rows {
                line.clear();
                match format {
                    Format::Ndjson => {
                        serde_json::to_writer(&mut line, row).ok()?;
                        line.push(b'\n');
                    }
                    Format::Csv => export::csv_line(&mut line, row),
                }
                out.line(&line)?;
            }
            match next {
                Some(n) => at = n,
                None => return Some(()),
            }
        }
    });
    let (ctype, disposition) = match format {
        Format::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"lovebeat-export.ndjson\"",
        ),
        Format::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"lovebeat-export.csv\"",
        ),
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
    r
}
