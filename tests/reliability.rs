//! The promises of docs/RELIABILITY.md that need the real binary and real
//! peers: no alarm change is lost, a flapping alarm does not flood, an
//! incident is never skipped, a restart announces what was not, and
//! lovebeat's own trouble (a full disk, a receiver that refuses) reaches
//! a person through the built-in `lovebeat.self` alarm.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{wait_until, Daemon};

/// A websocket client that upgrades and then never reads: the slowest
/// view there is.
fn stalled_websocket(d: &Daemon) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        d.http
    )
    .expect("upgrade");
    s
}

fn hook_config(url: &str, extra: &str) -> String {
    format!("[alerts.hook]\nwebhook = \"{url}\"\n{extra}")
}

#[test]
fn every_change_of_a_mass_outage_reaches_the_webhook_with_stalled_views_attached() {
    const ALARMS: usize = 20_000;
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "[[alarms]]\nname = \"a-$n\"\npattern = \"m.$n\"\nalerts = [\"hook\"]\n",
    ));
    let _views: Vec<TcpStream> = (0..3).map(|_| stalled_websocket(&d)).collect();
    // Every service gets a one-second timeout in one burst: they all go
    // ERROR together a second later.
    let mut lines = String::new();
    for i in 0..ALARMS {
        lines.push_str(&format!("m.s{i}.timeout:1|g\n"));
    }
    d.tcp(&lines);
    let got = rx.wait_for(ALARMS, 180);
    let mut names: Vec<String> = got
        .iter()
        .map(|r| r.json()["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ALARMS, "every alarm announced once");
    assert!(got.iter().all(|r| r.json()["to_state"] == "error"));
    wait_until(10, "the counters to settle", || {
        d.metric("lovebeat_alerts_queued") == 0.0
    });
    assert_eq!(d.metric("lovebeat_alerts_sent_total"), ALARMS as f64);
    assert_eq!(d.metric("lovebeat_alerts_failed_total"), 0.0);
    assert_eq!(d.metric("lovebeat_alerts_dropped_total"), 0.0);
    assert_eq!(rx.count(), ALARMS);
}

#[test]
fn a_service_toggled_a_thousand_times_is_announced_as_flapping_once_and_settled_once() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "[[alarms]]\nname = \"flap\"\npattern = \"flap.*\"\nalerts = [\"hook\"]\n\
         [flapping]\nwindow = \"3s\"\nstart = 6\nstop = 2\n",
    ));
    let mut lines = String::new();
    for _ in 0..1000 {
        lines.push_str("flap.x.fail:1|c\nflap.x.beat:1|c\n");
    }
    d.tcp(&lines);
    wait_until(10, "the flapping notice", || {
        rx.got().iter().any(|r| r.json()["flapping"] == true)
    });
    let alarm = d.get("/api/alarms/flap").json();
    assert_eq!(alarm["alarm"]["flapping"], true, "{alarm}");
    let got = rx.wait_for(100, 12);
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    let started: Vec<_> = bodies.iter().filter(|b| b["flapping"] == true).collect();
    let stopped: Vec<_> = bodies.iter().filter(|b| b["flapping"] == false).collect();
    assert_eq!((started.len(), stopped.len()), (1, 1), "{bodies:?}");
    assert!(
        bodies.len() <= 7,
        "at most 5 changes, then the two notices: {bodies:?}"
    );
    assert_eq!(stopped[0]["to_state"], "ok", "settled in its final state");
    let (t_start, t_stop) = {
        let at = |want: bool| {
            got.iter()
                .find(|r| r.json()["flapping"] == want)
                .map(|r| r.at)
                .expect("notice")
        };
        (at(true), at(false))
    };
    assert!(
        t_stop.duration_since(t_start) >= Duration::from_secs(2),
        "it settles once the window has passed"
    );
    let alarm = d.get("/api/alarms/flap").json();
    assert!(alarm["alarm"].get("flapping").is_none(), "{alarm}");
    assert_eq!(d.metric("lovebeat_alarms_flapping_total"), 1.0);
}

#[test]
fn an_incident_that_ends_before_its_alert_is_sent_is_announced_too() {
    // Each POST takes 300 ms: the alarm fails, recovers, fails and
    // recovers again before its first alert is through.
    let rx = Receiver::start_with_delay(Duration::from_millis(300), |_| Some(200));
    let d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "[[alarms]]\nname = \"inc\"\npattern = \"inc.*\"\nalerts = [\"hook\"]\n",
    ));
    for line in [
        "inc.x.fail:1|c",
        "inc.x.beat:1|c",
        "inc.x.fail:1|c",
        "inc.x.beat:1|c",
    ] {
        d.tcp(&format!("{line}\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = rx.wait_for(4, 10);
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["to_state"].as_str().unwrap_or_default().to_string(),
                b["incident_number"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("error".to_string(), 1),
            ("ok".to_string(), 1),
            ("error".to_string(), 2),
            ("ok".to_string(), 2)
        ],
        "both incidents, in order"
    );
}

#[test]
fn a_restart_announces_what_was_not_and_repeats_nothing() {
    let up = Arc::new(AtomicBool::new(false));
    let rx = Receiver::start({
        let up = up.clone();
        move |_| up.load(Ordering::SeqCst).then_some(200)
    });
    let mut d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "[[alarms]]\nname = \"r\"\npattern = \"r.*\"\nalerts = [\"hook\"]\n",
    ));
    d.tcp("r.x.fail:1|c\n");
    rx.wait_for(1, 5);
    // The receiver hangs: the shutdown gives up on the alert.
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(d.stderr().contains("undelivered"), "{}", d.stderr());
    up.store(true, Ordering::SeqCst);
    d.restart_stopped();
    let got = rx.wait_for(2, 10);
    assert_eq!(got.len(), 2, "announced after the restart");
    let b = got[1].json();
    assert_eq!(
        (
            b["name"].as_str(),
            b["to_state"].as_str(),
            b["incident_number"].as_u64()
        ),
        (Some("r"), Some("error"), Some(1))
    );
    wait_until(5, "the delivery counted", || {
        d.metric("lovebeat_alerts_sent_total") == 1.0
    });
    d.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rx.count(), 2, "an announced incident is not repeated");
}

#[test]
fn a_receiver_that_refuses_is_logged_counted_and_reported_through_lovebeat_self() {
    let bad = Receiver::start(|_| Some(400));
    let ops = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"svc\"\npattern = \"svc.*\"\nalerts = [\"bad\"]\n\
         [alerts.bad]\nwebhook = \"{}\"\n[alerts.ops]\nwebhook = \"{}\"\n\
         [self_alarm]\nalerts = [\"ops\"]\n",
        bad.url("/bad"),
        ops.url("/ops")
    ));
    d.post("/api/services/svc.a?timeout=0");
    let got = ops.wait_for(1, 10);
    assert_eq!(got.len(), 1, "{}", d.stderr());
    let b = got[0].json();
    assert_eq!(
        (b["name"].as_str(), b["to_state"].as_str()),
        (Some("lovebeat.self"), Some("error"))
    );
    assert_eq!(b["failed_services"][0], "lovebeat.self.alerts");
    assert_eq!(d.metric("lovebeat_alerts_failed_total"), 1.0);
    assert!(
        d.stderr().contains("not delivered for alarm svc"),
        "{}",
        d.stderr()
    );
    let svc = d
        .service("lovebeat.self.alerts")
        .expect("the trouble's service");
    assert_eq!(svc["state"], "error");
}

/// Distinct names that do not compress: a database of a known size.
fn filler(n: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = String::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("fill.{x:016x}.beat:1|c\n"));
    }
    out
}

fn prlimit_fsize(pid: u32, limit: &str) {
    let ok = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--fsize={limit}:")])
        .status()
        .expect("prlimit (util-linux)")
        .success();
    assert!(ok, "prlimit --fsize={limit}");
}

#[test]
fn a_full_disk_keeps_the_old_database_and_alerts_through_lovebeat_self() {
    let ops = Receiver::start(|_| Some(200));
    let d = Daemon::start_with_interval(
        &format!(
            // The history file, on the same full disk, would fail too (and
            // is reported as lovebeat.self.history); this test is the save's.
            "[alerts.ops]\nwebhook = \"{}\"\n[self_alarm]\nalerts = [\"ops\"]\n[history]\nenabled = false\n",
            ops.url("/ops")
        ),
        1,
    );
    let db = d.path().join("lovebeat.db");
    d.tcp(&filler(4000));
    wait_until(10, "a save of the filled database", || {
        std::fs::metadata(&db).is_ok_and(|m| m.len() > 40_000)
    });
    let before = std::fs::read(&db).expect("db");
    // A file-size limit below the database's size: every save now fails
    // with EFBIG, as on a full disk. The log file is smaller, so logging
    // goes on.
    let log_len = std::fs::metadata(&d.stderr_path).map_or(0, |m| m.len());
    prlimit_fsize(d.pid(), &(log_len + 30_000).to_string());
    d.post("/api/services/after.limit");
    let got = ops.wait_for(1, 10);
    assert_eq!(got.len(), 1, "{}", d.stderr());
    let b = got[0].json();
    assert_eq!(
        (b["name"].as_str(), b["to_state"].as_str()),
        (Some("lovebeat.self"), Some("error")),
        "{b}"
    );
    assert_eq!(b["failed_services"][0], "lovebeat.self.save");
    let svc = d.service("lovebeat.self.save").expect("service");
    assert_eq!(svc["state"], "error");
    assert!(
        svc["last_failure"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("File too large"),
        "{svc}"
    );
    assert_eq!(
        std::fs::read(&db).expect("db"),
        before,
        "the old file is kept"
    );
    let temps: Vec<_> = std::fs::read_dir(d.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("lovebeat.db.tmp"))
        .collect();
    assert!(
        temps.is_empty(),
        "failed saves leave no temp file: {temps:?}"
    );
    assert!(d.service("after.limit").is_some(), "still serving");
    // Room again: the next save succeeds and the alarm recovers.
    prlimit_fsize(d.pid(), "unlimited");
    let got = ops.wait_for(2, 10);
    assert_eq!(got.len(), 2, "{}", d.stderr());
    assert_eq!(got[1].json()["to_state"], "ok");
    assert_ne!(std::fs::read(&db).expect("db"), before, "saved again");
}

#[test]
fn a_wall_clock_step_forward_does_not_expire_every_service() {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "libfaketime is missing: the test command installs Debian's libfaketime"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").expect("offset");
    let offset_path = offset.to_string_lossy().into_owned();
    let d = Daemon::start_with_env(
        "",
        &[
            ("LD_PRELOAD", lib),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    for i in 0..50 {
        d.post(&format!("/api/services/step.s{i}?timeout=20"));
    }
    let start = Instant::now();
    std::fs::write(&offset, "+1h\n").expect("jump");
    wait_until(10, "the jump noticed", || d.stderr().contains("clock"));
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..50 {
        let s = d.service(&format!("step.s{i}")).expect("service");
        assert_eq!(
            s["state"],
            "ok",
            "an hour's step is a restart's grace, not 50 expiries ({:?} after the step)",
            start.elapsed()
        );
    }
    assert!(d.get("/api/status").body.contains("num_error 0\n"));
}

#[test]
fn kill_9_during_saves_under_load_always_leaves_a_database_that_loads() {
    let mut d = Daemon::start_with_interval("", 1);
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut interrupted = 0;
    for round in 0..5 {
        // A batch of new services, then two completed saves: the batch is
        // in the file.
        let mut lines = String::new();
        for i in 0..20_000 {
            lines.push_str(&format!("kill.r{round}.s{i}.beat:1|c\n"));
        }
        d.tcp(&lines);
        let last = format!("kill.r{round}.s19999");
        wait_until(30, "the batch applied", || d.service(&last).is_some());
        let saves = d.metric("lovebeat_db_saves_total");
        wait_until(30, "two saves after the batch", || {
            d.metric("lovebeat_db_saves_total") >= saves + 2.0
        });
        // More load while it is killed at a random moment of the save
        // cycle.
        let mut more = String::new();
        for i in 0..20_000 {
            more.push_str(&format!("kill.r{round}.extra{i}.beat:1|c\n"));
        }
        d.tcp(&more);
        std::thread::sleep(Duration::from_millis(next() % 1000));
        d.kill9();
        interrupted += std::fs::read_dir(d.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("lovebeat.db.tmp.")
            })
            .count();
        d.restart_stopped();
        assert!(
            d.service(&last).is_some(),
            "round {round}: a batch saved twice before the kill is there after it"
        );
        assert!(
            std::fs::read_dir(d.path())
                .expect("dir")
                .filter_map(|e| e.ok())
                .all(|e| !e
                    .file_name()
                    .to_string_lossy()
                    .starts_with("lovebeat.db.tmp.")),
            "the killed save's temp file is removed at start"
        );
    }
    eprintln!("{interrupted} of 5 kills interrupted a save");
}

#[test]
fn the_event_log_holds_every_service_of_a_burst() {
    const SERVICES: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let d = Daemon::start_in(dir, &format!("[eventlog]\npath = \"{}\"\n", log.display()));
    let mut lines = String::with_capacity(SERVICES * 24);
    for i in 0..SERVICES {
        lines.push_str(&format!("burst.s{i}.beat:1|c\n"));
    }
    d.tcp(&lines);
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"type\":\"service_added\""))
            .count()
    };
    wait_until(60, "every service_added line", || count() >= SERVICES);
    assert_eq!(count(), SERVICES);
    assert!(!std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("events_lost"));
    assert_eq!(d.metric("lovebeat_eventlog_lost_total"), 0.0);
}

#[test]
fn reminders_to_a_hanging_receiver_do_not_pile_up() {
    let rx = Receiver::start(|_| None);
    let d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "repeat = \"1s\"\n[[alarms]]\nname = \"r\"\npattern = \"r.*\"\nalerts = [\"hook\"]\n",
    ));
    d.tcp("r.x.fail:1|c\n");
    rx.wait_for(1, 5);
    // Four reminders fall due while the change hangs: one waits, the
    // others are skipped (it would be five messages queued otherwise).
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(d.metric("lovebeat_alerts_queued"), 2.0, "{}", d.stderr());
}

#[test]
fn reminders_go_on_after_a_restart_and_the_incident_is_not_announced_again() {
    let rx = Receiver::start(|_| Some(200));
    let mut d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "repeat = \"1s\"\n[[alarms]]\nname = \"r\"\npattern = \"r.*\"\nalerts = [\"hook\"]\n",
    ));
    d.tcp("r.x.fail:1|c\n");
    rx.wait_for(1, 5);
    wait_until(5, "the change counted as sent", || {
        d.metric("lovebeat_alerts_sent_total") >= 1.0
    });
    d.restart();
    let before = rx.count();
    let got = rx.wait_for(before + 2, 10);
    let after: Vec<serde_json::Value> = got[before..].iter().map(|r| r.json()).collect();
    assert!(after.len() >= 2, "reminders after the restart: {after:?}");
    for b in &after {
        assert_eq!(b["incident_number"], 1, "{b}");
        assert!(
            b["repeat"].as_u64().is_some_and(|n| n > 0),
            "only reminders: {b}"
        );
    }
}

#[test]
fn a_recovery_held_by_a_dependency_after_a_restart_is_announced() {
    let rx = Receiver::start(|_| Some(200));
    let mut d = Daemon::start(&hook_config(
        &rx.url("/hook"),
        "[[alarms]]\nname = \"app\"\npattern = \"app.*\"\nalerts = [\"hook\"]\ndepends_on = [\"net\"]\n\
         [[alarms]]\nname = \"net\"\npattern = \"net.*\"\nalerts = [\"hook\"]\n",
    ));
    d.post("/api/services/net.x?timeout=3600");
    d.post("/api/services/app.x?timeout=3600");
    d.tcp("app.x.fail:1|c\n");
    rx.wait_for(1, 5);
    wait_until(5, "app's change counted as sent", || {
        d.metric("lovebeat_alerts_sent_total") >= 1.0
    });
    d.restart();
    d.tcp("net.x.fail:1|c\n");
    rx.wait_for(2, 5);
    // app recovers while net is ERROR: held; net recovers: released.
    d.post("/api/services/app.x?timeout=3600");
    std::thread::sleep(Duration::from_millis(300));
    d.post("/api/services/net.x?timeout=3600");
    let got = rx.wait_for(4, 10);
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| r.json())
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["to_state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        seen.contains(&("app".to_string(), "ok".to_string())),
        "app's receivers heard ERROR before the restart, so its recovery is news: {seen:?}"
    );
}

#[test]
fn a_full_disk_under_the_event_log_counts_what_it_loses_and_writes_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    let d = Daemon::start_in(dir, &format!("[eventlog]\npath = \"{}\"\n", log.display()));
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let added = |prefix: &str| {
        read()
            .lines()
            .filter(|l| l.contains("\"type\":\"service_added\"") && l.contains(prefix))
            .count()
    };
    let burst = |prefix: &str, n: usize| {
        let lines: String = (0..n)
            .map(|i| format!("{prefix}.s{i}.beat:1|c\n"))
            .collect();
        d.tcp(&lines);
    };
    burst("before", 50);
    wait_until(10, "the first burst logged", || added("\"before.") == 50);
    // Room for a few more lines only (the daemon's stderr is smaller, so
    // its log goes on): the next burst fills the file mid-batch.
    let len = std::fs::metadata(&log).expect("log").len();
    let stderr_len = std::fs::metadata(&d.stderr_path).map_or(0, |m| m.len());
    assert!(stderr_len < len, "{stderr_len} {len}");
    prlimit_fsize(d.pid(), &(len + 3000).to_string());
    burst("during", 200);
    wait_until(10, "the loss counted and reported", || {
        d.metric("lovebeat_eventlog_lost_total") > 0.0
            && d.service("lovebeat.self.eventlog")
                .is_some_and(|s| s["state"] == "error")
    });
    // More batches fail on the full disk, but the log (maybe on that
    // disk too) gets one error for them all, not one per batch.
    for i in 0..5 {
        burst(&format!("later{i}"), 20);
        std::thread::sleep(Duration::from_millis(200));
    }
    let errors = d
        .stderr()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot write the event log"))
        .count();
    assert_eq!(errors, 1, "{}", d.stderr());
    prlimit_fsize(d.pid(), "unlimited");
    // Whole lines only, and every lost event both in /metrics and in a
    // gap record once the file takes lines again.
    let gaps = || {
        let text = read();
        assert!(text.ends_with('\n'));
        let mut gaps = 0.0;
        for l in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line ({e}): {l}"));
            if v["type"] == "events_lost" {
                gaps += v["events_lost"]["count"].as_f64().expect("count");
            }
        }
        gaps
    };
    wait_until(10, "the gap records and the recovery", || {
        gaps() == d.metric("lovebeat_eventlog_lost_total")
            && d.service("lovebeat.self.eventlog")
                .is_some_and(|s| s["state"] == "ok")
    });
    // The later bursts' events were lost after the one error: the
    // recovery says how many.
    let since: u64 = d
        .stderr()
        .lines()
        .find_map(|l| {
            let (_, after) = l.split_once("is written again; ")?;
            after.split_once(' ')?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no recovery line: {}", d.stderr()));
    assert!(since >= 100, "{since}");
    let lost = d.metric("lovebeat_eventlog_lost_total");
    let written = added("\"during.");
    assert!(written < 200, "the limit cut the burst short");
    assert!(
        lost >= (200 - written) as f64,
        "every service_added not written is counted: {lost} lost, {written} written"
    );
}
