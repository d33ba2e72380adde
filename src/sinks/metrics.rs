//! statsd metrics about lovebeat itself (README, "Watching lovebeat itself"), sent over UDP to every
//! configured `[metrics] server`: `started.count`, `db.save.count`,
//! `db.save.duration`, `service.count`, `alarm.count`, the state gauges
//! `service.state.<name>` and `alarm.state.<name>` when they change, and the
//! ingestion and alert counters.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::counters::{Counters, Kind, Value};
use crate::engine::{Engine, EventKind, State};

/// `[metrics]` (or `[[metrics]]`: each server gets every metric).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// statsd server host:port; empty = off.
    pub server: String,
    /// Prefix of every metric name.
    pub prefix: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            server: String::new(),
            prefix: "lovebeat".into(),
        }
    }
}

/// How often counters and counts are sent.
const FLUSH: Duration = Duration::from_secs(10);

/// 1.x's numbers for states in gauges.
pub fn state_number(s: State) -> u8 {
    s as u8
}

/// One destination.
struct Target {
    socket: UdpSocket,
    prefix: String,
}

/// Sends metrics until `stop` is cancelled. Servers that cannot be resolved are
/// logged and skipped.
pub async fn run(
    configs: Vec<MetricsConfig>,
    engine: Engine,
    mut events: broadcast::Receiver<Arc<crate::engine::Event>>,
    counters: Counters,
    saves: Arc<crate::sinks::persistence::SaveStats>,
    stop: CancellationToken,
) {
    let mut targets = Vec::new();
    for m in configs.into_iter().filter(|m| !m.server.is_empty()) {
        let socket = UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect(&m.server).map(|_| s));
        match socket {
            Ok(socket) => {
                let _ = socket.set_nonblocking(true);
                targets.push(Target {
                    socket,
                    prefix: m.prefix,
                });
            }
            Err(e) => tracing::error!("[metrics] server {}: {e}; metrics to it are off", m.server),
        }
    }
    if targets.is_empty() {
        return;
    }
    // The `service.state.<name>` gauges need service events.
    let _services = engine.watch_services();
    let send = |line: String| {
        for t in &targets {
            // UDP metrics are best effort; a full buffer loses one line.
            let _ = t.socket.send(format!("{}.{line}", t.prefix).as_bytes());
        }
    };
    send("started.count:1|c".into());
    let mut flush = tokio::time::interval(FLUSH);
    // The counters 1.x and its users graph in statsd, by statsd name:
    // their value at the last flush.
    let mut last = std::collections::HashMap::<&'static str, u64>::new();
    let mut last_saves = 0;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => match &e.kind {
                    EventKind::ServiceStateChanged { service, .. } => {
                        send(format!("service.state.{}:{}|g", service.name, state_number(service.state)));
                    }
                    EventKind::AlarmStateChanged { alarm, .. } => {
                        send(format!("alarm.state.{}:{}|g", alarm.name, state_number(alarm.state)));
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(n)) => tracing::warn!("metrics sink fell behind: {n} state gauges not sent"),
                Err(RecvError::Closed) => return,
            },
            _ = flush.tick() => {
                for r in counters.read() {
                    let (Some(name), Kind::Counter, Value::Count(now)) = (r.metric.statsd, r.metric.kind, r.value) else {
                        continue;
                    };
                    let before = last.insert(name, now).unwrap_or(0);
                    if now > before {
                        send(format!("{name}:{}|c", now - before));
                    }
                }
                let saved = saves.saves.load(Ordering::Relaxed);
                if saved != last_saves {
                    last_saves = saved;
                    send(format!("db.save.duration:{}|g", saves.last_duration_ms.load(Ordering::Relaxed)));
                }
                send(format!("service.count:{}|g", engine.service_count()));
                send(format!("alarm.count:{}|g", engine.alarms().len()));
            }
            _ = stop.cancelled() => return,
        }
    }
}
