//! statsd over TCP: any number of lines per connection, one task each,
//! at most `[limits] max_tcp_connections` at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{apply_packet, IngestStats};
use crate::clock::now_ms;
use crate::engine::Engine;
use crate::http::conns::{Conn, Registry};
use crate::settings::ListenAddr;
use crate::trouble::{Part, Trouble};

/// `[tcp]`: where statsd lines are read over TCP (1.x's default port is
/// the UDP one, not HTTP's).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Address; an empty host means every interface.
    pub listen: ListenAddr,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            listen: ListenAddr::any(8127),
        }
    }
}

/// Longest accepted line; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;

/// Accepts connections until `stop` is cancelled; each connection is a
/// task of `tasks` and ends then too. At most `max` connections are open
/// at once: at the cap a new one takes the place of the one that has gone
/// longest without sending a whole line among those of the peer address
/// holding the most (counted in `stats.tcp_evicted`), so senders that
/// trickle a line they never end, or stay silent, cannot lock the others
/// out, and a source keeping many connections busy closes its own, not a
/// quiet sender's one. One that sends nothing for
/// `idle` is closed.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    stats: Arc<IngestStats>,
    max: usize,
    idle: std::time::Duration,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    // Never reaped: each connection's own reads time out after `idle`.
    let conns = Arc::new(Registry::new(max, idle, idle));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                    let Some((conn, evicted)) = conns.admit_evicting(peer.ip()) else {
                        // Cannot happen (none of these is ever busy), but
                        // a refusal is what the cap would mean.
                        stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    };
                    if evicted {
                        stats.tcp_evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    let (engine, stats, stop, conns) = (engine.clone(), stats.clone(), stop.clone(), conns.clone());
                    tasks.spawn(async move {
                        let lines = Lines { conns: &conns, conn: &conn };
                        if let Err(e) = connection(stream, &engine, &stats, idle, stop, lines).await {
                            tracing::info!("statsd TCP connection from {peer} closed: {e}");
                        }
                        conns.remove(&conn);
                    });
                }
                Err(e) => {
                    tracing::warn!("statsd TCP accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// A connection's place among the capped ones: each whole line marks it
/// used, and its kill token closes it to make room.
struct Lines<'a> {
    conns: &'a Registry,
    conn: &'a Arc<Conn>,
}

/// Reads lines and applies every complete one; the last line needs no `\n`.
/// Closed to make room, it drops the line it had begun.
async fn connection(
    mut stream: TcpStream,
    engine: &Engine,
    stats: &IngestStats,
    idle: std::time::Duration,
    stop: CancellationToken,
    place: Lines<'_>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_LINE * 2];
    let mut filled = 0;
    loop {
        let n = tokio::select! {
            n = tokio::time::timeout(idle, stream.read(&mut buf[filled..])) => match n {
                Ok(n) => n?,
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "nothing sent for {} s",
                        idle.as_secs()
                    )))
                }
            },
            _ = stop.cancelled() => return Ok(()),
            // Counted and reported on lovebeat.self.tcp, not logged one
            // by one: a flood of them would flood the log.
            _ = place.conn.kill.cancelled() => return Ok(()),
        };
        if n == 0 {
            if filled > 0 {
                apply_packet(engine, stats, &buf[..filled], now_ms());
            }
            return Ok(());
        }
        filled += n;
        let Some(last_nl) = buf[..filled].iter().rposition(|c| *c == b'\n') else {
            if filled > MAX_LINE {
                return Err(std::io::Error::other(format!(
                    "line longer than {MAX_LINE} bytes"
                )));
            }
            continue;
        };
        place.conns.used(place.conn);
        apply_packet(engine, stats, &buf[..last_nl], now_ms());
        buf.copy_within(last_nl + 1..filled, 0);
        filled -= last_nl + 1;
        if filled > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "line longer than {MAX_LINE} bytes"
            )));
        }
    }
}

/// How often `lovebeat.self.tcp` looks at the connections closed to make
/// room.
const EVICTION_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Puts `lovebeat.self.tcp` in ERROR while statsd TCP connections are being
/// closed to make room at `[limits] max_tcp_connections` (a check finds
/// more than the one before), and back to OK after a check that finds
/// none: at the cap a sender's connection may be cut between its lines,
/// and someone should know the cap is too low or under attack.
pub async fn watch_evictions(
    trouble: Trouble,
    stats: Arc<IngestStats>,
    max: usize,
    stop: CancellationToken,
) {
    let read =
        || stats.tcp_evicted.load(Ordering::Relaxed) + stats.tcp_refused.load(Ordering::Relaxed);
    let mut last = read();
    let mut tick = tokio::time::interval(EVICTION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = read();
        if now > last {
            trouble.fail(
                Part::Tcp,
                &format!(
                    "[limits] max_tcp_connections ({max}) reached: {} statsd TCP connections closed to make room in the last {} s",
                    now - last,
                    EVICTION_CHECK.as_secs()
                ),
            );
        } else {
            trouble.ok(Part::Tcp);
        }
        last = now;
    }
}
