//! `soak`: hours of steady work, sampled every cycle, to show that
//! nothing leaks and nothing is lost over time (issue 32, item 3).
//!
//! A population of services `soak.gNN.sNNNNNNN` in [`GROUPS`] groups,
//! each group an alarm `g-gNN` whose changes go to a webhook receiver,
//! beaten at a steady rate over UDP; each cycle one group goes silent (so
//! its services expire and its alarm goes ERROR) and at the next it comes
//! back (the alarm recovers). The database is saved every cycle, the
//! history store is on and a websocket client reads every update. At the
//! end of each cycle it samples the daemon's RSS, CPU, open files, the
//! lateness of the silent group's expiries, and alerts received against
//! the alarm changes the history recorded; it fails on a hard invariant:
//!
//! - an alert lost: every alarm change in the history (one that fires
//!   alerts: to ERROR, or ERROR to OK) has its POST, as many as the
//!   alarms' incident numbers count, the daemon counts
//!   none failed or dropped, and every group that went silent and came
//!   back was announced ERROR and OK;
//! - a silent service not in ERROR by the end of its cycle, or one later
//!   than `max_lateness_ms` past its deadline;
//! - open files growing: after the warm-up, at most [`FD_SLACK`] more
//!   than at its end;
//! - memory growing: after the warm-up, the least-squares slope of RSS is
//!   a trend only when it is over `max_growth_mb_per_hour` *and* adds up
//!   to more than [`RSS_NOISE_MB`] over the samples (a save's snapshot
//!   or the allocator's caches move RSS by a few MB either way);
//! - the websocket client cut off (it stops being sent updates);
//! - outside `--ci`, CPU or the p99 lateness growing after the warm-up
//!   ([`CPU_TREND`], [`LATENESS_TREND`]), as RSS;
//! - a save missed or failed, or a history change lost.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hostile::{ReadingWebsocket, Receiver};
use crate::plot::{chart, slope, Series};
use crate::run::Daemon;
use crate::sys;

/// Groups of services, one alarm each; one goes silent per cycle.
pub const GROUPS: usize = 100;

/// Open files the daemon may gain after the warm-up without it being
/// growth: an alert connection or a history file handle comes and goes.
pub const FD_SLACK: i64 = 16;

/// RSS that samples may gain over the post-warm-up window without it
/// being a trend, MB.
pub const RSS_NOISE_MB: f64 = 16.0;

/// CPU (percentage points of a core) a trend must gain per hour, and over
/// the post-warm-up window, to count: the work is steady, so the cost of
/// a cycle must be too (a scan that grows with time would show here).
pub const CPU_TREND: (f64, f64) = (5.0, 5.0);

/// Expiry lateness (p99, ms) a trend must gain per hour, and over the
/// post-warm-up window, to count.
pub const LATENESS_TREND: (f64, f64) = (100.0, 50.0);

/// Statsd lines per datagram, as the other scenarios send.
const LINES_PER_DATAGRAM: usize = 20;

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakOpts {
    pub services: usize,
    /// Beats per second.
    pub rate: u64,
    /// How long it runs.
    pub duration: Duration,
    /// A cycle: one group silent, a save, a sample.
    pub every: Duration,
    /// Samples before this are warm-up: not in the trend tests.
    pub warmup: Duration,
    pub max_lateness_ms: f64,
    pub max_growth_mb_per_hour: f64,
    /// Only the hard invariants (CI): CPU and lateness trends are
    /// reported, not failed on.
    pub hard_only: bool,
    /// Where the CSV and SVG files go.
    pub out: PathBuf,
}

/// One cycle's readings.
#[derive(Debug, Clone, Default)]
struct Sample {
    t_s: f64,
    rss_mb: f64,
    cpu_pct: f64,
    fds: i64,
    late_p50_ms: f64,
    late_p99_ms: f64,
    late_max_ms: f64,
    /// Silent services not in ERROR at the end of their cycle.
    missed: usize,
    /// Alert-firing alarm changes since the start, as the alarms'
    /// incident numbers count them (the final check reads the history).
    alarm_changes: u64,
    /// Webhook POSTs received, since the start.
    alerts_received: u64,
    /// `lovebeat_alerts_sent_total`.
    alerts_sent: f64,
    /// Bytes sent to the websocket client, since the start.
    ws_bytes: u64,
    /// Beats sent, since the start.
    beats_sent: u64,
    /// `lovebeat_db_saves_total`.
    saves: f64,
}

/// The paced UDP sender: beats every service but the silent group's.
struct Sender {
    stop: Arc<AtomicBool>,
    /// The silent group, or `usize::MAX` for none.
    silent: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(target: SocketAddr, services: usize, rate: u64) -> anyhow::Result<Sender> {
        let lines: Vec<Vec<u8>> = (0..services)
            .map(|i| format!("{}.beat:1|c\n", name(i)).into_bytes())
            .collect();
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(target)?;
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicUsize::new(usize::MAX));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, si, se) = (stop.clone(), silent.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut next = 0usize;
            let mut buf = Vec::with_capacity(LINES_PER_DATAGRAM * 40);
            let mut count = 0u64;
            while !st.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                if due < count + LINES_PER_DATAGRAM as u64 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let quiet = si.load(Ordering::Relaxed);
                buf.clear();
                let mut n = 0;
                // Bounded: at most one pass over the services per datagram.
                for _ in 0..lines.len() {
                    if n == LINES_PER_DATAGRAM {
                        break;
                    }
                    let i = next;
                    next = (next + 1) % lines.len();
                    if i % GROUPS == quiet {
                        continue;
                    }
                    if let Some(l) = lines.get(i) {
                        buf.extend_from_slice(l);
                        n += 1;
                    }
                }
                // A datagram the kernel refuses (a full buffer) is a lost
                // beat, as on a real network; the timeout allows for it.
                let _ = sock.send(&buf);
                count += LINES_PER_DATAGRAM as u64;
                se.store(count, Ordering::Relaxed);
            }
        });
        Ok(Sender {
            stop,
            silent,
            sent,
            thread: Some(thread),
        })
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The name of service `i`: its group is `i % GROUPS`.
fn name(i: usize) -> String {
    format!("soak.g{:02}.s{i:07}", i % GROUPS)
}

/// The alarm of group `g`.
fn alarm(g: usize) -> String {
    format!("g-g{g:02}")
}

/// Open files of a process.
fn fds(pid: u32) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64)
}

/// The `q` quantile of sorted `v` (NaN when empty).
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v.get(i.min(v.len() - 1)).copied().unwrap_or(f64::NAN)
}

/// The lateness (ms past `last_beat + timeout`) of the members of `alarm`
/// that are in ERROR, sorted, and how many are not in ERROR.
fn lateness(http: u16, alarm: &str) -> anyhow::Result<(Vec<f64>, usize)> {
    let (status, body) = sys::http_get(http, &format!("/api/alarms/{alarm}"))?;
    anyhow::ensure!(status == 200, "/api/alarms/{alarm} answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let members = v["services"].as_array().cloned().unwrap_or_default();
    let mut late = Vec::with_capacity(members.len());
    let mut missed = 0;
    for m in &members {
        let (Some(beat), Some(timeout), Some(changed)) = (
            m["last_beat"].as_f64(),
            m["timeout"].as_f64(),
            m["last_state_change"].as_f64(),
        ) else {
            missed += 1;
            continue;
        };
        if m["state"] == "error" && timeout > 0.0 {
            late.push(changed - (beat + timeout));
        } else {
            missed += 1;
        }
    }
    late.sort_by(f64::total_cmp);
    Ok((late, missed))
}

/// Alarm changes that fired alerts so far, as the alarms' incident
/// numbers say: each incident is a change to ERROR, and each closed one
/// a change back to OK. Cheap (one small list), for every sample; the
/// final check reads the history.
fn incident_changes(http: u16) -> anyhow::Result<u64> {
    let (status, body) = sys::http_get(http, "/api/alarms")?;
    anyhow::ensure!(status == 200, "/api/alarms answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let alarms = v["alarms"].as_array().cloned().unwrap_or_default();
    let opened: u64 = alarms
        .iter()
        .filter_map(|a| a["incident_nbr"].as_u64())
        .sum();
    let open = alarms.iter().filter(|a| a["state"] == "error").count() as u64;
    Ok((2 * opened).saturating_sub(open))
}

/// Alarm changes in the history from `since` to `until` (ms) that fire
/// alerts: to ERROR, or from ERROR to OK (SPEC §6).
fn alarm_changes(http: u16, since: i64, until: i64) -> anyhow::Result<u64> {
    let (status, body) = sys::http_get(http, &format!("/api/export?since={since}&until={until}"))?;
    anyhow::ensure!(status == 200, "/api/export answered {status}");
    let mut n = 0;
    for line in body.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            anyhow::bail!("an export line is not JSON");
        };
        if v["kind"] == "alarm" && (v["to"] == "error" || (v["to"] == "ok" && v["from"] == "error"))
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the soak; an error when a hard invariant broke (after the CSV
/// and the plots are written).
pub fn run(bin: &Path, o: &SoakOpts) -> anyhow::Result<()> {
    anyhow::ensure!(o.services >= GROUPS, "at least {GROUPS} services");
    anyhow::ensure!(o.rate >= 1000, "at least 1000 beats/s");
    std::fs::create_dir_all(&o.out)?;
    // The sender and the readers on one core, the daemon on the other
    // (`Daemon::start_with` pins it), as in `run`.
    sys::pin_self(crate::run::SENDER_CORE);
    // Every service beats once a period; its timeout allows three
    // periods (a lost datagram or two), and a silent group must expire
    // well within its cycle.
    let period = o.services as f64 / o.rate as f64;
    let timeout_s = (3.0 * period).ceil().max(5.0) as u64;
    let every = o.every.as_secs().max(1);
    anyhow::ensure!(
        (timeout_s as f64 + period) < 0.7 * every as f64,
        "a cycle of {every} s is too short for a timeout of {timeout_s} s: raise --every or --rate"
    );
    let rx = Receiver::start()?;
    let (d, _) = Daemon::start_with(
        bin,
        every,
        None,
        &format!(
            "[history]\nenabled = true\n[[alarms]]\nname = \"g-$g\"\npattern = \"soak.$g.*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
            rx.url()
        ),
    )?;
    let pid = d.pid();
    eprintln!(
        "soak: {} services, {} beats/s (each every {period:.1} s, timeout {timeout_s} s), a cycle every {every} s for {:.0} min; daemon pid {pid}",
        o.services,
        o.rate,
        o.duration.as_secs_f64() / 60.0
    );
    // The services, with their timeout, over TCP (which loses nothing).
    {
        let mut s = std::net::TcpStream::connect(d.statsd)?;
        let mut text = String::with_capacity(64 * 1024);
        for i in 0..o.services {
            text.push_str(&format!("{}.timeout:{timeout_s}|g\n", name(i)));
            if text.len() > 60 * 1024 {
                s.write_all(text.as_bytes())?;
                text.clear();
            }
        }
        s.write_all(text.as_bytes())?;
    }
    let made = Instant::now();
    while (d.services() as usize) < o.services {
        anyhow::ensure!(
            made.elapsed() < Duration::from_secs(600),
            "only {} of {} services were made",
            d.services(),
            o.services
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ws = ReadingWebsocket::start(d.http)?;
    let sender = Sender::start(d.statsd, o.services, o.rate)?;
    // A period of beats for every service before the first group goes
    // silent, so none starts from its creation's beat.
    std::thread::sleep(Duration::from_secs_f64(period + 1.0));
    let cycles = (o.duration.as_secs() / every).max(1) as usize;
    let t0 = Instant::now();
    let history_from = now_ms() - 60_000;
    let mut cpu_before = (sys::cpu_secs(pid), Instant::now());
    let mut samples: Vec<Sample> = Vec::with_capacity(cycles);
    let mut failures: Vec<String> = Vec::new();
    let mut silenced = vec![0u64; GROUPS];
    let csv_path = o.out.join("soak.csv");
    let mut csv = std::fs::File::create(&csv_path)?;
    writeln!(csv, "t_s,rss_mb,cpu_pct,fds,late_p50_ms,late_p99_ms,late_max_ms,missed,alarm_changes,alerts_received,alerts_sent,ws_bytes,beats_sent,saves")?;
    for k in 0..cycles {
        let group = k % GROUPS;
        let start = t0 + o.every * k as u32;
        sender.silent.store(group, Ordering::Relaxed);
        silenced[group] += 1;
        // The end of the cycle, when the silent group must all be ERROR.
        let check = start + o.every.mul_f64(0.9);
        if let Some(wait) = check.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let took = Instant::now();
        let (late, missed) = lateness(d.http, &alarm(group))?;
        let changes = incident_changes(d.http)?;
        let cpu_now = (sys::cpu_secs(pid), Instant::now());
        let cpu_pct = (cpu_now.0 - cpu_before.0)
            / cpu_now
                .1
                .duration_since(cpu_before.1)
                .as_secs_f64()
                .max(1e-3)
            * 100.0;
        cpu_before = cpu_now;
        let s = Sample {
            t_s: t0.elapsed().as_secs_f64(),
            rss_mb: sys::rss(pid) as f64 / 1e6,
            cpu_pct,
            fds: fds(pid),
            late_p50_ms: quantile(&late, 0.5),
            late_p99_ms: quantile(&late, 0.99),
            late_max_ms: late.last().copied().unwrap_or(f64::NAN),
            missed,
            alarm_changes: changes,
            alerts_received: rx.seen(|s| s.posts),
            alerts_sent: d.metric("lovebeat_alerts_sent_total"),
            ws_bytes: ws.bytes(),
            beats_sent: sender.sent.load(Ordering::Relaxed),
            saves: d.metric("lovebeat_db_saves_total"),
        };
        eprintln!(
            "  {:>6.0} s: RSS {:.1} MB, CPU {:.1} %, {} fds, lateness p50 {:.0} p99 {:.0} max {:.0} ms ({} not expired), alarm changes {}, alerts {} received / {} sent, websocket {} kB (read in {:.1} s)",
            s.t_s, s.rss_mb, s.cpu_pct, s.fds, s.late_p50_ms, s.late_p99_ms, s.late_max_ms, s.missed,
            s.alarm_changes, s.alerts_received, s.alerts_sent, s.ws_bytes / 1000, took.elapsed().as_secs_f64()
        );
        writeln!(
            csv,
            "{:.1},{:.2},{:.2},{},{:.1},{:.1},{:.1},{},{},{},{},{},{},{}",
            s.t_s,
            s.rss_mb,
            s.cpu_pct,
            s.fds,
            s.late_p50_ms,
            s.late_p99_ms,
            s.late_max_ms,
            s.missed,
            s.alarm_changes,
            s.alerts_received,
            s.alerts_sent,
            s.ws_bytes,
            s.beats_sent,
            s.saves
        )?;
        if s.missed > 0 {
            failures.push(format!(
                "at {:.0} s, {} silent services of {} were not in ERROR by the end of their cycle",
                s.t_s,
                s.missed,
                alarm(group)
            ));
        }
        if s.late_max_ms > o.max_lateness_ms {
            failures.push(format!(
                "at {:.0} s, an expiry was {:.0} ms late (bound {:.0} ms)",
                s.t_s, s.late_max_ms, o.max_lateness_ms
            ));
        }
        if let Some(prev) = samples.last() {
            if s.ws_bytes <= prev.ws_bytes {
                failures.push(format!(
                    "at {:.0} s, the websocket client was sent nothing for a cycle",
                    s.t_s
                ));
            }
        }
        samples.push(s);
        // The cycle ends: the group beats again.
        if let Some(wait) = (start + o.every).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // The last group comes back; the alerts settle.
    sender.silent.store(usize::MAX, Ordering::Relaxed);
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let received = rx.seen(|s| s.posts);
        let back = rx.seen(|s| {
            let to = |g: usize, state: &str| {
                s.changes
                    .get(&(alarm(g), state.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            (0..GROUPS).all(|g| to(g, "error") >= silenced[g] && to(g, "ok") >= silenced[g])
        });
        if (back
            && received == incident_changes(d.http)?
            && received as f64 == d.metric("lovebeat_alerts_sent_total"))
            || settle.elapsed() > Duration::from_secs(timeout_s * 3 + 30)
        {
            break;
        }
    }
    // The history writes in batches: a change may land a moment late.
    let mut final_changes = 0;
    for _ in 0..5 {
        final_changes = alarm_changes(d.http, history_from, now_ms() + 1)?;
        if final_changes == rx.seen(|s| s.posts) {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let by_incidents = incident_changes(d.http)?;
    drop(sender);
    let received = rx.seen(|s| s.posts);
    let sent = d.metric("lovebeat_alerts_sent_total");
    let lost = d.metric("lovebeat_alerts_failed_total") + d.metric("lovebeat_alerts_dropped_total");
    eprintln!(
        "soak: alarm changes in the history {final_changes} (by incidents {by_incidents}), alerts received {received}, sent {sent}, failed or dropped {lost}"
    );
    if received != final_changes
        || received != by_incidents
        || received as f64 != sent
        || lost > 0.0
    {
        failures.push(format!(
            "alerts lost: {final_changes} alarm changes in the history ({by_incidents} by the incidents), {received} alerts received, {sent} sent, {lost} failed or dropped"
        ));
    }
    for (g, &times) in silenced.iter().enumerate() {
        let (err, ok) = rx.seen(|s| {
            let to = |state: &str| {
                s.changes
                    .get(&(alarm(g), state.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            (to("error"), to("ok"))
        });
        if err < times || ok < times {
            failures.push(format!(
                "{} went silent {times} times but was announced ERROR {err} and OK {ok} times",
                alarm(g)
            ));
        }
    }
    // A save every cycle, and nothing lost on the way to the disk.
    let saves = d.metric("lovebeat_db_saves_total");
    let save_failures = d.metric("lovebeat_db_save_failures_total");
    let history_lost = d.metric("lovebeat_history_changes_lost_total")
        + d.metric("lovebeat_history_write_errors_total");
    eprintln!("soak: {saves} saves ({save_failures} failed), history changes lost or write errors {history_lost}");
    if saves + 1.0 < cycles as f64 || save_failures > 0.0 || history_lost > 0.0 {
        failures.push(format!(
            "{saves} saves in {cycles} cycles, {save_failures} failed; {history_lost} history changes lost or write errors"
        ));
    }
    failures.extend(trends(&samples, o));
    plots(&samples, o)?;
    eprintln!("soak: samples in {}, plots beside it", csv_path.display());
    if failures.is_empty() {
        eprintln!("soak: every invariant held");
        Ok(())
    } else {
        for f in &failures {
            eprintln!("soak: FAILED: {f}");
        }
        anyhow::bail!("{} invariants broke", failures.len())
    }
}

/// The trend tests over the samples after the warm-up: open files and
/// RSS must not grow, nor (unless `hard_only`) CPU and lateness.
fn trends(samples: &[Sample], o: &SoakOpts) -> Vec<String> {
    let warm = o.warmup.as_secs_f64();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warm).collect();
    let mut failures = Vec::new();
    let (Some(first), Some(last)) = (after.first(), after.last()) else {
        failures.push("no sample after the warm-up: run longer or shorten --warmup".into());
        return failures;
    };
    if after.len() < 3 {
        failures.push(format!(
            "only {} samples after the warm-up: too few for a trend",
            after.len()
        ));
    }
    let most = after.iter().map(|s| s.fds).max().unwrap_or(0);
    if most > first.fds + FD_SLACK {
        failures.push(format!(
            "open files grew from {} to {most} after the warm-up",
            first.fds
        ));
    }
    let points: Vec<(f64, f64)> = after.iter().map(|s| (s.t_s / 3600.0, s.rss_mb)).collect();
    let per_hour = slope(&points);
    let window_h = (last.t_s - first.t_s) / 3600.0;
    eprintln!(
        "soak: RSS after the warm-up {:.1} -> {:.1} MB, slope {per_hour:.1} MB/hour over {:.1} min (a trend: over {} MB/hour and over {RSS_NOISE_MB} MB in the window)",
        first.rss_mb,
        last.rss_mb,
        window_h * 60.0,
        o.max_growth_mb_per_hour
    );
    if per_hour > o.max_growth_mb_per_hour && per_hour * window_h > RSS_NOISE_MB {
        failures.push(format!(
            "RSS grows {per_hour:.1} MB/hour after the warm-up ({:.1} MB over {:.1} min)",
            per_hour * window_h,
            window_h * 60.0
        ));
    }
    // CPU and lateness: steady work must cost the same at the end.
    for (what, unit, (per_hour_max, window_max), f) in [
        (
            "CPU",
            "% of a core",
            CPU_TREND,
            (|s: &Sample| s.cpu_pct) as fn(&Sample) -> f64,
        ),
        ("expiry lateness p99", "ms", LATENESS_TREND, |s: &Sample| {
            s.late_p99_ms
        }),
    ] {
        let points: Vec<(f64, f64)> = after
            .iter()
            .map(|s| (s.t_s / 3600.0, f(s)))
            .filter(|p| p.1.is_finite())
            .collect();
        let per_hour = slope(&points);
        eprintln!("soak: {what} after the warm-up: slope {per_hour:.1} {unit}/hour");
        if !o.hard_only && per_hour > per_hour_max && per_hour * window_h > window_max {
            failures.push(format!(
                "{what} grows {per_hour:.1} {unit}/hour after the warm-up ({:.1} {unit} over {:.1} min)",
                per_hour * window_h,
                window_h * 60.0
            ));
        }
    }
    failures
}

/// The samples as SVG charts in `o.out`.
fn plots(samples: &[Sample], o: &SoakOpts) -> anyhow::Result<()> {
    let line = |name: &str, f: &dyn Fn(&Sample) -> f64| Series {
        name: name.into(),
        points: samples.iter().map(|s| (s.t_s / 60.0, f(s))).collect(),
    };
    chart(
        &o.out.join("soak-rss.svg"),
        &format!("soak: RSS, {} services", o.services),
        "minutes",
        "MB",
        &[line("RSS", &|s| s.rss_mb)],
        false,
    )?;
    chart(
        &o.out.join("soak-cpu.svg"),
        &format!("soak: CPU, {} beats/s", o.rate),
        "minutes",
        "% of a core",
        &[line("CPU", &|s| s.cpu_pct)],
        false,
    )?;
    chart(
        &o.out.join("soak-lateness.svg"),
        "soak: expiry lateness of the silent group",
        "minutes",
        "ms past the deadline",
        &[
            line("p50", &|s| s.late_p50_ms),
            line("p99", &|s| s.late_p99_ms),
            line("max", &|s| s.late_max_ms),
        ],
        false,
    )?;
    chart(
        &o.out.join("soak-alerts.svg"),
        "soak: alarm changes and alerts received",
        "minutes",
        "since the start",
        &[
            line("alarm changes", &|s| s.alarm_changes as f64),
            line("alerts received", &|s| s.alerts_received as f64),
        ],
        false,
    )?;
    chart(
        &o.out.join("soak-fds.svg"),
        "soak: open files",
        "minutes",
        "descriptors",
        &[line("fds", &|s| s.fds as f64)],
        false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_mb: f64, fds: i64) -> Sample {
        Sample {
            t_s,
            rss_mb,
            fds,
            ..Default::default()
        }
    }

    fn opts() -> SoakOpts {
        SoakOpts {
            services: 1000,
            rate: 1000,
            duration: Duration::from_secs(3600),
            every: Duration::from_secs(60),
            warmup: Duration::from_secs(600),
            max_lateness_ms: 1000.0,
            max_growth_mb_per_hour: 32.0,
            hard_only: false,
            out: PathBuf::new(),
        }
    }

    #[test]
    fn flat_noisy_memory_and_steady_files_are_no_trend() {
        let s: Vec<Sample> = (0..60)
            .map(|m| sample(m as f64 * 60.0, 300.0 + (m % 3) as f64 * 4.0, 40 + m % 2))
            .collect();
        assert!(trends(&s, &opts()).is_empty());
    }

    #[test]
    fn memory_that_climbs_after_the_warm_up_is_a_trend() {
        // 1 MB a minute: 60 MB/hour, 50 MB over the window.
        let s: Vec<Sample> = (0..60)
            .map(|m| sample(m as f64 * 60.0, 300.0 + m as f64, 40))
            .collect();
        let f = trends(&s, &opts());
        assert!(f.iter().any(|f| f.contains("RSS grows")), "{f:?}");
    }

    #[test]
    fn growth_during_the_warm_up_only_is_no_trend_but_growing_files_are() {
        let s: Vec<Sample> = (0..60)
            .map(|m| {
                let t = m as f64 * 60.0;
                let rss = if t < 600.0 { 100.0 + t } else { 700.0 };
                sample(t, rss, 40 + m)
            })
            .collect();
        let f = trends(&s, &opts());
        assert!(!f.iter().any(|f| f.contains("RSS")), "{f:?}");
        assert!(f.iter().any(|f| f.contains("open files grew")), "{f:?}");
    }

    #[test]
    fn cpu_that_climbs_is_a_trend_except_in_the_ci_check() {
        // From 20 % to 50 % of a core over the hour.
        let s: Vec<Sample> = (0..60)
            .map(|m| Sample {
                cpu_pct: 20.0 + m as f64 / 2.0,
                ..sample(m as f64 * 60.0, 300.0, 40)
            })
            .collect();
        let f = trends(&s, &opts());
        assert!(f.iter().any(|f| f.contains("CPU grows")), "{f:?}");
        let ci = SoakOpts {
            hard_only: true,
            ..opts()
        };
        assert!(trends(&s, &ci).is_empty());
    }

    #[test]
    fn names_fall_in_their_group_and_its_alarm() {
        assert_eq!(name(1234), "soak.g34.s0001234");
        assert_eq!(alarm(34), "g-g34");
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
