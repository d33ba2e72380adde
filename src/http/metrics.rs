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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::counters::{Counted, Counters, Kind, Metric};

    /// Every component's metrics are named once (Prometheus refuses a
    /// second HELP; statsd deltas are kept by name), and a counter's
    /// name ends in `_total` as Prometheus' text format wants.
    #[test]
    fn each_name_belongs_to_one_metric_and_counters_end_in_total() {
        let engine = crate::engine::Engine::new(Default::default(), crate::clock::now_ms());
        let alerts = crate::sinks::alerts::AlertStats::default();
        alerts.count_kind("slack", true);
        let parts: Vec<Arc<dyn Counted>> = vec![
            Arc::new(crate::ingest::IngestStats::default()),
            Arc::new(super::super::conns::Registry::new(
                1,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )),
            Arc::new(super::super::lists::Lists::new(&Default::default())),
            Arc::new(super::super::ws::WsHub::new(1)),
            Arc::new(engine),
            Arc::new(alerts),
            Arc::new(crate::sinks::persistence::SaveStats::default()),
        ];
        let mut names: HashMap<&str, *const Metric> = HashMap::new();
        let readings = Counters::new(parts).read();
        assert!(readings.len() > 30, "{}", readings.len());
        for r in readings {
            let m = r.metric;
            if m.kind == Kind::Counter {
                assert!(m.prometheus.ends_with("_total"), "{}", m.prometheus);
            }
            for name in [Some(m.prometheus), m.statsd].into_iter().flatten() {
                let seen = *names.entry(name).or_insert(m as *const Metric);
                assert!(std::ptr::eq(seen, m), "{name} names two metrics");
            }
        }
    }
}
