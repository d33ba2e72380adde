//! The statsd metrics sink (README, "Watching lovebeat itself") on the path
//! its users run: the real binary sends to Etsy's statsd, which flushes to
//! Graphite's carbon-cache, and the series are read back from carbon's
//! whisper files with `whisper-fetch`. tests/alerts.rs shows the datagrams
//! lovebeat sends; this shows that statsd accepts every line of them and
//! that Graphite stores them under the names people graph.
//!
//! Needs `node`, `npm ci --prefix tests/graphite` (statsd) and Debian's
//! `graphite-carbon` (carbon-cache, whisper-fetch); `./test` installs all
//! three. Everything runs on loopback ports, in a temporary directory.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Daemon};

/// A peer process started by this test, killed by its PID when dropped.
struct Peer {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf, missing: &str) -> Peer {
        let out = File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({e}): {missing}"));
        Peer { name, child, log }
    }

    /// Panics with its log if it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().expect("wait") {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }

    /// The last 40 lines of its output (carbon logs every write).
    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// carbon-cache and statsd in front of it, in their own temporary directory.
struct Graphite {
    // Dropped first: statsd stops sending before carbon stops.
    statsd: Peer,
    carbon: Peer,
    /// Where statsd listens for metrics (UDP).
    statsd_port: u16,
    whisper: PathBuf,
    dir: tempfile::TempDir,
}

/// True when something accepts TCP connections on `port`. A connection
/// whose two ends are the same address is the socket connected to itself
/// (TCP simultaneous open on a port nobody listens on yet), not a listener.
fn listens(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// True when statsd's management port answers `health` with `up`.
fn statsd_healthy(mgmt: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", mgmt)) else {
        return false;
    };
    if s.local_addr().ok() == s.peer_addr().ok() {
        return false;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"health\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.trim() == "health: up"
}

impl Graphite {
    fn start() -> Graphite {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let stats_js = repo.join("tests/graphite/node_modules/statsd/stats.js");
        assert!(
            stats_js.exists(),
            "the Graphite test needs Etsy's statsd: run `npm ci --prefix tests/graphite --omit=optional` (./test does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let whisper = root.join("whisper");
        for sub in ["conf", "whisper", "log", "run"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }

        let (line, pickle, query) = (free_port(), free_port(), free_port());
        // Every path in the temporary directory; USER empty so that carbon,
        // started as root, does not switch to Debian's _graphite user.
        let carbon_conf = root.join("conf/carbon.conf");
        std::fs::write(
            &carbon_conf,
            format!(
                "[cache]\n\
                 STORAGE_DIR = {root}/\n\
                 LOCAL_DATA_DIR = {root}/whisper/\n\
                 WHISPER_DIR = {root}/whisper/\n\
                 CONF_DIR = {root}/conf/\n\
                 LOG_DIR = {root}/log/\n\
                 PID_DIR = {root}/run/\n\
                 USER =\n\
                 MAX_CACHE_SIZE = inf\n\
                 MAX_UPDATES_PER_SECOND = inf\n\
                 MAX_CREATES_PER_MINUTE = inf\n\
                 LINE_RECEIVER_INTERFACE = 127.0.0.1\n\
                 LINE_RECEIVER_PORT = {line}\n\
                 ENABLE_UDP_LISTENER = False\n\
                 PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
                 PICKLE_RECEIVER_PORT = {pickle}\n\
                 CACHE_QUERY_INTERFACE = 127.0.0.1\n\
                 CACHE_QUERY_PORT = {query}\n",
                root = root.display()
            ),
        )
        .expect("write carbon.conf");
        // One point a second, as often as statsd flushes: each flush is
        // its own point, so a counter's points add up to its total.
        std::fs::write(
            root.join("conf/storage-schemas.conf"),
            "[everything]\npattern = .*\nretentions = 1s:1h\n",
        )
        .expect("write storage-schemas.conf");
        let mut carbon = Peer::spawn(
            "carbon-cache",
            Command::new("carbon-cache")
                .arg(format!("--config={}", carbon_conf.display()))
                .arg(format!(
                    "--pidfile={}",
                    root.join("run/carbon.pid").display()
                ))
                .arg(format!("--logdir={}", root.join("log").display()))
                .args(["--nodaemon", "start"]),
            root.join("carbon.out"),
            "apt-get install graphite-carbon (./test installs it)",
        );
        wait_until("carbon-cache to listen", Duration::from_secs(30), || {
            carbon.check_alive();
            listens(line)
        });

        let (statsd_port, mgmt) = (free_port(), free_port());
        // deleteIdleStats: a counter is sent only in the flush after it
        // was incremented, so its stored points are exactly its increments.
        let statsd_conf = root.join("statsd.js");
        std::fs::write(
            &statsd_conf,
            format!(
                "{{\n  graphiteHost: \"127.0.0.1\",\n  graphitePort: {line},\n  \
                 address: \"127.0.0.1\",\n  port: {statsd_port},\n  \
                 mgmt_address: \"127.0.0.1\",\n  mgmt_port: {mgmt},\n  \
                 flushInterval: 1000,\n  deleteIdleStats: true,\n  \
                 backends: [\"./backends/graphite\"]\n}}\n"
            ),
        )
        .expect("write statsd.js");
        let mut statsd = Peer::spawn(
            "statsd",
            Command::new("node").arg(&stats_js).arg(&statsd_conf),
            root.join("statsd.out"),
            "install Node.js (./test installs Debian's nodejs)",
        );
        wait_until("statsd to be healthy", Duration::from_secs(30), || {
            statsd.check_alive();
            statsd_healthy(mgmt)
        });
        Graphite {
            statsd,
            carbon,
            statsd_port,
            whisper,
            dir,
        }
    }

    /// The stored points of `metric` (dotted Graphite name), oldest first,
    /// without the empty slots; `Err` while its file is not there or not
    /// readable yet.
    fn points(&self, metric: &str) -> Result<Vec<f64>, String> {
        let path = self
            .whisper
            .join(format!("{}.wsp", metric.replace('.', "/")));
        if !path.exists() {
            return Err(format!("{metric}: no whisper file yet"));
        }
        let out = Command::new("whisper-fetch")
            .arg("--json")
            .arg(&path)
            .output()
            .expect("whisper-fetch (apt-get install graphite-carbon; ./test installs it)");
        if !out.status.success() {
            return Err(format!(
                "{metric}: whisper-fetch failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{metric}: whisper-fetch printed no JSON: {e}"))?;
        Ok(json["values"]
            .as_array()
            .map(|v| v.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default())
    }

    /// What a failing test shows: the peers' logs and files.
    fn report(&self) -> String {
        let mut files = Vec::new();
        let mut stack = vec![self.whisper.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else if let Ok(p) = e.path().strip_prefix(&self.whisper) {
                    files.push(p.display().to_string());
                }
            }
        }
        files.sort();
        format!(
            "whisper files: {files:?}\nstatsd log:\n{}\ncarbon log:\n{}\n(in {})",
            self.statsd.log_text(),
            self.carbon.log_text(),
            self.dir.path().display()
        )
    }

    /// Polls until every expectation holds (each a metric and a check of
    /// its points), or panics after `limit` with what was stored.
    fn expect(&mut self, d: &Daemon, limit: Duration, checks: &[Expectation]) {
        let deadline = Instant::now() + limit;
        loop {
            self.statsd.check_alive();
            self.carbon.check_alive();
            let seen: Vec<_> = checks
                .iter()
                .map(|(metric, ok)| {
                    let points = self.points(metric);
                    let good = points.as_ref().is_ok_and(|p| ok(p));
                    (metric, points, good)
                })
                .collect();
            if seen.iter().all(|(_, _, good)| *good) {
                return;
            }
            if Instant::now() > deadline {
                let lines: Vec<String> = seen
                    .iter()
                    .map(|(m, p, good)| {
                        format!("{} {m}: {p:?}", if *good { "ok  " } else { "FAIL" })
                    })
                    .collect();
                panic!(
                    "after {limit:?} Graphite holds:\n{}\n{}\nlovebeat log:\n{}",
                    lines.join("\n"),
                    self.report(),
                    d.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A metric's dotted Graphite name, and what its stored points must satisfy.
type Expectation<'a> = (&'a str, &'a dyn Fn(&[f64]) -> bool);

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sum(p: &[f64]) -> f64 {
    p.iter().sum()
}

#[test]
fn counters_and_state_gauges_reach_graphite_through_statsd() {
    let mut g = Graphite::start();
    // A dotted prefix, as people nest their metrics: it becomes folders.
    let d = Daemon::start(&format!(
        "[metrics]\nserver = \"127.0.0.1:{}\"\nprefix = \"ops.lovebeat\"\n\
         [[alarms]]\nname = \"graphite\"\npattern = \"graphite.*\"\n",
        g.statsd_port
    ));
    d.post("/api/services/graphite.down?timeout=0");
    d.udp("graphite.up.beat:1|c\ngraphite.other.beat:1|c\nbad line\n");

    // statsd's legacy namespace, its default: counts under stats_counts,
    // gauges under stats.gauges. Counters and counts leave lovebeat every
    // 10 s (the first count at start), state gauges when a state changes.
    g.expect(
        &d,
        Duration::from_secs(45),
        &[
            ("stats_counts.ops.lovebeat.started.count", &|p| p == [1.0]),
            ("stats_counts.ops.lovebeat.lines.accepted", &|p| {
                sum(p) == 2.0
            }),
            ("stats_counts.ops.lovebeat.lines.dropped", &|p| {
                sum(p) == 1.0
            }),
            ("stats_counts.ops.lovebeat.datagrams.received", &|p| {
                sum(p) == 1.0
            }),
            // The count at each flush: the first flush runs when the sink
            // starts, which on a loaded machine may be after the first
            // services arrived, so it is anything from 0 to 3; then 3.
            ("stats.gauges.ops.lovebeat.service.count", &|p| {
                p.iter().all(|v| (0.0..=3.0).contains(v)) && p.last() == Some(&3.0)
            }),
            ("stats.gauges.ops.lovebeat.alarm.count", &|p| {
                p.last() == Some(&1.0)
            }),
            // 2 is error.
            (
                "stats.gauges.ops.lovebeat.service.state.graphite.down",
                &|p| p.last() == Some(&2.0),
            ),
            ("stats.gauges.ops.lovebeat.alarm.state.graphite", &|p| {
                p.last() == Some(&2.0)
            }),
            // 1 is ok.
            (
                "stats.gauges.ops.lovebeat.service.state.graphite.up",
                &|p| p.last() == Some(&1.0),
            ),
        ],
    );

    // A beat brings the service and its alarm back to ok: the gauges
    // follow, after the error they stored.
    let r = d.post("/api/services/graphite.down?timeout=3600");
    assert_eq!(r.status, 200, "{}", r.body);
    let error_then_ok = |p: &[f64]| p.ends_with(&[2.0, 1.0]);
    g.expect(
        &d,
        Duration::from_secs(20),
        &[
            (
                "stats.gauges.ops.lovebeat.service.state.graphite.down",
                &error_then_ok,
            ),
            (
                "stats.gauges.ops.lovebeat.alarm.state.graphite",
                &error_then_ok,
            ),
            // statsd parsed every line lovebeat sent.
            ("stats_counts.statsd.bad_lines_seen", &|p| {
                !p.is_empty() && sum(p) == 0.0
            }),
        ],
    );
}
