//! `/metrics` as Prometheus reads it: checked by `promtool` (Debian's
//! `prometheus` package, installed by `./test`), and the alerting rules in
//! `contrib/prometheus` and the queries of the Grafana dashboard in
//! `contrib/grafana` checked by it too, naming only metrics that `/metrics`
//! exports.

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

/// The metric names a PromQL expression selects: its identifiers less
/// functions (followed by `(`), aggregations and keywords, label names (in
/// `{...}` and in the lists after `by`, `without`, `on`, `ignoring`,
/// `group_left` and `group_right`), strings, ranges and numbers. A
/// histogram's samples carry their `_bucket`, `_sum` and `_count` names in
/// `/metrics` too, so a name found here is compared as it is.
fn selected_metrics(expr: &str) -> Vec<String> {
    const NOT_METRICS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    // Skips from an opening byte to its closing one, past quoted strings.
    let skip = |mut i: usize, close: u8| {
        i += 1;
        while i < b.len() && b[i] != close {
            if matches!(b[i], b'"' | b'\'' | b'`') {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    let mut label_list_next = false;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => i = skip(i, b'}'),
            b'[' => i = skip(i, b']'),
            b'(' if label_list_next => {
                label_list_next = false;
                i = skip(i, b')');
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = b[i..].iter().find(|c| !c.is_ascii_whitespace());
                if LABEL_LISTS.contains(&word) {
                    label_list_next = true;
                } else if next != Some(&b'(') && !NOT_METRICS.contains(&word) {
                    names.push(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn selected_metrics_finds_only_metric_names() {
    assert_eq!(
        selected_metrics(
            r#"sum by (state) (rate(a_total{x="}b",y=~"$v"}[5m] offset 1h)) / on(instance) group_left(job) b:rec > bool 0.5 or histogram_quantile(0.9, c_bucket)"#
        ),
        ["a_total", "b:rec", "c_bucket"]
    );
}

/// Every `expr` in a Grafana dashboard, with where it is.
fn dashboard_exprs(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push((at.to_string(), e.clone())),
                    _ => dashboard_exprs(v, &format!("{at}.{k}"), out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                dashboard_exprs(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_that_metrics_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/lovebeat.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");

    // Importable anywhere: the data source is an input, chosen on import.
    let input = &dash["__inputs"][0];
    assert_eq!(
        (&input["name"], &input["type"], &input["pluginId"]),
        (
            &serde_json::json!("DS_PROMETHEUS"),
            &serde_json::json!("datasource"),
            &serde_json::json!("prometheus")
        )
    );
    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for p in panels {
        assert_eq!(p["datasource"], ds, "panel {}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"], ds, "panel {}", p["title"]);
        }
    }

    let mut exprs = Vec::new();
    dashboard_exprs(&dash, "", &mut exprs);
    assert!(exprs.len() >= 6, "{exprs:?}");
    // The instance variable's query names a metric too.
    let variable = dash["templating"]["list"][0]["query"]["query"]
        .as_str()
        .expect("instance variable query");
    let inner = variable
        .strip_prefix("label_values(")
        .and_then(|q| q.split_once(','))
        .map(|(metric, _)| metric.trim().to_string())
        .unwrap_or_else(|| panic!("{variable}"));

    // Prometheus parses each query, with Grafana's variables filled in.
    let rules = serde_json::json!({"groups": [{"name": "dashboard", "rules": exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| serde_json::json!({
            "record": format!("dashboard:expr_{i}"),
            "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*"),
        }))
        .collect::<Vec<_>>()}]});
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), rules.to_string()).expect("write rules");
    let (code, out) = promtool(
        &["check", "rules", file.path().to_str().expect("path")],
        b"",
    );
    assert_eq!(
        code, 0,
        "promtool check rules on the dashboard's queries:\n{out}"
    );

    // A daemon with every component the dashboard graphs, as a fresh
    // install has it: counters at 0 are exported all the same.
    let d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    let metrics = d.get("/metrics");
    assert_eq!(metrics.status, 200);
    let names = exported(&metrics.body);
    let mut used = vec![("templating.instance".to_string(), inner)];
    for (at, e) in &exprs {
        let found = selected_metrics(e);
        assert!(!found.is_empty(), "{at}: no metric in {e}");
        used.extend(found.into_iter().map(|n| (at.clone(), n)));
    }
    let missing: Vec<_> = used.iter().filter(|(_, n)| !names.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that /metrics does not export: {missing:?}\n/metrics:\n{}",
        metrics.body
    );
}
