//! The S3 backup (README, "Configuration") against a real S3-compatible server (moto,
//! installed by ./test) on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_request, Daemon};

/// A moto S3 server, killed when the test ends.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = common::free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]')");
        let deadline = Instant::now() + Duration::from_secs(30);
        // Ready means it answers HTTP, not merely that a port accepts.
        while !common::answers_http(port) {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    fn create_bucket(&self, name: &str) {
        let r = http_request(self.port, "PUT", &format!("/{name}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An "S3 store" that accepts every connection and never says a word:
/// the connections are held open until the test ends.
fn silent_store() -> u16 {
    // A port from `free_port`, never one the kernel picks: that could be a
    // port a stopped daemon of this test will listen on again.
    let port = common::free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

fn s3_config(port: u16, bucket: &str) -> String {
    // These keys land in the [database] section of the base config.
    format!(
        "remote_s3_url = \"s3://{bucket}/backups/lovebeat.db\"\nremote_s3_region = \"us-east-1\"\nremote_s3_endpoint = \"http://127.0.0.1:{port}\"\n"
    )
}

fn set_credentials() {
    // Only this test binary runs S3 tests; the daemons inherit these.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

fn metric(d: &Daemon, name: &str) -> f64 {
    d.get("/metrics")
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

#[test]
fn backup_round_trip_through_s3() {
    set_credentials();
    let moto = Moto::start();
    moto.create_bucket("lovebeat-test");
    let mut d = Daemon::start_with_interval(&s3_config(moto.port, "lovebeat-test"), 1);
    assert!(d.stderr().contains("starting empty"), "{}", d.stderr());
    d.post("/api/services/backed.up?timeout=3600");
    d.post("/api/services/also.kept");
    d.eventually("an upload", || {
        metric(&d, "lovebeat_s3_uploads_total") >= 1.0
    });
    assert!(d.stop().success());
    std::fs::remove_file(d.path().join("lovebeat.db")).expect("local db");
    d.restart_stopped();
    assert!(
        d.stderr().contains("downloaded the database"),
        "{}",
        d.stderr()
    );
    assert_eq!(
        d.service("backed.up").expect("restored from S3")["timeout"],
        3_600_000
    );
    assert!(d.service("also.kept").is_some());

    // The store going away does not stop beats; failed uploads are counted.
    drop(moto);
    for i in 0..50 {
        d.udp(&format!("after.s{i}.beat:1|c"));
    }
    d.eventually("beats applied", || d.service("after.s49").is_some());
    d.eventually("a failed upload", || {
        metric(&d, "lovebeat_s3_upload_failures_total") >= 1.0
    });
    d.post("/api/services/still.working");
    assert!(d.service("still.working").is_some());
    d.eventually("the upload trouble reported", || {
        d.service("lovebeat.self.upload")
            .is_some_and(|s| s["state"] == "error")
    });
}

/// Rewrites the daemon's config (same ports) for its next start.
fn reconfigure(d: &Daemon, extra: &str) {
    std::fs::write(
        d.path().join("lovebeat.cfg"),
        common::config_with_interval(d.http, d.statsd, extra, 1),
    )
    .expect("cfg");
}

#[test]
fn a_local_file_saved_after_the_remote_copy_is_kept() {
    set_credentials();
    let moto = Moto::start();
    moto.create_bucket("newer-local");
    let s3 = s3_config(moto.port, "newer-local");
    let mut d = Daemon::start_with_interval(&s3, 1);
    d.post("/api/services/in.both");
    d.eventually("an upload", || {
        metric(&d, "lovebeat_s3_uploads_total") >= 1.0
    });
    assert!(d.stop().success());
    // A run without S3 saves a newer local file.
    reconfigure(&d, "");
    d.restart_stopped();
    d.post("/api/services/made.locally");
    assert!(d.stop().success());
    reconfigure(&d, &s3);
    d.restart_stopped();
    assert!(
        d.stderr().contains("was saved after the copy at s3://newer-local/backups/lovebeat.db: using the local file"),
        "{}",
        d.stderr()
    );
    assert!(d.service("made.locally").is_some());
    assert!(d.service("in.both").is_some());
}

#[test]
fn a_remote_copy_that_is_not_a_database_never_replaces_the_local_file() {
    set_credentials();
    let moto = Moto::start();
    moto.create_bucket("garbage");
    let mut d = Daemon::start_with_interval("", 1);
    d.post("/api/services/kept.here");
    assert!(d.stop().success());
    let r = http_request(
        moto.port,
        "PUT",
        "/garbage/backups/lovebeat.db",
        &[],
        b"this is not a database",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    reconfigure(&d, &s3_config(moto.port, "garbage"));
    d.restart_stopped();
    assert!(
        d.stderr().contains("is not a usable database"),
        "{}",
        d.stderr()
    );
    assert!(d.service("kept.here").is_some());
    assert!(d.stop().success());
    // The local file was read, not replaced; no download is left behind.
    let names: Vec<String> = std::fs::read_dir(d.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".download."))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// A copy poisoned with 400 M newlines gzipped (about 400 KB; the loader
/// once reserved a record per line, 38 GB, and aborted every start) is
/// treated as a failed download: the valid local file is used, loudly,
/// with `lovebeat.self.upload` in ERROR until an upload replaces the copy.
#[test]
fn a_poisoned_copy_with_a_valid_local_file_starts_from_the_local_file() {
    set_credentials();
    let moto = Moto::start();
    moto.create_bucket("poisoned");
    let mut d = Daemon::start_with_interval("", 3600);
    d.post("/api/services/kept.here");
    assert!(d.stop().success());
    // One member of a million newlines, repeated: the loader reads every
    // member of a gzip file, and this builds it in milliseconds.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&vec![b'\n'; 1_000_000]).expect("in memory");
    let bomb = e.finish().expect("in memory").repeat(400);
    let r = http_request(
        moto.port,
        "PUT",
        "/poisoned/backups/lovebeat.db",
        &[],
        &bomb,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    reconfigure(&d, &s3_config(moto.port, "poisoned"));
    d.restart_stopped();
    let stderr = d.stderr();
    assert!(
        stderr.contains("is not a usable database")
            && stderr.contains("cannot be read")
            && stderr.contains("started from the local lovebeat.db instead"),
        "{stderr}"
    );
    assert!(d.service("kept.here").is_some());
    let upload = d.service("lovebeat.self.upload").expect("upload trouble");
    assert_eq!(upload["state"], "error");
    assert!(
        upload["last_failure"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("s3://poisoned/backups/lovebeat.db"),
        "{upload}"
    );
}

/// Starts the binary with `extra` in a config of its own, in an empty
/// directory, and asserts that it refuses to start (exit 1): its stderr.
fn refused_start(extra: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, statsd) = (common::free_port(), common::free_port());
    std::fs::write(
        dir.path().join("lovebeat.cfg"),
        common::config_with_interval(http, statsd, extra, 60),
    )
    .expect("cfg");
    let (status, stderr) = common::run_binary(
        dir.path(),
        &["--config", "lovebeat.cfg", "--config-dir", "none"],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn a_missing_bucket_refuses_the_start() {
    set_credentials();
    let moto = Moto::start();
    let stderr = refused_start(&s3_config(moto.port, "no-such-bucket"));
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("s3://no-such-bucket/backups/lovebeat.db"),
        "{stderr}"
    );
}

#[test]
fn a_store_that_never_answers_does_not_hold_the_start_and_the_local_file_is_used() {
    set_credentials();
    let mut d = Daemon::start_with_interval("", 3600);
    d.post("/api/services/kept.here");
    assert!(d.stop().success());
    let silent = silent_store();
    reconfigure(&d, &silent_config(silent));
    let start = Instant::now();
    d.restart_stopped();
    // Each request: 1 s an attempt, 2 s with its retry.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "started after {:?}",
        start.elapsed()
    );
    assert!(
        d.stderr()
            .contains("started from the local lovebeat.db instead"),
        "{}",
        d.stderr()
    );
    assert!(d.service("kept.here").is_some());
    let upload = d.service("lovebeat.self.upload").expect("upload trouble");
    assert_eq!(upload["state"], "error");
    assert!(
        upload["last_failure"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("s3://silent/backups/lovebeat.db"),
        "{upload}"
    );
}

/// A store that takes its time: a proxy to `to` that holds each request
/// (the first bytes a client sends after a pause) for `delay` before
/// passing it on.
fn slow_proxy(to: u16, delay: Duration) -> u16 {
    let port = common::free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut from, mut onward) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut last = Instant::now() - delay;
                while let Ok(n) = from.read(&mut buf) {
                    // A new request: the first bytes after a pause.
                    if last.elapsed() > Duration::from_millis(200) {
                        std::thread::sleep(delay);
                    }
                    if n == 0 || onward.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    last = Instant::now();
                }
                let _ = onward.shutdown(Shutdown::Write);
            });
            let (mut back, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn uploads_slower_than_saves_stay_upload_trouble_while_the_store_is_behind() {
    set_credentials();
    let moto = Moto::start();
    moto.create_bucket("slow");
    // Every upload takes 3 s or more; saves come every second.
    let proxy = slow_proxy(moto.port, Duration::from_secs(3));
    let d = Daemon::start_with_interval(&s3_config(proxy, "slow"), 1);
    d.post("/api/services/kept.here");
    let in_error = || {
        d.service("lovebeat.self.upload")
            .is_some_and(|s| s["state"] == "error")
    };
    common::wait_until(20, "a skipped upload, reported", in_error);
    // Uploads go through every 4 s or so, but each finds a later save
    // skipped: the store stays behind, and so does the trouble.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        assert!(in_error(), "{:?}", d.service("lovebeat.self.upload"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.stderr()
            .contains("went through, but a later save's was skipped meanwhile"),
        "{}",
        d.stderr()
    );
}

/// The config of a daemon whose store is `silent_store`'s, with 1 s
/// timeouts.
fn silent_config(port: u16) -> String {
    format!("{}remote_s3_timeout = \"1s\"\n", s3_config(port, "silent"))
}

#[test]
fn a_silent_store_and_no_local_file_refuse_the_start_in_bounded_time() {
    set_credentials();
    let silent = silent_store();
    // run_binary fails the test if it still runs after 20 s.
    let stderr = refused_start(&silent_config(silent));
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("s3://silent/backups/lovebeat.db")
            && stderr.contains("no local lovebeat.db"),
        "{stderr}"
    );
}

#[test]
fn an_upload_still_running_at_the_next_save_is_upload_trouble() {
    set_credentials();
    let silent = silent_store();
    let mut d = Daemon::start_with_interval("", 1);
    d.post("/api/services/kept.here");
    assert!(d.stop().success());
    // Uploads to the silent store take 4 s (1 s and 1 s per MiB an
    // attempt, twice that in all) and saves come every second: a save
    // finds the upload before its own still running.
    reconfigure(&d, &silent_config(silent));
    d.restart_stopped();
    common::wait_until(15, "a skipped upload, warned about", || {
        d.stderr().lines().any(|l| {
            l.contains("WARN") && l.contains("is still running: this save's upload is skipped")
        })
    });
    common::wait_until(10, "the skip reported as upload trouble", || {
        d.service("lovebeat.self.upload").is_some_and(|s| {
            s["state"] == "error"
                && s["last_failure"]["output"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("this save's upload is skipped")
        })
    });
}
