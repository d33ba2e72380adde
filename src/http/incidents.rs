//! `GET /api/alarms/<name>/incidents` (README, "History"): an alarm's
//! incidents over a range, newest first, paged like its history. The query
//! runs on the blocking pool: SQLite is synchronous.

use hyper::{Request, Response, StatusCode};

use super::router::json;
use super::{AppState, Body};
use crate::history::incidents;

/// `GET /api/alarms/<name>/incidents`.
pub(super) async fn list<B>(req: &Request<B>, state: &AppState, name: &str) -> Response<Body> {
    let history = match super::history::open(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let range = match super::history::range(req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let page = super::history::read_named(history, "alarm", name, move |c, name| {
        incidents::list(c, name, range)
    })
    .await;
    match page {
        Ok(page) => json(StatusCode::OK, &page),
        Err(r) => *r,
    }
}
