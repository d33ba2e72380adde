//! The public surface of the status pages read as an attacker would
//! (issue 30's last paragraph): what needs no key is bounded and cannot
//! be bent into mail to others or into a full page.

mod common;

use common::Daemon;

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
