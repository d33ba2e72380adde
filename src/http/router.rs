//! Maps requests to handlers, and the small helpers every handler uses.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::path::RequestPath;
use super::{api, AppState, Body};
use crate::engine::valid_name;

/// Answers one request. Every answer says its content type is not to be
/// second-guessed (`nosniff`): a JSON error that echoes a name is never
/// run as a page.
pub async fn answer(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let mut r = route(req, state).await;
    r.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Routes one request: its path is parsed once (a disguised spelling is a
/// 400), a change from another site's page is refused, the key check and
/// the routes below read the same segments.
async fn route(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parsed = match RequestPath::parse(&path) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let websocket = parsed.segments() == ["ws"];
    if let Some(refused) = super::origin::check(&req, websocket) {
        return refused;
    }
    if let Some(denied) = state.keys.check(&req, &parsed) {
        return denied;
    }
    let method = req.method().clone();
    match parsed.segments() {
        ["api", "services"] | ["api", "services", ""] => {
            only(&method, &[Method::GET], || api::list_services(&req, state))
        }
        ["api", "services", name] => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            match method {
                Method::POST => api::beat(req, state, name).await,
                Method::GET => api::get_service(&req, state, name),
                Method::DELETE => api::delete_service(state, name),
                _ => not_allowed("GET, POST, DELETE"),
            }
        }
        ["api", "services", name, action @ ("mute" | "unmute")] => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            let mute = *action == "mute";
            only(&method, &[Method::POST], || {
                api::mute(&req, state, name, mute)
            })
        }
        ["api", "services", name, signal @ ("start" | "fail")] => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            match method {
                Method::POST => api::job_signal(req, state, name, signal, None).await,
                _ => not_allowed("POST"),
            }
        }
        ["api", "services", name, "exit", code] => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            match method {
                Method::POST => api::job_signal(req, state, name, "exit", Some(code)).await,
                _ => not_allowed("POST"),
            }
        }
        ["api", "alarms"] | ["api", "alarms", ""] => {
            only(&method, &[Method::GET], || api::list_alarms(state))
        }
        ["api", "alarms", name] => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            match method {
                Method::GET => api::get_alarm(state, name),
                Method::DELETE => api::delete_alarm(state, name),
                _ => not_allowed("GET, DELETE"),
            }
        }
        ["api", "alarms", name, "status"] => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            only(&method, &[Method::GET], || {
                api::alarm_status(&req, state, name)
            })
        }
        ["api", "status"] => only(&method, &[Method::GET], || api::status(&req, state)),
        ["metrics"] => only(&method, &[Method::GET], || super::metrics::render(state)),
        ["ws"] => match method {
            Method::GET => super::ws::upgrade(req, &state.ws, &state.engine),
            _ => not_allowed("GET"),
        },
        ["badge", file] => only(&method, &[Method::GET], || {
            super::badge::serve(&req, state, file)
        }),
        ["version"] => only(&method, &[Method::GET], || api::version(&req)),
        [file] if super::ui::asset(file).is_some() => only(&method, &[Method::GET], || {
            super::ui::asset(file).map_or_else(
                || error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
                super::ui::serve,
            )
        }),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// Runs `f` if the method is one of `allowed`, else answers 405.
fn only(method: &Method, allowed: &[Method], f: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if allowed.contains(method) || (method == Method::HEAD && allowed.contains(&Method::GET)) {
        f()
    } else {
        let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        not_allowed(&list.join(", "))
    }
}

fn not_allowed(allow: &str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

/// A 400 for a name outside SPEC §1.1.
fn check_name(name: &str, what: &str) -> Option<Response<Body>> {
    if valid_name(name.as_bytes()) {
        return None;
    }
    Some(error(
        StatusCode::BAD_REQUEST,
        format!("invalid {what} name '{name}': use lower-case letters, digits, '.', '_' and '-', not dots only (at most 255 bytes)"),
    ))
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Pretty-printed JSON with a trailing newline, as 1.x sends it.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            respond(status, "application/json", body)
        }
        Err(e) => {
            tracing::error!("could not encode a response: {e}");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                b"internal error\n".to_vec(),
            )
        }
    }
}

/// `{"error": message}` with the given status.
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: message })
}

/// A response with a content type.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// True when the client asked for JSON.
pub fn wants_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The value of a query parameter, decoded.
pub fn query_param<B>(req: &Request<B>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
