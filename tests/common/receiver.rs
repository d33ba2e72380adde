//! A real HTTP server for alert tests: records every request and answers
//! with the status the test chooses (or never answers, to simulate a hang).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }
}

/// The server; stops accepting when dropped (its thread ends with the test).
pub struct Receiver {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// A copy of what was received so far.
    pub fn got(&self) -> Vec<Received> {
        self.requests.lock().expect("lock").clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    /// `status(n)` is the answer to the n-th request (0-based); `None` never
    /// answers.
    pub fn start(status: impl Fn(usize) -> Option<u16> + Send + Sync + 'static) -> Receiver {
        Receiver::start_with_delay(Duration::ZERO, status)
    }

    /// As `start`, answering each request `delay` after it arrived.
    pub fn start_with_delay(
        delay: Duration,
        status: impl Fn(usize) -> Option<u16> + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_with_headers(delay, move |n| status(n).map(|s| (s, String::new())))
    }

    /// As `start_with_delay`, `answer(n)` giving the status and extra
    /// header lines (each ending in `\r\n`, e.g. `Retry-After: 3\r\n`).
    pub fn start_with_headers(
        delay: Duration,
        answer: impl Fn(usize) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_with_answer(delay, move |n| {
            answer(n).map(|(code, headers)| (code, headers, "{}".to_string()))
        })
    }

    /// As `start_with_headers`, `answer(n)` also giving the body.
    pub fn start_with_answer(
        delay: Duration,
        answer: impl Fn(usize) -> Option<(u16, String, String)> + Send + Sync + 'static,
    ) -> Receiver {
        let status = answer;
        // From `free_port`, so never a port a stopped daemon of the same
        // test binary will listen on again; another, should a socket of
        // another process (an ephemeral port) take it between the check
        // and this bind.
        let listener = (0..50)
            .find_map(|_| TcpListener::bind(("127.0.0.1", super::free_port())).ok())
            .expect("bind a receiver port");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (reqs, status) = (requests.clone(), Arc::new(status));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reqs, status) = (reqs.clone(), status.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = reader.read_exact(&mut body);
                    let n = {
                        let mut r = reqs.lock().expect("lock");
                        r.push(Received {
                            method,
                            path,
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            at: Instant::now(),
                        });
                        r.len() - 1
                    };
                    let mut stream = stream;
                    std::thread::sleep(delay);
                    match status(n) {
                        Some((code, extra, body)) => {
                            let _ = write!(stream, "HTTP/1.1 {code} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        }
                        None => std::thread::sleep(Duration::from_secs(60)),
                    }
                });
            }
        });
        Receiver { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits up to `secs` for `n` requests; returns them all.
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.got();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
