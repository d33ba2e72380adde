//! The requests that change a service or an alarm: a beat with its
//! settings (from the query, a form or JSON), the job signals, mute and
//! unmute, and deletes.

use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};

use crate::clock::now_ms;
use crate::cluster::wire::{Command, Op};
use crate::http::router::{error, query_param};
use crate::http::{AppState, Body};
use std::sync::Arc;

use crate::engine::job::{output_tail, ScheduleError};
use crate::engine::timeout_text::{parse_timeout, timeout_from_json_number};
use crate::engine::{Change, FailReport, Schedule, Timeout};
use crate::settings::duration::{parse_duration_input, DurationError};

use super::body::read_body;
use super::{empty_ok, engine_error};

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
pub(in crate::http) async fn beat(
    req: Request<Incoming>,
    state: &AppState,
    name: &str,
    audit: &crate::http::audit::Audit<'_>,
) -> Response<Body> {
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
    if let Some(r) = via_cluster(state, name, Op::Change(change.clone())).await {
        return r;
    }
    let created = state.engine.service_state(name).is_none();
    let settings =
        (created || change.timeout.is_some() || change.max_runtime.is_some()).then(|| Change {
            timeout: change.timeout.clone(),
            max_runtime: change.max_runtime,
            ..Change::default()
        });
    match state.engine.change(name, change, now_ms()) {
        Ok(()) => {
            if let Some(settings) = settings {
                audit.change(name, &settings, created);
            }
            empty_ok()
        }
        Err(e) => engine_error(e),
    }
}

/// Cluster mode: publishes the write to the cluster's stream and answers
/// once JetStream has stored it (200), or 503 with `Retry-After` when the
/// node's buffer is full or NATS did not acknowledge it in time. `None`
/// on a single node: the caller applies the write itself.
async fn via_cluster(state: &AppState, name: &str, op: Op) -> Option<Response<Body>> {
    let cluster = state.cluster.as_ref()?;
    if !crate::engine::valid_name(name.as_bytes()) {
        return Some(engine_error(crate::engine::EngineError::InvalidName(
            name.to_string(),
        )));
    }
    let cmd = Command {
        ts: now_ms(),
        name: name.to_string(),
        op,
    };
    Some(match cluster.submit(&cmd).await {
        Ok(()) => empty_ok(),
        Err(e) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored: {e}; try again"),
            );
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("5"),
            );
            r
        }
    })
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
        Some(serde_json::Value::Number(_)) => {
            // As written (`-0` stays negative, `0.0000000001` is not
            // `1e-10`): read as every path reads seconds.
            params.timeout = Some(timeout_from_json_number(&json_text(body, "timeout")?)?);
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

/// The text of the top-level field `key` of a JSON object `body` as it is
/// written (a number's own digits, which a float would round or print
/// with an exponent); the last one when the key is repeated, as
/// `serde_json::Value` keeps the last.
fn json_text(body: &[u8], key: &str) -> Result<String, BadRequest> {
    let fields: std::collections::HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body)
            .map_err(|e| BadRequest::Body(format!("request body is not valid JSON: {e}")))?;
    Ok(fields
        .get(key)
        .map(|v| v.get().to_string())
        .unwrap_or_default())
}

/// Which job signal a request sends.
#[derive(Debug, Clone, Copy)]
pub(in crate::http) enum Signal<'a> {
    /// `/start`.
    Start,
    /// `/fail`.
    Fail,
    /// `/exit/<code>`, with the code as given.
    Exit(&'a str),
}

/// POST /api/services/<name>/start, /fail and /exit/<code>. A fail or exit
/// body is kept as the failure's output (its last 10 KiB).
pub(in crate::http) async fn job_signal(
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
    if let Some(r) = via_cluster(state, name, Op::Change(change.clone())).await {
        return r;
    }
    match state.engine.change(name, change, now_ms()) {
        Ok(()) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// POST /api/services/<name>/mute (`?for=2h` snoozes) and /unmute.
pub(in crate::http) async fn mute<B>(
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
        if let Some(r) = via_cluster(state, name, Op::Mute(until)).await {
            return r;
        }
        state.engine.mute_until(name, until, now)
    } else {
        if let Some(r) = via_cluster(state, name, Op::Unmute).await {
            return r;
        }
        state.engine.unmute(name, now)
    };
    match r {
        Ok(()) => empty_ok(),
        Err(e) => engine_error(e),
    }
}

/// DELETE /api/services/<name>.
pub(in crate::http) async fn delete_service(state: &AppState, name: &str) -> Response<Body> {
    if let Some(r) = via_cluster(state, name, Op::Delete).await {
        return r;
    }
    state.engine.delete(name, now_ms());
    empty_ok()
}

/// DELETE /api/alarms/<name>.
pub(in crate::http) fn delete_alarm(state: &AppState, name: &str) -> Response<Body> {
    match state.engine.delete_alarm(name, now_ms()) {
        Ok(_) => empty_ok(),
        Err(e) => engine_error(e),
    }
}
