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

use hyper::{Response, StatusCode};

use super::router::respond;
use super::{AppState, Body};

/// Renders every metric of every component, each metric's HELP and TYPE
/// once, before its series.
pub(super) fn render(state: &AppState) -> Response<Body> {
    let mut out = String::with_capacity(4096);
    let mut last: Option<&str> = None;
    for r in state.counters.read() {
        let m = r.metric;
        if last != Some(m.prometheus) {
            let _ = writeln!(out, "# HELP {} {}", m.prometheus, m.help);
            let _ = writeln!(out, "# TYPE {} {}", m.prometheus, m.kind.word());
            last = Some(m.prometheus);
        }
        out.push_str(m.prometheus);
        if !r.labels.is_empty() {
            let labels: Vec<String> = r
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let _ = write!(out, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(out, " {}", r.value);
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}
