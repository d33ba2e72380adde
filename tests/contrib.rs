//! The Nagios plugin in contrib/ against a live daemon.

mod common;

use std::process::Command;

use common::Daemon;

fn check(args: &[&str]) -> (i32, String) {
    let plugin = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nagios/check_lovebeat");
    let out = Command::new(plugin)
        .args(args)
        .output()
        .expect("run check_lovebeat (needs bash and curl)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn nagios_plugin_reports_ok_critical_and_unknown() {
    let d = Daemon::start("[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    let host = format!("127.0.0.1:{}", d.http);
    d.post("/api/services/db.main");
    d.post("/api/services/web.front");
    let (code, out) = check(&[&host]);
    assert_eq!(
        (code, out.as_str()),
        (0, "OK - all services: ok: 2, errors: 0 | ok=2 errors=0")
    );
    d.post("/api/services/web.front?timeout=0");
    let (code, out) = check(&[&host]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("CRITICAL - all services: ok: 1, errors: 1"),
        "{out}"
    );
    assert_eq!(check(&[&host, "-a", "db"]).0, 0);
    assert_eq!(check(&[&host, "-a", "web"]).0, 2);
    let (code, out) = check(&[&host, "-a", "nope"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(check(&[]).0, 3);
    let (code, out) = check(&[&format!("127.0.0.1:{}", common::free_port())]);
    assert_eq!(code, 2);
    assert!(out.starts_with("CRITICAL - failed to contact"), "{out}");
}
