//! statsd over UDP: several `SO_REUSEPORT` sockets, one reader thread each,
//! reading whole datagrams of up to 64 KiB.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{apply_packet, IngestStats};
use crate::clock::now_ms;
use crate::engine::Engine;

/// Largest UDP payload, plus one byte.
const DATAGRAM: usize = 65_536;
/// How often a reader looks at the stop flag when no traffic arrives.
const POLL: Duration = Duration::from_millis(100);

/// Running UDP readers.
pub struct UdpIngest {
    /// The address the sockets are bound to.
    pub local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl UdpIngest {
    /// Binds `sockets` sockets (0 = one per core) to `addr` and starts a
    /// reader thread for each. They stop when `stop` is set.
    pub fn start(
        engine: Engine,
        stats: Arc<IngestStats>,
        addr: SocketAddr,
        sockets: usize,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<UdpIngest> {
        let n = if sockets == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            sockets
        };
        let first = bind(addr)?;
        // With port 0 the kernel picks; the others must share its choice.
        let local_addr = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("UDP socket has no inet address"))?;
        let mut socks = vec![first];
        for _ in 1..n {
            socks.push(bind(local_addr)?);
        }
        let mut threads = Vec::new();
        for (i, sock) in socks.into_iter().enumerate() {
            let (engine, stats, stop) = (engine.clone(), stats.clone(), stop.clone());
            let sock: std::net::UdpSocket = sock.into();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("udp-{i}"))
                    .spawn(move || read_loop(&engine, &stats, &sock, &stop))?,
            );
        }
        Ok(UdpIngest {
            local_addr,
            threads,
        })
    }

    /// Waits for the readers to finish (after `stop` was set).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    // A large receive buffer absorbs bursts; the kernel may cap it.
    let _ = sock.set_recv_buffer_size(8 << 20);
    sock.bind(&addr.into())?;
    sock.set_read_timeout(Some(POLL))?;
    Ok(sock)
}

fn read_loop(engine: &Engine, stats: &IngestStats, sock: &std::net::UdpSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv(&mut buf) {
            Ok(n) => {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                apply_packet(engine, stats, &buf[..n], now_ms());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!("UDP receive failed: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}
