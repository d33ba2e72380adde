//! Maintenance windows against the real binary (README, "Maintenance
//! windows"): a window from the configuration and one made through the
//! API (across a restart) hold an alarm's alert until they end, and the
//! alert comes then with the service still down; one that recovered
//! during the window sends nothing; the API lists both kinds with who
//! made them, refuses bad windows saying why, and refuses to delete the
//! configuration's; uptime counts the window as maintenance, to the
//! millisecond.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::receiver::Receiver;
use common::smtp::{read_mails, smtp_server};
use common::{wait_until, Daemon};
use serde_json::{json, Value};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const W: &[(&str, &str)] = &[("Authorization", "Bearer writer")];
const R: &[(&str, &str)] = &[("Authorization", "Bearer reader")];

fn alarms_with_hook(rx: &Receiver) -> String {
    format!(
        "[[alarms]]\nname = \"db\"\npattern = \"db.*\"\nalerts = [\"hook\"]\n\
         [[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"hook\"]\n\
         [alerts.hook]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    )
}

/// The alerts received, as `name:to_state`.
fn alerts(rx: &Receiver) -> Vec<String> {
    rx.got()
        .iter()
        .map(|r| {
            let b = r.json();
            format!(
                "{}:{}",
                b["name"].as_str().unwrap_or("?"),
                b["to_state"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn a_config_window_holds_an_alert_until_it_ends_with_the_service_still_down() {
    let rx = Receiver::start(|_| Some(200));
    // Long enough for a start and six requests on a loaded machine.
    let end = now_ms() + 12_000;
    let d = Daemon::start(&format!(
        "{}[[maintenance]]\nname = \"upgrade\"\nalarms = [\"db\", \"web\"]\nservices = \"db.*\"\nstart = \"{}\"\nend = \"{}\"\ncomment = \"db 17\"\n",
        alarms_with_hook(&rx),
        rfc3339(now_ms() - 60_000),
        rfc3339(end)
    ));
    d.post("/api/services/db.main?timeout=3600");
    d.post("/api/services/web.front?timeout=3600");
    d.post("/api/services/db.main?timeout=0");
    // web fails and recovers within the window: nothing is ever sent of it.
    d.post("/api/services/web.front?timeout=0");
    d.post("/api/services/web.front?timeout=3600");
    let a = d.get("/api/alarms/db").json();
    assert_eq!(a["alarm"]["state"], "error", "states stay true: {a}");
    assert_eq!(a["alarm"]["maintenance"], json!(["upgrade"]), "{a}");
    let s = d.get("/api/services/db.main").json();
    assert_eq!(s["maintenance"], json!(["upgrade"]), "{s}");
    assert!(d
        .get("/api/services/web.front")
        .json()
        .get("maintenance")
        .is_none());
    let listed = d.get("/api/alarms").json();
    assert!(listed.to_string().contains("\"maintenance\""), "{listed}");
    assert!(
        now_ms() < end,
        "the machine was too slow to fail db within the window"
    );
    assert_eq!(alerts(&rx), Vec::<String>::new(), "held during the window");

    let got = rx.wait_for(1, 30);
    assert_eq!(alerts(&rx), ["db:error"], "{}", d.stderr());
    assert!(now_ms() >= end);
    let b = got[0].json();
    assert_eq!(b["name"], "db");
    // Whatever came after it: never web's.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(alerts(&rx), ["db:error"], "{}", d.stderr());
    let a = d.get("/api/alarms/db").json();
    assert!(a["alarm"].get("maintenance").is_none(), "{a}");
}

#[test]
fn an_api_window_holds_an_alert_across_a_restart_and_releases_it_at_its_end() {
    let rx = Receiver::start(|_| Some(200));
    let mut d = Daemon::start_with_http(
        "read_keys = [\"reader\"]\nwrite_keys = [\"other\", \"writer\"]",
        &alarms_with_hook(&rx),
    );
    // Long enough for a restart on a loaded machine.
    let end = now_ms() + 25_000;
    let body = json!({
        "name": "db-move",
        "alarms": ["db"],
        "start": rfc3339(now_ms() - 1000),
        "end": rfc3339(end),
        "comment": "moving the database",
    });
    let r = d.request(
        "POST",
        "/api/maintenance",
        &[W[0], ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["created_by"], "write_keys[1]");
    assert_eq!(r.json()["active"], true);
    d.request("POST", "/api/services/db.main?timeout=3600", W, b"");
    d.request("POST", "/api/services/db.main?timeout=0", W, b"");
    wait_until(10, "db is ERROR", || {
        d.request("GET", "/api/alarms/db", R, b"").json()["alarm"]["state"] == "error"
    });
    d.restart();
    let listed = d.request("GET", "/api/maintenance", R, b"").json();
    assert_eq!(listed[0]["name"], "db-move", "{listed}");
    assert_eq!(listed[0]["created_by"], "write_keys[1]", "{listed}");
    assert_eq!(listed[0]["source"], "api", "{listed}");
    let a = d.request("GET", "/api/alarms/db", R, b"").json();
    assert_eq!(a["alarm"]["maintenance"], json!(["db-move"]), "{a}");
    assert!(
        now_ms() < end,
        "the machine was too slow to restart within the window"
    );
    assert_eq!(
        alerts(&rx),
        Vec::<String>::new(),
        "held, also after the restart"
    );

    rx.wait_for(1, 60);
    assert_eq!(alerts(&rx), ["db:error"], "{}", d.stderr());
    assert!(now_ms() >= end);

    // The audit trail names the window and the key's place.
    let r = d.request("DELETE", "/api/maintenance/db-move", W, b"");
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    let mut seen = Vec::new();
    wait_until(10, "the audit rows", || {
        let rows = d.request("GET", "/api/audit", R, b"").json();
        seen = rows["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("maintenance."))
            })
            .map(|e| format!("{} {} {}", e["who"], e["action"], e["target"]))
            .collect();
        seen.len() == 2
    });
    seen.sort();
    assert_eq!(
        seen,
        [
            r#""write_keys[1]" "maintenance.create" "db-move""#,
            r#""write_keys[1]" "maintenance.delete" "db-move""#
        ]
    );
}

#[test]
fn the_api_lists_both_kinds_refuses_bad_windows_and_keeps_the_configurations() {
    let d = Daemon::start_keyed(
        "[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n\
         [[maintenance]]\nname = \"nightly\"\nalarms = \"db\"\nschedule = \"0 3 * * *\"\nduration = \"30m\"\ntz = \"Europe/Berlin\"\n",
    );
    let post = |body: Value, key: &(&str, &str)| {
        d.request(
            "POST",
            "/api/maintenance",
            &[*key, ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };
    let ok = json!({"name": "later", "services": ["db.*"], "start": rfc3339(now_ms() + 3_600_000), "end": rfc3339(now_ms() + 7_200_000)});
    assert_eq!(
        post(ok.clone(), &R[0]).status,
        403,
        "a read key cannot make one"
    );
    let r = post(ok.clone(), &W[0]);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(post(ok, &W[0]).status, 409, "the name is taken");
    for (body, says) in [
        (
            json!({"name": "a", "alarms": ["db"], "schedule": "0 3 * * *", "duration": "1h", "tz": "Mars/Olympus"}),
            "IANA",
        ),
        (
            json!({"name": "a", "alarms": ["db"], "schedule": "0 3 * *", "duration": "1h"}),
            "cron",
        ),
        (
            json!({"name": "a", "alarms": ["db"], "start": rfc3339(now_ms()), "end": rfc3339(now_ms() - 1000)}),
            "end must be after start",
        ),
        (
            json!({"name": "a", "alarms": ["db"], "schedule": "0 3 * * *", "duration": "-5"}),
            "duration",
        ),
        (
            json!({"name": "a", "alarms": ["db"], "schedule": "0 3 * * *", "duration": "0"}),
            "more than 0",
        ),
        (
            json!({"name": "a", "alarms": ["db"], "created_by": "me", "start": rfc3339(now_ms()), "end": rfc3339(now_ms() + 1000)}),
            "created_by",
        ),
        (json!({"name": "a"}), "matches nothing"),
        (json!("not a window"), "JSON maintenance window"),
    ] {
        let r = post(body.clone(), &W[0]);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let e = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.contains(says), "{body}: {e}");
    }

    let listed = d.request("GET", "/api/maintenance", R, b"").json();
    let by: Vec<(String, String, String)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or("?").into(),
                w["created_by"].as_str().unwrap_or("?").into(),
                w["source"].as_str().unwrap_or("?").into(),
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            ("nightly".into(), "config".into(), "config".into()),
            ("later".into(), "write_keys[0]".into(), "api".into())
        ],
        "{listed}"
    );
    assert_eq!(listed[0]["tz"], "Europe/Berlin");
    assert!(listed[0]["next_start"].as_i64().is_some(), "{listed}");
    assert_eq!(d.request("GET", "/api/maintenance", &[], b"").status, 401);

    let r = d.request("DELETE", "/api/maintenance/nightly", W, b"");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("configuration"));
    assert_eq!(
        d.request("DELETE", "/api/maintenance/nope", W, b"").status,
        404
    );
    assert_eq!(
        d.request("DELETE", "/api/maintenance/later", W, b"").status,
        200
    );
    let listed = d.request("GET", "/api/maintenance", R, b"").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[test]
fn with_history_off_api_windows_are_refused_and_config_windows_still_hold() {
    let d = Daemon::start(
        "[history]\nenabled = false\n[[maintenance]]\nname = \"always\"\nalarms = \"db\"\nstart = \"2020-01-01T00:00:00Z\"\nend = \"2020-12-31T00:00:00Z\"\n",
    );
    let r = d.request(
        "POST",
        "/api/maintenance",
        &[],
        json!({"name": "a", "alarms": ["db"], "start": rfc3339(now_ms()), "end": rfc3339(now_ms() + 1000)})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("[history] enabled = false"));
    assert_eq!(d.get("/api/maintenance").json()[0]["name"], "always");
}

#[test]
fn a_bad_config_window_stops_the_start_saying_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.cfg");
    for (text, word) in [
        ("[[maintenance]]\nname = \"a\"\nalarms = \"db\"\nschedule = \"0 3 * * *\"\nduration = \"1h\"\ntz = \"Nowhere/Land\"\n", "IANA"),
        ("[[maintenance]]\nname = \"a\"\nalarms = \"db\"\nstart = \"2026-01-02T00:00:00Z\"\nend = \"2026-01-01T00:00:00Z\"\n", "end must be after start"),
        ("[[maintenance]]\nname = \"a\"\nalarms = \"db\"\nschedule = \"0 3 * * *\"\nduration = \"1h\"\n[[maintenance]]\nname = \"a\"\nalarms = \"x\"\nschedule = \"0 4 * * *\"\nduration = \"1h\"\n", "two windows"),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let (status, out) = common::run_binary(
            dir.path(),
            &["--config", cfg.to_str().expect("utf8"), "--config-dir", "/nonexistent"],
        );
        assert_eq!(status.code(), Some(2), "{out}");
        assert!(out.contains(word), "{word}: {out}");
    }
}

/// (ts, to) of each change of `name`, oldest first.
fn changes(d: &Daemon, name: &str) -> Vec<(i64, String)> {
    let v = d
        .get(&format!("/api/services/{name}/history?limit=1000"))
        .json();
    let mut out: Vec<(i64, String)> = v["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["ts"].as_i64().unwrap_or(-1),
                        c["to"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.reverse();
    out
}

fn ms(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[test]
fn uptime_counts_a_window_as_maintenance_to_the_millisecond() {
    let d = Daemon::start("[[alarms]]\nname = \"m\"\npattern = \"u.*\"\n");
    d.post("/api/services/u.m?timeout=3600");
    std::thread::sleep(Duration::from_millis(80));
    d.post("/api/services/u.m?timeout=0");
    std::thread::sleep(Duration::from_millis(300));
    d.post("/api/services/u.m?timeout=3600");
    wait_until(10, "three changes written", || {
        changes(&d, "u.m").len() == 3
    });
    let c = changes(&d, "u.m");
    let t: Vec<i64> = c.iter().map(|x| x.0).collect();
    assert_eq!(c[1].1, "error", "{c:?}");
    // A window from inside the ERROR period to after the recovery: its
    // start is retroactive, which a one-off window may be.
    let (ws, we) = (t[1] + 10, t[2] + 20);
    let r = d.request(
        "POST",
        "/api/maintenance",
        &[],
        json!({"name": "fix", "services": ["u.m"], "alarms": ["m"], "start": rfc3339(ws), "end": rfc3339(we)})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (since, until) = (t[0], t[2] + 100);
    let started = Instant::now();
    wait_until(10, "until is past", || now_ms() > until);
    assert!(started.elapsed() < Duration::from_secs(10));
    for what in ["services/u.m", "alarms/m"] {
        let v = d
            .get(&format!("/api/{what}/uptime?since={since}&until={until}"))
            .json();
        let w = &v["windows"][0];
        let a = d.get(&format!("/api/{what}/history?limit=10")).json();
        if what == "alarms/m" {
            // The alarm's own changes are a few ms from the service's.
            let tc: Vec<i64> = a["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .rev()
                .map(|c| c["ts"].as_i64().unwrap_or(0))
                .collect();
            let (e, o) = (tc[tc.len() - 2], tc[tc.len() - 1]);
            assert!(e <= ws && t[0] < e, "{a}");
            assert_eq!(ms(w, "maintenance_ms"), we - ws, "{v}");
            let down = (o.min(ws) - e).max(0) + (o - we).max(0);
            assert_eq!(ms(w, "down_ms"), down, "{v} {a}");
            let parts: i64 = [
                "up_ms",
                "down_ms",
                "muted_ms",
                "maintenance_ms",
                "unknown_ms",
            ]
            .iter()
            .map(|f| ms(w, f))
            .sum();
            assert_eq!(parts, until - since, "{v}");
            continue;
        }
        assert_eq!(ms(w, "maintenance_ms"), we - ws, "{v}");
        assert_eq!(ms(w, "down_ms"), ws - t[1], "{v}");
        assert_eq!(ms(w, "up_ms"), (t[1] - t[0]) + (until - we), "{v}");
        assert_eq!(ms(w, "unknown_ms"), 0, "{v}");
        assert_eq!(w["incidents"], 1, "the window changes no state: {v}");
    }
}

#[test]
fn notify_tells_the_mail_of_the_matched_alarms_when_a_window_opens_and_ends_and_no_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path());
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"db\"\npattern = \"db.*\"\nalerts = [\"team\"]\n\
         [[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"other\"]\n\
         [alerts.team]\nmail = \"ops@example.com\"\nwebhook = \"{}\"\ngroup_interval = \"1s\"\n\
         [alerts.other]\nmail = \"web@example.com\"\n\
         [mail]\nserver = \"127.0.0.1:{port}\"\n",
        rx.url("/hook")
    ));
    d.post("/api/services/db.main?timeout=3600");
    d.post("/api/services/web.main?timeout=3600");
    // Open for 4 s: housekeeping looks every second, also when late.
    let (start, end) = (now_ms() + 2000, now_ms() + 6000);
    let r = d.request(
        "POST",
        "/api/maintenance",
        &[],
        json!({"name": "upgrade", "alarms": ["db"], "start": rfc3339(start), "end": rfc3339(end), "notify": true, "comment": "db 17"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let mails = read_mails(&out, 2, 40);
    std::thread::sleep(Duration::from_millis(1500));
    let mails_after = read_mails(&out, 3, 0);
    drop(smtp);
    assert_eq!(mails.len(), 2, "{mails:?} {}", d.stderr());
    assert_eq!(mails_after.len(), 2, "{mails_after:?}");
    let data: Vec<&str> = mails
        .iter()
        .map(|m| m["data"].as_str().unwrap_or_default())
        .collect();
    assert!(
        data[0].contains("Subject: [LOVEBEAT] maintenance 'upgrade' started"),
        "{}",
        data[0]
    );
    assert!(
        data[0].contains("'db'") && data[0].contains("db 17"),
        "{}",
        data[0]
    );
    assert!(
        data[1].contains("Subject: [LOVEBEAT] maintenance 'upgrade' ended"),
        "{}",
        data[1]
    );
    for m in &mails {
        assert!(
            m.to_string().contains("ops@example.com"),
            "only db's alert: {m}"
        );
        assert!(
            !m.to_string().contains("web@example.com"),
            "not web's alert: {m}"
        );
    }
    assert!(now_ms() >= end);
    assert_eq!(
        rx.count(),
        0,
        "the webhook gets nothing new: {:?}",
        alerts(&rx)
    );
}

#[test]
fn windows_are_bounded_and_ended_ones_make_room() {
    let d = Daemon::start("");
    let post = |name: String, start: i64, end: i64| {
        d.request(
            "POST",
            "/api/maintenance",
            &[],
            json!({"name": name, "alarms": ["x"], "start": rfc3339(start), "end": rfc3339(end)})
                .to_string()
                .as_bytes(),
        )
    };
    let now = now_ms();
    for i in 0..200 {
        let r = post(format!("past-{i}"), now - 7_200_000, now - 3_600_000);
        assert_eq!(r.status, 201, "{i}: {}", r.body);
    }
    // Full of windows that are over: they give way.
    let (from, to) = (now + 3_600_000, now + 7_200_000);
    assert_eq!(post("next-0".into(), from, to).status, 201);
    let listed = d.get("/api/maintenance").json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    for i in 1..200 {
        assert_eq!(post(format!("next-{i}"), from, to).status, 201, "{i}");
    }
    let r = post("one-too-many".into(), from, to);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or_default()
        .contains("maximum of 200"));
    assert_eq!(d.delete("/api/maintenance/next-7").status, 200);
    assert_eq!(post("one-too-many".into(), from, to).status, 201);
}

#[test]
fn a_window_on_services_holds_an_alarm_failing_only_through_them_until_another_member_fails() {
    let rx = Receiver::start(|_| Some(200));
    let end = now_ms() + 60_000;
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"all\"\npattern = \"x.*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n\
         [[maintenance]]\nname = \"dbs\"\nservices = \"x.db*\"\nstart = \"{}\"\nend = \"{}\"\n",
        rx.url("/hook"),
        rfc3339(now_ms() - 1000),
        rfc3339(end)
    ));
    d.post("/api/services/x.db1?timeout=3600");
    d.post("/api/services/x.web?timeout=3600");
    d.post("/api/services/x.db1?timeout=0");
    let a = d.get("/api/alarms/all").json();
    assert_eq!(a["alarm"]["state"], "error", "{a}");
    assert_eq!(a["alarm"]["maintenance"], json!(["dbs"]), "{a}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(alerts(&rx), Vec::<String>::new(), "held: only x.db1 failed");
    // A member outside the window fails: the alarm's alert goes now,
    // though no state changed and the window is still open.
    d.post("/api/services/x.web?timeout=0");
    rx.wait_for(1, 20);
    assert_eq!(alerts(&rx), ["all:error"], "{}", d.stderr());
    assert!(now_ms() < end);
    let a = d.get("/api/alarms/all").json();
    assert!(a["alarm"].get("maintenance").is_none(), "{a}");
}
