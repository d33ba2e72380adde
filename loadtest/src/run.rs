//! `run`: starts the release daemon pinned to core 0, sends from core 1,
//! and prints the table of figures against `sink` and the goals.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::blast::{blast, BlastOpts, BlastResult, Kind};
use crate::dbgen;
use crate::sys;

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub services: usize,
    pub tcp_lines: u64,
    pub idle: Duration,
    pub expiry_big: usize,
    pub expiry_small: usize,
    pub send_for: Duration,
    pub wrk_secs: u64,
    /// Idle and half-open HTTP connections held in `idle-conns`.
    pub hostile_conns: usize,
    /// Services in the table `expiry` loads, of which `expiry_big` or
    /// `expiry_small` expire at once (the rest an hour later); at most
    /// those, the table holds only the expiring ones.
    pub expiry_table: usize,
    /// Services that go ERROR at once in `mass-outage`, and how long beats
    /// are sent after.
    pub outage_services: usize,
    pub outage_minute: Duration,
    /// `history-queries`: services, changes each, the days they span, and
    /// the random services (and alarm uptimes) asked for.
    pub hq_services: usize,
    pub hq_changes: usize,
    pub hq_days: i64,
    pub hq_samples: usize,
    /// `history-write`: services flipping, for how long, and how many
    /// flips a second are sent.
    pub write_services: usize,
    pub write_for: Duration,
    pub write_rate: u64,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            services: 1_000_000,
            tcp_lines: 10_000_000,
            idle: Duration::from_secs(30),
            expiry_big: 100_000,
            expiry_small: 1_000,
            send_for: Duration::from_secs(5),
            wrk_secs: 10,
            hostile_conns: 3000,
            expiry_table: 0,
            outage_services: 1_000_000,
            outage_minute: Duration::from_secs(60),
            hq_services: 1_000_000,
            hq_changes: 100,
            hq_days: 365,
            hq_samples: 1000,
            write_services: 1_000_000,
            write_for: Duration::from_secs(60),
            write_rate: 250_000,
        }
    }

    /// The sizes of a point of `curve`: `n` services, of which 10 % and
    /// 1 % expire at once.
    pub fn curve(n: usize) -> Scale {
        Scale {
            services: n,
            tcp_lines: (n as u64).max(1_000_000),
            idle: Duration::from_secs(10),
            expiry_big: (n / 10).max(1),
            expiry_small: (n / 100).max(1),
            send_for: Duration::from_secs(3),
            wrk_secs: 1,
            hostile_conns: 0,
            expiry_table: n,
            outage_services: n,
            outage_minute: Duration::from_secs(10),
            hq_services: n,
            hq_changes: 100,
            hq_days: 365,
            hq_samples: 1000,
            write_services: n,
            write_for: Duration::from_secs(10),
            write_rate: 250_000,
        }
    }
    pub fn quick() -> Scale {
        Scale {
            services: 50_000,
            tcp_lines: 200_000,
            idle: Duration::from_secs(2),
            expiry_big: 10_000,
            expiry_small: 1_000,
            send_for: Duration::from_millis(700),
            wrk_secs: 1,
            hostile_conns: 300,
            expiry_table: 0,
            outage_services: 20_000,
            outage_minute: Duration::from_secs(3),
            hq_services: 2_000,
            hq_changes: 20,
            hq_days: 365,
            hq_samples: 30,
            write_services: 20_000,
            write_for: Duration::from_secs(3),
            write_rate: 20_000,
        }
    }
}

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "udp-beat",
    "udp-small",
    "udp-create",
    "tcp",
    "memory",
    "idle",
    "expiry",
    "save",
    "http",
    "list",
    "outage",
    "big-alarm",
    "idle-conns",
    "flapping",
    "max-services",
    "mass-outage",
    "history-queries",
    "history-write",
];

/// One line of the table.
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) figure: String,
    pub(crate) value: String,
    pub(crate) sink: String,
    pub(crate) ratio: String,
    pub(crate) goal: &'static str,
    pub(crate) met: Option<bool>,
}

pub(crate) const DAEMON_CORE: usize = 0;
pub(crate) const SENDER_CORE: usize = 1;

pub(crate) fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A daemon started for a scenario.
pub(crate) struct Daemon {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) http: u16,
    pub(crate) statsd: SocketAddr,
}

impl Daemon {
    fn start(
        bin: &Path,
        save_interval: u64,
        db: Option<&Path>,
    ) -> anyhow::Result<(Daemon, Duration)> {
        Daemon::start_with(bin, save_interval, db, "")
    }

    /// Starts with `extra` appended to the config.
    pub(crate) fn start_with(
        bin: &Path,
        save_interval: u64,
        db: Option<&Path>,
        extra: &str,
    ) -> anyhow::Result<(Daemon, Duration)> {
        let dir = tempfile::tempdir()?;
        let (http, statsd) = (free_port(), free_port());
        if let Some(db) = db {
            std::fs::copy(db, dir.path().join("lovebeat.db"))?;
        }
        std::fs::write(
            dir.path().join("lovebeat.cfg"),
            format!(
                "[http]\nlisten = \"127.0.0.1:{http}\"\n[udp]\nlisten = \"127.0.0.1:{statsd}\"\n[tcp]\nlisten = \"127.0.0.1:{statsd}\"\n[database]\nfilename = \"lovebeat.db\"\ninterval = {save_interval}\n{extra}\n"
            ),
        )?;
        let mut cmd = Command::new(bin);
        cmd.args(["--config", "lovebeat.cfg", "--config-dir", "none"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        sys::pin_command(&mut cmd, DAEMON_CORE);
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        loop {
            if sys::http_get(http, "/version").is_ok_and(|(status, _)| status == 200) {
                break;
            }
            if let Some(s) = child.try_wait()? {
                anyhow::bail!("daemon exited with {s}");
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(120),
                "daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let ready = start.elapsed();
        let statsd = SocketAddr::from(([127, 0, 0, 1], statsd));
        Ok((
            Daemon {
                child,
                _dir: dir,
                http,
                statsd,
            },
            ready,
        ))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn metric(&self, name: &str) -> f64 {
        sys::metrics(self.http)
            .ok()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0.0)
    }

    pub(crate) fn accepted(&self) -> f64 {
        self.metric("lovebeat_lines_accepted_total")
    }

    pub(crate) fn services(&self) -> f64 {
        ["ok", "error", "muted"]
            .iter()
            .map(|s| self.metric(&format!("lovebeat_services{{state=\"{s}\"}}")))
            .sum()
    }

    /// Waits until `f` stops changing for 300 ms; returns its last value.
    pub(crate) fn settle(&self, f: impl Fn(&Daemon) -> f64) -> f64 {
        self.settle_at(f).0
    }

    /// Like `settle`, also returning when the value last changed (polled
    /// every 10 ms), i.e. when the daemon finished the work.
    pub(crate) fn settle_at(&self, f: impl Fn(&Daemon) -> f64) -> (f64, Instant) {
        let mut last = f(self);
        let mut since = Instant::now();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let v = f(self);
            if v != last {
                last = v;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(300)
                || start.elapsed() > Duration::from_secs(60)
            {
                return (v, since);
            }
        }
    }

    /// Creates `n` services `<prefix>.<i>` with a 3600 s timeout and a beat.
    pub(crate) fn populate(&self, prefix: &str, n: usize) -> anyhow::Result<()> {
        for kind in [Kind::Timeout, Kind::Beat] {
            for _ in 0..5 {
                blast(&opts(self.statsd, prefix, n, 20, 300_000, kind, true))?;
                self.settle(Daemon::accepted);
                if kind == Kind::Beat || self.services() as usize >= n {
                    break;
                }
            }
        }
        anyhow::ensure!(
            self.services() as usize >= n,
            "could not create {n} services"
        );
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub(crate) fn opts(
    target: SocketAddr,
    prefix: &str,
    services: usize,
    per_packet: usize,
    rate: u64,
    kind: Kind,
    sequential: bool,
) -> BlastOpts {
    BlastOpts {
        target,
        services,
        lines_per_packet: per_packet,
        rate,
        count: services as u64,
        duration: None,
        kind,
        sequential,
        tcp: false,
        prefix: prefix.to_string(),
    }
}

/// Runs `sink` (pinned like the daemon) while `send` sends to it.
fn with_sink(
    send: impl FnOnce(SocketAddr) -> anyhow::Result<BlastResult>,
) -> anyhow::Result<(BlastResult, u64, u64)> {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "sink",
        "--listen",
        &addr.to_string(),
        "--sockets",
        &sys::cores().to_string(),
        "--idle-ms",
        "500",
    ])
    .stdout(Stdio::piped());
    sys::pin_command(&mut cmd, DAEMON_CORE);
    let mut child = cmd.spawn()?;
    let mut out = std::io::BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    anyhow::ensure!(line.trim() == "ready", "sink did not start: {line}");
    let sent = send(addr)?;
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(line.trim())?;
    Ok((
        sent,
        v["lines"].as_u64().unwrap_or(0),
        v["datagrams"].as_u64().unwrap_or(0),
    ))
}

/// The highest rate the daemon applies with loss under `max_loss`: flat out
/// first, which measures what it can take (plus what its socket buffer
/// absorbed), then paced at 95 % of that, slowing by 10 % per failed try.
/// Returns (lines/s applied, datagrams/s, loss).
fn best_rate(
    d: &Daemon,
    base: &BlastOpts,
    max_loss: f64,
    count_applied: impl Fn(&Daemon) -> f64,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut rate = 0u64;
    let mut best = (0.0, 0.0, 1.0);
    for attempt in 0..7 {
        let mut o = base.clone();
        o.rate = rate;
        if base.sequential {
            o.prefix = format!("{}{attempt}", base.prefix);
        }
        let before = count_applied(d);
        let start = Instant::now();
        let sent = blast(&o)?;
        let (after, done) = d.settle_at(&count_applied);
        let applied = (after - before).max(0.0);
        let loss = 1.0 - applied / sent.lines.max(1) as f64;
        // The daemon's rate: what it applied over the time it took, which
        // is at least the sending time (it may drain its buffer after).
        let busy = done.duration_since(start).max(sent.elapsed);
        let lps = applied / busy.as_secs_f64();
        let pps = lps / base.lines_per_packet as f64;
        eprintln!(
            "  try {attempt}: paced at {} lines/s (sent {} lines/s), applied {} lines/s over {:.2} s, loss {:.3} %",
            if rate == 0 {
                "flat out".into()
            } else {
                num(rate as f64)
            },
            num(sent.lines as f64 / sent.elapsed.as_secs_f64()),
            num(lps),
            busy.as_secs_f64(),
            loss * 100.0
        );
        if loss <= max_loss {
            return Ok((lps, pps, loss));
        }
        if best.2 > loss {
            best = (lps, pps, loss);
        }
        rate = if attempt == 0 {
            (lps * 0.95) as u64
        } else {
            (rate as f64 * 0.9) as u64
        };
    }
    Ok(best)
}

fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.0} %", 100.0 * a / b)
    } else {
        "-".into()
    }
}

pub(crate) fn num(v: f64) -> String {
    let v = v.round() as i64;
    let s = v.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Runs the scenarios and prints the table.
pub fn run(bin: &Path, scale: Scale, wanted: &[String]) -> anyhow::Result<()> {
    let rows = rows(bin, scale, wanted)?;
    println!("| scenario | figure | lovebeat | sink / reference | ratio | goal | met |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario, r.figure, r.value, r.sink, r.ratio, r.goal, met
        );
    }
    Ok(())
}

/// Runs the scenarios `wanted` (all when empty) and returns their rows.
pub(crate) fn rows(bin: &Path, scale: Scale, wanted: &[String]) -> anyhow::Result<Vec<Row>> {
    sys::pin_self(SENDER_CORE);
    let want = |s: &str| wanted.is_empty() || wanted.iter().any(|w| w == s);
    let mut rows: Vec<Row> = Vec::new();
    let n = scale.services;
    let per_packet = 20;
    let mut udp_beat_rate = 0.0;
    let tmp = tempfile::tempdir()?;

    if want("udp-beat") || want("udp-small") || want("tcp") || want("save") {
        let (d, _) = Daemon::start(bin, 3600, None)?;
        d.populate("lt", n)?;
        if want("udp-beat") || want("tcp") || want("save") {
            let mut o = opts(d.statsd, "lt", n, per_packet, 0, Kind::Beat, false);
            o.duration = Some(scale.send_for);
            o.count = u64::MAX;
            let (sent, lines, _) = with_sink(|addr| {
                blast(&BlastOpts {
                    target: addr,
                    ..o.clone()
                })
            })?;
            let sink_rate = lines as f64 / sent.elapsed.as_secs_f64();
            // Fixed counts for the daemon so loss is exact.
            o.duration = None;
            o.count = (sink_rate * scale.send_for.as_secs_f64()) as u64;
            let (rate, _, loss) = best_rate(&d, &o, 0.001, Daemon::accepted)?;
            udp_beat_rate = rate;
            rows.push(Row {
                scenario: "udp-beat",
                figure: format!(
                    "lines/s applied, {per_packet} lines/datagram, {} services (loss {:.3} %)",
                    num(n as f64),
                    loss * 100.0
                ),
                value: num(rate),
                sink: num(sink_rate),
                ratio: pct(rate, sink_rate),
                goal: "≥ 50 % of sink",
                met: Some(rate >= 0.5 * sink_rate && loss <= 0.001),
            });
        }
        if want("udp-small") {
            let mut o = opts(d.statsd, "lt", n, 1, 0, Kind::Beat, false);
            o.duration = Some(scale.send_for);
            o.count = u64::MAX;
            let (sent, _, datagrams) = with_sink(|addr| {
                blast(&BlastOpts {
                    target: addr,
                    ..o.clone()
                })
            })?;
            let sink_rate = datagrams as f64 / sent.elapsed.as_secs_f64();
            o.duration = None;
            o.count = (sink_rate * scale.send_for.as_secs_f64()) as u64;
            let (_, pps, loss) = best_rate(&d, &o, 0.001, Daemon::accepted)?;
            rows.push(Row {
                scenario: "udp-small",
                figure: format!(
                    "datagrams/s applied, 1 line each (loss {:.3} %)",
                    loss * 100.0
                ),
                value: num(pps),
                sink: num(sink_rate),
                ratio: pct(pps, sink_rate),
                goal: "≥ 80 % of sink",
                met: Some(pps >= 0.8 * sink_rate),
            });
        }
        if want("tcp") {
            let o = BlastOpts {
                tcp: true,
                count: scale.tcp_lines,
                ..opts(d.statsd, "lt", n, 1000, 0, Kind::Beat, false)
            };
            let before = d.accepted();
            let start = Instant::now();
            blast(&o)?;
            let target = before + scale.tcp_lines as f64;
            while d.accepted() < target && start.elapsed() < Duration::from_secs(300) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let rate = scale.tcp_lines as f64 / start.elapsed().as_secs_f64();
            rows.push(Row {
                scenario: "tcp",
                figure: format!(
                    "lines/s applied, one connection, {} lines",
                    num(scale.tcp_lines as f64)
                ),
                value: num(rate),
                sink: format!("udp-beat {}", num(udp_beat_rate)),
                ratio: pct(rate, udp_beat_rate),
                goal: "≥ 50 % of udp-beat",
                met: Some(rate >= 0.5 * udp_beat_rate),
            });
        }
    }

    if want("udp-create") {
        let (d, _) = Daemon::start(bin, 3600, None)?;
        let o = opts(d.statsd, "c", n, per_packet, 0, Kind::Beat, true);
        let (sent, lines, _) = with_sink(|addr| {
            blast(&BlastOpts {
                target: addr,
                ..o.clone()
            })
        })?;
        let sink_rate = lines as f64 / sent.elapsed.as_secs_f64();
        let (rate, _, loss) = best_rate(&d, &o, 0.0, Daemon::services)?;
        rows.push(Row {
            scenario: "udp-create",
            figure: format!(
                "new services/s, {} first beats (loss {:.3} %)",
                num(n as f64),
                loss * 100.0
            ),
            value: num(rate),
            sink: num(sink_rate),
            ratio: pct(rate, sink_rate),
            goal: "≥ 25 % of sink, no loss",
            met: Some(rate >= 0.25 * sink_rate && loss == 0.0),
        });
    }

    if want("memory") || want("idle") || want("http") || want("list") {
        let (d, _) = Daemon::start(bin, 3600, None)?;
        std::thread::sleep(Duration::from_millis(200));
        let rss0 = sys::rss(d.pid());
        d.populate("mem", n)?;
        let rss1 = sys::rss(d.pid());
        let per = (rss1 as f64 - rss0 as f64) / n as f64;
        if want("memory") {
            rows.push(Row {
                scenario: "memory",
                figure: format!(
                    "RSS growth per service, {} services with timeout and beat",
                    num(n as f64)
                ),
                value: format!("{per:.0} B"),
                sink: "-".into(),
                ratio: "-".into(),
                goal: "≤ 300 B",
                met: Some(per <= 300.0),
            });
            let empty = tmp.path().join("empty.db");
            let full = tmp.path().join("full.db");
            dbgen::write(&empty, "h", n, 3_600_000, 0, 1_700_000_000_000)?;
            dbgen::write(&full, "h", n, 3_600_000, 100, 1_700_000_000_000)?;
            let (de, _) = Daemon::start(bin, 3600, Some(&empty))?;
            let rss_e = sys::rss(de.pid());
            drop(de);
            let (df, _) = Daemon::start(bin, 3600, Some(&full))?;
            let rss_f = sys::rss(df.pid());
            drop(df);
            let extra = (rss_f as f64 - rss_e as f64) / n as f64;
            rows.push(Row {
                scenario: "memory",
                figure: "extra RSS per service for a full 100-interval history".into(),
                value: format!("{extra:.0} B"),
                sink: "-".into(),
                ratio: "-".into(),
                goal: "≤ 450 B",
                met: Some(extra <= 450.0),
            });
        }
        if want("idle") {
            let c0 = sys::cpu_secs(d.pid());
            std::thread::sleep(scale.idle);
            let used = (sys::cpu_secs(d.pid()) - c0) / scale.idle.as_secs_f64() * 100.0;
            rows.push(Row {
                scenario: "idle",
                figure: format!(
                    "CPU, {} services with 3600 s timeouts, {} s without traffic",
                    num(n as f64),
                    scale.idle.as_secs()
                ),
                value: format!("{used:.2} % of a core"),
                sink: "-".into(),
                ratio: "-".into(),
                goal: "≤ 0.5 %",
                met: Some(used <= 0.5),
            });
        }
        if want("http") {
            for (label, path, lua) in [
                (
                    "POST /api/services/<name>",
                    "/api/services/wrk.bench",
                    Some("wrk.method = \"POST\"\n"),
                ),
                ("GET /api/status", "/api/status", None),
            ] {
                let r = wrk(d.http, path, lua, scale.wrk_secs, tmp.path())?;
                rows.push(Row {
                    scenario: "http",
                    figure: format!("requests/s, {label}, {} services", num(n as f64)),
                    value: r.map_or("wrk not installed".into(), num),
                    sink: "-".into(),
                    ratio: "-".into(),
                    goal: "≥ 50 000",
                    met: r.map(|r| r >= 50_000.0),
                });
            }
        }
        if want("list") {
            std::thread::sleep(Duration::from_millis(300));
            sys::reset_peak(d.pid());
            let before = sys::rss(d.pid());
            let t = Instant::now();
            let bytes = sys::http_drain(d.http, "/api/services")?;
            let last_byte = t.elapsed();
            let peak = sys::status_bytes(d.pid(), "VmHWM:");
            let t = Instant::now();
            let (status, _) = sys::http_get(d.http, "/api/status")?;
            let status_took = t.elapsed();
            let ratio = peak as f64 / before.max(1) as f64;
            rows.push(Row {
                scenario: "list",
                figure: format!(
                    "peak RSS / RSS before, GET /api/services ({} MB body)",
                    bytes / 1_000_000
                ),
                value: format!("{ratio:.2}"),
                sink: "-".into(),
                ratio: "-".into(),
                goal: "≤ 1.5",
                met: Some(ratio <= 1.5),
            });
            rows.push(Row {
                scenario: "list",
                figure: format!(
                    "time to last byte, GET /api/services, {} services",
                    num(n as f64)
                ),
                value: format!("{:.0} ms", last_byte.as_secs_f64() * 1000.0),
                sink: format!(
                    "{:.0} MB/s",
                    bytes as f64 / 1e6 / last_byte.as_secs_f64().max(1e-6)
                ),
                ratio: "-".into(),
                goal: "-",
                met: None,
            });
            rows.push(Row {
                scenario: "list",
                figure: format!(
                    "time to last byte, GET /api/status, {} services",
                    num(n as f64)
                ),
                value: format!("{:.1} ms", status_took.as_secs_f64() * 1000.0),
                sink: "-".into(),
                ratio: "-".into(),
                goal: "-",
                met: Some(status == 200),
            });
        }
    }

    if want("expiry") {
        for count in [scale.expiry_big, scale.expiry_small] {
            if scale.expiry_table > count {
                rows.push(expiry_in_table(bin, tmp.path(), count, scale.expiry_table)?);
                continue;
            }
            let db = tmp.path().join(format!("exp{count}.db"));
            dbgen::write(&db, "exp", count, 2000, 0, 1_700_000_000_000)?;
            let (d, _) = Daemon::start(bin, 3600, Some(&db))?;
            let start = d.metric("lovebeat_start_time_seconds") * 1000.0;
            let deadline = start + 2000.0;
            let t = Instant::now();
            while d.metric("lovebeat_services{state=\"error\"}") < count as f64
                && t.elapsed() < Duration::from_secs(20)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let (_, body) = sys::http_get(d.http, "/api/services")?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let list = v["services"].as_array().cloned().unwrap_or_default();
            let errors = list.iter().filter(|s| s["state"] == "error").count();
            let late = list
                .iter()
                .filter_map(|s| s["last_state_change"].as_f64())
                .map(|c| c - deadline)
                .fold(f64::MIN, f64::max);
            let goal = if count == scale.expiry_small {
                50.0
            } else {
                100.0
            };
            rows.push(Row {
                scenario: "expiry",
                figure: format!(
                    "max lateness, {} services with the same 2 s deadline ({errors} in error)",
                    num(count as f64)
                ),
                value: format!("{late:.0} ms"),
                sink: "-".into(),
                ratio: "-".into(),
                goal: if count == scale.expiry_small {
                    "≤ 50 ms"
                } else {
                    "≤ 100 ms"
                },
                met: Some(late <= goal && errors == count),
            });
        }
    }

    if want("save") {
        let db = tmp.path().join("save.db");
        dbgen::write(&db, "sv", n, 3_600_000, 10, 1_700_000_000_000)?;
        let (d, ready) = Daemon::start(bin, 3600, Some(&db))?;
        rows.push(Row {
            scenario: "save",
            figure: format!(
                "load {} services (10 intervals each), start to ready",
                num(n as f64)
            ),
            value: format!("{:.2} s", ready.as_secs_f64()),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "≤ 2 s",
            met: Some(ready.as_secs_f64() <= 2.0),
        });
        // The reference: the same loaded services on a daemon that does not
        // save during the test (interval 3600 s). The rate while saving
        // is compared with it, so both see the same histories and table.
        let mut o = opts(d.statsd, "sv", n, per_packet, 0, Kind::Beat, false);
        o.count = (udp_beat_rate.max(100_000.0) * scale.send_for.as_secs_f64()) as u64;
        let (quiet_rate, _, _) = if udp_beat_rate > 0.0 {
            best_rate(&d, &o, 0.001, Daemon::accepted)?
        } else {
            (0.0, 0.0, 0.0)
        };
        drop(d);
        let (d, _) = Daemon::start(bin, 1, Some(&db))?;
        let t = Instant::now();
        while d.metric("lovebeat_db_saves_total") < 1.0 && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let save_ms = d.metric("lovebeat_db_save_duration_seconds") * 1000.0;
        rows.push(Row {
            scenario: "save",
            figure: format!("save {} services", num(n as f64)),
            value: format!("{:.2} s", save_ms / 1000.0),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "≤ 2 s",
            met: Some(save_ms <= 2000.0),
        });
        if udp_beat_rate > 0.0 {
            o.target = d.statsd;
            let saves0 = d.metric("lovebeat_db_saves_total");
            let (rate, _, loss) = best_rate(&d, &o, 0.001, Daemon::accepted)?;
            let saves = d.metric("lovebeat_db_saves_total") - saves0;
            rows.push(Row {
                scenario: "save",
                figure: format!(
                    "udp-beat lines/s while saving ({saves} saves, loss {:.3} %)",
                    loss * 100.0
                ),
                value: num(rate),
                sink: format!("same without saves {}", num(quiet_rate)),
                ratio: pct(rate, quiet_rate),
                goal: "≥ 80 % of it without saves",
                met: Some(rate >= 0.8 * quiet_rate),
            });
        }
    }

    rows.extend(crate::hostile::run(bin, scale, &want)?);
    // The history's scenarios write files of gigabytes at full size: they
    // run only when named.
    let named = |s: &str| wanted.iter().any(|w| w == s);
    rows.extend(crate::history::run(bin, scale, &named)?);
    Ok(rows)
}

/// The expiry lateness of `count` services with the same deadline among
/// `table` (the rest an hour later): read from the page of an alarm that
/// holds only the expiring ones, so the reader need not take the whole
/// table. Deadlines count from the engine's start, before the table is
/// loaded, so the deadline (5 s, 10 s a million services) leaves the load
/// time out of the lateness.
fn expiry_in_table(bin: &Path, tmp: &Path, count: usize, table: usize) -> anyhow::Result<Row> {
    let db = tmp.join(format!("mixed{count}.db"));
    let timeout_ms = (table as i64 / 100).max(5000);
    dbgen::write_mixed(&db, count, timeout_ms, table - count, 1_700_000_000_000)?;
    let (d, _) = Daemon::start_with(
        bin,
        3600,
        Some(&db),
        "[[alarms]]\nname = \"expiring\"\npattern = \"exp.*\"\n",
    )?;
    let start = d.metric("lovebeat_start_time_seconds") * 1000.0;
    let deadline = start + timeout_ms as f64;
    let t = Instant::now();
    let limit = Duration::from_millis(timeout_ms as u64) + Duration::from_secs(60);
    while d.metric("lovebeat_services{state=\"error\"}") < count as f64 && t.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, body) = sys::http_get(d.http, "/api/alarms/expiring")?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let list = v["services"].as_array().cloned().unwrap_or_default();
    let errors = list.iter().filter(|s| s["state"] == "error").count();
    let late = list
        .iter()
        .filter_map(|s| s["last_state_change"].as_f64())
        .map(|c| c - deadline)
        .fold(f64::MIN, f64::max);
    let pct_of = 100.0 * count as f64 / table as f64;
    Ok(Row {
        scenario: "expiry",
        figure: format!(
            "max lateness, {pct_of:.0} % of {} services with the same {} s deadline ({errors} in error)",
            num(table as f64),
            timeout_ms / 1000
        ),
        value: format!("{late:.0} ms"),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "≤ 200 ms",
        met: Some(late <= 200.0 && errors == count),
    })
}

/// Runs wrk pinned to the sender's core; requests/s, or None without wrk.
fn wrk(
    port: u16,
    path: &str,
    lua: Option<&str>,
    secs: u64,
    tmp: &Path,
) -> anyhow::Result<Option<f64>> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", &format!("-d{secs}s")]);
    if let Some(lua) = lua {
        let script: PathBuf = tmp.join("wrk.lua");
        std::fs::write(&script, lua)?;
        cmd.arg("-s").arg(script);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    sys::pin_command(&mut cmd, SENDER_CORE);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("wrk printed no rate: {text}"))?;
    Ok(Some(rps))
}
