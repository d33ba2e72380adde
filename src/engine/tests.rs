use super::*;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

fn engine(alarms: Vec<AlarmDef>) -> Engine {
    Engine::new(
        EngineConfig {
            alarms,
            service_defaults: vec![ServiceDefaults::timeout("deprecated.*", Timeout::Always)],
            ..Default::default()
        },
        T0,
    )
}

fn alarm(name: &str, pattern: &str) -> AlarmDef {
    AlarmDef {
        name: name.into(),
        includes: vec![pattern.into()],
        ..Default::default()
    }
}

fn state(e: &Engine, name: &str) -> State {
    e.service(name, false).expect("service exists").state
}

fn timeout(secs: u64) -> Change {
    Change::timeout(Timeout::After(secs * 1000))
}

#[test]
fn new_service_is_ok_and_never_expires_by_default() {
    let e = engine(vec![]);
    e.beat("a.b", T0).expect("valid");
    let mut due = Vec::new();
    e.tick(T0 + 10_000_000, &mut due);
    assert_eq!(state(&e, "a.b"), State::Ok);
    assert_eq!(e.status(), (1, 0));
}

#[test]
fn expired_service_recovers_on_next_beat() {
    let e = engine(vec![]);
    e.change("svc", timeout(2), T0).expect("valid");
    e.beat("svc", T0 + 100).expect("valid");
    let mut due = Vec::new();
    e.tick(T0 + 2099, &mut due);
    assert_eq!(state(&e, "svc"), State::Ok);
    e.tick(T0 + 2100, &mut due);
    assert_eq!(state(&e, "svc"), State::Error);
    assert_eq!(e.status(), (0, 1));
    e.beat("svc", T0 + 5000).expect("valid");
    assert_eq!(state(&e, "svc"), State::Ok);
    // The deadline moved later without touching the wheel; the old entry
    // re-arms instead of expiring.
    e.beat("svc", T0 + 6500).expect("valid");
    e.tick(T0 + 7000, &mut due);
    assert_eq!(state(&e, "svc"), State::Ok);
    e.tick(T0 + 8499, &mut due);
    assert_eq!(state(&e, "svc"), State::Ok);
    e.tick(T0 + 8500, &mut due);
    assert_eq!(state(&e, "svc"), State::Error);
}

#[test]
fn timeout_zero_is_a_tripwire_and_defaults_apply() {
    let e = engine(vec![]);
    e.change("t", timeout(0), T0).expect("valid");
    assert_eq!(state(&e, "t"), State::Error);
    e.beat("t", T0 + 5000).expect("valid");
    assert_eq!(state(&e, "t"), State::Error);
    e.beat("deprecated.thing", T0).expect("valid");
    assert_eq!(state(&e, "deprecated.thing"), State::Error);
}

#[test]
fn shortening_a_timeout_arms_an_earlier_deadline() {
    let e = engine(vec![]);
    e.change("s", timeout(3600), T0).expect("valid");
    e.change("s", timeout(1), T0 + 10).expect("valid");
    let mut due = Vec::new();
    e.tick(T0 + 1009, &mut due);
    assert_eq!(state(&e, "s"), State::Ok);
    e.tick(T0 + 1010, &mut due);
    assert_eq!(state(&e, "s"), State::Error);
}

#[test]
fn mute_unmute_and_delete() {
    let e = engine(vec![alarm("all", "*")]);
    e.change("m", timeout(0), T0).expect("valid");
    assert_eq!(e.alarm("all").expect("alarm").state, State::Error);
    e.mute("m", T0 + 1).expect("valid");
    let v = e.service("m", false).expect("exists");
    assert_eq!((v.state, v.muted_since), (State::Muted, T0 + 1));
    e.mute("m", T0 + 2).expect("valid");
    assert_eq!(e.service("m", false).expect("exists").muted_since, T0 + 1);
    assert_eq!(e.alarm("all").expect("alarm").state, State::Ok);
    e.unmute("m", T0 + 3).expect("valid");
    assert_eq!(state(&e, "m"), State::Error);
    e.unmute("unknown", T0).expect("valid");
    assert!(e.service("unknown", false).is_none());
    e.delete("m", T0 + 4);
    e.delete("m", T0 + 4);
    assert!(e.service("m", false).is_none());
    let a = e.alarm("all").expect("stays listed");
    assert_eq!(a.state, State::Ok);
    assert_eq!(e.status(), (0, 0));
    assert_eq!(e.delete_alarm("all", T0 + 5), Ok(true));
    assert!(e.alarm("all").is_none());
}

#[test]
fn alarm_incidents_count_each_entry_into_error() {
    let e = engine(vec![alarm("srv-$name", "app.$name.*")]);
    e.change("app.web.cpu", timeout(1), T0).expect("valid");
    let a = e.alarm("srv-web").expect("alarm exists");
    assert_eq!((a.state, a.incident_nbr), (State::Ok, 0));
    let mut due = Vec::new();
    e.tick(T0 + 1000, &mut due);
    let a = e.alarm("srv-web").expect("alarm");
    assert_eq!((a.state, a.incident_nbr), (State::Error, 1));
    assert_eq!(a.failed_services, vec![Name::from("app.web.cpu")]);
    assert_eq!(e.alarm_status("srv-web"), Some((0, 1)));
    e.beat("app.web.cpu", T0 + 1500).expect("valid");
    assert_eq!(e.alarm("srv-web").expect("alarm").state, State::Ok);
    e.tick(T0 + 2500, &mut due);
    let a = e.alarm("srv-web").expect("alarm");
    assert_eq!((a.state, a.incident_nbr), (State::Error, 2));
    assert_eq!(
        e.delete_alarm("srv-web", T0),
        Err(EngineError::AlarmNotEmpty("srv-web".into()))
    );
}

#[test]
fn deleted_alarm_reappears_and_continues_numbering() {
    let e = engine(vec![alarm("all", "*")]);
    e.change("x", timeout(0), T0).expect("valid");
    e.delete("x", T0 + 1);
    e.delete_alarm("all", T0 + 2).expect("empty");
    e.change("y", timeout(0), T0 + 3).expect("valid");
    assert_eq!(e.alarm("all").expect("back").incident_nbr, 2);
}

#[test]
fn invalid_names_are_refused() {
    let e = engine(vec![]);
    assert!(e.beat("Upper", T0).is_err());
    assert!(e.beat("", T0).is_err());
    assert!(e.beat(&"a".repeat(256), T0).is_err());
    assert!(e.beat(&"a".repeat(255), T0).is_ok());
}

#[test]
fn events_report_creation_and_state_changes_in_order() {
    let e = engine(vec![alarm("all", "*")]);
    let mut rx = e.subscribe();
    let _services = e.watch_services();
    e.change("s", timeout(0), T0).expect("valid");
    let kinds: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|ev| match &ev.kind {
            EventKind::ServiceAdded(s) => format!("service_added {}", s.state.as_str()),
            EventKind::ServiceStateChanged { service, previous } => {
                format!(
                    "service_state {}->{}",
                    previous.as_str(),
                    service.state.as_str()
                )
            }
            EventKind::AlarmAdded(a) => format!("alarm_added {}", a.state.as_str()),
            EventKind::AlarmStateChanged { alarm, previous } => {
                format!(
                    "alarm_state {}->{} #{}",
                    previous.as_str(),
                    alarm.state.as_str(),
                    alarm.incident_nbr
                )
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "service_added error",
            "service_state new->error",
            "alarm_added new",
            "alarm_state new->error #1"
        ]
    );
}

#[test]
fn load_applies_restart_grace() {
    let e = engine(vec![alarm("all", "*")]);
    let stored = |name: &str, state, timeout| StoredService {
        name: name.into(),
        last_beat: T0 - 100_000,
        timeout,
        state,
        muted_since: 0,
        last_state_change: T0 - 50_000,
        beat_history: vec![60000; 5],
        job: None,
    };
    e.load(
        vec![
            stored("failing", State::Error, 10_000),
            stored("fine", State::Ok, 10_000),
            stored("auto", State::Ok, TIMEOUT_AUTO),
        ],
        vec![StoredAlarm {
            name: "all".into(),
            state: State::Error,
            incident_nbr: 7,
            last_state_change: T0 - 50_000,
            listed: true,
            announced: None,
        }],
        T0,
    );
    assert_eq!(state(&e, "failing"), State::Error);
    assert_eq!(state(&e, "fine"), State::Ok);
    let a = e.alarm("all").expect("alarm");
    assert_eq!((a.state, a.incident_nbr), (State::Error, 7));
    let mut due = Vec::new();
    e.tick(T0 + 9_999, &mut due);
    assert_eq!(state(&e, "fine"), State::Ok);
    e.tick(T0 + 10_000, &mut due);
    assert_eq!(state(&e, "fine"), State::Error);
    assert_eq!(state(&e, "auto"), State::Ok);
    e.tick(T0 + 61_000, &mut due);
    assert_eq!(state(&e, "auto"), State::Error);
    let fine = e.service("fine", false).expect("exists");
    assert_eq!(fine.last_beat, T0 - 100_000);
    // The first beat after start adds no interval.
    e.beat("auto", T0 + 70_000).expect("valid");
    assert_eq!(
        e.service("auto", true).expect("exists").beat_history,
        Some(vec![60000; 5])
    );
}

#[test]
fn a_snooze_ends_in_the_wheel_and_frees_the_job_fields() {
    let e = engine(vec![]);
    e.change("snoozed", timeout(0), T0).expect("valid");
    assert_eq!(state(&e, "snoozed"), State::Error);
    e.mute_until("snoozed", Some(T0 + 2000), T0).expect("valid");
    assert_eq!(state(&e, "snoozed"), State::Muted);
    let mut due = Vec::new();
    e.tick(T0 + 1999, &mut due);
    assert_eq!(state(&e, "snoozed"), State::Muted);
    e.tick(T0 + 2000, &mut due);
    assert_eq!(state(&e, "snoozed"), State::Error);
    let (muted_since, ext) = e
        .inspect("snoozed", |_, s| (s.muted_since, s.job.is_some()))
        .expect("exists");
    assert_eq!(muted_since, 0);
    assert!(!ext, "no job field is in use any more");
}

#[test]
fn a_child_alarm_names_its_parent_from_its_own_captures() {
    let mut server = alarm("server-$site", "srv.$site.*");
    server.depends_on = vec!["network-$site".into()];
    let e = engine(vec![alarm("network-$site", "net.$site.*"), server]);
    e.change("net.sto.router", timeout(0), T0).expect("valid");
    e.change("srv.sto.web", timeout(0), T0).expect("valid");
    e.change("srv.gbg.web", timeout(0), T0).expect("valid");
    let sto = e.alarm("server-sto").expect("exists");
    assert_eq!(&*sto.depends_on, [Arc::<str>::from("network-sto")]);
    assert_eq!(sto.suppressed_by, vec![Arc::<str>::from("network-sto")]);
    // network-gbg does not exist: nothing holds server-gbg.
    assert!(e
        .alarm("server-gbg")
        .expect("exists")
        .suppressed_by
        .is_empty());
    e.change("net.sto.router", timeout(3600), T0)
        .expect("valid");
    assert!(e
        .alarm("server-sto")
        .expect("exists")
        .suppressed_by
        .is_empty());
}

#[test]
fn an_alarm_knows_when_all_its_services_are_muted() {
    let e = engine(vec![alarm("web", "web.*")]);
    e.change("web.a", timeout(60), T0).expect("valid");
    e.mute("web.b", T0).expect("valid"); // created muted
    assert!(!e.alarm_all_muted("web"));
    e.mute("web.a", T0).expect("valid");
    assert!(e.alarm_all_muted("web"));
    e.unmute("web.b", T0).expect("valid");
    assert!(!e.alarm_all_muted("web"));
    e.delete("web.b", T0);
    assert!(e.alarm_all_muted("web"));
    e.delete("web.a", T0);
    assert!(!e.alarm_all_muted("web"), "an empty alarm is not muted");
    assert!(!e.alarm_all_muted("nope"));
}

#[test]
fn service_events_flow_only_while_watched() {
    let e = engine(vec![alarm("all", "*")]);
    let mut rx = e.subscribe();
    e.change("quiet", timeout(0), T0).expect("valid");
    let unwatched: Vec<bool> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|ev| {
            matches!(
                ev.kind,
                EventKind::AlarmAdded(_) | EventKind::AlarmStateChanged { .. }
            )
        })
        .collect();
    // The alarm's events come; the service's do not.
    assert!(!unwatched.is_empty());
    assert!(unwatched.iter().all(|alarm_event| *alarm_event));

    let watch = e.watch_services();
    e.change("seen", timeout(0), T0).expect("valid");
    let added: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|ev| match &ev.kind {
            EventKind::ServiceAdded(s) => Some(s.name.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(added, ["seen"]);

    drop(watch);
    e.delete("seen", T0);
    assert!(std::iter::from_fn(|| rx.try_recv().ok())
        .all(|ev| !matches!(ev.kind, EventKind::ServiceRemoved(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn the_driver_reports_alive_while_it_expires_deadlines() {
    let e = Engine::new(EngineConfig::default(), crate::clock::now_ms());
    let reports = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = tokio::spawn(
        e.clone()
            .run_expiry(stop.clone(), Duration::from_millis(50), {
                let reports = reports.clone();
                move || {
                    reports.fetch_add(1, Ordering::Relaxed);
                }
            }),
    );
    // Between reports, a deadline still fires on time.
    e.change("svc", timeout(1), crate::clock::now_ms())
        .expect("valid");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(state(&e, "svc"), State::Error);
    let n = reports.load(Ordering::Relaxed);
    assert!(
        (10..=24).contains(&n),
        "{n} reports in 1.1 s at one per 50 ms"
    );
    // A stopped driver reports nothing more.
    stop.cancel();
    driver.await.expect("driver ends");
    let n = reports.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reports.load(Ordering::Relaxed), n);
}

/// A driver held up for many report periods (its thread blocked) reports
/// once when it runs again, not once per period it missed.
#[tokio::test]
async fn a_held_up_driver_reports_once_not_once_per_missed_period() {
    let e = Engine::new(EngineConfig::default(), crate::clock::now_ms());
    let reports = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = tokio::spawn(
        e.clone()
            .run_expiry(stop.clone(), Duration::from_millis(50), {
                let reports = reports.clone();
                move || {
                    reports.fetch_add(1, Ordering::Relaxed);
                }
            }),
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    // Block the runtime's only thread for ten report periods.
    std::thread::sleep(Duration::from_millis(500));
    let before = reports.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let caught_up = reports.load(Ordering::Relaxed) - before;
    assert!(
        (1..=2).contains(&caught_up),
        "{caught_up} reports right after a 500 ms hold-up at one per 50 ms"
    );
    stop.cancel();
    driver.await.expect("driver ends");
}

#[test]
fn the_configured_algorithm_learns_and_details_show_each_step() {
    let e = Engine::new(
        EngineConfig {
            algorithm: auto::Algorithm::Robust,
            ..Default::default()
        },
        T0,
    );
    let intervals = [60_000u32, 61_000, 59_000, 60_500, 90_000, 60_000];
    let mut now = T0;
    e.change(
        "auto.svc",
        Change {
            beat: true,
            ..Change::timeout(Timeout::Auto)
        },
        now,
    )
    .expect("valid");
    for i in intervals {
        now += i64::from(i);
        e.beat("auto.svc", now).expect("valid");
    }
    let v = e.service("auto.svc", true).expect("exists");
    assert_eq!(v.beat_history.as_deref(), Some(&intervals[..]));
    assert_eq!(
        v.effective_timeout,
        Some(auto::robust(intervals.iter().copied()))
    );
    assert_ne!(
        v.effective_timeout,
        Some(auto::lovebeat1(intervals.iter().copied()))
    );
    let steps = v.learned_timeouts.expect("an auto service with details");
    assert_eq!(steps.len(), intervals.len());
    assert_eq!(steps[0], None);
    for (i, step) in steps.iter().enumerate().skip(1) {
        assert_eq!(
            *step,
            Some(auto::robust(intervals[..i].iter().copied())),
            "step {i}"
        );
    }
    // Without details, or for a fixed timeout, there are none.
    assert!(e
        .service("auto.svc", false)
        .expect("exists")
        .learned_timeouts
        .is_none());
    e.change("fixed", timeout(60), now).expect("valid");
    assert!(e
        .service("fixed", true)
        .expect("exists")
        .learned_timeouts
        .is_none());
}

#[test]
fn every_alarm_transition_waits_for_the_dispatcher_in_order() {
    let e = engine(vec![alarm("web-$x", "web.$x.*"), alarm("all", "*")]);
    e.change("web.a.x", timeout(1), T0).expect("valid");
    e.change("web.b.x", Change::timeout(Timeout::Always), T0 + 1)
        .expect("valid");
    let mut due = Vec::new();
    e.tick(T0 + 1000, &mut due);
    e.beat("web.a.x", T0 + 2000).expect("valid");
    let got: Vec<(String, State, State)> = e
        .take_transitions()
        .into_iter()
        .map(|t| (t.alarm.name.to_string(), t.previous, t.alarm.state))
        .collect();
    assert_eq!(
        got,
        vec![
            ("all".into(), State::New, State::Ok),
            ("web-a".into(), State::New, State::Ok),
            ("all".into(), State::Ok, State::Error),
            ("web-b".into(), State::New, State::Error),
            ("web-a".into(), State::Ok, State::Error),
            ("web-a".into(), State::Error, State::Ok),
        ]
    );
    assert!(e.take_transitions().is_empty(), "taken once");
}

#[test]
fn takes_racing_changes_never_return_a_later_transition_before_an_earlier_one() {
    // One thread changes two alarms in turn while another takes: across
    // all takes the transitions come out in the order they were made (a
    // take that listed one alarm must not grab a change made after
    // another alarm's change it will only see next time).
    let e = engine(vec![alarm("a", "a.*"), alarm("b", "b.*")]);
    e.change("a.x", Change::beat(), T0).expect("valid");
    e.change("b.x", Change::beat(), T0).expect("valid");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let taker = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(e.take_transitions().into_iter().map(|t| t.seq));
            }
            seen.extend(e.take_transitions().into_iter().map(|t| t.seq));
            seen
        })
    };
    for i in 0..20_000 {
        let name = if i % 2 == 0 { "a.x" } else { "b.x" };
        let t = if (i / 2) % 2 == 0 {
            Timeout::Always
        } else {
            Timeout::None
        };
        e.change(name, Change::timeout(t), T0 + i).expect("valid");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = taker.join().expect("taker");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order: {:?}",
        seen.windows(2).find(|w| w[0] >= w[1])
    );
}

#[test]
fn an_alarm_keeps_a_bounded_number_of_transitions_and_merges_the_middle() {
    let e = engine(vec![alarm("flappy", "f")]);
    e.beat("f", T0).expect("valid");
    let _ = e.take_transitions();
    // A fail and a beat are two transitions each round, none taken.
    for i in 0..100 {
        let now = T0 + 2000 * (i + 1);
        let fail = Change {
            fail: Some(FailReport::default()),
            ..Change::default()
        };
        e.change("f", fail, now).expect("valid");
        e.beat("f", now + 1000).expect("valid");
    }
    let t = e.take_transitions();
    assert_eq!(t.len(), MAX_PENDING);
    assert_eq!((t[0].previous, t[0].alarm.state), (State::Ok, State::Error));
    assert_eq!(t[0].alarm.incident_nbr, 1, "the first incident is kept");
    let last = t.last().expect("some");
    assert_eq!(
        (last.alarm.state, last.alarm.incident_nbr),
        (State::Ok, 100)
    );
    let merged: u32 = t.iter().map(|t| t.merged).sum();
    assert_eq!(merged as usize + t.len(), 200);
    assert_eq!(e.transitions_merged(), u64::from(merged));
    // The chain of states stays consistent: each starts where the last
    // ended.
    for w in t.windows(2) {
        assert_eq!(w[1].previous, w[0].alarm.state);
    }
}

#[test]
fn a_restart_announces_what_was_not_and_nothing_else() {
    let e = engine(vec![
        alarm("a", "a.*"),
        alarm("b", "b.*"),
        alarm("c", "c.*"),
    ]);
    let stored = |name: &str, state| StoredService {
        name: Name::new(name),
        last_beat: T0 - 1000,
        timeout: 0,
        state,
        muted_since: 0,
        last_state_change: T0 - 1000,
        beat_history: vec![],
        job: None,
    };
    let alarm_at = |name: &str, announced| StoredAlarm {
        name: name.into(),
        state: State::Error,
        incident_nbr: 4,
        last_state_change: T0 - 1000,
        listed: true,
        announced,
    };
    e.load(
        vec![
            stored("a.x", State::Error),
            stored("b.x", State::Error),
            stored("c.x", State::Error),
        ],
        vec![
            // Announced: nothing to repeat.
            alarm_at("a", Some((State::Error, 4))),
            // Its receivers heard of incident 3 only.
            alarm_at("b", Some((State::Error, 3))),
            // A 1.x database: taken as announced.
            alarm_at("c", None),
        ],
        T0,
    );
    let t = e.take_transitions();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(&*t[0].alarm.name, "b");
    assert_eq!(
        (t[0].previous, t[0].alarm.state, t[0].alarm.incident_nbr),
        (State::Ok, State::Error, 4)
    );
}

#[test]
fn a_service_holds_one_live_deadline_however_often_its_timeout_changes() {
    let e = engine(vec![]);
    e.change("steady", timeout(3600), T0).expect("valid");
    let mut due = Vec::new();
    // Every change moves the deadline earlier: each arms a new entry and
    // leaves the one before stale.
    for i in 0..200_000u64 {
        e.change(
            "moving",
            Change::timeout(Timeout::After(400_000_000 - i)),
            T0,
        )
        .expect("valid");
        if i % 10_000 == 0 {
            e.tick(T0 + 1, &mut due);
        }
        let (entries, _) = e.timer_entries();
        assert!(entries <= 2 * 2 + 4096 + 10_000, "{entries} entries at {i}");
    }
    e.tick(T0 + 1, &mut due);
    let (entries, stale) = e.timer_entries();
    assert!(
        entries <= 4096 + 4,
        "{entries} entries ({stale} stale) for 2 services"
    );
    // Both still expire when due.
    e.tick(T0 + 3_600_000, &mut due);
    assert_eq!(state(&e, "steady"), State::Error);
    e.tick(T0 + 400_000_000, &mut due);
    assert_eq!(state(&e, "moving"), State::Error);
    // A deleted service's entry is stale too.
    e.change("gone", timeout(10), T0).expect("valid");
    e.delete("gone", T0);
    assert_eq!(e.timer_entries().1, 1);
}

/// SPEC §5: a service refused an alarm at `max_alarms` waits for it, is
/// counted while it waits, and joins it (in its current state) when a
/// place frees; a deleted orphan waits for nothing.
#[test]
fn orphans_join_their_alarm_when_a_place_frees() {
    let e = Engine::new(
        EngineConfig {
            alarms: vec![alarm("t-$n", "t.$n")],
            max_alarms: 2,
            ..Default::default()
        },
        T0,
    );
    for n in ["a", "b", "c", "d", "e"] {
        e.beat(&format!("t.{n}"), T0).expect("valid");
    }
    assert_eq!(e.orphans(), 3);
    assert!(e.alarm("t-c").is_none());
    // An orphan in ERROR before it joins.
    e.change("t.c", Change::timeout(Timeout::Always), T0)
        .expect("valid");
    e.delete("t.d", T0);
    assert_eq!(e.orphans(), 2, "a deleted orphan leaves the set");
    e.delete("t.a", T0);
    assert_eq!(e.delete_alarm("t-a", T0), Ok(true));
    let c = e.alarm("t-c").expect("the orphan joined its alarm");
    assert_eq!(c.state, State::Error, "{c:?}");
    assert_eq!(c.failed_services, vec![Name::from("t.c")]);
    assert_eq!(
        e.service("t.c", false).expect("exists").in_alarms,
        vec![Arc::<str>::from("t-c")]
    );
    assert_eq!(e.orphans(), 1);
    // t.d was deleted: its alarm is not made when the next place frees.
    e.delete("t.b", T0);
    assert_eq!(e.delete_alarm("t-b", T0), Ok(true));
    assert!(e.alarm("t-d").is_none());
    assert!(e.alarm("t-e").is_some());
    assert_eq!(e.orphans(), 0);
    e.change(
        "t.e",
        Change {
            fail: Some(FailReport::default()),
            ..Change::default()
        },
        T0,
    )
    .expect("valid");
    assert_eq!(e.alarm("t-e").expect("joined").state, State::Error);
}

/// A task that holds the runtime's thread (the TCP reader waiting for the
/// history's writer, in the 1 M soak) does not hold expiry up: the driver
/// runs on a thread of its own.
#[tokio::test(flavor = "current_thread")]
async fn a_held_runtime_thread_does_not_hold_expiry_up() {
    let e = Engine::new(EngineConfig::default(), crate::clock::now_ms());
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = e
        .clone()
        .spawn_expiry(stop.clone(), Duration::from_secs(1), || {})
        .expect("the expiry thread starts");
    let beat = Change {
        beat: true,
        ..timeout(1)
    };
    e.change("svc", beat, crate::clock::now_ms())
        .expect("valid");
    // Hold the runtime's only thread until the service expires, or long
    // past its 1 s deadline.
    let held = std::time::Instant::now();
    while state(&e, "svc") != State::Error && held.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        state(&e, "svc"),
        State::Error,
        "the deadline did not fire while the runtime's thread was held"
    );
    stop.cancel();
    driver.await;
}

/// A driver held up while lovebeat itself was busy (here: the runtime's
/// thread spinning for 8 s, while the rest of the process runs) expires
/// what is due at once instead of taking
/// the gap for a suspension and restarting every deadline (in the 1 M soak,
/// "lovebeat did not run for 7 s" postponed real expiries).
#[tokio::test(flavor = "current_thread")]
async fn a_driver_held_up_by_a_busy_process_is_not_a_suspension() {
    let e = Engine::new(EngineConfig::default(), crate::clock::now_ms());
    let stop = tokio_util::sync::CancellationToken::new();
    let driver = tokio::spawn(
        e.clone()
            .run_expiry(stop.clone(), Duration::from_secs(1), || {}),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let beat = Change {
        beat: true,
        ..timeout(5)
    };
    e.change("svc", beat, crate::clock::now_ms())
        .expect("valid");
    // Busy, not asleep: the process burns CPU on the driver's thread, past
    // the service's deadline and past the driver's suspension threshold.
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_secs(8) {
        std::hint::black_box(spin.elapsed());
    }
    let spun = crate::clock::now_ms();
    // Restarted deadlines would keep it OK 5 s more; due, it expires now.
    let waited = std::time::Instant::now();
    while state(&e, "svc") != State::Error && waited.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let svc = e.service("svc", false).expect("service exists");
    assert_eq!(svc.state, State::Error);
    assert!(
        svc.last_state_change < spun + 2_500,
        "ERROR {} ms after the hold-up: its deadline was restarted as after a suspension",
        svc.last_state_change - spun
    );
    assert_eq!(e.expiry_held_up(), 1);
    stop.cancel();
    driver.await.expect("driver ends");
}

/// A mass expiry larger than the history's queue (issue 32: a million at
/// once) makes every service ERROR without waiting for the writer and
/// without losing an event; its alarm settles once, with every member in
/// its failed set, and the counts agree.
#[test]
fn a_mass_expiry_beyond_the_feed_does_not_wait_and_its_alarm_settles_once() {
    let n = journal::CAPACITY + 1000;
    let e = engine(vec![alarm("expiring", "exp.*")]);
    let feed = e.journal(journal::Feed::History);
    let _watch = e.watch_services();
    let beat = Change {
        beat: true,
        ..timeout(10)
    };
    for i in 0..n {
        e.change(&format!("exp.{i:06}"), beat.clone(), T0)
            .expect("valid");
        if i % 1000 == 0 {
            // The writer keeps up with the creation.
            feed.take(Duration::ZERO);
        }
    }
    e.change("other", beat.clone(), T0).expect("valid");
    feed.take(Duration::ZERO);
    assert_eq!(e.journal_lost(journal::Feed::History), 0);

    // No writer takes the feed meanwhile: one at a time, the queue filled
    // after CAPACITY events, the expiry waited a second and lost the rest.
    e.tick(T0 + 10_000, &mut Vec::new());
    assert_eq!(e.status(), (0, n as i64 + 1));
    assert_eq!(e.journal_lost(journal::Feed::History), 0);
    let changes = feed
        .take(Duration::ZERO)
        .events
        .iter()
        .filter(|ev| {
            matches!(
                ev.kind,
                EventKind::ServiceStateChanged {
                    previous: State::Ok,
                    ..
                }
            )
        })
        .count();
    assert_eq!(changes, n + 1);

    let a = e.alarm("expiring").expect("alarm");
    assert_eq!((a.state, a.incident_nbr), (State::Error, 1));
    assert_eq!(a.failed_services.len(), n);
    assert!(a.failed_services.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(e.alarm_status("expiring"), Some((0, n as i64)));

    // A beat brings one back: out of the alarm, counts moved back.
    e.change("exp.000007", Change::beat(), T0 + 11_000)
        .expect("valid");
    assert_eq!(e.status(), (1, n as i64));
    assert_eq!(
        e.alarm("expiring").expect("alarm").failed_services.len(),
        n - 1
    );
}

/// The members of an alarm that expire together settle it once: one
/// event (and one lock) for the batch, where one member at a time made one
/// each.
#[test]
fn members_expiring_together_settle_their_alarm_once() {
    let e = engine(vec![alarm("expiring", "exp.*")]);
    let beat = Change {
        beat: true,
        ..timeout(10)
    };
    for i in 0..500 {
        e.change(&format!("exp.{i:03}"), beat.clone(), T0)
            .expect("valid");
    }
    let mut rx = e.subscribe();
    e.tick(T0 + 10_000, &mut Vec::new());
    let alarm_events: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|ev| {
            matches!(
                ev.kind,
                EventKind::AlarmStateChanged { .. } | EventKind::AlarmUpdated(_)
            )
        })
        .collect();
    let shards_with_members = alarm_events.len();
    // One per shard holding members at most (their lock is let go between
    // shards), never one per member.
    assert!(
        (1..=256).contains(&shards_with_members) && shards_with_members < 500,
        "{shards_with_members} alarm events for 500 members"
    );
    assert!(matches!(
        alarm_events[0].kind,
        EventKind::AlarmStateChanged {
            previous: State::Ok,
            ..
        }
    ));
    let a = e.alarm("expiring").expect("alarm");
    assert_eq!((a.state, a.failed_services.len()), (State::Error, 500));
}
