//! The public surface of the status pages read as an attacker would
//! (issue 30's last paragraph): what needs no key is bounded and cannot
//! be bent into mail to others or into a full page.

mod common;

use common::smtp::smtp_server;
use common::{wait_until, Daemon};

/// A page that takes subscribers (its mail server is never reached: only
/// the answers matter here).
const PAGE: &str = r#"
[general]
public_url = "http://status.example.com/"

[alerts.subs]
mail = "ops@example.com"

[mail]
server = "127.0.0.1:9"
from = "status@example.com"

[[alarms]]
name = "web"
pattern = "web.*"

[[status_pages]]
slug = "public"
title = "Acme"
mail = "subs"

[[status_pages.groups]]
title = "All"
entries = [ { alarm = "web", display_name = "Website" } ]
"#;

fn subscribe(d: &Daemon, email: &str) -> common::Reply {
    let body = serde_json::json!({ "email": email }).to_string();
    d.request(
        "POST",
        "/status/public/subscribe",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn a_subscription_takes_only_a_plain_mailbox_not_a_quoted_list_or_an_address_literal() {
    let d = Daemon::start_keyed(PAGE);
    for hostile in [
        r#""victim@example.org,other@example.org"@example.com"#,
        r#""a b"@example.com"#,
        r#""<script>"@example.com"#,
        "someone@[127.0.0.1]",
        "a..b@example.com",
    ] {
        let r = subscribe(&d, hostile);
        assert_eq!(r.status, 400, "{hostile}: {}", r.body);
    }
    for fine in [
        "a.b+tag@example.com",
        "o'brien@example.co.uk",
        "jos\u{e9}@exampl\u{e9}.fr",
    ] {
        let r = subscribe(&d, fine);
        assert_eq!(r.status, 202, "{fine}: {}", r.body);
    }
}

/// The state the page's JSON shows for its one entry, and its ETag.
fn entry_state(d: &Daemon) -> (String, String) {
    let r = d.get("/status/public.json");
    assert_eq!(r.status, 200, "{}", r.body);
    let state = r.json()["groups"][0]["entries"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (state, r.header("etag").unwrap_or_default().to_string())
}

#[test]
fn a_visitor_of_a_stale_page_is_answered_from_the_last_build_while_the_next_runs() {
    let d = Daemon::start_keyed(PAGE);
    let w = [("Authorization", "Bearer writer")];
    let r = d.request("POST", "/api/services/web.one?timeout=3600", &w, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(30, "the page shows the entry up", || {
        entry_state(&d).0 == "up"
    });
    let (_, built) = entry_state(&d);
    let r = d.request("POST", "/api/services/web.one/fail", &w, b"down");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(30, "the alarm is ERROR", || {
        d.request(
            "GET",
            "/api/alarms/web",
            &[("Authorization", "Bearer reader")],
            b"",
        )
        .json()["alarm"]["state"]
            == "error"
    });
    // Past FRESH (2 s), well within STALE_FOR (30 s): the last build is
    // served at once, and the next one runs meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let (state, etag) = entry_state(&d);
    assert_eq!((state.as_str(), etag), ("up", built));
    wait_until(30, "the next build shows the entry down", || {
        entry_state(&d).0 == "down"
    });
}

/// The recipients of the mails received so far.
fn recipients(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|m| {
            m["to"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.as_str().map(str::to_string))
        })
        .collect()
}

#[test]
fn one_mailbox_gets_one_mail_to_confirm_however_its_address_is_spelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_smtp, port, out) = smtp_server(dir.path());
    let d = Daemon::start_keyed(&PAGE.replace("127.0.0.1:9", &format!("127.0.0.1:{port}")));
    for spelling in [
        "victim@example.org",
        "victim+1@example.org",
        "victim+2@example.org",
        "vic.tim@example.org",
        "v.i.c.t.i.m+3@example.org",
    ] {
        assert_eq!(subscribe(&d, spelling).status, 202, "{spelling}");
    }
    // Another mailbox, asked last: once its mail is in, the others'
    // would be too.
    assert_eq!(subscribe(&d, "someone.else@example.org").status, 202);
    wait_until(30, "the other mailbox's mail", || {
        recipients(&out)
            .iter()
            .any(|t| t == "someone.else@example.org")
    });
    let to_victim: Vec<String> = recipients(&out)
        .into_iter()
        .filter(|t| t != "someone.else@example.org")
        .collect();
    assert_eq!(to_victim, ["victim@example.org"], "{to_victim:?}");
}
