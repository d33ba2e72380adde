//! The history file's own troubles against the real binary (README,
//! "History"): deleted while lovebeat runs, or not openable at the start.

mod common;

use common::{wait_until, Daemon};

fn has_metric(d: &Daemon, line: &str) -> bool {
    d.get("/metrics").body.lines().any(|l| l == line)
}

#[test]
fn a_history_file_deleted_while_running_is_noticed_and_started_again() {
    let d = Daemon::start("");
    assert_eq!(d.post("/api/services/del.a?timeout=3600").status, 200);
    wait_until(10, "the first change written", || {
        d.get("/api/services/del.a/history").status == 200
    });
    let file = d.path().join("lovebeat.db.history");
    std::fs::remove_file(&file).expect("delete the history file");
    wait_until(30, "a new history file", || file.exists());
    // Said on lovebeat.self.history, whose change is in the new file.
    wait_until(30, "lovebeat.self.history's ERROR in the new file", || {
        let v = d.get("/api/services/lovebeat.self.history/history").json();
        v["changes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["to"] == "error"))
    });
    // lovebeat's own trouble is said by fails, but it is no job: no runs.
    let runs = d.get("/api/services/lovebeat.self.history/runs").json();
    assert_eq!(runs["runs"], serde_json::json!([]), "{runs}");
    assert!(
        d.stderr().contains("was deleted or replaced"),
        "{}",
        d.stderr()
    );
    // New changes go to the new file, and are read from it.
    assert_eq!(d.post("/api/services/del.b?timeout=3600").status, 200);
    wait_until(10, "del.b in the new file", || {
        d.get("/api/services/del.b/history").status == 200
    });
    assert_eq!(d.get("/api/services/del.a/history").status, 404);
    wait_until(20, "lovebeat.self.history OK again", || {
        d.service("lovebeat.self.history")
            .is_some_and(|s| s["state"] == "ok")
    });
    assert!(d.metric("lovebeat_history_write_errors_total") >= 1.0);
}

#[test]
fn a_history_file_that_cannot_be_opened_at_start_is_tried_again_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory where the file should be: no SQLite can open it.
    let blocker = dir.path().join("lovebeat.db.history");
    std::fs::create_dir(&blocker).expect("dir");
    let d = Daemon::start_in(dir, "");
    assert!(
        has_metric(&d, "lovebeat_history_failing 1"),
        "{}",
        d.get("/metrics").body
    );
    assert!(d.metric("lovebeat_history_write_errors_total") >= 1.0);
    assert_eq!(d.post("/api/services/late.a?timeout=3600").status, 200);
    assert_eq!(d.get("/api/services/late.a/history").status, 503);
    // Tried again (1 s, 2 s, 4 s ... apart): once the path is free, the
    // history is kept from then on.
    std::fs::remove_dir(&blocker).expect("free the path");
    wait_until(60, "the history file opened", || {
        has_metric(&d, "lovebeat_history_failing 0")
    });
    assert_eq!(d.post("/api/services/late.b?timeout=3600").status, 200);
    wait_until(10, "late.b written", || {
        d.get("/api/services/late.b/history").status == 200
    });
    wait_until(10, "lovebeat.self.history OK again", || {
        d.service("lovebeat.self.history")
            .is_some_and(|s| s["state"] == "ok")
    });
}
