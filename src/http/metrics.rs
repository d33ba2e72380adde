//! GET /metrics: counters and per-state totals in Prometheus' text format
//! (0.0.4), in base units (seconds, bytes) as `promtool check metrics`
//! wants them. No series per service or alarm: a million of them would
//! swamp Prometheus.
//!
//! Written here rather than with the `prometheus-client` crate, which
//! writes OpenMetrics (its own `_total` and `# EOF` rules) that Debian's
//! `promtool` does not lint as text format; a test checks this output with
//! `promtool`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use hyper::{Response, StatusCode};

use super::router::respond;
use super::{AppState, Body};
use crate::counters::COUNTERS;

/// Renders every metric.
pub(super) fn render(state: &AppState) -> Response<Body> {
    let mut out = String::with_capacity(2048);
    for c in COUNTERS {
        if let Some(value) = (c.read)(&state.counters) {
            single(&mut out, c.prometheus, c.help, "counter", value);
        }
    }
    let saves = &state.counters.saves;
    let gauges = [
        (
            "lovebeat_db_save_duration_seconds",
            "Duration of the latest database save.",
            saves.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ),
        (
            "lovebeat_db_size_bytes",
            "Size of the database file after the latest save.",
            saves.last_bytes.load(Ordering::Relaxed) as f64,
        ),
        (
            "lovebeat_websocket_clients",
            "Connected websocket clients.",
            state.counters.ws.client_count() as f64,
        ),
        (
            "lovebeat_http_connections",
            "Open HTTP connections.",
            state.counters.http.len() as f64,
        ),
        (
            "lovebeat_udp_foreign_sockets",
            "Sockets of other processes sharing the statsd UDP port at the last check (each takes a share of the beats; lovebeat.self.udp is ERROR meanwhile).",
            state
                .counters
                .ingest
                .udp_foreign_sockets
                .load(Ordering::Relaxed) as f64,
        ),
        (
            "lovebeat_orphaned_services",
            "Services waiting for a place under [limits] max_alarms to join their alarm.",
            state.engine.orphans() as f64,
        ),
        (
            "lovebeat_alerts_queued",
            "Alert messages waiting or being delivered.",
            state.counters.alerts.queued.load(Ordering::Relaxed) as f64,
        ),
    ];
    for (name, help, value) in gauges {
        single(&mut out, name, help, "gauge", value);
    }
    single(
        &mut out,
        "lovebeat_start_time_seconds",
        "When the engine started (Unix time); restart deadlines count from it.",
        "gauge",
        state.engine.started_at() as f64 / 1000.0,
    );
    let kinds = state.counters.alerts.kinds();
    if !kinds.is_empty() {
        out.push_str(
            "# HELP lovebeat_alert_messages_total Alert messages delivered (result=\"sent\") and failed for good (result=\"failed\"), per alerter kind.\n# TYPE lovebeat_alert_messages_total counter\n",
        );
        for (kind, c) in kinds {
            let _ = writeln!(
                out,
                "lovebeat_alert_messages_total{{kind=\"{kind}\",result=\"sent\"}} {}",
                c.sent
            );
            let _ = writeln!(
                out,
                "lovebeat_alert_messages_total{{kind=\"{kind}\",result=\"failed\"}} {}",
                c.failed
            );
        }
    }
    let (ok, error, muted) = state.engine.state_counts();
    out.push_str("# HELP lovebeat_services Services by state.\n# TYPE lovebeat_services gauge\n");
    for (label, v) in [("ok", ok), ("error", error), ("muted", muted)] {
        let _ = writeln!(out, "lovebeat_services{{state=\"{label}\"}} {v}");
    }
    let (a_err, a_ok) = state.engine.alarm_state_counts();
    out.push_str("# HELP lovebeat_alarms Alarms by state.\n# TYPE lovebeat_alarms gauge\n");
    let _ = writeln!(out, "lovebeat_alarms{{state=\"ok\"}} {a_ok}");
    let _ = writeln!(out, "lovebeat_alarms{{state=\"error\"}} {a_err}");
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}

/// Appends one unlabelled metric with its HELP and TYPE lines.
fn single(out: &mut String, name: &str, help: &str, kind: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}
