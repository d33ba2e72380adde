//! The daemon's counters about itself, in one table: `/metrics` reads it
//! (Prometheus names) and so does the statsd metrics sink (statsd names),
//! so a counter added here reaches both.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::http::ws::WsHub;
use crate::ingest::IngestStats;
use crate::sinks::alerts::AlertStats;
use crate::sinks::persistence::SaveStats;
use crate::sinks::s3::RemoteDb;

/// Where the counters live: each component keeps its own.
#[derive(Clone)]
pub struct Sources {
    /// Ingestion.
    pub ingest: Arc<IngestStats>,
    /// Database saves.
    pub saves: Arc<SaveStats>,
    /// Alert deliveries.
    pub alerts: Arc<AlertStats>,
    /// Websocket clients.
    pub ws: Arc<WsHub>,
    /// The S3 backup, if configured.
    pub remote: Option<Arc<RemoteDb>>,
    /// The engine (what it refused at its limits).
    pub engine: crate::engine::Engine,
    /// The HTTP connections.
    pub(crate) http: Arc<crate::http::conns::Registry>,
    /// The answers that hold a whole table.
    pub(crate) lists: Arc<crate::http::lists::Lists>,
    /// The history store, when it is open.
    pub history: Option<Arc<crate::history::History>>,
}

/// One counter: how it is named where, what it counts, and how to read
/// it (`None` when its component is not configured).
pub struct Counter {
    /// The Prometheus name (`/metrics`).
    pub prometheus: &'static str,
    /// The statsd name (`[metrics]`), for the counters 1.x and its users
    /// graph there.
    pub statsd: Option<&'static str>,
    /// What it counts (`# HELP`).
    pub help: &'static str,
    /// Its value now.
    pub read: fn(&Sources) -> Option<u64>,
}

/// Every counter.
pub const COUNTERS: &[Counter] = &[
    Counter {
        prometheus: "lovebeat_lines_accepted_total",
        statsd: Some("lines.accepted"),
        help: "statsd lines applied.",
        read: |s| Some(s.ingest.lines_accepted.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_lines_dropped_total",
        statsd: Some("lines.dropped"),
        help: "statsd lines dropped as malformed.",
        read: |s| Some(s.ingest.lines_dropped.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_datagrams_received_total",
        statsd: Some("datagrams.received"),
        help: "UDP datagrams received.",
        read: |s| Some(s.ingest.datagrams.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_tcp_connections_total",
        statsd: Some("tcp.connections"),
        help: "statsd TCP connections accepted.",
        read: |s| Some(s.ingest.tcp_connections.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_tcp_connections_refused_total",
        statsd: None,
        help: "statsd TCP connections refused at [limits] max_tcp_connections.",
        read: |s| Some(s.ingest.tcp_refused.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_tcp_connections_evicted_total",
        statsd: None,
        help: "statsd TCP connections closed to make room at [limits] max_tcp_connections (the one longest without a whole line gives way).",
        read: |s| Some(s.ingest.tcp_evicted.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_http_connections_closed_total",
        statsd: None,
        help: "HTTP connections closed to make room at [limits] max_http_connections, or for being idle or slow past the timeouts.",
        read: |s| Some(s.http.closed.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_http_lists_refused_total",
        statsd: None,
        help: "Requests for a whole table (/api/services, /api/alarms, an alarm's page) refused with 503 at [limits] max_http_lists.",
        read: |s| Some(s.lists.refused.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_http_lists_cut_total",
        statsd: None,
        help: "Answers holding a whole table cut because their client had not read them within [limits] http_list_timeout (plus 1 ms per object).",
        read: |s| Some(s.lists.cut.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_websockets_refused_total",
        statsd: None,
        help: "Websocket upgrades refused at [limits] max_websockets.",
        read: |s| Some(s.ws.refused.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_services_refused_total",
        statsd: Some("services.refused"),
        help: "New service names refused at [limits] max_services.",
        read: |s| Some(s.engine.refused().0),
    },
    Counter {
        prometheus: "lovebeat_alarms_refused_total",
        statsd: None,
        help: "Alarm memberships not made at [limits] max_alarms.",
        read: |s| Some(s.engine.refused().1),
    },
    Counter {
        prometheus: "lovebeat_alarm_transitions_merged_total",
        statsd: None,
        help: "Alarm transitions merged because an alarm changed state faster than its alerts were dispatched.",
        read: |s| Some(s.engine.transitions_merged()),
    },
    Counter {
        prometheus: "lovebeat_alerts_sent_total",
        statsd: Some("alert.sent"),
        help: "Alert messages delivered (a webhook POST or script run per change, a mail or Slack post per group).",
        read: |s| Some(s.alerts.sent.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_alerts_failed_total",
        statsd: Some("alert.failed"),
        help: "Alert messages that failed for good, after their retries (each is logged).",
        read: |s| Some(s.alerts.failed.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_alerts_dropped_total",
        statsd: Some("alert.dropped"),
        help: "Alert messages still undelivered when the shutdown's time for them ran out (announced after the restart).",
        read: |s| Some(s.alerts.dropped.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_alarms_flapping_total",
        statsd: None,
        help: "Times an alarm started flapping (its changes then held until it settles).",
        read: |s| Some(s.alerts.flapping.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_eventlog_lost_total",
        statsd: None,
        help: "Events the event log lost: counted instead of logged while its writer was stalled, or not written because the file could not be (a gap record marks where).",
        read: |s| Some(s.engine.journal_lost(crate::engine::journal::Feed::EventLog)),
    },
    Counter {
        prometheus: "lovebeat_db_saves_total",
        statsd: Some("db.save.count"),
        help: "Database saves completed.",
        read: |s| Some(s.saves.saves.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_db_save_failures_total",
        statsd: None,
        help: "Database saves that failed.",
        read: |s| Some(s.saves.failures.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_history_changes_written_total",
        statsd: None,
        help: "State changes written to the history file.",
        read: |s| s.history.as_ref().map(|h| h.written()),
    },
    Counter {
        prometheus: "lovebeat_history_changes_lost_total",
        statsd: None,
        help: "State changes the history lost: its writer was stalled past its bound, or a write failed.",
        read: |s| s.history.as_ref().map(|h| h.lost()),
    },
    Counter {
        prometheus: "lovebeat_history_write_errors_total",
        statsd: None,
        help: "Failed writes to the history file.",
        read: |s| s.history.as_ref().map(|h| h.errors()),
    },
    Counter {
        prometheus: "lovebeat_websocket_messages_total",
        statsd: None,
        help: "Messages queued for websocket clients.",
        read: |s| Some(s.ws.sent.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_websocket_bytes_total",
        statsd: None,
        help: "Bytes of the messages queued for websocket clients (a message counted once per client).",
        read: |s| Some(s.ws.sent_bytes.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_websocket_resyncs_total",
        statsd: None,
        help: "RESYNCs sent to websocket clients that fell behind.",
        read: |s| Some(s.ws.resyncs.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_s3_uploads_total",
        statsd: None,
        help: "Database uploads to S3 that succeeded.",
        read: |s| s.remote.as_ref().map(|r| r.uploads.load(Ordering::Relaxed)),
    },
    Counter {
        prometheus: "lovebeat_s3_upload_failures_total",
        statsd: None,
        help: "Database uploads to S3 that failed (retried after the next save).",
        read: |s| {
            s.remote
                .as_ref()
                .map(|r| r.upload_failures.load(Ordering::Relaxed))
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_counters_end_in_total() {
        let mut seen = std::collections::HashSet::new();
        for c in COUNTERS {
            assert!(c.prometheus.ends_with("_total"), "{}", c.prometheus);
            assert!(seen.insert(c.prometheus), "{}", c.prometheus);
            if let Some(s) = c.statsd {
                assert!(seen.insert(s), "{s}");
            }
        }
    }
}
