//! Handlers of the JSON API (README, "HTTP API"), one part per kind of
//! request as `router.rs` dispatches them: the requests that change a
//! service or an alarm (`writes.rs`), with their bodies read within
//! bounds (`body.rs`); the reads of the tables (`reads.rs`); and the
//! alerts of an alarm and their tests (`alerts.rs`).

use hyper::{Response, StatusCode};

use crate::engine::EngineError;
use crate::http::router::{error, respond};
use crate::http::Body;

mod alerts;
mod body;
mod reads;
mod writes;

pub(super) use alerts::{alarm_alerts, test_alert};
pub(super) use body::read_body;
pub(super) use reads::{
    alarm_status, get_alarm, get_service, list_alarms, list_cluster_alarms, list_services, status,
    version,
};
pub(super) use writes::{beat, delete_alarm, delete_service, job_signal, mute, Signal};

/// The answer of a change that has nothing to say.
fn empty_ok() -> Response<Body> {
    respond(StatusCode::OK, "application/json", &b"{}\n"[..])
}

/// The answer to a change the engine refused, with the status its
/// reason calls for.
fn engine_error(e: EngineError) -> Response<Body> {
    let status = match e {
        EngineError::InvalidName(_) => StatusCode::BAD_REQUEST,
        EngineError::AlarmNotEmpty(_) => StatusCode::CONFLICT,
        EngineError::Full(..) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}
