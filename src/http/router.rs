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
pub(super) async fn answer(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let mut r = route(req, state).await;
    r.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// What a request asks for, as the route table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/api/services` (and with a trailing `/`).
    ListServices,
    /// `/api/services/{name}`.
    Service,
    /// `/api/services/{name}/mute`.
    Mute,
    /// `/api/services/{name}/unmute`.
    Unmute,
    /// `/api/services/{name}/start`.
    Start,
    /// `/api/services/{name}/fail`.
    Fail,
    /// `/api/services/{name}/exit/{code}`.
    Exit,
    /// `/api/services/{name}/history`: its state changes (README, "History").
    ServiceHistory,
    /// `/api/services/{name}/uptime`: its time-weighted uptime per window.
    ServiceUptime,
    /// `/api/services/{name}/runs`: a job's runs (README, "History").
    ServiceRuns,
    /// `/api/audit`: who changed what through the API or the configuration.
    Audit,
    /// `/api/services/{name}/daily`: its uptime per calendar day.
    ServiceDaily,
    /// `/api/alarms` (and with a trailing `/`).
    ListAlarms,
    /// `/api/alarms/{name}`.
    Alarm,
    /// `/api/alarms/{name}/status`.
    AlarmStatus,
    /// `/api/alarms/{name}/alerts`: the alerts an alarm fires, and their
    /// alerters' kinds (what the UI offers to test).
    AlarmAlerts,
    /// `/api/alarms/{name}/history`: its state changes.
    AlarmHistory,
    /// `/api/alarms/{name}/uptime`: its time-weighted uptime per window.
    AlarmUptime,
    /// `/api/alarms/{name}/daily`: its uptime per calendar day.
    AlarmDaily,
    /// `/api/alarms/{name}/incidents`: its incidents (README, "History").
    AlarmIncidents,
    /// `/api/export`: every state change in a range, streamed.
    Export,
    /// `/api/maintenance`: the maintenance windows; `POST` makes one.
    Maintenance,
    /// `/api/maintenance/{name}`: one window; `DELETE` ends it.
    MaintenanceWindow,
    /// `/api/reports`: the alarms' uptime reports over a range.
    Reports,
    /// `/api/status`.
    Status,
    /// `/api/alerts/{name}/test`: a test to every alerter of an alert.
    AlertTest,
    /// `/metrics`.
    Metrics,
    /// `/ws`.
    Websocket,
    /// `/badge/{file}`.
    Badge,
    /// `/version`.
    Version,
    /// `/alarms/{name}`: the link in alerts, which sends the browser to
    /// the alarm's page in the UI.
    AlarmLink,
    /// One of the UI's files.
    Asset,
    /// `/status/{file}`: a public status page (`<slug>`, `<slug>.json`,
    /// `<slug>.rss`) or its stylesheet (README, "Status pages").
    StatusPage,
    /// `/status/{slug}/badge.svg`: a status page's overall badge.
    StatusBadge,
    /// `/status/{slug}/{entry}/badge.svg`: one entry's badge.
    StatusEntryBadge,
    /// `/status/{slug}/subscribe`: a visitor subscribes by mail (no key).
    StatusSubscribe,
    /// `/status/{slug}/confirm`: the link mailed to confirm (no key).
    StatusConfirm,
    /// `/status/{slug}/unsubscribe`: the link in every mail (no key).
    StatusUnsubscribe,
    /// `/api/status_pages/{slug}/incidents`: a page's incidents.
    PageIncidents,
    /// `/api/status_pages/{slug}/incidents/{id}/updates`: one incident's
    /// updates.
    PageIncidentUpdates,
}

impl Endpoint {
    /// True for what anyone may read without a key: the UI's files,
    /// badges, the version, the alerts' links into the UI, and public
    /// status pages with their badges. Everything else is closed to a
    /// reader without a key when read keys are set.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Endpoint::Badge
                | Endpoint::Version
                | Endpoint::AlarmLink
                | Endpoint::Asset
                | Endpoint::StatusPage
                | Endpoint::StatusBadge
                | Endpoint::StatusEntryBadge
                | Endpoint::StatusSubscribe
                | Endpoint::StatusConfirm
                | Endpoint::StatusUnsubscribe
        )
    }

    /// True for the changes anyone may make without a key: subscribing
    /// to a status page, confirming, and leaving (README, "Status
    /// pages"), bounded and rate limited instead.
    pub fn is_open_change(self) -> bool {
        matches!(
            self,
            Endpoint::StatusSubscribe | Endpoint::StatusConfirm | Endpoint::StatusUnsubscribe
        )
    }
}

/// The route table, built once.
fn routes() -> &'static matchit::Router<Endpoint> {
    static ROUTES: std::sync::LazyLock<matchit::Router<Endpoint>> =
        std::sync::LazyLock::new(|| {
            let mut r = matchit::Router::new();
            for (path, endpoint) in [
                ("/api/services", Endpoint::ListServices),
                ("/api/services/", Endpoint::ListServices),
                ("/api/services/{name}", Endpoint::Service),
                ("/api/services/{name}/mute", Endpoint::Mute),
                ("/api/services/{name}/unmute", Endpoint::Unmute),
                ("/api/services/{name}/start", Endpoint::Start),
                ("/api/services/{name}/fail", Endpoint::Fail),
                ("/api/services/{name}/exit/{code}", Endpoint::Exit),
                ("/api/services/{name}/history", Endpoint::ServiceHistory),
                ("/api/services/{name}/uptime", Endpoint::ServiceUptime),
                ("/api/services/{name}/daily", Endpoint::ServiceDaily),
                ("/api/services/{name}/runs", Endpoint::ServiceRuns),
                ("/api/audit", Endpoint::Audit),
                ("/api/alarms", Endpoint::ListAlarms),
                ("/api/alarms/", Endpoint::ListAlarms),
                ("/api/alarms/{name}", Endpoint::Alarm),
                ("/api/alarms/{name}/status", Endpoint::AlarmStatus),
                ("/api/alarms/{name}/alerts", Endpoint::AlarmAlerts),
                ("/api/alarms/{name}/history", Endpoint::AlarmHistory),
                ("/api/alarms/{name}/uptime", Endpoint::AlarmUptime),
                ("/api/alarms/{name}/daily", Endpoint::AlarmDaily),
                ("/api/alarms/{name}/incidents", Endpoint::AlarmIncidents),
                ("/api/export", Endpoint::Export),
                ("/api/maintenance", Endpoint::Maintenance),
                ("/api/maintenance/", Endpoint::Maintenance),
                ("/api/maintenance/{name}", Endpoint::MaintenanceWindow),
                ("/api/reports", Endpoint::Reports),
                ("/api/status", Endpoint::Status),
                ("/api/alerts/{name}/test", Endpoint::AlertTest),
                ("/metrics", Endpoint::Metrics),
                ("/ws", Endpoint::Websocket),
                ("/badge/{file}", Endpoint::Badge),
                ("/version", Endpoint::Version),
                ("/alarms/{name}", Endpoint::AlarmLink),
                ("/status/{file}", Endpoint::StatusPage),
                ("/status/{slug}/badge.svg", Endpoint::StatusBadge),
                ("/status/{slug}/subscribe", Endpoint::StatusSubscribe),
                ("/status/{slug}/confirm", Endpoint::StatusConfirm),
                ("/status/{slug}/unsubscribe", Endpoint::StatusUnsubscribe),
                (
                    "/status/{slug}/{entry}/badge.svg",
                    Endpoint::StatusEntryBadge,
                ),
                (
                    "/api/status_pages/{slug}/incidents",
                    Endpoint::PageIncidents,
                ),
                (
                    "/api/status_pages/{slug}/incidents/{id}/updates",
                    Endpoint::PageIncidentUpdates,
                ),
            ] {
                // A conflict is a mistake in the table above, caught by every
                // test that starts a server.
                r.insert(path, endpoint)
                    .unwrap_or_else(|e| panic!("route {path}: {e}"));
            }
            for file in super::ui::FILES {
                let path = format!("/{file}");
                r.insert(path.as_str(), Endpoint::Asset)
                    .unwrap_or_else(|e| panic!("route {path}: {e}"));
            }
            r
        });
    &ROUTES
}

/// The endpoint a path names, if it is a checked path in the table.
#[cfg(test)]
pub(super) fn endpoint_of(path: &str) -> Option<Endpoint> {
    let path = RequestPath::parse(path).ok()?;
    routes().at(path.as_str()).ok().map(|m| *m.value)
}

/// Who may ask what: the API keys and the host names answered.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// `[http] write_keys` and `read_keys`.
    pub keys: super::auth::Keys,
    /// `[http] allowed_hosts`.
    pub hosts: super::origin::AllowedHosts,
}

/// Decides whether a request may reach a handler, before any handler
/// runs, from one check of its path and one match of the route table: the
/// path (a disguised spelling is a 400), the host name (421), the origin
/// of a change (403), the key (401, 403). `Ok` carries the route's match,
/// `None` for a path the table does not know (a 404, once the key check
/// let it through). The refusal is boxed: it is the rare case.
pub fn admit<'p, B>(
    req: &Request<B>,
    path: &'p str,
    gate: &Gate,
) -> Result<Option<matchit::Match<'static, 'p, &'static Endpoint>>, Box<Response<Body>>> {
    admit_as(req, path, gate).map(|(m, _)| m)
}

/// What [`admit_as`] lets through: the route's match, and who asks.
pub type Admitted<'p> = (
    Option<matchit::Match<'static, 'p, &'static Endpoint>>,
    super::auth::Identity,
);

/// [`admit`], and who the request is (the audit trail's `who`).
pub fn admit_as<'p, B>(
    req: &Request<B>,
    path: &'p str,
    gate: &Gate,
) -> Result<Admitted<'p>, Box<Response<Body>>> {
    let parsed = RequestPath::parse(path)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, e.to_string())))?;
    let matched = routes().at(parsed.as_str()).ok();
    let endpoint = matched.as_ref().map(|m| *m.value);
    let refused = gate
        .hosts
        .check(req)
        .or_else(|| super::origin::check(req, endpoint == Some(Endpoint::Websocket)));
    if let Some(r) = refused {
        return Err(Box::new(r));
    }
    gate.keys.identify(req, endpoint).map(|who| (matched, who))
}

/// Routes one request, once [`admit`] let it through.
async fn route(mut req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let path = req.uri().path().to_string();
    let (m, who) = match admit_as(&req, &path, &state.gate) {
        Ok((Some(m), who)) => (m, who),
        Ok((None, _)) => return error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        Err(refused) => return *refused,
    };
    // Who asks, for any handler that needs it (the audit trail).
    req.extensions_mut().insert(who);
    let audit = super::audit::Audit::new(state, who);
    let param = |k: &str| m.params.get(k).unwrap_or_default();
    let method = req.method().clone();
    // A stored name outside §1.1, percent-escaped (see `path.rs`).
    let stored = super::path::stored_name(&path);
    let name = stored.as_deref().unwrap_or_else(|| param("name"));
    // lovebeat's own trouble is reported by lovebeat only: a client that
    // could beat `lovebeat.self.save` could hide a failing save.
    let service_endpoint = matches!(
        *m.value,
        Endpoint::Service
            | Endpoint::Mute
            | Endpoint::Unmute
            | Endpoint::Start
            | Endpoint::Fail
            | Endpoint::Exit
    );
    if service_endpoint && !super::auth::is_read_only(&method) && crate::engine::is_internal(name) {
        return error(
            StatusCode::FORBIDDEN,
            format!("'{name}' is lovebeat's own: only lovebeat changes it"),
        );
    }
    let endpoint = *m.value;
    // Whether this request creates its service, and whether a mute is a
    // snooze, for the audit trail.
    let creates = service_endpoint
        && !super::auth::is_read_only(&method)
        && state.engine.service_state(name).is_none();
    let snooze = endpoint == Endpoint::Mute && query_param(&req, "for").is_some();
    let r = dispatch(req, state, m.value, &method, name, &m.params, &audit).await;
    audit.answered(
        endpoint,
        &method,
        name,
        snooze,
        creates && state.engine.service_state(name).is_some(),
        &r,
    );
    r
}

/// Calls the handler of `endpoint`.
async fn dispatch(
    req: Request<Incoming>,
    state: &AppState,
    endpoint: &Endpoint,
    method: &Method,
    name: &str,
    params: &matchit::Params<'_, '_>,
    audit: &super::audit::Audit<'_>,
) -> Response<Body> {
    let param = |k: &str| params.get(k).unwrap_or_default();
    let (code, file) = (param("code"), param("file"));
    let method = method.clone();
    let path = req.uri().path().to_string();
    match *endpoint {
        Endpoint::ListServices => only(&method, &[Method::GET], || {
            api::list_services(&req, state, super::lists::peer(&req))
        }),
        Endpoint::Service => {
            let manage = matches!(method, Method::GET | Method::HEAD | Method::DELETE);
            if let Some(bad) = check_service_name(state, name, manage) {
                return bad;
            }
            match method {
                Method::POST => api::beat(req, state, name, audit).await,
                Method::GET | Method::HEAD => api::get_service(&req, state, name).await,
                Method::DELETE => api::delete_service(state, name).await,
                _ => not_allowed("GET, POST, DELETE"),
            }
        }
        e @ (Endpoint::Mute | Endpoint::Unmute) => {
            if let Some(bad) = check_service_name(state, name, method == Method::POST) {
                return bad;
            }
            if method == Method::POST {
                api::mute(&req, state, name, e == Endpoint::Mute).await
            } else {
                not_allowed("POST")
            }
        }
        e @ (Endpoint::Start | Endpoint::Fail | Endpoint::Exit) => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            if method != Method::POST {
                return not_allowed("POST");
            }
            let signal = match e {
                Endpoint::Start => api::Signal::Start,
                Endpoint::Fail => api::Signal::Fail,
                _ => api::Signal::Exit(code),
            };
            api::job_signal(req, state, name, signal).await
        }
        Endpoint::ListAlarms
            if state.cluster.is_some() && matches!(method, Method::GET | Method::HEAD) =>
        {
            api::list_cluster_alarms(state).await
        }
        Endpoint::ListAlarms => only(&method, &[Method::GET], || {
            api::list_alarms(state, super::lists::peer(&req))
        }),
        Endpoint::Alarm => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            match method {
                Method::GET | Method::HEAD => api::get_alarm(state, super::lists::peer(&req), name),
                Method::DELETE => api::delete_alarm(state, name),
                _ => not_allowed("GET, DELETE"),
            }
        }
        Endpoint::AlarmStatus => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            only(&method, &[Method::GET], || {
                api::alarm_status(&req, state, name)
            })
        }
        Endpoint::AlarmAlerts => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            only(&method, &[Method::GET], || api::alarm_alerts(state, name))
        }
        e @ (Endpoint::ServiceHistory | Endpoint::AlarmHistory) => {
            let (what, kind) = match e {
                Endpoint::ServiceHistory => ("service", crate::history::record::Kind::Service),
                _ => ("alarm", crate::history::record::Kind::Alarm),
            };
            if let Some(bad) = check_name(name, what) {
                return bad;
            }
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            super::history::changes(&req, state, kind, name).await
        }
        e @ (Endpoint::ServiceUptime
        | Endpoint::ServiceDaily
        | Endpoint::AlarmUptime
        | Endpoint::AlarmDaily) => {
            let (what, kind) = match e {
                Endpoint::ServiceUptime | Endpoint::ServiceDaily => {
                    ("service", crate::history::record::Kind::Service)
                }
                _ => ("alarm", crate::history::record::Kind::Alarm),
            };
            if let Some(bad) = check_name(name, what) {
                return bad;
            }
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            match e {
                Endpoint::ServiceUptime | Endpoint::AlarmUptime => {
                    super::uptime::uptime(&req, state, kind, name).await
                }
                _ => super::uptime::daily(&req, state, kind, name).await,
            }
        }
        Endpoint::AlarmIncidents => {
            if let Some(bad) = check_name(name, "alarm") {
                return bad;
            }
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            super::incidents::list(&req, state, name).await
        }
        Endpoint::ServiceRuns => {
            if let Some(bad) = check_name(name, "service") {
                return bad;
            }
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            super::runs::list(&req, state, name).await
        }
        Endpoint::Audit => {
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            super::runs::audit(&req, state).await
        }
        Endpoint::Export => only(&method, &[Method::GET], || {
            super::export::export(&req, state)
        }),
        Endpoint::Maintenance => match method {
            Method::GET | Method::HEAD => super::maintenance::list(state),
            Method::POST => super::maintenance::create(req, state).await,
            _ => not_allowed("GET, POST"),
        },
        Endpoint::MaintenanceWindow => match method {
            Method::GET | Method::HEAD => super::maintenance::get(state, name),
            Method::DELETE => super::maintenance::delete(state, name).await,
            _ => not_allowed("GET, DELETE"),
        },
        Endpoint::Reports => {
            if method != Method::GET && method != Method::HEAD {
                return not_allowed("GET");
            }
            super::reports::reports(&req, state).await
        }
        Endpoint::Status => match method {
            // Asynchronous in cluster mode (the owners are asked).
            Method::GET | Method::HEAD => api::status(&req, state).await,
            _ => not_allowed("GET"),
        },
        Endpoint::AlertTest => match method {
            Method::POST => api::test_alert(state, name).await,
            _ => not_allowed("POST"),
        },
        Endpoint::Metrics => only(&method, &[Method::GET], || super::metrics::render(state)),
        Endpoint::Websocket => match method {
            Method::GET => super::ws::upgrade(req, &state.ws, &state.engine),
            _ => not_allowed("GET"),
        },
        Endpoint::Badge => only(&method, &[Method::GET], || {
            super::badge::serve(&req, state, file)
        }),
        Endpoint::Version => only(&method, &[Method::GET], || api::version(&req)),
        Endpoint::AlarmLink => only(&method, &[Method::GET], || super::ui::alarm_link(name)),
        Endpoint::StatusPage => {
            let file = file.to_string();
            match method {
                Method::GET | Method::HEAD => super::status::page(&req, state, &file).await,
                _ => not_allowed("GET"),
            }
        }
        e @ (Endpoint::StatusBadge | Endpoint::StatusEntryBadge) => {
            let entry = (e == Endpoint::StatusEntryBadge).then(|| param("entry"));
            only(&method, &[Method::GET], || {
                super::status::badge(&req, state, param("slug"), entry)
            })
        }
        Endpoint::StatusSubscribe => {
            let slug = param("slug").to_string();
            super::subscribe::subscribe(req, state, &slug).await
        }
        e @ (Endpoint::StatusConfirm | Endpoint::StatusUnsubscribe) => {
            let slug = param("slug").to_string();
            super::subscribe::link(req, state, &slug, e == Endpoint::StatusConfirm).await
        }
        Endpoint::PageIncidents => {
            let slug = param("slug").to_string();
            super::status::incidents(req, state, &slug).await
        }
        Endpoint::PageIncidentUpdates => {
            let (slug, id) = (param("slug").to_string(), param("id").to_string());
            super::status::updates(req, state, &slug, &id).await
        }
        Endpoint::Asset => match super::ui::asset(path.trim_start_matches('/')) {
            Some(asset) => only(&method, &[Method::GET], || super::ui::serve(asset)),
            None => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        },
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

pub(super) fn not_allowed(allow: &str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

/// A 400 for a name outside README, "Sending beats".
fn check_name(name: &str, what: &str) -> Option<Response<Body>> {
    if valid_name(name.as_bytes()) {
        return None;
    }
    Some(error(
        StatusCode::BAD_REQUEST,
        format!("invalid {what} name '{name}': use lower-case letters, digits, '.', '_' and '-', not dots only (at most 255 bytes)"),
    ))
}

/// A 400 for a service name outside README, "Sending beats", unless the
/// request only manages (`manage`: reads, mutes, unmutes or deletes) a
/// service that exists under that name: a 1.x database may hold names
/// that the rules of today refuse, and SPEC §7 loads them as they are;
/// one in ERROR would otherwise pin its alarms for ever. Such a name is
/// never created, beaten or given a timeout.
fn check_service_name(state: &AppState, name: &str, manage: bool) -> Option<Response<Body>> {
    if manage && !valid_name(name.as_bytes()) && state.engine.service(name, false).is_some() {
        return None;
    }
    check_name(name, "service")
}

/// A whole body.
pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Pretty-printed JSON with a trailing newline, as 1.x sends it.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
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
pub(super) fn error(status: StatusCode, message: String) -> Response<Body> {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: message })
}

/// A 503 for a request that finds every place of its kind taken: the
/// error says why, `Retry-After` when to come back (seconds).
pub(super) fn busy(message: String, retry_after: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static(retry_after),
    );
    r
}

/// A response with a content type.
pub(super) fn respond(
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
pub(super) fn wants_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The value of a query parameter, decoded.
pub(super) fn query_param<B>(req: &Request<B>, key: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
