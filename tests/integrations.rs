//! The alerters for services people are paged and chatted on (README,
//! "Alerts"), each against a real HTTP server on loopback standing in for
//! the service. The expected requests are written from each service's
//! API documentation (cited at each test), not from lovebeat's output.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Received, Receiver};
use common::Daemon;
use serde_json::Value;

const ALARM: &str = "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"ops\"]\n";
const ROUTING_KEY: &str = "SECRETR0123456789abcdef012345678";

fn pagerduty(url: &str, extra: &str) -> String {
    format!(
        "{ALARM}[general]\npublic_url = \"http://lb.example.com\"\n[alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\nsource = \"ci-host\"\nurl = \"{url}\"\n{extra}"
    )
}

/// Checks a PagerDuty alert event as the Events API v2 documents it
/// (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/):
/// POST to /v2/enqueue, JSON, the routing key, the action, a dedup key of
/// at most 255 characters, and for a trigger the required payload fields
/// (summary of at most 1024 characters, source, a severity PagerDuty
/// knows) and a valid ISO 8601 timestamp.
fn pd_event(r: &Received, action: &str) -> Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v2/enqueue");
    assert_eq!(r.headers["content-type"], "application/json");
    let b = r.json();
    assert_eq!(b["routing_key"], ROUTING_KEY, "{b}");
    assert_eq!(b["event_action"], action, "{b}");
    let key = b["dedup_key"].as_str().expect("dedup_key");
    assert!(!key.is_empty() && key.len() <= 255, "{b}");
    if action == "trigger" {
        let p = &b["payload"];
        let summary = p["summary"].as_str().expect("summary");
        assert!(!summary.is_empty() && summary.chars().count() <= 1024);
        assert_eq!(p["source"], "ci-host");
        assert!(
            ["critical", "error", "warning", "info"]
                .contains(&p["severity"].as_str().unwrap_or("")),
            "{b}"
        );
        let ts = p["timestamp"].as_str().expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    b
}

#[test]
fn pagerduty_triggers_on_error_and_resolves_the_same_key_after_a_restart() {
    let rx = Receiver::start(|_| Some(202));
    let mut d = Daemon::start(&pagerduty(&rx.url("/v2/enqueue"), ""));
    let r = d.request("POST", "/api/services/web.job/exit/3", &[], b"disk full\n");
    assert_eq!(r.status, 200);
    let got = rx.wait_for(1, 10);
    assert_eq!(got.len(), 1, "{got:?}");
    let t = pd_event(&got[0], "trigger");
    let key = t["dedup_key"].as_str().expect("key").to_string();
    let p = &t["payload"];
    assert_eq!(p["severity"], "critical", "the default severity");
    assert!(p["summary"].as_str().unwrap_or("").contains("web"), "{t}");
    let details = &p["custom_details"];
    assert_eq!(details["failed_services"], serde_json::json!(["web.job"]));
    assert_eq!(details["failed_services_list"], "web.job");
    assert_eq!(details["failed_count"], 1);
    assert_eq!(details["job_output"], "disk full\n");
    assert_eq!(details["job_exit_code"], 3);
    assert_eq!(t["client_url"], "http://lb.example.com/alarms/web");
    assert_eq!(t["links"][0]["href"], "http://lb.example.com/alarms/web");

    // The incident that was paged before a restart is resolved after it,
    // under the same key; nothing is sent again by the restart itself.
    d.restart();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.count(), 1, "no resend");
    d.post("/api/services/web.job");
    let got = rx.wait_for(2, 10);
    assert_eq!(got.len(), 2, "{got:?}");
    let resolve = pd_event(&got[1], "resolve");
    assert_eq!(resolve["dedup_key"], key.as_str());

    // The next failure is a new incident: a new key.
    d.request("POST", "/api/services/web.job/fail", &[], b"");
    let got = rx.wait_for(3, 10);
    let again = pd_event(&got[2], "trigger");
    assert_ne!(again["dedup_key"], key.as_str());
}

#[test]
fn a_flapping_alarm_opens_one_pagerduty_incident_and_resolves_it() {
    let rx = Receiver::start(|_| Some(202));
    let d = Daemon::start(&pagerduty(
        &rx.url("/v2/enqueue"),
        "[flapping]\nwindow = \"3s\"\nstart = 6\nstop = 2\n",
    ));
    d.tcp(&"web.x.fail:1|c\nweb.x.beat:1|c\n".repeat(1000));
    d.eventually("it flaps", || {
        d.get("/api/alarms/web").json()["alarm"]["flapping"] == true
    });
    d.eventually("it settles", || {
        d.get("/api/alarms/web").json()["alarm"]
            .get("flapping")
            .is_none()
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = rx.got();
    let events: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["event_action"].as_str().unwrap_or("").to_string(),
                b["dedup_key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    // At most five changes go one by one before flapping is seen; then
    // one trigger and one resolve for the whole episode.
    assert!(events.len() <= 7, "{events:?}");
    let triggers = events.iter().filter(|e| e.0 == "trigger").count();
    assert!(triggers <= 4, "{events:?}");
    let flapping: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["payload"]["custom_details"]["flapping"] == true)
        .collect();
    assert_eq!(flapping.len(), 1, "one trigger says it flaps: {events:?}");
    let last = events.last().expect("events");
    assert_eq!(last.0, "resolve", "it settled OK: {events:?}");
    assert_eq!(
        flapping[0].json()["dedup_key"],
        last.1.as_str(),
        "the episode's resolve closes its trigger"
    );
    // Every incident opened is resolved: nothing is left paging.
    for (action, key) in &events {
        if action == "trigger" {
            let opened = events.iter().rposition(|e| &e.1 == key && e.0 == "trigger");
            let closed = events.iter().rposition(|e| &e.1 == key && e.0 == "resolve");
            assert!(closed > opened, "{key} left open: {events:?}");
        }
    }
}

#[test]
fn pagerduty_is_retried_on_429_and_500_as_retry_after_asks_and_keys_are_never_logged() {
    let rx = Receiver::start_with_headers(Duration::ZERO, |n| match n {
        0 => Some((429, "Retry-After: 3\r\n".to_string())),
        1 => Some((500, String::new())),
        _ => Some((202, String::new())),
    });
    let d = Daemon::start(&pagerduty(&rx.url("/v2/enqueue"), ""));
    d.post("/api/services/web.x?timeout=0");
    let got = rx.wait_for(3, 15);
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        pd_event(r, "trigger");
    }
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(2900),
        "Retry-After: 3 is honoured: {:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(1900),
        "backoff doubles: {:?}",
        got[2].at - got[1].at
    );
    d.eventually("the failures logged", || {
        let log = d.stderr();
        log.contains("pagerduty alert for alarm web") && log.contains("HTTP 429")
    });
    assert!(!d.stderr().contains("SECRET"), "{}", d.stderr());
    d.eventually("counted as sent, as a pagerduty message", || {
        d.metric("lovebeat_alerts_sent_total") == 1.0
            && d.metric("lovebeat_alert_messages_total{kind=\"pagerduty\",result=\"sent\"}") == 1.0
    });
}

#[test]
fn opsgenie_creates_an_alert_and_closes_it_by_its_alias() {
    let rx = Receiver::start(|_| Some(202));
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops.opsgenie]\napi_key = \"SECRET-GENIE\"\npriority = \"P1\"\ntags = [\"prod\"]\nurl = \"{}\"\n",
        rx.url("")
    ));
    d.request(
        "POST",
        "/api/services/web.job/exit/2",
        &[],
        b"no space left",
    );
    let got = rx.wait_for(1, 10);
    assert_eq!(got.len(), 1, "{got:?}");
    // https://docs.opsgenie.com/docs/alert-api, "Create Alert".
    let create = &got[0];
    assert_eq!(create.method, "POST");
    assert_eq!(create.path, "/v2/alerts");
    assert_eq!(create.headers["authorization"], "GenieKey SECRET-GENIE");
    assert_eq!(create.headers["content-type"], "application/json");
    let b = create.json();
    let message = b["message"].as_str().expect("message is mandatory");
    assert!(!message.is_empty() && message.chars().count() <= 130, "{b}");
    let alias = b["alias"].as_str().expect("alias").to_string();
    assert!(!alias.is_empty() && alias.len() <= 512);
    let description = b["description"].as_str().expect("description");
    assert!(description.chars().count() <= 15_000);
    assert!(description.contains("no space left"), "{description}");
    assert_eq!(b["priority"], "P1");
    assert_eq!(b["entity"], "web");
    let tags: Vec<&str> = b["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tags.contains(&"prod"), "{b}");
    // details is a map of strings.
    let details = b["details"].as_object().expect("details");
    assert!(details.values().all(Value::is_string), "{b}");
    assert_eq!(details["failed_services"], "web.job");

    d.post("/api/services/web.job");
    let got = rx.wait_for(2, 10);
    assert_eq!(got.len(), 2, "{got:?}");
    // "Close Alert": POST /v2/alerts/:identifier/close?identifierType=alias.
    let close = &got[1];
    assert_eq!(close.method, "POST");
    assert_eq!(
        close.path,
        format!("/v2/alerts/{alias}/close?identifierType=alias")
    );
    assert_eq!(close.headers["authorization"], "GenieKey SECRET-GENIE");
    assert!(close.json().is_object());
}

#[test]
fn a_hanging_pager_delays_no_other_alerter() {
    let hang = Receiver::start(|_| None);
    let rx = Receiver::start(|_| Some(202));
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops.pagerduty]\nrouting_key = \"k\"\nurl = \"{}\"\n[alerts.ops.opsgenie]\napi_key = \"k\"\nurl = \"{}\"\n",
        hang.url("/v2/enqueue"),
        rx.url("")
    ));
    let start = Instant::now();
    d.request("POST", "/api/services/web.a/fail", &[], b"");
    hang.wait_for(1, 5);
    d.post("/api/services/web.a");
    let got = rx.wait_for(2, 5);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "Opsgenie is not held up by PagerDuty: {:?}",
        start.elapsed()
    );
}

/// The README's recipes for the templated webhook (section "Templated
/// webhook"), with the receiver's address for the services'.
fn recipes(ntfy: &str, gotify: &str) -> String {
    format!(
        r#"[[alarms]]
name = "web"
pattern = "web.*"
alerts = ["ntfy", "gotify"]

[alerts.ntfy.templated_webhook]
url = "{ntfy}"
content_type = "text/plain"
body = "{{{{ message }}}}{{% if output %}}\n{{{{ output }}}}{{% endif %}}"
[alerts.ntfy.templated_webhook.headers]
Title = "{{{{ title }}}}"
Priority = "{{% if state == 'error' %}}urgent{{% else %}}default{{% endif %}}"
Tags = "{{% if state == 'error' %}}rotating_light{{% else %}}white_check_mark{{% endif %}}"
Click = "{{{{ url or '' }}}}"
Authorization = "Bearer tk_SECRETNTFY"

[alerts.gotify.templated_webhook]
url = "{gotify}"
body = '{{"title": {{{{ title }}}}, "message": {{{{ message }}}}, "priority": {{% if state == "error" %}}8{{% else %}}2{{% endif %}}}}'
headers = {{ X-Gotify-Key = "SECRETGOTIFY" }}
"#
    )
}

#[test]
fn templated_webhook_recipes_reach_ntfy_and_gotify_as_they_document_it() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&recipes(&rx.url("/lovebeat-alerts"), &rx.url("/message")));
    let output = "quote \" brace } backslash \\ <b>";
    d.request("POST", "/api/services/web.job/fail", &[], output.as_bytes());
    let got = rx.wait_for(2, 10);
    assert_eq!(got.len(), 2, "{got:?}");
    // ntfy (https://docs.ntfy.sh/publish/): POST to the topic's URL, the
    // message as the body, Title, Priority (1-5 or min, low, default,
    // high, max/urgent) and Tags (comma-separated) as headers, an access
    // token as a bearer.
    let ntfy = got
        .iter()
        .find(|r| r.path == "/lovebeat-alerts")
        .expect("ntfy");
    assert_eq!(ntfy.method, "POST");
    assert_eq!(ntfy.headers["content-type"], "text/plain");
    assert_eq!(ntfy.headers["title"], "web is in ERROR");
    assert_eq!(ntfy.headers["priority"], "urgent");
    assert_eq!(ntfy.headers["tags"], "rotating_light");
    assert_eq!(ntfy.headers["authorization"], "Bearer tk_SECRETNTFY");
    assert_eq!(ntfy.headers["idempotency-key"], "lovebeat-web-1-error");
    assert!(
        ntfy.body.contains("'web'") && ntfy.body.ends_with(output),
        "{}",
        ntfy.body
    );
    // Gotify (https://gotify.net/docs/pushmsg): POST /message with the
    // application token in X-Gotify-Key and a JSON body of title,
    // message and an integer priority.
    let gotify = got.iter().find(|r| r.path == "/message").expect("gotify");
    assert_eq!(gotify.method, "POST");
    assert_eq!(gotify.headers["x-gotify-key"], "SECRETGOTIFY");
    assert_eq!(gotify.headers["content-type"], "application/json");
    let b = gotify.json();
    assert_eq!(b["title"], "web is in ERROR");
    assert!(b["message"].as_str().expect("message").contains("'web'"));
    assert_eq!(b["priority"], 8);

    d.post("/api/services/web.job");
    let got = rx.wait_for(4, 10);
    assert_eq!(got.len(), 4, "{got:?}");
    let ntfy = got[2..]
        .iter()
        .find(|r| r.path == "/lovebeat-alerts")
        .expect("ntfy");
    assert_eq!(ntfy.headers["priority"], "default");
    assert_eq!(ntfy.headers["title"], "web has recovered");
    assert_eq!(ntfy.headers["idempotency-key"], "lovebeat-web-1-ok");
    let gotify = got[2..]
        .iter()
        .find(|r| r.path == "/message")
        .expect("gotify");
    assert_eq!(gotify.json()["priority"], 2);
    assert!(!d.stderr().contains("SECRET"), "{}", d.stderr());
}

#[test]
fn a_template_with_a_misspelt_field_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("lovebeat.cfg");
    std::fs::write(
        &cfg,
        "[alerts.ops.templated_webhook]\nurl = \"http://127.0.0.1:9/x\"\nbody = \"{{ alarm_name }}\"\n[alerts.ops.templated_webhook.headers]\nX-Token = \"SECRET-T\"\n",
    )
    .expect("write");
    let (status, out) = common::run_binary(
        dir.path(),
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--config-dir",
            "none",
            "check-config",
        ],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("templated_webhook") && out.contains("undefined"),
        "{out}"
    );
    assert!(!out.contains("SECRET"), "{out}");
}

#[test]
fn check_config_names_every_alerter_of_an_alert_and_none_of_its_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("lovebeat.cfg");
    std::fs::write(
        &cfg,
        r#"[alerts.ops]
webhook = "https://hooks.example.com/in/SECRET-WH-PATH"
[alerts.ops.pagerduty]
routing_key = "SECRET-PD-KEY"
[alerts.ops.telegram]
bot_token = "123:SECRET-TG-TOKEN"
chat_id = "-1001234"
[alerts.ops.templated_webhook]
url = "https://user:SECRET-TW-PW@tickets.example.com/api/SECRET-TW-PATH?key=SECRET-TW-QUERY"
body = "{{ message }}"
[alerts.ops.templated_webhook.headers]
Authorization = "Bearer SECRET-TW-HEADER"
[alerts.ops.pushover]
token = "SECRET-PO-TOKEN"
user = "SECRET-PO-USER"
"#,
    )
    .expect("write");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args([
            "--config",
            cfg.to_str().expect("utf-8"),
            "--config-dir",
            "none",
            "check-config",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("ops:"))
        .unwrap_or_else(|| panic!("no line for alert ops: {out}"));
    for named in [
        "webhook https://hooks.example.com/",
        "PagerDuty at https://events.pagerduty.com/",
        "Telegram chat -1001234",
        "templated webhook POST https://tickets.example.com/",
        "Pushover",
    ] {
        assert!(line.contains(named), "{named} missing from {line}");
    }
    assert!(!out.contains("SECRET"), "{out}");
}

/// Every chat and push alerter in one alert, each at its own path of one
/// receiver.
fn chats(rx: &Receiver) -> String {
    format!(
        r#"[general]
public_url = "http://lb.example.com"
[[alarms]]
name = "web"
pattern = "web.*"
alerts = ["chats"]
[[alarms]]
name = "db"
pattern = "db.*"
alerts = ["chats"]
[alerts.chats]
group_interval = "2s"
[alerts.chats.discord]
webhook_url = "{discord}"
[alerts.chats.teams]
webhook_url = "{teams}"
[alerts.chats.telegram]
bot_token = "123:SECRETTG"
chat_id = "-1001234"
url = "{base}"
[alerts.chats.ntfy]
url = "{base}"
topic = "ops-alerts"
token = "tk_SECRETNTFY"
[alerts.chats.pushover]
token = "SECRETPOAPP"
user = "SECRETPOUSER"
url = "{pushover}"
[alerts.chats.gotify]
url = "{base}/gotify"
token = "SECRETGOTIFY"
[alerts.chats.matrix]
homeserver = "{base}"
room_id = "!room:example.org"
access_token = "SECRETMATRIX"
"#,
        discord = rx.url("/api/webhooks/1/SECRETDISCORD"),
        teams = rx.url("/workflows/SECRETTEAMS?sig=SECRETSIG"),
        pushover = rx.url("/1/messages.json"),
        base = rx.url(""),
    )
}

fn find<'a>(got: &'a [Received], path: &str) -> &'a Received {
    got.iter()
        .find(|r| r.path.starts_with(path))
        .unwrap_or_else(|| panic!("no request to {path}: {got:?}"))
}

#[test]
fn chats_and_pushes_get_what_each_service_documents() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&chats(&rx));
    d.request(
        "POST",
        "/api/services/web.job/exit/4",
        &[],
        b"<b>@everyone</b> & ```",
    );
    let got = rx.wait_for(7, 10);
    assert_eq!(got.len(), 7, "{got:?}");

    // Discord, Execute Webhook
    // (https://discord.com/developers/docs/resources/webhook#execute-webhook).
    let r = find(&got, "/api/webhooks/1/SECRETDISCORD");
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers["content-type"], "application/json");
    let b = r.json();
    assert_eq!(b["allowed_mentions"]["parse"], serde_json::json!([]));
    let e = &b["embeds"][0];
    let title = e["title"].as_str().expect("title");
    assert!(title.contains("web") && title.chars().count() <= 256, "{e}");
    assert!(
        e["description"]
            .as_str()
            .expect("description")
            .chars()
            .count()
            <= 4096
    );
    assert!(e["color"].is_u64(), "an integer color: {e}");
    assert_eq!(e["url"], "http://lb.example.com/alarms/web");
    assert!(chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts")).is_ok());
    for f in e["fields"].as_array().expect("fields") {
        assert!(f["name"].is_string() && f["value"].is_string(), "{f}");
    }
    let red = e["color"].as_u64();

    // Teams, Adaptive Card through a Workflows webhook.
    let r = find(&got, "/workflows/SECRETTEAMS");
    assert_eq!(r.method, "POST");
    let b = r.json();
    assert_eq!(b["type"], "message");
    let att = &b["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(
        card["version"].is_string() && card["body"].is_array(),
        "{card}"
    );
    assert!(card["body"]
        .as_array()
        .expect("body")
        .iter()
        .all(|el| el["type"].is_string()));
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(
        card["actions"][0]["url"],
        "http://lb.example.com/alarms/web"
    );

    // Telegram, sendMessage (https://core.telegram.org/bots/api#sendmessage).
    let r = find(&got, "/bot123:SECRETTG/sendMessage");
    assert_eq!(r.method, "POST");
    let b = r.json();
    assert_eq!(b["chat_id"], "-1001234");
    assert_eq!(b["parse_mode"], "HTML");
    let text = b["text"].as_str().expect("text");
    assert!(text.chars().count() <= 4096);
    assert!(
        text.contains("&lt;b&gt;@everyone&lt;/b&gt; &amp;"),
        "{text}"
    );

    // ntfy, publish as JSON (https://docs.ntfy.sh/publish/#publish-as-json).
    let r = got
        .iter()
        .find(|r| r.path == "/" && r.json()["topic"] == "ops-alerts")
        .expect("ntfy");
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers["authorization"], "Bearer tk_SECRETNTFY");
    let b = r.json();
    assert_eq!(b["priority"], 5);
    assert!(b["title"].is_string() && b["message"].is_string());
    assert!(b["tags"].is_array());
    assert_eq!(b["click"], "http://lb.example.com/alarms/web");

    // Pushover (https://pushover.net/api), form-encoded.
    let r = find(&got, "/1/messages.json");
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let f = r.form();
    assert_eq!(
        (f["token"].as_str(), f["user"].as_str()),
        ("SECRETPOAPP", "SECRETPOUSER")
    );
    assert!(f["message"].chars().count() <= 1024 && f["title"].chars().count() <= 250);
    assert_eq!(f["priority"], "1");
    assert!(f["timestamp"].parse::<i64>().expect("unix seconds") > 1_600_000_000);
    assert_eq!(f["url"], "http://lb.example.com/alarms/web");

    // Gotify (https://gotify.net/docs/pushmsg).
    let r = find(&got, "/gotify/message");
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers["x-gotify-key"], "SECRETGOTIFY");
    let b = r.json();
    assert_eq!(b["priority"], 8);
    assert!(b["title"].is_string() && b["message"].is_string());

    // Matrix, PUT /rooms/{roomId}/send/m.room.message/{txnId}.
    let r = find(
        &got,
        "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/",
    );
    assert_eq!(r.method, "PUT");
    assert_eq!(r.headers["authorization"], "Bearer SECRETMATRIX");
    let b = r.json();
    assert_eq!(b["msgtype"], "m.text");
    assert!(b["body"].as_str().expect("body").contains("web"));
    assert_eq!(b["format"], "org.matrix.custom.html");
    let html = b["formatted_body"].as_str().expect("formatted_body");
    assert!(html.contains("&lt;b&gt;@everyone"), "{html}");

    // A chat groups: the recovery and another alarm's failure within
    // group_interval go together, each service once, green no more.
    d.post("/api/services/web.job");
    d.request("POST", "/api/services/db.job/fail", &[], b"");
    let got = rx.wait_for(14, 10);
    assert_eq!(got.len(), 14, "{got:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rx.count(), 14, "one message each");
    let e = &find(&got[7..], "/api/webhooks/1/").json()["embeds"][0];
    assert_eq!(e["title"], "2 alarm changes");
    assert_eq!(e["color"].as_u64(), red, "one ERROR makes the group red");
    let d_text = e["description"].as_str().unwrap_or_default();
    assert!(d_text.contains("web") && d_text.contains("db"), "{d_text}");
    assert!(!d.stderr().contains("SECRET"), "{}", d.stderr());
}

#[test]
fn a_retried_chat_message_keeps_its_matrix_transaction_and_no_secret_is_logged() {
    // Every first request fails with 500; every retry is answered.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let rx = Receiver::start(move |_| {
        let mut n = seen.lock().expect("lock");
        *n += 1;
        Some(if *n <= 7 { 500 } else { 200 })
    });
    let d = Daemon::start(&chats(&rx));
    d.request("POST", "/api/services/web.job/fail", &[], b"");
    let got = rx.wait_for(14, 15);
    assert_eq!(got.len(), 14, "{got:?}");
    let matrix: Vec<&Received> = got
        .iter()
        .filter(|r| r.path.starts_with("/_matrix/"))
        .collect();
    assert_eq!(matrix.len(), 2, "{got:?}");
    assert_eq!(
        matrix[0].path, matrix[1].path,
        "the retry is the same transaction, so Matrix posts it once"
    );
    d.eventually("each failure logged", || {
        let log = d.stderr();
        [
            "discord", "teams", "telegram", "ntfy", "pushover", "gotify", "matrix",
        ]
        .iter()
        .all(|k| log.contains(&format!("{k} alert for alarm web")))
    });
    d.eventually("each kind counted once in /metrics", || {
        [
            "discord", "teams", "telegram", "ntfy", "pushover", "gotify", "matrix",
        ]
        .iter()
        .all(|k| {
            d.metric(&format!(
                "lovebeat_alert_messages_total{{kind=\"{k}\",result=\"sent\"}}"
            )) == 1.0
        })
    });
    assert!(!d.stderr().contains("SECRET"), "{}", d.stderr());
}

#[test]
fn a_per_alert_slack_webhook_url_lets_mattermost_and_slack_coexist() {
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"slack\", \"mattermost\"]\n\
         [alerts.slack]\nslack_channel = \"#ops\"\n[slack]\nwebhook_url = \"{}\"\n\
         [alerts.mattermost]\nslack_webhook_url = \"{}\"\n",
        rx.url("/services/T0/B0/SECRETSLACK"),
        rx.url("/hooks/SECRETMM"),
    ));
    d.request("POST", "/api/services/web.job/fail", &[], b"");
    let got = rx.wait_for(2, 10);
    assert_eq!(got.len(), 2, "{got:?}");
    let slack = find(&got, "/services/T0/B0/SECRETSLACK").json();
    assert_eq!(slack["channel"], "#ops");
    // Mattermost's incoming webhooks take Slack's attachments
    // (https://developers.mattermost.com/integrate/webhooks/incoming/);
    // without a channel, the webhook's own is used.
    let mm = find(&got, "/hooks/SECRETMM").json();
    assert!(mm.get("channel").is_none(), "{mm}");
    assert_eq!(mm["attachments"][0]["color"], "danger");
    assert_eq!(mm["username"], "Lovebeat");
}

/// `POST /api/alerts/<alert>/test` with the write key of
/// [`Daemon::start_keyed`].
fn test_alert(d: &Daemon, alert: &str) -> common::Reply {
    d.request(
        "POST",
        &format!("/api/alerts/{alert}/test"),
        &[("Authorization", "Bearer writer")],
        b"",
    )
}

#[test]
fn a_pager_test_incident_is_closed_when_the_daemon_stops_right_after_the_test() {
    let rx = Receiver::start(|_| Some(202));
    let mut d = Daemon::start_keyed(&format!(
        "[alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\nsource = \"ci-host\"\nurl = \"{}\"\n",
        rx.url("/v2/enqueue")
    ));
    let r = test_alert(&d, "ops");
    assert_eq!(r.status, 200, "{}", r.body);
    // The close is due 3 s after the open: the stop waits for it.
    assert!(d.stop().success());
    let got = rx.got();
    assert_eq!(got.len(), 2, "{got:?}");
    let (open, close) = (pd_event(&got[0], "trigger"), pd_event(&got[1], "resolve"));
    assert_eq!(open["dedup_key"], close["dedup_key"]);
}

#[test]
fn a_test_alert_reaches_every_alerter_marked_and_reports_each_result() {
    let ok = Receiver::start(|_| Some(202));
    let bad = Receiver::start(|_| Some(500));
    let d = Daemon::start_keyed(&format!(
            "[alerts.ops]\nwebhook = \"{}\"\n[alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\nsource = \"ci-host\"\nurl = \"{}\"\n[alerts.ops.discord]\nwebhook_url = \"{}\"\n[alerts.good.discord]\nwebhook_url = \"{}\"\n",
            bad.url("/hook"),
            ok.url("/v2/enqueue"),
            ok.url("/api/webhooks/1/x"),
            ok.url("/api/webhooks/2/y"),
        ),
    );
    // A change needs a write key.
    assert_eq!(d.post("/api/alerts/ops/test").status, 401);
    let read = d.request(
        "POST",
        "/api/alerts/ops/test",
        &[("Authorization", "Bearer reader")],
        b"",
    );
    assert_eq!(read.status, 403);
    assert_eq!(test_alert(&d, "nope").status, 404);

    let r = test_alert(&d, "ops");
    assert_eq!(r.status, 200, "{}", r.body);
    let b = r.json();
    assert_eq!(b["delivered"], false, "{b}");
    let results = b["results"].as_array().expect("results");
    let by_kind = |k: &str| {
        results
            .iter()
            .find(|r| r["alerter"] == k)
            .unwrap_or_else(|| panic!("no {k}: {b}"))
            .clone()
    };
    assert_eq!(by_kind("pagerduty")["delivered"], true);
    assert_eq!(by_kind("discord")["delivered"], true);
    let hook = by_kind("webhook");
    assert_eq!(hook["delivered"], false);
    assert!(
        hook["error"].as_str().unwrap_or("").contains("HTTP 500"),
        "what the receiver answered: {hook}"
    );
    // Tried once, not retried: a test reports what the receiver says now.
    assert_eq!(bad.count(), 1);
    assert_eq!(bad.got()[0].json()["test"], true);

    // PagerDuty: the test's incident is opened, and closed 3 s later.
    let got = ok.wait_for(3, 10);
    let pd: Vec<Value> = got
        .iter()
        .filter(|r| r.path == "/v2/enqueue")
        .map(|r| r.json())
        .collect();
    assert_eq!(pd.len(), 2, "{pd:?}");
    assert_eq!(
        (
            pd[0]["event_action"].as_str(),
            pd[1]["event_action"].as_str()
        ),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert!(pd[0]["payload"]["summary"]
        .as_str()
        .unwrap_or("")
        .starts_with("[TEST]"));
    let discord = find(&got, "/api/webhooks/1/x").json();
    assert!(discord["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .starts_with("[TEST]"));

    // The command line: exit 1 while one alerter fails, 0 when all deliver.
    let server = format!("http://127.0.0.1:{}", d.http);
    let (status, err) = common::run_binary(
        d.path(),
        &["test-alert", "ops", "--server", &server, "--key", "writer"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    let (status, err) = common::run_binary(
        d.path(),
        &["test-alert", "good", "--server", &server, "--key", "writer"],
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let (status, err) = common::run_binary(
        d.path(),
        &["test-alert", "good", "--server", &server, "--key", "reader"],
    );
    assert_eq!(status.code(), Some(1), "a read key is refused: {err}");
    assert!(err.contains("403"), "{err}");
    // A name a URL path cannot carry is refused before any request.
    let (status, err) = common::run_binary(
        d.path(),
        &[
            "test-alert",
            "on call",
            "--server",
            &server,
            "--key",
            "writer",
        ],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("cannot be tested over HTTP"), "{err}");
}

#[test]
fn an_alarm_names_its_alerts_and_their_alerters_without_a_secret() {
    let d = Daemon::start_keyed(&format!(
        "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"ops\", \"chat\"]\n\
             [[alarms]]\nname = \"quiet\"\npattern = \"quiet.*\"\n\
             [alerts.ops]\nwebhook = \"http://127.0.0.1:9/SECRETHOOK\"\n\
             [alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\n\
             [alerts.chat.ntfy]\ntopic = \"SECRETTOPIC\"\n"
    ));
    let writer = [("Authorization", "Bearer writer")];
    let reader = [("Authorization", "Bearer reader")];
    d.request("POST", "/api/services/web.a", &writer, b"");
    d.request("POST", "/api/services/quiet.a", &writer, b"");
    // Read like every other part of the API: a key is needed.
    assert_eq!(d.get("/api/alarms/web/alerts").status, 401);
    let r = d.request("GET", "/api/alarms/web/alerts", &reader, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({
            "alarm": "web",
            "alerts": [
                {"name": "ops", "alerters": ["webhook", "pagerduty"]},
                {"name": "chat", "alerters": ["ntfy"]},
            ],
        })
    );
    assert!(!r.body.contains("SECRET"), "{}", r.body);
    let quiet = d.request("GET", "/api/alarms/quiet/alerts", &reader, b"");
    assert_eq!(
        quiet.json(),
        serde_json::json!({"alarm": "quiet", "alerts": []})
    );
    let none = d.request("GET", "/api/alarms/nope/alerts", &reader, b"");
    assert_eq!(none.status, 404, "{}", none.body);
    let post = d.request("POST", "/api/alarms/web/alerts", &writer, b"");
    assert_eq!(post.status, 405, "{}", post.body);
}

#[test]
fn alert_tests_under_way_at_once_are_bounded() {
    // A receiver that takes 3 s: two tests hold both places meanwhile.
    let slow = Receiver::start_with_delay(Duration::from_secs(3), |_| Some(200));
    let d = Daemon::start(&format!(
        "[alerts.ops]\nwebhook = \"{}\"\n",
        slow.url("/hook")
    ));
    let port = d.http;
    let test = move || common::http_request(port, "POST", "/api/alerts/ops/test", &[], b"").status;
    let first = std::thread::spawn(test);
    let second = std::thread::spawn(test);
    slow.wait_for(2, 5);
    let third = d.post("/api/alerts/ops/test");
    assert_eq!(third.status, 503, "{}", third.body);
    assert_eq!(third.header("retry-after"), Some("5"));
    assert_eq!(first.join().expect("first"), 200);
    assert_eq!(second.join().expect("second"), 200);
    // Places are given back: the next test is sent.
    assert_eq!(d.post("/api/alerts/ops/test").status, 200);
    assert_eq!(slow.count(), 3);
}

#[test]
fn telegram_waits_the_retry_after_its_429_body_names() {
    // The Bot API says how long to wait in the body, not a header
    // (https://core.telegram.org/bots/api#responseparameters).
    let rx = Receiver::start_with_answer(Duration::ZERO, |n| {
        match n {
        0 => Some((
            429,
            String::new(),
            r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 4","parameters":{"retry_after":4}}"#.into(),
        )),
        _ => Some((200, String::new(), r#"{"ok":true,"result":{}}"#.into())),
    }
    });
    let d = Daemon::start(&format!(
        "{ALARM}[alerts.ops.telegram]\nbot_token = \"123:SECRETTG\"\nchat_id = \"42\"\nurl = \"{}\"\n",
        rx.url("")
    ));
    d.post("/api/services/web.x?timeout=0");
    let got = rx.wait_for(2, 15);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(3900),
        "retry_after 4 is honoured: {:?}",
        got[1].at - got[0].at
    );
    d.eventually("the refusal logged with what Telegram said", || {
        d.stderr().contains("Too Many Requests: retry after 4")
    });
    assert!(!d.stderr().contains("SECRETTG"), "{}", d.stderr());
}

#[test]
fn a_restart_while_flapping_still_resolves_the_flapping_incident() {
    let rx = Receiver::start(|_| Some(202));
    // A window long enough that the alarm is still flapping at the stop.
    let mut d = Daemon::start(&pagerduty(
        &rx.url("/v2/enqueue"),
        "[flapping]\nwindow = \"60s\"\nstart = 6\nstop = 2\n",
    ));
    d.tcp(&"web.x.fail:1|c\nweb.x.beat:1|c\n".repeat(50));
    let flapping_key = || {
        rx.got()
            .iter()
            .map(|r| r.json())
            .find(|b| b["payload"]["custom_details"]["flapping"] == true)
            .map(|b| b["dedup_key"].as_str().unwrap_or("").to_string())
    };
    d.eventually("the flapping trigger", || flapping_key().is_some());
    let key = flapping_key().expect("key");
    // It began with the alarm OK (its sixth change was a recovery), and
    // ends OK; the restart forgets the flapping, not what was paged.
    d.eventually("it is OK", || {
        d.get("/api/alarms/web").json()["alarm"]["state"] == "ok"
    });
    d.restart();
    d.eventually("the flapping incident resolved after the restart", || {
        rx.got()
            .iter()
            .map(|r| r.json())
            .any(|b| b["event_action"] == "resolve" && b["dedup_key"] == key.as_str())
    });
}

#[test]
fn a_receiver_that_echoes_a_secret_or_redirects_is_reported_without_the_secret() {
    // A framework's 404 quotes the path it was asked for: the webhook's
    // token, and an answer that quotes the request's key.
    let echo = Receiver::start_with_answer(Duration::ZERO, |_| {
        Some((
            404,
            String::new(),
            "Cannot POST /api/webhooks/1/SECRETDISCORD (key SECRETR0123456789abcdef012345678)"
                .into(),
        ))
    });
    let moved = Receiver::start_with_headers(Duration::ZERO, |_| {
        Some((
            302,
            "Location: http://elsewhere.example/x?token=1\r\n".into(),
        ))
    });
    let d = Daemon::start(&format!(
        "[alerts.ops]\nwebhook = \"{}\"\n[alerts.ops.discord]\nwebhook_url = \"{}\"\n[alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\nurl = \"{}\"\n",
        moved.url("/hook"),
        echo.url("/api/webhooks/1/SECRETDISCORD"),
        echo.url("/v2/enqueue"),
    ));
    let r = d.post("/api/alerts/ops/test");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("SECRET"), "{}", r.body);
    let b = r.json();
    let results = b["results"].as_array().expect("results");
    for res in results {
        assert_eq!(res["delivered"], false, "{res}");
    }
    let error = |kind: &str| {
        results
            .iter()
            .find(|x| x["alerter"] == kind)
            .and_then(|x| x["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        error("discord").contains("HTTP 404 Not Found: Cannot POST /api/webhooks/1/…"),
        "{b}"
    );
    assert!(error("pagerduty").contains("(key …)"), "{b}");
    // The redirect is not followed: one POST, reported as what it is.
    assert!(
        error("webhook").contains(
            "HTTP 302 Found (redirects are not followed: it points to http://elsewhere.example/…)"
        ),
        "{b}"
    );
    let got = moved.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert!(!d.stderr().contains("SECRET"), "{}", d.stderr());
}

#[test]
fn a_pushover_emergency_is_cancelled_by_its_recovery() {
    // https://pushover.net/api/receipts#cancel_by_tag
    let rx = Receiver::start(|_| Some(200));
    let d = Daemon::start(&format!(
        // Pushover groups: the recovery goes a group_interval after the
        // emergency, well inside the wait (the default 10 s would race it).
        "{ALARM}[alerts.ops]\ngroup_interval = \"1s\"\n[alerts.ops.pushover]\ntoken = \"SECRETPOAPP\"\nuser = \"SECRETPOUSER\"\npriority_error = 2\nurl = \"{}\"\n",
        rx.url("/1/messages.json")
    ));
    d.post("/api/services/web.x?timeout=0");
    let got = rx.wait_for(1, 10);
    let first = got[0].form();
    assert_eq!(first["priority"], "2");
    assert_eq!(first["tags"], "lovebeat-web-1");
    d.post("/api/services/web.x?timeout=60");
    let got = rx.wait_for(3, 10);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1].path, "/1/messages.json");
    assert_eq!(got[1].form()["priority"], "0");
    assert_eq!(got[2].method, "POST");
    assert_eq!(got[2].path, "/1/receipts/cancel_by_tag/lovebeat-web-1.json");
    assert_eq!(got[2].form()["token"], "SECRETPOAPP");
}

#[test]
fn receivers_that_hang_leave_a_slot_for_every_other_receiver() {
    // Four pager-like receivers that never answer, served before one
    // that does, with 8 delivery slots: without a slot kept for it, the
    // hanging ones hold all 8 through a minute of retries.
    let hang = Receiver::start(|_| None);
    let good = Receiver::start(|_| Some(200));
    let h = hang.url("/h");
    let d = Daemon::start(&format!(
        "[limits]\nmax_alert_deliveries = 8\n\
         [[alarms]]\nname = \"web-$n\"\npattern = \"web.$n.*\"\nalerts = [\"a-hang\"]\n\
         [[alarms]]\nname = \"db\"\npattern = \"db.*\"\nalerts = [\"z-good\"]\n\
         [alerts.a-hang]\nwebhook = \"{h}\"\n\
         [alerts.a-hang.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\nurl = \"{h}\"\n\
         [alerts.a-hang.opsgenie]\napi_key = \"k\"\nurl = \"{h}\"\n\
         [alerts.a-hang.templated_webhook]\nurl = \"{h}\"\nbody = \"{{{{ name }}}}\"\ncontent_type = \"text/plain\"\n\
         [alerts.z-good]\nwebhook = \"{}\"\n",
        good.url("/good"),
    ));
    for n in ["a", "b", "c", "d"] {
        d.post(&format!("/api/services/web.{n}.x?timeout=0"));
    }
    // They take every slot they may: all but the one kept.
    let hung = hang.wait_for(7, 5).len();
    assert_eq!(hung, 7);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hang.count(), 7, "one slot kept");
    d.post("/api/services/db.x?timeout=0");
    let got = good.wait_for(1, 3);
    assert_eq!(got.len(), 1, "the answering receiver is not kept waiting");
}

#[test]
fn alerts_go_through_the_proxy_the_environment_names() {
    // The receiver plays the proxy: a plain-HTTP request reaches it with
    // the whole URL as its target, an HTTPS one as a CONNECT tunnel.
    let proxy = Receiver::start(|_| Some(200));
    let d = Daemon::start_with_env(
        &format!(
            "{ALARM}[alerts.ops]\nwebhook = \"http://hooks.example.invalid/hook\"\n\
             [alerts.ops.pagerduty]\nrouting_key = \"{ROUTING_KEY}\"\n"
        ),
        &[
            ("HTTP_PROXY", &proxy.url("")),
            ("HTTPS_PROXY", &proxy.url("")),
            ("NO_PROXY", ""),
        ],
    );
    d.post("/api/services/web.x?timeout=0");
    let got = proxy.wait_for(2, 10);
    let targets: Vec<(String, String)> = got
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert!(
        targets.contains(&("POST".into(), "http://hooks.example.invalid/hook".into())),
        "{targets:?}"
    );
    assert!(
        targets.contains(&("CONNECT".into(), "events.pagerduty.com:443".into())),
        "{targets:?}"
    );
}

#[test]
fn mattermost_gets_a_post_through_its_webhook_and_check_config_hides_its_key() {
    let rx = Receiver::start(|_| Some(200));
    let cfg = format!(
        "[general]\npublic_url = \"http://lb.example.com\"\n\
         [[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"mm\"]\n\
         [alerts.mm]\nmattermost = {{ webhook_url = \"{}\", channel = \"ops\", username = \"lb\" }}\n",
        rx.url("/hooks/xyzSECRETMM1"),
    );
    let d = Daemon::start(&cfg);
    d.request("POST", "/api/services/web.job/exit/4", &[], b"@channel out");
    let got = rx.wait_for(1, 10);
    assert_eq!(got.len(), 1, "{got:?}");
    let r = find(&got, "/hooks/xyzSECRETMM1");
    assert_eq!(r.method, "POST");
    assert_eq!(r.headers["content-type"], "application/json");
    let post = r.json();
    let text = post["text"].as_str().unwrap_or_default();
    assert!(text.contains("**web is in ERROR**"), "{text}");
    assert!(text.contains("Failed services: web.job"), "{text}");
    assert!(text.contains("```\n@channel out\n```"), "{text}");
    assert!(
        text.contains("(http://lb.example.com/alarms/web)"),
        "{text}"
    );
    assert_eq!(post["channel"], "ops");
    assert_eq!(post["username"], "lb");
    assert!(post.get("icon_url").is_none(), "{post}");

    // check-config names it by its host, never by its key.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lovebeat.cfg");
    std::fs::write(&file, &cfg).expect("write");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .args([
            "--config",
            file.to_str().expect("utf-8"),
            "--config-dir",
            "none",
            "check-config",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("mm:"))
        .unwrap_or_else(|| panic!("no line for alert mm: {out}"));
    assert!(
        line.contains("Mattermost webhook http://127.0.0.1:") && line.contains("to ops"),
        "{line}"
    );
    assert!(!out.contains("SECRETMM") && !out.contains("xyz"), "{out}");
}
