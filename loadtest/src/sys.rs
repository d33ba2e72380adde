//! Process plumbing: CPU pinning, `/proc` readings, a minimal HTTP client.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Pins the calling thread (and threads it creates later) to `core`.
pub fn pin_self(core: usize) {
    if cores() < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on our own thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Makes `cmd` run pinned to `core` from its first instruction.
pub fn pin_command(cmd: &mut Command, core: usize) {
    if cores() < 2 {
        return;
    }
    // SAFETY: the closure only calls the async-signal-safe sched_setaffinity.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// CPUs online on the machine. Not `available_parallelism`, which counts
/// only the CPUs this thread may run on: once `run` has pinned itself to
/// the sender's core that is 1, and the daemon would silently be left to
/// share the sender's core instead of being pinned to its own.
pub fn cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(1).max(1)
}

/// User + system CPU time of a process, seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// A `kB` field of /proc/<pid>/status, in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Resets the peak RSS (VmHWM) of a process to its current RSS.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// GET over HTTP/1.1; returns (status, body).
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("incomplete HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw[split + 4..].to_vec();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if n == 0 || p + 2 + n > b.len() {
            break;
        }
        out.extend_from_slice(&b[p + 2..p + 2 + n]);
        b = &b[(p + 4 + n).min(b.len())..];
    }
    out
}

/// GET that only counts the body's bytes (for huge responses).
pub fn http_drain(port: u16, path: &str) -> anyhow::Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// The daemon's `/metrics`, as name{labels} -> value.
pub fn metrics(port: u16) -> anyhow::Result<HashMap<String, f64>> {
    let (status, body) = http_get(port, "/metrics")?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v)))
        .collect())
}

/// Asks for a receive buffer of `bytes` the way the daemon does
/// (`lovebeat::ingest::udp::set_receive_buffer`), so `sink` and the daemon
/// get the same buffer: `SO_RCVBUFFORCE` where allowed, else `SO_RCVBUF`.
pub fn set_receive_buffer(sock: &socket2::Socket, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The allowed CPUs of a child started with `pin_command`, read from
    /// its `/proc/self/status`.
    fn child_cpus(core: usize) -> String {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        pin_command(&mut cmd, core);
        let out = cmd.output().expect("sh runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    }

    /// `run` pins itself to the sender's core before it starts the daemon;
    /// the daemon must still get a core of its own, not inherit the
    /// sender's (which is what happened while `cores()` honoured this
    /// thread's affinity).
    #[test]
    fn a_pinned_sender_still_pins_the_daemon_to_its_own_core() {
        if cores() < 2 {
            eprintln!("one CPU: nothing to pin apart");
            return;
        }
        // In a thread of its own: pinning sticks to the calling thread.
        std::thread::spawn(|| {
            pin_self(1);
            assert_eq!(child_cpus(0), "0");
            assert_eq!(child_cpus(1), "1");
        })
        .join()
        .expect("no panic");
    }
}
