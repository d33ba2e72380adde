//! An alarm's incidents and the export of the history, against the real
//! binary (README, "History"): incidents kept across a restart, an export
//! that gives back exactly what `/history` gives, and a slow reader of a
//! big export that neither holds the writer nor keeps its place for ever.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon};
use serde_json::{json, Value};

fn incidents(d: &Daemon, alarm: &str, query: &str) -> common::Reply {
    d.get(&format!("/api/alarms/{alarm}/incidents{query}"))
}

fn list(v: &Value) -> Vec<Value> {
    v["incidents"].as_array().cloned().unwrap_or_default()
}

fn sqlite(file: &std::path::Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(file)
        .arg(sql)
        .output()
        .expect("sqlite3 (the test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_incident_open_at_a_stop_stays_open_until_it_closes_after_the_restart() {
    let mut d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    assert_eq!(d.post("/api/services/web.a?timeout=3600").status, 200);
    assert_eq!(d.post("/api/services/web.a?timeout=0").status, 200);
    wait_until(10, "incident 1 written", || {
        list(&incidents(&d, "web", "").json()).len() == 1
    });
    let v = incidents(&d, "web", "").json();
    let first = &v["incidents"][0];
    assert_eq!(v["name"], "web");
    assert_eq!(first["number"], 1, "{v}");
    assert!(first["opened"].is_i64(), "{v}");
    assert!(first["closed"].is_null(), "{v}");
    assert!(first["duration_ms"].is_null(), "{v}");
    assert_eq!(first["failed_at_open"], 1, "{v}");
    assert_eq!(first["first_failed"], "web.a", "{v}");
    let opened = first["opened"].as_i64().expect("opened");

    d.restart();
    let v = incidents(&d, "web", "").json();
    assert_eq!(list(&v).len(), 1, "{v}");
    assert!(v["incidents"][0]["closed"].is_null(), "still open: {v}");

    // Its close arrives after the restart: the same incident closes.
    assert_eq!(d.post("/api/services/web.a?timeout=3600").status, 200);
    wait_until(10, "incident 1 closed", || {
        incidents(&d, "web", "").json()["incidents"][0]["closed"].is_i64()
    });
    let v = incidents(&d, "web", "").json();
    let one = &v["incidents"][0];
    assert_eq!(one["number"], 1, "{v}");
    assert_eq!(one["opened"], opened, "{v}");
    let closed = one["closed"].as_i64().expect("closed");
    assert!(closed >= opened, "{v}");
    assert_eq!(one["duration_ms"], closed - opened, "{v}");

    // A second one, then pages and ranges.
    assert_eq!(d.post("/api/services/web.a?timeout=0").status, 200);
    assert_eq!(d.post("/api/services/web.a?timeout=3600").status, 200);
    wait_until(10, "incident 2 closed", || {
        let v = incidents(&d, "web", "").json();
        list(&v).len() == 2 && v["incidents"][0]["closed"].is_i64()
    });
    let all = incidents(&d, "web", "").json();
    let numbers: Vec<i64> = list(&all)
        .iter()
        .map(|i| i["number"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(numbers, vec![2, 1], "newest first: {all}");
    assert!(all["next_cursor"].is_null());
    let page = incidents(&d, "web", "?limit=1").json();
    assert_eq!(list(&page), vec![all["incidents"][0].clone()]);
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_string();
    let page = incidents(&d, "web", &format!("?limit=1&cursor={cursor}")).json();
    assert_eq!(list(&page), vec![all["incidents"][1].clone()]);
    assert!(page["next_cursor"].is_null(), "{page}");
    // A range holds the incidents open at some time in it.
    let opened2 = all["incidents"][0]["opened"].as_i64().expect("opened");
    let only_first = incidents(&d, "web", &format!("?until={opened2}")).json();
    assert_eq!(list(&only_first), vec![all["incidents"][1].clone()]);
    let after_first = incidents(&d, "web", &format!("?since={}", closed + 1)).json();
    assert_eq!(list(&after_first), vec![all["incidents"][0].clone()]);
    let within_first =
        incidents(&d, "web", &format!("?since={opened}&until={}", opened + 1)).json();
    assert_eq!(list(&within_first), vec![all["incidents"][1].clone()]);

    for bad in ["?limit=0", "?limit=5000", "?cursor=x", "?since=yesterday"] {
        let r = incidents(&d, "web", bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    let r = incidents(&d, "never", "");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.json()["error"].is_string());
    assert_eq!(incidents(&d, "x%27%3B%20DROP", "").status, 400);
}

#[test]
fn with_history_off_incidents_and_export_answer_404_saying_so() {
    let d = Daemon::start("[history]\nenabled = false\n");
    for path in [
        "/api/alarms/web/incidents",
        "/api/export",
        "/api/export?format=csv",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("history is off"),
            "{path}: {}",
            r.body
        );
    }
}

#[test]
fn incidents_and_export_need_the_read_key() {
    let d = Daemon::start_keyed("[[alarms]]\nname = \"k\"\npattern = \"k.*\"\n");
    let writer = [("Authorization", "Bearer writer")];
    let reader = [("Authorization", "Bearer reader")];
    let r = d.request("POST", "/api/services/k.a?timeout=3600", &writer, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["/api/alarms/k/incidents", "/api/export"] {
        assert_eq!(d.get(path).status, 401, "{path}");
        wait_until(10, "an answer with the read key", || {
            d.request("GET", path, &reader, b"").status == 200
        });
    }
}

/// A CSV text (RFC 4180) as rows of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "the last line ends");
    rows
}

/// The CSV rows as the NDJSON objects they stand for.
fn csv_as_json(text: &str) -> Vec<Value> {
    let rows = parse_csv(text);
    assert_eq!(
        rows.first().map(|r| r.join(",")),
        Some("ts,kind,name,from,to,reason,detail".to_string())
    );
    rows.iter()
        .skip(1)
        .map(|r| {
            assert_eq!(r.len(), 7, "{r:?}");
            let opt = |s: &str| {
                if s.is_empty() {
                    Value::Null
                } else {
                    Value::from(s)
                }
            };
            json!({
                "ts": r[0].parse::<i64>().expect("ts"),
                "kind": r[1],
                "name": r[2],
                "from": opt(&r[3]),
                "to": r[4],
                "reason": r[5],
                "detail": if r[6].is_empty() { Value::Null } else { Value::from(r[6].parse::<i64>().expect("detail")) },
            })
        })
        .collect()
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What `/history` gives for a name, oldest first, in the export's form.
fn history_as_export(d: &Daemon, kind: &str, name: &str) -> Vec<Value> {
    let v = d
        .get(&format!("/api/{kind}s/{name}/history?limit=1000"))
        .json();
    let mut out: Vec<Value> = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            json!({
                "ts": c["ts"],
                "kind": kind,
                "name": name,
                "from": c.get("from").cloned().unwrap_or(Value::Null),
                "to": c["to"],
                "reason": c["reason"],
                "detail": c.get("exit_code").or(c.get("incident")).cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn an_export_gives_back_exactly_what_history_gives_in_ndjson_and_csv() {
    let mut d = Daemon::start("[[alarms]]\nname = \"ex\"\npattern = \"ex.*\"\n");
    d.post("/api/services/ex.a?timeout=3600");
    d.post("/api/services/ex.a?timeout=0");
    d.post("/api/services/ex.a?timeout=3600");
    d.post("/api/services/ex.a/mute");
    d.post("/api/services/ex.a/unmute");
    d.post("/api/services/ex.job/start");
    assert_eq!(
        d.request("POST", "/api/services/ex.job/exit/3", &[], b"boom")
            .status,
        200
    );
    d.post("/api/services/ex.b?timeout=3600");
    d.delete("/api/services/ex.b");
    let names = [
        ("service", "ex.a"),
        ("service", "ex.job"),
        ("service", "ex.b"),
        ("alarm", "ex"),
    ];
    wait_until(10, "every change written", || {
        d.get("/api/services/ex.b/history").json()["deleted_at"].is_i64()
            && history_as_export(&d, "service", "ex.job")
                .iter()
                .any(|c| c["detail"] == 3)
    });
    let nd = d.get("/api/export");
    assert_eq!(nd.status, 200, "{}", nd.body);
    assert_eq!(nd.header("content-type"), Some("application/x-ndjson"));
    let nd = ndjson(&nd.body);
    let csv = d.get("/api/export?format=csv");
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = csv_as_json(&csv.body);
    assert_eq!(csv, nd, "CSV and NDJSON say the same");
    for (kind, name) in names {
        let want = history_as_export(&d, kind, name);
        assert!(!want.is_empty(), "{name}");
        let got: Vec<Value> = nd
            .iter()
            .filter(|r| r["kind"] == kind && r["name"] == name)
            .cloned()
            .collect();
        assert_eq!(got, want, "{kind} {name}");
    }
    // lovebeat's own services are in it too; nothing else.
    assert!(
        nd.iter().all(|r| names
            .iter()
            .any(|(k, n)| r["kind"] == *k && r["name"] == *n)
            || r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("lovebeat."))),
        "{nd:?}"
    );
    // A range holds the changes from `since` and before `until`.
    let mut ts: Vec<i64> = nd.iter().filter_map(|r| r["ts"].as_i64()).collect();
    ts.sort();
    let (since, until) = (ts[ts.len() / 3], ts[2 * ts.len() / 3]);
    let part = ndjson(
        &d.get(&format!("/api/export?since={since}&until={until}"))
            .body,
    );
    let want: Vec<Value> = nd
        .iter()
        .filter(|r| r["ts"].as_i64().is_some_and(|t| t >= since && t < until))
        .cloned()
        .collect();
    assert_eq!(part, want);
    for bad in ["?format=xml", "?since=yesterday", "?until=x"] {
        let r = d.get(&format!("/api/export{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }

    // A name a 1.x database may hold, which the rules of today refuse:
    // quoted in CSV, escaped in JSON, given back exactly.
    assert!(d.stop().success());
    let file = d.path().join("lovebeat.db.history");
    // Before anything else in the file, within retention.
    let at = ts[0] - 1;
    sqlite(
        &file,
        &format!(
            "INSERT INTO names (kind, name) VALUES (0, 'odd,\"na' || char(10) || 'me\" ');
             INSERT INTO changes SELECT id, {at}, 1, NULL, 1, 0, NULL FROM names WHERE kind = 0 AND name LIKE 'odd,%';"
        ),
    );
    d.restart_stopped();
    let odd = "odd,\"na\nme\" ";
    let nd = ndjson(&d.get(&format!("/api/export?until={}", at + 1)).body);
    let csv = csv_as_json(
        &d.get(&format!("/api/export?until={}&format=csv", at + 1))
            .body,
    );
    let want = vec![
        json!({"ts": at, "kind": "service", "name": odd, "from": null, "to": "ok", "reason": "created", "detail": null}),
    ];
    assert_eq!(nd, want);
    assert_eq!(csv, want);
}

/// An hour ago, in ms: within retention, so the start's pruning keeps it.
fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    now.as_millis() as i64 - 3_600_000
}

/// Fills the history file with `names` × `per_name` changes of names
/// 1 000 bytes long (a 1.x database may hold such names), from `base`
/// (ms) on, while the daemon is stopped.
fn fill(d: &mut Daemon, names: usize, per_name: usize, base: i64) {
    // The writer is under way (and the daemon past its start) before the
    // stop.
    wait_until(10, "the history written", || {
        d.get("/api/services/live.a/history").status == 200
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let file = d.path().join("lovebeat.db.history");
    sqlite(
        &file,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {names})
             INSERT INTO names (kind, name)
               SELECT 0, 'big.' || i || '.' || replace(hex(zeroblob(500)), '0', 'x') FROM n;
             WITH RECURSIVE k(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM k WHERE j < {per_name})
             INSERT INTO changes
               SELECT names.id, {base} + j, 100000000 + names.id * 1000 + j, 1, 2, 1, NULL
               FROM names, k WHERE names.name LIKE 'big.%';"
        ),
    );
    d.restart_stopped();
}

#[test]
fn a_slow_reader_of_a_big_export_holds_no_writer_and_is_cut_at_its_deadline() {
    // A 5 s head start: the changes below are written well before the
    // minimum rate can cut the export.
    let mut d = Daemon::start("[limits]\nhttp_list_timeout = \"5s\"\n");
    d.post("/api/services/live.a?timeout=3600");
    // 20 000 changes of about 1.1 kB each: 22 MB, far more than the
    // sockets buffer; read slower than http_list_min_rate (1 MB/s) after
    // its head start, it is cut.
    let base = an_hour_ago();
    fill(&mut d, 200, 100, base);
    let mut slow = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    slow.write_all(b"GET /api/export?format=csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        slow.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        // 16 kB every 100 ms (never stalled): 22 MB would take 140 s.
        while start.elapsed() < Duration::from_secs(120) {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        got
    });
    // While it reads, changes keep being written and read back.
    for _ in 0..5 {
        assert_eq!(d.post("/api/services/live.a/mute").status, 200);
        assert_eq!(d.post("/api/services/live.a/unmute").status, 200);
    }
    wait_until(15, "the changes made during the export written", || {
        d.get("/api/services/live.a/history").json()["changes"]
            .as_array()
            .is_some_and(|c| c.len() == 11)
    });
    assert_eq!(
        d.metric("lovebeat_http_lists_cut_total"),
        0.0,
        "written while the export was still being read"
    );
    wait_until(60, "the slow export cut", || {
        d.metric("lovebeat_http_lists_cut_total") == 1.0
    });
    let got = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(
        got.len() < 20_000 * 1_000,
        "cut before the end: {}",
        got.len()
    );
    assert!(!text.ends_with("0\r\n\r\n"), "a cut answer ends unfinished");
    // Its place is free again, and a whole export ends whole.
    wait_until(10, "a whole export", || {
        let r = d.get(&format!(
            "/api/export?since={}&until={}",
            base + 1,
            base + 2
        ));
        r.status == 200 && r.body.lines().count() == 200
    });
}
