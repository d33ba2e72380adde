//! `lovebeat beat` and `lovebeat run` against a live daemon.

mod common;

use std::process::Command;

use common::Daemon;

fn lovebeat(args: &[&str], url: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lovebeat"));
    cmd.args(args)
        .env_remove("LOVEBEAT_URL")
        .env_remove("LOVEBEAT_KEY");
    if let Some(u) = url {
        cmd.env("LOVEBEAT_URL", u);
    }
    cmd.output().expect("run lovebeat")
}

#[test]
fn beat_sends_one_beat_with_a_timeout() {
    let d = Daemon::start("");
    let server = format!("http://127.0.0.1:{}", d.http);
    let out = lovebeat(
        &[
            "beat",
            "cron.backup",
            "--timeout",
            "1h30m",
            "--server",
            &server,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = d.service("cron.backup").expect("created");
    assert_eq!(s["timeout"], 5_400_000);
    assert!(s["last_beat"].as_i64().expect("ms") > 0);
    // $LOVEBEAT_URL is used when --server is absent.
    let out = lovebeat(&["beat", "cron.env"], Some(&server));
    assert!(out.status.success());
    assert!(d.service("cron.env").is_some());
}

#[test]
fn ping_tells_whether_the_server_answers() {
    let d = Daemon::start("");
    let out = lovebeat(
        &["ping", "--server", &format!("http://127.0.0.1:{}", d.http)],
        None,
    );
    assert!(out.status.success());
    let out = lovebeat(
        &[
            "ping",
            "--server",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unreachable_server_is_a_clear_error() {
    let port = common::free_port();
    let out = lovebeat(
        &["beat", "x", "--server", &format!("http://127.0.0.1:{port}")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the lovebeat server"), "{err}");
}

#[test]
fn bad_name_is_reported_with_the_servers_reason() {
    let d = Daemon::start("");
    let out = lovebeat(
        &[
            "beat",
            "Bad",
            "--server",
            &format!("http://127.0.0.1:{}", d.http),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid service name"));
}

#[test]
fn run_beats_only_on_success_and_passes_output_and_status_through() {
    let d = Daemon::start("");
    let server = format!("http://127.0.0.1:{}", d.http);
    let out = lovebeat(
        &[
            "run",
            "job.ok",
            "--server",
            &server,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("err\n"));
    assert!(d.service("job.ok").is_some());
    let out = lovebeat(
        &[
            "run",
            "job.fail",
            "--server",
            &server,
            "--",
            "sh",
            "-c",
            "echo partial; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "partial\n");
    assert!(
        d.service("job.fail").is_none(),
        "a failed command sends no beat"
    );
}

#[test]
fn run_with_unreachable_server_still_returns_the_commands_status() {
    let port = common::free_port();
    let out = lovebeat(
        &[
            "run",
            "j",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("beat was not sent"));
}
