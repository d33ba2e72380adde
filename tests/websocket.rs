//! `/ws` without a browser (README, "The web UI"): message shapes for each event type,
//! beat coalescing, a burst of expiries, and a client that never reads.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Daemon;
use fastwebsockets::{handshake, OpCode, WebSocket};
use http_body_util::Empty;
use hyper::header::{CONNECTION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

type Ws = WebSocket<TokioIo<Upgraded>>;

async fn connect(port: u16) -> Ws {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = Request::builder()
        .method("GET")
        .uri(format!("http://127.0.0.1:{port}/ws"))
        .header("Host", format!("127.0.0.1:{port}"))
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", handshake::generate_key())
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let (ws, resp) = handshake::client(&SpawnExecutor, req, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next JSON message, or `None` after `wait` without one.
async fn next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(wait, ws.read_frame())
            .await
            .ok()?
            .ok()?;
        match frame.opcode {
            OpCode::Text => {
                return Some(serde_json::from_slice(&frame.payload).expect("message is JSON"))
            }
            OpCode::Close => return None,
            _ => continue,
        }
    }
}

/// Reads messages until one has `type` = `kind`.
async fn expect(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(m) = next(ws, Duration::from_millis(200)).await {
            if m["type"] == kind {
                return m;
            }
            seen.push(m["type"].to_string());
        }
    }
    panic!("no {kind} message within 5 s; saw {seen:?}");
}

/// Sends `line(i)` for every i below `n` over UDP, 50 lines a datagram,
/// pausing every 1000 lines so the daemon's socket buffer never overflows.
async fn send_lines(port: u16, n: usize, line: impl Fn(usize) -> String) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for start in (0..n).step_by(50) {
        let payload: String = (start..n.min(start + 50)).map(|i| line(i) + "\n").collect();
        sock.send_to(payload.as_bytes(), ("127.0.0.1", port))
            .expect("send");
        if start % 1000 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

#[test]
fn each_change_has_its_message_shape() {
    let d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    runtime().block_on(async {
        let mut ws = connect(d.http).await;
        // Nothing is sent on connect.
        assert!(next(&mut ws, Duration::from_millis(400)).await.is_none());

        assert_eq!(d.post("/api/services/web.a?timeout=60").status, 200);
        let add = expect(&mut ws, "ADD_SERVICE").await;
        assert_eq!(add["service"]["name"], "web.a");
        assert_eq!(add["service"]["state"], "ok");
        assert_eq!(add["service"]["timeout"], 60000);
        assert_eq!(add["service"]["in_alarms"], serde_json::json!(["web"]));
        let alarm = expect(&mut ws, "ADD_ALARM").await;
        assert_eq!(alarm["alarm"]["name"], "web");
        assert!(alarm["alarm"]["incident_nbr"].is_u64());
        assert!(alarm["alarm"]["failed_services"].is_array());

        // A timeout change is an update.
        d.request(
            "POST",
            "/api/services/web.a",
            &[("Content-Type", "application/json")],
            b"{\"timeout\": 0, \"beat\": false}",
        );
        let up = expect(&mut ws, "UPDATE_SERVICE").await;
        assert_eq!(up["service"]["name"], "web.a");
        assert_eq!(up["service"]["state"], "error");
        let alarm = expect(&mut ws, "UPDATE_ALARM").await;
        assert_eq!(alarm["alarm"]["state"], "error");
        assert_eq!(
            alarm["alarm"]["failed_services"],
            serde_json::json!(["web.a"])
        );

        d.post("/api/services/web.a/mute");
        let up = expect(&mut ws, "UPDATE_SERVICE").await;
        assert_eq!(up["service"]["state"], "muted");
        assert!(up["service"]["muted_since"].as_i64().unwrap_or(0) > 0);

        d.delete("/api/services/web.a");
        let rm = expect(&mut ws, "REMOVE_SERVICE").await;
        assert_eq!(rm["service"]["name"], "web.a");

        assert_eq!(d.delete("/api/alarms/web").status, 200);
        let rm = expect(&mut ws, "REMOVE_ALARM").await;
        assert_eq!(rm["alarm"]["name"], "web");
    });
}

#[test]
fn an_accepted_beat_is_an_update_coalesced_per_service() {
    let d = Daemon::start("");
    let names: Vec<String> = (0..200).map(|i| format!("co.s{i}")).collect();
    for n in &names {
        d.udp(&format!("{n}.beat:1|c"));
    }
    d.eventually("200 services", || {
        d.get("/api/services").json()["services"]
            .as_array()
            .map_or(0, Vec::len)
            == 200
    });
    runtime().block_on(async {
        let mut ws = connect(d.http).await;
        // 2.5 s of beats to every service, as fast as the test sends them.
        let sender = {
            let names = names.clone();
            let port = d.statsd;
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
                let end = Instant::now() + Duration::from_millis(2500);
                let mut sent = 0u64;
                while Instant::now() < end {
                    for chunk in names.chunks(20) {
                        let payload: String =
                            chunk.iter().map(|n| format!("{n}.beat:1|c\n")).collect();
                        let _ = sock.send_to(payload.as_bytes(), ("127.0.0.1", port));
                        sent += chunk.len() as u64;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                sent
            })
        };
        let mut at: HashMap<String, Vec<Instant>> = HashMap::new();
        let end = Instant::now() + Duration::from_millis(3200);
        while Instant::now() < end {
            if let Some(m) = next(&mut ws, Duration::from_millis(100)).await {
                assert_eq!(m["type"], "UPDATE_SERVICE", "only beats happen here: {m}");
                let name = m["service"]["name"].as_str().expect("name").to_string();
                at.entry(name).or_default().push(Instant::now());
            }
        }
        let sent = sender.join().expect("sender");
        assert!(sent > 20_000, "the burst was a burst: {sent} lines");
        // Every service was seen beating, and none more often than once per
        // 250 ms (accepted beats are themselves at most one a second).
        assert_eq!(at.len(), names.len(), "every beaten service had an update");
        for (name, times) in &at {
            assert!(times.len() <= 4, "{name}: {} updates in 3.2 s", times.len());
            for w in times.windows(2) {
                let gap = w[1] - w[0];
                assert!(
                    gap >= Duration::from_millis(200),
                    "{name}: updates {gap:?} apart"
                );
            }
        }
    });
}

#[test]
fn ten_thousand_expiring_together_reach_the_client() {
    let d = Daemon::start("");
    let n = 10_000;
    runtime().block_on(async {
        let mut ws = connect(d.http).await;
        send_lines(d.statsd, n, |i| format!("burst.s{i}.timeout:1|g")).await;
        // Creation, then all of them go ERROR about a second later.
        let mut added = 0;
        let mut errors = 0;
        let mut resync = false;
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline && errors < n && !resync {
            match next(&mut ws, Duration::from_millis(500)).await {
                Some(m) if m["type"] == "ADD_SERVICE" => added += 1,
                Some(m) if m["type"] == "UPDATE_SERVICE" && m["service"]["state"] == "error" => {
                    errors += 1
                }
                Some(m) if m["type"] == "RESYNC" => resync = true,
                _ => {}
            }
        }
        // Either every change arrived, or the client was told to reload.
        assert!(
            resync || (added == n && errors == n),
            "added {added}, errors {errors}, no RESYNC"
        );
    });
    d.eventually("all in error", || {
        d.request("GET", "/api/status", &[("Accept", "application/json")], b"")
            .json()["num_error"]
            == n
    });
}

#[test]
fn a_client_that_never_reads_does_not_slow_beats() {
    let d = Daemon::start("");
    // A raw upgrade whose socket is never read again: its buffers fill.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    use std::io::{Read, Write};
    stuck
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("write");
    let mut head = [0u8; 12];
    stuck.read_exact(&mut head).expect("101");
    assert_eq!(&head, b"HTTP/1.1 101");
    runtime().block_on(async {
        let mut live = connect(d.http).await;
        // 60 000 new services: 60 000 messages for each client, far more
        // than a client queue holds.
        let total = 60_000;
        let started = Instant::now();
        send_lines(d.statsd, total, |i| format!("stuck.s{i}.beat:1|c")).await;
        let mut count = 0;
        while started.elapsed() < Duration::from_secs(10) {
            count = d.get("/api/services").json()["services"]
                .as_array()
                .map_or(0, Vec::len);
            if count == total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count, total, "every beat applied while a client is stuck");
        // The reading client got changes (or was told to resync), and the
        // daemon still answers.
        let m = next(&mut live, Duration::from_secs(2))
            .await
            .expect("a message");
        assert!(m["type"] == "ADD_SERVICE" || m["type"] == "RESYNC", "{m}");
        let metrics = d.get("/metrics").body;
        assert!(
            metrics.contains("lovebeat_websocket_clients 2"),
            "{metrics}"
        );
        let resyncs: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("lovebeat_websocket_resyncs_total "))
            .and_then(|v| v.parse().ok())
            .expect("resync counter");
        assert!(resyncs >= 1, "the stuck client was sent RESYNC");
    });
    drop(stuck);
}

#[test]
fn a_child_alarm_hears_when_its_parent_holds_its_alerts() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"net\"\npattern = \"net.*\"\n[[alarms]]\nname = \"srv\"\npattern = \"srv.*\"\ndepends_on = [\"net\"]\n",
    );
    d.post("/api/services/net.router?timeout=3600");
    d.post("/api/services/srv.web?timeout=3600");
    runtime().block_on(async {
        let mut ws = connect(d.http).await;
        d.post("/api/services/net.router?timeout=0");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut held = None;
        while Instant::now() < deadline && held.is_none() {
            if let Some(m) = next(&mut ws, Duration::from_millis(200)).await {
                if m["type"] == "UPDATE_ALARM" && m["alarm"]["name"] == "srv" {
                    held = Some(m);
                }
            }
        }
        let m = held.expect("an UPDATE_ALARM for the child");
        assert_eq!(m["alarm"]["state"], "ok");
        assert_eq!(m["alarm"]["suppressed_by"], serde_json::json!(["net"]));
        d.post("/api/services/net.router?timeout=3600");
        let m = loop {
            let m = expect(&mut ws, "UPDATE_ALARM").await;
            if m["alarm"]["name"] == "srv" {
                break m;
            }
        };
        assert!(m["alarm"].get("suppressed_by").is_none(), "{m}");
    });
}

/// SPEC §8: an alarm whose members fail one after another sends at most one
/// `UPDATE_ALARM` per 250 ms, the last state winning, and the client still
/// ends with the whole failed list. Each member's failure used to send the
/// alarm's whole list (quadratic: 100 000 members sent gigabytes).
#[test]
fn a_big_alarm_failing_member_by_member_is_one_update_per_tick() {
    let d = Daemon::start("[[alarms]]\nname = \"all\"\npattern = \"big.*\"\n");
    let n = 3_000;
    runtime().block_on(async {
        // The members, beating, with a timeout long enough to connect.
        send_lines(d.statsd, n, |i| format!("big.s{i}.beat:1|c")).await;
        d.eventually("members created", || {
            d.request("GET", "/api/status", &[("Accept", "application/json")], b"")
                .json()["num_ok"]
                == n
        });
        let mut ws = connect(d.http).await;
        // They fail over about 1.5 s: ten groups of timeouts, 150 ms apart.
        let started = Instant::now();
        for g in 0..10 {
            send_lines(d.statsd, n / 10, |i| {
                format!("big.s{}.timeout:0|g", g * (n / 10) + i)
            })
            .await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let mut updates = 0;
        let mut last_failed = 0;
        let mut resync = false;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && last_failed < n {
            match next(&mut ws, Duration::from_millis(500)).await {
                Some(m) if m["type"] == "UPDATE_ALARM" && m["alarm"]["name"] == "all" => {
                    updates += 1;
                    last_failed = m["alarm"]["failed_services"].as_array().map_or(0, Vec::len);
                }
                Some(m) if m["type"] == "RESYNC" => resync = true,
                _ => {}
            }
        }
        let took = started.elapsed();
        assert!(!resync, "a reading client is not sent RESYNC");
        assert_eq!(last_failed, n, "the last update carries the whole list");
        // One per 250 ms tick at most, over the time the failures took, plus
        // the tick each end may add.
        let bound = (took.as_millis() / 250) as usize + 2;
        assert!(
            updates <= bound,
            "{updates} UPDATE_ALARM messages in {took:?} (at most {bound})"
        );
    });
}

/// A maintenance window opening or closing changes no state, yet the UI
/// shows it on the alarm: the hub looks every second and sends the alarms
/// an UPDATE_ALARM when the open windows changed (README, "Maintenance
/// windows").
#[test]
fn an_alarm_hears_when_a_maintenance_window_opens_and_closes() {
    let d = Daemon::start("[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n");
    d.post("/api/services/db.main?timeout=3600");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as i64)
        .unwrap_or(0);
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    runtime().block_on(async {
        let mut ws = connect(d.http).await;
        let body = serde_json::json!({"name": "w", "alarms": ["db"], "start": at(now + 2000), "end": at(now + 6000)});
        let r = d.request("POST", "/api/maintenance", &[], body.to_string().as_bytes());
        assert_eq!(r.status, 201, "{}", r.body);
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && seen.len() < 2 {
            if let Some(m) = next(&mut ws, Duration::from_millis(200)).await {
                if m["type"] == "UPDATE_ALARM" && m["alarm"]["name"] == "db" {
                    let shown = m["alarm"].get("maintenance").cloned();
                    if seen.last() != Some(&shown) {
                        seen.push(shown);
                    }
                }
            }
        }
        assert_eq!(
            seen,
            [Some(serde_json::json!(["w"])), None],
            "opened, then closed"
        );
    });
}
