//! Starts the real `lovebeat` binary on free loopback ports and talks to it.
#![allow(dead_code)]

pub mod receiver;
pub mod smtp;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 for both TCP and UDP right now, and never
/// handed out before in this test process (tests run in parallel: two of
/// them must not get the same port between its check and its use).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// True when something on `port` answers an HTTP request. A bare TCP
/// connect is not enough: connecting to a port nobody listens on yet can
/// connect the socket to itself (TCP simultaneous open).
pub fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running daemon in its own temporary directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub statsd: u16,
    child: Option<Child>,
    pub stderr_path: PathBuf,
    /// Environment variables added to the daemon's, at every (re)start.
    env: Vec<(String, String)>,
}

/// The config every test daemon gets, plus `extra`.
pub fn base_config(http: u16, statsd: u16, extra: &str) -> String {
    config_with_interval(http, statsd, extra, 3600)
}

/// The base config with another save interval.
pub fn config_with_interval(http: u16, statsd: u16, extra: &str, interval: u64) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[udp]\nlisten = \"127.0.0.1:{statsd}\"\n[tcp]\nlisten = \"127.0.0.1:{statsd}\"\n[database]\nfilename = \"lovebeat.db\"\ninterval = {interval}\n{extra}\n"
    )
}

impl Daemon {
    /// Starts a daemon with the base config plus `extra` TOML.
    pub fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Daemon::start_in(dir, extra)
    }

    /// Starts a daemon in `dir` (which may hold a database already).
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Daemon {
        Daemon::start_full(dir, extra, 3600, &[])
    }

    /// Starts a daemon whose `[http]` section also holds `http_extra`
    /// (through conf.d, which the base config's `[http]` is merged with),
    /// with `extra` in its config.
    pub fn start_with_http(http_extra: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
        std::fs::write(
            dir.path().join("conf.d/http.cfg"),
            format!("[http]\n{http_extra}\n"),
        )
        .expect("write conf.d/http.cfg");
        Daemon::start_in(dir, extra)
    }

    /// Starts a daemon with `extra` in its config and two API keys: the
    /// read key `reader` and the write key `writer`.
    pub fn start_keyed(extra: &str) -> Daemon {
        Daemon::start_with_http("read_keys = [\"reader\"]\nwrite_keys = [\"writer\"]", extra)
    }

    /// Starts a daemon that saves every `interval` seconds.
    pub fn start_with_interval(extra: &str, interval: u64) -> Daemon {
        Daemon::start_full(tempfile::tempdir().expect("tempdir"), extra, interval, &[])
    }

    /// Starts a daemon with `env` added to its environment.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(tempfile::tempdir().expect("tempdir"), extra, 3600, env)
    }

    fn start_full(
        dir: tempfile::TempDir,
        extra: &str,
        interval: u64,
        env: &[(&str, &str)],
    ) -> Daemon {
        let (http, statsd) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("lovebeat.cfg"),
            config_with_interval(http, statsd, extra, interval),
        )
        .expect("write config");
        let mut d = Daemon {
            dir,
            http,
            statsd,
            child: None,
            stderr_path: PathBuf::new(),
            env: env
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.child = Some(d.spawn());
        d.wait_ready();
        d
    }

    fn spawn(&mut self) -> Child {
        self.stderr_path = self.dir.path().join(format!(
            "stderr-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr file");
        Command::new(env!("CARGO_BIN_EXE_lovebeat"))
            .args(["--config", "lovebeat.cfg", "--config-dir", "conf.d"])
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start lovebeat")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if answers_http(self.http) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("wait"))
            {
                panic!("lovebeat exited early with {status}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("lovebeat did not start: {}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the PID of a child we started and still own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lovebeat did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the daemon with SIGKILL (no save, no goodbye) and reaps it;
    /// `restart_stopped` starts it again.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on the PID of a child we started and still own.
        unsafe {
            libc::kill(pid as i32, sig);
        }
    }

    /// Starts again after `stop`, in the same directory and on the same ports.
    pub fn restart_stopped(&mut self) {
        self.child = Some(self.spawn());
        self.wait_ready();
    }

    /// Stops with SIGTERM and starts again in the same directory and ports.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "clean exit ({status:?}): {}",
            self.stderr()
        );
        self.child = Some(self.spawn());
        self.wait_ready();
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        http_request(self.http, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str) -> Reply {
        self.request("POST", path, &[], b"")
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, &[], b"")
    }

    /// The service object, or None on 404.
    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        let r = self.get(&format!("/api/services/{name}"));
        (r.status == 200).then(|| r.json()["service"].clone())
    }

    pub fn udp(&self, payload: &str) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.send_to(payload.as_bytes(), ("127.0.0.1", self.statsd))
            .expect("send");
    }

    pub fn tcp(&self, payload: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.statsd)).expect("tcp");
        s.write_all(payload.as_bytes()).expect("write");
    }

    /// The statsd address (UDP and TCP).
    pub fn statsd_addr(&self) -> (&'static str, u16) {
        ("127.0.0.1", self.statsd)
    }

    /// A value of `/metrics` (0 when it is not there).
    pub fn metric(&self, name: &str) -> f64 {
        self.get("/metrics")
            .body
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Polls until `f` holds or 5 s pass.
    pub fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it holds or `secs` pass; panics naming `what`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A plain HTTP/1.1 request with `Connection: close`, so the test sees the
/// exact status, headers and body bytes the daemon sends.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("complete response");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .expect("status line")
        .split(' ')
        .nth(1)
        .expect("code")
        .parse()
        .expect("number");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Runs the binary with `args` in `dir` and returns (status, stderr). A
/// binary that is still running after 20 s (a daemon that started when
/// the test expected it to refuse) is killed and the test fails.
pub fn run_binary(dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let stderr_file = tempfile::NamedTempFile::new().expect("stderr file");
    let stderr_path = stderr_file.path().to_path_buf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().expect("stderr file"))
        .spawn()
        .expect("run lovebeat");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lovebeat {args:?} still ran after 20 s: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (status, stderr)
}
