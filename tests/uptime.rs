//! Uptime against the real binary (README, "History"): a history made
//! through the API, with a mute and lovebeat's own downtime (a stop and a
//! start), is counted to the millisecond against the times the history
//! itself returns; and the endpoints refuse what they cannot answer.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon};
use serde_json::Value;

/// (ts, to, reason) of each change, oldest first.
fn changes(d: &Daemon, name: &str) -> Vec<(i64, String, String)> {
    let v = d
        .get(&format!("/api/services/{name}/history?limit=1000"))
        .json();
    let mut out: Vec<(i64, String, String)> = v["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["ts"].as_i64().unwrap_or(-1),
                        c["to"].as_str().unwrap_or("?").to_string(),
                        c["reason"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.reverse();
    out
}

/// lovebeat's runs as its history file records them.
fn runs(d: &Daemon) -> Vec<(i64, i64, Option<i64>)> {
    let out = std::process::Command::new("sqlite3")
        .arg(d.path().join("lovebeat.db.history"))
        .arg("SELECT started, last_seen, coalesce(stopped, -1) FROM lifecycle ORDER BY started")
        .output()
        .expect("sqlite3 (the test command installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<i64> = l.split('|').map(|x| x.parse().expect("number")).collect();
            (f[0], f[1], (f[2] >= 0).then_some(f[2]))
        })
        .collect()
}

fn ms(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn pause() {
    std::thread::sleep(Duration::from_millis(60));
}

#[test]
fn uptime_is_counted_to_the_millisecond_across_a_mute_and_lovebeats_own_downtime() {
    let mut d = Daemon::start("");
    let beat = |d: &Daemon, t: u32| {
        assert_eq!(
            d.post(&format!("/api/services/u.a?timeout={t}")).status,
            200
        )
    };
    beat(&d, 3600);
    pause();
    beat(&d, 0); // a tripwire: ERROR at once
    pause();
    beat(&d, 3600);
    pause();
    assert_eq!(d.post("/api/services/u.a/mute").status, 200);
    pause();
    assert_eq!(d.post("/api/services/u.a/unmute").status, 200);
    wait_until(10, "five changes written", || changes(&d, "u.a").len() == 5);
    assert!(d.stop().success(), "clean exit: {}", d.stderr());
    std::thread::sleep(Duration::from_millis(300));
    d.restart_stopped();
    pause();
    beat(&d, 0);
    pause();
    beat(&d, 3600);
    wait_until(10, "seven changes written", || {
        changes(&d, "u.a").len() == 7
    });

    let c = changes(&d, "u.a");
    let kinds: Vec<(&str, &str)> = c.iter().map(|x| (x.1.as_str(), x.2.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("ok", "created"),
            ("error", "timeout"),
            ("ok", "beat"),
            ("muted", "mute"),
            ("ok", "unmute"),
            ("error", "timeout"),
            ("ok", "beat"),
        ]
    );
    let t: Vec<i64> = c.iter().map(|x| x.0).collect();
    let r = runs(&d);
    assert_eq!(r.len(), 2, "{r:?}");
    let stopped = r[0].2.expect("the first run stopped cleanly");
    let started = r[1].0;
    assert!(
        t[4] <= stopped && stopped < started && started <= t[5],
        "{t:?} {r:?}"
    );

    let since = t[0];
    let until = t[6] + 250;
    wait_until(10, "until is past", || {
        d.get("/api/services/u.a/uptime?windows=1s").json()["now"]
            .as_i64()
            .is_some_and(|n| n > until)
    });
    let v = d
        .get(&format!(
            "/api/services/u.a/uptime?since={since}&until={until}"
        ))
        .json();
    let w = &v["windows"][0];
    assert_eq!(w["window"], "range", "{v}");
    let (e1, e2) = (t[2] - t[1], t[6] - t[5]);
    assert_eq!(ms(w, "down_ms"), e1 + e2, "{v}");
    assert_eq!(ms(w, "muted_ms"), t[4] - t[3], "{v}");
    assert_eq!(ms(w, "maintenance_ms"), 0, "{v}");
    assert_eq!(ms(w, "unknown_ms"), started - stopped, "{v}");
    let up = (t[1] - t[0]) + (t[3] - t[2]) + (t[5] - t[4]) - (started - stopped) + (until - t[6]);
    assert_eq!(ms(w, "up_ms"), up, "{v}");
    assert_eq!(ms(w, "since"), since);
    assert_eq!(ms(w, "until"), until);
    assert_eq!(w["incidents"], 2, "{v}");
    assert_eq!(w["recoveries"], 2, "{v}");
    assert_eq!(ms(w, "mttr_ms"), (e1 + e2 + 1) / 2, "{v}");
    assert_eq!(ms(w, "longest_down_ms"), e1.max(e2), "{v}");
    let uptime = w["uptime"].as_f64().expect("uptime");
    assert!(
        (uptime - up as f64 / (up + e1 + e2) as f64).abs() < 1e-12,
        "{v}"
    );
    let raw = w["uptime_raw"].as_f64().expect("uptime_raw");
    assert!(
        (raw - up as f64 / (until - since) as f64).abs() < 1e-12,
        "{v}"
    );

    // The days of the same range add up to it.
    let days = d
        .get(&format!(
            "/api/services/u.a/daily?since={since}&until={until}&tz=Europe/Stockholm"
        ))
        .json();
    assert_eq!(days["tz"], "Europe/Stockholm");
    let list = days["days"].as_array().expect("days");
    assert!(!list.is_empty(), "{days}");
    for field in ["up_ms", "down_ms", "muted_ms", "unknown_ms", "incidents"] {
        let sum: i64 = list.iter().map(|x| ms(x, field)).sum();
        assert_eq!(sum, ms(w, field), "{field}: {days}");
    }
    assert!(list[0]["date"].is_string(), "{days}");

    // Rolling windows: every millisecond counted once; before creation unknown.
    let v = d.get("/api/services/u.a/uptime").json();
    let names: Vec<&str> = v["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .filter_map(|w| w["window"].as_str())
        .collect();
    assert_eq!(names, ["24h", "7d", "30d", "90d", "365d"], "{v}");
    for w in v["windows"].as_array().expect("windows") {
        let total: i64 = [
            "up_ms",
            "down_ms",
            "muted_ms",
            "maintenance_ms",
            "unknown_ms",
        ]
        .iter()
        .map(|f| ms(w, f))
        .sum();
        assert_eq!(total, ms(w, "until") - ms(w, "since"), "{w}");
        assert_eq!(ms(w, "down_ms"), e1 + e2, "{w}");
    }
}

#[test]
fn uptime_refuses_what_it_cannot_answer() {
    let d = Daemon::start("[[alarms]]\nname = \"r\"\npattern = \"r.*\"\n");
    assert_eq!(d.post("/api/services/r.a?timeout=3600").status, 200);
    wait_until(10, "the creation is written", || {
        d.get("/api/services/r.a/uptime").status == 200
    });
    for path in [
        "/api/services/r.a/uptime?tz=Mars/Olympus",
        "/api/services/r.a/uptime?windows=24x",
        "/api/services/r.a/uptime?windows=0s",
        "/api/services/r.a/uptime?windows=",
        "/api/services/r.a/uptime?since=2000&until=1000",
        "/api/services/r.a/uptime?since=-5",
        "/api/services/r.a/uptime?since=1000&windows=24h",
        "/api/services/r.a/daily?since=1000&until=1000",
        "/api/services/r.a/daily?tz=Nowhere",
        "/api/services/r.a/daily?since=0&until=34646400001",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = d.get("/api/services/r.a/daily?since=0&until=34646400001");
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("400 days"));
    // 400 days exactly is answered, one entry a day.
    let v = d
        .get("/api/services/r.a/daily?since=0&until=34560000000")
        .json();
    assert_eq!(v["days"].as_array().map(|a| a.len()), Some(400), "{v}");
    assert_eq!(v["days"][0]["date"], "1970-01-01");
    assert_eq!(d.get("/api/services/r.never/uptime").status, 404);
    // An alarm is answered the same way.
    wait_until(10, "the alarm's creation is written", || {
        d.get("/api/alarms/r/uptime?windows=1h").status == 200
    });
    let v = d.get("/api/alarms/r/daily").json();
    assert_eq!(v["days"].as_array().map(|a| a.len()), Some(30), "{v}");
    assert_eq!(d.get("/api/alarms/r.never/daily").status, 404);
    // The default daily range: the last 30 days, today included.
    let v = d.get("/api/services/r.a/daily").json();
    assert_eq!(v["days"].as_array().map(|a| a.len()), Some(30), "{v}");
    assert_eq!(d.delete("/api/services/r.a").status, 200);
    wait_until(10, "the delete is written", || {
        d.get("/api/services/r.a/uptime").json()["deleted_at"].is_i64()
    });
    assert_eq!(d.get("/api/services/r.a/daily").status, 200);
}

#[test]
fn uptime_is_behind_the_read_key_and_off_with_the_history() {
    let d = Daemon::start_keyed("");
    assert_eq!(d.get("/api/services/k.a/uptime").status, 401);
    assert_eq!(d.get("/api/alarms/k.a/daily").status, 401);
    let r = d.request(
        "GET",
        "/api/services/k.a/uptime",
        &[("Authorization", "Bearer reader")],
        b"",
    );
    assert_eq!(r.status, 404);
    drop(d);
    let d = Daemon::start("[history]\nenabled = false\n");
    for path in ["/api/services/x/uptime", "/api/alarms/x/daily"] {
        let r = d.get(path);
        assert_eq!(r.status, 404);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap_or("")
                .contains("history is off"),
            "{path}"
        );
    }
}
