//! Job monitoring (README, "Cron jobs and scripts") end to end against the real binary: schedules,
//! start/fail/exit, max_runtime, snooze, reminders, dependencies, badges
//! and API keys.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::receiver::Receiver;
use common::Daemon;
use serde_json::json;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn state(d: &Daemon, name: &str) -> String {
    d.service(name).map_or("absent".into(), |s| {
        s["state"].as_str().unwrap_or("").to_string()
    })
}

fn wait_state(d: &Daemon, name: &str, want: &str, secs: u64) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if state(d, name) == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{name} did not become {want} within {secs} s: {:?}",
        d.service(name)
    );
}

#[test]
fn a_schedule_set_over_http_goes_error_after_fire_time_plus_grace() {
    let d = Daemon::start("");
    // `* * * * *` fires at every minute; with 1 s of grace the deadline is
    // the next minute boundary + 1 s. Start close to a boundary so the
    // test takes seconds: wait until 3 s before one.
    let to_boundary = 60_000 - now_ms() % 60_000;
    if to_boundary > 3_000 {
        std::thread::sleep(Duration::from_millis((to_boundary - 3_000) as u64));
    }
    let set_at = now_ms();
    let r =
        d.post("/api/services/cron.job?schedule=*%20*%20*%20*%20*&tz=Europe/Stockholm&grace=1s");
    assert_eq!(r.status, 200, "{}", r.body);
    let s = d.service("cron.job").expect("created");
    assert_eq!(s["timeout"], -3);
    assert_eq!(s["schedule"], "* * * * *");
    assert_eq!(s["tz"], "Europe/Stockholm");
    assert_eq!(s["grace"], 1000);
    // The request beat it; the deadline is the first minute boundary after
    // that beat, plus grace.
    let beat = s["last_beat"].as_i64().expect("beaten");
    assert!(beat >= set_at);
    let deadline = s["next_deadline"].as_i64().expect("deadline");
    assert_eq!(deadline, (beat / 60_000 + 1) * 60_000 + 1000);
    assert_eq!(s["state"], "ok");
    wait_state(&d, "cron.job", "error", 8);
    let late = now_ms() - deadline;
    assert!(
        (0..1000).contains(&late),
        "ERROR {late} ms after the deadline"
    );
    d.post("/api/services/cron.job");
    assert_eq!(state(&d, "cron.job"), "ok");
    // A plain timeout clears the schedule.
    d.post("/api/services/cron.job?timeout=60");
    let s = d.service("cron.job").expect("exists");
    assert_eq!(s["timeout"], 60000);
    assert!(
        s.get("schedule").is_none() && s.get("next_deadline").is_none(),
        "{s}"
    );
}

#[test]
fn bad_schedules_zones_and_durations_are_400s_naming_the_problem() {
    let d = Daemon::start("");
    for (query, word) in [
        ("schedule=61%20*%20*%20*%20*", "61 * * * *"),
        ("schedule=%40daily&tz=Mars/Base", "Mars/Base"),
        ("schedule=%40daily&grace=soon", "grace"),
        ("max_runtime=-5", "max_runtime"),
        ("tz=UTC", "need a schedule"),
        ("timeout=60&schedule=%40daily", "not both"),
        ("schedule=0%200%2030%202%20*", "never fires"),
    ] {
        let r = d.post(&format!("/api/services/bad?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(word), "{query}: {msg}");
    }
    assert!(d.service("bad").is_none(), "nothing was created");
    // JSON works the same way, and a duration string is a duration.
    let r = d.request(
        "POST",
        "/api/services/nightly",
        &[("Content-Type", "application/json")],
        br#"{"schedule": "0 3 * * *", "tz": "Europe/Stockholm", "grace": "10m", "beat": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let s = d.service("nightly").expect("created");
    assert_eq!(s["grace"], 600_000);
    assert_eq!(s["last_beat"], -1);
    let next = s["next_deadline"].as_i64().expect("deadline");
    assert!(next > now_ms() && next <= now_ms() + 86_400_000 + 3_600_000 + 600_000);
}

#[test]
fn start_then_beat_records_the_run_time() {
    let d = Daemon::start("");
    assert_eq!(d.post("/api/services/backup/start").status, 200);
    let s = d.service("backup").expect("created");
    assert_eq!(s["running"], true);
    let started = s["started_at"].as_i64().expect("started_at");
    std::thread::sleep(Duration::from_millis(300));
    d.post("/api/services/backup");
    let s = d.service("backup").expect("exists");
    assert_eq!(s["running"], false);
    let runs = s["run_history"].as_array().expect("run_history").clone();
    assert_eq!(runs.len(), 1);
    let ran = runs[0].as_i64().expect("ms");
    assert_eq!(ran, s["last_beat"].as_i64().expect("beat") - started);
    assert!((300..2000).contains(&ran), "{ran}");
    // statsd start works the same way; fail makes it ERROR at once.
    d.udp("queue.job.start:1|c");
    d.eventually("running", || {
        d.service("queue.job").is_some_and(|s| s["running"] == true)
    });
    d.udp("queue.job.fail:1|c");
    d.eventually("failed", || state(&d, "queue.job") == "error");
    let s = d.service("queue.job").expect("exists");
    assert_eq!(s["running"], false);
    assert_eq!(s["last_failure"]["exit_code"], serde_json::Value::Null);
    assert_eq!(s["last_failure"]["output"], "");
}

#[test]
fn a_run_past_max_runtime_goes_error_as_ran_too_long() {
    let d = Daemon::start("");
    d.post("/api/services/slow.job?max_runtime=2s&timeout=3600");
    d.post("/api/services/slow.job/start");
    let s = d.service("slow.job").expect("exists");
    assert_eq!(s["max_runtime"], 2000);
    assert_eq!(s["state"], "ok");
    let took = wait_state(&d, "slow.job", "error", 5);
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    let s = d.service("slow.job").expect("exists");
    assert_eq!(s["last_failure"]["reason"], "ran too long");
    // The next beat ends the run and the failure.
    d.post("/api/services/slow.job");
    let s = d.service("slow.job").expect("exists");
    assert_eq!(s["state"], "ok");
    assert_eq!(s["run_history"].as_array().map(Vec::len), Some(1));
}

#[test]
fn exit_codes_fail_with_their_output_and_the_webhook_carries_it() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"jobs\"\npattern = \"job.*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    ));
    d.post("/api/services/job.ok?timeout=3600");
    assert_eq!(
        d.request("POST", "/api/services/job.ok/exit/0", &[], b"fine")
            .status,
        200
    );
    assert_eq!(state(&d, "job.ok"), "ok");
    let r = d.request(
        "POST",
        "/api/services/job.ok/exit/3",
        &[("Content-Type", "text/plain")],
        b"disk full\n\xc3\xa9t\xc3\xa9 \xff",
    );
    assert_eq!(r.status, 200);
    let s = d.service("job.ok").expect("exists");
    assert_eq!(s["state"], "error");
    assert_eq!(s["last_failure"]["exit_code"], 3);
    assert_eq!(
        s["last_failure"]["output"],
        "disk full\n\u{e9}t\u{e9} \u{fffd}"
    );
    assert!(s["last_failure"]["ts"].as_i64().is_some());
    let got = rx.wait_for(1, 10);
    let b = got.first().expect("webhook").json();
    assert_eq!(b["to_state"], "error");
    assert_eq!(b["failure"]["exit_code"], 3);
    assert_eq!(b["failure"]["output"], "disk full\n\u{e9}t\u{e9} \u{fffd}");
    assert!(b.get("repeat").is_none());
    assert_eq!(d.post("/api/services/job.ok/exit/256").status, 400);
    assert_eq!(d.post("/api/services/job.ok/exit/x").status, 400);
    // Recovery carries no failure.
    d.post("/api/services/job.ok");
    let got = rx.wait_for(2, 10);
    let b = got.get(1).expect("recovery").json();
    assert_eq!(b["to_state"], "ok");
    assert!(b.get("failure").is_none(), "{b}");
}

#[test]
fn a_snooze_unmutes_by_itself() {
    let d = Daemon::start("");
    d.post("/api/services/noisy?timeout=0");
    assert_eq!(state(&d, "noisy"), "error");
    let before = now_ms();
    assert_eq!(d.post("/api/services/noisy/mute?for=2s").status, 200);
    let s = d.service("noisy").expect("exists");
    assert_eq!(s["state"], "muted");
    let until = s["muted_until"].as_i64().expect("muted_until");
    assert!((before + 2000..before + 2500).contains(&until), "{until}");
    let since = s["muted_since"].as_i64().expect("since");
    // A later snooze keeps muted_since and moves the end.
    std::thread::sleep(Duration::from_millis(200));
    d.post("/api/services/noisy/mute?for=1s");
    let s = d.service("noisy").expect("exists");
    assert_eq!(s["muted_since"], since);
    let until = s["muted_until"].as_i64().expect("muted_until");
    wait_state(&d, "noisy", "error", 4);
    let late = now_ms() - until;
    assert!(
        (0..150).contains(&late),
        "unmuted {late} ms after muted_until"
    );
    let s = d.service("noisy").expect("exists");
    assert_eq!(s["muted_since"], 0);
    assert!(s.get("muted_until").is_none());
    // A plain mute has no end.
    d.post("/api/services/noisy/mute?for=1s");
    d.post("/api/services/noisy/mute");
    std::thread::sleep(Duration::from_millis(1300));
    let s = d.service("noisy").expect("exists");
    assert_eq!(s["state"], "muted");
    assert!(s.get("muted_until").is_none());
    assert_eq!(d.post("/api/services/noisy/mute?for=soon").status, 400);
}

#[test]
fn a_repeat_sends_the_same_incident_again() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"db\"\npattern = \"db.*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\nrepeat = \"1s\"\n",
        rx.url("/hook")
    ));
    d.post("/api/services/db.main?timeout=0");
    let got = rx.wait_for(3, 10);
    assert!(got.len() >= 3, "{got:?}");
    let bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    assert_eq!(bodies[0]["incident_number"], 1);
    assert!(bodies[0].get("repeat").is_none());
    assert_eq!(bodies[1]["incident_number"], 1);
    assert_eq!(bodies[1]["repeat"], 1);
    assert_eq!(bodies[2]["repeat"], 2);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
    // Recovery stops the reminders.
    d.post("/api/services/db.main?timeout=3600");
    let n = rx.wait_for(100, 1).len();
    std::thread::sleep(Duration::from_millis(2000));
    let after = rx.wait_for(100, 0);
    assert_eq!(after.len(), n, "no reminder after recovery");
    assert_eq!(after.last().expect("recovery").json()["to_state"], "ok");
}

#[test]
fn a_child_alarm_is_held_while_its_parent_is_error() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"network-$site\"\npattern = \"net.$site.*\"\n[[alarms]]\nname = \"server-$site\"\npattern = \"srv.$site.*\"\nalerts = [\"hook\"]\ndepends_on = [\"network-$site\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    ));
    d.post("/api/services/net.sto.router?timeout=3600");
    d.post("/api/services/srv.sto.web?timeout=3600");
    d.post("/api/services/srv.gbg.web?timeout=3600");
    // The network of sto fails, then its server.
    d.post("/api/services/net.sto.router?timeout=0");
    d.post("/api/services/srv.sto.web?timeout=0");
    let a = d.get("/api/alarms/server-sto").json();
    assert_eq!(a["alarm"]["state"], "error", "its state still changes");
    assert_eq!(a["alarm"]["suppressed_by"], json!(["network-sto"]));
    // gbg has its own network alarm (none configured for it here): not held.
    d.post("/api/services/srv.gbg.web?timeout=0");
    let got = rx.wait_for(1, 5);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].json()["name"], "server-gbg");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.wait_for(2, 0).len(), 1, "server-sto's alert is held");
    // The network recovers: the held ERROR is released.
    d.post("/api/services/net.sto.router?timeout=3600");
    let got = rx.wait_for(2, 5);
    assert_eq!(got.len(), 2, "{got:?}");
    let b = got[1].json();
    assert_eq!(b["name"], "server-sto");
    assert_eq!(b["to_state"], "error");
    let a = d.get("/api/alarms/server-sto").json();
    assert!(a["alarm"].get("suppressed_by").is_none());

    // Held and recovered before the parent: dropped, nothing sent.
    d.post("/api/services/srv.sto.web?timeout=3600");
    rx.wait_for(3, 5);
    d.post("/api/services/net.sto.router?timeout=0");
    d.post("/api/services/srv.sto.web?timeout=0");
    d.post("/api/services/srv.sto.web?timeout=3600");
    d.post("/api/services/net.sto.router?timeout=3600");
    std::thread::sleep(Duration::from_millis(500));
    let names: Vec<String> = rx
        .wait_for(100, 0)
        .iter()
        .map(|r| format!("{}:{}", r.json()["name"], r.json()["to_state"]))
        .collect();
    assert_eq!(names.len(), 3, "{names:?} {}", d.stderr());
}

#[test]
fn dependency_cycles_and_unknown_names_are_config_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.cfg");
    for (text, word) in [
        ("[[alarms]]\nname = \"a\"\npattern = \"a.*\"\ndepends_on = [\"b\"]\n[[alarms]]\nname = \"b\"\npattern = \"b.*\"\ndepends_on = [\"a\"]\n", "cycle"),
        ("[[alarms]]\nname = \"a\"\npattern = \"a.*\"\ndepends_on = [\"nope\"]\n", "nope"),
    ] {
        std::fs::write(&cfg, text).expect("write");
        let (status, out) = common::run_binary(
            dir.path(),
            &["--config", cfg.to_str().expect("utf8"), "--config-dir", "/nonexistent"],
        );
        assert_eq!(status.code(), Some(2), "{out}");
        assert!(out.contains(word), "{out}");
    }
}

#[test]
fn badges_for_an_ok_and_an_error_alarm() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"good\"\npattern = \"g.*\"\n[[alarms]]\nname = \"bad\"\npattern = \"b.*\"\n",
    );
    d.post("/api/services/g.one?timeout=3600");
    d.post("/api/services/b.one?timeout=0");
    let svg = d.get("/badge/good.svg");
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(
        svg.body.starts_with("<svg")
            && svg.body.contains(">up<")
            && svg.body.contains(">lovebeat<")
    );
    let svg = d.get("/badge/bad.svg?label=backups");
    assert!(
        svg.body.contains(">down<") && svg.body.contains(">backups<"),
        "{}",
        svg.body
    );
    let j = d.get("/badge/good.json").json();
    assert_eq!(
        j,
        json!({"schemaVersion": 1, "label": "lovebeat", "message": "up", "color": "brightgreen"})
    );
    let j = d.get("/badge/bad.json").json();
    assert_eq!(j["message"], "down");
    assert_eq!(j["color"], "red");
    assert_eq!(d.get("/badge/nope.svg").status, 404);
    assert_eq!(d.get("/badge/good.png").status, 404);
    d.post("/api/services/g.one/mute");
    assert_eq!(d.get("/badge/good.json").json()["message"], "muted");
}

/// A badge tells whether an alarm of that name exists and its state: with
/// read keys set it stays open by default (READMEs embed badges), and
/// `public_badges = false` makes it need a read key like the rest of the
/// API, with the same 401 whether the alarm exists or not.
#[test]
fn badges_stay_open_with_read_keys_unless_public_badges_is_false() {
    let alarm = "[[alarms]]\nname = \"good\"\npattern = \"g.*\"\n";
    let open = Daemon::start_keyed(alarm);
    assert_eq!(open.post("/api/services/g.one?key=writer").status, 200);
    assert_eq!(open.get("/badge/good.svg").status, 200);
    assert_eq!(open.get("/badge/nope.json").status, 404);
    let closed = Daemon::start_with_http(
        "read_keys = [\"reader\"]\nwrite_keys = [\"writer\"]\npublic_badges = false",
        alarm,
    );
    assert_eq!(closed.post("/api/services/g.one?key=writer").status, 200);
    for path in ["/badge/good.svg", "/badge/good.json", "/badge/nope.svg"] {
        assert_eq!(closed.get(path).status, 401, "{path}");
        assert_eq!(
            closed.get(&format!("{path}?key=wrong")).status,
            401,
            "{path}"
        );
    }
    assert_eq!(closed.get("/badge/good.svg?key=reader").status, 200);
    assert_eq!(closed.get("/badge/good.json?key=writer").status, 200);
    assert_eq!(closed.get("/badge/nope.svg?key=reader").status, 404);
    assert_eq!(closed.get("/version").status, 200);
}

#[test]
fn api_keys_guard_reads_and_writes() {
    let d = Daemon::start_keyed("");
    let call = |method: &str, path: &str, key: Option<&str>| {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        d.request(method, path, &headers, b"").status
    };
    d.request(
        "POST",
        "/api/services/k.one",
        &[("Authorization", "Bearer writer")],
        b"",
    );
    let reads = [
        "/api/services",
        "/api/services/k.one",
        "/api/alarms",
        "/api/status",
        "/metrics",
    ];
    for path in reads {
        assert_eq!(call("GET", path, None), 401, "{path}");
        assert_eq!(call("GET", path, Some("wrong")), 401, "{path}");
        assert_eq!(call("GET", path, Some("reader")), 200, "{path}");
        assert_eq!(call("GET", path, Some("writer")), 200, "{path}");
    }
    let writes = [
        ("POST", "/api/services/k.one"),
        ("POST", "/api/services/k.one/mute"),
        ("POST", "/api/services/k.one/unmute"),
        ("POST", "/api/services/k.one/start"),
        ("POST", "/api/services/k.one/exit/0"),
        ("POST", "/api/services/k.one/fail"),
        ("DELETE", "/api/services/k.one"),
    ];
    for (method, path) in writes {
        assert_eq!(call(method, path, None), 401, "{method} {path}");
        assert_eq!(call(method, path, Some("reader")), 403, "{method} {path}");
        assert_eq!(call(method, path, Some("writer")), 200, "{method} {path}");
    }
    // ?key= works for one-line curl; badges and /version stay open.
    assert_eq!(d.post("/api/services/k.two?key=writer").status, 200);
    assert_eq!(d.get("/api/services?key=reader").status, 200);
    assert_eq!(call("GET", "/version", None), 200);
    assert_eq!(call("GET", "/", None), 200);
    let r = d.get("/api/services");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap_or("").contains("key"));
    // The key is never logged.
    assert!(!d.stderr().contains("writer") && !d.stderr().contains("reader"));
}

#[test]
fn job_fields_survive_a_restart() {
    let mut d = Daemon::start("");
    d.post("/api/services/n.job?schedule=0%203%20*%20*%20*&tz=Europe/Stockholm&grace=10m&max_runtime=1h");
    d.post("/api/services/n.job/start");
    d.post("/api/services/n.job/exit/0");
    d.request("POST", "/api/services/f.job/exit/4", &[], b"boom");
    d.post("/api/services/s.job/mute?for=1h");
    d.post("/api/services/plain?timeout=60");
    let before: Vec<_> = ["n.job", "f.job", "s.job"]
        .iter()
        .map(|n| d.service(n).expect("exists"))
        .collect();
    d.restart();
    for b in before {
        let name = b["name"].as_str().expect("name");
        let a = d.service(name).expect("reloaded");
        for key in [
            "schedule",
            "tz",
            "grace",
            "max_runtime",
            "run_history",
            "last_failure",
            "muted_until",
            "muted_since",
            "state",
        ] {
            assert_eq!(a.get(key), b.get(key), "{name}.{key}");
        }
    }
    // A plain service gains no field.
    let p = d.service("plain").expect("plain");
    let keys: Vec<&String> = p.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "last_beat",
            "last_state_change",
            "muted_since",
            "name",
            "state",
            "timeout"
        ]
    );
}

#[test]
fn config_services_defaults_give_a_schedule() {
    let d = Daemon::start(
        "[[services]]\npattern = \"nightly.*\"\nschedule = \"@daily\"\ntz = \"Europe/Stockholm\"\ngrace = \"30m\"\nmax_runtime = 3600\n",
    );
    d.post("/api/services/nightly.backup");
    let s = d.service("nightly.backup").expect("created");
    assert_eq!(s["timeout"], -3);
    assert_eq!(s["schedule"], "@daily");
    assert_eq!(s["grace"], 1_800_000);
    assert_eq!(s["max_runtime"], 3_600_000);
}

#[test]
fn a_script_alert_gets_the_failure_output_and_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.txt");
    let script = dir.path().join("alert.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep ^LOVEBEAT_ > {}\n",
            env_file.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"jobs\"\npattern = \"job.*\"\nalerts = [\"run\"]\n[alerts.run]\nscript = \"{}\"\n",
        script.display()
    ));
    d.post("/api/services/job.etl?timeout=3600");
    d.request(
        "POST",
        "/api/services/job.etl/exit/7",
        &[],
        b"no space left",
    );
    d.eventually("script ran", || {
        std::fs::read_to_string(&env_file).is_ok_and(|s| s.contains("LOVEBEAT_EXIT_CODE"))
    });
    let env = std::fs::read_to_string(&env_file).expect("env");
    for line in [
        "LOVEBEAT_OUTPUT=no space left",
        "LOVEBEAT_EXIT_CODE=7",
        "LOVEBEAT_STATE=ERROR",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
}
