//! Alerts and sinks (README, "Alerts" and "Watching lovebeat itself") delivered to real receivers on loopback:
//! an HTTP server for webhooks, Slack and Mailgun, aiosmtpd for mail, real
//! scripts, a UDP socket for statsd metrics, a second daemon for notify.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::smtp::{read_mails, smtp_server_refusing as smtp_server};
use common::Daemon;
use serde_json::json;

const ALARM: &str = "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"ops\"]\n";

#[test]
fn webhook_slack_and_mailgun_get_the_exact_payloads() {
    let rx = Receiver::start(|_| Some(200));
    // Slack and mail group: their recoveries go a group_interval after
    // the first messages, well inside the 10 s wait (the default 10 s
    // would race it).
    let d = Daemon::start(&format!(
        "{ALARM}[general]\npublic_url = \"http://lb.example.com\"\n[alerts.ops]\ngroup_interval = \"1s\"\nwebhook = \"{}\"\nslack_channel = \"#ops\"\nmail = \"a@example.com, b@example.com\"\n[slack]\nwebhook_url = \"{}\"\n[mailgun]\ndomain = \"mg.example.com\"\nfrom = \"lb@example.com\"\napi_key = \"key-123\"\napi_base = \"{}\"\n",
        rx.url("/hook"),
        rx.url("/slack"),
        rx.url("")
    ));
    d.post("/api/services/web.one?timeout=0");
    let got = rx.wait_for(3, 10);
    assert_eq!(got.len(), 3, "{got:?}");
    let hook = got.iter().find(|r| r.path == "/hook").expect("webhook");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.headers["content-type"], "application/json");
    assert_eq!(hook.headers["accept"], "application/json");
    assert_eq!(hook.headers["user-agent"], "Lovebeat");
    assert_eq!(hook.headers["x-lovebeat"], "1");
    // (alarm, incident, state): a receiver drops a delivery it already took.
    assert_eq!(hook.headers["idempotency-key"], "lovebeat-web-1-error");
    let b = hook.json();
    assert_eq!(b["name"], "web");
    assert_eq!(b["from_state"], "new");
    assert_eq!(b["to_state"], "error");
    assert_eq!(b["incident_number"], 1);
    assert_eq!(b["failed_services"], json!(["web.one"]));
    assert_eq!(b["url"], "http://lb.example.com/alarms/web");
    assert!(b["timestamp"].as_i64().expect("ms") > 1_600_000_000_000);

    let slack = got
        .iter()
        .find(|r| r.path == "/slack")
        .expect("slack")
        .json();
    assert_eq!(slack["username"], "Lovebeat");
    assert_eq!(slack["channel"], "#ops");
    let att = &slack["attachments"][0];
    assert_eq!(att["color"], "danger");
    assert_eq!(
        att["title"],
        "<http://lb.example.com/alarms/web|web> is in ERROR"
    );
    assert_eq!(att["text"], "Changed from NEW to ERROR.");
    assert_eq!(
        att["fields"][0],
        json!({"title": "Alarm", "value": "web", "short": true})
    );
    assert_eq!(
        att["fields"][1],
        json!({"title": "Incident Number", "value": "#1", "short": true})
    );
    assert_eq!(att["fields"][2]["title"], "Failed Service(s)");
    assert_eq!(att["fields"][2]["value"], "web.one");

    let mg = got
        .iter()
        .find(|r| r.path == "/v3/mg.example.com/messages")
        .expect("mailgun");
    assert_eq!(mg.method, "POST");
    // "api:key-123" in base64.
    assert_eq!(mg.headers["authorization"], "Basic YXBpOmtleS0xMjM=");
    let form = mg.form();
    assert_eq!(form["from"], "lb@example.com");
    assert_eq!(form["to"], "a@example.com, b@example.com");
    assert_eq!(form["subject"], "[LOVEBEAT] web-1");
    assert!(form["text"].contains("The status for alarm 'web' has changed from 'NEW' to 'ERROR'"));
    assert!(
        form["text"].contains("web.one")
            && form["text"].contains("http://lb.example.com/alarms/web")
    );

    // Recovery fires again; NEW->OK of another alarm does not.
    d.post("/api/services/web.one/mute");
    let got = rx.wait_for(6, 10);
    let hooks: Vec<_> = got.iter().filter(|r| r.path == "/hook").collect();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["from_state"], "error");
    assert_eq!(hooks[1].json()["to_state"], "ok");
    assert_eq!(hooks[1].headers["idempotency-key"], "lovebeat-web-1-ok");
    let slack2: Vec<_> = got.iter().filter(|r| r.path == "/slack").collect();
    assert_eq!(slack2[1].json()["attachments"][0]["color"], "good");
    assert_eq!(
        slack2[1].json()["attachments"][0]["title"],
        "<http://lb.example.com/alarms/web|web> has recovered"
    );
    d.post("/api/services/web.two");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 6, "NEW->OK sends nothing");
}

#[test]
fn failing_webhook_is_retried_until_it_succeeds() {
    let rx = Receiver::start(|n| Some(if n < 2 { 503 } else { 200 }));
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nwebhook = \"{}\"\n",
        rx.url("/hook")
    ));
    d.post("/api/services/web.x?timeout=0");
    let got = rx.wait_for(3, 15);
    assert_eq!(got.len(), 3);
    assert!(
        got[2].at - got[0].at >= Duration::from_millis(2500),
        "backoff 1 s then 2 s"
    );
    // A retry is the same delivery: the same key, for the receiver to
    // drop it if the first one did arrive.
    for r in &got {
        assert_eq!(r.headers["idempotency-key"], "lovebeat-web-1-error");
    }
    d.eventually("success counted", || {
        d.get("/metrics")
            .body
            .contains("lovebeat_alerts_sent_total 1\n")
    });
}

#[test]
fn mail_reaches_a_real_smtp_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path(), 0);
    let d = Daemon::start(&format!(
        "{ALARM}[general]\npublic_url = \"http://lb.example.com/\"\n[alerts.ops]\nmail = \"ops@example.com, oncall@example.com\"\n[mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"lovebeat@example.com\"\n"
    ));
    d.post("/api/services/web.db?timeout=0");
    let mails = read_mails(&out, 1, 10);
    drop(smtp);
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m["from"], "lovebeat@example.com");
    assert_eq!(m["to"], json!(["ops@example.com", "oncall@example.com"]));
    let data = m["data"].as_str().expect("data");
    assert!(data.contains("Subject: [LOVEBEAT] web-1"), "{data}");
    assert!(
        data.contains("The status for alarm 'web' has changed from 'NEW' to 'ERROR'"),
        "{data}"
    );
    assert!(
        data.contains("web.db") && data.contains("http://lb.example.com/alarms/web"),
        "{data}"
    );
}

#[test]
fn mail_goes_at_once_then_groups_the_changes_of_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path(), 0);
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"g-$n\"\npattern = \"g.$n\"\nalerts = [\"ops\"]\n[alerts.ops]\nmail = \"ops@example.com\"\ngroup_interval = \"2s\"\n[mail]\nserver = \"127.0.0.1:{port}\"\n"
    ));
    d.post("/api/services/g.first?timeout=0");
    let first = read_mails(&out, 1, 10);
    assert_eq!(first.len(), 1, "the first change goes at once");
    let sent_first = Instant::now();
    for name in ["g.second", "g.third", "g.fourth"] {
        d.post(&format!("/api/services/{name}?timeout=0"));
    }
    let mails = read_mails(&out, 2, 10);
    let grouped_after = sent_first.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let all = read_mails(&out, 3, 0);
    drop(smtp);
    assert_eq!(all.len(), 2, "three changes, one message: {all:?}");
    assert!(
        grouped_after >= Duration::from_millis(1500),
        "the group waits for the interval ({grouped_after:?})"
    );
    let one = first[0]["data"].as_str().expect("data");
    assert!(one.contains("Subject: [LOVEBEAT] g-first-1"), "{one}");
    let group = mails[1]["data"].as_str().expect("data");
    assert!(
        group.contains("Subject: [LOVEBEAT] 3 alarm changes"),
        "{group}"
    );
    for name in ["second", "third", "fourth"] {
        assert!(
            group.contains(&format!("'g-{name}' (incident 1): NEW -> ERROR")),
            "{group}"
        );
    }
    assert_eq!(d.metric("lovebeat_alerts_sent_total"), 2.0);
}

#[test]
fn smtp_server_refusing_two_connections_still_gets_the_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path(), 2);
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nmail = \"ops@example.com\"\n[mail]\nserver = \"127.0.0.1:{port}\"\n"
    ));
    d.post("/api/services/web.db?timeout=0");
    let mails = read_mails(&out, 1, 20);
    drop(smtp);
    assert_eq!(mails.len(), 1, "delivered on the third try");
    assert!(
        d.stderr()
            .contains("mail alert for alarm web (incident 1) failed"),
        "{}",
        d.stderr()
    );
}

#[test]
fn script_gets_the_alarm_in_its_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("env.txt");
    let script = dir.path().join("alert.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep ^LOVEBEAT_ > {}\necho hello from the script\n",
            env_file.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nscript = \"{}\"\n",
        script.display()
    ));
    d.post("/api/services/web.s?timeout=0");
    d.eventually("script ran", || {
        std::fs::read_to_string(&env_file).is_ok_and(|s| s.contains("INCIDENT"))
    });
    let env = std::fs::read_to_string(&env_file).expect("env");
    for line in [
        "LOVEBEAT_ALARM=web",
        "LOVEBEAT_STATE=ERROR",
        "LOVEBEAT_PREVIOUS_STATE=NEW",
        "LOVEBEAT_INCIDENT=1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
    d.eventually("output logged", || {
        d.stderr().contains("hello from the script")
    });
}

#[test]
fn a_nul_in_job_output_still_runs_the_script_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_file = dir.path().join("output.txt");
    let script = dir.path().join("alert.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s|%s\\n' \"$LOVEBEAT_STATE\" \"$LOVEBEAT_OUTPUT\" >> {}\n",
            out_file.display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nscript = \"{}\"\n",
        script.display()
    ));
    let r = d.request("POST", "/api/services/web.n/fail", &[], b"disk\0full");
    assert_eq!(r.status, 200);
    d.eventually("the script ran for the failure", || {
        std::fs::read_to_string(&out_file).is_ok_and(|s| s.contains("ERROR|"))
    });
    // The recovery and the next failure reach the script too: a spawn
    // that failed once would have failed for every alert of the alarm.
    d.post("/api/services/web.n");
    d.request("POST", "/api/services/web.n/fail", &[], b"again\0");
    d.eventually("three runs", || {
        std::fs::read_to_string(&out_file).is_ok_and(|s| s.lines().count() == 3)
    });
    let out = std::fs::read_to_string(&out_file).expect("output");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ERROR|disk\u{fffd}full", "{out}");
    assert_eq!(lines[1], "OK|", "{out}");
    assert_eq!(lines[2], "ERROR|again\u{fffd}", "{out}");
}

#[test]
fn slack_gets_job_output_escaped_and_no_log_holds_a_webhook_url() {
    // The webhook and Mailgun receivers answer 500 and Slack's the first
    // time, so each failure is logged; a notify peer and one webhook
    // refuse connections.
    let rx = Receiver::start(|_| Some(500));
    let ok = Receiver::start(|n| Some(if n == 0 { 500 } else { 200 }));
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nwebhook = \"{}\"\nslack_channel = \"#ops\"\nmail = \"a@example.com\"\n[slack]\nwebhook_url = \"{}\"\n[mailgun]\ndomain = \"mg.example.com\"\nfrom = \"lb@example.com\"\napi_key = \"SECRET-MG\"\napi_base = \"{}\"\n[[alarms]]\nname = \"gone\"\npattern = \"gone.*\"\nalerts = [\"dead\"]\n[alerts.dead]\nwebhook = \"http://user:SECRET-PW@127.0.0.1:9/hook/SECRET-DEAD?token=SECRET-Q\"\n[[notify]]\nlovebeat = \"http://u:SECRET-N@127.0.0.1:9/SECRET-NP\"\nkey = \"SECRET-NK\"\n",
        rx.url("/hook/SECRET-HOOK"),
        ok.url("/services/T0/B0/SECRET-SLACK"),
        rx.url(""),
    ));
    let r = d.request(
        "POST",
        "/api/services/web.j/fail",
        &[],
        b"<!channel> look & see <@U1>\n```\nbroken fence",
    );
    assert_eq!(r.status, 200);
    let slack = ok.wait_for(2, 10);
    let text = slack[1].json()["attachments"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.contains("&lt;!channel&gt; look &amp; see &lt;@U1&gt;"),
        "{text}"
    );
    assert_eq!(text.matches("```").count(), 2, "{text}");
    // A receiver answering 500 and one refusing connections: retried and
    // logged, naming the host only.
    d.post("/api/services/gone.x?timeout=0");
    rx.wait_for(2, 10);
    d.eventually("every failure logged", || {
        let log = d.stderr();
        log.contains("webhook alert for alarm gone")
            && log.contains("notify http://127.0.0.1:9/…")
            && log.contains(&format!("POST http://127.0.0.1:{}/…", rx.port))
            && log.contains(&format!("POST http://127.0.0.1:{}/…", ok.port))
            && log.contains(&format!("Mailgun http://127.0.0.1:{}/…", rx.port))
    });
    let log = d.stderr();
    assert!(!log.contains("SECRET"), "{log}");
}

#[test]
fn stuck_script_is_killed_and_does_not_delay_other_alarms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let script = dir.path().join("stuck.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho $$ > {}\nsleep 60\n", pid_file.display()),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"slow\"\npattern = \"slow.*\"\nalerts = [\"stuck\"]\n[[alarms]]\nname = \"fast\"\npattern = \"fast.*\"\nalerts = [\"hook\"]\n[alerts.stuck]\nscript = \"{}\"\n[alerts.hook]\nwebhook = \"{}\"\n",
        script.display(),
        rx.url("/hook")
    ));
    let start = Instant::now();
    d.post("/api/services/slow.job?timeout=0");
    d.eventually("script started", || pid_file.exists());
    d.post("/api/services/fast.job?timeout=0");
    let got = rx.wait_for(1, 5);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].at - start < Duration::from_secs(3),
        "the other alarm's webhook is not held up"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("number");
    std::thread::sleep(Duration::from_secs(11).saturating_sub(start.elapsed()));
    d.eventually("script killed", || {
        // SAFETY: signal 0 only checks whether the process exists.
        unsafe { libc::kill(pid, 0) != 0 }
    });
    assert!(d.stderr().contains("killed after 10 s"), "{}", d.stderr());
}

#[test]
fn hanging_webhook_does_not_slow_beats() {
    let rx = Receiver::start(|_| None);
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops]\nwebhook = \"{}\"\n",
        rx.url("/hang")
    ));
    d.post("/api/services/web.h?timeout=0");
    rx.wait_for(1, 5);
    let start = Instant::now();
    for i in 0..200 {
        d.udp(&format!("other.s{i}.beat:1|c"));
        d.post(&format!("/api/services/web.b{i}"));
    }
    d.eventually("all beats applied", || d.service("other.s199").is_some());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "beats took {:?}",
        start.elapsed()
    );
}

#[test]
fn event_log_has_the_entries_in_order_and_reopens_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.json");
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"all\"\npattern = \"*\"\n[eventlog]\npath = \"{}\"\nmode = 600\n",
        log.display()
    ));
    d.post("/api/services/ev.one?timeout=0");
    d.delete("/api/services/ev.one");
    d.delete("/api/alarms/all");
    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    d.eventually("7 entries", || read(&log).len() >= 7);
    let lines = read(&log);
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        vec![
            "service_added",
            "service_state_changed",
            "alarm_added",
            "alarm_state_changed",
            "service_removed",
            "alarm_state_changed",
            "alarm_removed",
        ]
    );
    assert_eq!(lines[5]["alarm_state_changed"]["current"], "ok");
    let changed = &lines[1]["service_state_changed"];
    assert_eq!(
        (
            changed["name"].as_str(),
            changed["previous"].as_str(),
            changed["current"].as_str()
        ),
        (Some("ev.one"), Some("new"), Some("error"))
    );
    assert_eq!(lines[3]["alarm_state_changed"]["current"], "error");
    assert_eq!(lines[3]["alarm_state_changed"]["incident_nbr"], 1);
    assert!(lines[0]["ts"].as_i64().expect("ts") > 0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&log).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // logrotate: move the file away, SIGHUP, and the next event goes to a new file.
    let rotated = dir.path().join("events.json.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    d.post("/api/services/ev.two");
    d.eventually("new file", || {
        read(&log).iter().any(|l| l["type"] == "service_added")
    });
}

#[test]
fn statsd_metrics_reach_a_udp_socket() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let d = Daemon::start(&format!(
        "[metrics]\nserver = \"127.0.0.1:{port}\"\nprefix = \"lovebeat\"\n"
    ));
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).expect("started");
    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    d.post("/api/services/metric.svc?timeout=0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen
        .iter()
        .any(|m| m == "lovebeat.service.state.metric.svc:2|g")
        && Instant::now() < deadline
    {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert_eq!(seen[0], "lovebeat.started.count:1|c");
    assert!(
        seen.iter()
            .any(|m| m == "lovebeat.service.state.metric.svc:2|g"),
        "{seen:?}"
    );
}

#[test]
fn notify_beats_save_on_a_peer_lovebeat() {
    let peer = Daemon::start("");
    let _d = Daemon::start_with_interval(
        &format!(
            "[[notify]]\nlovebeat = \"http://127.0.0.1:{}\"\n",
            peer.http
        ),
        1,
    );
    let find = |suffix: &str| {
        peer.get("/api/services").json()["services"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|s| {
                        s["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("lovebeat.") && n.ends_with(suffix))
                    })
                    .cloned()
            })
    };
    peer.eventually("save beat", || find(".save").is_some());
    assert_eq!(find(".save").expect("save")["timeout"], -2);
    // The engine's driver and the alert dispatcher each report at start.
    for part in [".monitor", ".alerter"] {
        let beat = find(part).unwrap_or_else(|| panic!("{part} beat at start"));
        assert_eq!(beat["timeout"], -2);
    }
}
