//! Ingestion of statsd lines over UDP and TCP (SPEC §4.1).

pub mod statsd;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::engine::{Engine, JobUpdate, Update, TIMEOUT_AUTO};
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
    /// When a dropped line was last logged (ms), for rate limiting.
    last_drop_log: AtomicI64,
    /// Drops since the last log line.
    drops_unlogged: AtomicU64,
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
            tracing::warn!("dropped {n} malformed statsd line(s); latest: {err:?} in {shown:?}");
        }
    }
}

/// Applies one parsed command to the engine.
pub fn apply(engine: &Engine, cmd: Command<'_>, now: i64) {
    let update = match cmd.action {
        Action::Beat => Update {
            beat: true,
            timeout: None,
        },
        Action::Autobeat => Update {
            beat: true,
            timeout: Some(TIMEOUT_AUTO),
        },
        Action::Timeout => Update {
            beat: false,
            timeout: Some(cmd.timeout),
        },
        Action::Start | Action::Fail => {
            let job = JobUpdate {
                start: cmd.action == Action::Start,
                fail: (cmd.action == Action::Fail).then(|| (None, String::new())),
                ..JobUpdate::default()
            };
            let _ = engine.update_job(cmd.name, job, now);
            return;
        }
    };
    // The parser validated the name, so this cannot fail.
    let _ = engine.update(cmd.name, update, now);
}

/// Parses and applies every line of a packet; returns (accepted, dropped).
pub fn apply_packet(engine: &Engine, stats: &IngestStats, packet: &[u8], now: i64) -> (u64, u64) {
    let (mut ok, mut bad) = (0, 0);
    for line in packet.split(|c| *c == b'\n') {
        if line.is_empty() || line == b"\r" {
            continue;
        }
        match statsd::parse_line(line) {
            Ok(cmd) => {
                apply(engine, cmd, now);
                ok += 1;
            }
            Err(e) => {
                stats.dropped(line, e, now);
                bad += 1;
            }
        }
    }
    stats.lines_accepted.fetch_add(ok, Ordering::Relaxed);
    (ok, bad)
}
