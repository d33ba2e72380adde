//! Writes state changes to the log: alarms at `info` (a person cares),
//! services at `debug` (there may be a hundred thousand at once).

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Event, EventKind};

/// Logs events until `stop` is cancelled. Service events are asked for
/// only when debug logging would show them.
pub async fn run(
    engine: Engine,
    mut events: broadcast::Receiver<Arc<Event>>,
    stop: CancellationToken,
) {
    let _services = tracing::enabled!(tracing::Level::DEBUG).then(|| engine.watch_services());
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(e) => log(&e),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("log sink fell behind and skipped {n} events")
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn log(e: &Event) {
    match &e.kind {
        EventKind::AlarmStateChanged { alarm, previous } => tracing::info!(
            "alarm {} changed from {} to {} (incident {}, failed: {})",
            alarm.name.escape_debug(),
            previous.as_upper(),
            alarm.state.as_upper(),
            alarm.incident_nbr,
            alarm.failed_services.join(", ").escape_debug()
        ),
        EventKind::AlarmAdded(a) => tracing::info!("alarm {} added", a.name.escape_debug()),
        EventKind::AlarmRemoved(a) => tracing::info!("alarm {} removed", a.name.escape_debug()),
        EventKind::ServiceAdded(s) => tracing::debug!("service {} added", s.name.escape_debug()),
        EventKind::ServiceStateChanged { service, previous } => tracing::debug!(
            "service {} changed from {} to {}",
            service.name.escape_debug(),
            previous.as_upper(),
            service.state.as_upper()
        ),
        EventKind::ServiceRemoved(s) => {
            tracing::debug!("service {} removed", s.name.escape_debug())
        }
        EventKind::ServiceUpdated(_) | EventKind::AlarmUpdated(_) | EventKind::JobRun(_) => {}
    }
}
