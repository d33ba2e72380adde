//! The rollups give what the raw changes give, to the millisecond.
use super::*;
use crate::engine::State;

const OK: i64 = State::Ok as i64;
const ERR: i64 = State::Error as i64;
const MUTED: i64 = State::Muted as i64;

/// A file with one service flipping for `days` days from day 100 (a
/// pseudo-random walk: ERROR periods across midnight, whole days down,
/// mutes), and lovebeat down for a while on day 130.
fn constructed(days: i64) -> (Connection, i64) {
    let mut conn = Connection::open_in_memory().expect("db");
    crate::history::schema::migrate(&mut conn).expect("schema");
    conn.execute("INSERT INTO names (id, kind, name) VALUES (1, 0, 's')", [])
        .expect("name");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = 100 * DAY + 12_345;
    let end = (100 + days) * DAY;
    let mut ts = start;
    let mut seq = 1;
    let mut state = OK;
    while ts < end {
        conn.execute(
            "INSERT INTO changes VALUES (1, ?1, ?2, NULL, ?3, 0, NULL)",
            params![ts, seq, state],
        )
        .expect("change");
        seq += 1;
        let r = next();
        // Mostly hours apart; now and then two days (a whole day down).
        ts += if r % 17 == 0 {
            2 * DAY + 777
        } else {
            (r % (6 * 3_600_000)) as i64 + 1
        };
        state = match r % 5 {
            0 | 1 => ERR,
            2 => MUTED,
            _ => OK,
        };
    }
    // Two runs of lovebeat: down from 130.5 to 131.25 days.
    conn.execute_batch(&format!(
        "INSERT INTO lifecycle (started, last_seen, stopped) VALUES (0, {a}, {a}); \
         INSERT INTO lifecycle (started, last_seen, stopped) VALUES ({b}, {b}, NULL);",
        a = 130 * DAY + DAY / 2,
        b = 131 * DAY + DAY / 4
    ))
    .expect("lifecycle");
    (conn, end + 3 * DAY)
}

fn public(f: &Figures) -> serde_json::Value {
    serde_json::to_value(f).expect("json")
}

#[test]
fn rolled_up_days_give_the_raw_figures_to_the_millisecond() {
    let (conn, now) = constructed(60);
    let windows: Vec<(i64, i64)> = vec![
        (90 * DAY, now),
        (100 * DAY + 5, 140 * DAY - 7),
        (101 * DAY, 131 * DAY),
        (120 * DAY + DAY / 3, now - DAY / 2),
        (150 * DAY, 170 * DAY),
    ];
    // Raw, each alone (the fold wants windows sorted; these are not).
    let raw: Vec<Figures> = windows
        .iter()
        .map(|w| {
            super::super::compute(&conn, Kind::Service, "s", &[*w], now)
                .expect("raw")
                .expect("known")
                .windows
                .remove(0)
        })
        .collect();
    let written = roll(&conn, 0, 10, now).expect("roll");
    assert!(written >= 60, "{written} days rolled up");
    let rolled: Option<i64> = conn
        .query_row("SELECT rolled_until FROM names WHERE id = 1", [], |r| {
            r.get(0)
        })
        .expect("rolled_until");
    assert_eq!(rolled, Some((now - MARGIN).div_euclid(DAY)));
    // Each window alone, and all at once (pieces grouped), as rolled.
    let together = compute(&conn, Kind::Service, "s", &windows, now, i64::MIN)
        .expect("rolled")
        .expect("known");
    for (i, w) in windows.iter().enumerate() {
        let alone = compute(&conn, Kind::Service, "s", &[*w], now, i64::MIN)
            .expect("rolled")
            .expect("known");
        assert_eq!(public(&alone.windows[0]), public(&raw[i]), "{w:?}");
        assert_eq!(public(&together.windows[i]), public(&raw[i]), "{w:?}");
    }
    // Every single day, as `/daily` asks.
    let days: Vec<(i64, i64)> = (95..170).map(|d| (d * DAY, (d + 1) * DAY)).collect();
    let raw_days = super::super::compute(&conn, Kind::Service, "s", &days, now)
        .expect("raw")
        .expect("known");
    let rolled_days = compute(&conn, Kind::Service, "s", &days, now, i64::MIN)
        .expect("rolled")
        .expect("known");
    for (r, d) in raw_days.windows.iter().zip(&rolled_days.windows) {
        assert_eq!(public(r), public(d));
    }
}

#[test]
fn pruned_changes_leave_the_rolled_up_days_whole() {
    let (conn, now) = constructed(40);
    let window = [(100 * DAY, 140 * DAY)];
    let raw = super::super::compute(&conn, Kind::Service, "s", &window, now)
        .expect("raw")
        .expect("known");
    roll(&conn, 0, 10, now).expect("roll");
    conn.execute("DELETE FROM changes WHERE ts < ?1", [139 * DAY])
        .expect("pruned");
    let rolled = compute(&conn, Kind::Service, "s", &window, now, i64::MIN)
        .expect("rolled")
        .expect("known");
    assert_eq!(public(&rolled.windows[0]), public(&raw.windows[0]));
    // A window that begins inside a day whose changes are gone is
    // widened to that whole day, and says so.
    let cut = [(100 * DAY + 5000, 140 * DAY)];
    let widened = compute(&conn, Kind::Service, "s", &cut, now, 139 * DAY)
        .expect("rolled")
        .expect("known");
    assert_eq!(public(&widened.windows[0]), public(&raw.windows[0]));
    let f = &raw.windows[0];
    assert_eq!(
        f.up_ms + f.down_ms + f.muted_ms + f.maintenance_ms + f.unknown_ms,
        40 * DAY
    );
    assert!(
        f.longest_down_ms > DAY,
        "a whole day down is in the history"
    );
}

#[test]
fn an_error_run_across_midnight_is_joined() {
    let mut conn = Connection::open_in_memory().expect("db");
    crate::history::schema::migrate(&mut conn).expect("schema");
    conn.execute_batch(&format!(
        "INSERT INTO names (id, kind, name) VALUES (1, 1, 'a'); \
         INSERT INTO changes VALUES (1, {}, 1, NULL, {OK}, 0, NULL); \
         INSERT INTO changes VALUES (1, {}, 2, {OK}, {ERR}, 8, 1); \
         INSERT INTO changes VALUES (1, {}, 3, {ERR}, {OK}, 9, 1);",
        10 * DAY,
        11 * DAY - 1000,
        13 * DAY + 500
    ))
    .expect("rows");
    let now = 20 * DAY;
    roll(&conn, 0, 10, now).expect("roll");
    let r = compute(
        &conn,
        Kind::Alarm,
        "a",
        &[(10 * DAY, 20 * DAY)],
        now,
        i64::MIN,
    )
    .expect("rolled")
    .expect("known");
    let f = &r.windows[0];
    assert_eq!(f.longest_down_ms, 2 * DAY + 1500);
    assert_eq!(f.mttr_ms, Some(2 * DAY + 1500));
    assert_eq!((f.incidents, f.recoveries), (1, 1));
    assert_eq!(f.down_ms, 2 * DAY + 1500);
}
