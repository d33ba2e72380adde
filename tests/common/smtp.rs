//! The real SMTP server of the mail tests (`tests/support/smtp_server.py`,
//! aiosmtpd), in one place so that the tests needing one start it alike.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The SMTP server process, killed when the test ends however it ends.
pub struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the SMTP server on a free loopback port, recording each mail it
/// receives as one JSON line in `dir/mail.jsonl`; returns the process, its
/// port and that file once it listens.
pub fn smtp_server(dir: &Path) -> (Smtp, u16, PathBuf) {
    smtp_server_refusing(dir, 0)
}

/// As [`smtp_server`], refusing (accepting and closing) the first
/// `refuse` connections, for the tests of a mail server that fails.
pub fn smtp_server_refusing(dir: &Path, refuse: u32) -> (Smtp, u16, PathBuf) {
    let port = super::free_port();
    let out = dir.join("mail.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&out)
        .arg(refuse.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "SMTP server did not start");
    (Smtp(child), port, out)
}

/// The mails the server has recorded in `path`, once there are `n` or
/// after `secs` seconds, whichever comes first (the caller asserts the
/// count). A line still being written is skipped until it is whole.
pub fn read_mails(path: &Path, n: usize, secs: u64) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let mails: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if mails.len() >= n || std::time::Instant::now() > deadline {
            return mails;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
