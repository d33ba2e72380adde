//! The HTTP server: the API of README, "HTTP API"; the UI and `/ws`, "The web UI".
//!
//! `serve` owns the accept loop; each connection is served by hyper;
//! `router::route` maps a request to its handler.

mod api;
mod audit;
pub mod auth;
mod badge;
pub(crate) mod conns;
mod export;
mod history;
mod incidents;
pub(crate) mod lists;
mod maintenance;
mod metrics;
pub mod origin;
pub mod path;
mod reports;
pub mod router;
mod runs;
pub mod status;
pub mod subscribe;
mod ui;
mod uptime;
pub mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::settings::{ConfigError, ListenAddr};

/// `[http]`: where the API and UI listen, and who may use them.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address; an empty host means every interface.
    pub listen: ListenAddr,
    /// Keys allowed to change state; when set, every change needs one.
    #[serde(deserialize_with = "crate::settings::one_or_many")]
    pub write_keys: Vec<String>,
    /// Keys allowed to read; when set, reading needs a read or write key.
    #[serde(deserialize_with = "crate::settings::one_or_many")]
    pub read_keys: Vec<String>,
    /// Host names lovebeat answers to (besides IP addresses, `localhost`
    /// and `public_url`'s host); empty: any.
    #[serde(deserialize_with = "crate::settings::one_or_many")]
    pub allowed_hosts: Vec<String>,
    /// Whether badges answer without a key when `read_keys` is set (as
    /// they did before this key): a badge tells whether an alarm of that
    /// name exists and its state, which `false` keeps for key holders.
    pub public_badges: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: ListenAddr::any(8080),
            write_keys: Vec::new(),
            read_keys: Vec::new(),
            allowed_hosts: Vec::new(),
            public_badges: true,
        }
    }
}

impl HttpConfig {
    /// An empty key would be a key anyone could guess, and one with spaces
    /// around it could never be presented (a presented key is trimmed):
    /// both are mistakes, refused rather than run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (what, keys) in [
            ("write_keys", &self.write_keys),
            ("read_keys", &self.read_keys),
        ] {
            for (i, key) in keys.iter().enumerate() {
                let problem = if key.trim().is_empty() {
                    "is empty"
                } else if key.trim() != key {
                    "has spaces around it, so it could never be presented"
                } else {
                    continue;
                };
                return Err(ConfigError::Invalid(format!(
                    "[http] {what}: key {} of {} {problem}; remove it or write the key",
                    i + 1,
                    keys.len()
                )));
            }
        }
        Ok(())
    }

    /// The keys, for the key check.
    pub fn keys(&self) -> auth::Keys {
        auth::Keys {
            read: self.read_keys.clone(),
            write: self.write_keys.clone(),
            closed_badges: !self.public_badges,
        }
    }
}

/// What handlers share.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Every component's counters (`/metrics`).
    pub counters: crate::counters::Counters,
    /// The websocket clients.
    pub ws: Arc<ws::WsHub>,
    /// The API keys and the host names answered.
    pub gate: router::Gate,
    /// `[limits]`.
    pub limits: crate::limits::LimitsConfig,
    /// The alerts, for the test button (`POST /api/alerts/<name>/test`).
    pub alerts: Arc<crate::sinks::alerts::AlertsConfig>,
    /// Where an alert test's own tasks run (the test, and a pager's close
    /// seconds later), so a shutdown waits for them as for the alerts.
    pub alert_tasks: tokio_util::task::TaskTracker,
    /// The HTTP connections, bounded.
    pub(crate) conns: Arc<conns::Registry>,
    /// The answers that hold a whole table, bounded.
    pub(crate) lists: Arc<lists::Lists>,
    /// The history store, for its endpoints.
    pub history: crate::history::HistoryState,
    /// The configured alarms' names (but those made from a `$` template,
    /// which the engine lists once they exist): what a report covers by
    /// default, members or not.
    pub configured_alarms: Arc<[String]>,
    /// The public status pages and their renders.
    pub status: Arc<status::StatusPages>,
    /// Cluster mode: where writes go instead of the engine.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// `r`, with its connection marked as sending a streamed answer until
/// the body is over (sent, cut or dropped), so that at the connection cap
/// it is the last to give way ([`conns::Registry::admit`]). A whole
/// buffer (its size known) is sent at once and needs no mark.
fn marked_while_streamed(r: Response<Body>, conn: &Arc<conns::Conn>) -> Response<Body> {
    if r.body().size_hint().exact().is_some() {
        return r;
    }
    let streaming = conn.streaming();
    r.map(|body| {
        body.map_frame(move |frame| {
            let _marked = &streaming;
            frame
        })
        .boxed()
    })
}

/// A response body: a whole buffer or a stream. A stream that fails
/// (an answer cut at its deadline) closes its connection unfinished.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Serves HTTP on `listener` until `stop` is cancelled, then asks open
/// connections to finish their current request and close; each connection
/// is a task of `tasks`, so the daemon can wait for them. Connections are
/// registered in `state.conns`, which bounds them (`[limits]`), and a
/// reaper closes those that hold a socket without using it.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let conns = state.conns.clone();
    tasks.spawn({
        let (conns, stop) = (conns.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        conns.reap();
                    }
                    _ = stop.cancelled() => return,
                }
            }
        }
    });
    // hyper's own header timer runs from when a connection starts waiting
    // for a request: it is the idle timeout's backstop, the registry's
    // reaper the finer rule.
    let idle = crate::limits::LimitsConfig::duration(state.limits.http_idle_timeout);
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(idle + Duration::from_secs(1));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, most likely: the caps should
                    // prevent it; wait rather than spin.
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let Some(conn) = conns.admit(peer.ip()) else {
            // Every connection is handling a request: refuse this one.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (state, stop, builder, conns) =
            (state.clone(), stop.clone(), builder.clone(), conns.clone());
        tasks.spawn(async move {
            let service = {
                let conn = conn.clone();
                service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let (state, handling) = (state.clone(), conn.handling());
                    let conn = conn.clone();
                    // A handler that reads the body marks its connection
                    // as waiting for it (`api/body.rs` `read_body`).
                    req.extensions_mut().insert(conn.clone());
                    async move {
                        let r = router::answer(req, &state).await;
                        if r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                            conn.upgraded();
                        }
                        drop(handling);
                        Ok::<_, Infallible>(marked_while_streamed(r, &conn))
                    }
                })
            };
            let io = TokioIo::new(conns.track(conn.clone(), stream));
            let http = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(http);
            tokio::select! {
                r = http.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                // Closed to make room, or for taking too long: dropped.
                _ = conn.kill.cancelled() => {}
                _ = stop.cancelled() => {
                    http.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
                }
            }
            conns.remove(&conn);
        });
    }
}
