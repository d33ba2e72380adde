//! Databases as a bad day leaves them (README, "Configuration" and "HTTP
//! API"): two files concatenated, names that 1.x allowed and today's
//! rules do not, and a gzip bomb, each loaded by the real binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::Daemon;

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).expect("in memory");
    e.finish().expect("in memory")
}

/// A `SERV` line in ERROR since `at` (ms), with a timeout of an hour.
fn failing(name: &str, at: i64) -> String {
    format!("SERV\t{{\"name\":{name:?},\"last_beat\":{at},\"timeout\":3600000,\"state\":\"error\",\"muted_since\":0,\"last_state_change\":{at}}}\n")
}

/// An `ALARM` line in ERROR at incident `n`, announced as such.
fn alarm_in_error(name: &str, n: u64, at: i64) -> String {
    format!("ALARM\t{{\"name\":\"{name}\",\"state\":\"error\",\"incident_nbr\":{n},\"failed_services\":[],\"last_state_change\":{at},\"announced\":\"error\",\"announced_incident\":{n}}}\n")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn alarm_config(rx: &Receiver) -> String {
    format!(
        "[[alarms]]\nname = \"app\"\npattern = \"app.*\"\nalerts = [\"ops\"]\n[alerts.ops]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    )
}

/// `cat old.db new.db > lovebeat.db`: a service and its alarm are in both.
/// It is loaded once (the newer record), counted once; once beaten and
/// deleted its alarm is OK, and the next failure of another member alerts.
#[test]
fn a_database_concatenated_from_two_loads_each_service_once() {
    let t = now_ms() - 600_000;
    let old = gzip(&format!(
        "{}SERV\t{{\"name\":\"app.other\",\"last_beat\":{t},\"timeout\":-1,\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":{t}}}\n{}",
        failing("app.dup", t),
        alarm_in_error("app", 3, t)
    ));
    let new = gzip(&format!(
        "{}{}",
        failing("app.dup", t + 60_000),
        alarm_in_error("app", 4, t + 60_000)
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cat = old;
    cat.extend_from_slice(&new);
    std::fs::write(dir.path().join("lovebeat.db"), cat).expect("db");
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start_in(dir, &alarm_config(&rx));
    assert!(
        d.stderr()
            .contains("held 1 service and 1 alarm records of names already loaded"),
        "{}",
        d.stderr()
    );
    let status = d.get("/api/status").body;
    assert!(status.contains("\nnum_error 1\n"), "counted once: {status}");
    let alarm = d.get("/api/alarms/app").json()["alarm"].clone();
    assert_eq!(alarm["incident_nbr"], 4, "the newer record: {alarm}");
    assert_eq!(alarm["failed_services"], serde_json::json!(["app.dup"]));
    assert_eq!(
        d.service("app.dup").expect("loaded")["last_beat"],
        t + 60_000
    );

    assert_eq!(d.post("/api/services/app.dup").status, 200);
    assert_eq!(d.delete("/api/services/app.dup").status, 200);
    common::wait_until(10, "the alarm OK", || {
        d.get("/api/alarms/app").json()["alarm"]["state"] == "ok"
    });
    assert!(d.get("/api/status").body.contains("\nnum_error 0\n"));
    assert_eq!(d.post("/api/services/app.other?timeout=0").status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rx.got().iter().any(|r| {
        let b = r.json();
        b["to_state"] == "error" && b["incident_number"] == 5
    }) {
        assert!(
            Instant::now() < deadline,
            "no alert for the next failure: {:?}",
            rx.got().iter().map(|r| r.json()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        d.get("/api/alarms/app").json()["alarm"]["failed_services"],
        serde_json::json!(["app.other"])
    );
}

/// A 1.x database may hold names that today's rules refuse: such a name
/// in ERROR pins its alarm unless it can be muted and deleted. The API
/// reads, mutes, unmutes and deletes a stored name, percent-escaped where
/// a path cannot carry it as it is, and never creates or beats one.
#[test]
fn a_stored_name_outside_the_rules_can_be_muted_and_deleted() {
    let t = now_ms() - 600_000;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("lovebeat.db"),
        gzip(&format!(
            "{}{}{}",
            failing("app.My Service/1", t),
            failing("app.Upper", t),
            alarm_in_error("app", 2, t)
        )),
    )
    .expect("db");
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start_in(dir, &alarm_config(&rx));
    let escaped = "/api/services/app.My%20Service%2F1";
    let alarm = || d.get("/api/alarms/app").json()["alarm"].clone();
    assert_eq!(
        alarm()["failed_services"],
        serde_json::json!(["app.My Service/1", "app.Upper"])
    );

    let r = d.get(escaped);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["service"]["name"], "app.My Service/1");
    assert_eq!(d.post(&format!("{escaped}/mute")).status, 200);
    assert_eq!(d.get(escaped).json()["service"]["state"], "muted");
    assert_eq!(d.post(&format!("{escaped}/unmute")).status, 200);
    assert_ne!(d.get(escaped).json()["service"]["state"], "muted");
    // Upper case needs no escape: the name as it is works too.
    assert_eq!(d.post("/api/services/app.Upper/mute").status, 200);
    assert_eq!(
        d.get("/api/services/app.Upper").json()["service"]["state"],
        "muted"
    );

    // Never created, beaten or given a timeout; unknown names stay a 400,
    // and an escape that spells an allowed name is still a disguise.
    assert_eq!(d.post(escaped).status, 400);
    assert_eq!(d.post(&format!("{escaped}/fail")).status, 400);
    assert_eq!(d.post("/api/services/app.Upper?timeout=0").status, 400);
    assert_eq!(d.post("/api/services/app.Nope%20x/mute").status, 400);
    assert_eq!(d.delete("/api/services/app.Nope").status, 400);
    assert_eq!(d.get("/api/services/%61pp.x").status, 400);

    assert_eq!(d.delete(escaped).status, 200);
    assert_eq!(d.delete("/api/services/app.Upper").status, 200);
    // Gone: an unknown name outside the rules is a 400 again.
    assert_eq!(d.get(escaped).status, 400);
    assert!(!d.get("/api/services").body.contains("app.Upper"));
    common::wait_until(10, "the alarm OK", || alarm()["state"] == "ok");
    assert!(d.get("/api/status").body.contains("num_error 0\n"));
}

/// `n` gzip members of a million newlines each, concatenated (a gzip
/// stream of newlines compresses about 1 000-fold; one member made once
/// and repeated builds it in milliseconds, where compressing 400 MB in a
/// debug build takes minutes). The loader reads every member.
fn newline_bomb(n: usize) -> Vec<u8> {
    gzip(&"\n".repeat(1_000_000)).repeat(n)
}

/// Runs the binary in `dir` until it exits (killed after 60 s): its exit
/// status, its stderr and its peak resident memory in bytes. The child
/// is reaped by `wait4` (which also gives its peak memory), not `wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(dir: &Path) -> (std::process::ExitStatus, String, u64) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args(["--config", "lovebeat.cfg", "--config-dir", "none"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr"))
        .spawn()
        .expect("run lovebeat");
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data, filled by wait4 for our own child.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for the child we spawned, without blocking.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            let text = std::fs::read_to_string(&stderr).unwrap_or_default();
            let rss = usage.ru_maxrss.max(0) as u64 * 1024;
            return (std::process::ExitStatus::from_raw(status), text, rss);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("lovebeat still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 400 M newlines gzipped (about 400 KB) asked for a record per line,
/// 38 GB, and aborted. Now the file is refused as it is read, once it
/// outgrows 400 times what was read of it: exit 1, "cannot be read", the
/// file named and kept, and memory of a few hundred MB at most.
#[test]
fn a_gzip_of_400m_newlines_is_refused_as_unreadable_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, statsd) = (common::free_port(), common::free_port());
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::base_config(http, statsd, ""),
    )
    .expect("cfg");
    let bomb = newline_bomb(400);
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    std::fs::write(dir.path().join("lovebeat.db"), &bomb).expect("db");
    let (status, stderr, rss) = run_measured(dir.path());
    assert_eq!(status.code(), Some(1), "{status:?}: {stderr}");
    assert!(
        stderr.contains("lovebeat.db cannot be read") && stderr.contains("refusing to start"),
        "{stderr}"
    );
    assert!(rss < 600 << 20, "peak RSS {} MB", rss >> 20);
    assert_eq!(
        std::fs::read(dir.path().join("lovebeat.db")).expect("kept"),
        bomb
    );
}
