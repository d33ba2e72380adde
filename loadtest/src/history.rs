//! The history store's figures (issue 29, "Figures to reach", and the
//! status page under load of issue 30), against the daemon and its real
//! SQLite history file:
//!
//! - `mass-outage`: every service goes ERROR at once, with the history on
//!   and off: the beats applied in the minute that follows, the time until
//!   every change is in the file, peak RSS, and the latency of a status
//!   page of 100 entries with a year of history fetched meanwhile.
//! - `history-queries`: a file of services × changes (1 M × 100 at full
//!   size): the history, uptime and daily answers of random services, a
//!   365-day alarm uptime from the rollups, and the disk per million
//!   changes.
//! - `history-write`: the state changes per second the daemon's writer
//!   takes while services flip (fail, beat, fail...), and the writer alone.
//!
//! Files of a year are written through lovebeat's own history writer
//! (`lovebeat::history::bulk`): the same schema, statements, batches and
//! rollups as the daemon, only faster than a year of real time.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lovebeat::history::bulk::BulkWriter;
use lovebeat::history::record::{Change, Kind, Reason};

use crate::blast::{blast, Kind as Line};
use crate::dbgen;
use crate::run::{num, opts, Daemon, Row, Scale};
use crate::soak::quantile;
use crate::sys;

/// A day, ms.
const DAY: i64 = 86_400_000;
/// Stored states (`engine::State as u8`).
const OK: u8 = 1;
const ERROR: u8 = 2;
const MUTED: u8 = 3;
/// Entries of the mass outage's status page, one alarm each.
const PAGE_ENTRIES: usize = 100;
/// Names rolled up per step, as the daemon's writer does (`ROLL_STEP`).
const ROLL_STEP: i64 = 200;
/// Bytes a change and a day row take at most, for the check that the
/// file fits on the disk before it is written (measured: about 31 and
/// 29; BENCHMARKS.md).
const EST_CHANGE_BYTES: u64 = 40;
const EST_DAY_BYTES: u64 = 35;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A small deterministic generator: the same file at every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The `k`-th of `count` changes of a name whose history runs over
/// `[first, first + span)`, and the previous one's state and time: the
/// first is its creation (OK), then it goes ERROR and recovers within a
/// few minutes to half an hour, again and again, so that its last change
/// leaves it OK, as the 1.x database the daemon loads says (else the
/// daemon's start would record a `restored` change for every name). With
/// an even count, the second change is a mute, whose unmute is an ERROR.
fn flip(
    kind: Kind,
    name: &str,
    (k, count): (usize, usize),
    (first, span): (i64, i64),
    prev: Option<(u8, i64)>,
    rng: &mut Rng,
) -> Change {
    let slot = (span / count.max(1) as i64).max(4);
    let at = first + k as i64 * slot;
    let (from, to, ts, reason) = match prev {
        None => (None, OK, at, Reason::Created),
        Some((was, when)) => {
            let down = (count - 1 - k) % 2 == 1;
            let to = if !down && was == OK {
                MUTED
            } else if down {
                ERROR
            } else {
                OK
            };
            let ts = match (was, to) {
                // A recovery, a few minutes after its failure.
                (ERROR, OK) => when + (60_000 + rng.below(1_800_000) as i64).min(slot / 2),
                _ => at + rng.below((slot / 4) as u64) as i64,
            };
            let reason = match (kind, was, to) {
                (Kind::Alarm, _, ERROR) => Reason::MembersFailed,
                (Kind::Alarm, _, _) => Reason::Recovered,
                (_, _, MUTED) => Reason::Mute,
                (_, MUTED, _) => Reason::Unmute,
                (_, _, ERROR) => Reason::Timeout,
                _ => Reason::Beat,
            };
            (Some(was), to, ts.max(when + 1), reason)
        }
    };
    Change {
        kind,
        name: name.to_string(),
        ts,
        from,
        to,
        reason,
        detail: None,
        incident: None,
    }
}

/// What writing a file took.
struct Seeded {
    changes: u64,
    /// Writing the changes (not the rollups).
    write_secs: f64,
    /// The file's size after its changes, and after its rollups.
    bytes_changes: u64,
    bytes_total: u64,
    rollup_secs: f64,
    names: u64,
}

/// Writes a history file at `path` of `names` (kind, name, changes), their
/// changes spread over the `days` before `now`, in the order the daemon
/// writes them (time order: every name's k-th change, then every name's
/// next), then (with `roll`) their daily rollups, as the daemon's writer
/// makes them.
fn seed(
    path: &Path,
    names: &[(Kind, String, usize)],
    days: i64,
    now: i64,
    roll: bool,
) -> anyhow::Result<Seeded> {
    let first = now - days * DAY;
    // Ends an hour before now: a name's last change is its recovery.
    let span = days * DAY - 3_600_000;
    let mut w = BulkWriter::create(path, first - 60_000)?;
    let rounds = names.iter().map(|n| n.2).max().unwrap_or(0);
    let mut prev: Vec<Option<(u8, i64)>> = vec![None; names.len()];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut batch: Vec<Change> = Vec::with_capacity(1 << 16);
    let mut changes = 0u64;
    let start = Instant::now();
    for k in 0..rounds {
        for (i, (kind, name, count)) in names.iter().enumerate() {
            if k >= *count {
                continue;
            }
            let Some(p) = prev.get_mut(i) else { continue };
            let c = flip(*kind, name, (k, *count), (first, span), *p, &mut rng);
            *p = Some((c.to, c.ts));
            batch.push(c);
            if batch.len() == batch.capacity() {
                w.write(&batch)?;
                changes += batch.len() as u64;
                batch.clear();
            }
        }
        if rounds >= 10 && k % (rounds / 10) == 0 {
            eprintln!(
                "  seed: round {k} of {rounds}, {} changes, {:.0} s",
                num(changes as f64),
                start.elapsed().as_secs_f64()
            );
        }
    }
    w.write(&batch)?;
    changes += batch.len() as u64;
    let write_secs = start.elapsed().as_secs_f64();
    w.checkpoint()?;
    let bytes_changes = std::fs::metadata(path)?.len();
    let start = Instant::now();
    while roll && w.roll_step(ROLL_STEP, now)? {}
    let rollup_secs = start.elapsed().as_secs_f64();
    w.finish(now)?;
    Ok(Seeded {
        changes,
        write_secs,
        bytes_changes,
        bytes_total: std::fs::metadata(path)?.len(),
        rollup_secs,
        names: names.len() as u64,
    })
}

/// Fails early, with the sizes to lower, when the file would not fit.
fn check_room(dir: &Path, changes: u64, name_days: u64) -> anyhow::Result<()> {
    let need = changes * EST_CHANGE_BYTES + name_days * EST_DAY_BYTES;
    let free = free_bytes(dir);
    anyhow::ensure!(
        need < free / 10 * 9,
        "the history file would take about {} MB and {} holds {} MB free: lower \
         --history-services or --history-changes, or set TMPDIR to a larger disk",
        need / 1_000_000,
        dir.display(),
        free / 1_000_000
    );
    Ok(())
}

fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs fills a plain struct from a NUL-terminated path that
    // lives across the call.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return 0;
        }
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

/// Latencies (ms) as "p50 / p99 / max".
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        ms.sort_by(f64::total_cmp);
        Latency {
            p50: quantile(&ms, 0.5),
            p99: quantile(&ms, 0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
            n: ms.len(),
        }
    }

    fn shown(&self) -> String {
        format!(
            "p50 {:.2} / p99 {:.2} / max {:.2} ms ({} requests)",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// A GET that must answer 200; its time, ms.
fn timed(port: u16, path: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (status, body) = sys::http_get(port, path)?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        status == 200,
        "{path} answered {status}: {}",
        String::from_utf8_lossy(&body)
            .chars()
            .take(200)
            .collect::<String>()
    );
    Ok(ms)
}

/// Runs the history scenarios `want` asks for.
pub(crate) fn run(
    bin: &Path,
    scale: Scale,
    want: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if want("mass-outage") {
        rows.extend(mass_outage(bin, scale)?);
    }
    if want("history-queries") {
        rows.extend(queries(bin, scale)?);
    }
    if want("history-write") {
        rows.extend(write(bin, scale)?);
    }
    Ok(rows)
}

/// The alarm of the mass outage's page entry `k`: the services whose
/// index ends in `k` (1 % of them each).
fn page_alarm(k: usize) -> String {
    format!("mo-a{k:02}")
}

/// The configuration the mass outage adds: the 100 alarms, their page,
/// and the history, on (at `history`) or off.
fn outage_config(history: Option<&Path>) -> String {
    let mut c = match history {
        Some(p) => format!("[history]\npath = \"{}\"\n", p.display()),
        None => "[history]\nenabled = false\n".to_string(),
    };
    for k in 0..PAGE_ENTRIES {
        c.push_str(&format!(
            "[[alarms]]\nname = \"{}\"\npattern = \"mo.*{k:02}\"\n",
            page_alarm(k)
        ));
    }
    c.push_str("[[status_pages]]\nslug = \"mo\"\ntitle = \"Mass outage\"\n");
    for g in 0..4 {
        c.push_str(&format!(
            "[[status_pages.groups]]\ntitle = \"Group {g}\"\nentries = [\n"
        ));
        for k in g * 25..(g + 1) * 25 {
            c.push_str(&format!(
                "  {{ alarm = \"{}\", display_name = \"Entry {k:02}\" }},\n",
                page_alarm(k)
            ));
        }
        c.push_str("]\n");
    }
    c
}

/// Fetches a page over and over (a visitor every `every`) until stopped.
struct Visitor {
    stop: Arc<AtomicBool>,
    times: Arc<Mutex<Vec<f64>>>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Visitor {
    fn start(port: u16, path: &'static str, every: Duration) -> Visitor {
        let stop = Arc::new(AtomicBool::new(false));
        let times = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, t, f) = (stop.clone(), times.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match timed(port, path) {
                    Ok(ms) => t.lock().unwrap_or_else(|e| e.into_inner()).push(ms),
                    Err(e) => f
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(e.to_string()),
                }
                std::thread::sleep(every);
            }
        });
        Visitor {
            stop,
            times,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops, and returns the latencies and the failures.
    fn finish(mut self) -> (Vec<f64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (take(&self.times), take(&self.failures))
    }
}

/// What a shared list holds, emptied.
fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Drop for Visitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one mass outage measured.
struct Outage {
    /// Beats applied per second in the minute after every service was
    /// ERROR.
    rate: f64,
    loss: f64,
    /// From the deadline until every service was ERROR, s.
    all_error_s: f64,
    /// From the deadline until the file held every service's ERROR
    /// change, s, and how many it held then (history on).
    on_disk: Option<(f64, u64)>,
    peak_rss: u64,
    /// The page's first build, ms, and its latencies through the outage.
    page: Option<(f64, Latency)>,
    lost: f64,
    coalesced: f64,
}

/// The ERROR changes of services since `since` in the history file.
fn errors_in_file(conn: &rusqlite::Connection, since: i64) -> anyhow::Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM changes c JOIN names n ON n.id = c.name_id \
         WHERE n.kind = 0 AND c.to_state = ?1 AND c.ts >= ?2",
        rusqlite::params![ERROR, since],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// One mass outage: `n` services that all expire at one deadline, then
/// beats flat out for `scale.outage_minute`; the page fetched meanwhile
/// when the history is on.
fn one_outage(
    bin: &Path,
    db: &Path,
    n: usize,
    timeout_ms: i64,
    history: Option<&Path>,
    scale: Scale,
) -> anyhow::Result<Outage> {
    let (d, _) = Daemon::start_with(bin, 3600, Some(db), &outage_config(history))?;
    let started = d.metric("lovebeat_start_time_seconds") * 1000.0;
    let deadline = started as i64 + timeout_ms;
    // The page's first build (a year of 100 entries), then a visitor
    // every 20 ms through the outage.
    let cold = timed(d.http, "/status/mo")?;
    let visitor = Visitor::start(d.http, "/status/mo", Duration::from_millis(20));
    let wait = deadline - now_ms();
    anyhow::ensure!(
        wait > 0,
        "the daemon took longer to start than the services' timeout ({timeout_ms} ms)"
    );
    // Changes written before the deadline, the baseline of the reader's.
    let written = "lovebeat_history_changes_written_total";
    std::thread::sleep(Duration::from_millis((wait as u64).saturating_sub(200)));
    let base = d.metric(written);
    std::thread::sleep(Duration::from_millis((deadline - now_ms()).max(0) as u64));
    sys::reset_peak(d.pid());
    // The file is read from another thread from the deadline on: once
    // `/metrics` says the writer wrote as many changes as there are
    // services (the ERROR changes come first in its feed, before the
    // recoveries the beats make), the file is counted, so the count, a
    // scan, runs once or twice and not every poll.
    let port = d.http;
    let poller = history.map(|path| {
        let path = path.to_path_buf();
        std::thread::spawn(move || -> anyhow::Result<(f64, u64)> {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            let mut held = 0;
            while now_ms() - deadline < 180_000 {
                let w = sys::metrics(port)?.get(written).copied().unwrap_or(0.0);
                if w - base >= n as f64 {
                    held = errors_in_file(&conn, deadline - 1000)?;
                    if held >= n as u64 {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(((now_ms() - deadline) as f64 / 1000.0, held))
        })
    });
    let error = "lovebeat_services{state=\"error\"}";
    let t = Instant::now();
    while (d.metric(error) as usize) < n {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(120),
            "only {} of {n} services went ERROR",
            d.metric(error)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_error_s = (now_ms() - deadline) as f64 / 1000.0;
    let before = d.accepted();
    let mut o = opts(d.statsd, "mo", n, 20, 0, Line::Beat, false);
    o.duration = Some(scale.outage_minute);
    o.count = u64::MAX;
    let start = Instant::now();
    let sent = blast(&o)?;
    let (after, done) = d.settle_at(Daemon::accepted);
    let applied = (after - before).max(0.0);
    let busy = done.duration_since(start).max(sent.elapsed);
    let on_disk = match poller {
        Some(p) => Some(
            p.join()
                .map_err(|_| anyhow::anyhow!("the file's reader panicked"))??,
        ),
        None => None,
    };
    let peak_rss = sys::status_bytes(d.pid(), "VmHWM:");
    let (times, failures) = visitor.finish();
    anyhow::ensure!(
        failures.is_empty(),
        "the status page failed {} times: {:?}",
        failures.len(),
        failures.first()
    );
    Ok(Outage {
        rate: applied / busy.as_secs_f64(),
        loss: 1.0 - applied / sent.lines.max(1) as f64,
        all_error_s,
        on_disk,
        peak_rss,
        page: history.map(|_| (cold, Latency::of(times))),
        lost: d.metric("lovebeat_history_changes_lost_total"),
        coalesced: d.metric("lovebeat_history_changes_coalesced_total"),
    })
}

fn mass_outage(bin: &Path, scale: Scale) -> anyhow::Result<Vec<Row>> {
    let n = scale.outage_services;
    let tmp = tempfile::tempdir()?;
    // Load time left out of the deadline: 10 s, and 10 s more a million.
    let timeout_ms = 10_000 + n as i64 / 100;
    let db = tmp.path().join("mo.db");
    dbgen::write(&db, "mo", n, timeout_ms, 0, 1_700_000_000_000)?;
    // A year of the page's alarms: each down twice a week.
    let seeded = tmp.path().join("year.history");
    let names: Vec<(Kind, String, usize)> = (0..PAGE_ENTRIES)
        .map(|k| (Kind::Alarm, page_alarm(k), 4 * 52 + 1))
        .collect();
    eprintln!("mass-outage: a year of history for {PAGE_ENTRIES} alarms");
    seed(&seeded, &names, 365, now_ms(), true)?;
    eprintln!("mass-outage: {n} services, history off");
    let off = one_outage(bin, &db, n, timeout_ms, None, scale)?;
    eprintln!("mass-outage: {n} services, history on");
    let file = tmp.path().join("on.history");
    std::fs::copy(&seeded, &file)?;
    let on = one_outage(bin, &db, n, timeout_ms, Some(&file), scale)?;
    let mut rows = vec![
        Row {
            scenario: "mass-outage",
            figure: format!(
                "beats applied/s in the {} s after {} services went ERROR at once, history on (loss {:.1} %; all ERROR {:.1} s after the deadline)",
                scale.outage_minute.as_secs(),
                num(n as f64),
                on.loss * 100.0,
                on.all_error_s
            ),
            value: num(on.rate),
            sink: format!(
                "history off {} (loss {:.1} %)",
                num(off.rate),
                off.loss * 100.0
            ),
            ratio: pct(on.rate, off.rate),
            goal: "≥ 80 % of off",
            met: Some(on.rate >= 0.8 * off.rate),
        },
    ];
    if let Some((secs, held)) = on.on_disk {
        rows.push(Row {
            scenario: "mass-outage",
            figure: format!(
                "deadline to every ERROR change in the history file ({} of {} held; {} lost, {} coalesced)",
                num(held as f64),
                num(n as f64),
                num(on.lost),
                num(on.coalesced)
            ),
            value: format!("{secs:.1} s"),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "≤ 60 s",
            met: Some(secs <= 60.0 && held >= n as u64 && on.lost == 0.0),
        });
    }
    rows.push(Row {
        scenario: "mass-outage",
        figure: "peak RSS from the deadline to the end of the minute, history on".into(),
        value: format!("{} MB", on.peak_rss / 1_000_000),
        sink: format!("history off {} MB", off.peak_rss / 1_000_000),
        ratio: pct(on.peak_rss as f64, off.peak_rss as f64),
        goal: "bounded",
        met: None,
    });
    if let Some((cold, page)) = on.page {
        rows.push(Row {
            scenario: "mass-outage",
            figure: format!(
                "GET /status/<slug>, {PAGE_ENTRIES} entries, a year of history, a visitor every 20 ms through the outage: {}",
                page.shown()
            ),
            value: format!("p99 {:.1} ms", page.p99),
            sink: format!("first build {cold:.0} ms"),
            ratio: "-".into(),
            goal: "≤ 50 ms",
            met: Some(page.p99 <= 50.0 && page.max <= 50.0),
        });
    }
    Ok(rows)
}

fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.0} %", 100.0 * a / b)
    } else {
        "-".into()
    }
}

/// The service `i` of `history-queries`, as `dbgen` names it.
fn hq_name(i: usize) -> String {
    format!("hq.{i:07}")
}

/// The alarm of `history-queries`, over the first thousand services.
const HQ_ALARM: &str = "hq-alarm";

fn queries(bin: &Path, scale: Scale) -> anyhow::Result<Vec<Row>> {
    let (n, per, days) = (scale.hq_services, scale.hq_changes, scale.hq_days);
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("hq.history");
    check_room(tmp.path(), (n * per) as u64, (n as u64 + 1) * days as u64)?;
    let mut names: Vec<(Kind, String, usize)> =
        vec![(Kind::Alarm, HQ_ALARM.into(), 2 * days as usize + 1)];
    names.extend((0..n).map(|i| (Kind::Service, hq_name(i), per)));
    eprintln!(
        "history-queries: writing {} changes of {} services over {days} days",
        num((n * per) as f64),
        num(n as f64)
    );
    let now = now_ms();
    let s = seed(&path, &names, days, now, true)?;
    eprintln!(
        "history-queries: {} changes in {:.0} s, rollups in {:.0} s, {} MB",
        num(s.changes as f64),
        s.write_secs,
        s.rollup_secs,
        s.bytes_total / 1_000_000
    );
    let db = tmp.path().join("hq.db");
    dbgen::write(&db, "hq", n, 3_600_000, 0, 1_700_000_000_000)?;
    let (d, ready) = Daemon::start_with(
        bin,
        3600,
        Some(&db),
        &format!(
            "[history]\npath = \"{}\"\n[[alarms]]\nname = \"{HQ_ALARM}\"\npattern = \"hq.0000*\"\n",
            path.display()
        ),
    )?;
    let mut rng = Rng(0x5eed);
    let (mut hist, mut up, mut daily) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.hq_samples {
        let name = hq_name(rng.below(n as u64) as usize);
        hist.push(timed(d.http, &format!("/api/services/{name}/history"))?);
        up.push(timed(d.http, &format!("/api/services/{name}/uptime"))?);
        daily.push(timed(d.http, &format!("/api/services/{name}/daily"))?);
    }
    let alarm_path = format!("/api/alarms/{HQ_ALARM}/uptime?windows=365d");
    let (_, body) = sys::http_get(d.http, &alarm_path)?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let up_ms = v["windows"][0]["up_ms"].as_i64().unwrap_or(0);
    anyhow::ensure!(
        up_ms > 300 * DAY,
        "the alarm's 365-day uptime counts {up_ms} ms up: not a year of history"
    );
    let mut alarm = Vec::new();
    for _ in 0..scale.hq_samples {
        alarm.push(timed(d.http, &alarm_path)?);
    }
    let per_million = s.bytes_changes as f64 / (s.changes as f64 / 1e6);
    let name_days = (s.names * days as u64) as f64;
    let per_day_row = (s.bytes_total - s.bytes_changes) as f64 / name_days.max(1.0);
    let size = format!("{} services × {per}", num(n as f64));
    let mut rows = Vec::new();
    for (what, l) in [
        ("history", Latency::of(hist)),
        ("uptime (24h … 365d)", Latency::of(up)),
        ("daily (30 days)", Latency::of(daily)),
    ] {
        rows.push(Row {
            scenario: "history-queries",
            figure: format!(
                "GET /api/services/<random>/{what}, {size} changes: {}",
                l.shown()
            ),
            value: format!("p99 {:.2} ms", l.p99),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "p99 ≤ 5 ms",
            met: Some(l.p99 <= 5.0),
        });
    }
    let l = Latency::of(alarm);
    rows.push(Row {
        scenario: "history-queries",
        figure: format!(
            "GET /api/alarms/<name>/uptime?windows=365d (rollups): {}",
            l.shown()
        ),
        value: format!("p99 {:.2} ms", l.p99),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "≤ 5 ms",
        met: Some(l.p99 <= 5.0),
    });
    rows.push(Row {
        scenario: "history-queries",
        figure: format!(
            "history file per million changes ({} changes, {} MB, names included; WAL folded in)",
            num(s.changes as f64),
            s.bytes_changes / 1_000_000
        ),
        value: format!("{:.1} MB", per_million / 1e6),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "≤ 40 MB",
        met: Some(per_million <= 40e6),
    });
    rows.push(Row {
        scenario: "history-queries",
        figure: format!(
            "daily rollups: bytes per name and day ({} names × {days} days, {} MB, rolled in {:.0} s)",
            num(s.names as f64),
            (s.bytes_total - s.bytes_changes) / 1_000_000,
            s.rollup_secs
        ),
        value: format!("{per_day_row:.0} B"),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "-",
        met: None,
    });
    rows.push(Row {
        scenario: "history-queries",
        figure: format!(
            "daemon start to ready on that file and {} services",
            num(n as f64)
        ),
        value: format!("{:.2} s", ready.as_secs_f64()),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "-",
        met: None,
    });
    Ok(rows)
}

fn write(bin: &Path, scale: Scale) -> anyhow::Result<Vec<Row>> {
    let n = scale.write_services;
    let tmp = tempfile::tempdir()?;
    let db = tmp.path().join("hw.db");
    dbgen::write(&db, "hw", n, 3_600_000, 0, 1_700_000_000_000)?;
    let (d, _) = Daemon::start_with(bin, 3600, Some(&db), "[history]\nenabled = true\n")?;
    let counted = |d: &Daemon| {
        d.metric("lovebeat_history_changes_written_total")
            + d.metric("lovebeat_history_changes_coalesced_total")
            + d.metric("lovebeat_history_changes_lost_total")
    };
    let (written0, coalesced0, lost0) = (
        d.metric("lovebeat_history_changes_written_total"),
        d.metric("lovebeat_history_changes_coalesced_total"),
        d.metric("lovebeat_history_changes_lost_total"),
    );
    let accepted0 = d.accepted();
    let start = Instant::now();
    let mut sent = 0u64;
    // Sweeps of failures then beats over every service, over TCP (which
    // loses nothing), paced at `write_rate`: every line flips its
    // service. Sustained means the writer keeps up: nothing lost, and
    // little coalesced (it coalesces only the batches it is behind on).
    while start.elapsed() < scale.write_for {
        for kind in [Line::Fail, Line::Beat] {
            let mut o = opts(d.statsd, "hw", n, 20, scale.write_rate, kind, true);
            o.tcp = true;
            sent += blast(&o)?.lines;
        }
    }
    let sending = start.elapsed();
    let (_, done) = d.settle_at(counted);
    let took = done.duration_since(start).max(sending).as_secs_f64();
    let written = d.metric("lovebeat_history_changes_written_total") - written0;
    let coalesced = d.metric("lovebeat_history_changes_coalesced_total") - coalesced0;
    let lost = d.metric("lovebeat_history_changes_lost_total") - lost0;
    let applied = d.accepted() - accepted0;
    drop(d);
    let rate = written / took;
    let mut rows = vec![Row {
        scenario: "history-write",
        figure: format!(
            "state changes/s the daemon's history writer wrote, {} services flipping (fail, beat, over TCP) at {} lines/s for {:.0} s: {} written, {} coalesced, {} lost; {} of {} lines applied",
            num(n as f64),
            num(scale.write_rate as f64),
            sending.as_secs_f64(),
            num(written),
            num(coalesced),
            num(lost),
            num(applied),
            num(sent as f64)
        ),
        value: num(rate),
        sink: format!(
            "lines applied {}/s, taken (written + coalesced) {}/s",
            num(applied / sending.as_secs_f64()),
            num((written + coalesced) / took)
        ),
        ratio: pct(written + coalesced, applied),
        goal: "≥ 200 000, none lost",
        met: Some(rate >= 200_000.0 && lost == 0.0),
    }];
    // The writer alone, on a file of its own: the same writer and
    // transactions, fed as fast as they take it.
    let path = tmp.path().join("alone.history");
    let names: Vec<(Kind, String, usize)> = (0..n)
        .map(|i| (Kind::Service, format!("hw.{i:07}"), 10))
        .collect();
    let s = seed(&path, &names, 30, now_ms(), false)?;
    let alone = s.changes as f64 / s.write_secs.max(1e-9);
    rows.push(Row {
        scenario: "history-write",
        figure: format!(
            "state changes/s written by the history writer alone ({} changes of {} services in time order, batches of 4096)",
            num(s.changes as f64),
            num(n as f64)
        ),
        value: num(alone),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "≥ 200 000",
        met: Some(alone >= 200_000.0),
    });
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name's generated history is a chain (each change's `from`
    /// is the last one's `to`), in time order, ending OK as the 1.x
    /// database the daemon loads says, for odd and even counts.
    #[test]
    fn a_generated_history_is_a_chain_in_time_order_that_ends_ok() {
        // (Two changes cannot end OK: created OK, the second must differ.)
        for count in [1, 3, 4, 100, 209] {
            let mut rng = Rng(1);
            let mut prev: Option<(u8, i64)> = None;
            for k in 0..count {
                let c = flip(
                    Kind::Service,
                    "s",
                    (k, count),
                    (0, 365 * DAY),
                    prev,
                    &mut rng,
                );
                assert_eq!(c.from, prev.map(|p| p.0), "count {count}, change {k}");
                assert_ne!(Some(c.to), c.from, "count {count}, change {k}");
                if let Some((_, ts)) = prev {
                    assert!(c.ts > ts, "count {count}, change {k}");
                }
                assert!(c.ts < 365 * DAY);
                prev = Some((c.to, c.ts));
            }
            assert_eq!(prev.map(|p| p.0), Some(OK), "count {count}");
        }
    }
}
