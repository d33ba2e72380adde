//! Reading a request's body: bounded in size, in rate and in time, so a
//! body sent a byte at a time cannot hold its connection for ever.

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::http::router::error;
use crate::http::{AppState, Body};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 1 << 20;

/// How long a request's body may take before `[limits]
/// http_body_min_rate` applies: its first bytes may wait for a slow start
/// or a lost packet, however small the body.
const BODY_GRACE: Duration = Duration::from_secs(3);

/// When a body that has brought `received` bytes since `start` is too
/// slow: after [`BODY_GRACE`], each `min_rate` bytes buy a second more
/// (as Apache's mod_reqtimeout `MinRate` does), and no body outlasts
/// `within`. Returns the deadline and whether it is the rate's.
fn body_deadline(
    start: Instant,
    received: usize,
    min_rate: u64,
    within: Duration,
) -> (Instant, bool) {
    let whole = start + within;
    if min_rate == 0 {
        return (whole, false);
    }
    let earned = Duration::from_secs_f64(received as f64 / min_rate as f64);
    let by_rate = start + BODY_GRACE + earned;
    if by_rate < whole {
        (by_rate, true)
    } else {
        (whole, false)
    }
}

/// Reads a body of at most `MAX_BODY` bytes, arriving at `[limits]
/// http_body_min_rate` or faster and whole within `http_body_timeout`, or
/// answers 413, 408 or 400: a body sent a byte at a time would otherwise
/// hold its connection and handler for ever. Meanwhile the connection
/// may give way at the connection cap ([`super::conns::Registry::admit`]).
pub(in crate::http) async fn read_body(
    req: Request<Incoming>,
    state: &AppState,
) -> Result<bytes::Bytes, Response<Body>> {
    let _waiting = req
        .extensions()
        .get::<Arc<crate::http::conns::Conn>>()
        .map(|conn| state.conns.reading_body(conn));
    let within = crate::limits::LimitsConfig::duration(state.limits.http_body_timeout);
    let min_rate = state.limits.http_body_min_rate;
    let start = Instant::now();
    let mut body = Limited::new(req.into_body(), MAX_BODY);
    let mut got = bytes::BytesMut::new();
    loop {
        let (deadline, by_rate) = body_deadline(start, got.len(), min_rate, within);
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(got.freeze()),
            Err(_) if by_rate => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body arrived slower than {min_rate} bytes/s ([limits] http_body_min_rate)"
                    ),
                ))
            }
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        within.as_secs()
                    ),
                ))
            }
        };
        match frame {
            Ok(frame) => {
                // Trailers carry nothing a handler reads.
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY} bytes"),
                ))
            }
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                ))
            }
        }
    }
}
