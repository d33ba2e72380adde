//! `--syslog` sends RFC 3164 messages to a unix datagram socket.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn syslog_messages_reach_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (http, statsd) = (common::free_port(), common::free_port());
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::base_config(http, statsd, ""),
    )
    .expect("cfg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args([
            "--config",
            "lovebeat.cfg",
            "--config-dir",
            "none",
            "--syslog",
            "--syslog-socket",
        ])
        .arg(&sock_path)
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.contains("listening")) {
        match sock.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let listening = messages
        .iter()
        .find(|m| m.contains("listening"))
        .unwrap_or_else(|| panic!("{messages:?}"));
    // <30> = facility daemon (3) * 8 + severity info (6).
    assert!(listening.starts_with("<30>"), "{listening}");
    assert!(
        listening.contains(&format!("lovebeat[{}]:", child.id())),
        "{listening}"
    );
}
