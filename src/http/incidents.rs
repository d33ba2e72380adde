//! `GET /api/alarms/<name>/incidents` (README, "History"): an alarm's
//! incidents over a range, newest first, paged like its history. The query
//! runs on the blocking pool: SQLite is synchronous.

use hyper::{Request, Response};

use super::{AppState, Body};
use crate::history::incidents;

/// `GET /api/alarms/<name>/incidents`.
pub(super) async fn list<B>(req: &Request<B>, state: &AppState, name: &str) -> Response<Body> {
    super::history::named_page(req, state, "alarm", name, incidents::list).await
}
