//! The HTTP API of README, "HTTP API" against the real binary.

mod common;

use common::Daemon;
use serde_json::json;

#[test]
fn beat_creates_a_service_and_get_shows_it() {
    let d = Daemon::start("");
    let r = d.post("/api/services/app.web");
    assert_eq!((r.status, r.body.as_str()), (200, "{}\n"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = d.get("/api/services/app.web");
    assert_eq!(r.status, 200);
    let v = r.json();
    let s = &v["service"];
    assert_eq!(s["name"], "app.web");
    assert_eq!(s["timeout"], -1);
    assert_eq!(s["state"], "ok");
    assert_eq!(s["muted_since"], 0);
    assert!(s["last_beat"].as_i64().expect("number") > 1_600_000_000_000);
    assert!(s.get("in_alarms").is_none());
    assert!(s.get("analysis").is_none());
    assert!(s.get("beat_history").is_none());
    assert!(v["now"].as_i64().expect("now") >= s["last_beat"].as_i64().expect("ms"));
    assert!(
        r.body.ends_with("}\n") && r.body.contains("\n  \"service\": {"),
        "pretty JSON: {}",
        r.body
    );
}

#[test]
fn timeout_by_query_form_and_json() {
    let d = Daemon::start("");
    d.post("/api/services/q?timeout=3600");
    assert_eq!(d.service("q").expect("exists")["timeout"], 3_600_000);
    d.post("/api/services/qa?timeout=auto");
    assert_eq!(d.service("qa").expect("exists")["timeout"], -2);
    d.post("/api/services/qd?timeout=1h30m");
    assert_eq!(d.service("qd").expect("exists")["timeout"], 5_400_000);
    d.request(
        "POST",
        "/api/services/f",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"timeout=60",
    );
    assert_eq!(d.service("f").expect("exists")["timeout"], 60_000);
    let r = d.request(
        "POST",
        "/api/services/j",
        &[("Content-Type", "application/json")],
        br#"{"timeout": 120}"#,
    );
    assert_eq!(r.status, 200);
    let j = d.service("j").expect("exists");
    assert_eq!(j["timeout"], 120_000);
    assert!(j["last_beat"].as_i64().expect("beaten") > 0);
    d.request(
        "POST",
        "/api/services/nb",
        &[("Content-Type", "application/json")],
        br#"{"timeout": -2, "beat": false}"#,
    );
    let nb = d.service("nb").expect("exists");
    assert_eq!(
        (nb["timeout"].as_i64(), nb["last_beat"].as_i64()),
        (Some(-2), Some(-1))
    );
    d.request(
        "POST",
        "/api/services/js?timeout=5",
        &[("Content-Type", "application/json")],
        br#"{"timeout": "15m"}"#,
    );
    assert_eq!(d.service("js").expect("exists")["timeout"], 900_000);
    let r = d.request(
        "POST",
        "/api/services/e",
        &[("Content-Type", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(d.service("e").expect("exists")["timeout"], -1);
}

#[test]
fn bad_input_is_a_400_with_a_json_error() {
    let d = Daemon::start("");
    for (path, ct, body) in [
        ("/api/services/x?timeout=-3", "", &b""[..]),
        ("/api/services/x?timeout=soon", "", b""),
        ("/api/services/x", "application/json", b"{not json"),
        ("/api/services/x", "application/json", b"[1]"),
        (
            "/api/services/x",
            "application/json",
            br#"{"timeout": true}"#,
        ),
        ("/api/services/Bad", "", b""),
        ("/api/services/a%20b", "", b""),
    ] {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("Content-Type", ct)]
        };
        let r = d.request("POST", path, &headers, body);
        assert_eq!(r.status, 400, "{path} {:?}", String::from_utf8_lossy(body));
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(
        d.service("x").is_none(),
        "a rejected request creates nothing"
    );
    let long = format!("/api/services/{}", "a".repeat(256));
    assert_eq!(d.post(&long).status, 400);
    assert_eq!(d.get("/api/alarms/Nope").status, 400);
    assert_eq!(d.get("/api/services/Nope").status, 400);
}

#[test]
fn unknown_service_and_alarm_are_404_with_json_error() {
    let d = Daemon::start("");
    for path in [
        "/api/services/nope",
        "/api/alarms/nope",
        "/api/alarms/nope/status",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn oversized_body_is_413() {
    let d = Daemon::start("");
    let body = vec![b' '; (1 << 20) + 1];
    let r = d.request(
        "POST",
        "/api/services/big",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(r.status, 413);
}

#[test]
fn lists_with_and_without_trailing_slash() {
    let d = Daemon::start("[[alarms]]\nname = \"all\"\npattern = \"*\"\n");
    d.post("/api/services/a");
    d.post("/api/services/b");
    for path in ["/api/services", "/api/services/"] {
        let v = d.get(path).json();
        let mut names: Vec<&str> = v["services"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect();
        names.sort();
        assert_eq!(names, vec!["a", "b"]);
        assert!(v["now"].is_i64());
    }
    for path in ["/api/alarms", "/api/alarms/"] {
        let v = d.get(path).json();
        assert_eq!(v["alarms"].as_array().expect("list").len(), 1);
        let a = &v["alarms"][0];
        assert_eq!(a["name"], "all");
        assert_eq!(a["state"], "ok");
        assert_eq!(a["incident_nbr"], 0);
        assert_eq!(a["failed_services"], json!([]));
        assert!(a["last_state_change"].is_i64());
    }
}

#[test]
fn mute_unmute_delete() {
    let d = Daemon::start("");
    d.post("/api/services/m?timeout=0");
    assert_eq!(d.service("m").expect("exists")["state"], "error");
    let r = d.post("/api/services/m/mute");
    assert_eq!((r.status, r.body.as_str()), (200, "{}\n"));
    let s = d.service("m").expect("exists");
    assert_eq!(s["state"], "muted");
    assert!(s["muted_since"].as_i64().expect("ms") > 0);
    assert_eq!(d.post("/api/services/m/unmute").body, "{}\n");
    let s = d.service("m").expect("exists");
    assert_eq!(
        (s["state"].as_str(), s["muted_since"].as_i64()),
        (Some("error"), Some(0))
    );
    // Mute creates; unmute and delete of unknown names create nothing.
    d.post("/api/services/new.muted/mute");
    assert_eq!(d.service("new.muted").expect("created")["state"], "muted");
    assert_eq!(d.post("/api/services/ghost/unmute").body, "{}\n");
    assert_eq!(d.delete("/api/services/ghost").body, "{}\n");
    assert!(d.service("ghost").is_none());
    assert_eq!(d.delete("/api/services/m").body, "{}\n");
    assert!(d.service("m").is_none());
}

#[test]
fn status_bodies_are_exact() {
    let d = Daemon::start("");
    let r = d.get("/api/status");
    assert_eq!(
        r.body,
        "num_ok 0\nnum_error 0\nhas_error false\ngood true\n"
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    for i in 0..4 {
        d.post(&format!("/api/services/ok{i}"));
    }
    d.post("/api/services/bad1?timeout=0");
    d.post("/api/services/bad2?timeout=0");
    d.post("/api/services/muted/mute");
    let r = d.get("/api/status");
    assert_eq!(
        r.body,
        "num_ok 5\nnum_error 2\nhas_error true\ngood false\n"
    );
    let r = d.request("GET", "/api/status", &[("Accept", "application/json")], b"");
    assert_eq!(
        r.json(),
        json!({"num_ok": 5, "num_error": 2, "has_error": true, "good": false})
    );
}

#[test]
fn version_as_text_and_json() {
    let d = Daemon::start("");
    let r = d.get("/version");
    assert_eq!(r.body, format!("{}\n", env!("CARGO_PKG_VERSION")));
    let r = d.request("GET", "/version", &[("Accept", "application/json")], b"");
    assert_eq!(r.json(), json!({"version": env!("CARGO_PKG_VERSION")}));
}

#[test]
fn details_add_beat_history_and_analysis_appears_with_ten_intervals() {
    let d = Daemon::start("");
    d.post("/api/services/h");
    let s = d.get("/api/services/h?details=1").json();
    assert_eq!(s["service"]["beat_history"], json!([]));
    assert!(d
        .service("h")
        .expect("exists")
        .get("beat_history")
        .is_none());
}

#[test]
fn alarm_endpoints_and_delete_rules() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"server-$name\"\npattern = \"application-name.$name.*\"\n[[alarms]]\nname = \"db\"\nincludes = [\"db.*\", \"sql.*\"]\nexcludes = [\"db.test.*\"]\n",
    );
    d.post("/api/services/application-name.web01.cpu?timeout=0");
    d.post("/api/services/application-name.web01.disk");
    d.post("/api/services/application-name.web02.cpu");
    d.post("/api/services/db.main");
    d.post("/api/services/sql.replica");
    d.post("/api/services/db.test.x");
    let v = d.get("/api/alarms/server-web01").json();
    assert_eq!(v["alarm"]["state"], "error");
    assert_eq!(v["alarm"]["incident_nbr"], 1);
    assert_eq!(
        v["alarm"]["failed_services"],
        json!(["application-name.web01.cpu"])
    );
    let mut names: Vec<&str> = v["services"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["application-name.web01.cpu", "application-name.web01.disk"]
    );
    assert_eq!(
        d.get("/api/alarms/server-web02").json()["alarm"]["state"],
        "ok"
    );
    let db = d.get("/api/alarms/db").json();
    let mut names: Vec<&str> = db["services"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["db.main", "sql.replica"]);
    assert_eq!(
        d.service("db.main").expect("exists")["in_alarms"],
        json!(["db"])
    );
    assert!(d
        .service("db.test.x")
        .expect("exists")
        .get("in_alarms")
        .is_none());
    let r = d.get("/api/alarms/server-web01/status");
    assert_eq!(
        r.body,
        "num_ok 1\nnum_error 1\nhas_error true\ngood false\n"
    );
    // An alarm with services cannot be deleted; an empty one can.
    let r = d.delete("/api/alarms/server-web02");
    assert_eq!(r.status, 409);
    assert!(r.json()["error"].is_string());
    d.delete("/api/services/application-name.web02.cpu");
    assert_eq!(
        d.get("/api/alarms/server-web02").json()["alarm"]["state"],
        "ok"
    );
    assert_eq!(d.delete("/api/alarms/server-web02").body, "{}\n");
    assert_eq!(d.get("/api/alarms/server-web02").status, 404);
    assert_eq!(d.delete("/api/alarms/unknown").body, "{}\n");
}

#[test]
fn wrong_method_is_405() {
    let d = Daemon::start("");
    assert_eq!(d.request("PUT", "/api/services/x", &[], b"").status, 405);
    assert_eq!(d.post("/api/status").status, 405);
}

#[test]
fn metrics_count_lines_and_states() {
    // Three alarms: one in ERROR, one OK, and one deleted (not counted).
    let d = Daemon::start(
        "[[alarms]]\nname = \"m-$x\"\npattern = \"m.$x\"\n[[alarms]]\nname = \"gone\"\npattern = \"gone.*\"\n",
    );
    d.post("/api/services/gone.a?timeout=60");
    d.delete("/api/services/gone.a");
    assert_eq!(d.delete("/api/alarms/gone").status, 200);
    d.udp("m.ok.beat:1|c\nnot a line\n");
    d.eventually("line applied", || d.service("m.ok").is_some());
    d.post("/api/services/m.err?timeout=0");
    let r = d.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    for line in [
        "lovebeat_lines_accepted_total 1\n",
        "lovebeat_lines_dropped_total 1\n",
        "lovebeat_datagrams_received_total 1\n",
        "lovebeat_services{state=\"ok\"} 1\n",
        "lovebeat_services{state=\"error\"} 1\n",
        "lovebeat_services{state=\"muted\"} 0\n",
        "lovebeat_alarms{state=\"ok\"} 1\n",
        "lovebeat_alarms{state=\"error\"} 1\n",
    ] {
        assert!(r.body.contains(line), "missing {line:?} in\n{}", r.body);
    }
    assert!(!r.body.contains("m.ok"), "no series per service");
}

#[test]
fn empty_and_streamed_lists_are_pretty_json() {
    let d = Daemon::start("");
    let r = d.get("/api/services");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let now = r.json()["now"].as_i64().expect("now");
    assert_eq!(
        r.body,
        format!("{{\n  \"services\": [],\n  \"now\": {now}\n}}\n")
    );
    for i in 0..3000 {
        d.udp(&format!("many.s{i}.beat:1|c"));
    }
    d.eventually("3000 services", || {
        d.get("/api/status").body.starts_with("num_ok 3000\n")
    });
    let r = d.get("/api/services");
    let v = r.json();
    assert_eq!(v["services"].as_array().expect("list").len(), 3000);
    let now = v["now"].as_i64().expect("now");
    assert!(
        r.body
            .starts_with("{\n  \"services\": [\n    {\n      \"name\": \"many.s"),
        "{}",
        &r.body[..80]
    );
    assert!(r
        .body
        .ends_with(&format!("\n    }}\n  ],\n  \"now\": {now}\n}}\n")));
    assert!(r.body.contains("\n    },\n    {\n      \"name\""));
}

#[test]
fn the_ui_is_served_from_the_binary_with_relative_urls() {
    let d = Daemon::start("");
    let page = d.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("src=\"app.js\""), "{}", page.body);
    // Relative URLs only: nothing starts at the root, so a path prefix works.
    assert!(!page.body.contains("src=\"/") && !page.body.contains("href=\"/"));
    for (path, kind) in [
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(kind), "{path}");
        assert!(!r.body.is_empty());
    }
    let js = d.get("/app.js").body;
    assert!(
        !js.contains("fetch('/") && !js.contains("'/api"),
        "app.js uses relative URLs"
    );
    assert_eq!(d.get("/nope.js").status, 404);
    // /ws without an upgrade is a clear 400.
    let ws = d.get("/ws");
    assert_eq!(ws.status, 400);
    assert!(ws.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("websocket"));
}
