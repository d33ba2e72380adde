//! Handlers of the JSON API (README, "HTTP API").

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::router::{error, json, query_param, respond, wants_json};
use super::{AppState, Body};
use crate::clock::now_ms;
use std::sync::Arc;

use crate::duration::{parse_duration_input, parse_timeout, timeout_from_secs, DurationError};
use crate::engine::job::{output_tail, ScheduleError};
use crate::engine::{AlarmView, Change, EngineError, FailReport, Schedule, ServiceView, Timeout};

/// Largest request body accepted.
pub(super) const MAX_BODY: usize = 1 << 20;

fn empty_ok() -> Response<Body> {
    respond(StatusCode::OK, "application/json", &b"{}\n"[..])
}

fn engine_error(e: EngineError) -> Response<Body> {
    let status = match e {
        EngineError::InvalidName(_) => StatusCode::BAD_REQUEST,
        EngineError::AlarmNotEmpty(_) => StatusCode::CONFLICT,
        EngineError::Full(..) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// Why a request's settings are refused (a 400 naming the problem).
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    /// A timeout or duration that does not read.
    #[error("{0}")]
    Duration(#[from] DurationError),
    /// A named duration that does not read.
    #[error("{key}: {source}")]
    Setting {
        /// `grace`, `max_runtime` or `for`.
        key: &'static str,
        /// Why.
        source: DurationError,
    },
    /// A schedule that cannot be used.
    #[error("{0}")]
    Schedule(#[from] ScheduleError),
    /// A body that is not what its content type says.
    #[error("{0}")]
    Body(String),
}

impl BadRequest {
    fn response(self) -> Response<Body> {
        error(StatusCode::BAD_REQUEST, self.to_string())
    }
}

/// The settings a beat request may carry, from the query, a form or JSON
/// (README, "HTTP API" and "Cron jobs and scripts"); a later source overrides an
/// earlier one.
#[derive(Default)]
struct BeatParams {
    beat: bool,
    timeout: Option<Timeout>,
    schedule: Option<String>,
    tz: Option<String>,
    grace: Option<String>,
    max_runtime: Option<String>,
}

impl BeatParams {
    /// Takes one `key=value` pair; unknown keys are ignored as in 1.x.
    fn set(&mut self, key: &str, value: &str) -> Result<(), BadRequest> {
        match key {
            "timeout" if !value.is_empty() => self.timeout = Some(parse_timeout(value)?),
            "schedule" => self.schedule = Some(value.to_string()),
            "tz" => self.tz = Some(value.to_string()),
            "grace" => self.grace = Some(value.to_string()),
            "max_runtime" => self.max_runtime = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }

    /// The engine change these settings ask for.
    fn into_change(self) -> Result<Change, BadRequest> {
        let grace = match &self.grace {
            Some(g) => Some(
                parse_duration_input(g).map_err(|source| BadRequest::Setting {
                    key: "grace",
                    source,
                })? as i64,
            ),
            None => None,
        };
        let schedule = Schedule::from_settings(
            self.schedule.as_deref(),
            self.tz.as_deref(),
            grace,
            self.timeout.is_some(),
        )?;
        let max_runtime = match &self.max_runtime {
            Some(m) => Some(
                parse_duration_input(m).map_err(|source| BadRequest::Setting {
                    key: "max_runtime",
                    source,
                })?,
            ),
            None => None,
        };
        Ok(Change {
            beat: self.beat,
            timeout: schedule
                .map(|s| Timeout::Schedule(Arc::new(s)))
                .or(self.timeout),
            max_runtime,
            ..Change::default()
        })
    }
}

/// The lower-cased media type of the request, without parameters.
fn content_type<B>(req: &Request<B>) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// POST /api/services/<name>: a beat, optionally with a timeout, a schedule
/// or a `max_runtime`.
pub(super) async fn beat(req: Request<Incoming>, state: &AppState, name: &str) -> Response<Body> {
    let mut params = BeatParams {
        beat: true,
        ..BeatParams::default()
    };
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if let Err(e) = params.set(&k, &v) {
                return e.response();
            }
        }
    }
    let content_type = content_type(&req);
    let body = match read_body(req, state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if content_type == "application/json" {
        if let Err(e) = apply_json(&body, &mut params) {
            return e.response();
        }
    } else if content_type == "application/x-www-form-urlencoded" {
        for (k, v) in form_urlencoded::parse(&body) {
            if let Err(e) = params.set(&k, &v) {
                return e.response();
            }
        }
    }
    let change = match params.into_change() {
        Ok(c) => c,
        Err(e) => return e.response(),
    };
    match state.engine.change(name, change, now_ms()) {
        Ok(()) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// Applies a JSON body `{"timeout": ..., "beat": ..., "schedule": ...}`;
/// empty counts as `{}`.
fn apply_json(body: &[u8], params: &mut BeatParams) -> Result<(), BadRequest> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| BadRequest::Body(format!("request body is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| BadRequest::Body("request body must be a JSON object".into()))?;
    match obj.get("timeout") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Number(n)) => {
            params.timeout = Some(if let Some(i) = n.as_i64() {
                timeout_from_secs(i)?
            } else {
                parse_timeout(&n.to_string())?
            });
        }
        Some(serde_json::Value::String(s)) => params.timeout = Some(parse_timeout(s)?),
        Some(other) => {
            return Err(BadRequest::Body(format!(
                "timeout must be a number of seconds or a duration, not {other}"
            )))
        }
    }
    match obj.get("beat") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Bool(b)) => params.beat = *b,
        Some(other) => {
            return Err(BadRequest::Body(format!(
                "beat must be true or false, not {other}"
            )))
        }
    }
    for key in ["schedule", "tz", "grace", "max_runtime"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(v)) => params.set(key, v)?,
            Some(serde_json::Value::Number(n)) if key != "schedule" && key != "tz" => {
                params.set(key, &n.to_string())?
            }
            Some(other) => {
                return Err(BadRequest::Body(format!(
                    "{key} must be a string, not {other}"
                )))
            }
        }
    }
    Ok(())
}

/// Which job signal a request sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signal<'a> {
    /// `/start`.
    Start,
    /// `/fail`.
    Fail,
    /// `/exit/<code>`, with the code as given.
    Exit(&'a str),
}

/// POST /api/services/<name>/start, /fail and /exit/<code>. A fail or exit
/// body is kept as the failure's output (its last 10 KiB).
pub(super) async fn job_signal(
    req: Request<Incoming>,
    state: &AppState,
    name: &str,
    signal: Signal<'_>,
) -> Response<Body> {
    let mut change = Change::default();
    let exit_code = match signal {
        Signal::Start => {
            change.start = true;
            None
        }
        Signal::Fail => None,
        Signal::Exit(c) => match c.parse::<u8>() {
            Ok(n) => Some(i32::from(n)),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("exit code '{c}' must be a number from 0 to 255"),
                )
            }
        },
    };
    if !change.start {
        let body = match read_body(req, state).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        if exit_code == Some(0) {
            change.beat = true;
        } else {
            change.fail = Some(FailReport {
                exit_code,
                output: output_tail(&body),
            });
        }
    }
    match state.engine.change(name, change, now_ms()) {
        Ok(()) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// Reads a body of at most `MAX_BODY` bytes within `[limits]
/// http_body_timeout`, or answers 413, 408 or 400: a body sent a byte at a
/// time would otherwise hold its connection and handler for ever.
async fn read_body(
    req: Request<Incoming>,
    state: &AppState,
) -> Result<bytes::Bytes, Response<Body>> {
    let within = crate::limits::LimitsConfig::duration(state.limits.http_body_timeout);
    let Ok(read) =
        tokio::time::timeout(within, Limited::new(req.into_body(), MAX_BODY).collect()).await
    else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                within.as_secs()
            ),
        ));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// POST /api/services/<name>/mute (`?for=2h` snoozes) and /unmute.
pub(super) fn mute<B>(
    req: &Request<B>,
    state: &AppState,
    name: &str,
    mute: bool,
) -> Response<Body> {
    let now = now_ms();
    let r = if mute {
        let until = match query_param(req, "for") {
            Some(f) => match parse_duration_input(&f) {
                Ok(ms) if ms > 0 => Some(now.saturating_add(ms as i64)),
                Ok(_) => return error(StatusCode::BAD_REQUEST, "for must be longer than 0".into()),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("for: {e}")),
            },
            None => None,
        };
        state.engine.mute_until(name, until, now)
    } else {
        state.engine.unmute(name, now)
    };
    match r {
        Ok(()) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// DELETE /api/services/<name>.
pub(super) fn delete_service(state: &AppState, name: &str) -> Response<Body> {
    state.engine.delete(name, now_ms());
    empty_ok()
}

/// Bytes of a streamed list gathered before they are sent.
const LIST_CHUNK: usize = 64 * 1024;

/// GET /api/services, streamed: the names are gathered first (24 bytes
/// each, most stored inline), then the objects are serialized a chunk at a
/// time on a blocking thread, so memory stays flat however many services
/// there are. The bytes
/// are what serde_json's pretty printer would give for the whole object.
pub(super) fn list_services<B>(_req: &Request<B>, state: &AppState) -> Response<Body> {
    let engine = state.engine.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let names = engine.names();
        let mut buf = Vec::with_capacity(LIST_CHUNK + 4096);
        buf.extend_from_slice(b"{\n  \"services\": [");
        let mut first = true;
        for name in names {
            let Some(view) = engine.service(&name, false) else {
                continue;
            };
            buf.extend_from_slice(if first { b"\n" } else { b",\n" });
            first = false;
            write_indented(&mut buf, &view);
            if buf.len() >= LIST_CHUNK && !send(&handle, &tx, std::mem::take(&mut buf)) {
                return; // the client went away, or stopped reading
            }
        }
        buf.extend_from_slice(if first { b"],\n" } else { b"\n  ],\n" });
        buf.extend_from_slice(format!("  \"now\": {}\n}}\n", now_ms()).as_bytes());
        send(&handle, &tx, buf);
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// How long a list's reader may take to accept the next chunk: a client
/// that stops reading does not keep the blocking thread and the list of
/// names for longer.
const STALLED: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends a chunk of a streamed list from its blocking thread; false when
/// the client is gone or did not take it within `STALLED`.
fn send(
    handle: &tokio::runtime::Handle,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    chunk: Vec<u8>,
) -> bool {
    match handle.block_on(tokio::time::timeout(STALLED, tx.send(chunk.into()))) {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::debug!("a client stopped reading the list of services: dropped");
            false
        }
    }
}

/// Appends `value` pretty-printed and indented as an element of a list
/// nested one level deep (4 spaces).
fn write_indented<T: Serialize>(buf: &mut Vec<u8>, value: &T) {
    let Ok(text) = serde_json::to_vec_pretty(value) else {
        return;
    };
    for (i, line) in text.split(|c| *c == b'\n').enumerate() {
        if i > 0 {
            buf.push(b'\n');
        }
        buf.extend_from_slice(b"    ");
        buf.extend_from_slice(line);
    }
}

/// A response body fed by a channel of chunks.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// GET /api/services/<name>[?details=1].
pub(super) fn get_service<B>(req: &Request<B>, state: &AppState, name: &str) -> Response<Body> {
    #[derive(Serialize)]
    struct One {
        service: ServiceView,
        now: i64,
    }
    let details =
        query_param(req, "details").is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    match state.engine.service(name, details) {
        Some(service) => json(
            StatusCode::OK,
            &One {
                service,
                now: now_ms(),
            },
        ),
        None => error(StatusCode::NOT_FOUND, format!("no service named '{name}'")),
    }
}

/// GET /api/alarms.
pub(super) fn list_alarms(state: &AppState) -> Response<Body> {
    #[derive(Serialize)]
    struct List {
        alarms: Vec<AlarmView>,
        now: i64,
    }
    json(
        StatusCode::OK,
        &List {
            alarms: state.engine.alarms(),
            now: now_ms(),
        },
    )
}

/// GET /api/alarms/<name>.
pub(super) fn get_alarm(state: &AppState, name: &str) -> Response<Body> {
    #[derive(Serialize)]
    struct One {
        alarm: AlarmView,
        services: Vec<ServiceView>,
        now: i64,
    }
    match state.engine.alarm(name) {
        Some(alarm) => json(
            StatusCode::OK,
            &One {
                alarm,
                services: state.engine.alarm_services(name),
                now: now_ms(),
            },
        ),
        None => error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'")),
    }
}

/// DELETE /api/alarms/<name>.
pub(super) fn delete_alarm(state: &AppState, name: &str) -> Response<Body> {
    match state.engine.delete_alarm(name, now_ms()) {
        Ok(_) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// GET /api/status.
pub(super) fn status<B>(req: &Request<B>, state: &AppState) -> Response<Body> {
    let (ok, err) = state.engine.status();
    status_response(req, ok, err)
}

/// GET /api/alarms/<name>/status.
pub(super) fn alarm_status<B>(req: &Request<B>, state: &AppState, name: &str) -> Response<Body> {
    match state.engine.alarm_status(name) {
        Some((ok, err)) => status_response(req, ok, err),
        None => error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'")),
    }
}

fn status_response<B>(req: &Request<B>, num_ok: i64, num_error: i64) -> Response<Body> {
    if wants_json(req) {
        #[derive(Serialize)]
        struct Status {
            num_ok: i64,
            num_error: i64,
            has_error: bool,
            good: bool,
        }
        json(
            StatusCode::OK,
            &Status {
                num_ok,
                num_error,
                has_error: num_error > 0,
                good: num_error == 0,
            },
        )
    } else {
        let text = format!(
            "num_ok {num_ok}\nnum_error {num_error}\nhas_error {}\ngood {}\n",
            num_error > 0,
            num_error == 0
        );
        respond(StatusCode::OK, "text/plain; charset=utf-8", text)
    }
}

/// The version string.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// GET /version.
pub(super) fn version<B>(req: &Request<B>) -> Response<Body> {
    if wants_json(req) {
        #[derive(Serialize)]
        struct V {
            version: &'static str,
        }
        json(StatusCode::OK, &V { version: VERSION })
    } else {
        respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            format!("{VERSION}\n"),
        )
    }
}

/// What `POST /api/alerts/<name>/test` answers.
#[derive(serde::Serialize)]
struct AlertTestAnswer<'a> {
    alert: &'a str,
    /// True when every alerter delivered it.
    delivered: bool,
    results: Vec<crate::sinks::alerts::TestResult>,
}

/// POST /api/alerts/<name>/test: sends a marked test to every alerter of
/// the alert and says, per alerter, whether it was delivered. 404 for an
/// alert the configuration does not have.
pub(super) async fn test_alert(state: &AppState, name: &str) -> Response<Body> {
    match crate::sinks::alerts::send_test(state.alerts.clone(), name).await {
        None => error(
            StatusCode::NOT_FOUND,
            format!("no alert '{name}' is configured"),
        ),
        Some(results) => json(
            StatusCode::OK,
            &AlertTestAnswer {
                alert: name,
                delivered: results.iter().all(|r| r.delivered),
                results,
            },
        ),
    }
}
