//! The database's unit tests: a 1.x file read, saves round-tripped,
//! failed saves cleaned up, and hostile files refused.

use super::format::{encode_service, Snapshot};
use super::load::{read_content, uncompressed_size_hint};
use super::*;
use crate::engine::job::{JobFailure, JobRecord};
use crate::engine::Name;
use crate::engine::{AlarmDef, Change, Engine, EngineConfig, State, Timeout};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const T0: i64 = 1_700_000_000_000;

fn gz(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(text.as_bytes()).expect("in memory");
    e.finish().expect("in memory")
}

#[test]
fn reads_a_1x_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lovebeat.db");
    std::fs::write(
        &path,
        gz(concat!(
            "SERV\t{\"name\":\"a.b\",\"last_beat\":1490000000000,\"beat_history\":[60000,61000],\"timeout\":-2,\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":1490000000000,\"in_alarms\":[\"all\"]}\n",
            "SERV\t{\"name\":\"c\",\"last_beat\":-1,\"timeout\":5000,\"state\":\"error\",\"muted_since\":0,\"last_state_change\":1}\n",
            "VIEW\t{\"name\":\"old\"}\n",
            "ALARM\t{\"name\":\"all\",\"state\":\"error\",\"incident_nbr\":4,\"failed_services\":[\"c\"],\"last_state_change\":1}\n",
        )),
    )
    .expect("write");
    let l = load(&path).expect("readable").expect("exists");
    assert_eq!(l.services.len(), 2);
    assert_eq!(l.services[0].beat_history, vec![60000, 61000]);
    assert_eq!(l.services[0].timeout, -2);
    assert_eq!(l.services[1].state, State::Error);
    assert_eq!(l.alarms[0].incident_nbr, 4);
}

#[test]
fn histories_load_saturated_and_names_with_escapes_decoded() {
    let long: Vec<String> = (1..=150).map(|v| v.to_string()).collect();
    let text = format!(
        concat!(
            "SERV\t{{\"name\":\"n\",\"beat_history\":null,\"timeout\":-1,\"state\":\"ok\"}}\n",
            "SERV\t{{\"name\":\"s\",\"beat_history\":[-5,99999999999,7],\"timeout\":-1,\"state\":\"ok\"}}\n",
            "SERV\t{{\"name\":\"l\\u002e1\",\"beat_history\":[{}],\"timeout\":-2,\"state\":\"ok\"}}\n",
        ),
        long.join(",")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lovebeat.db");
    std::fs::write(&path, gz(&text)).expect("write");
    let l = load(&path).expect("readable").expect("exists");
    assert!(l.services[0].beat_history.is_empty());
    assert_eq!(l.services[1].beat_history, vec![0, u32::MAX, 7]);
    assert_eq!(l.services[2].name, "l.1");
    let e = Engine::new(EngineConfig::default(), T0);
    e.load(l.services, l.alarms, T0);
    let kept = e.service("l.1", true).expect("loaded").beat_history;
    assert_eq!(kept, Some((51..=150).collect::<Vec<u32>>()), "the last 100");
}

#[test]
fn missing_file_is_an_empty_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(load(&dir.path().join("none.db")).expect("ok").is_none());
}

#[test]
fn corrupt_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.db");
    std::fs::write(&path, b"not gzip at all").expect("write");
    assert!(matches!(load(&path), Err(DbError::Io { .. })));
    std::fs::write(&path, gz("SERV\t{\"name\":\"a\"}\nSERV\t{broken\n")).expect("write");
    let err = load(&path).expect_err("malformed line");
    assert!(err.to_string().contains("line 2"), "{err}");
    let full = gz("SERV\t{\"name\":\"a\"}\n");
    std::fs::write(&path, &full[..full.len() - 6]).expect("write");
    assert!(load(&path).is_err());
}

#[test]
fn save_then_load_round_trips() {
    let e = Engine::new(
        EngineConfig {
            alarms: vec![AlarmDef {
                name: "all".into(),
                includes: vec!["*".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        T0,
    );
    e.change(
        "x",
        Change {
            beat: true,
            ..Change::timeout(Timeout::Always)
        },
        T0,
    )
    .expect("valid");
    e.beat("y", T0).expect("valid");
    e.beat("y", T0 + 5000).expect("valid");
    e.mute("z", T0).expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    e.mark_announced("all", State::Error, 1);
    let before = crate::clock::now_ms();
    let saved = save(&e, &path).expect("saved");
    assert_eq!((saved.services, saved.alarms), (3, 1));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("db")],
        "no temporary file left"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "job output is not for other users");
    let l = load(&path).expect("ok").expect("exists");
    assert!(l.saved_at.is_some_and(|t| t >= before));
    assert_eq!(l.alarms[0].announced, Some((State::Error, 1)));
    let mut names: Vec<_> = l
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("x", State::Error), ("y", State::Ok), ("z", State::Muted)]
    );
    let y = l.services.iter().find(|s| s.name == "y").expect("y");
    assert_eq!(y.beat_history, vec![5000]);
    assert_eq!(l.alarms[0].incident_nbr, 1);
}

/// A save that fails (here: the directory is gone) leaves no temporary
/// file and the old database as it was; two saves at once take turns.
#[test]
fn a_failed_save_leaves_nothing_and_saves_never_overlap() {
    let e = Engine::new(EngineConfig::default(), T0);
    for i in 0..5000 {
        e.beat(&format!("s{i}"), T0).expect("valid");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    save(&e, &path).expect("first save");
    let old = std::fs::read(&path).expect("saved");
    let gone = dir.path().join("gone/db");
    assert!(save(&e, &gone).is_err());
    assert_eq!(std::fs::read(&path).expect("kept"), old);
    // A save that fails after its temp file was written (the rename
    // over a directory fails) removes the temp file.
    let blocked = dir.path().join("blocked");
    std::fs::create_dir_all(blocked.join("inside")).expect("dir");
    assert!(save(&e, &blocked).is_err());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (e, path) = (e.clone(), path.clone());
            std::thread::spawn(move || save(&e, &path).map(|s| s.services))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("thread").expect("saved"), 5000);
    }
    assert_eq!(
        load(&path).expect("ok").expect("exists").services.len(),
        5000
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "only the database and the directory: {left:?}"
    );
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 1, "saves overlapped");
}

/// Saves running at once, and the most seen, in this test binary.
static AT_ONCE: AtomicUsize = AtomicUsize::new(0);
static MOST_AT_ONCE: AtomicUsize = AtomicUsize::new(0);

/// Counts a save from its start to its end (see [`save`]).
pub(super) struct Saving;

impl Saving {
    pub(super) fn enter() -> Saving {
        let now = AT_ONCE.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
        // Long enough for racing saves to meet if nothing kept them apart.
        std::thread::sleep(std::time::Duration::from_millis(20));
        Saving
    }
}

impl Drop for Saving {
    fn drop(&mut self) {
        AT_ONCE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Many services per shard, each with its own number of intervals:
/// every one comes back with exactly its own history.
#[test]
fn histories_survive_the_shard_snapshot() {
    let e = Engine::new(EngineConfig::default(), T0);
    for i in 0..2000i64 {
        let name = format!("s{i}");
        for k in 0..=(i % 7) {
            e.beat(&name, T0 + k * (1000 + i)).expect("valid");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    assert_eq!(save(&e, &path).expect("saved").services, 2000);
    let l = load(&path).expect("ok").expect("exists");
    assert_eq!(l.services.len(), 2000);
    for s in &l.services {
        let i: i64 = s.name[1..].parse().expect("numbered");
        let want = vec![(1000 + i) as u32; (i % 7) as usize];
        assert_eq!(s.beat_history, want, "{}", s.name);
    }
}

/// Every job field of a `SERV` record is read back: the record lists
/// them by hand (no `flatten`), so one left out of either list would
/// silently be lost at the next restart.
#[test]
fn every_job_field_round_trips() {
    let job = JobRecord {
        schedule: Some("0 3 * * *".into()),
        tz: Some("Europe/Stockholm".into()),
        grace: Some(600_000),
        max_runtime: Some(3_600_000),
        muted_until: Some(T0 + 7_200_000),
        started_at: Some(T0 - 1000),
        running: Some(true),
        run_history: Some(vec![1200, 3400]),
        last_failure: Some(JobFailure {
            ts: T0 - 5000,
            exit_code: Some(3),
            output: "boom\n".into(),
            reason: Some("ran too long".into()),
        }),
        failed: Some(true),
    };
    let snap = Snapshot {
        name: Name::new("nightly.backup"),
        last_beat: T0,
        intervals: 0..1,
        timeout: crate::engine::TIMEOUT_SCHEDULE,
        state: "error",
        muted_since: T0,
        last_state_change: T0,
        job: Some(job.clone()),
    };
    let mut line = Vec::new();
    encode_service(&mut line, &snap, &[60_000]).expect("encodes");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    std::fs::write(&path, gz(std::str::from_utf8(&line).expect("utf-8"))).expect("write");
    let l = load(&path).expect("ok").expect("exists");
    assert_eq!(l.services.len(), 1);
    assert_eq!(l.services[0].job.as_deref(), Some(&job));
    assert_eq!(l.services[0].beat_history, vec![60_000]);
}

/// A truncated or corrupt file's last four bytes are not a size: the
/// hint for the read buffer stays within what the file could expand to.
#[test]
fn size_hint_trusts_the_trailer_only_as_far_as_deflate_can_expand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let text = "SERV\t{\"name\":\"a\"}\n".repeat(100);
    std::fs::write(&path, gz(&text)).expect("write");
    let file = File::open(&path).expect("open");
    assert_eq!(uncompressed_size_hint(&file), text.len());
    let mut bad = vec![0u8; 40];
    bad.extend_from_slice(&[0xff; 4]);
    std::fs::write(&path, &bad).expect("write");
    let file = File::open(&path).expect("open");
    assert_eq!(uncompressed_size_hint(&file), 44 * 1032);
}

/// `n` gzip members of 1 MB of newlines each, concatenated: a gzip
/// bomb that compresses about 1 000-fold, made in milliseconds.
fn newline_bomb(n: usize) -> Vec<u8> {
    let member = gz(&"\n".repeat(1_000_000));
    member.repeat(n)
}

/// A file whose content outgrows 400 times what was read of it (plus
/// the floor) is refused as it is read, with "cannot be read": its
/// memory is the floor and a little, not what it expands to.
#[test]
fn a_gzip_bomb_is_refused_once_it_outgrows_the_ratio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    std::fs::write(&path, newline_bomb(40)).expect("write");
    let floor = 1 << 20;
    let err = read_content(File::open(&path).expect("open"), floor, &path).expect_err("a bomb");
    let DbError::TooBig { read, content, .. } = &err else {
        panic!("{err}");
    };
    assert!(*content <= read * MAX_RATIO + floor + (1 << 20), "{err}");
    assert!(*content < 20_000_000, "stopped early: {err}");
    assert!(err.to_string().contains("cannot be read"), "{err}");
    // A real database of the same content size is read whole.
    let text = (0..100_000)
        .map(|i| {
            format!(
                "SERV\t{{\"name\":\"svc.{i:06}\",\"beat_history\":[{}]}}\n",
                ["60000"; 100].join(",")
            )
        })
        .collect::<String>();
    std::fs::write(&path, gz(&text)).expect("write");
    let data = read_content(File::open(&path).expect("open"), floor, &path).expect("a database");
    assert_eq!(data.len(), text.len());
}

/// Lines are not records: a file of empty lines reserves nothing for
/// them (a reservation per line asked 38 GB for 400 M newlines).
#[test]
fn empty_lines_reserve_no_records() {
    let mut data = vec![b'\n'; 1 << 20];
    let l = decode(&mut data, Path::new("db")).expect("empty lines are fine");
    assert_eq!(l.services.capacity(), 0);
    let mut data = "SERV\t{\"name\":\"a\"}\n\n\n\n".repeat(1000).into_bytes();
    let l = decode(&mut data, Path::new("db")).expect("valid");
    assert_eq!(l.services.len(), 1000);
    assert!(l.services.capacity() <= 2048, "{}", l.services.capacity());
}

mod adversarial {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of records, valid and not: a file made of them is what
    /// a damaged or hostile database looks like.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "SERV\t",
            "ALARM\t",
            "SAVED\t",
            "VIEW\t",
            "\n",
            "\n\n\n",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"name\":",
            "\"a\"",
            "\"b.c\"",
            "\"My Service\"",
            "\"state\":",
            "\"error\"",
            "\"ok\"",
            "\"muted\"",
            "\"bogus\"",
            "\"last_beat\":",
            "\"timeout\":",
            "\"beat_history\":",
            "\"incident_nbr\":",
            "\"last_state_change\":",
            "\"deleted\":",
            "\"at\":",
            "true",
            "null",
            "-1",
            "0",
            "99999999999999999999",
            "1700000000000",
            "-9223372036854775808",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\u{feff}",
            "\t",
            "SERV\t{\"name\":\"a\",\"state\":\"error\",\"last_beat\":5}\n",
            "SERV\t{\"name\":\"a\",\"state\":\"ok\",\"last_beat\":7}\n",
            "ALARM\t{\"name\":\"x\",\"state\":\"error\",\"incident_nbr\":2}\n",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Whatever the bytes: decoded or refused, never a panic;
        /// what decodes reserved no more than twice its records (and
        /// a first block), and loads with each name counted once.
        #[test]
        fn the_loader_survives_adversarial_files(pieces in prop::collection::vec(piece(), 0..60), junk in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut data = pieces.concat().into_bytes();
            data.extend_from_slice(&junk);
            if let Ok(l) = decode(&mut data, Path::new("fuzz.db")) {
                prop_assert!(l.services.capacity() <= (2 * l.services.len()).max(1024));
                let mut names: Vec<_> = l.services.iter().map(|s| s.name.to_string()).collect();
                names.sort();
                names.dedup();
                let e = Engine::new(EngineConfig::default(), T0);
                let report = e.load(l.services, l.alarms, T0);
                let (ok, error, muted) = e.state_counts();
                prop_assert_eq!(report.services, names.len());
                prop_assert_eq!((ok + error + muted) as usize, names.len());
            }
            // The same bytes gzipped go through the reader too.
            let path_dir = tempfile::tempdir().expect("tempdir");
            let path = path_dir.path().join("db");
            let mut raw = pieces.concat().into_bytes();
            raw.extend_from_slice(&junk);
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(&raw).expect("in memory");
            let mut file = e.finish().expect("in memory");
            file.extend_from_slice(&junk);
            std::fs::write(&path, &file).expect("write");
            let _ = load(&path);
        }
    }
}
