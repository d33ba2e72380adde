//! The reads of the tables: whole lists streamed off the runtime
//! (`lists.rs`), one service or alarm, the status summaries and the
//! version.

use std::net::IpAddr;

use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::clock::now_ms;
use crate::engine::Engine;
use crate::http::lists::Out;
use crate::http::router::{error, json, query_param, respond, wants_json};
use crate::http::{AppState, Body};

/// GET /api/services, streamed (`lists.rs`): the names are gathered
/// first (24 bytes each, most stored inline), then each service is viewed
/// and written in turn, so memory stays flat however many services there
/// are. The bytes are what serde_json's pretty printer would give for the
/// whole object.
///
/// In cluster mode it lists every partition: this node's own from its
/// engine (with its own `lovebeat.self.*`), the others a page at a time
/// from their owners (`cluster/reads.rs`); a partition whose owner does
/// not answer is named in `"unavailable_partitions"`. `?local=1` lists
/// only what this node's engine holds.
pub(in crate::http) fn list_services<B>(
    req: &Request<B>,
    state: &AppState,
    peer: Option<IpAddr>,
) -> Response<Body> {
    let local =
        query_param(req, "local").is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    if let (Some(cluster), false) = (state.cluster.clone(), local) {
        return list_cluster_services(state, peer, cluster);
    }
    stream_list(
        state,
        peer,
        |out, _| {
            out.put(b"{\n  \"services\": [");
            Some(())
        },
        |engine| engine.names(),
        |engine, name| engine.service(name, false),
    )
}

/// GET /api/services over every partition of the cluster.
fn list_cluster_services(
    state: &AppState,
    peer: Option<IpAddr>,
    cluster: std::sync::Arc<crate::cluster::Cluster>,
) -> Response<Body> {
    let admitted = match state.lists.admit(peer) {
        Ok(a) => a,
        Err(busy) => return *busy,
    };
    let engine = state.engine.clone();
    let handle = tokio::runtime::Handle::current();
    admitted.stream(move |out| {
        out.put(b"{\n  \"services\": [");
        let held: std::collections::BTreeSet<u32> = cluster.held().into_iter().collect();
        let partitions = cluster.partitions;
        let mine = |name: &str| {
            crate::engine::is_internal(name)
                || held.contains(&crate::cluster::wire::partition_of(name, partitions))
        };
        let names = engine.names();
        out.holds(names.len());
        let mut first = true;
        for name in names.iter().filter(|n| mine(n)) {
            let Some(v) = engine.service(name, false) else {
                continue;
            };
            out.element(&mut first, &v)?;
        }
        let mut unavailable = Vec::new();
        for p in (0..partitions).filter(|p| !held.contains(p)) {
            let mut after = String::new();
            loop {
                match handle.block_on(cluster.list_page(p, &after)) {
                    Ok((services, next)) => {
                        out.holds(services.len());
                        for s in &services {
                            out.element(&mut first, s)?;
                        }
                        match next {
                            Some(n) => after = n,
                            None => break,
                        }
                    }
                    Err(e) => {
                        tracing::debug!("list of services: {e}");
                        unavailable.push(p);
                        break;
                    }
                }
            }
        }
        out.put(if first { b"],\n" } else { b"\n  ],\n" });
        if !unavailable.is_empty() {
            let list: Vec<String> = unavailable.iter().map(u32::to_string).collect();
            out.put(format!("  \"unavailable_partitions\": [{}],\n", list.join(", ")).as_bytes());
        }
        out.put(format!("  \"now\": {}\n}}\n", now_ms()).as_bytes());
        Some(())
    })
}

/// Streams a whole-table answer: `head` opens the top-level object and a
/// list in it (`None`: what it would write is gone, and the answer is
/// cut), each of `names` that still has a `view` when its turn comes is
/// an element, and `now` ends the object. All of it is taken on the
/// answer's blocking thread, once the answer is admitted.
fn stream_list<N, V: Serialize>(
    state: &AppState,
    peer: Option<IpAddr>,
    head: impl FnOnce(&mut Out, &Engine) -> Option<()> + Send + 'static,
    names: impl FnOnce(&Engine) -> Vec<N> + Send + 'static,
    view: impl Fn(&Engine, &N) -> Option<V> + Send + 'static,
) -> Response<Body> {
    let admitted = match state.lists.admit(peer) {
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

/// GET /api/services/<name>[?details=1]. In cluster mode a service of a
/// partition this node does not own is asked of its owner
/// (`cluster/reads.rs`), so every node answers alike; 503 with
/// `Retry-After` while the partition has no owner that answers.
pub(in crate::http) async fn get_service<B>(
    req: &Request<B>,
    state: &AppState,
    name: &str,
) -> Response<Body> {
    #[derive(Serialize)]
    struct One<S> {
        service: S,
        /// The maintenance windows open now whose `services` cover it
        /// (README, "Maintenance windows"); left out when none.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        maintenance: Vec<std::sync::Arc<str>>,
        now: i64,
    }
    fn one<S: Serialize>(state: &AppState, name: &str, service: S) -> Response<Body> {
        let now = now_ms();
        json(
            StatusCode::OK,
            &One {
                service,
                maintenance: state.engine.maintenance().active_for_service(name, now),
                now,
            },
        )
    }
    let details =
        query_param(req, "details").is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    if let Some(service) = state.engine.service(name, details) {
        return one(state, name, service);
    }
    let missing = || error(StatusCode::NOT_FOUND, format!("no service named '{name}'"));
    let Some(cluster) = state.cluster.as_ref() else {
        return missing();
    };
    if crate::engine::is_internal(name) || cluster.owns(name) {
        return missing();
    }
    match cluster.read_service(name, details).await {
        Ok(Some(service)) => one(state, name, service),
        Ok(None) => missing(),
        Err(e) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("5"),
            );
            r
        }
    }
}

/// GET /api/alarms, streamed like the list of services (there may be a
/// million alarms made from templates): `{"alarms": [...], "now": ms}`.
pub(in crate::http) fn list_alarms(state: &AppState, peer: Option<IpAddr>) -> Response<Body> {
    stream_list(
        state,
        peer,
        |out, _| {
            out.put(b"{\n  \"alarms\": [");
            Some(())
        },
        |engine| engine.alarm_names(),
        |engine, name| engine.alarm(name),
    )
}

/// GET /api/alarms in cluster mode: every alarm across the partitions,
/// from the shared aggregate (`cluster/alarms.rs`), so every node
/// answers alike; 503 with `Retry-After` when NATS cannot be read.
pub(in crate::http) async fn list_cluster_alarms(state: &AppState) -> Response<Body> {
    #[derive(Serialize)]
    struct All {
        alarms: Vec<crate::engine::AlarmView>,
        now: i64,
    }
    let Some(cluster) = state.cluster.as_ref() else {
        return error(StatusCode::NOT_FOUND, "not in cluster mode".into());
    };
    match cluster.alarms().await {
        Ok(alarms) => json(
            StatusCode::OK,
            &All {
                alarms,
                now: now_ms(),
            },
        ),
        Err(e) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the cluster's alarms cannot be read: {e}"),
            );
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("5"),
            );
            r
        }
    }
}

/// GET /api/alarms/<name>: `{"alarm": {...}, "services": [...], "now":
/// ms}`. That the alarm is listed is checked here, in O(1) (a 404 if
/// not); its view (which holds every failed member's name) and its
/// members, found by a walk of every service, are taken once the answer
/// is admitted, off the runtime, and streamed like the list of services.
pub(in crate::http) fn get_alarm(
    state: &AppState,
    peer: Option<IpAddr>,
    name: &str,
) -> Response<Body> {
    if state.engine.alarm_status(name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no alarm named '{name}'"));
    }
    let (name, members_of) = (name.to_string(), name.to_string());
    stream_list(
        state,
        peer,
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

/// GET /api/status.
///
/// In cluster mode it counts every partition, asking the owners of those
/// this node does not own (`cluster/reads.rs`); 503 with `Retry-After`
/// when one does not answer.
pub(in crate::http) async fn status<B>(req: &Request<B>, state: &AppState) -> Response<Body> {
    let (ok, err) = state.engine.status();
    let Some(cluster) = state.cluster.as_ref() else {
        return status_response(req, ok, err);
    };
    match cluster.status((ok, err)).await {
        Ok((ok, err)) => status_response(req, ok, err),
        Err(e) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("5"),
            );
            r
        }
    }
}

/// GET /api/alarms/<name>/status.
pub(in crate::http) fn alarm_status<B>(
    req: &Request<B>,
    state: &AppState,
    name: &str,
) -> Response<Body> {
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
pub(in crate::http) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// GET /version.
pub(in crate::http) fn version<B>(req: &Request<B>) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ServiceView;
    use crate::engine::{AlarmDef, Change, Engine, EngineConfig, FailReport};
    use http_body_util::BodyExt;
    use std::sync::Arc;

    /// A state around `engine`, as the daemon builds it.
    fn app(engine: Engine, max_lists: usize) -> AppState {
        let limits = crate::limits::LimitsConfig {
            max_http_lists: max_lists,
            ..Default::default()
        };
        let conns = Arc::new(crate::http::conns::Registry::new(
            8,
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(60),
        ));
        let lists = Arc::new(crate::http::lists::Lists::new(&limits));
        let ws = Arc::new(crate::http::ws::WsHub::new(4));
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
            configured_alarms: Arc::from([]),
            status: Arc::new(crate::http::status::StatusPages::new(&[], None)),
            cluster: None,
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

            let (status, got) = body(list_services(&Request::new(()), &state, None)).await;
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

            let (status, got) = body(list_alarms(&state, None)).await;
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
                let (status, got) = body(get_alarm(&state, None, alarm)).await;
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
        let held = list_services(&Request::new(()), &state, None);
        let busy = list_alarms(&state, None);
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            get_alarm(&state, None, "no.such").status(),
            StatusCode::NOT_FOUND
        );
        drop(held);
    }
}
