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

/// What the client prints on failure reaches cron's mail: a password or
/// key in `--server` (or `--key`) must not be in it, whether the server
/// is unreachable or refuses.
#[test]
fn client_errors_name_neither_the_password_nor_the_key_of_the_server_url() {
    let secrets = ["urlUser1", "Pa55word", "Qkey7secret", "Bearer9key"];
    let check = |args: &[&str], what: &str| {
        let out = lovebeat(args, None);
        assert_ne!(out.status.code(), Some(0), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("lovebeat: "), "{what}: {err}");
        for s in secrets {
            assert!(!err.contains(s), "{what} printed {s}: {err}");
        }
    };
    let unreachable = format!(
        "http://urlUser1:Pa55word@127.0.0.1:{}/?key=Qkey7secret",
        common::free_port()
    );
    let d = Daemon::start_keyed("");
    let refusing = format!(
        "http://urlUser1:Pa55word@127.0.0.1:{}/?key=Qkey7secret",
        d.http
    );
    for server in [&unreachable, &refusing] {
        let key = ["--server", server.as_str(), "--key", "Bearer9key"];
        check(&[&["beat", "x"][..], &key].concat(), "beat");
        if server == &unreachable {
            // `/` answers even with read keys set (the UI's page).
            check(&[&["ping"][..], &key[..2]].concat(), "ping");
        }
        check(&[&["test-alert", "ops"][..], &key].concat(), "test-alert");
        check(&[&["run", "x"][..], &key, &["--", "false"]].concat(), "run");
    }
}

/// A password with an unescaped `#`, `/` or `?` is misread by the URL
/// parser as a host and port; and a server (or proxy) that echoes the
/// request echoes the password as `Authorization: Basic` carries it.
/// Neither reaches stderr.
#[test]
fn client_errors_name_no_part_of_a_misread_password_nor_its_basic_form() {
    let port = common::free_port();
    for server in [
        format!("http://admin:hunter2#x@127.0.0.1:{port}/"),
        format!("http://user:Pass/word@127.0.0.1:{port}/"),
        format!("http://admin:hun?ter2@127.0.0.1:{port}/"),
    ] {
        for args in [
            &["beat", "x", "--server", server.as_str()][..],
            &["ping", "--server", server.as_str()][..],
            &["test-alert", "ops", "--server", server.as_str()][..],
        ] {
            let out = lovebeat(args, None);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            for s in ["hunter2", "Pass", "word", "hun"] {
                assert!(!err.contains(s), "{args:?} printed {s}: {err}");
            }
        }
    }
    // A server that answers 400 with the request it read as its error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let body = serde_json::json!({"error": String::from_utf8_lossy(&got)}).to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let server = format!("http://urlUser1:Pa55word@127.0.0.1:{echo}/");
    let out = lovebeat(&["beat", "x", "--server", &server], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("authorization: basic"), "{err}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("urlUser1:Pa55word");
    assert!(
        !err.contains(&basic),
        "printed the Basic credentials: {err}"
    );
    assert!(!err.contains("Pa55word"), "{err}");
}

/// A key given as `?key=` in `--server` is sent: the API path goes
/// before the server's query, not into it.
#[test]
fn a_key_in_the_server_urls_query_is_sent() {
    let d = Daemon::start_keyed("");
    let server = format!("http://127.0.0.1:{}/?key=writer", d.http);
    let out = lovebeat(&["beat", "cl.x", "--server", &server], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lovebeat(
        &["beat", "cl.y", "--timeout", "5", "--server", &server],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = d.request(
        "GET",
        "/api/services/cl.y",
        &[("Authorization", "Bearer reader")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["service"]["timeout"], 5000, "{}", r.body);
    let r = d.request(
        "GET",
        "/api/services/cl.x",
        &[("Authorization", "Bearer reader")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
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
    let ok = d.service("job.ok").expect("job.ok reported");
    assert_eq!(ok["state"], "ok");
    assert_eq!(ok["running"], false, "exit/0 ends the run: {ok}");
    assert_eq!(ok["run_history"].as_array().map(Vec::len), Some(1), "{ok}");
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
    // README, "Cron jobs and scripts": the failure is reported with its exit code and output tail.
    let failed = d.service("job.fail").expect("job.fail reported");
    assert_eq!(failed["state"], "error");
    assert_eq!(failed["last_beat"], -1, "a failed command sends no beat");
    assert_eq!(failed["last_failure"]["exit_code"], 3);
    assert_eq!(failed["last_failure"]["output"], "partial\n");
}

#[test]
fn run_of_a_failing_command_delivers_its_output_tail() {
    let d = Daemon::start("");
    let server = format!("http://127.0.0.1:{}", d.http);
    // 30 000 bytes of output: only the last 10 KiB are kept.
    let out = lovebeat(
        &[
            "run", "job.big", "--server", &server, "--", "sh", "-c",
            "i=0; while [ $i -lt 1000 ]; do printf 'line %05d of output.........\\n' $i; i=$((i+1)); done; sleep 0.3; echo LAST >&2; exit 2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        out.stdout.len(),
        30_000,
        "the terminal still gets all of it"
    );
    let f = d.service("job.big").expect("reported")["last_failure"].clone();
    assert_eq!(f["exit_code"], 2);
    let output = f["output"].as_str().expect("output");
    assert_eq!(output.len(), 10 * 1024);
    // stdout and stderr are two pipes, combined in the order they arrive:
    // the pause lets stdout drain before the last line goes to stderr.
    assert!(output.contains("LAST\n"), "{output}");
    assert!(output.contains("line 00999 of output"));
    assert!(!output.contains("line 00000 "));
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
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("could not report the start"), "{err}");
    assert!(err.contains("could not report the exit status"), "{err}");
}

#[test]
fn beat_and_run_set_schedules_and_max_runtime() {
    let d = Daemon::start("");
    let server = format!("http://127.0.0.1:{}", d.http);
    let out = lovebeat(
        &[
            "beat",
            "nightly",
            "--server",
            &server,
            "--schedule",
            "0 3 * * *",
            "--tz",
            "Europe/Stockholm",
            "--grace",
            "10m",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = d.service("nightly").expect("beaten");
    assert_eq!(s["timeout"], -3);
    assert_eq!(s["schedule"], "0 3 * * *");
    assert_eq!(s["tz"], "Europe/Stockholm");
    assert_eq!(s["grace"], 600_000);
    let out = lovebeat(
        &[
            "run",
            "hourly",
            "--server",
            &server,
            "--schedule",
            "@hourly",
            "--max-runtime",
            "20m",
            "--",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let s = d.service("hourly").expect("reported");
    assert_eq!(s["schedule"], "@hourly");
    assert_eq!(s["max_runtime"], 1_200_000);
    assert_eq!(s["run_history"].as_array().map(Vec::len), Some(1));
    // A bad schedule is refused with the server's reason.
    let out = lovebeat(
        &[
            "beat",
            "bad",
            "--server",
            &server,
            "--schedule",
            "61 * * * *",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("61 * * * *"));
}

#[test]
fn each_client_subcommands_help_lists_only_its_own_flags() {
    // The daemon's flags stay the daemon's: a cron job's author reading
    // `lovebeat run --help` is not offered --syslog or --config-dir.
    for sub in ["run", "beat", "ping", "test-alert"] {
        let out = lovebeat(&[sub, "--help"], None);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{sub}: {help}");
        assert!(help.contains("--server"), "{sub}: {help}");
        for daemon_flag in ["--syslog", "--syslog-socket", "--config-dir", "--debug"] {
            assert!(
                !help.contains(daemon_flag),
                "{sub} lists {daemon_flag}: {help}"
            );
        }
    }
    // ping and test-alert set nothing about a service.
    let help = lovebeat(&["ping", "--help"], None);
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--timeout"));
    // The daemon's --help still lists its own flags, and check-config the
    // two that name the configuration.
    let out = lovebeat(&["--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--syslog",
        "--syslog-socket",
        "--config",
        "--config-dir",
        "--debug",
    ] {
        assert!(help.contains(flag), "lovebeat --help lacks {flag}: {help}");
    }
    let out = lovebeat(&["check-config", "--help"], None);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--config-dir") && !help.contains("--syslog"),
        "{help}"
    );
}
