//! statsd over TCP: any number of lines per connection, one task each.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{apply_packet, IngestStats};
use crate::clock::now_ms;
use crate::config::ListenAddr;
use crate::engine::Engine;

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
/// at once (more are closed as they come, and counted); one that sends
/// nothing for `idle` is closed.
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
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                    if open.fetch_add(1, Ordering::Relaxed) >= max {
                        open.fetch_sub(1, Ordering::Relaxed);
                        stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    let (engine, stats, stop, open) = (engine.clone(), stats.clone(), stop.clone(), open.clone());
                    tasks.spawn(async move {
                        if let Err(e) = connection(stream, &engine, &stats, idle, stop).await {
                            tracing::info!("statsd TCP connection from {peer} closed: {e}");
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
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

/// Reads lines and applies every complete one; the last line needs no `\n`.
async fn connection(
    mut stream: TcpStream,
    engine: &Engine,
    stats: &IngestStats,
    idle: std::time::Duration,
    stop: CancellationToken,
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
