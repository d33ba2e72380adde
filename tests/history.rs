//! The history store against the real binary (README, "History"): every
//! state change kept across restarts, with its reason, in a SQLite file an
//! operator opens with `sqlite3`; a file that cannot be used never stops
//! monitoring.

mod common;

use common::{wait_until, Daemon};
use serde_json::Value;

fn history(d: &Daemon, what: &str, name: &str, query: &str) -> common::Reply {
    d.get(&format!("/api/{what}/{name}/history{query}"))
}

/// (to, reason) of each change, newest first.
fn changes(v: &Value) -> Vec<(String, String)> {
    v["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["to"].as_str().unwrap_or("?").to_string(),
                        c["reason"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn every_change_is_kept_with_its_reason_across_a_restart() {
    let mut d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    assert_eq!(d.post("/api/services/web.a?timeout=3600").status, 200);
    // A tripwire timeout: ERROR at once; a beat with a timeout brings it back.
    assert_eq!(d.post("/api/services/web.a?timeout=0").status, 200);
    assert_eq!(d.post("/api/services/web.a?timeout=3600").status, 200);
    assert_eq!(d.post("/api/services/web.a/mute").status, 200);
    assert_eq!(d.post("/api/services/web.a/unmute").status, 200);
    let want = pairs(&[
        ("ok", "unmute"),
        ("muted", "mute"),
        ("ok", "beat"),
        ("error", "timeout"),
        ("ok", "created"),
    ]);
    wait_until(10, "the changes are written", || {
        changes(&history(&d, "services", "web.a", "").json()) == want
    });
    d.restart();
    let v = history(&d, "services", "web.a", "").json();
    assert_eq!(changes(&v), want, "{v}");
    assert!(v["next_cursor"].is_null());
    let alarm = history(&d, "alarms", "web", "").json();
    let a = changes(&alarm);
    assert!(
        a.contains(&("error".into(), "members failed".into()))
            && a.contains(&("ok".into(), "recovered".into())),
        "{alarm}"
    );
    assert_eq!(alarm["changes"][1]["incident"], 1, "{alarm}");

    // Deleted: still answered, marked; never known: 404.
    assert_eq!(d.delete("/api/services/web.a").status, 200);
    wait_until(10, "the delete is written", || {
        history(&d, "services", "web.a", "").json()["deleted_at"].is_i64()
    });
    let v = history(&d, "services", "web.a", "").json();
    assert_eq!(changes(&v)[0], ("deleted".into(), "deleted".into()));
    let r = history(&d, "services", "web.never", "");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());

    // The file is plain SQLite, private to its owner.
    let file = d.path().join("lovebeat.db.history");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file)
            .expect("history file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let out = std::process::Command::new("sqlite3")
        .arg(&file)
        .arg("SELECT count(*) FROM changes JOIN names ON names.id = name_id WHERE name = 'web.a'")
        .output()
        .expect("sqlite3 (the test command installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
}

#[test]
fn pages_follow_a_cursor_and_a_range_and_refuse_what_is_not_ours() {
    let d = Daemon::start("");
    d.post("/api/services/p.a?timeout=3600");
    for _ in 0..6 {
        d.post("/api/services/p.a/mute");
        d.post("/api/services/p.a/unmute");
    }
    wait_until(10, "13 changes written", || {
        history(&d, "services", "p.a", "?limit=1000").json()["changes"]
            .as_array()
            .is_some_and(|a| a.len() == 13)
    });
    let all = history(&d, "services", "p.a", "").json()["changes"].clone();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = history(&d, "services", "p.a", &format!("?limit=5{cursor}")).json();
        seen.extend(v["changes"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(Value::Array(seen), all, "pages of 5 give the whole list");
    // A range holds exactly the changes from `since` and before `until`
    // (several may share a millisecond).
    let ts: Vec<i64> = all
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["ts"].as_i64().expect("ts"))
        .collect();
    let (since, until) = (ts[11], ts[3]);
    let v = history(
        &d,
        "services",
        "p.a",
        &format!("?since={since}&until={until}"),
    )
    .json();
    let within: Vec<i64> = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["ts"].as_i64().expect("ts"))
        .collect();
    let want: Vec<i64> = ts
        .iter()
        .copied()
        .filter(|t| *t >= since && *t < until)
        .collect();
    assert_eq!(within, want);
    let v = history(
        &d,
        "services",
        "p.a",
        "?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
    )
    .json();
    assert_eq!(changes(&v), Vec::new());
    for bad in [
        "?cursor=x",
        "?cursor=1.2.3",
        "?cursor=-5.3",
        "?cursor=1.-1",
        "?cursor=0.0",
        "?limit=0",
        "?limit=100000",
        "?since=yesterday",
    ] {
        let r = history(&d, "services", "p.a", bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // A name that is a SQL string is no name.
    let r = d.get("/api/services/x%27%3B%20DROP%20TABLE%20changes%3B--/history");
    assert_eq!(r.status, 400);
    assert_eq!(history(&d, "services", "p.a", "").status, 200);
}

#[test]
fn history_off_answers_404_saying_so() {
    let d = Daemon::start("[history]\nenabled = false\n");
    d.post("/api/services/off.a?timeout=3600");
    let r = history(&d, "services", "off.a", "");
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("history is off"),
        "{}",
        r.body
    );
    assert!(!d.path().join("lovebeat.db.history").exists());
}

#[test]
fn a_damaged_history_file_is_moved_aside_and_a_new_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lovebeat.db.history"), vec![0x5a; 8192]).expect("junk");
    let d = Daemon::start_in(dir, "");
    d.post("/api/services/c.a?timeout=3600");
    wait_until(10, "written to the new file", || {
        history(&d, "services", "c.a", "").status == 200
    });
    let aside = std::fs::read_dir(d.path())
        .expect("dir")
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("lovebeat.db.history.corrupt-")
        });
    assert!(aside, "the damaged file is kept for a person to look at");
    assert!(d.stderr().contains("damaged"), "{}", d.stderr());
}

#[test]
fn a_history_file_that_cannot_be_opened_stops_nothing_and_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory where the file should be: no SQLite can open it.
    std::fs::create_dir(dir.path().join("lovebeat.db.history")).expect("dir");
    let d = Daemon::start_in(dir, "[[alarms]]\nname = \"w\"\npattern = \"w.*\"\n");
    assert_eq!(d.post("/api/services/w.a?timeout=3600").status, 200);
    assert_eq!(d.post("/api/services/w.a?timeout=0").status, 200);
    assert_eq!(d.service("w.a").expect("service")["state"], "error");
    let r = history(&d, "services", "w.a", "");
    assert_eq!(r.status, 503, "{}", r.body);
    let me = d
        .service("lovebeat.self.history")
        .expect("lovebeat.self.history");
    assert_eq!(me["state"], "error", "{me}");
}

/// A history file that stops taking writes puts lovebeat.self.history in
/// ERROR once, not on and off: a batch with nothing to write was taken for
/// a recovery, so each failure's own change made another incident (79 in
/// 8 s in the attack review). Meanwhile the endpoints say why they cannot
/// answer. `chattr +i` needs root on ext4 and the like; elsewhere this test
/// says so and checks nothing.
#[test]
fn a_history_file_that_stops_taking_writes_fails_once_and_says_so() {
    let d = Daemon::start("[[alarms]]\nname = \"u\"\npattern = \"u.*\"\n");
    d.post("/api/services/u.first?timeout=3600");
    wait_until(10, "the first change written", || {
        history(&d, "services", "u.first", "").status == 200
    });
    let files: Vec<std::path::PathBuf> = ["lovebeat.db.history", "lovebeat.db.history-wal"]
        .iter()
        .map(|f| d.path().join(f))
        .collect();
    let chattr = |flag: &str| {
        files.iter().all(|f| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(f)
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    if !chattr("+i") {
        chattr("-i");
        eprintln!("chattr +i is not available here: nothing checked");
        return;
    }
    d.post("/api/services/u.second?timeout=3600");
    wait_until(10, "lovebeat.self.history in ERROR", || {
        d.service("lovebeat.self.history")
            .is_some_and(|s| s["state"] == "error")
    });
    // Three seconds more: it stays in ERROR, and its alarm opened one
    // incident.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let me = d.service("lovebeat.self.history").expect("service");
    let incident = d.get("/api/alarms/lovebeat.self").json()["alarm"]["incident_nbr"].clone();
    let r = history(&d, "services", "u.first", "");
    chattr("-i");
    assert_eq!(me["state"], "error", "{me}");
    assert_eq!(incident, 1, "one incident of lovebeat.self");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot write"),
        "{}",
        r.body
    );
}

/// After a kill -9 the database can be older than the history: lovebeat
/// restores what it last saved, and the history says so with a `restored`
/// change (or a deletion for a name the saved file never had), so uptime
/// counts what lovebeat holds from then on (the history attack review: a
/// service OK in the engine was counted down for ever).
#[test]
fn after_a_kill_9_the_history_says_what_lovebeat_restored() {
    let mut d = Daemon::start_with_interval("", 1);
    assert_eq!(d.post("/api/services/r.a?timeout=3600").status, 200);
    let saves = d.metric("lovebeat_db_saves_total");
    wait_until(10, "a save with r.a", || {
        d.metric("lovebeat_db_saves_total") >= saves + 2.0
    });
    // Changes the history keeps and no save does: the kill comes first.
    d.post("/api/services/r.a?timeout=0");
    d.post("/api/services/r.new?timeout=3600");
    wait_until(10, "both written", || {
        history(&d, "services", "r.a", "").json()["changes"][0]["to"] == "error"
            && history(&d, "services", "r.new", "").status == 200
    });
    d.kill9();
    d.restart_stopped();
    if d.service("r.a").expect("r.a")["state"] != "ok" {
        // A save slipped in before the kill: nothing to restore here.
        eprintln!("the database had the change: nothing checked");
        return;
    }
    wait_until(10, "the restore written", || {
        changes(&history(&d, "services", "r.a", "").json()).first()
            == Some(&("ok".to_string(), "restored".to_string()))
    });
    if d.service("r.new").is_none() {
        wait_until(10, "the lost name marked deleted", || {
            changes(&history(&d, "services", "r.new", "").json()).first()
                == Some(&("deleted".to_string(), "restored".to_string()))
                || history(&d, "services", "r.new", "").json()["deleted_at"].is_i64()
        });
    }
}

/// Changes the history could not write (its file locked by another
/// process past the 5 s busy timeout, as a hung disk or a backup tool
/// would) are counted as lost, and once the file takes writes again each
/// name whose last change was lost gets its state as `restored`, at the
/// time it really changed to it: uptime is right again from then, instead
/// of a service counted up for ever because its failure was never kept.
#[test]
fn changes_lost_to_a_locked_file_are_caught_up_with_the_time_they_happened() {
    use std::io::{BufRead, Write};
    let d = Daemon::start("");
    for i in 0..10 {
        assert_eq!(
            d.post(&format!("/api/services/gap.{i}?timeout=3600"))
                .status,
            200
        );
    }
    wait_until(20, "the creations written", || {
        changes(&history(&d, "services", "gap.9", "").json()).first()
            == Some(&("ok".to_string(), "created".to_string()))
    });
    let file = d.path().join("lovebeat.db.history");
    let mut locker = std::process::Command::new("sqlite3")
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 (apt-get install sqlite3)");
    let mut to_locker = locker.stdin.take().expect("stdin");
    writeln!(
        to_locker,
        ".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';"
    )
    .expect("lock");
    let mut line = String::new();
    std::io::BufReader::new(locker.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("locked");
    assert_eq!(line.trim(), "locked");
    let lost_before = d.metric("lovebeat_history_changes_lost_total");
    let before = lovebeat::clock::now_ms();
    for i in 0..10 {
        d.post(&format!("/api/services/gap.{i}?timeout=0"));
    }
    let after = lovebeat::clock::now_ms();
    wait_until(30, "the failures lost to the lock", || {
        d.metric("lovebeat_history_changes_lost_total") >= lost_before + 10.0
    });
    writeln!(to_locker, "COMMIT;\n.quit").expect("unlock");
    drop(to_locker);
    let _ = locker.wait();
    wait_until(30, "each failure caught up", || {
        (0..10).all(|i| {
            changes(&history(&d, "services", &format!("gap.{i}"), "").json()).first()
                == Some(&("error".to_string(), "restored".to_string()))
        })
    });
    for i in 0..10 {
        let v = history(&d, "services", &format!("gap.{i}"), "").json();
        let ts = v["changes"][0]["ts"].as_i64().expect("ts");
        assert!(
            (before..=after + 1000).contains(&ts),
            "gap.{i} restored at {ts}, its failure was between {before} and {after}"
        );
        assert_eq!(
            Some(ts),
            d.service(&format!("gap.{i}"))
                .and_then(|s| s["last_state_change"].as_i64()),
            "the time the engine holds"
        );
    }
}
