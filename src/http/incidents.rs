//! `GET /api/alarms/<name>/incidents` (README, "History"): an alarm's
//! incidents over a range, newest first, paged like its history. The query
//! runs on the blocking pool: SQLite is synchronous.

use hyper::{Request, Response, StatusCode};

use super::router::{error, json};
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
    let owned = name.to_string();
    let page =
        tokio::task::spawn_blocking(move || history.read(|c| incidents::list(c, &owned, range)))
            .await;
    match page {
        Ok(Ok(Some(page))) => json(StatusCode::OK, &page),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no alarm '{name}' in the history"),
        ),
        Ok(Err(e)) => {
            tracing::error!("cannot read the history file: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the history file: {e}"),
            )
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the history query failed: {e}"),
        ),
    }
}
