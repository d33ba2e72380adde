//! Daily rollups against the real binary (README, "History"): a year's
//! uptime stays exact to the millisecond after retention pruned the
//! changes it was computed from.

mod common;

use common::{wait_until, Daemon};
use serde_json::Value;

const DAY: i64 = 86_400_000;

fn sqlite(d: &Daemon, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(d.path().join("lovebeat.db.history"))
        .arg(sql)
        .output()
        .expect("sqlite3 (the test command installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn field(v: &Value, f: &str) -> i64 {
    v[f].as_i64().unwrap_or_else(|| panic!("{f} in {v}"))
}

#[test]
fn a_year_of_uptime_is_exact_after_retention_pruned_its_changes() {
    let mut d = Daemon::start("[history]\nretention = \"30d\"\n");
    assert!(d.stop().success());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let today = now / DAY;
    let at = |days_ago: i64, ms: i64| (today - days_ago) * DAY + ms;
    // Created 370 days ago; down a day and an hour 200 days ago; muted
    // half an hour 100 days ago; down 3 s across midnight 40 days ago.
    let changes = [
        (at(370, 0), 1),
        (at(200, 3_600_000), 2),
        (at(199, 7_200_000), 1),
        (at(100, 0), 3),
        (at(100, 1_800_000), 1),
        (at(40, -1000), 2),
        (at(40, 2000), 1),
    ];
    let mut sql =
        String::from("INSERT INTO names (kind, name) VALUES (0, 'old.svc'), (1, 'old.alarm');");
    for (kind, name) in [(0, "old.svc"), (1, "old.alarm")] {
        for (i, (ts, to)) in changes.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO changes VALUES ((SELECT id FROM names WHERE kind = {kind} AND name = '{name}'), \
                 {ts}, {}, NULL, {to}, 0, NULL);",
                1_000_000 + kind * 100 + i as i64
            ));
        }
    }
    sqlite(&d, &sql);
    d.restart_stopped();
    // Rolled up, then pruned to the last change before the cutoff.
    wait_until(30, "the old changes are pruned", || {
        sqlite(
            &d,
            "SELECT count(*) FROM changes JOIN names ON names.id = name_id WHERE name = 'old.svc'",
        ) == "1"
    });
    let (since, until) = (at(365, 0), at(1, 0));
    let v = d
        .get(&format!(
            "/api/services/old.svc/uptime?since={since}&until={until}"
        ))
        .json();
    let w = &v["windows"][0];
    let down = DAY + 3_600_000 + 3000;
    let muted = 1_800_000;
    assert_eq!(field(w, "down_ms"), down, "{v}");
    assert_eq!(field(w, "muted_ms"), muted, "{v}");
    assert_eq!(field(w, "unknown_ms"), 0, "{v}");
    assert_eq!(field(w, "up_ms"), 364 * DAY - down - muted, "{v}");
    assert_eq!(field(w, "incidents"), 2, "{v}");
    assert_eq!(field(w, "longest_down_ms"), DAY + 3_600_000, "{v}");
    assert_eq!(field(w, "mttr_ms"), down / 2, "{v}");

    // An alarm's rolling year: its start, inside a day whose changes are
    // gone, is widened to that day's midnight, and the figures are exact.
    let started = std::time::Instant::now();
    let v = d.get("/api/alarms/old.alarm/uptime?windows=365d").json();
    println!(
        "365-day uptime of an alarm: {:?} (debug build, with HTTP)",
        started.elapsed()
    );
    let w = &v["windows"][0];
    assert_eq!(field(w, "since") % DAY, 0, "{v}");
    assert_eq!(field(w, "down_ms"), down, "{v}");
    assert_eq!(field(w, "incidents"), 2, "{v}");
    assert_eq!(field(w, "longest_down_ms"), DAY + 3_600_000, "{v}");

    // The days around the ERROR across midnight, from their rollups.
    let v = d
        .get(&format!(
            "/api/services/old.svc/daily?since={}&until={}",
            at(41, 0),
            at(39, 0)
        ))
        .json();
    let downs: Vec<i64> = v["days"]
        .as_array()
        .map(|a| a.iter().map(|d| field(d, "down_ms")).collect())
        .unwrap_or_default();
    assert_eq!(downs, vec![1000, 2000], "{v}");
}

#[test]
fn a_flip_storm_is_coalesced_and_counted_and_every_change_accounted_for() {
    let d = Daemon::start("");
    // A job failing and beating as fast as TCP carries it: two changes a
    // pair, far faster than rows are written.
    const PAIRS: usize = 100_000;
    let mut lines = String::with_capacity(PAIRS * 24);
    for _ in 0..PAIRS {
        lines.push_str("flip.a.fail:1|c\nflip.a.beat:1|c\n");
    }
    lines.push_str("flip.done.beat:1|c\n");
    d.tcp(&lines);
    wait_until(60, "the storm is ingested", || {
        d.service("flip.done").is_some()
    });
    assert_eq!(d.service("flip.a").expect("flip.a")["state"], "ok");
    let total = 2 * PAIRS as i64;
    let mut seen = (0, 0.0, 0.0);
    wait_until(
        60,
        "every change written, coalesced or counted as lost",
        || {
            let rows: i64 = sqlite(
            &d,
            "SELECT count(*) FROM changes JOIN names ON names.id = name_id WHERE name = 'flip.a'",
        )
        .parse()
        .unwrap_or(0);
            let coalesced = d.metric("lovebeat_history_changes_coalesced_total");
            let lost = d.metric("lovebeat_history_changes_lost_total");
            seen = (rows, coalesced, lost);
            rows + coalesced as i64 + lost as i64 == total
        },
    );
    let (rows, coalesced, _) = seen;
    println!("rows, coalesced, lost: {seen:?}");
    assert!(coalesced > 0.0, "nothing coalesced: {seen:?}");
    assert!(rows < total / 2, "most of the storm coalesced: {seen:?}");
    // The first change (its creation) and the last (the final beat) stay.
    let first_last = sqlite(
        &d,
        "SELECT group_concat(to_state) FROM (SELECT to_state FROM changes JOIN names ON names.id = name_id \
         WHERE name = 'flip.a' ORDER BY ts, seq) ",
    );
    assert!(
        first_last.starts_with("2,") && first_last.ends_with(",1"),
        "{first_last}"
    );
    // Its 100 000 runs (each fail ends one) are coalesced alike.
    let runs: f64 = sqlite(
        &d,
        "SELECT count(*) FROM runs JOIN names ON names.id = name_id WHERE name = 'flip.a'",
    )
    .parse()
    .unwrap_or(0.0);
    let runs_coalesced = d.metric("lovebeat_history_runs_coalesced_total");
    assert!(runs_coalesced > 0.0, "{runs} runs written");
    assert_eq!(
        runs + runs_coalesced + d.metric("lovebeat_history_changes_lost_total"),
        PAIRS as f64
    );
}
