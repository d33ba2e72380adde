//! `blast`: sends statsd lines over UDP (batched with `sendmmsg`) or TCP.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct BlastOpts {
    pub target: SocketAddr,
    pub services: usize,
    pub lines_per_packet: usize,
    /// Lines per second, 0 = flat out.
    pub rate: u64,
    /// Total lines to send (ignored with `duration`).
    pub count: u64,
    pub duration: Option<Duration>,
    pub kind: Kind,
    pub sequential: bool,
    pub tcp: bool,
    /// Service names are `<prefix>.<index>`.
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Beat,
    Timeout,
    Autobeat,
    /// A job's failure report: the service goes ERROR (`history-write`
    /// flips services with it and beats).
    Fail,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct BlastResult {
    pub lines: u64,
    pub packets: u64,
    pub elapsed: Duration,
}

impl BlastResult {
    pub fn lines_per_sec(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn packets_per_sec(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// All lines, one per service, built once so sending formats nothing.
fn build_lines(o: &BlastOpts) -> Vec<Vec<u8>> {
    let suffix = match o.kind {
        Kind::Beat => ".beat:1|c\n",
        Kind::Timeout => ".timeout:3600|g\n",
        Kind::Autobeat => ".autobeat:1|c\n",
        Kind::Fail => ".fail:1|c\n",
    };
    (0..o.services)
        .map(|i| format!("{}.{i:07}{suffix}", o.prefix).into_bytes())
        .collect()
}

/// Sends the lines and returns what was sent.
pub fn blast(o: &BlastOpts) -> anyhow::Result<BlastResult> {
    let lines = build_lines(o);
    let total = if o.sequential {
        o.services as u64
    } else {
        o.count
    };
    let deadline = o.duration.map(|d| Instant::now() + d);
    let start = Instant::now();
    let mut sent_lines = 0u64;
    let mut packets = 0u64;
    let mut next = 0usize;
    let mut take = |n: usize| -> Vec<usize> {
        (0..n)
            .map(|_| {
                let i = next;
                next = (next + 1) % lines.len().max(1);
                i
            })
            .collect()
    };
    let done = |sent: u64| match deadline {
        Some(d) if !o.sequential => Instant::now() >= d,
        _ => sent >= total,
    };
    let pace = |sent: u64| {
        if o.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / o.rate as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    };
    if o.tcp {
        let mut s = TcpStream::connect(o.target)?;
        let mut buf = Vec::with_capacity(1 << 16);
        while !done(sent_lines) {
            buf.clear();
            let left = if deadline.is_some() && !o.sequential {
                1000
            } else {
                (total - sent_lines).min(1000)
            };
            for i in take(left as usize) {
                buf.extend_from_slice(&lines[i]);
            }
            s.write_all(&buf)?;
            sent_lines += left;
            packets += 1;
            pace(sent_lines);
        }
        s.flush()?;
    } else {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(o.target)?;
        let sock2 = socket2::SockRef::from(&sock);
        let _ = sock2.set_send_buffer_size(8 << 20);
        const BATCH: usize = 64;
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(65_000)).collect();
        while !done(sent_lines) {
            let mut n_packets = 0;
            let mut batch_lines = 0u64;
            while n_packets < BATCH {
                let remaining = if deadline.is_some() && !o.sequential {
                    u64::MAX
                } else {
                    total - sent_lines - batch_lines
                };
                if remaining == 0 {
                    break;
                }
                let k = (o.lines_per_packet as u64).min(remaining) as usize;
                let buf = &mut bufs[n_packets];
                buf.clear();
                for i in take(k) {
                    buf.extend_from_slice(&lines[i]);
                }
                batch_lines += k as u64;
                n_packets += 1;
            }
            send_batch(sock.as_raw_fd(), &bufs[..n_packets])?;
            sent_lines += batch_lines;
            packets += n_packets as u64;
            pace(sent_lines);
        }
    }
    Ok(BlastResult {
        lines: sent_lines,
        packets,
        elapsed: start.elapsed(),
    })
}

/// One `sendmmsg` for a batch of datagrams on a connected socket; retries
/// the part the kernel did not take.
fn send_batch(fd: i32, bufs: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut iovecs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..bufs.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, iov) in msgs.iter_mut().zip(iovecs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut off = 0;
    while off < msgs.len() {
        // SAFETY: msgs[off..] point at iovecs that point into `bufs`, all
        // alive for the duration of the call.
        let r =
            unsafe { libc::sendmmsg(fd, msgs[off..].as_mut_ptr(), (msgs.len() - off) as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                // Nothing listening yet: the datagram is lost, like any other.
                Some(libc::ECONNREFUSED) => {
                    off += 1;
                    continue;
                }
                _ => return Err(e.into()),
            }
        }
        off += r as usize;
    }
    Ok(())
}
