//! `[limits]` against the real binary: what a client can make lovebeat
//! hold is bounded, and at every bound the API keeps answering (README,
//! "Limits"; docs/RELIABILITY.md).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon};

/// True once the server closed `s` (a read gives end of file or a reset),
/// waiting up to `secs`.
fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Gives `d` `n` services with 10 kB of failure output each: a list of
/// them is far more than the sockets buffer.
fn big_table(d: &Daemon, n: usize) {
    let output = vec![b'x'; 10_000];
    for i in 0..n {
        let r = d.request(
            "POST",
            &format!("/api/services/big.s{i}/fail"),
            &[],
            &output,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn limits(d: &str) -> String {
    format!("[limits]\n{d}\n")
}

#[test]
fn a_half_sent_request_and_an_idle_keep_alive_are_closed_in_time() {
    let d = Daemon::start(&limits(
        "http_header_timeout = \"1s\"\nhttp_idle_timeout = \"2s\"\nhttp_body_timeout = \"1s\"",
    ));
    let mut half = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    half.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127")
        .expect("write");
    let start = Instant::now();
    assert!(closed_within(&mut half, 5), "slow headers are cut");
    assert!(start.elapsed() >= Duration::from_millis(800));

    let mut idle = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    idle.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    let start = Instant::now();
    assert!(closed_within(&mut idle, 6), "an idle keep-alive is closed");
    assert!(start.elapsed() >= Duration::from_millis(1500));

    // A body that stops coming is a 408.
    let mut slow = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    slow.write_all(
        b"POST /api/services/slow.body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"timeout\"",
    )
    .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(d.service("slow.body").is_none());
}

#[test]
fn at_the_http_cap_the_longest_waiting_connection_makes_room_and_the_api_answers() {
    let d = Daemon::start(&limits("max_http_connections = 8"));
    let mut held: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
            s.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .expect("write");
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect();
    // A ninth client is answered: one of the idle ones gave way.
    let r = d.get("/api/status");
    assert_eq!(r.status, 200);
    assert!(
        closed_within(&mut held[0], 3),
        "the connection that waited longest was closed"
    );
    assert!(d.metric("lovebeat_http_connections") <= 8.0);
}

#[test]
fn a_whole_table_answer_being_sent_is_not_closed_to_make_room() {
    let d = Daemon::start(&limits("max_http_connections = 2"));
    // 600 services with 10 kB of output each: a 6 MB list, more than the
    // sockets buffer, so its answer is still being written below.
    big_table(&d, 600);
    let mut list = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    list.write_all(b"GET /api/services HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(500));
    // Two more clients at a cap of two: the list's connection, written
    // to longest ago but still answering, is not the one that gives way.
    let mut idle = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    idle.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.get("/version").status, 200);
    assert!(closed_within(&mut idle, 3), "the idle keep-alive gave way");
    list.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = list.read_to_end(&mut got);
    assert!(got.len() > 6_000_000, "{} bytes", got.len());
    assert!(
        got.ends_with(b"}\n\r\n0\r\n\r\n"),
        "the whole list, to its last chunk"
    );
}

#[test]
fn a_client_that_stops_reading_a_whole_table_answer_is_closed_when_idle() {
    let d = Daemon::start(&limits("http_idle_timeout = \"2s\""));
    big_table(&d, 600);
    let mut stalled = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    stalled
        .write_all(b"GET /api/services HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    // Nothing is read: once the sockets are full nothing moves, and the
    // connection is idle, streamed answer or not.
    let start = Instant::now();
    wait_until(10, "the stalled connection closed", || {
        d.metric("lovebeat_http_connections_closed_total") >= 1.0
    });
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(d.metric("lovebeat_http_connections") <= 1.0);
}

#[test]
fn at_the_statsd_tcp_cap_a_stalled_connection_makes_room_for_a_new_sender() {
    let d = Daemon::start(&limits("max_tcp_connections = 3"));
    // A sender that keeps its connection and sends whole lines.
    let mut steady = TcpStream::connect(d.statsd_addr()).expect("connect");
    steady.write_all(b"steady.one.beat:1|c\n").expect("write");
    wait_until(10, "the steady sender's line", || {
        d.service("steady.one").is_some()
    });
    // Two that send a byte and never end their line.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(d.statsd_addr()).expect("connect");
            s.write_all(b"x").expect("write");
            // Accepted one after the other, so the first is the oldest.
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect();
    wait_until(10, "three connections counted", || {
        d.metric("lovebeat_tcp_connections_total") >= 3.0
    });
    // The steady one sends again: the stalled ones have gone longest
    // without a whole line.
    steady.write_all(b"steady.one.beat:1|c\n").expect("write");
    wait_until(10, "the steady sender's second line", || {
        d.metric("lovebeat_lines_accepted_total") >= 2.0
    });
    // At the cap, a new sender's beat gets through...
    let mut fresh = TcpStream::connect(d.statsd_addr()).expect("connect");
    fresh.write_all(b"fresh.one.beat:1|c\n").expect("write");
    wait_until(10, "the new sender's beat", || {
        d.service("fresh.one").is_some()
    });
    // ... because the first stalled connection gave way.
    assert!(closed_within(&mut stalled[0], 10), "the stalled one closed");
    assert!(!closed_within(&mut steady, 1), "the steady one stays");
    steady.write_all(b"steady.two.beat:1|c\n").expect("write");
    wait_until(10, "the steady sender still heard", || {
        d.service("steady.two").is_some()
    });
    assert!(d.metric("lovebeat_tcp_connections_evicted_total") >= 1.0);
    // And someone is told.
    wait_until(30, "lovebeat.self.tcp in ERROR", || {
        d.service("lovebeat.self.tcp")
            .is_some_and(|s| s["state"] == "error")
    });
    let output = d.service("lovebeat.self.tcp").expect("there")["last_failure"]["output"].clone();
    assert!(
        output
            .as_str()
            .unwrap_or("")
            .contains("max_tcp_connections"),
        "{output}"
    );
}

/// Opens a POST whose headers promise a 1 000-byte body, waits until its
/// handler asks for the body (`Expect: 100-continue` makes that visible),
/// and sends one byte of it.
fn slow_body(d: &Daemon, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    write!(
        s,
        "POST /api/services/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("100 Continue");
        got.push(byte[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 100"), "{got:?}");
    s.write_all(b"{").expect("write");
    s
}

#[test]
fn at_the_http_cap_slow_bodies_make_room_and_the_api_answers() {
    // No minimum rate here: the cap alone must make room.
    let d = Daemon::start(&limits(
        "max_http_connections = 4\nhttp_body_timeout = \"120s\"\nhttp_body_min_rate = 0",
    ));
    let mut held: Vec<TcpStream> = (0..4)
        .map(|i| {
            let s = slow_body(&d, &format!("slow.s{i}"));
            std::thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    // Every place is a handler waiting for its body: a new client is
    // still answered, promptly, and so is a beat.
    let start = Instant::now();
    assert_eq!(d.get("/api/status").status, 200);
    assert_eq!(d.post("/api/services/fresh.beat").status, 200);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(d.service("fresh.beat").is_some());
    // The body that waited longest gave way first. (Which made room for
    // the beat depends on whether the status request's connection was
    // still registered then: it was idle, and would go before a body.)
    assert!(closed_within(&mut held[0], 5), "the first slow body closed");
    // One close at least: the beat's place may be the one the status
    // request's connection left, if it was gone by then.
    assert!(d.metric("lovebeat_http_connections_closed_total") >= 1.0);
    assert!(d.service("slow.s0").is_none());
}

#[test]
fn a_body_slower_than_http_body_min_rate_is_a_408_a_faster_one_is_read() {
    let d = Daemon::start(&limits(
        "http_body_timeout = \"120s\"\nhttp_body_min_rate = 500",
    ));
    // Ten bytes of a 1 000-byte body in its first second, then nothing
    // (a body still trickling when the answer comes could have the close
    // reset, losing the answer): under 500 bytes/s once the grace is over.
    let mut slow = slow_body(&d, "slow.body");
    let start = Instant::now();
    for _ in 0..9 {
        std::thread::sleep(Duration::from_millis(100));
        slow.write_all(b" ").expect("write");
    }
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("http_body_min_rate"), "{answer}");
    assert!(start.elapsed() >= Duration::from_secs(2), "after its grace");
    assert!(d.service("slow.body").is_none());

    // 4 000 bytes at about 800 bytes/s, past the grace: read.
    let mut s = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    let body = format!("{{\"timeout\": 60, \"pad\": \"{}\"}}", "x".repeat(3970));
    write!(
        s,
        "POST /api/services/steady.body HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("write");
    for chunk in body.as_bytes().chunks(200) {
        s.write_all(chunk).expect("write");
        std::thread::sleep(Duration::from_millis(250));
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(d.service("steady.body").expect("made")["timeout"], 60_000);
}

#[test]
fn websockets_beyond_their_cap_get_a_503() {
    let d = Daemon::start(&limits("max_websockets = 2"));
    let upgrade = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut head = [0u8; 12];
        s.read_exact(&mut head).expect("status line");
        (s, String::from_utf8_lossy(&head).into_owned())
    };
    let (_a, first) = upgrade(d.http);
    let (_b, second) = upgrade(d.http);
    let (_c, third) = upgrade(d.http);
    assert_eq!(
        [first.as_str(), second.as_str(), third.as_str()],
        ["HTTP/1.1 101", "HTTP/1.1 101", "HTTP/1.1 503"]
    );
    assert_eq!(d.get("/api/status").status, 200);
}

#[test]
fn max_services_refuses_new_names_counts_them_and_reports_it() {
    let d = Daemon::start(&limits("max_services = 5\nmax_alarms = 2"));
    for i in 0..5 {
        assert_eq!(d.post(&format!("/api/services/cap.s{i}")).status, 200);
    }
    let r = d.post("/api/services/cap.s5");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("max_services"));
    d.udp("cap.s6.beat:1|c\ncap.s0.timeout:60|g\n");
    wait_until(5, "the existing service changed", || {
        d.service("cap.s0").is_some_and(|s| s["timeout"] == 60_000)
    });
    assert!(d.service("cap.s6").is_none());
    assert_eq!(d.metric("lovebeat_services_refused_total"), 2.0);
    // lovebeat's own services are never refused for lack of room.
    wait_until(15, "lovebeat.self.capacity in ERROR", || {
        d.service("lovebeat.self.capacity")
            .is_some_and(|s| s["state"] == "error")
    });
}

#[test]
fn template_alarms_stop_at_max_alarms() {
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"t-$n\"\npattern = \"t.$n\"\n{}",
        limits("max_alarms = 3")
    ));
    for i in 0..5 {
        d.post(&format!("/api/services/t.s{i}"));
    }
    let alarms = d.get("/api/alarms").json();
    let names: Vec<&str> = alarms["alarms"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .filter(|n| n.starts_with("t-"))
        .collect();
    assert_eq!(names.len(), 3, "{alarms}");
    assert_eq!(d.metric("lovebeat_alarms_refused_total"), 2.0);
    assert!(
        d.service("t.s4").is_some(),
        "the service exists all the same"
    );
    // A deleted alarm frees its place: the cap bounds the alarms listed,
    // not every alarm ever made.
    let gone = names[0].to_string();
    let member = gone.replacen("t-", "t.", 1);
    assert_eq!(d.delete(&format!("/api/services/{member}")).status, 200);
    assert_eq!(d.delete(&format!("/api/alarms/{gone}")).status, 200);
    // The place goes to the oldest service waiting for one (SPEC §5).
    assert_eq!(
        d.get("/api/alarms/t-s3").status,
        200,
        "a new alarm fits again"
    );
    d.post("/api/services/t.s10");
    assert_eq!(d.get("/api/alarms/t-s10").status, 404, "and the cap holds");
    assert_eq!(d.get("/api/alarms/t-s4").status, 404, "for orphans too");
}

#[test]
fn lovebeats_own_names_cannot_be_made_or_changed_by_clients() {
    let d = Daemon::start("");
    let r = d.post("/api/services/lovebeat.self.save");
    assert_eq!(r.status, 403, "{}", r.body);
    d.udp("lovebeat.self.save.beat:1|c\nlovebeat.self.alerts.fail:1|c\nother.beat:1|c\n");
    wait_until(5, "the other line", || d.service("other").is_some());
    assert!(d.service("lovebeat.self.save").is_none());
    assert!(d.service("lovebeat.self.alerts").is_none());
    assert_eq!(d.delete("/api/services/lovebeat.self.save").status, 403);
}

#[test]
fn whole_table_answers_beyond_max_http_lists_get_a_503_and_a_slow_reader_is_cut() {
    let d = Daemon::start(&limits("max_http_lists = 1\nhttp_list_timeout = \"1s\""));
    // 3 000 services with 10 kB of failure output each: a 30 MB list,
    // far more than the sockets buffer; read slower than
    // http_list_min_rate (1 MB/s) after 1 s, it is cut.
    big_table(&d, 3000);
    let mut slow = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    slow.write_all(b"GET /api/services HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(300));
    // The only place is taken: a second whole-table answer is refused.
    let busy = d.get("/api/alarms");
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert!(
        busy.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_http_lists")),
        "{}",
        busy.body
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(d.get("/api/status").status, 200, "the rest answers");
    // Read 16 kB every 100 ms (never stalled for 30 s): cut at the
    // deadline. The daemon lets go then; the reader still drains what the
    // sockets hold, and finds the chunked body unfinished.
    let cut = Arc::new(AtomicBool::new(false));
    let reader = {
        let cut = cut.clone();
        std::thread::spawn(move || {
            slow.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match slow.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if !cut.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            got
        })
    };
    let start = Instant::now();
    wait_until(15, "the slow answer cut", || {
        d.metric("lovebeat_http_lists_cut_total") == 1.0
    });
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "cut {:?} after the deadline of about 4 s",
        start.elapsed()
    );
    cut.store(true, Ordering::Relaxed);
    assert_eq!(d.metric("lovebeat_http_lists_refused_total"), 1.0);
    // The place is free again (the thread gives it back as it counts the
    // cut).
    let mut whole = None;
    wait_until(5, "a place for a list", || {
        let r = d.get("/api/services");
        let free = r.status == 200;
        whole = free.then_some(r);
        free
    });
    let whole = whole.expect("a whole list");
    assert_eq!(
        whole.json()["services"].as_array().map(Vec::len),
        Some(3000)
    );
    let got = reader.join().expect("reader");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < 30_000_000, "{}", got.len());
    assert!(
        !got.ends_with(b"0\r\n\r\n"),
        "a cut answer is not a whole one"
    );
}

/// SPEC §5 and README "Limits": a service that could not join its alarm at
/// `max_alarms` is an orphan: `lovebeat.self.capacity` stays ERROR while
/// any waits (with their count, also in `/metrics`), and a freed place
/// makes its alarm, which it joins in its current state, with alerts.
#[test]
fn orphans_beyond_max_alarms_stay_visible_and_join_when_a_place_frees() {
    let rx = common::receiver::Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"t-$n\"\npattern = \"t.$n\"\nalerts = [\"ops\"]\n[alerts.ops]\nwebhook = \"{}\"\n{}",
        rx.url("/hook"),
        limits("max_alarms = 2")
    ));
    for path in ["t.a", "t.b", "t.c?timeout=0", "t.d"] {
        assert_eq!(d.post(&format!("/api/services/{path}")).status, 200);
    }
    assert_eq!(d.get("/api/alarms/t-c").status, 404);
    assert_eq!(d.metric("lovebeat_orphaned_services"), 2.0);
    let capacity = |d: &Daemon| d.service("lovebeat.self.capacity").unwrap_or_default();
    wait_until(20, "lovebeat.self.capacity in ERROR", || {
        capacity(&d)["state"] == "error"
    });
    let why = capacity(&d)["last_failure"]["output"].to_string();
    assert!(why.contains("2 services wait"), "{why}");
    // It stays ERROR past the checks that find no new refusal (one every
    // 10 s; before, it cleared two or three checks after the last refusal):
    // the orphans are still there.
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let s = capacity(&d);
        assert_eq!(s["state"], "error", "capacity cleared with orphans: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A freed place goes to the oldest orphan, in ERROR: its alarm is ERROR
    // and alerts.
    assert_eq!(d.delete("/api/services/t.a").status, 200);
    assert_eq!(d.delete("/api/alarms/t-a").status, 200);
    let c = d.get("/api/alarms/t-c");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.json()["alarm"]["state"], "error", "{}", c.body);
    let alerted = |alarm: &'static str| {
        let rx = &rx;
        move || {
            rx.got()
                .iter()
                .any(|r| r.json()["name"] == alarm && r.json()["to_state"] == "error")
        }
    };
    wait_until(15, "the alert of t-c", alerted("t-c"));
    assert_eq!(d.metric("lovebeat_orphaned_services"), 1.0);
    // The next place goes to t.d, and a failure of it raises its alarm.
    assert_eq!(d.delete("/api/services/t.b").status, 200);
    assert_eq!(d.delete("/api/alarms/t-b").status, 200);
    assert_eq!(d.get("/api/alarms/t-d").status, 200);
    let r = d.request("POST", "/api/services/t.d/fail", &[], b"broken");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(15, "the alert of t-d", alerted("t-d"));
    assert_eq!(d.metric("lovebeat_orphaned_services"), 0.0);
    wait_until(30, "lovebeat.self.capacity back to OK", || {
        capacity(&d)["state"] == "ok"
    });
}

/// Gives `d` `n` services over statsd TCP (which loses nothing), and
/// waits until they are all there.
fn many_services(d: &Daemon, n: usize) {
    let mut lines = String::with_capacity(n * 24);
    for i in 0..n {
        lines.push_str(&format!("many.s{i}.beat:1|c\n"));
    }
    d.tcp(&lines);
    wait_until(60, "the services made", || {
        d.metric("lovebeat_services{state=\"ok\"}") >= n as f64
    });
}

/// Opens `GET path` on a connection from `source` (any 127.x address:
/// loopback answers them all) and reads nothing yet.
fn open_list(d: &Daemon, source: [u8; 4], path: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from = std::net::SocketAddr::from((source, 0));
    sock.bind(&from.into()).expect("bind the source");
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], d.http));
    sock.connect(&to.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    s
}

/// Reads `s` until the server closes it, `chunk` bytes then `pause`
/// each time until `hurry` is set (`pause` zero: as fast as it comes),
/// for at most `secs`.
fn read_until_closed(
    mut s: TcpStream,
    chunk: usize,
    pause: Duration,
    hurry: &AtomicBool,
    secs: u64,
) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    while start.elapsed() < Duration::from_secs(secs) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if !pause.is_zero() && !hurry.load(Ordering::Relaxed) {
            std::thread::sleep(pause);
        }
    }
    got
}

/// Reads `s` whole, as fast as it comes, for at most `secs`.
fn read_all(s: TcpStream, secs: u64) -> Vec<u8> {
    read_until_closed(s, 64 * 1024, Duration::ZERO, &AtomicBool::new(false), secs)
}

#[test]
fn a_slow_reader_of_a_big_service_list_is_cut_at_the_min_rate_a_fast_one_gets_it_all() {
    // 60 000 services (about 11 MB of JSON): with a deadline of 1 s plus
    // 1 ms per object, a reader at 80 kB/s kept its place for a minute;
    // held to the default 1 MB/s (http_list_min_rate) after its 1 s head
    // start, it is cut in seconds.
    let d = Daemon::start(&limits("http_list_timeout = \"1s\""));
    let n = 60_000;
    many_services(&d, n);
    let slow = open_list(&d, [127, 0, 0, 1], "/api/services");
    let start = Instant::now();
    let cut = Arc::new(AtomicBool::new(false));
    let reader = {
        let cut = cut.clone();
        std::thread::spawn(move || {
            read_until_closed(slow, 8 * 1024, Duration::from_millis(100), &cut, 120)
        })
    };
    wait_until(30, "the slow reader cut", || {
        d.metric("lovebeat_http_lists_cut_total") == 1.0
    });
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "cut after {:?}",
        start.elapsed()
    );
    // The reader drains what the sockets still hold, and finds the
    // chunked body unfinished.
    cut.store(true, Ordering::Relaxed);
    let got = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(!text.ends_with("0\r\n\r\n"), "a cut answer ends unfinished");
    assert!(
        !text.contains("\"now\""),
        "the whole list was sent: {} bytes",
        got.len()
    );
    // A reader that keeps up gets every service, whole.
    let whole = d.get("/api/services");
    assert_eq!(whole.status, 200, "{}", whole.body);
    let listed = whole.json()["services"].as_array().map_or(0, |s| {
        s.iter()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("many.")))
            .count()
    });
    assert_eq!(listed, n);
    assert_eq!(d.metric("lovebeat_http_lists_cut_total"), 1.0);
}

#[test]
fn one_client_cannot_take_every_list_place() {
    // Four places (max_http_lists), two of them for one client
    // (max_http_lists_per_client), as by default: its third list is
    // refused while it holds two, another client's is answered whole.
    let d = Daemon::start("");
    big_table(&d, 3000);
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| open_list(&d, [127, 0, 0, 1], "/api/services"))
        .collect();
    // Both answers are under way once their buffers are full.
    std::thread::sleep(Duration::from_millis(500));
    let third = read_all(open_list(&d, [127, 0, 0, 1], "/api/alarms"), 30);
    let third = String::from_utf8_lossy(&third);
    assert!(
        third.starts_with("HTTP/1.1 503"),
        "{}",
        &third[..third.len().min(300)]
    );
    assert!(third.contains("max_http_lists_per_client"), "{third}");
    let other = read_all(open_list(&d, [127, 0, 0, 2], "/api/services"), 60);
    let other = String::from_utf8_lossy(&other);
    assert!(
        other.starts_with("HTTP/1.1 200"),
        "{}",
        &other[..other.len().min(300)]
    );
    assert!(other.contains("\"now\""), "another client's list is whole");
    assert_eq!(d.metric("lovebeat_http_lists_refused_total"), 1.0);
}
