//! Who holds the statsd UDP port. The readers bind it with `SO_REUSEPORT`
//! (one socket per core), and Linux lets any other process of the same
//! user join such a port without a word: the kernel then spreads the
//! datagrams over every socket, and the other process silently takes its
//! share of the beats while their services here raise false alarms. So
//! the port is made sure of: before the readers bind, a probe binds it
//! without `SO_REUSEPORT` (which fails while any socket holds an
//! overlapping address, another user's or not); once they are bound, and
//! every [`CHECK_EVERY`] after, the kernel's socket table
//! (`/proc/net/udp`, `/proc/net/udp6`) must show no socket on the port but
//! ours (known by their inodes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use super::IngestStats;
use crate::trouble::{Part, Trouble};

/// How often the socket table is looked at once running: a read of two
/// small kernel files.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Why the port is not ours alone.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A socket of another process already holds the port.
    #[error(
        "another process already holds UDP port {port} ({holders}): \
         a second reader would take a share of the beats; stop it or set another [udp] listen \
         (`ss -uapn 'sport = :{port}'` names it)"
    )]
    Taken {
        /// The port.
        port: u16,
        /// What the kernel says of the other sockets.
        holders: String,
    },
    /// Binding or reading the socket table failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A socket of the kernel's table on our port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its local address.
    pub addr: SocketAddr,
    /// Its owner's user id.
    pub uid: u32,
    /// Its inode, which names the socket across processes.
    pub inode: u64,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of uid {}, inode {}", self.addr, self.uid, self.inode)
    }
}

/// Binds `addr` without `SO_REUSEPORT` and lets it go at once: the kernel
/// refuses with `EADDRINUSE` while any socket (of any user, reuse or not)
/// holds an overlapping address on the port. A port of 0 is skipped: the
/// kernel picks a free one.
pub fn probe(addr: SocketAddr) -> Result<(), PortError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    match sock.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let holders = table(addr.port())
                .map(|entries| {
                    let shown: Vec<String> = entries
                        .iter()
                        .filter(|e| overlaps(addr, e.addr))
                        .map(Entry::to_string)
                        .collect();
                    shown.join(", ")
                })
                .unwrap_or_default();
            Err(PortError::Taken {
                port: addr.port(),
                holders: if holders.is_empty() {
                    "the kernel says it is in use".into()
                } else {
                    holders
                },
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The inode of the socket behind `fd`, from `/proc/self/fd`.
pub fn inode_of(fd: std::os::fd::RawFd) -> std::io::Result<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
    let text = link.to_string_lossy();
    text.strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("fd {fd} is not a socket: {text}")))
}

/// Our sockets on the port, by inode, and the address they are bound to.
#[derive(Debug, Clone)]
pub struct Ours {
    /// The address the readers are bound to (its port the kernel's pick
    /// when 0 was asked for).
    pub addr: SocketAddr,
    /// Their inodes.
    pub inodes: Vec<u64>,
}

impl Ours {
    /// The sockets of other processes that could take datagrams sent to
    /// us, as the kernel's table shows them now.
    pub fn others(&self) -> std::io::Result<Vec<Entry>> {
        Ok(table(self.addr.port())?
            .into_iter()
            .filter(|e| e.inode != 0 && !self.inodes.contains(&e.inode))
            .filter(|e| overlaps(self.addr, e.addr))
            .collect())
    }
}

/// Our sockets `fds`, bound to `addr`, if no other process's socket shares
/// the port (else `Err(Taken)`): checked once the readers are bound, which
/// catches one that bound between the probe and them. `Ok(None)` when
/// `/proc` cannot tell (no `/proc` mounted): the probe was all there was.
pub fn ensure_alone(
    addr: SocketAddr,
    fds: &[std::os::fd::RawFd],
) -> Result<Option<Ours>, PortError> {
    let cannot_tell = |e: std::io::Error| {
        tracing::warn!(
            "cannot read the kernel's UDP socket table (/proc) to check that no other process shares UDP port {}: {e}",
            addr.port()
        );
        Ok(None)
    };
    let inodes = match fds.iter().map(|fd| inode_of(*fd)).collect() {
        Ok(i) => i,
        Err(e) => return cannot_tell(e),
    };
    let ours = Ours { addr, inodes };
    match ours.others() {
        Ok(others) if others.is_empty() => Ok(Some(ours)),
        Ok(others) => Err(PortError::Taken {
            port: addr.port(),
            holders: shown(&others),
        }),
        Err(e) => cannot_tell(e),
    }
}

fn shown(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(Entry::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a socket bound to `theirs` shares datagrams meant for `ours`
/// (same port assumed): same family and the same address or either one a
/// wildcard, as the kernel's own bind conflicts go; and every IPv4 socket
/// when we listen on `[::]`, which takes IPv4 too (the kernel prefers an
/// IPv4 socket for IPv4 datagrams). An IPv6 socket never takes IPv4
/// datagrams from an IPv4 socket, which the kernel prefers.
fn overlaps(ours: SocketAddr, theirs: SocketAddr) -> bool {
    let (a, b) = (ours.ip(), theirs.ip());
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            a == b || a.is_unspecified() || b.is_unspecified()
        }
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// Every socket bound to `port` in the kernel's UDP tables of our network
/// namespace.
fn table(port: u16) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/udp")?;
    out.extend(parse(&v4, port));
    // No IPv6 in the kernel: no table, and no IPv6 socket either.
    if let Ok(v6) = std::fs::read_to_string("/proc/net/udp6") {
        out.extend(parse(&v6, port));
    }
    Ok(out)
}

/// The entries of a `/proc/net/udp{,6}` table bound to `port`. A line is
/// `sl local_address rem_address st queues tr retrnsmt uid timeout inode
/// ...`; an address is the raw `in_addr` (`in6_addr`: four words) printed
/// as host-order hex words, then `:` and the port in hex. Lines that do not
/// parse are skipped.
pub fn parse(text: &str, port: u16) -> Vec<Entry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let local = f.nth(1)?;
            let uid = f.nth(5)?.parse().ok()?;
            let inode = f.nth(1)?.parse().ok()?;
            let addr = parse_addr(local)?;
            (addr.port() == port).then_some(Entry { addr, uid, inode })
        })
        .collect()
}

fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Looks every [`CHECK_EVERY`] for other processes' sockets on our port
/// and says so loudly while there are any: an error in the log when the
/// set changes, `lovebeat_udp_foreign_sockets` in `/metrics`, and
/// `lovebeat.self.udp` in ERROR; back to OK once they are gone.
pub async fn watch(ours: Ours, stats: Arc<IngestStats>, trouble: Trouble, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Vec<u64> = Vec::new();
    let mut unreadable_told = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let look = ours.clone();
        let others = match tokio::task::spawn_blocking(move || look.others()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                if !unreadable_told {
                    tracing::warn!(
                        "cannot read the kernel's UDP socket table to check that no other process shares UDP port {}: {e}",
                        ours.addr.port()
                    );
                    unreadable_told = true;
                }
                continue;
            }
            Err(_) => continue,
        };
        stats
            .udp_foreign_sockets
            .store(others.len() as u64, Ordering::Relaxed);
        let inodes: Vec<u64> = others.iter().map(|e| e.inode).collect();
        if others.is_empty() {
            if !seen.is_empty() {
                tracing::info!(
                    "UDP port {} is ours alone again: beats reach lovebeat only",
                    ours.addr.port()
                );
            }
            trouble.ok(Part::Udp);
        } else {
            let reason = format!(
                "another process shares statsd UDP port {} and takes a share of the beats ({}): \
                 stop it or move it to another port",
                ours.addr.port(),
                shown(&others)
            );
            if inodes != seen {
                tracing::error!("{reason}");
            }
            trouble.fail(Part::Udp, &reason);
        }
        seen = inodes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:1FBF 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4242 2 0000000000000000 0
  124: 00000000:1FBF 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0
  125: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 78 2 0000000000000000 0
  bad line
";

    const V6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000000000000000000001000000:1FBF 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 99 2 0000000000000000 0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn the_kernels_table_is_read_for_one_port() {
        let v4 = parse(V4, 8127);
        assert_eq!(
            v4,
            vec![
                Entry {
                    addr: "127.0.0.1:8127".parse().expect("addr"),
                    uid: 1000,
                    inode: 4242
                },
                Entry {
                    addr: "0.0.0.0:8127".parse().expect("addr"),
                    uid: 0,
                    inode: 77
                },
            ]
        );
        let v6 = parse(V6, 8127);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].addr, "[::1]:8127".parse().expect("addr"));
        assert!(parse(V4, 1).is_empty());
    }

    #[test]
    fn overlap_is_the_same_address_or_a_wildcard() {
        let a = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert!(overlaps(a("127.0.0.1:1"), a("127.0.0.1:1")));
        assert!(overlaps(a("127.0.0.1:1"), a("0.0.0.0:1")));
        assert!(overlaps(a("0.0.0.0:1"), a("127.0.0.2:1")));
        assert!(!overlaps(a("127.0.0.1:1"), a("127.0.0.2:1")));
        assert!(overlaps(a("[::]:1"), a("127.0.0.1:1")));
        assert!(!overlaps(a("[::1]:1"), a("127.0.0.1:1")));
        assert!(!overlaps(a("127.0.0.1:1"), a("[::]:1")));
    }

    /// The live table agrees with a socket bound here: found by its
    /// inode, so this process's own sockets are told from others'.
    #[test]
    fn a_bound_socket_is_found_in_the_table_by_its_inode() {
        use std::os::fd::AsRawFd;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = sock.local_addr().expect("addr");
        let inode = inode_of(sock.as_raw_fd()).expect("inode");
        let found = table(addr.port()).expect("table");
        assert!(found.iter().any(|e| e.inode == inode && e.addr == addr));
        let ours = Ours {
            addr,
            inodes: vec![inode],
        };
        assert!(ours.others().expect("others").is_empty());
        assert!(matches!(probe(addr), Err(PortError::Taken { .. })));
    }
}
