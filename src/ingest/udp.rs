//! statsd over UDP: several `SO_REUSEPORT` sockets, one reader thread each,
//! reading whole datagrams of up to 64 KiB in batches with `recvmmsg`. The
//! port must be ours alone ([`super::owners`]): no other process may share
//! it through `SO_REUSEPORT`.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::owners::{self, Ours, PortError};
use super::{apply_packets, IngestStats};
use crate::clock::now_ms;
use crate::engine::Engine;
use crate::settings::ListenAddr;

/// `[udp]`: where statsd datagrams are read.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Address; an empty host means every interface.
    pub listen: ListenAddr,
    /// Number of `SO_REUSEPORT` sockets, 0 = one per core.
    pub sockets: usize,
    /// Receive buffer per socket, bytes: what absorbs a burst (every cron
    /// job beating at the top of the minute) while the reader catches up.
    pub receive_buffer: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            listen: ListenAddr::any(8127),
            sockets: 0,
            receive_buffer: 32 << 20,
        }
    }
}

/// Largest UDP payload, plus one byte.
const DATAGRAM: usize = 65_536;
/// How often a reader looks at the stop flag when no traffic arrives.
const POLL: Duration = Duration::from_millis(100);

/// Running UDP readers.
pub struct UdpIngest {
    /// The address the sockets are bound to.
    pub local_addr: SocketAddr,
    /// Our sockets, to tell them from another process's on the port
    /// (`None` when `/proc` cannot tell).
    pub ours: Option<Ours>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpIngest {
    /// Binds `sockets` sockets (0 = one per core) to `addr`, each asking
    /// for a receive buffer of `receive_buffer` bytes, and starts a reader
    /// thread for each. They stop when `stop` is cancelled, within the
    /// socket's read timeout. Refuses ([`PortError::Taken`]) when another
    /// process holds the port, before binding and once bound.
    pub fn start(
        engine: Engine,
        stats: Arc<IngestStats>,
        config: &UdpConfig,
        stop: CancellationToken,
    ) -> Result<UdpIngest, PortError> {
        let (addr, sockets, receive_buffer) =
            (config.listen.addr, config.sockets, config.receive_buffer);
        let n = if sockets == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            sockets
        };
        owners::probe(addr)?;
        let first = bind(addr, receive_buffer)?;
        // The kernel reports twice what it grants (it counts its overhead).
        let granted = first.recv_buffer_size().unwrap_or(0) / 2;
        if granted < receive_buffer {
            tracing::info!(
                "UDP receive buffer is {granted} bytes, not the {receive_buffer} asked for: \
                 raise net.core.rmem_max (or run with CAP_NET_ADMIN) to absorb larger bursts"
            );
        }
        // With port 0 the kernel picks; the others must share its choice.
        let local_addr = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("UDP socket has no inet address"))?;
        let mut socks = vec![first];
        for _ in 1..n {
            socks.push(bind(local_addr, receive_buffer)?);
        }
        let fds: Vec<_> = socks.iter().map(AsRawFd::as_raw_fd).collect();
        // One that bound between the probe and our sockets joined them.
        let ours = owners::ensure_alone(local_addr, &fds)?;
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
            ours,
            threads,
        })
    }

    /// Waits for the readers to finish (after `stop` was cancelled).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_port(true)?;
    set_receive_buffer(&sock, receive_buffer);
    sock.bind(&addr.into())?;
    sock.set_read_timeout(Some(POLL))?;
    Ok(sock)
}

/// Asks for a receive buffer of `bytes`: with `SO_RCVBUFFORCE` where that
/// is allowed (root or `CAP_NET_ADMIN`), else with `SO_RCVBUF`, which the
/// kernel caps at `net.core.rmem_max`. Returns what the kernel granted.
pub fn set_receive_buffer(sock: &Socket, bytes: usize) -> usize {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket we own, with a c_int option value
    // that lives across the call and its exact size.
    let forced = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        let _ = sock.set_recv_buffer_size(bytes);
    }
    sock.recv_buffer_size().unwrap_or(0)
}

/// Datagrams fetched per `recvmmsg` call.
const BATCH: usize = 32;

/// Reads batches of datagrams with `recvmmsg` (one syscall for up to
/// `BATCH` datagrams under load) until `stop` is cancelled.
fn read_loop(
    engine: &Engine,
    stats: &IngestStats,
    sock: &std::net::UdpSocket,
    stop: &CancellationToken,
) {
    let mut bufs = vec![0u8; BATCH * DATAGRAM];
    let mut iovecs: Vec<libc::iovec> = bufs
        .chunks_mut(DATAGRAM)
        .map(|chunk| libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovecs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    while !stop.is_cancelled() {
        // SAFETY: each header points at its own DATAGRAM-sized region of
        // `bufs` through `iovecs`; both outlive the call and are not touched
        // while it runs. MSG_WAITFORONE blocks (up to the socket's read
        // timeout) for the first datagram only.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) {
                tracing::warn!("UDP receive failed: {e}");
                std::thread::sleep(POLL);
            }
            continue;
        }
        let n = n as usize;
        stats.datagrams.fetch_add(n as u64, Ordering::Relaxed);
        let now = now_ms();
        // One pipeline over the whole batch: with one line per datagram,
        // the prefetching still has lines ahead to work on.
        let packets = msgs.iter().take(n).enumerate().map(|(i, m)| {
            let len = (m.msg_len as usize).min(DATAGRAM);
            &bufs[i * DATAGRAM..i * DATAGRAM + len]
        });
        apply_packets(engine, stats, packets, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receive_buffer_is_what_was_asked_within_the_kernels_cap() {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        let asked = 3 << 20;
        let granted = set_receive_buffer(&sock, asked);
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // Forced (root, CAP_NET_ADMIN): all of it; else up to rmem_max.
        // The kernel reports twice what it grants.
        assert!(
            granted >= 2 * asked.min(cap),
            "granted {granted}, cap {cap}"
        );
        assert!(granted <= 2 * asked, "granted {granted}");
    }
}
