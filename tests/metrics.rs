//! `/metrics` as Prometheus reads it: checked by `promtool` (Debian's
//! `prometheus` package, installed by `./test`), and the alerting rules in
//! `contrib/prometheus` checked by it too, naming only metrics that
//! `/metrics` exports.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Daemon;

fn promtool(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; ./test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    let out = child.wait_with_output().expect("promtool ran");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The metric names in `/metrics` (no labels).
fn exported(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_pass_promtool_and_the_shipped_rules_use_only_exported_names() {
    let d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    d.post("/api/services/web.a?timeout=0");
    d.udp("web.b.beat:1|c\nbad line\n");
    d.eventually("the lines counted", || {
        d.get("/metrics")
            .body
            .contains("lovebeat_lines_dropped_total 1")
    });
    let metrics = d.get("/metrics");
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (code, out) = promtool(&["check", "metrics"], metrics.body.as_bytes());
    assert_eq!(code, 0, "promtool check metrics:\n{out}\n{}", metrics.body);
    assert!(out.trim().is_empty(), "{out}");

    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/prometheus/lovebeat.rules.yml"
    );
    let (code, out) = promtool(&["check", "rules", rules], b"");
    assert_eq!(code, 0, "promtool check rules:\n{out}");
    let names = exported(&metrics.body);
    let text = std::fs::read_to_string(rules).expect("rules");
    let used: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lovebeat_"))
        .collect();
    assert!(!used.is_empty());
    for name in used {
        assert!(names.iter().any(|n| n == name), "{name} is not in /metrics");
    }
}
