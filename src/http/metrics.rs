//! GET /metrics: counters and per-state totals in Prometheus text format.
//! No series per service or alarm: a million of them would swamp Prometheus.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use hyper::{Response, StatusCode};

use super::router::respond;
use super::{AppState, Body};
use crate::engine::State;

/// Renders every metric.
pub fn render(state: &AppState) -> Response<Body> {
    let mut out = String::with_capacity(2048);
    let s = &state.stats;
    let counters = [
        (
            "lovebeat_lines_accepted_total",
            "statsd lines applied.",
            s.lines_accepted.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_lines_dropped_total",
            "statsd lines dropped as malformed.",
            s.lines_dropped.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_datagrams_received_total",
            "UDP datagrams received.",
            s.datagrams.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_tcp_connections_total",
            "statsd TCP connections accepted.",
            s.tcp_connections.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_alerts_sent_total",
            "Alert deliveries that succeeded.",
            state.alerts.sent.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_alerts_failed_total",
            "Alert deliveries that failed after retries.",
            state.alerts.failed.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_alerts_dropped_total",
            "Alerts dropped because their alarm's queue was full.",
            state.alerts.dropped.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_db_saves_total",
            "Database saves completed.",
            state.saves.saves.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_db_save_failures_total",
            "Database saves that failed.",
            state.saves.failures.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_websocket_messages_total",
            "Messages queued for websocket clients.",
            state.ws.sent.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_websocket_resyncs_total",
            "RESYNCs sent to websocket clients that fell behind.",
            state.ws.resyncs.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        single(&mut out, name, help, "counter", value);
    }
    let gauges = [
        (
            "lovebeat_db_save_duration_ms",
            "Duration of the latest database save.",
            state.saves.last_duration_ms.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_db_size_bytes",
            "Size of the database file after the latest save.",
            state.saves.last_bytes.load(Ordering::Relaxed),
        ),
        (
            "lovebeat_websocket_clients",
            "Connected websocket clients.",
            state.ws.client_count() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        single(&mut out, name, help, "gauge", value);
    }
    single(
        &mut out,
        "lovebeat_start_time_ms",
        "When the engine started (ms since epoch); restart deadlines count from it.",
        "gauge",
        state.engine.started_at(),
    );
    if let Some(r) = &state.remote {
        for (name, help, value) in [
            (
                "lovebeat_s3_uploads_total",
                "Database uploads to S3 that succeeded.",
                r.uploads.load(Ordering::Relaxed),
            ),
            (
                "lovebeat_s3_upload_failures_total",
                "Database uploads to S3 that failed (retried after the next save).",
                r.upload_failures.load(Ordering::Relaxed),
            ),
        ] {
            single(&mut out, name, help, "counter", value);
        }
    }
    let (ok, error, muted) = state.engine.state_counts();
    out.push_str("# HELP lovebeat_services Services by state.\n# TYPE lovebeat_services gauge\n");
    for (label, v) in [("ok", ok), ("error", error), ("muted", muted)] {
        let _ = writeln!(out, "lovebeat_services{{state=\"{label}\"}} {v}");
    }
    let (mut a_ok, mut a_err) = (0, 0);
    for a in state.engine.alarms() {
        match a.state {
            State::Error => a_err += 1,
            _ => a_ok += 1,
        }
    }
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
