//! `GET /api/services/<name>/runs` and `GET /api/audit` (README,
//! "History"): a job's runs and the audit trail over a range, newest
//! first, paged like the history. Queries run on the blocking pool: SQLite
//! is synchronous.

use hyper::{Request, Response, StatusCode};

use super::router::{error, json};
use super::{AppState, Body};
use crate::history::{audit, runs};

/// `GET /api/services/<name>/runs`.
pub(super) async fn list<B>(req: &Request<B>, state: &AppState, name: &str) -> Response<Body> {
    super::history::named_page(req, state, "service", name, runs::list).await
}

/// `GET /api/audit`.
pub(super) async fn audit<B>(req: &Request<B>, state: &AppState) -> Response<Body> {
    let history = match super::history::open(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let range = match super::history::range(req) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let answer = tokio::task::spawn_blocking(move || history.read(|c| audit::list(c, range))).await;
    match answer {
        Ok(Ok(page)) => json(StatusCode::OK, &page),
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
