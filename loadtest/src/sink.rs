//! `sink`: the reference receiver. The same `SO_REUSEPORT` sockets as the
//! daemon, `recvmmsg`, and a newline count per datagram, nothing else.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// The daemon's default `[udp] receive_buffer`, so `sink` has the same
/// sockets.
pub const RECEIVE_BUFFER: usize = 32 << 20;

/// Receives until `idle` passes without a datagram (after the first one) or
/// `max` passes; prints `{"lines": .., "datagrams": ..}` on stdout.
pub fn run(addr: SocketAddr, sockets: usize, idle: Duration, max: Duration) -> anyhow::Result<()> {
    let lines = Arc::new(AtomicU64::new(0));
    let datagrams = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..sockets.max(1) {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_port(true)?;
        crate::sys::set_receive_buffer(&sock, RECEIVE_BUFFER);
        sock.bind(&addr.into())?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let (lines, datagrams, stop) = (lines.clone(), datagrams.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            receive(&sock, &lines, &datagrams, &stop)
        }));
    }
    println!("ready");
    let start = Instant::now();
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let n = datagrams.load(Ordering::Relaxed);
        if n != last_count {
            last_count = n;
            last_change = Instant::now();
        } else if n > 0 && last_change.elapsed() >= idle {
            break;
        }
        if start.elapsed() >= max {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "{{\"lines\": {}, \"datagrams\": {}}}",
        lines.load(Ordering::Relaxed),
        datagrams.load(Ordering::Relaxed)
    );
    Ok(())
}

fn receive(sock: &Socket, lines: &AtomicU64, datagrams: &AtomicU64, stop: &AtomicBool) {
    const BATCH: usize = 32;
    const SIZE: usize = 65_536;
    let mut bufs = vec![0u8; BATCH * SIZE];
    let mut iovecs: Vec<libc::iovec> = (0..BATCH)
        .map(|i| libc::iovec {
            iov_base: bufs[i * SIZE..].as_mut_ptr() as *mut libc::c_void,
            iov_len: SIZE,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovecs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every header points at its own SIZE-byte region of `bufs`,
        // which outlives the call. MSG_WAITFORONE returns after the first
        // datagram if no more are queued.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            continue;
        }
        let mut n_lines = 0u64;
        for (i, m) in msgs.iter().take(r as usize).enumerate() {
            let data = &bufs[i * SIZE..i * SIZE + m.msg_len as usize];
            n_lines += data.iter().filter(|c| **c == b'\n').count() as u64;
        }
        lines.fetch_add(n_lines, Ordering::Relaxed);
        datagrams.fetch_add(r as u64, Ordering::Relaxed);
    }
}
