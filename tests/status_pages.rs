//! Public status pages against the real binary (README, "Status pages"):
//! served without a key even when keys are set, showing display names
//! only, with bars and uptime from the history, the page's incidents
//! (made through the API, or opened by an alarm entry going ERROR), a
//! feed, badges, and answers a cache can keep.

mod common;

use common::smtp::{read_mails, smtp_server};
use common::{wait_until, Daemon};
use serde_json::Value;

/// An alarm whose name and whose service's name must never show, and a
/// page that shows it as "Website" (and one service as "Database").
const PAGE: &str = r#"
[[alarms]]
name = "hidden-alarm-name"
pattern = "secretsvc.*"

[[status_pages]]
slug = "public"
title = "Acme <status>"
description = "What works & what does not"
days = 30

[[status_pages.groups]]
title = "Frontend"
entries = [ { alarm = "hidden-alarm-name", display_name = "Website" } ]

[[status_pages.groups]]
title = "Backend"
entries = [ { service = "secretdb.main", display_name = "Database" } ]
"#;

const W: (&str, &str) = ("Authorization", "Bearer writer");
const R: (&str, &str) = ("Authorization", "Bearer reader");

fn keyed() -> Daemon {
    Daemon::start_keyed(PAGE)
}

fn post_json(d: &Daemon, path: &str, key: Option<(&str, &str)>, body: &Value) -> common::Reply {
    let body = body.to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(key);
    d.request("POST", path, &headers, body.as_bytes())
}

/// Makes the alarm's service fail with a job output that must not leak.
fn fail_the_alarm(d: &Daemon) {
    let w = [W];
    assert_eq!(
        d.request(
            "POST",
            "/api/services/secretsvc.primary?timeout=3600",
            &w,
            b""
        )
        .status,
        200
    );
    let r = d.request(
        "POST",
        "/api/services/secretsvc.primary/fail",
        &w,
        b"leaked-job-output",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn page_json(d: &Daemon) -> Value {
    let r = d.get("/status/public.json");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn a_status_page_needs_no_key_and_never_names_a_service() {
    let d = keyed();
    fail_the_alarm(&d);
    assert_eq!(d.get("/api/status").status, 401, "the API stays closed");
    wait_until(10, "the page shows the outage", || {
        d.get("/status/public").body.contains("Partial outage")
    });
    let r = d.get("/status/public");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = &r.body;
    // Complete without JavaScript, for a phone, escaped.
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains(r#"<meta name="viewport""#), "{html}");
    assert!(html.contains("Acme &lt;status&gt;"), "{html}");
    assert!(html.contains("What works &amp; what does not"), "{html}");
    assert!(html.contains("Website") && html.contains("Database"));
    assert!(html.contains(r#"class="state state-down">Down<"#), "{html}");
    assert_eq!(
        html.matches(r#"<span class="day "#).count(),
        60,
        "30 cells per entry"
    );
    assert!(html.contains("30 days "), "{html}");
    // Relative links only: it works under a proxy's path prefix.
    assert!(html.contains(r#"href="style.css""#), "{html}");
    assert!(!html.contains("href=\"/"), "{html}");
    for body in [
        html.clone(),
        d.get("/status/public.json").body,
        d.get("/status/public.rss").body,
    ] {
        for secret in [
            "secretsvc",
            "secretdb",
            "hidden-alarm-name",
            "leaked-job-output",
        ] {
            assert!(!body.contains(secret), "{secret} leaked: {body}");
        }
    }
    let css = d.get("/status/style.css");
    assert_eq!(css.status, 200);
    assert!(css.body.contains(".bar"));
    assert_eq!(d.get("/status/nothing").status, 404);
    assert_eq!(d.get("/status/nothing.json").status, 404);
}

#[test]
fn the_json_has_a_bar_of_days_and_uptime_per_entry() {
    let d = Daemon::start(PAGE);
    assert_eq!(
        d.post("/api/services/secretsvc.primary?timeout=3600")
            .status,
        200
    );
    let mut last = Value::Null;
    let known = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(30, "today's uptime is known", || {
            last = page_json(&d);
            last["groups"][0]["entries"][0]["days"][29]["uptime"] == 1.0
        })
    }));
    assert!(
        known.is_ok(),
        "today's uptime is not known: {last}\nlog: {}",
        d.stderr()
    );
    let p = page_json(&d);
    let r = d.get("/status/public.json");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "for widgets"
    );
    assert_eq!(
        d.get("/status/public")
            .header("access-control-allow-origin"),
        None
    );
    assert_eq!(p["slug"], "public");
    assert_eq!(p["title"], "Acme <status>");
    assert_eq!(p["days"], 30);
    assert_eq!(p["tz"], "UTC");
    assert_eq!(p["status"], "operational");
    assert_eq!(p["history"], true);
    assert_eq!(
        p["maintenance"],
        serde_json::json!({"ongoing": [], "upcoming": []})
    );
    assert_eq!(
        p["incidents"],
        serde_json::json!({"ongoing": [], "past": []})
    );
    let groups = p["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    let web = &groups[0]["entries"][0];
    assert_eq!(web["name"], "Website");
    assert_eq!(web["segment"], "website");
    assert_eq!(web["state"], "up");
    assert_eq!(web["uptime"]["30d"], 1.0);
    assert_eq!(web["uptime"]["90d"], 1.0);
    assert_eq!(web["uptime"]["365d"], 1.0);
    let days = web["days"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    assert_eq!(days[0]["uptime"], Value::Null, "before it existed");
    assert_eq!(days[29]["down_ms"], 0);
    assert!(days[29]["up_ms"].as_i64().expect("up_ms") > 0);
    let today = days[29]["date"].as_str().expect("date");
    // The HTML's cells say the same, coloured and in words.
    let html = d.get("/status/public").body;
    assert!(
        html.contains(&format!(
            r#"<span class="day l-full" title="{today}: 100% up">"#
        )),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="day l-none" title=""#),
        "{html}"
    );
    assert!(
        html.contains("30 days 100% · 90 days 100% · 365 days 100%"),
        "{html}"
    );
    let db = &groups[1]["entries"][0];
    assert_eq!(db["name"], "Database");
    assert_eq!(db["state"], "unknown", "never beaten");
    assert_eq!(db["uptime"]["30d"], Value::Null);
}

#[test]
fn a_page_is_cacheable_and_answers_304_to_its_etag() {
    let d = Daemon::start(PAGE);
    for path in [
        "/status/public",
        "/status/public.json",
        "/status/public.rss",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=5"),
            "{path}"
        );
        let etag = r.header("etag").expect("etag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        // Within the render's few seconds the content, and so the tag, holds.
        let again = d.request("GET", path, &[("If-None-Match", &etag)], b"");
        if again.status == 200 {
            // A new render came between: its tag answers 304 then.
            let etag = again.header("etag").expect("etag").to_string();
            let third = d.request("GET", path, &[("If-None-Match", &etag)], b"");
            assert_eq!(third.status, 304, "{path}");
        } else {
            assert_eq!(again.status, 304, "{path}");
            assert_eq!(again.body, "", "{path}");
            assert_eq!(again.header("etag"), Some(etag.as_str()));
        }
        let other = d.request("GET", path, &[("If-None-Match", "\"nope\"")], b"");
        assert_eq!(other.status, 200, "{path}");
    }
}

/// Checks `xml` is well-formed: every tag closed in order, one root.
fn well_formed(xml: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut texts = Vec::new();
    let mut roots = 0;
    for token in xmlparser::Tokenizer::from(xml) {
        match token.unwrap_or_else(|e| panic!("not XML ({e}): {xml}")) {
            xmlparser::Token::ElementStart { local, .. } => {
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(local.as_str().to_string());
            }
            xmlparser::Token::ElementEnd { end, .. } => match end {
                xmlparser::ElementEnd::Open => {}
                xmlparser::ElementEnd::Close(_, local) => {
                    assert_eq!(stack.pop().as_deref(), Some(local.as_str()), "{xml}");
                }
                xmlparser::ElementEnd::Empty => {
                    stack.pop();
                }
            },
            xmlparser::Token::Text { text } => {
                if let Some(top) = stack.last() {
                    texts.push((top.clone(), text.as_str().to_string()));
                }
            }
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}: {xml}");
    assert_eq!(roots, 1, "{xml}");
    texts
}

#[test]
fn the_feed_is_well_formed_rss_of_incidents_and_updates() {
    let d = keyed();
    let made = post_json(
        &d,
        "/api/status_pages/public/incidents",
        Some(W),
        &serde_json::json!({"title": "Slow <pages> & \"more\"", "text": "We look]]>\ninto it </description>"}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.json()["id"].as_i64().expect("id");
    let up = post_json(
        &d,
        &format!("/api/status_pages/public/incidents/{id}/updates"),
        Some(W),
        &serde_json::json!({"status": "resolved", "text": "Fixed."}),
    );
    assert_eq!(up.status, 201, "{}", up.body);
    let r = d.get("/status/public.rss");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/rss+xml; charset=utf-8")
    );
    let texts = well_formed(&r.body);
    let titles: Vec<&str> = texts
        .iter()
        .filter(|(t, _)| t == "title")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(titles[0], "Acme &lt;status&gt;", "{}", r.body);
    assert_eq!(r.body.matches("<item>").count(), 2, "{}", r.body);
    assert!(
        r.body
            .contains("Slow &lt;pages&gt; &amp; &quot;more&quot;: Resolved"),
        "{}",
        r.body
    );
    assert!(r.body.contains("<pubDate>"), "{}", r.body);
}

#[test]
fn badges_of_a_page_are_public_even_when_other_badges_are_not() {
    let d = Daemon::start_with_http(
        "read_keys = [\"reader\"]\nwrite_keys = [\"writer\"]\npublic_badges = false",
        &format!("{PAGE}\n[[alarms]]\nname = \"other\"\npattern = \"o.*\"\n"),
    );
    assert_eq!(d.get("/badge/other.svg").status, 401);
    let r = d.get("/status/public/badge.svg");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert!(r.body.contains("status: operational"), "{}", r.body);
    fail_the_alarm(&d);
    let r = d.get("/status/public/badge.svg");
    assert!(r.body.contains("status: degraded"), "{}", r.body);
    let r = d.get("/status/public/website/badge.svg");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Website: down"), "{}", r.body);
    assert!(!r.body.contains("hidden-alarm-name"));
    let r = d.get("/status/public/database/badge.svg?label=%3Cb%3E");
    assert!(r.body.contains("&lt;b&gt;: unknown"), "{}", r.body);
    assert_eq!(d.get("/status/public/nobody/badge.svg").status, 404);
    assert_eq!(d.get("/status/nothing/badge.svg").status, 404);
}

#[test]
fn page_incidents_are_made_with_the_write_key_and_read_with_the_read_key() {
    let d = keyed();
    let path = "/api/status_pages/public/incidents";
    let body = serde_json::json!({"title": "Login fails", "status": "identified", "text": "A bad deploy."});
    assert_eq!(post_json(&d, path, None, &body).status, 401);
    assert_eq!(post_json(&d, path, Some(R), &body).status, 403);
    assert_eq!(d.get(path).status, 401);
    let made = post_json(&d, path, Some(W), &body);
    assert_eq!(made.status, 201, "{}", made.body);
    let i = made.json();
    assert_eq!(i["title"], "Login fails");
    assert_eq!(i["status"], "identified");
    assert_eq!(i["automatic"], false);
    assert_eq!(i["resolved"], Value::Null);
    assert_eq!(i["updates"][0]["text"], "A bad deploy.");
    let id = i["id"].as_i64().expect("id");
    let list = d.request("GET", path, &[R], b"");
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.json()["page"], "public");
    assert_eq!(list.json()["incidents"][0]["id"], id);
    let html = d.get("/status/public").body;
    assert!(
        html.contains("Current incidents") && html.contains("Login fails"),
        "{html}"
    );

    let updates = format!("{path}/{id}/updates");
    let update = serde_json::json!({"status": "resolved", "text": "Rolled back.", "postmortem": "A missing test."});
    assert_eq!(post_json(&d, &updates, None, &update).status, 401);
    assert_eq!(post_json(&d, &updates, Some(R), &update).status, 403);
    let r = post_json(&d, &updates, Some(W), &update);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["status"], "resolved");
    assert!(r.json()["resolved"].is_i64());
    assert_eq!(r.json()["postmortem"], "A missing test.");
    let got = d.request("GET", &updates, &[R], b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["updates"].as_array().map(Vec::len), Some(2));
    let html = d.get("/status/public").body;
    assert!(!html.contains("Current incidents"), "{html}");
    assert!(
        html.contains("Rolled back.") && html.contains("Postmortem"),
        "{html}"
    );

    // What is refused, and why.
    for (bad, why) in [
        (
            serde_json::json!({"title": "x", "status": "fine", "text": "y"}),
            "invalid status",
        ),
        (
            serde_json::json!({"title": "", "text": "y"}),
            "title is empty",
        ),
        (
            serde_json::json!({"title": "a\u{1b}b", "text": "y"}),
            "control character",
        ),
        (
            serde_json::json!({"title": "x".repeat(201), "text": "y"}),
            "longer than 200",
        ),
        (
            serde_json::json!({"title": "x", "text": "y", "extra": 1}),
            "unknown field",
        ),
    ] {
        let r = post_json(&d, path, Some(W), &bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.contains(why), "{bad}: {}", r.body);
    }
    let r = post_json(
        &d,
        "/api/status_pages/public/incidents/999/updates",
        Some(W),
        &update,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post_json(
        &d,
        "/api/status_pages/public/incidents/x/updates",
        Some(W),
        &update,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        post_json(&d, "/api/status_pages/nope/incidents", Some(W), &body).status,
        404
    );
}

fn incidents(d: &Daemon) -> Vec<Value> {
    let r = d.request("GET", "/api/status_pages/public/incidents", &[R], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn an_alarm_entry_going_error_opens_a_page_incident_and_its_recovery_resolves_it() {
    let mut d = keyed();
    fail_the_alarm(&d);
    wait_until(10, "an incident opens", || incidents(&d).len() == 1);
    let i = &incidents(&d)[0];
    assert_eq!(i["title"], "Website");
    assert_eq!(i["automatic"], true);
    assert_eq!(i["resolved"], Value::Null);
    assert_eq!(i["updates"][0]["status"], "investigating");
    assert!(!i.to_string().contains("hidden-alarm-name"), "{i}");
    // Still ERROR across a restart: the same incident, not a second one.
    d.restart();
    assert_eq!(incidents(&d).len(), 1, "{:?}", incidents(&d));
    let beat = d.request("POST", "/api/services/secretsvc.primary", &[W], b"");
    assert_eq!(beat.status, 200, "{}", beat.body);
    wait_until(10, "the incident is resolved", || {
        incidents(&d)[0]["status"] == "resolved"
    });
    // One incident in all: none was opened again at the restart.
    assert_eq!(incidents(&d).len(), 1, "{:?}", incidents(&d));
    let i = &incidents(&d)[0];
    assert!(i["resolved"].is_i64(), "{i}");
    assert_eq!(i["updates"].as_array().map(Vec::len), Some(2), "{i}");
    wait_until(10, "the page shows it as past", || {
        let p = page_json(&d);
        p["incidents"]["past"][0]["title"] == "Website" && p["status"] == "operational"
    });
}

/// A mail's text with quoted-printable's soft breaks and `=3D` undone.
fn text_of(mail: &Value) -> String {
    mail["data"]
        .as_str()
        .expect("data")
        .replace("=\r\n", "")
        .replace("=3D", "=")
}

/// The token of the first `<what>?token=` link in `text`.
fn token_in(text: &str, what: &str) -> String {
    let link = format!("http://status.example.com/status/public/{what}?token=");
    let at = text
        .find(&link)
        .unwrap_or_else(|| panic!("no {link} in {text}"));
    text[at + link.len()..].chars().take(64).collect()
}

fn form(d: &Daemon, path: &str, body: &str) -> common::Reply {
    d.request(
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

#[test]
fn a_visitor_subscribes_confirms_gets_incident_mail_and_leaves_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_smtp, port, out) = smtp_server(dir.path());
    let d = Daemon::start_keyed(&format!(
        "[general]\npublic_url = \"http://status.example.com/\"\n{}\n\
         [alerts.subs]\nmail = \"ops@example.com\"\n\
         [mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"status@example.com\"\n",
        PAGE.replace("days = 30\n", "days = 30\nmail = \"subs\"\n")
    ));
    let html = d.get("/status/public").body;
    assert!(
        html.contains(r#"<form method="post" action="public/subscribe">"#),
        "{html}"
    );
    // No key, a form as the page sends it; asking twice mails once.
    let r = form(
        &d,
        "/status/public/subscribe",
        "email=Visitor%40Example.com",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.contains("Check your mail"), "{}", r.body);
    assert_eq!(
        form(
            &d,
            "/status/public/subscribe",
            "email=visitor%40example.com"
        )
        .status,
        202
    );
    let r = d.request(
        "POST",
        "/status/public/subscribe",
        &[("Content-Type", "application/json")],
        br#"{"email": "other@example.com"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let mut got = read_mails(&out, 2, 15);
    assert_eq!(got.len(), 2, "{got:?}");
    // Sent at once, in either order; a third (the second request) would
    // show among the incident's mails below.
    got.sort_by_key(|m| m["to"][0].as_str().map(str::to_string));
    assert_eq!(got[1]["to"], serde_json::json!(["visitor@example.com"]));
    assert_eq!(got[0]["to"], serde_json::json!(["other@example.com"]));
    got.swap(0, 1);
    let first = text_of(&got[0]);
    assert!(
        first.contains("Subject: Confirm your subscription to Acme <status>"),
        "{first}"
    );
    let visitor = token_in(&first, "confirm");
    let other = token_in(&text_of(&got[1]), "confirm");
    assert_eq!(visitor.len(), 64);
    assert_ne!(visitor, other);

    // The link opens a page whose button confirms; opening it does not.
    let r = d.get(&format!("/status/public/confirm?token={visitor}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(r#"<form method="post">"#) && r.body.contains("Confirm"),
        "{}",
        r.body
    );
    for t in [&visitor, &other] {
        let r = form(&d, "/status/public/confirm", &format!("token={t}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("Subscribed"), "{}", r.body);
    }
    let r = form(
        &d,
        "/status/public/confirm",
        &format!("token={}", "0".repeat(64)),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        form(&d, "/status/public/confirm", "token=short").status,
        404
    );

    // An incident is mailed to both, each with a link to leave.
    let made = post_json(
        &d,
        "/api/status_pages/public/incidents",
        Some(W),
        &serde_json::json!({"title": "Login fails", "text": "A bad deploy."}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.json()["id"].as_i64().expect("id");
    let got = read_mails(&out, 4, 15);
    assert_eq!(got.len(), 4, "{got:?}");
    let mut to: Vec<String> = got[2..]
        .iter()
        .map(|m| m["to"][0].as_str().unwrap_or("").to_string())
        .collect();
    to.sort();
    assert_eq!(to, ["other@example.com", "visitor@example.com"]);
    let to_visitor = got[2..]
        .iter()
        .find(|m| m["to"][0] == "visitor@example.com")
        .expect("mail");
    let text = text_of(to_visitor);
    assert!(
        text.contains("Subject: [Acme <status>] Login fails: investigating"),
        "{text}"
    );
    assert!(text.contains("A bad deploy."), "{text}");
    assert!(
        !text.contains("other@example.com"),
        "addresses are never shown: {text}"
    );
    let leave = token_in(&text, "unsubscribe");
    assert_eq!(leave, visitor);
    let r = form(&d, "/status/public/unsubscribe", &format!("token={leave}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Unsubscribed"), "{}", r.body);

    // The next update reaches only the one still subscribed.
    let r = post_json(
        &d,
        &format!("/api/status_pages/public/incidents/{id}/updates"),
        Some(W),
        &serde_json::json!({"status": "resolved", "text": "Rolled back."}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let got = read_mails(&out, 5, 15);
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[4]["to"], serde_json::json!(["other@example.com"]));
    assert!(text_of(&got[4]).contains("Login fails: resolved"));

    // Never an address on the page; bad input refused; a client is limited.
    for body in [
        d.get("/status/public").body,
        d.get("/status/public.json").body,
    ] {
        assert!(!body.contains("@example.com"), "{body}");
    }
    assert_eq!(
        form(&d, "/status/public/subscribe", "email=not-an-address").status,
        400
    );
    assert_eq!(
        form(&d, "/status/public/subscribe", "nothing=1").status,
        400
    );
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            form(
                &d,
                "/status/public/subscribe",
                "email=visitor%40example.com",
            )
            .status,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(*statuses.last().expect("last"), 429, "{statuses:?}");
}

#[test]
fn a_page_without_mail_takes_no_subscribers() {
    let d = keyed();
    assert!(!d.get("/status/public").body.contains("subscribe"));
    let r = form(&d, "/status/public/subscribe", "email=a%40example.com");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = form(&d, "/status/nothing/subscribe", "email=a%40example.com");
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn a_pages_webhooks_get_each_update_of_its_incidents_as_json() {
    let rx = common::receiver::Receiver::start(|_| Some(200));
    let d = Daemon::start_keyed(&PAGE.replace(
        "days = 30\n",
        &format!("days = 30\nwebhooks = [\"{}\"]\n", rx.url("/page-hook")),
    ));
    let made = post_json(
        &d,
        "/api/status_pages/public/incidents",
        Some(W),
        &serde_json::json!({"title": "Slow", "status": "identified", "text": "Disk full."}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    // The alarm entry's own incident goes out too.
    fail_the_alarm(&d);
    let got = rx.wait_for(2, 15);
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let first = got[0].json();
    assert_eq!(got[0].path, "/page-hook");
    assert_eq!(first["page"]["slug"], "public");
    assert_eq!(first["page"]["title"], "Acme <status>");
    assert_eq!(first["incident"]["title"], "Slow");
    assert_eq!(first["incident"]["status"], "identified");
    assert_eq!(first["incident"].get("updates"), None);
    assert_eq!(first["update"]["status"], "identified");
    assert_eq!(first["update"]["text"], "Disk full.");
    let second = got[1].json();
    assert_eq!(second["incident"]["title"], "Website");
    assert_eq!(second["incident"]["automatic"], true);
    assert!(!got[1].body.contains("hidden-alarm-name") && !got[1].body.contains("secretsvc"));
}

#[test]
fn a_crowd_of_visitors_shares_one_build_of_a_page() {
    let d = Daemon::start(PAGE);
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let port = d.http;
            std::thread::spawn(move || {
                let r = common::http_request(port, "GET", "/status/public", &[], b"");
                (r.status, r.header("etag").map(str::to_string))
            })
        })
        .collect();
    let answers: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let took = started.elapsed();
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    let builds = d.metric("lovebeat_status_page_builds_total");
    // One build per 2 s at most: one, or two if the crowd outlasted it.
    let most = 1 + took.as_secs_f64() as u64 / 2;
    assert!(
        builds >= 1.0 && builds <= most as f64,
        "{builds} builds for 40 visitors in {took:?}"
    );
}

#[test]
fn without_the_history_a_page_shows_states_and_says_why_figures_are_missing() {
    let d = Daemon::start(&format!("{PAGE}\n[history]\nenabled = false\n"));
    fail_the_alarm_unkeyed(&d);
    let p = page_json(&d);
    assert_eq!(p["history"], false);
    assert_eq!(p["status"], "degraded");
    assert_eq!(p["groups"][0]["entries"][0]["state"], "down");
    assert_eq!(p["groups"][0]["entries"][0]["uptime"]["30d"], Value::Null);
    let html = d.get("/status/public").body;
    assert!(html.contains("The history is not available"), "{html}");
    let r = d.get("/api/status_pages/public/incidents");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("history is off"), "{}", r.body);
}

fn fail_the_alarm_unkeyed(d: &Daemon) {
    assert_eq!(
        d.post("/api/services/secretsvc.primary?timeout=3600")
            .status,
        200
    );
    let r = d.request("POST", "/api/services/secretsvc.primary/fail", &[], b"x");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Maintenance over a page's entries shows on the page, ongoing and
/// upcoming, by the entries' display names and never by the window's
/// matchers; a window over nothing the page shows is not on it.
#[test]
fn a_page_shows_ongoing_and_upcoming_maintenance_of_its_entries_only() {
    let now = lovebeat::clock::now_ms();
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .to_rfc3339()
    };
    let d = Daemon::start_keyed(&format!(
        "{PAGE}\n[[maintenance]]\nname = \"db-upgrade\"\nservices = [\"secretdb.*\"]\n\
         start = \"{}\"\nend = \"{}\"\ncomment = \"New disks\"\n\
         [[maintenance]]\nname = \"web-move\"\nalarms = [\"hidden-alarm-name\"]\n\
         start = \"{}\"\nend = \"{}\"\n\
         [[maintenance]]\nname = \"elsewhere\"\nalarms = [\"other\"]\n\
         start = \"{}\"\nend = \"{}\"\n\
         [[alarms]]\nname = \"other\"\npattern = \"other.*\"\n",
        rfc(now - 60_000),
        rfc(now + 3_600_000),
        rfc(now + 86_400_000),
        rfc(now + 90_000_000),
        rfc(now - 60_000),
        rfc(now + 3_600_000),
    ));
    let page = page_json(&d);
    let m = &page["maintenance"];
    assert_eq!(m["ongoing"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["ongoing"][0]["title"], "db-upgrade", "{m}");
    assert_eq!(m["ongoing"][0]["comment"], "New disks", "{m}");
    assert_eq!(
        m["ongoing"][0]["entries"],
        serde_json::json!(["Database"]),
        "{m}"
    );
    assert_eq!(m["upcoming"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["upcoming"][0]["title"], "web-move", "{m}");
    assert_eq!(
        m["upcoming"][0]["entries"],
        serde_json::json!(["Website"]),
        "{m}"
    );
    let html = d.get("/status/public").body;
    assert!(
        html.contains("db-upgrade") && html.contains("In progress"),
        "{html}"
    );
    assert!(
        html.contains("web-move") && html.contains("Scheduled"),
        "{html}"
    );
    for hidden in ["elsewhere", "secretdb", "hidden-alarm-name"] {
        assert!(!html.contains(hidden), "{hidden} in the page");
        assert!(!page.to_string().contains(hidden), "{hidden} in the JSON");
    }
}

/// A config window over the "Database" entry that starts a few seconds
/// after a restart is told once to the page's confirmed subscriber and
/// webhook, by display name only; one over another page's entry and one
/// that ended while lovebeat was down are not; a restart tells nothing
/// again, nor does a window deleted before its start (an API window
/// over "Website" told after both proves the rounds went on).
#[test]
fn a_maintenance_start_is_mailed_and_posted_once_to_the_pages_subscribers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_smtp, port, out) = smtp_server(dir.path());
    let rx = common::receiver::Receiver::start(|_| Some(200));
    let mut d = Daemon::start_keyed(&format!(
        "[general]\npublic_url = \"http://status.example.com/\"\n{}\n\
         [alerts.subs]\nmail = \"ops@example.com\"\n\
         [mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"status@example.com\"\n\
         [[alarms]]\nname = \"other-alarm\"\npattern = \"othersvc.*\"\n\
         [[status_pages]]\nslug = \"other\"\ntitle = \"Other\"\n\
         [[status_pages.groups]]\ntitle = \"All\"\n\
         entries = [ {{ alarm = \"other-alarm\", display_name = \"Other thing\" }} ]\n",
        PAGE.replace(
            "days = 30\n",
            &format!(
                "days = 30\nmail = \"subs\"\nwebhooks = [\"{}\"]\n",
                rx.url("/page-hook")
            )
        )
    ));
    let r = form(
        &d,
        "/status/public/subscribe",
        "email=visitor%40example.com",
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let got = read_mails(&out, 1, 15);
    assert_eq!(got.len(), 1, "{got:?}");
    let token = token_in(&text_of(&got[0]), "confirm");
    let r = form(&d, "/status/public/confirm", &format!("token={token}"));
    assert_eq!(r.status, 200, "{}", r.body);

    // Stopped, the windows are added to the config: one starting soon
    // after the restart, one over the other page, one already over.
    let status = d.stop();
    assert!(status.success(), "{}", d.stderr());
    let now = lovebeat::clock::now_ms();
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .to_rfc3339()
    };
    let (start, end) = (now + 4_000, now + 3_600_000);
    std::fs::write(
        d.path().join("conf.d/maintenance.cfg"),
        format!(
            "[[maintenance]]\nname = \"db-upgrade\"\nservices = [\"secretdb.*\"]\n\
             start = \"{}\"\nend = \"{}\"\ncomment = \"New disks\"\n\
             [[maintenance]]\nname = \"elsewhere\"\nalarms = [\"other-alarm\"]\n\
             start = \"{}\"\nend = \"{}\"\n\
             [[maintenance]]\nname = \"long-gone\"\nservices = [\"secretdb.*\"]\n\
             start = \"{}\"\nend = \"{}\"\n",
            rfc(start),
            rfc(end),
            rfc(now - 60_000),
            rfc(end),
            rfc(now - 7_200_000),
            rfc(now - 3_600_000),
        ),
    )
    .expect("write conf.d/maintenance.cfg");
    d.restart_stopped();

    let got = read_mails(&out, 2, 15);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        lovebeat::clock::now_ms() >= start,
        "told before the window began"
    );
    assert_eq!(got[1]["to"], serde_json::json!(["visitor@example.com"]));
    let text = text_of(&got[1]);
    assert!(
        text.contains("Subject: [Acme <status>] Maintenance started: db-upgrade"),
        "{text}"
    );
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .format("%Y-%m-%d %H:%M UTC")
            .to_string()
    };
    for part in [
        format!("From {} to {}", when(start), when(end)),
        "Affects: Database".to_string(),
        "New disks".to_string(),
        format!("http://status.example.com/status/public/unsubscribe?token={token}"),
    ] {
        assert!(text.contains(&part), "{part} not in {text}");
    }
    let hooks = rx.wait_for(1, 15);
    assert_eq!(hooks.len(), 1);
    let hook = hooks[0].json();
    assert_eq!(hooks[0].path, "/page-hook");
    assert_eq!(hook["page"]["slug"], "public");
    assert_eq!(hook["maintenance"]["name"], "db-upgrade");
    assert_eq!(hook["maintenance"]["start"], start);
    assert_eq!(hook["maintenance"]["end"], end);
    assert_eq!(hook["maintenance"]["comment"], "New disks");
    assert_eq!(
        hook["maintenance"]["entries"],
        serde_json::json!(["Database"])
    );
    for hidden in [
        "secretdb",
        "hidden-alarm-name",
        "elsewhere",
        "Other thing",
        "long-gone",
    ] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
        assert!(!hooks[0].body.contains(hidden), "{hidden} in the webhook");
    }

    // After a restart the window is not told again, nor one deleted
    // before its start: a window over "Website" made through the API,
    // which starts after both, is the next thing told.
    d.restart();
    let make = |name: &str, start: i64| {
        let body = serde_json::json!({
            "name": name,
            "alarms": ["hidden-alarm-name"],
            "start": rfc(start),
            "end": rfc(end),
        });
        let r = d.request(
            "POST",
            "/api/maintenance",
            &[W, ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    };
    let soon = lovebeat::clock::now_ms() + 3_000;
    make("cancelled", soon);
    let r = d.request("DELETE", "/api/maintenance/cancelled", &[W], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    make("web-move", soon + 1_000);
    let got = read_mails(&out, 3, 15);
    assert_eq!(got.len(), 3, "{got:?}");
    let text = text_of(&got[2]);
    assert!(text.contains("Maintenance started: web-move"), "{text}");
    assert!(text.contains("Affects: Website"), "{text}");
    let hooks = rx.wait_for(2, 15);
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[1].json()["maintenance"]["name"], "web-move");
    assert_eq!(read_mails(&out, 4, 15).len(), 3, "told twice");
}
