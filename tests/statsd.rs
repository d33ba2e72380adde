//! statsd over UDP and TCP (README, "Sending beats") against the real binary.

mod common;

use std::io::Write;

use common::Daemon;

#[test]
fn udp_datagram_with_many_lines_applies_each_and_skips_bad_ones() {
    let d = Daemon::start("");
    d.udp("u1.beat:1|c\nu2.timeout:60|g\r\nBAD.beat:1|c\nu3.autobeat:1|c|@0.5|#env:prod\nu4.bogus:1|c\n");
    d.eventually("lines applied", || d.service("u3").is_some());
    assert!(
        d.service("u1").expect("u1")["last_beat"]
            .as_i64()
            .expect("ms")
            > 0
    );
    let u2 = d.service("u2").expect("u2");
    assert_eq!(
        (u2["timeout"].as_i64(), u2["last_beat"].as_i64()),
        (Some(60_000), Some(-1))
    );
    assert_eq!(d.service("u3").expect("u3")["timeout"], -2);
    assert!(d.service("u4").is_none());
    assert_eq!(
        d.get("/api/services").json()["services"]
            .as_array()
            .expect("list")
            .len(),
        3
    );
}

#[test]
fn large_udp_datagram_is_read_whole() {
    let d = Daemon::start("");
    let payload: String = (0..2000)
        .map(|i| format!("big.s{i:04}.beat:1|c\n"))
        .collect();
    assert!(payload.len() > 30_000);
    d.udp(&payload);
    d.eventually("all 2000 services", || d.service("big.s1999").is_some());
    assert_eq!(
        d.get("/api/services").json()["services"]
            .as_array()
            .expect("list")
            .len(),
        2000
    );
}

#[test]
fn tcp_connection_carries_many_lines_and_a_final_unterminated_one() {
    let d = Daemon::start("");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.statsd)).expect("tcp");
    for i in 0..100 {
        writeln!(s, "t{i}.beat:1|c").expect("write");
    }
    s.write_all(b"last.timeout:5|g").expect("write");
    drop(s);
    d.eventually("last line", || d.service("last").is_some());
    assert_eq!(d.service("last").expect("last")["timeout"], 5000);
    assert!(d.service("t99").is_some());
}

#[test]
fn tcp_line_over_64k_closes_the_connection() {
    let d = Daemon::start("");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.statsd)).expect("tcp");
    s.write_all(b"before.beat:1|c\n").expect("write");
    let junk = vec![b'a'; 200 * 1024];
    // The daemon may close while we are still writing: that is the point.
    let _ = s.write_all(&junk);
    let _ = s.write_all(b"\nafter.beat:1|c\n");
    drop(s);
    d.eventually("first line", || d.service("before").is_some());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(d.service("after").is_none());
    // The daemon is still fine.
    d.tcp("again.beat:1|c\n");
    d.eventually("new connection works", || d.service("again").is_some());
}

/// A UDP socket on 127.0.0.1:`port` with `SO_REUSEPORT`, as another
/// program of the same user (or a second lovebeat) would bind it: Linux
/// lets it share lovebeat's port and spreads the datagrams over both.
fn reuseport_socket(port: u16) -> socket2::Socket {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    sock.set_reuse_port(true).expect("SO_REUSEPORT");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    sock.bind(&addr.into()).expect("bind with SO_REUSEPORT");
    sock
}

#[test]
fn a_udp_port_another_process_holds_is_refused_at_start() {
    let port = common::free_port();
    let _other = reuseport_socket(port);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::base_config(common::free_port(), port, ""),
    )
    .expect("write config");
    let (status, stderr) = common::run_binary(
        dir.path(),
        &["--config", "lovebeat.cfg", "--config-dir", "conf.d"],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lovebeat: cannot listen for statsd on UDP")
            && last.contains(&format!("another process already holds UDP port {port}")),
        "{stderr}"
    );
}

#[test]
fn a_process_that_joins_the_udp_port_later_puts_lovebeat_self_udp_in_error() {
    let d = Daemon::start("");
    let other = reuseport_socket(d.statsd);
    common::wait_until(40, "lovebeat.self.udp in ERROR", || {
        d.service("lovebeat.self.udp")
            .is_some_and(|s| s["state"] == "error")
    });
    let s = d.service("lovebeat.self.udp").expect("lovebeat.self.udp");
    let output = s["last_failure"]["output"].as_str().unwrap_or_default();
    assert!(
        output.contains(&format!("shares statsd UDP port {}", d.statsd)),
        "{s}"
    );
    assert_eq!(d.metric("lovebeat_udp_foreign_sockets"), 1.0);
    assert!(
        d.stderr()
            .contains("another process shares statsd UDP port"),
        "{}",
        d.stderr()
    );
    drop(other);
    common::wait_until(40, "lovebeat.self.udp OK again", || {
        d.service("lovebeat.self.udp")
            .is_some_and(|s| s["state"] == "ok")
    });
    assert_eq!(d.metric("lovebeat_udp_foreign_sockets"), 0.0);
}

#[test]
fn statsd_timeout_then_beat_does_not_alarm() {
    let d = Daemon::start("[[alarms]]\nname = \"all\"\npattern = \"*\"\n");
    d.udp("job.timeout:2|g\njob.beat:1|c\n");
    d.eventually("job", || d.service("job").is_some());
    let a = d.get("/api/alarms/all").json();
    assert_eq!(a["alarm"]["state"], "ok");
    assert_eq!(a["alarm"]["incident_nbr"], 0);
}

/// SPEC §1.3 and §4.1: a timeout is kept to the millisecond on every path,
/// UDP, TCP and HTTP alike: `0.5` is 500 ms (not a tripwire), a positive
/// value under 1 ms is 1 ms, and `-0` is refused, not a tripwire.
#[test]
fn sub_second_timeouts_are_kept_to_the_millisecond_on_every_path() {
    let d = Daemon::start("");
    d.udp("sub.udp.beat:1|c\nsub.neg.beat:1|c\n");
    d.eventually("beats applied", || d.service("sub.neg").is_some());
    d.udp("sub.udp.timeout:0.5|g\nsub.tiny.timeout:0.0004|g\nsub.neg.timeout:-0|g\nsub.neg.timeout:-0.5|g\nsub.mark.beat:1|c\n");
    d.tcp("sub.tcp.timeout:2.5|g\n");
    d.eventually("lines applied", || {
        d.service("sub.mark").is_some() && d.service("sub.tcp").is_some()
    });
    let timeout = |name: &str| d.service(name).expect(name)["timeout"].clone();
    assert_eq!(timeout("sub.udp"), 500);
    assert_eq!(timeout("sub.tiny"), 1);
    assert_eq!(timeout("sub.tcp"), 2500);
    assert_eq!(timeout("sub.neg"), -1, "-0 is dropped, not a tripwire");
    assert_eq!(d.service("sub.neg").expect("sub.neg")["state"], "ok");
    // Over HTTP the same numbers read the same.
    assert_eq!(d.post("/api/services/sub.http?timeout=0.5").status, 200);
    assert_eq!(timeout("sub.http"), 500);
    assert_eq!(d.post("/api/services/sub.http2?timeout=0.0004").status, 200);
    assert_eq!(timeout("sub.http2"), 1);
    let r = d.post("/api/services/sub.http3?timeout=-0");
    assert_eq!(r.status, 400, "{}", r.body);
    let json = [("Content-Type", "application/json")];
    let r = d.request(
        "POST",
        "/api/services/sub.json",
        &json,
        b"{\"timeout\": 0.25}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(timeout("sub.json"), 250);
    let r = d.request(
        "POST",
        "/api/services/sub.json2",
        &json,
        b"{\"timeout\": -0}",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = d.request(
        "POST",
        "/api/services/sub.json",
        &json,
        b"{\"timeout\": 60}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(timeout("sub.json"), 60_000);
    // A JSON number reads as its text reads on the other paths, not as
    // the float it would round to (`1e-10`).
    for (body, ms) in [
        ("{\"timeout\": 0.0000000001}", 1),
        ("{\"timeout\": 9223372036854775.807}", i64::MAX),
        ("{\"timeout\": 0.0004}", 1),
    ] {
        let r = d.request("POST", "/api/services/sub.json3", &json, body.as_bytes());
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        assert_eq!(timeout("sub.json3"), ms, "{body}");
    }
    d.udp("sub.big.timeout:9223372036854775.807|g\nsub.big.beat:1|c\n");
    d.eventually("big timeout applied", || {
        d.service("sub.big")
            .is_some_and(|s| s["timeout"] == i64::MAX)
    });
    // Exponents and a leading sign or space are refused on every path:
    // statsd drops them, HTTP answers 400.
    for body in [
        "{\"timeout\": 1e3}",
        "{\"timeout\": 4e-4}",
        "{\"timeout\": \" 5\"}",
    ] {
        let r = d.request("POST", "/api/services/sub.exp", &json, body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
    }
    for query in ["timeout=1e3", "timeout=+5", "timeout=%205", "timeout=%2B5"] {
        let r = d.post(&format!("/api/services/sub.exp?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = d.request("POST", "/api/services/sub.exp", &form, b"timeout= 5");
    assert_eq!(r.status, 400, "{}", r.body);
    d.udp("sub.exp.timeout:+5|g\nsub.exp.timeout:1e3|g\nsub.exp2.beat:1|c\n");
    d.eventually("lines read", || d.service("sub.exp2").is_some());
    assert!(d.service("sub.exp").is_none(), "statsd took a bad timeout");
    // 500 ms after its beat the half-second service is ERROR by expiry, as
    // any timeout expires.
    d.eventually("sub.udp expired", || {
        d.service("sub.udp").expect("sub.udp")["state"] == "error"
    });
}
