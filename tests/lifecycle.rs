//! Expiry timing, alarms over time, persistence across restarts, config and
//! CLI errors: the daemon as an operator runs it.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{run_binary, Daemon};
use serde_json::json;

#[test]
fn two_second_timeout_goes_error_within_50ms_and_recovers() {
    let d = Daemon::start("");
    d.post("/api/services/slow?timeout=2");
    let beat = d.service("slow").expect("exists")["last_beat"]
        .as_i64()
        .expect("ms");
    let started = Instant::now();
    d.eventually("expiry", || {
        d.service("slow").expect("exists")["state"] == "error"
    });
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let s = d.service("slow").expect("exists");
    let late = s["last_state_change"].as_i64().expect("ms") - (beat + 2000);
    assert!(
        (0..=50).contains(&late),
        "changed {late} ms after the deadline"
    );
    assert_eq!(
        d.get("/api/status").body,
        "num_ok 0\nnum_error 1\nhas_error true\ngood false\n"
    );
    d.post("/api/services/slow");
    assert_eq!(d.service("slow").expect("exists")["state"], "ok");
}

#[test]
fn alarm_incidents_one_then_two() {
    let d = Daemon::start("[[alarms]]\nname = \"server-$name\"\npattern = \"app.$name.*\"\n");
    d.udp("app.web.cpu.timeout:1|g\napp.web.cpu.beat:1|c\n");
    d.eventually("created", || d.service("app.web.cpu").is_some());
    let alarm = || d.get("/api/alarms/server-web").json()["alarm"].clone();
    assert_eq!(alarm()["incident_nbr"], 0);
    d.eventually("first incident", || alarm()["state"] == "error");
    assert_eq!(alarm()["incident_nbr"], 1);
    std::thread::sleep(Duration::from_millis(1000)); // past the beat rate limit
    d.udp("app.web.cpu.beat:1|c\n");
    d.eventually("recovery", || alarm()["state"] == "ok");
    assert_eq!(alarm()["incident_nbr"], 1);
    d.eventually("second incident", || alarm()["state"] == "error");
    assert_eq!(alarm()["incident_nbr"], 2);
    assert_eq!(alarm()["failed_services"], json!(["app.web.cpu"]));
}

#[test]
fn sigterm_saves_and_restart_restores_everything() {
    let mut d = Daemon::start("[[alarms]]\nname = \"all\"\npattern = \"*\"\n");
    d.post("/api/services/kept?timeout=3600");
    d.post("/api/services/muted");
    d.post("/api/services/muted/mute");
    d.post("/api/services/trip?timeout=0");
    let before = d.service("kept").expect("exists");
    let muted_since = d.service("muted").expect("exists")["muted_since"].clone();
    let alarm_before = d.get("/api/alarms/all").json()["alarm"].clone();
    assert_eq!(alarm_before["incident_nbr"], 1);
    d.restart();
    assert!(d.path().join("lovebeat.db").exists());
    let after = d.service("kept").expect("restored");
    assert_eq!(after["last_beat"], before["last_beat"]);
    assert_eq!(after["timeout"], 3_600_000);
    assert_eq!(after["state"], "ok");
    let m = d.service("muted").expect("restored");
    assert_eq!(
        (m["state"].clone(), m["muted_since"].clone()),
        (json!("muted"), muted_since)
    );
    assert_eq!(d.service("trip").expect("restored")["state"], "error");
    let alarm = d.get("/api/alarms/all").json()["alarm"].clone();
    assert_eq!(alarm["state"], "error");
    assert_eq!(
        alarm["incident_nbr"], 1,
        "no new incident for a stored error"
    );
    // The numbering continues.
    d.post("/api/services/trip/mute");
    assert_eq!(d.get("/api/alarms/all").json()["alarm"]["state"], "ok");
    d.post("/api/services/trip/unmute");
    assert_eq!(d.get("/api/alarms/all").json()["alarm"]["incident_nbr"], 2);
}

#[test]
fn restart_grace_counts_deadlines_from_start() {
    let mut d = Daemon::start("");
    d.post("/api/services/grace?timeout=2");
    std::thread::sleep(Duration::from_millis(1500));
    d.restart();
    // Stored as OK: it gets a full timeout from the start, not from its beat.
    let s = d.service("grace").expect("restored");
    assert_eq!(s["state"], "ok");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.service("grace").expect("exists")["state"], "ok");
    d.eventually("expiry after start + 2 s", || {
        d.service("grace").expect("exists")["state"] == "error"
    });
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).expect("in memory");
    e.finish().expect("in memory")
}

#[test]
fn a_1x_database_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("lovebeat.db"),
        gzip(concat!(
            "SERV\t{\"name\":\"legacy.job\",\"last_beat\":1490000000000,\"beat_history\":[60000,60000],\"timeout\":-2,\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":1490000000000,\"in_alarms\":[\"legacy\"]}\n",
            "VIEW\t{\"name\":\"legacy\",\"state\":\"ok\"}\n",
            "ALARM\t{\"name\":\"legacy\",\"state\":\"ok\",\"incident_nbr\":5,\"failed_services\":null,\"last_state_change\":1490000000000}\n",
        )),
    )
    .expect("write db");
    let d = Daemon::start_in(
        dir,
        "[[alarms]]\nname = \"legacy\"\npattern = \"legacy.*\"\n",
    );
    let s = d.get("/api/services/legacy.job?details=1").json()["service"].clone();
    assert_eq!(s["beat_history"], json!([60000, 60000]));
    assert_eq!(s["effective_timeout"], 61000);
    assert_eq!(s["last_beat"], 1_490_000_000_000i64);
    assert_eq!(
        d.get("/api/alarms/legacy").json()["alarm"]["incident_nbr"],
        5
    );
    assert!(d.stderr().contains("VIEW"), "skipped record is logged");
}

#[test]
fn a_database_with_names_of_any_characters_loads() {
    // Names loaded from a database are taken as they are (README, "Configuration"): a
    // 1.x file may hold names no new input could, and an alarm's capture
    // must not split their characters (this panicked at start).
    let dir = tempfile::tempdir().expect("tempdir");
    let serv = |name: &str| {
        format!("SERV\t{{\"name\":{},\"last_beat\":1490000000000,\"timeout\":60000,\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":1490000000000}}\n", json!(name))
    };
    let db: String = ["bé.x", "é.x", "日本.x", "nul\u{0}.x", "a.é"]
        .iter()
        .map(|n| serv(n))
        .collect();
    std::fs::write(dir.path().join("lovebeat.db"), gzip(&db)).expect("write db");
    let d = Daemon::start_in(
        dir,
        "[[alarms]]\nname = \"a-$a\"\npattern = \"*$a.x\"\n[[alarms]]\nname = \"b-$b\"\npattern = \"$b*\"\n",
    );
    let alarms = d.get("/api/alarms").json();
    let mut names: Vec<&str> = alarms["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "a-\u{0}",
            "a-é",
            "a-本",
            "b-a",
            "b-bé",
            "b-nul\u{0}",
            "b-é",
            "b-日本"
        ]
    );
    assert_eq!(
        d.get("/api/services").json()["services"]
            .as_array()
            .map(Vec::len),
        Some(5)
    );
}

#[test]
fn corrupt_database_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, statsd) = (common::free_port(), common::free_port());
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::base_config(http, statsd, ""),
    )
    .expect("cfg");
    std::fs::write(dir.path().join("lovebeat.db"), b"\x1f\x8b garbage").expect("db");
    let (status, stderr) = run_binary(
        dir.path(),
        &["--config", "lovebeat.cfg", "--config-dir", "none"],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lovebeat.db"), "{stderr}");
    assert_eq!(
        std::fs::read(dir.path().join("lovebeat.db")).expect("kept"),
        b"\x1f\x8b garbage"
    );
    std::fs::write(dir.path().join("lovebeat.db"), gzip("SERV\t{\"name\": \n")).expect("db");
    let (status, stderr) = run_binary(
        dir.path(),
        &["--config", "lovebeat.cfg", "--config-dir", "none"],
    );
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("line 1"), "{stderr}");
}

#[test]
fn unknown_config_key_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.cfg"),
        "[http]\nlisten = \":0\"\nlisten_port = 80\n",
    )
    .expect("cfg");
    let (status, stderr) = run_binary(dir.path(), &["--config", "bad.cfg", "--config-dir", "none"]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("bad.cfg:3:") && stderr.contains("listen_port"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("bad.cfg"), "[database]\ninterval = \"x\"\n").expect("cfg");
    let (status, stderr) = run_binary(dir.path(), &["-config", "bad.cfg", "-config-dir", "none"]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("bad.cfg:2:") && stderr.contains("interval"),
        "{stderr}"
    );
    let (status, stderr) = run_binary(dir.path(), &["--config", "missing.cfg"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("missing.cfg"), "{stderr}");
}

#[test]
fn config_dir_files_are_added_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let confd = dir.path().join("conf.d");
    std::fs::create_dir(&confd).expect("mkdir");
    std::fs::write(
        confd.join("10-alarm.cfg"),
        "[[alarms]]\nname = \"from-confd\"\npattern = \"*\"\n",
    )
    .expect("write");
    std::fs::write(confd.join(".hidden"), "this is not toml").expect("write");
    let d = Daemon::start_in(dir, "[[views]]\nname = \"old-view\"\npattern = \"x.*\"\n");
    d.post("/api/services/x.y");
    assert_eq!(
        d.service("x.y").expect("exists")["in_alarms"],
        json!(["from-confd", "old-view"])
    );
}

#[test]
fn validate_auto_prints_the_timeout_after_each_interval() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .arg("validate-auto")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"60000\n61000\n59000\n120000\n60000\n")
        .expect("write");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "61000\n63059\n63533\n161676\n150272\n"
    );
    let (status, _) = run_binary(std::path::Path::new("."), &["-version"]);
    assert!(status.success());
}

#[test]
fn validate_auto_uses_the_algorithm_asked_for() {
    let run = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"60000\n60000\n")
            .expect("write");
        child.wait_with_output().expect("output")
    };
    let out = run(&["validate-auto", "--algorithm", "robust"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "84940\n72340\n");
    let out = run(&["validate-auto", "--algorithm", "lovebeat1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "61000\n61000\n");
    let out = run(&["validate-auto", "--algorithm", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algorithm 'nope'"));
}

/// The daemon re-executes itself once (same process id) with glibc's
/// malloc asking for huge pages, and keeps a choice made in the
/// environment: `glibc.malloc.hugetlb=0` leaves them off.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_daemon_asks_glibc_for_huge_pages_unless_told_otherwise() {
    let environ = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        String::from_utf8_lossy(&raw)
            .split('\0')
            .find_map(|kv| kv.strip_prefix("GLIBC_TUNABLES=").map(str::to_string))
    };
    let d = Daemon::start("");
    assert_eq!(environ(d.pid()).as_deref(), Some("glibc.malloc.hugetlb=1"));
    assert_eq!(
        d.get("/api/status").status,
        200,
        "the re-executed daemon serves"
    );

    let told = Daemon::start_with_env("", &[("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")]);
    assert_eq!(
        environ(told.pid()).as_deref(),
        Some("glibc.malloc.hugetlb=0")
    );
}

#[test]
fn sigterm_with_open_connections_exits_promptly_and_saves() {
    let mut d = Daemon::start("");
    d.post("/api/services/kept?timeout=60");
    // An idle keep-alive HTTP connection, a statsd TCP connection and a
    // websocket client, none of which closes by itself.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", d.http)).expect("http");
    idle.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let _tcp = std::net::TcpStream::connect(("127.0.0.1", d.statsd)).expect("tcp");
    let mut ws = std::net::TcpStream::connect(("127.0.0.1", d.http)).expect("ws");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        start.elapsed()
    );
    assert!(d.path().join("lovebeat.db").exists());
    d.restart_stopped();
    assert!(d.service("kept").is_some());
}

#[test]
fn sigterm_delivers_the_alerts_already_queued() {
    // Each delivery takes half a second: they are still under way when
    // the daemon is told to stop.
    let rx = Receiver::start_with_delay(Duration::from_millis(500), |_| Some(200));
    let mut d = Daemon::start(&format!(
        "[[alarms]]\nname = \"a-$n\"\npattern = \"m.$n\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    ));
    for i in 0..5 {
        d.post(&format!("/api/services/m.s{i}?timeout=0"));
    }
    assert!(d.stop().success(), "{}", d.stderr());
    let got = rx.wait_for(5, 1);
    let mut names: Vec<String> = got
        .iter()
        .map(|r| r.json()["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a-s0", "a-s1", "a-s2", "a-s3", "a-s4"]);
}

#[test]
fn a_receiver_that_never_answers_does_not_hold_the_shutdown_past_its_deadline() {
    let rx = Receiver::start(|_| None);
    let mut d = Daemon::start(&format!(
        "[[alarms]]\nname = \"a\"\npattern = \"*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
        rx.url("/hang")
    ));
    d.post("/api/services/x?timeout=0");
    rx.wait_for(1, 5);
    let start = Instant::now();
    assert!(d.stop().success(), "{}", d.stderr());
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(9) && took >= Duration::from_secs(3),
        "stopped in {took:?}: the drain waits a few seconds, then gives up"
    );
    assert!(d.stderr().contains("undelivered"), "{}", d.stderr());
    assert!(d.path().join("lovebeat.db").exists());
}

#[test]
fn check_config_prints_what_a_start_would_set_up_or_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("conf.d");
    std::fs::write(
        dir.path().join("main.cfg"),
        "[http]\nlisten = \"127.0.0.1:9999\"\nwrite_keys = [\"SECRET-KEY\"]\n[[alarms]]\nname = \"web-$host\"\npattern = \"web.$host.*\"\nalerts = [\"ops\"]\n",
    )
    .expect("main");
    std::fs::write(
        dir.path().join("conf.d/alerts.cfg"),
        "[alerts.ops]\nwebhook = \"https://hooks.example.com/SECRET-PATH\"\nrepeat = \"1h\"\n",
    )
    .expect("conf.d");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args([
            "check-config",
            "--config",
            "main.cfg",
            "--config-dir",
            "conf.d",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "main.cfg",
        "conf.d/alerts.cfg",
        "HTTP 127.0.0.1:9999",
        "keys: 1 write, 0 read",
        "web-$host: web.$host.*; alerts ops",
        "ops: webhook https://hooks.example.com/…; repeated every 3600 s",
        "warning: [udp] listen = \":8127\" takes statsd lines from the network",
        "configuration OK",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(!text.contains("SECRET"), "{text}");
    // An error: the file, line and key, and exit 2, without starting.
    std::fs::write(
        dir.path().join("conf.d/alerts.cfg"),
        "[alerts.ops]\nrepeat = \"often\"\n",
    )
    .expect("conf.d");
    let (status, stderr) = run_binary(
        dir.path(),
        &[
            "check-config",
            "--config",
            "main.cfg",
            "--config-dir",
            "conf.d",
        ],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("alerts.cfg:2:") && stderr.contains("repeat"),
        "{stderr}"
    );
}

/// A SIGTERM while lovebeat is still starting (loading its database,
/// opening its history, binding) is a clean stop, with its save, once the
/// start is done: it used to meet the default disposition and end the
/// process at once when it came before the signal handlers were made,
/// which on a loaded machine was after the HTTP port already answered.
#[test]
fn a_sigterm_during_the_start_is_a_clean_stop_with_a_save() {
    let mut d = Daemon::start("");
    for i in 0..2000 {
        d.post(&format!("/api/services/early.{i}?timeout=60"));
    }
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    let log = d.path().join("early.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args(["--config", "lovebeat.cfg"])
        .current_dir(d.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start lovebeat");
    // The first line lovebeat logs: from here on a SIGTERM is its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("configuration read from")
    {
        assert!(Instant::now() < deadline, "no start line");
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: kill(2) on the PID of a child this test started and owns.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status:?}:\n{text}");
    assert!(text.contains("shutting down"), "{text}");
    assert!(text.contains("loaded 2000 services"), "{text}");
}
