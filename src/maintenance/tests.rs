//! Windows' checks, matching and times, to the millisecond; recurring
//! windows across daylight-saving changes.
use super::*;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("time")
        .timestamp_millis()
}

fn once(name: &str, alarms: &[&str], start: &str, end: &str) -> WindowSpec {
    WindowSpec {
        name: name.into(),
        alarms: alarms.iter().map(|s| s.to_string()).collect(),
        start: Some(start.into()),
        end: Some(end.into()),
        ..WindowSpec::default()
    }
}

fn recurring(schedule: &str, tz: &str, duration: &str) -> WindowSpec {
    WindowSpec {
        name: "weekly".into(),
        alarms: vec!["db".into()],
        schedule: Some(schedule.into()),
        duration: Some(duration.into()),
        tz: Some(tz.into()),
        ..WindowSpec::default()
    }
}

fn make(spec: WindowSpec) -> Result<Window, WindowError> {
    Window::new(spec, Source::Api, "none".into(), 0)
}

#[test]
fn bad_windows_are_refused_saying_what_is_wrong() {
    let ok = once("w", &["db"], "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
    assert!(make(ok.clone()).is_ok());
    let cases: Vec<(WindowSpec, &str)> = vec![
        (
            WindowSpec {
                end: Some("2025-12-31T23:00:00Z".into()),
                ..ok.clone()
            },
            "end must be after start",
        ),
        (
            WindowSpec {
                start: Some("yesterday".into()),
                ..ok.clone()
            },
            "not an RFC 3339 time",
        ),
        (
            WindowSpec {
                end: Some("2028-01-01T00:00:00Z".into()),
                ..ok.clone()
            },
            "at most 367 days",
        ),
        (
            WindowSpec {
                alarms: vec![],
                ..ok.clone()
            },
            "matches nothing",
        ),
        (
            WindowSpec {
                name: "Bad Name".into(),
                ..ok.clone()
            },
            "not allowed",
        ),
        (
            WindowSpec {
                schedule: Some("0 2 * * *".into()),
                ..ok.clone()
            },
            "either start and end",
        ),
        (
            WindowSpec {
                alarms: vec!["x".into(); MAX_PATTERNS + 1],
                ..ok.clone()
            },
            "at most",
        ),
        (
            WindowSpec {
                comment: "x".repeat(MAX_COMMENT_LEN + 1),
                ..ok.clone()
            },
            "comment",
        ),
        (recurring("0 2 * * *", "Mars/Olympus", "1h"), "IANA"),
        (recurring("0 2 * * * * *", "UTC", "1h"), "cron"),
        (recurring("0 2 * * *", "UTC", "0"), "more than 0"),
        (recurring("0 2 * * *", "UTC", "30d"), "at most 7 days"),
        (recurring("0 2 * * *", "UTC", "soon"), "duration"),
        (recurring("*/5 * * * *", "UTC", "1m"), "once an hour"),
        (recurring("0 0 30 2 *", "UTC", "1h"), "never fires"),
        (
            recurring("0 3 * * *", "UTC", &"1".repeat(100)),
            "longer than 32",
        ),
        (recurring(&"0 ".repeat(200), "UTC", "1h"), "longer than 200"),
        (
            recurring("0 3 * * *", &"A".repeat(100), "1h"),
            "longer than 64",
        ),
    ];
    for (spec, says) in cases {
        let e = make(spec.clone()).expect_err(&format!("{spec:?} refused"));
        assert!(e.to_string().contains(says), "{e} should say {says}");
    }
}

#[test]
fn a_one_off_window_is_open_from_its_start_to_just_before_its_end() {
    let w = make(once(
        "w",
        &["db.*"],
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00.500Z",
    ))
    .expect("window");
    let (s, e) = (ms("2026-01-01T00:00:00Z"), ms("2026-01-01T01:00:00.500Z"));
    assert!(!w.is_open(s - 1) && w.is_open(s) && w.is_open(e - 1) && !w.is_open(e));
    assert_eq!(w.current_or_next(s - 10), Some((s, e)));
    assert_eq!(w.current_or_next(e), None);
    assert_eq!(w.intervals(s + 7, e + 100), vec![(s + 7, e)]);
    assert!(w.covers_alarm("db.main") && !w.covers_alarm("db") && !w.covers_alarm("web"));
    assert!(!w.covers_service("db.main"));
}

#[test]
fn an_alarm_is_held_by_its_name_or_when_every_failed_service_is_covered() {
    let m = Maintenance::default();
    let mut spec = once(
        "w",
        &["web"],
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
    );
    spec.services = vec!["db.*".into()];
    m.set(vec![make(spec).expect("window")]);
    let t = ms("2026-01-01T12:00:00Z");
    let none: [&str; 0] = [];
    assert!(m.holds_alarm("web", &none, t));
    assert!(!m.holds_alarm("web", &none, t + 86_400_000));
    assert!(m.holds_alarm("all", &["db.a", "db.b"], t));
    assert!(!m.holds_alarm("all", &["db.a", "web.b"], t));
    assert!(!m.holds_alarm("all", &none, t));
    assert_eq!(m.active_for_alarm("web", t), vec![Arc::<str>::from("w")]);
    assert_eq!(m.active_for_service("db.x", t), vec![Arc::<str>::from("w")]);
    assert!(m.active_for_service("web", t).is_empty());
}

#[test]
fn the_registry_refuses_a_taken_name_and_is_bounded() {
    let m = Maintenance::default();
    let w = |n: &str| {
        make(once(
            n,
            &["a"],
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        ))
    };
    m.add(w("a").expect("w")).expect("added");
    assert!(matches!(
        m.add(w("a").expect("w")),
        Err(WindowError::Exists(n)) if n == "a"
    ));
    for i in 1..MAX_WINDOWS {
        m.add(w(&format!("w{i}")).expect("w")).expect("room");
    }
    assert!(matches!(
        m.add(w("last").expect("w")),
        Err(WindowError::Full(_))
    ));
    assert!(m.remove("a").is_some() && m.remove("a").is_none());
    assert!(m.add(w("last").expect("w")).is_ok());
}

/// Every day at 01:00 in Berlin, for 2 hours, across the spring change
/// (2026-03-29 02:00 CET → 03:00 CEST): 01:00 is 00:00Z while CET holds,
/// and 23:00Z the day before once CEST does.
#[test]
fn a_recurring_window_opens_at_local_time_across_the_spring_change_in_berlin() {
    let w = make(recurring("0 1 * * *", "Europe/Berlin", "2h")).expect("window");
    let opens = [
        ms("2026-03-28T00:00:00Z"),
        ms("2026-03-29T00:00:00Z"),
        ms("2026-03-29T23:00:00Z"),
        ms("2026-03-30T23:00:00Z"),
    ];
    let got = w.intervals(ms("2026-03-27T12:00:00Z"), ms("2026-03-31T12:00:00Z"));
    let want: Vec<(i64, i64)> = opens.iter().map(|&s| (s, s + 7_200_000)).collect();
    assert_eq!(got, want);
    for &s in &opens {
        assert!(!w.is_open(s - 1), "closed just before {s}");
        assert!(w.is_open(s) && w.is_open(s + 7_199_999), "open at {s}");
        assert!(!w.is_open(s + 7_200_000), "closed at the end of {s}");
        assert_eq!(w.current_or_next(s - 3_600_000), Some((s, s + 7_200_000)));
    }
}

/// 01:30 in New York on 2026-11-01 happens twice (EDT, then EST after the
/// clocks go back at 02:00): the window opens once, at the first.
#[test]
fn a_recurring_window_opens_once_on_the_autumn_change_in_new_york() {
    let w = make(recurring("30 1 * * *", "America/New_York", "30m")).expect("window");
    let got = w.intervals(ms("2026-10-31T00:00:00Z"), ms("2026-11-03T00:00:00Z"));
    let opens = [
        ms("2026-10-31T05:30:00Z"), // EDT, UTC-4
        ms("2026-11-01T05:30:00Z"), // the first 01:30, still EDT
        ms("2026-11-02T06:30:00Z"), // EST, UTC-5
    ];
    let want: Vec<(i64, i64)> = opens.iter().map(|&s| (s, s + 1_800_000)).collect();
    assert_eq!(got, want);
    assert!(
        !w.is_open(ms("2026-11-01T06:45:00Z")),
        "not again at the second 01:30"
    );
}

#[test]
fn a_recurring_window_covers_nothing_before_it_was_made_nor_after_it_was_deleted() {
    let mut w = Window::new(
        recurring("0 * * * *", "UTC", "10m"),
        Source::Api,
        "write_keys[0]".into(),
        ms("2026-01-01T02:05:00Z"),
    )
    .expect("window");
    w.deleted_at = Some(ms("2026-01-01T04:03:00Z"));
    let got = w.intervals(ms("2026-01-01T00:00:00Z"), ms("2026-01-02T00:00:00Z"));
    assert_eq!(
        got,
        vec![
            (ms("2026-01-01T02:05:00Z"), ms("2026-01-01T02:10:00Z")),
            (ms("2026-01-01T03:00:00Z"), ms("2026-01-01T03:10:00Z")),
            (ms("2026-01-01T04:00:00Z"), ms("2026-01-01T04:03:00Z")),
        ]
    );
}

#[test]
fn a_spec_reads_the_same_from_toml_and_json_and_shows_as_given() {
    let toml: WindowSpec = toml::from_str(
        "name = \"db-upgrade\"\nalarms = \"db\"\nschedule = \"0 2 * * sun\"\nduration = 5400\ntz = \"Europe/Berlin\"\n",
    )
    .expect("toml");
    assert_eq!(toml.alarms, ["db"]);
    assert_eq!(toml.duration.as_deref(), Some("5400"));
    let json: WindowSpec = serde_json::from_str(
        r#"{"name":"db-upgrade","alarms":["db"],"schedule":"0 2 * * sun","duration":"90m","tz":"Europe/Berlin"}"#,
    )
    .expect("json");
    assert!(make(json.clone()).is_ok() && make(toml).is_ok());
    let shown = serde_json::to_value(&json).expect("json");
    assert_eq!(shown["duration"], "90m");
    assert!(shown.get("start").is_none() && shown.get("notify").is_none());
    assert!(
        serde_json::from_str::<WindowSpec>(r#"{"name":"a","alarms":["b"],"created_by":"me"}"#)
            .is_err()
    );
}

#[test]
fn the_occurrences_one_answer_computes_are_bounded() {
    let w = make(recurring("0 * * * *", "UTC", "10m")).expect("window");
    let (lo, hi) = (ms("2025-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"));
    assert_eq!(w.intervals(lo, hi).len(), recur::MAX_OCCURRENCES);
    let mut budget = 100;
    assert_eq!(w.intervals_within(lo, hi, &mut budget).len(), 100);
    assert_eq!(budget, 0);
    assert!(w.intervals_within(lo, hi, &mut budget).is_empty());
}

#[test]
fn upcoming_lists_the_open_and_the_coming_windows_soonest_first() {
    let m = Maintenance::default();
    let t = ms("2026-06-01T12:00:00Z");
    m.set(vec![
        make(once(
            "past",
            &["a"],
            "2026-05-01T00:00:00Z",
            "2026-05-02T00:00:00Z",
        ))
        .expect("w"),
        make(once(
            "far",
            &["a"],
            "2026-09-01T00:00:00Z",
            "2026-09-02T00:00:00Z",
        ))
        .expect("w"),
        make(once(
            "open",
            &["a"],
            "2026-06-01T11:00:00Z",
            "2026-06-01T13:00:00Z",
        ))
        .expect("w"),
        make(recurring("0 3 * * *", "UTC", "1h")).expect("w"),
    ]);
    let got: Vec<(String, i64, i64)> = m
        .upcoming(t, 7 * 86_400_000)
        .iter()
        .map(|(w, s, e)| (w.name().to_string(), *s, *e))
        .collect();
    assert_eq!(
        got,
        [
            (
                "open".into(),
                ms("2026-06-01T11:00:00Z"),
                ms("2026-06-01T13:00:00Z")
            ),
            (
                "weekly".into(),
                ms("2026-06-02T03:00:00Z"),
                ms("2026-06-02T04:00:00Z")
            ),
        ]
    );
    assert_eq!(m.open_now(t), [Arc::<str>::from("open")]);
    assert!(m.open_now(ms("2026-06-01T13:00:00Z")).is_empty());
}
