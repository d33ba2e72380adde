//! Cluster mode, stage 1 (docs/CLUSTER.md), against real processes: a
//! 3-server NATS cluster with JetStream from Debian's `nats-server` on
//! loopback ports, and lovebeat nodes with `[cluster]`. Skipped, saying
//! so, only when `nats-server` is missing and LOVEBEAT_REQUIRE_NATS is
//! unset (`./test` sets it, so CI never skips).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, wait_until, Daemon};

/// One scenario at a time: each runs six or more processes, and a 2-core
/// machine running two at once would blur the timings they check.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The lease the nodes run with: short, so a handover fits the test.
const LEASE_S: u64 = 3;
const PARTITIONS: u32 = 8;

fn nats_server() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join("nats-server");
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// The server binary, or `None` (with a message) to skip.
fn need_nats() -> Option<PathBuf> {
    match nats_server() {
        Some(p) => Some(p),
        None if std::env::var_os("LOVEBEAT_REQUIRE_NATS").is_some() => {
            panic!("nats-server is missing and LOVEBEAT_REQUIRE_NATS is set: apt-get install nats-server")
        }
        None => {
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server; ./test installs it)");
            None
        }
    }
}

/// NATS servers with JetStream, clustered when more than one.
struct Nats {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    urls: Vec<String>,
}

impl Nats {
    fn start(bin: &Path, n: usize) -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut children = Vec::new();
        for i in 0..n {
            let route_list: Vec<String> = routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: lbtest\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    routes[i],
                    route_list.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{}\"\njetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}",
                clients[i],
                dir.path().join(format!("js{i}")).display()
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).expect("nats config");
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
            children.push(
                Command::new(bin)
                    .arg("-c")
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("start nats-server"),
            );
        }
        let urls = clients
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let nats = Nats {
            dir,
            children,
            urls,
        };
        for p in &clients {
            wait_until(15, "nats-server listening", || {
                std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()
            });
        }
        if n > 1 {
            wait_until(20, "a JetStream metadata leader", || {
                nats.logs().contains("metadata leader")
            });
        }
        nats
    }

    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `[cluster]` section of a node named `node`.
    fn section(&self, node: &str, partitions: u32) -> String {
        self.section_with_lease(node, partitions, LEASE_S)
    }

    fn section_with_lease(&self, node: &str, partitions: u32, lease_s: u64) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "[cluster]\nnats = [{}]\nnode = \"{node}\"\npartitions = {partitions}\nlease = \"{lease_s}s\"\n",
            urls.join(", ")
        )
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// FNV-1a 64 of the name, modulo the partitions: the documented hash,
/// written again here so a change to the wire format fails this test.
fn partition_of(name: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions)) as u32
}

/// What a node's own engine holds: `/api/services?local=1` lists only
/// the services of the partitions it owns (and its own
/// `lovebeat.self.*`), where `/api/services` and `/api/services/<name>`
/// answer for every partition by asking the owners.
trait Held {
    fn held(&self, name: &str) -> Option<serde_json::Value>;
}

impl Held for Daemon {
    fn held(&self, name: &str) -> Option<serde_json::Value> {
        // A list answer gives its place back just after its last bytes:
        // a list asked at once may find the place still held (503).
        let mut r = self.get("/api/services?local=1");
        for _ in 0..50 {
            if r.status != 503 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            r = self.get("/api/services?local=1");
        }
        if r.status != 200 {
            return None;
        }
        r.json()["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }
}

fn owned(d: &Daemon) -> u32 {
    d.metric("lovebeat_cluster_partitions_owned") as u32
}

/// The nodes that hold `name` now, with its state.
fn holders(nodes: &[&Daemon], name: &str) -> Vec<(usize, String)> {
    nodes
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            d.held(name)
                .map(|s| (i, s["state"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Three nodes share the partitions; beats sent to any node over UDP, TCP
/// or HTTP reach the owner's API. kill -9 of an owner: its partitions are
/// owned again within the handover bound; services that kept beating
/// through the other nodes never go ERROR; services that stopped are
/// reported, not before their deadline and at most the bound after it,
/// with the last beat they really sent (replayed with its own time).
#[test]
#[ignore = "quarantined: about one full run in three, a stopped service replayed at its new owner is never expired (a missed alarm on failover, open in issue 31 since the mass-expiry merge ac58820); run it with --ignored"]
fn a_killed_owner_is_replaced_with_no_false_and_no_missed_expiry() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 3);
    let mut nodes: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::start(&nats.section(n, PARTITIONS)))
        .collect();
    let per_node = PARTITIONS.div_ceil(3);
    wait_until(
        30,
        "every partition owned, at most its share by each node",
        || {
            let counts: Vec<u32> = nodes.iter().map(owned).collect();
            counts.iter().sum::<u32>() == PARTITIONS && counts.iter().all(|c| *c <= per_node)
        },
    );

    // Services in every partition: some keep beating, some will stop.
    let timeout_s = 6;
    let keep: Vec<String> = (0..16).map(|i| format!("keep.{i}")).collect();
    let stop: Vec<String> = (0..16).map(|i| format!("stop.{i}")).collect();
    let beat_all = |nodes: &[&Daemon], names: &[String], round: usize| {
        for (i, name) in names.iter().enumerate() {
            let d = nodes[(i + round) % nodes.len()];
            let lines = format!("{name}.timeout:{timeout_s}|g\n{name}.beat:1|c\n");
            if (i + round) % 3 == 0 {
                d.udp(&lines);
            } else if (i + round) % 3 == 1 {
                d.tcp(&lines);
            } else {
                let r = d.post(&format!("/api/services/{name}?timeout={timeout_s}"));
                assert_eq!(r.status, 200, "{name}: {}", r.body);
            }
        }
    };
    {
        let all: Vec<&Daemon> = nodes.iter().collect();
        let every: Vec<String> = keep.iter().chain(&stop).cloned().collect();
        beat_all(&all, &every, 0);
        wait_until(20, "every service at exactly one node, its owner", || {
            beat_all(&all, &every, 1);
            every.iter().all(|n| holders(&all, n).len() == 1)
        });
    }
    // Reads on every node: a service beaten through node 0 and owned by
    // node b is shown, with its state, by the third node c, which holds
    // nothing of it; and every node shows every service as its owner does.
    {
        let all: Vec<&Daemon> = nodes.iter().collect();
        let named: Vec<&String> = keep.iter().chain(&stop).collect();
        let owner_of_partition = |p: u32| {
            let n = named.iter().find(|n| partition_of(n, PARTITIONS) == p)?;
            holders(&all, n).first().map(|h| h.0)
        };
        let (name, b) = (0..200)
            .map(|i| format!("read.{i}"))
            .find_map(|n| {
                let o = owner_of_partition(partition_of(&n, PARTITIONS))?;
                (o != 0).then_some((n, o))
            })
            .expect("a partition that node 0 does not own");
        let c = (1..3).find(|i| *i != b).expect("a third node");
        // A timeout of 0 puts it in ERROR at once.
        let r = nodes[0].post(&format!("/api/services/{name}?timeout=0"));
        assert_eq!(r.status, 200, "{}", r.body);
        wait_until(15, "the third node shows it in ERROR", || {
            nodes[c]
                .service(&name)
                .is_some_and(|s| s["state"] == "error")
        });
        assert!(nodes[c].held(&name).is_none(), "node {c} does not own it");
        let at_owner = nodes[b].held(&name).expect("held by its owner");
        let elsewhere = nodes[c].service(&name).expect("read through the owner");
        assert_eq!(elsewhere["last_beat"], at_owner["last_beat"]);
        assert_eq!(elsewhere["name"], name.as_str());
        let r = nodes[c].get("/api/services/no.such.service");
        assert_eq!(r.status, 404, "{}", r.body);
        // The whole list, on every node: each service once, as its owner
        // shows it, and every partition answered.
        for (i, d) in all.iter().enumerate() {
            let list = d.get("/api/services").json();
            assert!(list.get("unavailable_partitions").is_none(), "{list}");
            let listed = list["services"].as_array().expect("a list");
            for n in named.iter().map(|n| n.as_str()).chain([name.as_str()]) {
                let at_owner = holders(&all, n);
                let here: Vec<_> = listed.iter().filter(|s| s["name"] == n).collect();
                assert_eq!(here.len(), 1, "{n} listed {} times by node {i}", here.len());
                assert!(
                    at_owner
                        .iter()
                        .any(|(_, st)| here[0]["state"] == st.as_str()),
                    "{n} at node {i}: {} but {at_owner:?} at its owner",
                    here[0]
                );
            }
        }
        // /api/status counts every partition on every node: what it says
        // is what the node's whole list shows (its own lovebeat.self.*
        // included), and read.x is one of the ERRORs.
        let figure = |text: &str, key: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
                .unwrap_or(-1)
        };
        for (i, d) in all.iter().enumerate() {
            wait_until(10, "/api/status agrees with the list", || {
                let listed = d.get("/api/services").json();
                let states: Vec<&str> = listed["services"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s["state"].as_str()).collect())
                    .unwrap_or_default();
                let count = |st: &[&str]| states.iter().filter(|s| st.contains(s)).count() as i64;
                let r = d.get("/api/status");
                assert_eq!(r.status, 200, "node {i}: {}", r.body);
                figure(&r.body, "num_error ") == count(&["error"])
                    && figure(&r.body, "num_ok ") == count(&["ok", "muted"])
                    && figure(&r.body, "num_error ") >= 1
            });
        }
        for n in &named {
            let at_owner = holders(&all, n);
            for (i, d) in all.iter().enumerate() {
                let s = d
                    .service(n)
                    .unwrap_or_else(|| panic!("{n} not shown by node {i}"));
                assert_eq!(s["name"], n.as_str());
                assert!(
                    at_owner.iter().any(|(_, st)| s["state"] == st.as_str()),
                    "{n} at node {i}: {s} but {at_owner:?} at its owner"
                );
            }
        }
    }
    // The victim owns both kinds.
    let all: Vec<&Daemon> = nodes.iter().collect();
    let owner_of = |name: &str| holders(&all, name).first().map(|h| h.0);
    let victim = (0..3)
        .find(|v| {
            keep.iter().any(|n| owner_of(n) == Some(*v))
                && stop.iter().any(|n| owner_of(n) == Some(*v))
        })
        .expect("a node owning services of both kinds");
    let moved_keep: Vec<String> = keep
        .iter()
        .filter(|n| owner_of(n) == Some(victim))
        .cloned()
        .collect();
    let moved_stop: Vec<String> = stop
        .iter()
        .filter(|n| owner_of(n) == Some(victim))
        .cloned()
        .collect();
    let moved_partitions: Vec<u32> = moved_keep
        .iter()
        .chain(&moved_stop)
        .map(|n| partition_of(n, PARTITIONS))
        .collect();
    drop(all);

    // The last beat of the stopped services, then a few more seconds of
    // beats for the others (and a snapshot or two), then kill -9.
    beat_all(&nodes.iter().collect::<Vec<_>>(), &stop, 2);
    let last_stop_beat = now_ms();
    let survivors_idx: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    for round in 0..6 {
        beat_all(&nodes.iter().collect::<Vec<_>>(), &keep, round);
        std::thread::sleep(Duration::from_millis(500));
    }
    let killed_at = Instant::now();
    let killed_ms = now_ms();
    nodes[victim].kill9();
    let survivors: Vec<&Daemon> = survivors_idx.iter().map(|i| &nodes[*i]).collect();

    // Handover bound: the lease, two polls (a quarter lease each: the
    // lease key and the presence key age out, then are seen), the replay;
    // plus slack for a loaded machine.
    let bound = Duration::from_millis(LEASE_S * 1000 * 3 / 2) + Duration::from_secs(4);
    let mut owned_again: Option<Duration> = None;
    let mut stop_error_at: std::collections::HashMap<String, i64> = Default::default();
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        round += 1;
        beat_all(&survivors, &keep, round);
        if owned_again.is_none() && survivors.iter().map(|d| owned(d)).sum::<u32>() == PARTITIONS {
            owned_again = Some(killed_at.elapsed());
        }
        for n in &keep {
            for (i, state) in holders(&survivors, n) {
                assert_eq!(
                    state,
                    "ok",
                    "{n} kept beating but is {state} at node {i} {:?} after the kill",
                    killed_at.elapsed()
                );
            }
        }
        for n in &moved_stop {
            if stop_error_at.contains_key(n) {
                continue;
            }
            if holders(&survivors, n).iter().any(|(_, s)| s == "error") {
                stop_error_at.insert(n.clone(), now_ms());
            }
        }
        if owned_again.is_some()
            && stop_error_at.len() == moved_stop.len()
            && killed_at.elapsed() > Duration::from_secs(9)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let owned_again = owned_again
        .unwrap_or_else(|| panic!("partitions {moved_partitions:?} not owned again within 30 s"));
    eprintln!(
        "handover: partitions {moved_partitions:?} owned again {owned_again:?} after the kill"
    );
    assert!(
        owned_again <= bound,
        "owned again after {owned_again:?}, over the bound {bound:?}"
    );
    for n in &moved_stop {
        let at = *stop_error_at
            .get(n)
            .unwrap_or_else(|| {
                let p = partition_of(n, PARTITIONS);
                let logs: Vec<String> = survivors
                    .iter()
                    .map(|d| {
                        d.stderr()
                            .lines()
                            .filter(|l| l.contains(&format!("partition {p}:")) || l.contains(n.as_str()) || l.contains("expiry") || l.contains("deadline") || l.contains("WARN"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .collect();
                panic!(
                    "{n} stopped beating but was never reported; held: {:?}; survivors' logs of partition {p}:\n{}",
                    holders(&survivors, n),
                    logs.join("\n----\n")
                )
            });
        let svc = survivors.iter().find_map(|d| d.held(n)).expect("held");
        let last = svc["last_beat"].as_i64().unwrap_or(0);
        assert!(
            (last_stop_beat - 3000..=last_stop_beat).contains(&last),
            "{n}: its last beat {last} is the one it sent (just before {last_stop_beat}), replayed"
        );
        // Its deadline, from the beat it really sent last.
        let deadline = last + timeout_s * 1000;
        eprintln!("{n}: reported {} ms after its deadline", at - deadline);
        assert!(
            at >= deadline,
            "{n} reported at {at}, before its deadline {deadline}"
        );
        assert!(
            at <= deadline.max(killed_ms) + bound.as_millis() as i64,
            "{n} reported {} ms after its deadline",
            at - deadline
        );
    }
    assert!(!moved_keep.is_empty());
    for n in &moved_keep {
        let h = holders(&survivors, n);
        assert_eq!(h.len(), 1, "{n} held by one survivor: {h:?}");
        assert_eq!(h[0].1, "ok");
    }
    drop(nats);
}

/// A node configured with another partition count than the cluster was
/// created with refuses to start, saying what the cluster's is.
#[test]
fn a_node_with_another_partition_count_refuses_to_start() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 1);
    let first = Daemon::start(&nats.section("a", 4));
    wait_until(20, "the first node owns every partition", || {
        owned(&first) == 4
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::base_config(free_port(), free_port(), &nats.section("b", 8)),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args(["--config", "lovebeat.cfg"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lovebeat");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a node with another partition count kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success());
    assert!(
        err.contains("partitions = 4") && err.contains("configured with 8"),
        "{err}\n{}",
        nats.logs()
    );
}

/// An owner paused (SIGSTOP) past its lease acts on nothing when it wakes:
/// its partitions were taken over meanwhile, and although its engine
/// still holds services whose last beat (as it knows it) is older than
/// their timeout, none of them goes ERROR there: its leases lapsed by its
/// own clock, so expiry waits and the services are let go. Services beat
/// through the other node all along, and no node ever reports an ERROR.
#[test]
fn a_paused_owner_acts_on_nothing_when_it_wakes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 1);
    let partitions = 4;
    let alarm = "[[alarms]]\nname = \"all\"\npattern = \"svc.*\"\n";
    let x = Daemon::start(&format!("{alarm}{}", nats.section("x", partitions)));
    let y = Daemon::start(&format!("{alarm}{}", nats.section("y", partitions)));
    wait_until(30, "two partitions each", || {
        owned(&x) == 2 && owned(&y) == 2
    });
    // A 2 s timeout: a pause of 4 s leaves the paused node's copy of
    // every service it owns past its deadline.
    let names: Vec<String> = (0..12).map(|i| format!("svc.{i}")).collect();
    let beat = |d: &Daemon| {
        let lines: String = names
            .iter()
            .map(|n| format!("{n}.timeout:2|g\n{n}.beat:1|c\n"))
            .collect();
        d.udp(&lines);
    };
    wait_until(20, "x owns some services", || {
        beat(&y);
        names.iter().any(|n| x.held(n).is_some())
    });
    for _ in 0..4 {
        beat(&y);
        std::thread::sleep(Duration::from_millis(250));
    }
    x.signal(libc::SIGSTOP);
    let paused = Instant::now();
    let mut y_took_over = false;
    while paused.elapsed() < Duration::from_secs(4) {
        beat(&y);
        y_took_over |= owned(&y) == partitions;
        std::thread::sleep(Duration::from_millis(250));
    }
    x.signal(libc::SIGCONT);
    let woke = Instant::now();
    while woke.elapsed() < Duration::from_secs(3) {
        beat(&y);
        for n in &names {
            if let Some(s) = x.held(n) {
                assert_eq!(
                    s["state"],
                    "ok",
                    "{n} at the woken node {:?} after waking",
                    woke.elapsed()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(20, "partitions shared again", || {
        beat(&y);
        owned(&x) + owned(&y) == partitions && owned(&x) >= 1
    });
    for _ in 0..4 {
        beat(&y);
        std::thread::sleep(Duration::from_millis(250));
    }
    for d in [&x, &y] {
        let log = d.stderr();
        assert!(!log.contains("to ERROR"), "a false alarm:\n{log}");
    }
    let _ = y_took_over;
}

/// A node cut from NATS keeps taking beats into its bounded buffer and
/// says so in /metrics and `lovebeat.self.cluster`; once the buffer is full, UDP lines are dropped
/// and counted and an HTTP beat is a 503 with Retry-After; when NATS is
/// back, what was buffered is published and reaches the owner.
#[test]
fn a_node_cut_from_nats_buffers_then_refuses_then_delivers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let mut nats = Nats::start(&bin, 1);
    let d = Daemon::start(&nats.section("a", 2));
    wait_until(30, "both partitions owned", || owned(&d) == 2);
    assert_eq!(d.post("/api/services/before?timeout=600").status, 200);
    wait_until(10, "the HTTP beat at the owner", || {
        d.held("before").is_some()
    });

    for c in &mut nats.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    d.udp("buffered.timeout:600|g\nbuffered.beat:1|c\n");
    wait_until(10, "the beat held in the buffer", || {
        d.metric("lovebeat_cluster_buffered_bytes") > 0.0
    });
    // Fill the buffer (32 MiB) with distinct beats, 60 KB a datagram.
    let filler: String = (0..2500)
        .map(|i| format!("filler.{i:05}.beat:1|c\n"))
        .collect();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("lovebeat_cluster_commands_dropped_total") == 0.0 {
        assert!(Instant::now() < deadline, "the buffer never filled");
        for _ in 0..50 {
            let _ = sock.send_to(filler.as_bytes(), d.statsd_addr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = d.post("/api/services/refused");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    wait_until(10, "lovebeat.self.cluster in ERROR", || {
        d.held("lovebeat.self.cluster")
            .is_some_and(|s| s["state"] == "error")
    });

    // NATS back, on the same port and store: the buffer drains.
    let conf = nats.dir.path().join("n0.conf");
    let log = std::fs::File::create(nats.dir.path().join("n0-again.log")).expect("log");
    nats.children = vec![Command::new(&bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("restart nats-server")];
    wait_until(60, "the buffer drained", || {
        d.metric("lovebeat_cluster_buffered_bytes") == 0.0
    });
    wait_until(30, "the buffered beat at the owner", || {
        d.held("buffered").is_some_and(|s| s["state"] == "ok")
    });
    assert!(
        d.held("before").is_some(),
        "what was stored before is still there"
    );
    wait_until(10, "lovebeat.self.cluster OK again", || {
        d.held("lovebeat.self.cluster")
            .is_some_and(|s| s["state"] == "ok")
    });
}

/// A node that stops cleanly (SIGTERM) gives its partitions back,
/// snapshotted, and deletes its lease keys and presence: the other node
/// owns them within a poll or two, long before the 10 s lease would have
/// aged out, with every service it held and its last beat.
#[test]
fn a_node_that_stops_cleanly_hands_its_partitions_over_at_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 1);
    let lease_s = 10;
    let mut a = Daemon::start(&nats.section_with_lease("a", 4, lease_s));
    let b = Daemon::start(&nats.section_with_lease("b", 4, lease_s));
    wait_until(40, "two partitions each", || {
        owned(&a) == 2 && owned(&b) == 2
    });
    let names: Vec<String> = (0..12).map(|i| format!("leave.{i}")).collect();
    let lines: String = names
        .iter()
        .map(|n| format!("{n}.timeout:600|g\n{n}.beat:1|c\n"))
        .collect();
    a.udp(&lines);
    wait_until(20, "every service at its owner", || {
        names
            .iter()
            .all(|n| a.held(n).is_some() || b.held(n).is_some())
    });
    let at_a: Vec<(String, i64)> = names
        .iter()
        .filter_map(|n| Some((n.clone(), a.held(n)?["last_beat"].as_i64()?)))
        .collect();
    assert!(!at_a.is_empty(), "a owns some of them");
    let stopped = Instant::now();
    let status = a.stop();
    assert!(status.success(), "clean exit: {status:?}");
    wait_until(20, "b owns every partition", || owned(&b) == 4);
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "taken over after {took:?}: the lease ({lease_s} s) aged out instead of being given back"
    );
    for (n, last) in &at_a {
        let s = b
            .held(n)
            .unwrap_or_else(|| panic!("{n} lost in the handover"));
        assert_eq!(s["state"], "ok", "{n}");
        assert_eq!(s["last_beat"].as_i64(), Some(*last), "{n}");
    }
}

/// A snapshot that cannot be read does not leave its partition unowned:
/// the next owner says so and replays the whole stream instead, and every
/// service comes back with its last beat.
#[test]
fn an_unreadable_snapshot_is_replaced_by_a_replay_of_the_stream() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 1);
    let mut a = Daemon::start(&nats.section("a", 1));
    wait_until(20, "a owns the partition", || owned(&a) == 1);
    let names: Vec<String> = (0..5).map(|i| format!("snap.{i}")).collect();
    let lines: String = names
        .iter()
        .map(|n| format!("{n}.timeout:600|g\n{n}.beat:1|c\n"))
        .collect();
    a.udp(&lines);
    wait_until(10, "every service at a", || {
        names.iter().all(|n| a.held(n).is_some())
    });
    let last: Vec<i64> = names
        .iter()
        .map(|n| a.held(n).and_then(|s| s["last_beat"].as_i64()).unwrap_or(0))
        .collect();
    assert!(a.stop().success(), "clean stop, with a last snapshot");
    // The snapshot damaged, as a bug or a disk might.
    let url = nats.urls[0].clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let kv = js
            .get_key_value("lovebeat-snapshots")
            .await
            .expect("the snapshot bucket");
        assert!(
            kv.get("p.0").await.expect("read").is_some(),
            "a snapshot was written"
        );
        kv.put("p.0", "LBS1 not really".into())
            .await
            .expect("damage it");
    });
    let b = Daemon::start(&nats.section("b", 1));
    wait_until(20, "b owns the partition", || owned(&b) == 1);
    for (n, l) in names.iter().zip(&last) {
        let s = b
            .held(n)
            .unwrap_or_else(|| panic!("{n} lost: {}", b.stderr()));
        assert_eq!(s["last_beat"].as_i64(), Some(*l), "{n}");
        assert_eq!(s["state"], "ok", "{n}");
    }
    assert!(
        b.stderr().contains("snapshot cannot be read"),
        "{}",
        b.stderr()
    );
}

/// One of the three NATS servers dies: the streams and buckets are
/// replicated on three (R3), so beats sent through every node all along
/// keep reaching their owners, no service goes ERROR, and every
/// partition stays owned.
#[test]
fn one_of_three_nats_servers_dying_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let t0 = Instant::now();
    let mut nats = Nats::start(&bin, 3);
    let partitions = 4;
    let nodes: Vec<Daemon> = ["a", "b"]
        .iter()
        .map(|n| Daemon::start(&nats.section(n, partitions)))
        .collect();
    wait_until(30, "two partitions each", || {
        nodes.iter().all(|d| owned(d) == 2)
    });
    eprintln!("balanced after {:?}", t0.elapsed());
    let names: Vec<String> = (0..12).map(|i| format!("r3.{i}")).collect();
    let beat = |round: usize| {
        for (i, n) in names.iter().enumerate() {
            let d = &nodes[(i + round) % 2];
            if i % 2 == 0 {
                d.udp(&format!("{n}.timeout:10|g\n{n}.beat:1|c\n"));
            } else {
                // A 503 while NATS moves a stream's leader is the
                // documented answer: the sender tries again.
                let _ = d.post(&format!("/api/services/{n}?timeout=10"));
            }
        }
    };
    let all: Vec<&Daemon> = nodes.iter().collect();
    wait_until(20, "every service at its owner", || {
        beat(0);
        names.iter().all(|n| holders(&all, n).len() == 1)
    });
    eprintln!("services placed after {:?}", t0.elapsed());
    let mut victim = nats.children.remove(0);
    let _ = victim.kill();
    let _ = victim.wait();
    let killed_ms = now_ms();
    let killed = Instant::now();
    let mut round = 0;
    while killed.elapsed() < Duration::from_secs(8) {
        round += 1;
        beat(round);
        for n in &names {
            for (i, state) in holders(&all, n) {
                assert_eq!(
                    state,
                    "ok",
                    "{n} at node {i}, {:?} after a NATS server died",
                    killed.elapsed()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("watched until {:?}", t0.elapsed());
    let settled = |round: usize| {
        beat(round);
        nodes.iter().map(owned).sum::<u32>() == partitions
            && names.iter().all(|n| {
                let h = all.iter().filter_map(|d| d.held(n)).collect::<Vec<_>>();
                h.len() == 1
                    && h[0]["state"] == "ok"
                    && h[0]["last_beat"].as_i64().unwrap_or(0) > killed_ms
            })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !settled(round) {
        if Instant::now() > deadline {
            let owned: Vec<u32> = nodes.iter().map(owned).collect();
            let held: Vec<String> = names
                .iter()
                .map(|n| {
                    let h: Vec<String> = all
                        .iter()
                        .filter_map(|d| d.held(n))
                        .map(|s| format!("{} {}", s["state"], s["last_beat"]))
                        .collect();
                    format!("{n}: {h:?}")
                })
                .collect();
            panic!(
                "not settled 20 s after a NATS server died (killed at {killed_ms}): owned {owned:?}\n{}\n--- a:\n{}\n--- b:\n{}",
                held.join("\n"),
                nodes[0].stderr(),
                nodes[1].stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("all beaten since after {:?}", t0.elapsed());
}

/// The alerter among `nodes`: the live node whose log says it took the
/// role last.
fn alerter(nodes: &[Daemon], alive: &[usize]) -> Option<usize> {
    alive
        .iter()
        .copied()
        .filter(|i| nodes[*i].stderr().contains("alerter: taken"))
        .max_by_key(|i| nodes[*i].stderr().matches("alerter: taken").count())
}

/// `/api/alarms` without its `now`, as every node should answer it.
fn alarms_of(d: &Daemon) -> serde_json::Value {
    let r = d.get("/api/alarms");
    if r.status != 200 {
        return serde_json::Value::Null;
    }
    r.json()["alarms"].clone()
}

/// An alarm whose services live in partitions owned by different nodes
/// is ERROR while any of them is, and each change of it is sent once, by
/// the one alerter, with incident numbers that only grow; `/api/alarms`
/// says the same on every node. kill -9 of the alerter: the next change
/// is sent once by the new alerter, and no change already sent is sent
/// again. An alerter paused past its lease sends nothing when it wakes.
#[test]
fn one_alerter_sends_each_change_of_an_alarm_across_partitions_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bin) = need_nats() else { return };
    let nats = Nats::start(&bin, 3);
    let hook = common::receiver::Receiver::start(|_| Some(200));
    // A receiver that refuses, and one for lovebeat's own alarm: the
    // alerter's trouble is its node's own, alerted by that node.
    let bad = common::receiver::Receiver::start(|_| Some(400));
    let ops = common::receiver::Receiver::start(|_| Some(200));
    let extra = format!(
        "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"ops\"]\n[alerts.ops]\nwebhook = \"{}\"\n[flapping]\nenabled = false\n\
         [[alarms]]\nname = \"bad\"\npattern = \"bad.*\"\nalerts = [\"bad\"]\n[alerts.bad]\nwebhook = \"{}\"\n\
         [alerts.selfops]\nwebhook = \"{}\"\n[self_alarm]\nalerts = [\"selfops\"]\n",
        hook.url("/hook"),
        bad.url("/bad"),
        ops.url("/ops")
    );
    let mut nodes: Vec<Daemon> = ["a", "b", "c"]
        .iter()
        .map(|n| Daemon::start(&format!("{}{extra}", nats.section(n, PARTITIONS))))
        .collect();
    let per_node = PARTITIONS.div_ceil(3);
    wait_until(30, "every partition owned, balanced", || {
        let counts: Vec<u32> = nodes.iter().map(owned).collect();
        counts.iter().sum::<u32>() == PARTITIONS && counts.iter().all(|c| *c <= per_node)
    });
    // The alerter, or (a lovebeat without one) node 0: the webhooks below
    // then say what is wrong.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match alerter(&nodes, &[0, 1, 2]) {
            Some(a) => break a,
            None if Instant::now() > deadline => break 0,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // Services of the alarm in every partition, OK.
    let names: Vec<String> = (0..24).map(|i| format!("web.{i}")).collect();
    for n in &names {
        let r = nodes[0].post(&format!("/api/services/{n}?timeout=3600"));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let all: Vec<&Daemon> = nodes.iter().collect();
    wait_until(20, "every service at its owner", || {
        names.iter().all(|n| holders(&all, n).len() == 1)
    });
    let owner = |n: &String| holders(&all, n).first().map(|h| h.0);
    // y is owned by a node that is not the alerter, so it outlives the
    // kill; x by another node.
    let y = names
        .iter()
        .find(|n| owner(n).is_some_and(|o| o != first))
        .expect("a service the alerter does not own")
        .clone();
    let x = names
        .iter()
        .find(|n| owner(n).is_some_and(|o| Some(o) != owner(&y)))
        .expect("a service of another node")
        .clone();
    let keys = |hook: &common::receiver::Receiver| -> Vec<String> {
        hook.got()
            .iter()
            .filter_map(|r| r.headers.get("idempotency-key").cloned())
            .collect()
    };
    // Quiet for a while after the expected count: no other node sends.
    let settle = |nodes: &[Daemon], want: &[&str]| {
        let got = hook.wait_for(want.len(), 30);
        assert!(got.len() >= want.len(), "only {:?}", keys(&hook));
        std::thread::sleep(Duration::from_millis(1500));
        let logs: String = nodes
            .iter()
            .map(|d| {
                d.stderr()
                    .lines()
                    .filter(|l| l.contains("alert") || l.contains("alarm"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n----\n");
        assert_eq!(
            keys(&hook),
            want,
            "one webhook per change; the nodes' logs:\n{logs}"
        );
    };
    let fail = |d: &Daemon, n: &str| {
        let r = d.post(&format!("/api/services/{n}?timeout=0"));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let recover = |d: &Daemon, n: &str| {
        let r = d.post(&format!("/api/services/{n}?timeout=3600"));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let y_owner = owner(&y).expect("y's owner");
    let survivor = (0..3).find(|i| *i != first).expect("a node to write to");

    fail(&nodes[survivor], &x);
    settle(&nodes, &["lovebeat-web-1-error"]);
    fail(&nodes[survivor], &y);
    wait_until(15, "/api/alarms alike on every node, both failed", || {
        let a = alarms_of(&nodes[0]);
        let web = a
            .as_array()
            .and_then(|l| l.iter().find(|w| w["name"] == "web"))
            .cloned()
            .unwrap_or_default();
        let mut both = vec![x.clone(), y.clone()];
        both.sort();
        web["state"] == "error"
            && web["incident_nbr"] == 1
            && web["failed_services"] == serde_json::json!(both)
            && alarms_of(&nodes[1]) == a
            && alarms_of(&nodes[2]) == a
    });
    recover(&nodes[survivor], &x);
    recover(&nodes[survivor], &y);
    settle(&nodes, &["lovebeat-web-1-error", "lovebeat-web-1-ok"]);

    // kill -9 the alerter: another takes the role, loads the record and
    // sends the next change only.
    nodes[first].kill9();
    let alive: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    wait_until(30, "a new alerter", || alerter(&nodes, &alive).is_some());
    fail(&nodes[y_owner], &y);
    settle(
        &nodes,
        &[
            "lovebeat-web-1-error",
            "lovebeat-web-1-ok",
            "lovebeat-web-2-error",
        ],
    );
    wait_until(15, "/api/alarms alike on the live nodes", || {
        let a = alarms_of(&nodes[alive[0]]);
        a.as_array()
            .and_then(|l| l.iter().find(|w| w["name"] == "web"))
            .is_some_and(|w| w["incident_nbr"] == 2 && w["state"] == "error")
            && alarms_of(&nodes[alive[1]]) == a
    });
    // Pause the new alerter past its lease: the other node takes the role
    // and sends the next change once; the paused one, woken, sends
    // nothing (its lease lapsed by its own clock).
    let second = *alive
        .iter()
        .find(|i| nodes[**i].stderr().contains("alerter: taken"))
        .expect("the new alerter");
    let other = *alive.iter().find(|i| **i != second).expect("the other");
    nodes[second].signal(libc::SIGSTOP);
    wait_until(30, "the other node takes the alerter's role", || {
        nodes[other].stderr().contains("alerter: taken")
    });
    recover(&nodes[other], &y);
    let all_four = [
        "lovebeat-web-1-error",
        "lovebeat-web-1-ok",
        "lovebeat-web-2-error",
        "lovebeat-web-2-ok",
    ];
    settle(&nodes, &all_four);
    nodes[second].signal(libc::SIGCONT);
    settle(&nodes, &all_four);
    // The alerter's own trouble (a receiver that refuses) is alerted by
    // its node's own pipeline, which sends nothing of the partitions'.
    fail(&nodes[alive[0]], "bad.a");
    let got = ops.wait_for(1, 30);
    assert_eq!(got.len(), 1, "lovebeat.self alerted once");
    let b = got[0].json();
    assert_eq!(
        (b["name"].as_str(), b["to_state"].as_str()),
        (Some("lovebeat.self"), Some("error"))
    );
    assert_eq!(b["failed_services"][0], "lovebeat.self.alerts");
    assert!(bad.count() >= 1);
    drop(nats);
}
