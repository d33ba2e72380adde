//! The maintenance endpoints (README, "Maintenance windows"):
//! `GET /api/maintenance` lists every window (read key), `POST` makes one
//! (write key), `GET` and `DELETE /api/maintenance/<name>` read or end one.
//! Windows made here are kept in the history store, on the blocking pool;
//! those of the configuration are changed only by the configuration.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::router::{error, json};
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::history::HistoryState;
use crate::maintenance::{Source, Window, WindowError, WindowSpec, WindowView};

/// `GET /api/maintenance`: every window, the configuration's first, each
/// with who made it and its occurrence open now or next.
pub(super) fn list(state: &AppState) -> Response<Body> {
    let now = now_ms();
    let views: Vec<WindowView> = state
        .engine
        .maintenance()
        .list()
        .iter()
        .map(|w| WindowView::of(w, now))
        .collect();
    json(StatusCode::OK, &views)
}

/// `GET /api/maintenance/<name>`.
pub(super) fn get(state: &AppState, name: &str) -> Response<Body> {
    match state.engine.maintenance().get(name) {
        Some(w) => json(StatusCode::OK, &WindowView::of(&w, now_ms())),
        None => not_found(name),
    }
}

fn not_found(name: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no maintenance window '{}'",
            name.chars().take(100).collect::<String>().escape_debug()
        ),
    )
}

/// The history store, where windows made through the API are kept, or the
/// answer that says why they cannot be.
fn store(state: &AppState) -> Result<std::sync::Arc<crate::history::History>, Box<Response<Body>>> {
    match &state.history {
        HistoryState::On(h) => match h.failing() {
            None => Ok(h.clone()),
            Some(why) => Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("maintenance windows cannot be kept now: the history store fails ({why})"),
            ))),
        },
        HistoryState::Off => Err(Box::new(error(
            StatusCode::CONFLICT,
            "maintenance windows made through the API are kept in the history store, which is off \
             ([history] enabled = false): put the window in [[maintenance]] of the configuration"
                .into(),
        ))),
        HistoryState::Failed(why) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("maintenance windows cannot be kept: the history store is unavailable ({why})"),
        ))),
    }
}

/// Runs `f` on the history's connection on the blocking pool; a failure
/// is a 503 saying why.
async fn on_store(
    history: std::sync::Arc<crate::history::History>,
    f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<()> + Send + 'static,
) -> Result<(), Box<Response<Body>>> {
    match tokio::task::spawn_blocking(move || history.write(f)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!("cannot write a maintenance window to the history file: {e}");
            Err(Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the history store refused the change: {e}"),
            )))
        }
        Err(_) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the history store's task failed".into(),
        ))),
    }
}

/// `POST /api/maintenance`: a JSON window. 201 with the window as `GET`
/// shows it; 400 saying what is wrong with it; 409 for a name taken.
pub(super) async fn create(req: Request<Incoming>, state: &AppState) -> Response<Body> {
    let who = state.gate.keys.who(&req);
    let history = match store(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let body = match super::api::read_body(req, state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let spec: WindowSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON maintenance window: {e}"),
            )
        }
    };
    let now = now_ms();
    let window = match Window::new(spec, Source::Api, who, now) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // In the registry first, so two requests for one name cannot both
    // be kept; taken out again if the store refuses it.
    let mut added = state.engine.maintenance().add(window);
    if let Err(WindowError::Full(w)) = added {
        // Room is made from windows of the API that are over: their rows
        // stay in the store, ended, and keep counting their past.
        let over: Vec<std::sync::Arc<Window>> = state
            .engine
            .maintenance()
            .list()
            .iter()
            .filter(|o| o.source == Source::Api && o.current_or_next(now).is_none())
            .cloned()
            .collect();
        if !over.is_empty() {
            let ended = over.clone();
            if let Err(r) = on_store(history.clone(), move |conn| {
                for o in &ended {
                    crate::history::maintenance::delete(conn, o, now)?;
                }
                Ok(())
            })
            .await
            {
                return *r;
            }
            for o in &over {
                state.engine.maintenance().remove(o.name());
            }
        }
        added = state.engine.maintenance().add(*w);
    }
    let window = match added {
        Ok(w) => w,
        Err(e @ WindowError::Exists(_)) => return error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let kept = window.clone();
    if let Err(r) = on_store(history, move |conn| {
        crate::history::maintenance::insert(conn, &kept)
    })
    .await
    {
        state.engine.maintenance().remove(window.name());
        return *r;
    }
    tracing::info!(
        "maintenance window {} made by {}",
        window.name(),
        window.created_by
    );
    let mut r = json(StatusCode::CREATED, &WindowView::of(&window, now));
    r.extensions_mut()
        .insert(super::audit::Target(window.name().to_string()));
    r
}

/// `DELETE /api/maintenance/<name>`: ends a window made through the API
/// now (its past stays maintenance in uptime). 409 for a window of the
/// configuration, 404 for none.
pub(super) async fn delete(state: &AppState, name: &str) -> Response<Body> {
    let Some(window) = state.engine.maintenance().get(name) else {
        return not_found(name);
    };
    if window.source == Source::Config {
        return error(
            StatusCode::CONFLICT,
            format!(
                "maintenance window '{name}' comes from the configuration ([[maintenance]]): change the configuration to remove it"
            ),
        );
    }
    let history = match store(state) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let now = now_ms();
    let ended = window.clone();
    if let Err(r) = on_store(history, move |conn| {
        crate::history::maintenance::delete(conn, &ended, now)
    })
    .await
    {
        return *r;
    }
    state.engine.maintenance().remove(name);
    tracing::info!("maintenance window {name} deleted");
    json(StatusCode::OK, &WindowView::of(&window, now))
}
