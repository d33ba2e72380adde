//! Ingestion of statsd lines over UDP and TCP (README, "Sending beats").

pub mod owners;
pub mod statsd;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::engine::{Change, Engine, FailReport, Timeout};
use crate::prefetch::Pipeline;
use statsd::{Action, Command, ParseError};

/// Ingestion counters, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Lines applied.
    pub lines_accepted: AtomicU64,
    /// Lines dropped as malformed.
    pub lines_dropped: AtomicU64,
    /// UDP datagrams received.
    pub datagrams: AtomicU64,
    /// TCP connections accepted.
    pub tcp_connections: AtomicU64,
    /// TCP connections refused at `[limits] max_tcp_connections`.
    pub tcp_refused: AtomicU64,
    /// Other processes' sockets sharing the statsd UDP port at the last
    /// check ([`owners::watch`]): each takes a share of the beats.
    pub udp_foreign_sockets: AtomicU64,
    /// TCP connections closed to make room at `[limits]
    /// max_tcp_connections`.
    pub tcp_evicted: AtomicU64,
    /// When a dropped line was last logged (ms), for rate limiting.
    last_drop_log: AtomicI64,
    /// Drops since the last log line.
    drops_unlogged: AtomicU64,
    /// Cluster mode: lines go to the cluster's command stream instead of
    /// this node's engine (src/cluster/).
    pub cluster: std::sync::OnceLock<std::sync::Arc<crate::cluster::Publisher>>,
}

impl IngestStats {
    /// Counts one dropped line and logs at most one warning every 10 s.
    pub fn dropped(&self, line: &[u8], err: ParseError, now: i64) {
        self.lines_dropped.fetch_add(1, Ordering::Relaxed);
        let n = self.drops_unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now - last >= 10_000
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.drops_unlogged.store(0, Ordering::Relaxed);
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
            tracing::warn!("dropped {n} malformed statsd line(s); latest: {err}: {shown:?}");
        }
    }
}

/// Applies one parsed command to the engine; `hash` is its name's, from
/// [`Engine::prefetch_probe`].
fn apply(engine: &Engine, cmd: Command<'_>, hash: u64, now: i64) {
    let change = change_of(cmd.action);
    // The parser validated the name, so the one refusal left is a new
    // name at `[limits] max_services`, which the engine counts itself
    // (`services_refused` in /metrics); the line was well formed, and
    // stays counted as accepted.
    let _ = engine.change_hashed(cmd.name, hash, change, now);
}

/// What a statsd line asks of its service.
fn change_of(action: Action) -> Change {
    match action {
        Action::Beat => Change::beat(),
        Action::Autobeat => Change {
            beat: true,
            timeout: Some(Timeout::Auto),
            ..Change::default()
        },
        Action::Timeout(t) => Change::timeout(t),
        Action::Start => Change {
            start: true,
            ..Change::default()
        },
        Action::Fail => Change {
            fail: Some(FailReport::default()),
            ..Change::default()
        },
    }
}

/// Cluster mode's [`apply_packets`]: parses every line and queues the
/// commands for the cluster's stream, never blocking; a line the full
/// buffer refuses is dropped (counted by the publisher).
fn forward_packets<'a>(
    publisher: &crate::cluster::Publisher,
    stats: &IngestStats,
    packets: impl IntoIterator<Item = &'a [u8]>,
    now: i64,
) -> (u64, u64) {
    let (mut ok, mut bad) = (0, 0);
    let mut cmds = Vec::new();
    for packet in packets {
        for line in packet.split(|c| *c == b'\n') {
            if line.is_empty() || line == b"\r" {
                continue;
            }
            match statsd::parse_line(line) {
                Ok(cmd) => cmds.push(crate::cluster::wire::Command {
                    ts: now,
                    name: cmd.name.to_string(),
                    op: crate::cluster::wire::Op::Change(change_of(cmd.action)),
                }),
                Err(e) => {
                    stats.dropped(line, e, now);
                    bad += 1;
                }
            }
        }
    }
    if !cmds.is_empty() {
        let refused = publisher.push_all(&cmds);
        ok = cmds.len() as u64 - refused;
    }
    stats.lines_accepted.fetch_add(ok, Ordering::Relaxed);
    (ok, bad)
}

/// Lines parsed ahead of the one being applied. Each line's memory is
/// prefetched in three stages, each a third of the way closer to applying
/// it and each needing what the previous one loaded: the table's control
/// bytes when it is parsed, then the entry (found by its tag in those
/// bytes), then what a beat writes out of line (found in the entry). When
/// it is applied, `AHEAD` lines after it was parsed, its memory is (nearly)
/// all in cache, and the cache misses of consecutive lines overlap.
const AHEAD: usize = 18;

/// The stages after the first, as distances from being applied.
const STAGES: [usize; 2] = [2 * AHEAD / 3, AHEAD / 3];

/// Parses and applies every line of a packet; returns (accepted, dropped).
pub fn apply_packet(engine: &Engine, stats: &IngestStats, packet: &[u8], now: i64) -> (u64, u64) {
    apply_packets(engine, stats, [packet], now)
}

/// Parses and applies every line of several packets (a `recvmmsg` batch),
/// in order; returns (accepted, dropped).
pub fn apply_packets<'a>(
    engine: &Engine,
    stats: &IngestStats,
    packets: impl IntoIterator<Item = &'a [u8]>,
    now: i64,
) -> (u64, u64) {
    if let Some(p) = stats.cluster.get() {
        return forward_packets(p, stats, packets, now);
    }
    let (mut ok, mut bad) = (0, 0);
    let mut pipeline = Pipeline::<(Command<'a>, u64), AHEAD>::default();
    let stage = |k: usize, (cmd, hash): &(Command<'a>, u64)| {
        if k == STAGES[0] {
            engine.prefetch_entry(*hash);
        } else {
            engine.prefetch_history(cmd.name, *hash);
        }
    };
    for packet in packets {
        for line in packet.split(|c| *c == b'\n') {
            if line.is_empty() || line == b"\r" {
                continue;
            }
            match statsd::parse_line(line) {
                Ok(cmd) => {
                    let hash = engine.prefetch_probe(cmd.name);
                    pipeline.push((cmd, hash), &STAGES, stage, |(cmd, hash)| {
                        apply(engine, cmd, hash, now)
                    });
                    ok += 1;
                }
                Err(e) => {
                    stats.dropped(line, e, now);
                    bad += 1;
                }
            }
        }
    }
    pipeline.finish(|(cmd, hash)| apply(engine, cmd, hash, now));
    stats.lines_accepted.fetch_add(ok, Ordering::Relaxed);
    (ok, bad)
}

static LINES_ACCEPTED: Metric = Metric {
    prometheus: "lovebeat_lines_accepted_total",
    statsd: Some("lines.accepted"),
    help: "statsd lines applied.",
    kind: Kind::Counter,
};

static LINES_DROPPED: Metric = Metric {
    prometheus: "lovebeat_lines_dropped_total",
    statsd: Some("lines.dropped"),
    help: "statsd lines dropped as malformed.",
    kind: Kind::Counter,
};

static DATAGRAMS: Metric = Metric {
    prometheus: "lovebeat_datagrams_received_total",
    statsd: Some("datagrams.received"),
    help: "UDP datagrams received.",
    kind: Kind::Counter,
};

static TCP_CONNECTIONS: Metric = Metric {
    prometheus: "lovebeat_tcp_connections_total",
    statsd: Some("tcp.connections"),
    help: "statsd TCP connections accepted.",
    kind: Kind::Counter,
};

static TCP_REFUSED: Metric = Metric {
    prometheus: "lovebeat_tcp_connections_refused_total",
    statsd: None,
    help: "statsd TCP connections refused at [limits] max_tcp_connections.",
    kind: Kind::Counter,
};

static TCP_EVICTED: Metric = Metric {
    prometheus: "lovebeat_tcp_connections_evicted_total",
    statsd: None,
    help: "statsd TCP connections closed to make room at [limits] max_tcp_connections (the one longest without a whole line gives way).",
    kind: Kind::Counter,
};

static UDP_FOREIGN_SOCKETS: Metric = Metric {
    prometheus: "lovebeat_udp_foreign_sockets",
    statsd: None,
    help: "Sockets of other processes sharing the statsd UDP port at the last check (each takes a share of the beats; lovebeat.self.udp is ERROR meanwhile).",
    kind: Kind::Gauge,
};

/// Ingestion's counters, for `/metrics` and the statsd sink.
impl Counted for IngestStats {
    fn read(&self, out: &mut Vec<Reading>) {
        let n = |a: &AtomicU64| Value::Count(a.load(std::sync::atomic::Ordering::Relaxed));
        out.push(Reading::of(&LINES_ACCEPTED, n(&self.lines_accepted)));
        out.push(Reading::of(&LINES_DROPPED, n(&self.lines_dropped)));
        out.push(Reading::of(&DATAGRAMS, n(&self.datagrams)));
        out.push(Reading::of(&TCP_CONNECTIONS, n(&self.tcp_connections)));
        out.push(Reading::of(&TCP_REFUSED, n(&self.tcp_refused)));
        out.push(Reading::of(&TCP_EVICTED, n(&self.tcp_evicted)));
        let foreign = self
            .udp_foreign_sockets
            .load(std::sync::atomic::Ordering::Relaxed) as f64;
        out.push(Reading::of(&UDP_FOREIGN_SOCKETS, Value::Level(foreign)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    const T0: i64 = 1_700_000_000_000;

    /// Lines are applied in arrival order although they wait in the
    /// prefetch pipeline: across packets, and with many more lines than it
    /// holds, the last timeout sent for a service is the one it keeps.
    #[test]
    fn pipeline_keeps_arrival_order() {
        let engine = Engine::new(EngineConfig::default(), T0);
        let stats = IngestStats::default();
        let mut first = String::new();
        for i in 1..=(3 * AHEAD) {
            first.push_str(&format!("a.timeout:{i}|g\nb{}.beat:1|c\n", i % 5));
        }
        let second = "a.timeout:7|g\nbad line\na.beat:1|c\n";
        let (ok, bad) = apply_packets(&engine, &stats, [first.as_bytes(), second.as_bytes()], T0);
        assert_eq!((ok, bad), (6 * AHEAD as u64 + 2, 1));
        let a = engine.service("a", false).expect("a was created");
        assert_eq!(a.timeout, 7_000);
        assert_eq!(a.last_beat, T0);
        assert_eq!(engine.service("b0", false).map(|b| b.last_beat), Some(T0));
    }
}
