//! The uptime arithmetic on constructed histories, to the millisecond.
use super::*;
use proptest::prelude::*;

const OK: i64 = State::Ok as i64;
const ERR: i64 = State::Error as i64;
const MUTED: i64 = State::Muted as i64;
const DEL: i64 = record::DELETED as i64;

fn run(changes: &[(i64, i64)], down: &[(i64, i64)], windows: &[(i64, i64)]) -> Vec<Figures> {
    let mut f = Fold::new(windows, down);
    for &(ts, to) in changes {
        f.change(ts, to);
    }
    f.finish()
}

fn parts(f: &Figures) -> [i64; 5] {
    [
        f.up_ms,
        f.down_ms,
        f.muted_ms,
        f.maintenance_ms,
        f.unknown_ms,
    ]
}

/// Created at 1000; ERROR 2000..2500; muted 3000..3400 (a mute, then a
/// snooze is the same state); ERROR 5000..6000 across lovebeat's own
/// downtime 5200..5300; deleted at 9000.
fn history() -> Vec<(i64, i64)> {
    vec![
        (1000, OK),
        (2000, ERR),
        (2500, OK),
        (3000, MUTED),
        (3200, MUTED),
        (3400, OK),
        (5000, ERR),
        (6000, OK),
        (9000, DEL),
    ]
}

#[test]
fn a_constructed_history_is_counted_to_the_millisecond() {
    let down = [(5200, 5300), (20_000, i64::MAX)];
    let w = run(&history(), &down, &[(0, 10_000)]);
    let f = &w[0];
    // up: 1000..2000, 2500..3000, 3400..5000, 6000..9000
    assert_eq!(parts(f), [6100, 1400, 400, 0, 2100]);
    assert_eq!(f.incidents, 2);
    assert_eq!(f.recoveries, 2);
    // (500 + 1000) / 2
    assert_eq!(f.mttr_ms, Some(750));
    // 5300..6000 after lovebeat came back
    assert_eq!(f.longest_down_ms, 700);
    assert_eq!(f.uptime, Some(6100.0 / 7500.0));
    assert_eq!(f.uptime_raw, Some(6100.0 / 10_000.0));
}

#[test]
fn error_periods_that_span_a_window_edge_are_cut_at_it() {
    let down = [(5200, 5300)];
    // Starts inside the first ERROR period, ends inside the second.
    let w = run(&history(), &down, &[(2200, 5500)]);
    let f = &w[0];
    // up 2500..3000 + 3400..5000; down 2200..2500 + 5000..5200 + 5300..5500
    assert_eq!(parts(f), [2100, 700, 400, 0, 100]);
    // The second ERROR began inside; the first ended inside, 500 long
    // (counted whole, from before the window).
    assert_eq!(f.incidents, 1);
    assert_eq!(f.recoveries, 1);
    assert_eq!(f.mttr_ms, Some(500));
    assert_eq!(f.longest_down_ms, 300);
    assert_eq!(f.until - f.since, 3300);
}

#[test]
fn before_creation_after_deletion_and_after_now_are_unknown() {
    let w = run(
        &history(),
        &[(9500, i64::MAX)],
        &[(0, 1000), (8000, 12_000)],
    );
    assert_eq!(parts(&w[0]), [0, 0, 0, 0, 1000]);
    assert_eq!(w[0].uptime, None);
    assert_eq!(w[0].uptime_raw, Some(0.0));
    assert_eq!(w[0].mttr_ms, None);
    assert_eq!(parts(&w[1]), [1000, 0, 0, 0, 3000]);
}

#[test]
fn overlapping_rolling_windows_each_get_their_share() {
    let w = run(
        &history(),
        &[],
        &[(0, 10_000), (5500, 10_000), (9500, 10_000)],
    );
    assert_eq!(parts(&w[0]), [6100, 1500, 400, 0, 2000]);
    assert_eq!(parts(&w[1]), [3000, 500, 0, 0, 1000]);
    assert_eq!(w[1].incidents, 0);
    assert_eq!(w[1].recoveries, 1);
    assert_eq!(w[1].mttr_ms, Some(1000));
    assert_eq!(parts(&w[2]), [0, 0, 0, 0, 500]);
}

#[test]
fn the_state_before_the_window_is_the_last_change_before_it() {
    let w = run(&[(100, ERR)], &[(7000, i64::MAX)], &[(1000, 2000)]);
    assert_eq!(parts(&w[0]), [0, 1000, 0, 0, 0]);
    assert_eq!(w[0].incidents, 0);
    assert_eq!(w[0].longest_down_ms, 1000);
    assert_eq!(w[0].uptime, Some(0.0));
}

#[test]
fn downtime_comes_from_the_runs() {
    let runs = [
        (100, 900, Some(900)), // stopped cleanly
        (1000, 1990, None),    // crashed: last seen 1990
        (2500, 2600, None),    // this run
    ];
    assert_eq!(
        downtime(&runs, 3000),
        vec![(900, 1000), (1990, 2500), (3000, i64::MAX)]
    );
    // A last run that stopped: nothing is known after it.
    assert_eq!(
        downtime(&[(100, 500, Some(500))], 3000),
        vec![(500, i64::MAX)]
    );
}

#[test]
fn sqlite_finds_the_same_downtime_as_the_runs_say() {
    let conn = Connection::open_in_memory().expect("db");
    conn.execute_batch(
        "CREATE TABLE lifecycle (id INTEGER PRIMARY KEY, started INTEGER NOT NULL, \
         last_seen INTEGER NOT NULL, stopped INTEGER);",
    )
    .expect("table");
    let runs = [
        (100, 900, Some(900)),
        (1000, 1990, None),
        (2500, 2600, None),
        (4000, 4100, None),
    ];
    for r in runs {
        conn.execute(
            "INSERT INTO lifecycle (started, last_seen, stopped) VALUES (?1, ?2, ?3)",
            params![r.0, r.1, r.2],
        )
        .expect("row");
    }
    let all = downtime(&runs, 5000);
    assert_eq!(downtime_in(&conn, 0, 6000, 5000).expect("query"), all);
    // Only the gaps that touch the range.
    assert_eq!(
        downtime_in(&conn, 2000, 3000, 5000).expect("query"),
        vec![(1990, 2500), (2600, 4000), (5000, i64::MAX)]
    );
}

#[test]
fn an_error_period_begun_before_the_window_counts_from_its_start() {
    let mut conn = Connection::open_in_memory().expect("db");
    super::super::schema::migrate(&mut conn).expect("schema");
    conn.execute_batch(
        "INSERT INTO names (id, kind, name) VALUES (7, 0, 'x'); \
         INSERT INTO lifecycle (started, last_seen) VALUES (0, 0); \
         INSERT INTO changes VALUES (7, 1000, 1, NULL, 1, 0, NULL); \
         INSERT INTO changes VALUES (7, 1500, 2, 1, 3, 4, NULL); \
         INSERT INTO changes VALUES (7, 1500, 3, 3, 2, 1, NULL); \
         INSERT INTO changes VALUES (7, 2000, 4, 2, 2, 2, NULL); \
         INSERT INTO changes VALUES (7, 3000, 5, 2, 1, 3, NULL);",
    )
    .expect("rows");
    let r = compute(&conn, Kind::Service, "x", &[(2500, 4000)], 10_000)
        .expect("query")
        .expect("known");
    let f = &r.windows[0];
    assert_eq!(parts(f), [1000, 500, 0, 0, 0]);
    assert_eq!((f.incidents, f.recoveries), (0, 1));
    // From the change into ERROR at 1500 (after the mute of the same
    // millisecond), not from the last ERROR change at 2000.
    assert_eq!(f.mttr_ms, Some(1500));
    assert!(compute(&conn, Kind::Alarm, "x", &[(0, 1)], 10)
        .expect("query")
        .is_none());
}

#[test]
fn days_follow_the_zone_with_dst_days_of_23_and_25_hours() {
    let tz: chrono_tz::Tz = "Europe/Stockholm".parse().expect("zone");
    // 2026-03-28T00:00 CET .. 2026-03-31T00:00 CEST
    let since = chrono::DateTime::parse_from_rfc3339("2026-03-28T00:00:00+01:00")
        .expect("time")
        .timestamp_millis();
    let until = chrono::DateTime::parse_from_rfc3339("2026-03-31T00:00:00+02:00")
        .expect("time")
        .timestamp_millis();
    let d = days(&tz, since, until).expect("days");
    let lens: Vec<i64> = d.iter().map(|(_, a, b)| (b - a) / 3_600_000).collect();
    assert_eq!(lens, vec![24, 23, 24]);
    assert_eq!(d[1].0.to_string(), "2026-03-29");
    let autumn = chrono::DateTime::parse_from_rfc3339("2026-10-25T00:00:00+02:00")
        .expect("time")
        .timestamp_millis();
    let d = days(&tz, autumn, autumn + 25 * 3_600_000).expect("days");
    assert_eq!(d.len(), 1);
    assert_eq!(days(&tz, 5, 5), Err(DaysError::Empty));
    assert_eq!(
        days(&chrono::Utc, 0, 401 * 86_400_000),
        Err(DaysError::TooMany)
    );
    assert_eq!(
        days(&chrono::Utc, 0, 400 * 86_400_000).map(|d| d.len()),
        Ok(400)
    );
}

proptest! {
    #[test]
    fn every_millisecond_is_counted_once(
        mut changes in proptest::collection::vec((0i64..100_000, 0i64..5), 0..40),
        mut down in proptest::collection::vec((0i64..100_000, 0i64..5_000), 0..5),
        a in 0i64..100_000, len in 1i64..100_000, now in 0i64..200_000,
    ) {
        changes.sort_by_key(|c| c.0);
        let changes: Vec<(i64, i64)> = changes
            .into_iter()
            .map(|(t, s)| (t, if s == 4 { DEL } else { s }))
            .collect();
        down.sort();
        let runs: Vec<(i64, i64, Option<i64>)> = down
            .iter()
            .scan(0i64, |at, &(s, l)| {
                let start = (*at).max(s);
                *at = start + l + 1;
                Some((start, start + l, None))
            })
            .collect();
        let down = downtime(&runs, now);
        let windows = [(a, a + len), (a + len / 2, a + len)];
        for f in run(&changes, &down, &windows) {
            let total: i64 = parts(&f).iter().sum();
            prop_assert_eq!(total, f.until - f.since);
            prop_assert!(f.longest_down_ms <= f.down_ms);
        }
    }
}

#[test]
fn maintenance_takes_up_down_and_muted_time_but_leaves_unknown_time_unknown() {
    // Windows 1800..2200 (across the start of the first ERROR period),
    // 3300..3500 (across the end of the mute), 5100..5250 (into
    // lovebeat's own downtime) and 8900..9500 (across the deletion).
    let down = [(5200, 5300), (20_000, i64::MAX)];
    let maintenance = [(1800, 2200), (3300, 3500), (5100, 5250), (8900, 9500)];
    let mut f = Fold::new(&[(0, 10_000)], &down).with_maintenance(&maintenance);
    for &(ts, to) in &history() {
        f.change(ts, to);
    }
    let w = f.finish();
    let f = &w[0];
    // Without the windows: [6100, 1400, 400, 0, 2100]; up loses 200 + 100
    // + 100, down 200 + 100, muted 100; 5200..5250 and 9000..9500 stay
    // unknown.
    assert_eq!(parts(f), [5700, 1100, 300, 800, 2100]);
    assert_eq!(f.incidents, 2, "a window changes no state");
    // 2200..2500 and 5300..6000: the window cut the first period.
    assert_eq!(f.longest_down_ms, 700);
    assert_eq!(f.uptime, Some(5700.0 / 6800.0));
}
