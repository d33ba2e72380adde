//! Handlers of the JSON API (README, "HTTP API").

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::lists::Out;
use super::router::{busy, error, json, query_param, respond, wants_json};
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::engine::Engine;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::job::{output_tail, ScheduleError};
use crate::engine::timeout_text::{parse_timeout, timeout_from_json_number};
use crate::engine::{Change, EngineError, FailReport, Schedule, ServiceView, Timeout};
use crate::settings::duration::{parse_duration_input, DurationError};

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
async fn read_body(
    req: Request<Incoming>,
    state: &AppState,
) -> Result<bytes::Bytes, Response<Body>> {
    let _waiting = req
        .extensions()
        .get::<Arc<super::conns::Conn>>()
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

/// GET /api/services, streamed (`lists.rs`): the names are gathered
/// first (24 bytes each, most stored inline), then each service is viewed
/// and written in turn, so memory stays flat however many services there
/// are. The bytes are what serde_json's pretty printer would give for the
/// whole object.
pub(super) fn list_services(state: &AppState) -> Response<Body> {
    stream_list(
        state,
        |out, _| {
            out.put(b"{\n  \"services\": [");
            Some(())
        },
        |engine| engine.names(),
        |engine, name| engine.service(name, false),
    )
}

/// Streams a whole-table answer: `head` opens the top-level object and a
/// list in it (`None`: what it would write is gone, and the answer is
/// cut), each of `names` that still has a `view` when its turn comes is
/// an element, and `now` ends the object. All of it is taken on the
/// answer's blocking thread, once the answer is admitted.
fn stream_list<N, V: Serialize>(
    state: &AppState,
    head: impl FnOnce(&mut Out, &Engine) -> Option<()> + Send + 'static,
    names: impl FnOnce(&Engine) -> Vec<N> + Send + 'static,
    view: impl Fn(&Engine, &N) -> Option<V> + Send + 'static,
) -> Response<Body> {
    let admitted = match state.lists.admit() {
        Ok(a) => a,
        Err(busy) => return *busy,
    };
    let engine = state.engine.clone();
    admitted.stream(move |out| {
        head(out, &engine)?;
        let names = names(&engine);
        out.holds(names.len());
        let mut first = true;
        for name in &names {
            let Some(v) = view(&engine, name) else {
                continue;
            };
            out.element(&mut first, &v)?;
        }
        // The list and then the object, as serde_json's pretty printer
        // ends them (`[]` for an empty list).
        out.put(if first { b"],\n" } else { b"\n  ],\n" });
        out.put(format!("  \"now\": {}\n}}\n", now_ms()).as_bytes());
        Some(())
    })
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

/// GET /api/alarms, streamed like the list of services (there may be a
/// million alarms made from templates): `{"alarms": [...], "now": ms}`.
pub(super) fn list_alarms(state: &AppState) -> Response<Body> {
    stream_list(
        state,
        |out, _| {
            out.put(b"{\n  \"alarms\": [");
            Some(())
        },
        |engine| engine.alarm_names(),
        |engine, name| engine.alarm(name),
    )
}

/// GET /api/alarms/<name>: `{"alarm": {...}, "services": [...], "now":
/// ms}`. That the alarm is listed is checked here, in O(1) (a 404 if
/// not); its view (which holds every failed member's name) and its
/// members, found by a walk of every service, are taken once the answer
/// is admitted, off the runtime, and streamed like the list of services.
pub(super) fn get_alarm(state: &AppState, name: &str) -> Response<Body> {
    if state.engine.alarm_status(name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'"));
    }
    let (name, members_of) = (name.to_string(), name.to_string());
    stream_list(
        state,
        move |out, engine| {
            let alarm = engine.alarm(&name)?;
            out.put(b"{\n  \"alarm\": ");
            out.field(&alarm);
            out.put(b",\n  \"services\": [");
            Some(())
        },
        move |engine| engine.alarm_member_names(&members_of),
        |engine, name| engine.service(name, false),
    )
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

/// One alert in `GET /api/alarms/<name>/alerts`.
#[derive(serde::Serialize)]
struct AlertKinds<'a> {
    name: &'a str,
    /// The kinds of its alerters: what a test of it reaches.
    alerters: Vec<&'static str>,
}

/// GET /api/alarms/<name>/alerts: `{"alarm": name, "alerts": [{"name",
/// "alerters"}]}`, the alerts the alarm's configured section fires, in
/// its order. The UI offers a test of each; only kinds are shown, never
/// an address or a key.
pub(super) fn alarm_alerts(state: &AppState, name: &str) -> Response<Body> {
    let Some(names) = state.engine.alarm_alerts(name) else {
        return error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'"));
    };
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        alarm: &'a str,
        alerts: Vec<AlertKinds<'a>>,
    }
    let alerts = names
        .iter()
        // Every name an alarm lists is configured (the file is refused
        // otherwise, and it is read once); one that were not would be
        // listed with no alerters, not hidden.
        .map(|n| AlertKinds {
            name: n,
            alerters: crate::sinks::alerts::alerter_kinds(&state.alerts, n).unwrap_or_default(),
        })
        .collect();
    json(
        StatusCode::OK,
        &Answer {
            alarm: name,
            alerts,
        },
    )
}

/// Alert tests sent at once by one server; more are a 503.
const TESTS_AT_ONCE: usize = 2;

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
    // Each test makes a request to every alerter of the alert: however
    // many clients ask at once, two tests are under way at most.
    static UNDER_WAY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(TESTS_AT_ONCE);
    let Ok(permit) = UNDER_WAY.try_acquire() else {
        return busy(
            format!("{TESTS_AT_ONCE} alert tests are under way already: try again shortly"),
            "5",
        );
    };
    // Its own task, which holds the place: a client that hangs up cuts
    // the test short no more than it frees its place early.
    let test = crate::sinks::alerts::send_test(
        state.alerts.clone(),
        name.to_string(),
        state.alert_tasks.clone(),
    );
    let sent = state
        .alert_tasks
        .spawn(async move {
            let _permit = permit;
            test.await
        })
        .await;
    match sent {
        Err(e) => {
            tracing::error!("the test of alert {} failed: {e}", name.escape_debug());
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the test failed unexpectedly".into(),
            )
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no alert '{name}' is configured"),
        ),
        Ok(Some(results)) => json(
            StatusCode::OK,
            &AlertTestAnswer {
                alert: name,
                // An alert with no alerters delivered nothing.
                delivered: !results.is_empty() && results.iter().all(|r| r.delivered),
                results,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AlarmDef, Engine, EngineConfig};
    use std::sync::Arc;

    /// A state around `engine`, as the daemon builds it.
    fn app(engine: Engine, max_lists: usize) -> AppState {
        let limits = crate::limits::LimitsConfig {
            max_http_lists: max_lists,
            ..Default::default()
        };
        let conns = Arc::new(super::super::conns::Registry::new(
            8,
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(60),
        ));
        let lists = Arc::new(super::super::lists::Lists::new(
            max_lists,
            std::time::Duration::from_secs(60),
        ));
        let ws = Arc::new(super::super::ws::WsHub::new(4));
        AppState {
            counters: crate::counters::Counters::new(vec![
                conns.clone(),
                lists.clone(),
                ws.clone(),
                Arc::new(engine.clone()),
            ]),
            engine,
            ws,
            gate: Default::default(),
            limits,
            conns,
            lists,
            alerts: Default::default(),
            alert_tasks: Default::default(),
            history: crate::history::HistoryState::Off,
        }
    }

    /// An engine with `n` services, a third of them in ERROR, half of
    /// them in the alarm `web`.
    fn engine(n: usize) -> Engine {
        let now = now_ms();
        let e = Engine::new(
            EngineConfig {
                alarms: vec![
                    AlarmDef {
                        name: "web".into(),
                        includes: vec!["web.*".into()],
                        ..Default::default()
                    },
                    AlarmDef {
                        name: "none".into(),
                        includes: vec!["none.*".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            now,
        );
        for i in 0..n {
            let name = if i % 2 == 0 {
                format!("web.s{i}")
            } else {
                format!("db.s{i}")
            };
            e.beat(&name, now).expect("beat");
            if i % 3 == 0 {
                let fail = Change {
                    fail: Some(FailReport {
                        exit_code: Some(2),
                        output: format!("failure {i}\nsecond line \"quoted\""),
                    }),
                    ..Change::default()
                };
                e.change(&name, fail, now).expect("fail");
            }
        }
        e
    }

    async fn body(r: Response<Body>) -> (StatusCode, Vec<u8>) {
        let status = r.status();
        let bytes = r.into_body().collect().await.expect("whole").to_bytes();
        (status, bytes.to_vec())
    }

    /// serde_json's pretty printing of `value` with the `now` the answer
    /// gave, and a newline, as `router::json` sends a whole object.
    fn expected<T: Serialize>(value: T) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&value).expect("json");
        v.push(b'\n');
        v
    }

    fn now_of(got: &[u8]) -> i64 {
        let v: serde_json::Value = serde_json::from_slice(got).expect("JSON");
        v["now"].as_i64().expect("now")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streamed_answers_are_byte_for_byte_what_serde_json_prints_for_the_whole_object() {
        let mut alarm_pages = 0;
        for n in [0, 1, 3000] {
            let e = engine(n);
            let state = app(e.clone(), 4);

            let (status, got) = body(list_services(&state)).await;
            assert_eq!(status, StatusCode::OK);
            #[derive(Serialize)]
            struct Services {
                services: Vec<ServiceView>,
                now: i64,
            }
            let services: Vec<ServiceView> = e
                .names()
                .iter()
                .filter_map(|n| e.service(n, false))
                .collect();
            assert_eq!(services.len(), n);
            let want = expected(Services {
                services: services.clone(),
                now: now_of(&got),
            });
            assert!(
                got == want,
                "{n} services:\n{}\n---\n{}",
                String::from_utf8_lossy(&got[..got.len().min(2000)]),
                String::from_utf8_lossy(&want[..want.len().min(2000)])
            );
            if n == 3000 {
                assert!(got.len() > 4 * 64 * 1024, "several chunks: {}", got.len());
            }

            let (status, got) = body(list_alarms(&state)).await;
            assert_eq!(status, StatusCode::OK);
            #[derive(Serialize)]
            struct Alarms {
                alarms: Vec<crate::engine::AlarmView>,
                now: i64,
            }
            let want = expected(Alarms {
                alarms: e.alarms(),
                now: now_of(&got),
            });
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );

            for alarm in ["web", "none"] {
                let (status, got) = body(get_alarm(&state, alarm)).await;
                let Some(view) = e.alarm(alarm) else {
                    // Not listed: no member has ever joined it.
                    assert_eq!(status, StatusCode::NOT_FOUND);
                    continue;
                };
                assert_eq!(status, StatusCode::OK);
                #[derive(Serialize)]
                struct One {
                    alarm: crate::engine::AlarmView,
                    services: Vec<ServiceView>,
                    now: i64,
                }
                let members: Vec<ServiceView> = services
                    .iter()
                    .filter(|s| s.in_alarms.iter().any(|a| &**a == alarm))
                    .cloned()
                    .collect();
                let want = expected(One {
                    alarm: view,
                    services: members,
                    now: now_of(&got),
                });
                alarm_pages += 1;
                assert!(
                    got == want,
                    "{alarm} of {n}:\n{}\n---\n{}",
                    String::from_utf8_lossy(&got[..got.len().min(3000)]),
                    String::from_utf8_lossy(&want[..want.len().min(3000)])
                );
            }
        }
        assert_eq!(alarm_pages, 2, "web, with 1 and with 1500 members");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_alarm_is_a_404_even_when_every_list_is_under_way() {
        let state = app(engine(3000), 1);
        // A list whose reader never reads holds the only place.
        let held = list_services(&state);
        let busy = list_alarms(&state);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get_alarm(&state, "no.such").status(), StatusCode::NOT_FOUND);
        drop(held);
    }
}
