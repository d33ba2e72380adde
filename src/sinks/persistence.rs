//! Saves the database every `interval` seconds, off the async runtime, so a
//! save never stops ingestion or the API.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::db::{self, Saved};
use crate::engine::Engine;

/// Saves once, on a blocking thread.
pub async fn save_now(engine: &Engine, path: &std::path::Path) -> std::io::Result<Saved> {
    let (engine, path) = (engine.clone(), path.to_path_buf());
    tokio::task::spawn_blocking(move || db::save(&engine, &path))
        .await
        .map_err(std::io::Error::other)?
}

/// Saves every `interval` until `shutdown` turns true. The final save at
/// shutdown is the caller's, after input has stopped.
pub async fn run(
    engine: Engine,
    path: PathBuf,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        match save_now(&engine, &path).await {
            Ok(s) => tracing::debug!(
                "saved {} services and {} alarms to {} ({} bytes) in {} ms",
                s.services,
                s.alarms,
                path.display(),
                s.bytes,
                s.duration.as_millis()
            ),
            Err(e) => tracing::error!("could not save the database to {}: {e}", path.display()),
        }
    }
}
