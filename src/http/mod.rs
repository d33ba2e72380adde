//! The HTTP server: the API of SPEC §4.2, the UI and `/ws` (§8).
//!
//! `serve` owns the accept loop; each connection is served by hyper;
//! `router::route` maps a request to its handler.

mod api;
pub mod auth;
mod badge;
mod metrics;
pub mod origin;
pub mod path;
mod router;
mod ui;
pub mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Engine;
use crate::ingest::IngestStats;
use crate::sinks::alerts::AlertStats;
use crate::sinks::persistence::SaveStats;

/// What handlers share.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Ingestion counters.
    pub stats: Arc<IngestStats>,
    /// Database save counters.
    pub saves: Arc<SaveStats>,
    /// Alert delivery counters.
    pub alerts: Arc<AlertStats>,
    /// The S3 backup, if configured (its upload counters).
    pub remote: Option<Arc<crate::sinks::s3::RemoteDb>>,
    /// The websocket clients.
    pub ws: Arc<ws::WsHub>,
    /// The API keys.
    pub keys: auth::Keys,
    /// The host names answered (`[http] allowed_hosts`).
    pub hosts: origin::AllowedHosts,
}

/// A response body: a whole buffer or a stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves HTTP on `listener` until `shutdown` turns true, then lets open
/// connections finish their current request.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(router::answer(req, &state).await) }
            });
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
