//! A hostile client against the real binary: every route in every
//! disguised spelling with and without keys, keys that cannot be
//! misconfigured silently, requests forged by another site's page, and
//! the headers that keep the UI's page to itself.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{run_binary, Daemon};

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoKey,
    Reader,
    Writer,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    Read,
    Write,
}

/// Sends one request as raw bytes (the path exactly as given, no client
/// library to normalise it) and returns the status code alone, so a
/// websocket's 101 needs no reading of the stream after it.
fn status(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("status line");
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?} for {method} {path}"))
}

const WEBSOCKET: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// Every route: method, path, what it needs, and its answer once allowed.
/// The service `x` and the alarm `a` (with `x` in it) exist throughout.
const ROUTES: &[(&str, &str, Access, u16)] = &[
    ("GET", "/api/services", Access::Read, 200),
    ("GET", "/api/services/", Access::Read, 200),
    ("GET", "/api/services/x", Access::Read, 200),
    ("POST", "/api/services/x", Access::Write, 200),
    ("DELETE", "/api/services/gone", Access::Write, 200),
    ("POST", "/api/services/x/mute", Access::Write, 200),
    ("POST", "/api/services/x/unmute", Access::Write, 200),
    ("POST", "/api/services/x/start", Access::Write, 200),
    ("POST", "/api/services/x/exit/0", Access::Write, 200),
    ("POST", "/api/services/y/fail", Access::Write, 200),
    ("GET", "/api/alarms", Access::Read, 200),
    ("GET", "/api/alarms/a", Access::Read, 200),
    ("DELETE", "/api/alarms/a", Access::Write, 409),
    ("GET", "/api/alarms/a/status", Access::Read, 200),
    ("GET", "/api/status", Access::Read, 200),
    ("GET", "/metrics", Access::Read, 200),
    ("GET", "/ws", Access::Read, 101),
    ("GET", "/badge/a.svg", Access::Open, 200),
    ("GET", "/version", Access::Open, 200),
    ("GET", "/", Access::Open, 200),
    ("GET", "/app.js", Access::Open, 200),
];

/// The same path written so that a parser that normalises it, or one
/// that trims leading slashes, would read it as the route.
fn disguises(path: &str) -> Vec<String> {
    let rest = &path[1..];
    let (first, tail) = match rest.split_once('/') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    let mut d = vec![
        format!("//{rest}"),
        format!("///{rest}"),
        format!("/./{rest}"),
        format!("/../{rest}"),
        format!("/{rest}//"),
        format!("/%2F{rest}"),
    ];
    if let Some(c) = first.bytes().next() {
        // `/%61pi/services`: `a` escaped.
        let tail = tail.map(|t| format!("/{t}")).unwrap_or_default();
        d.push(format!("/%{c:02X}{}{tail}", &first[1..]));
    }
    if let Some(t) = tail {
        d.push(format!("/{first}//{t}"));
        d.push(format!("/{first}/./{t}"));
        d.push(format!("/{first}/../{first}/{t}"));
        d.push(format!("/{first}%2F{t}"));
    }
    d
}

/// A daemon with read and write keys and the alarm `a` of service `x`.
fn keyed_daemon() -> Daemon {
    Daemon::start_keyed("[[alarms]]\nname = \"a\"\npattern = \"x\"\n")
}

#[test]
fn every_route_in_every_spelling_with_and_without_keys() {
    let d = keyed_daemon();
    let writer = [("Authorization", "Bearer writer")];
    assert_eq!(status(d.http, "POST", "/api/services/x", &writer), 200);

    for &(method, path, access, allowed) in ROUTES {
        for caller in [Caller::NoKey, Caller::Reader, Caller::Writer] {
            let mut headers: Vec<(&str, &str)> = match caller {
                Caller::NoKey => vec![],
                Caller::Reader => vec![("Authorization", "Bearer reader")],
                Caller::Writer => vec![("Authorization", "Bearer writer")],
            };
            if path == "/ws" {
                headers.extend(WEBSOCKET);
            }
            let want = match (access, caller) {
                (Access::Open, _) | (_, Caller::Writer) | (Access::Read, Caller::Reader) => allowed,
                (Access::Write, Caller::Reader) => 403,
                (_, Caller::NoKey) => 401,
            };
            assert_eq!(
                status(d.http, method, path, &headers),
                want,
                "{method} {path} as {caller:?}"
            );
            for p in disguises(path) {
                assert_eq!(
                    status(d.http, method, &p, &headers),
                    400,
                    "{method} {p} as {caller:?}"
                );
            }
        }
    }
    // A disguised delete of a service that exists deletes nothing.
    for p in disguises("/api/services/x") {
        assert_eq!(status(d.http, "DELETE", &p, &writer), 400, "{p}");
    }
    // Other methods and an absolute-form target: the same rules.
    assert_eq!(status(d.http, "HEAD", "/api/services", &[]), 401);
    assert_eq!(status(d.http, "OPTIONS", "/api/services", &[]), 401);
    assert_eq!(status(d.http, "PATCH", "/api/services/x", &[]), 401);
    let reader = [("Authorization", "Bearer reader")];
    assert_eq!(status(d.http, "PATCH", "/version", &reader), 403);
    assert_eq!(status(d.http, "PATCH", "/api/services/x", &writer), 405);
    assert_eq!(status(d.http, "HEAD", "/api/services", &reader), 200);
    assert_eq!(status(d.http, "HEAD", "/version", &[]), 200);
    assert_eq!(
        status(d.http, "DELETE", "http://127.0.0.1//api/services/x", &[]),
        400
    );
    assert_eq!(
        status(d.http, "DELETE", "http://127.0.0.1/api/services/x", &[]),
        401
    );
    assert_eq!(status(d.http, "GET", "/alarms/a", &[]), 303);
    // The disguised changes changed nothing: no service named by a
    // disguise exists, and `x` was never deleted.
    let list = common::http_request(d.http, "GET", "/api/services", &writer, b"").json();
    let mut names: Vec<String> = list["services"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["x", "y"]);
}

#[test]
fn disguised_paths_are_refused_without_any_keys_too() {
    let d = Daemon::start("");
    for p in [
        "//api/services/x",
        "/api/services/..",
        "/api/services/.",
        "/api/services/%78",
        "/api/services/x/../y",
    ] {
        let r = d.request("POST", p, &[], b"");
        assert_eq!(r.status, 400, "{p}");
        assert!(r.json()["error"].as_str().is_some(), "{p}: {}", r.body);
    }
    // A name of dots only is no name, over statsd too.
    assert_eq!(d.post("/api/services/...").status, 400);
    assert_eq!(d.post("/api/services/.x").status, 200);
    d.udp("...beat:1|c\nby.udp.beat:1|c\n");
    d.eventually("the valid line applied", || d.service("by.udp").is_some());
    let list = d.get("/api/services").json();
    let mut names: Vec<&str> = list["services"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, [".x", "by.udp"]);
}

#[test]
fn an_empty_or_padded_key_stops_the_start_naming_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (keys, want) in [
        (
            "write_keys = [\"w\", \"\"]",
            "write_keys: key 2 of 2 is empty",
        ),
        ("read_keys = [\"\"]", "read_keys: key 1 of 1 is empty"),
        ("read_keys = [\"r \"]", "read_keys: key 1 of 1 has spaces"),
    ] {
        std::fs::write(
            dir.path().join("keys.cfg"),
            format!("[http]\nlisten = \"127.0.0.1:0\"\n{keys}\n"),
        )
        .expect("cfg");
        let (status, stderr) = run_binary(
            dir.path(),
            &["--config", "keys.cfg", "--config-dir", "none"],
        );
        assert_eq!(status.code(), Some(2), "{keys}: {stderr}");
        assert!(stderr.contains(want), "{keys}: {stderr}");
    }
}

#[test]
fn read_keys_without_write_keys_warn_that_changes_need_none() {
    let d = Daemon::start_with_http("read_keys = [\"reader\"]", "");
    assert!(
        d.stderr()
            .contains("changes (beats, mutes, deletes) need none"),
        "{}",
        d.stderr()
    );
    let d = Daemon::start_keyed("");
    assert!(!d.stderr().contains("need none"), "{}", d.stderr());
}

#[test]
fn changes_forged_by_another_sites_page_are_refused() {
    let d = Daemon::start("");
    let evil = [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "http://127.0.0.1:1")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![
            ("Origin", "http://127.0.0.1"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ];
    for headers in &evil {
        for (method, path) in [
            ("POST", "/api/services/forged"),
            ("POST", "/api/services/forged/fail"),
            ("DELETE", "/api/services/forged"),
        ] {
            let r = d.request(method, path, headers, b"");
            assert_eq!(r.status, 403, "{method} {path} {headers:?}");
            assert!(r.json()["error"].as_str().is_some());
        }
        let mut ws = headers.clone();
        ws.extend(WEBSOCKET);
        assert_eq!(status(d.http, "GET", "/ws", &ws), 403, "{headers:?}");
        // Reads stay open to every page (the browser keeps their answers
        // from other sites).
        assert_eq!(d.request("GET", "/api/status", headers, b"").status, 200);
    }
    assert!(d.service("forged").is_none());
    // The UI's own requests, and clients that are not browsers, pass.
    let own = [
        ("Origin", "http://127.0.0.1"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    assert_eq!(
        d.request("POST", "/api/services/own", &own, b"").status,
        200
    );
    let mut ws = own.to_vec();
    ws.extend(WEBSOCKET);
    assert_eq!(status(d.http, "GET", "/ws", &ws), 101);
    assert_eq!(d.post("/api/services/curl").status, 200);
    // Behind a proxy the host the browser used is in X-Forwarded-Host.
    let proxied = [
        ("Origin", "https://status.example.com"),
        ("X-Forwarded-Host", "status.example.com"),
    ];
    assert_eq!(
        d.request("POST", "/api/services/proxied", &proxied, b"")
            .status,
        200
    );
    let mismatched = [
        ("Origin", "https://evil.example"),
        ("X-Forwarded-Host", "status.example.com"),
    ];
    assert_eq!(
        d.request("POST", "/api/services/forged", &mismatched, b"")
            .status,
        403
    );
    assert!(d.service("forged").is_none());
}

#[test]
fn a_rebound_host_name_is_refused_when_allowed_hosts_are_set() {
    let d = Daemon::start_with_http("allowed_hosts = [\"lovebeat.internal\"]", "");
    let as_host = |method: &str, host: &str, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("status line");
        line.split(' ').nth(1).unwrap_or_default().to_string()
    };
    // A page of attacker.example whose name now points here: same-origin
    // to the browser, refused by name, reads included.
    assert_eq!(
        as_host("POST", "attacker.example:8080", "/api/services/rebound"),
        "421"
    );
    assert_eq!(
        as_host("GET", "attacker.example:8080", "/api/services"),
        "421"
    );
    assert!(d.service("rebound").is_none());
    // The configured name, loopback and addresses are answered.
    assert_eq!(
        as_host("POST", "lovebeat.internal:8080", "/api/services/named"),
        "200"
    );
    assert_eq!(as_host("GET", "localhost:8080", "/api/status"), "200");
    assert_eq!(as_host("GET", "10.0.0.7:8080", "/api/status"), "200");
    // Without keys or allowed hosts, the daemon says so at start.
    assert!(!d.stderr().contains("DNS rebinding"), "{}", d.stderr());
    let open = Daemon::start("");
    assert!(open.stderr().contains("DNS rebinding"), "{}", open.stderr());
}

#[test]
fn a_key_set_while_statsd_listens_on_the_network_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nwrite_keys = [\"w\"]\n[udp]\nlisten = \"0.0.0.0:{port}\"\n[tcp]\nlisten = \"127.0.0.1:{port}\"\n[database]\nfilename = \"lovebeat.db\"\n",
            http = common::free_port()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args(["--config", "lovebeat.cfg", "--config-dir", "none"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening") {
        seen.push_str(&line);
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("[udp] listen = \"0.0.0.0:"), "{seen}");
    assert!(!seen.contains("[tcp] listen"), "{seen}");
}

#[test]
fn an_alert_links_to_its_alarm_page_in_the_ui() {
    let d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    d.post("/api/services/web.x");
    let r = d.get("/alarms/web");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("../#/alarm/web"));
    // The route stays open with read keys set: a link in a mail works.
    let k = Daemon::start_with_http("read_keys = [\"r\"]", "");
    assert_eq!(k.get("/alarms/web").status, 303);
}

#[test]
fn the_page_runs_only_its_own_code_and_no_answer_is_sniffed() {
    let d = Daemon::start("");
    let page = d.get("/");
    let csp = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    for asset in ["/index.html", "/app.js", "/style.css", "/favicon.svg"] {
        assert_eq!(
            d.get(asset).header("content-security-policy"),
            Some(csp),
            "{asset}"
        );
    }
    for path in [
        "/",
        "/app.js",
        "/api/services",
        "/api/services/nope",
        "/version",
    ] {
        assert_eq!(
            d.get(path).header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    // The page has no inline script or style for the CSP to block.
    let html = &page.body;
    let inline = html
        .split("<script")
        .skip(1)
        .any(|tag| !tag.split('>').next().unwrap_or_default().contains("src="));
    assert!(
        !inline && !html.contains("style=") && !html.contains("<style"),
        "{html}"
    );
}
