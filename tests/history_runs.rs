//! Job runs and the audit trail in the history (README, "History"),
//! against the real binary.

mod common;

use common::{wait_until, Daemon};
use serde_json::Value;

fn runs(d: &Daemon, name: &str, query: &str) -> Value {
    d.get(&format!("/api/services/{name}/runs{query}")).json()
}

/// (result, exit code, has a duration) of each run, newest first.
fn summary(v: &Value) -> Vec<(String, Option<i64>, bool)> {
    v["runs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["result"].as_str().unwrap_or("?").to_string(),
                        r["exit_code"].as_i64(),
                        r["duration_ms"].is_i64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn job_runs_are_listed_with_exit_codes_and_durations_across_a_restart() {
    let mut d = Daemon::start("");
    assert_eq!(d.post("/api/services/job.a?timeout=3600").status, 200);
    // A run that succeeds: start, then a beat.
    assert_eq!(d.post("/api/services/job.a/start").status, 200);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(d.post("/api/services/job.a").status, 200);
    // A run that fails with exit code 3 and output.
    assert_eq!(d.post("/api/services/job.a/start").status, 200);
    let r = d.request("POST", "/api/services/job.a/exit/3", &[], b"disk full\n");
    assert_eq!(r.status, 200);
    // A fail with no start before it: no duration.
    assert_eq!(d.post("/api/services/job.a/fail").status, 200);
    // A plain beat without a start is no run.
    assert_eq!(d.post("/api/services/job.a").status, 200);
    let want = vec![
        ("fail".to_string(), None, false),
        ("fail".to_string(), Some(3), true),
        ("ok".to_string(), Some(0), true),
    ];
    wait_until(10, "the runs are written", || {
        summary(&runs(&d, "job.a", "")) == want
    });
    let v = runs(&d, "job.a", "");
    assert_eq!(v["runs"][1]["output"], "disk full\n", "{v}");
    let ok = &v["runs"][2];
    assert!(ok["duration_ms"].as_i64().is_some_and(|ms| ms >= 30), "{v}");
    assert_eq!(
        ok["ended"]
            .as_i64()
            .zip(ok["started"].as_i64())
            .map(|(e, s)| e - s),
        ok["duration_ms"].as_i64()
    );
    assert_eq!(d.metric("lovebeat_history_runs_written_total"), 3.0);
    d.restart();
    assert_eq!(summary(&runs(&d, "job.a", "")), want);
    // Paged with a cursor.
    let first = runs(&d, "job.a", "?limit=2");
    assert_eq!(first["runs"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let rest = runs(&d, "job.a", &format!("?limit=2&cursor={cursor}"));
    assert_eq!(summary(&rest), want[2..].to_vec());
    assert!(rest["next_cursor"].is_null());
    // A deleted service keeps its runs; one never known is a 404.
    assert_eq!(d.delete("/api/services/job.a").status, 200);
    wait_until(10, "the delete is written", || {
        runs(&d, "job.a", "")["deleted_at"].is_i64()
    });
    assert_eq!(summary(&runs(&d, "job.a", "")), want);
    assert_eq!(d.get("/api/services/job.never/runs").status, 404);
    assert_eq!(d.get("/api/services/job.a/runs?cursor=x").status, 400);
}

/// (who, action, target) of each audit row, newest first.
fn audit(v: &Value) -> Vec<(String, String, String)> {
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["who"].as_str().unwrap_or("?").to_string(),
                        e["action"].as_str().unwrap_or("?").to_string(),
                        e["target"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn row(who: &str, action: &str, target: &str) -> (String, String, String) {
    (who.into(), action.into(), target.into())
}

#[test]
fn the_audit_trail_names_the_key_by_its_place_never_its_text() {
    let alarm = "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n\
                 [alerts.ops]\nwebhook = \"http://127.0.0.1:9/hook-secret\"\n";
    let mut d = Daemon::start_with_http(
        "read_keys = [\"reader-secret\"]\nwrite_keys = [\"first-secret\", \"second-secret\"]",
        alarm,
    );
    let w1 = [("Authorization", "Bearer second-secret")];
    let w0 = [("Authorization", "Bearer first-secret")];
    let read = [("Authorization", "Bearer reader-secret")];
    let post = |h: &[(&str, &str)], p: &str| d.request("POST", p, h, b"").status;
    assert_eq!(post(&w1, "/api/services/web.a?timeout=30s"), 200);
    assert_eq!(post(&w0, "/api/services/web.a?timeout=60s"), 200);
    // A plain beat of a known service changes nothing worth auditing.
    assert_eq!(post(&w0, "/api/services/web.a"), 200);
    assert_eq!(post(&w0, "/api/services/web.a/mute?for=1h"), 200);
    assert_eq!(post(&w1, "/api/services/web.a/unmute"), 200);
    assert_eq!(post(&w0, "/api/services/web.a/mute"), 200);
    assert_eq!(
        d.request("DELETE", "/api/services/web.a", &w1, b"").status,
        200
    );
    // A refused request is no change.
    assert_eq!(post(&read, "/api/services/web.b"), 403);
    let want = vec![
        row("write_keys[1]", "service.delete", "web.a"),
        row("write_keys[0]", "service.mute", "web.a"),
        row("write_keys[1]", "service.unmute", "web.a"),
        row("write_keys[0]", "service.snooze", "web.a"),
        row("write_keys[0]", "service.timeout", "web.a"),
        row("write_keys[1]", "service.create", "web.a"),
        row("config", "alert.add", "ops"),
        row("config", "alarm.add", "web"),
    ];
    let get = |d: &Daemon| d.request("GET", "/api/audit", &read, b"");
    wait_until(10, "the audit rows are written", || {
        audit(&get(&d).json()) == want
    });
    let text = get(&d).body;
    assert!(!text.contains("secret"), "a key in the audit trail: {text}");
    let v = get(&d).json();
    assert_eq!(v["entries"][4]["detail"], "timeout=60000", "{v}");
    // The audit trail needs the read key.
    assert_eq!(d.get("/api/audit").status, 401);

    // Without keys nothing was needed: `none`. A restart with the alarm
    // changed and another added is recorded by `config`.
    std::fs::write(d.path().join("conf.d/http.cfg"), "[http]\n").expect("no keys");
    d.stop();
    let cfg = std::fs::read_to_string(d.path().join("lovebeat.cfg")).expect("cfg");
    assert!(cfg.contains("[alerts.ops]"), "{cfg}");
    let cfg = cfg.replace(
        "pattern = \"web.*\"",
        "pattern = \"web.*\"\nexcludes = [\"web.test.*\"]",
    ) + "[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n";
    std::fs::write(d.path().join("lovebeat.cfg"), cfg).expect("cfg");
    d.restart_stopped();
    assert_eq!(d.post("/api/services/db.x").status, 200);
    wait_until(10, "the new rows are written", || {
        audit(&d.get("/api/audit?limit=3").json())
            == vec![
                row("none", "service.create", "db.x"),
                row("config", "alarm.add", "db"),
                row("config", "alarm.change", "web"),
            ]
    });
    // Neither the keys nor an alert's settings are in the file or its WAL.
    let mut bytes = std::fs::read(d.path().join("lovebeat.db.history")).expect("file");
    bytes.extend(std::fs::read(d.path().join("lovebeat.db.history-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    for secret in ["first-secret", "second-secret", "hook-secret"] {
        assert!(!text.contains(secret), "{secret} in the history file");
    }
}

#[test]
fn a_run_past_its_max_runtime_says_so_when_it_ends() {
    let d = Daemon::start("");
    assert_eq!(
        d.post("/api/services/job.slow?timeout=3600&max_runtime=1")
            .status,
        200
    );
    assert_eq!(d.post("/api/services/job.slow/start").status, 200);
    wait_until(20, "the run is too long", || {
        d.service("job.slow").is_some_and(|s| s["state"] == "error")
    });
    assert_eq!(d.post("/api/services/job.slow").status, 200);
    wait_until(10, "the run is written", || {
        runs(&d, "job.slow", "")["runs"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let v = runs(&d, "job.slow", "");
    let run = &v["runs"][0];
    assert_eq!(run["result"], "ok", "{v}");
    assert_eq!(run["ran_too_long"], true, "{v}");
    assert!(
        run["duration_ms"].as_i64().is_some_and(|ms| ms >= 1000),
        "{v}"
    );
}
