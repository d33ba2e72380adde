//! Uptime reports against the real binary (README, "Reports"): on a
//! history built row by row in the file (with `sqlite3`, as an operator
//! would open it) over the last two calendar months, `/api/reports`
//! answers each figure to the millisecond and as `/uptime` does for the
//! same range, as JSON and CSV; `lovebeat report` prints it as text, CSV
//! and JSON; and a `[[reports]]` mail owed for a period that ended while
//! lovebeat was down is sent at the start through a real SMTP server,
//! once.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::smtp::{read_mails, smtp_server_refusing as smtp_server};
use common::{wait_until, Daemon};
use lovebeat::reports::period::{self, Every, Period};
use serde_json::Value;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

const OK: i64 = 1;
const ERROR: i64 = 2;
const MUTED: i64 = 3;

const ALARMS: &str = "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n";

/// The last whole UTC month and the one before it, as the server sees
/// them (a test started in a month's last seconds may see another).
fn months() -> (Period, Period) {
    let tz = chrono_tz::UTC;
    let now = lovebeat::clock::now_ms();
    let this = period::last_ended(Every::Month, &tz, now).expect("a month");
    let before = period::before(Every::Month, &tz, this).expect("a month");
    (this, before)
}

/// The constructed history of alarm `web`: `(ts, to_state)`.
fn web_changes(p: Period, q: Period) -> Vec<(i64, i64)> {
    vec![
        (q.since + HOUR, OK),
        (q.since + 10 * HOUR, ERROR),
        (q.since + 10 * HOUR + 5 * MIN, OK),
        (p.since + 2 * HOUR, ERROR),
        (p.since + 2 * HOUR + 30 * MIN, OK),
        (p.since + 5 * DAY, MUTED),
        (p.since + 5 * DAY + HOUR, OK),
        (p.since + 7 * DAY, ERROR),
        (p.since + 7 * DAY + 45 * MIN + 123, OK),
        (p.until - 10 * MIN, ERROR),
        (p.until - MIN, OK),
    ]
}

fn sqlite(file: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(file)
        .arg(sql)
        .output()
        .expect("sqlite3 (the test command installs it)");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops `d`, writes `web`'s history into its file, runs `more` SQL, and
/// starts it again.
fn construct(d: &mut Daemon, more: &str) {
    let (p, q) = months();
    assert!(d.stop().success(), "clean exit: {}", d.stderr());
    let mut sql = String::from("INSERT OR IGNORE INTO names (kind, name) VALUES (1, 'web');\n");
    for (i, (ts, to)) in web_changes(p, q).into_iter().enumerate() {
        sql.push_str(&format!(
            "INSERT INTO changes (name_id, ts, seq, from_state, to_state, reason) \
             SELECT id, {ts}, {}, NULL, {to}, 0 FROM names WHERE kind = 1 AND name = 'web';\n",
            900_000 + i
        ));
    }
    sql.push_str(more);
    sqlite(&d.path().join("lovebeat.db.history"), &sql);
    d.restart_stopped();
}

fn ms(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// The figures the constructed history must give, checked field by field.
fn assert_figures(p: Period, q: Period, entry: &Value) {
    let cur = &entry["period"];
    let down = 30 * MIN + (45 * MIN + 123) + 9 * MIN;
    assert_eq!(ms(cur, "since"), p.since, "{entry}");
    assert_eq!(ms(cur, "until"), p.until, "{entry}");
    assert_eq!(ms(cur, "down_ms"), down, "{entry}");
    assert_eq!(ms(cur, "muted_ms"), HOUR, "{entry}");
    assert_eq!(ms(cur, "maintenance_ms"), 0, "{entry}");
    assert_eq!(ms(cur, "unknown_ms"), 0, "{entry}");
    let up = p.until - p.since - down - HOUR;
    assert_eq!(ms(cur, "up_ms"), up, "{entry}");
    assert_eq!(cur["incidents"], 3, "{entry}");
    assert_eq!(cur["recoveries"], 3, "{entry}");
    assert_eq!(ms(cur, "mttr_ms"), (down + 1) / 3, "{entry}");
    assert_eq!(ms(cur, "longest_down_ms"), 45 * MIN + 123, "{entry}");
    let uptime = cur["uptime"].as_f64().expect("uptime");
    assert!(
        (uptime - up as f64 / (up + down) as f64).abs() < 1e-12,
        "{entry}"
    );
    let raw = cur["uptime_raw"].as_f64().expect("uptime_raw");
    assert!(
        (raw - up as f64 / (p.until - p.since) as f64).abs() < 1e-12,
        "{entry}"
    );

    let prev = &entry["previous"];
    assert_eq!(ms(prev, "since"), q.since, "{entry}");
    assert_eq!(ms(prev, "until"), q.until, "{entry}");
    assert_eq!(ms(prev, "down_ms"), 5 * MIN, "{entry}");
    assert_eq!(ms(prev, "unknown_ms"), HOUR, "{entry}");
    assert_eq!(prev["incidents"], 1, "{entry}");
    assert_eq!(ms(prev, "mttr_ms"), 5 * MIN, "{entry}");
    let prev_up = q.until - q.since - HOUR - 5 * MIN;
    assert_eq!(ms(prev, "up_ms"), prev_up, "{entry}");

    let delta = &entry["delta"];
    assert_eq!(ms(delta, "down_ms"), down - 5 * MIN, "{entry}");
    assert_eq!(ms(delta, "incidents"), 2, "{entry}");
    assert_eq!(
        ms(delta, "longest_down_ms"),
        45 * MIN + 123 - 5 * MIN,
        "{entry}"
    );
    assert_eq!(ms(delta, "mttr_ms"), (down + 1) / 3 - 5 * MIN, "{entry}");
    assert_eq!(ms(delta, "maintenance_ms"), 0, "{entry}");
    let prev_uptime = prev_up as f64 / (prev_up + 5 * MIN) as f64;
    let d = delta["uptime"].as_f64().expect("delta uptime");
    assert!((d - (uptime - prev_uptime)).abs() < 1e-12, "{entry}");
}

#[test]
fn report_figures_are_exact_to_the_millisecond_and_those_of_uptime() {
    let mut d = Daemon::start(ALARMS);
    construct(&mut d, "");
    let (p, q) = months();
    let r = d.get(&format!(
        "/api/reports?since={}&until={}&alarms=web,db",
        p.since, p.until
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(ms(&v, "since"), p.since);
    assert_eq!(ms(&v, "until"), p.until);
    // A whole month: the period before is the calendar month before.
    assert_eq!(v["every"], "month", "{v}");
    assert_eq!(ms(&v, "previous_since"), q.since);
    assert_eq!(ms(&v, "previous_until"), q.until);
    assert_eq!(v["alarms"][0]["alarm"], "web");
    assert_figures(p, q, &v["alarms"][0]);
    // An alarm the history never knew has no figures, not an error.
    assert_eq!(v["alarms"][1]["alarm"], "db");
    assert!(v["alarms"][1]["period"].is_null(), "{v}");

    // The same figures as the alarm's uptime for the same range.
    let u = d
        .get(&format!(
            "/api/alarms/web/uptime?since={}&until={}",
            p.since, p.until
        ))
        .json();
    let w = &u["windows"][0];
    for field in [
        "up_ms",
        "down_ms",
        "muted_ms",
        "maintenance_ms",
        "unknown_ms",
        "incidents",
        "recoveries",
        "mttr_ms",
        "longest_down_ms",
        "uptime",
        "uptime_raw",
    ] {
        assert_eq!(v["alarms"][0]["period"][field], w[field], "{field}: {u}");
    }

    // Without a range: the last whole month in UTC; every alarm, by name.
    let all = d.get("/api/reports").json();
    assert_eq!(ms(&all, "since"), p.since, "{all}");
    let names: Vec<&str> = all["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .filter_map(|e| e["alarm"].as_str())
        .collect();
    assert_eq!(names, ["db", "web"], "{all}");
    assert_eq!(all["alarms"][1], v["alarms"][0]);

    // Another range compares with as long a range just before.
    let odd = d
        .get(&format!(
            "/api/reports?since={}&until={}&alarms=web",
            p.since + DAY,
            p.since + 3 * DAY
        ))
        .json();
    assert!(odd["every"].is_null(), "{odd}");
    assert_eq!(ms(&odd, "previous_since"), p.since - DAY);
    assert_eq!(ms(&odd, "previous_until"), p.since + DAY);
    assert_eq!(ms(&odd["alarms"][0]["previous"], "down_ms"), 30 * MIN);

    // CSV: the header, then one line per alarm with as many fields.
    let c = d.get(&format!(
        "/api/reports?since={}&until={}&alarms=web,db&format=csv",
        p.since, p.until
    ));
    assert_eq!(c.status, 200);
    assert!(c
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/csv"));
    let lines: Vec<&str> = c.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{}", c.body);
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header[..4], ["alarm", "since", "until", "uptime"]);
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row.len(), header.len(), "{}", c.body);
    let field = |name: &str| {
        let i = header.iter().position(|h| *h == name).expect(name);
        row[i].to_string()
    };
    assert_eq!(field("alarm"), "web");
    assert_eq!(
        field("down_ms"),
        (30 * MIN + 45 * MIN + 123 + 9 * MIN).to_string()
    );
    assert_eq!(field("longest_down_ms"), (45 * MIN + 123).to_string());
    assert_eq!(field("previous_down_ms"), (5 * MIN).to_string());
    assert_eq!(field("incidents"), "3");
    let empty: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(empty.len(), header.len(), "{}", c.body);
    assert_eq!(empty[0], "db");
    assert_eq!(empty[3], "", "{}", c.body);
}

#[test]
fn reports_refuse_what_they_cannot_answer_and_need_the_read_key() {
    let d = Daemon::start_keyed(ALARMS);
    let reader = [("Authorization", "Bearer reader")];
    assert_eq!(d.get("/api/reports").status, 401);
    assert_eq!(d.request("GET", "/api/reports", &reader, b"").status, 200);
    for path in [
        "/api/reports?since=0&until=34560000001",
        "/api/reports?since=2000&until=1000",
        "/api/reports?since=1000",
        "/api/reports?until=1000",
        "/api/reports?since=yesterday&until=1000",
        "/api/reports?tz=Mars/Olympus",
        "/api/reports?format=xml",
        "/api/reports?alarms=a,,b",
    ] {
        let r = d.request("GET", path, &reader, b"");
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.json()["error"].is_string(), "{path}");
    }
    let r = d.request(
        "GET",
        "/api/reports?since=0&until=34560000001",
        &reader,
        b"",
    );
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("400 days"),
        "{}",
        r.body
    );
    // 400 days exactly is answered.
    let r = d.request(
        "GET",
        "/api/reports?since=0&until=34560000000&alarms=web",
        &reader,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = d.request(
        "POST",
        "/api/reports",
        &[("Authorization", "Bearer writer")],
        b"",
    );
    assert_eq!(r.status, 405);
    drop(d);
    let d = Daemon::start("[history]\nenabled = false\n");
    let r = d.get("/api/reports");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("history is off"));
}

/// Runs `lovebeat report` with `args` against `d`: (success, stdout).
fn report_cli(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let server = format!("http://127.0.0.1:{}", d.http);
    let out = Command::new(env!("CARGO_BIN_EXE_lovebeat"))
        .arg("report")
        .args(["--server", &server])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lovebeat report");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_report_command_prints_text_csv_and_json() {
    let mut d = Daemon::start_keyed(ALARMS);
    construct(&mut d, "");
    let (p, q) = months();
    let since = chrono::DateTime::from_timestamp_millis(p.since)
        .expect("time")
        .to_rfc3339();
    let until = p.until.to_string();
    let range = [
        "--since",
        since.as_str(),
        "--until",
        until.as_str(),
        "--alarms",
        "web,db",
    ];
    let keyed = |extra: &[&str]| {
        let mut a: Vec<&str> = range.to_vec();
        a.extend_from_slice(&["--key", "reader"]);
        a.extend_from_slice(extra);
        report_cli(&d, &a)
    };

    let (ok, json, err) = keyed(&["--format", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&json).expect("JSON");
    assert_figures(p, q, &v["alarms"][0]);

    let (ok, csv, err) = keyed(&["--format", "csv"]);
    assert!(ok, "{err}");
    assert!(csv.starts_with("alarm,since,until,"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap_or("").starts_with("web,"),
        "{csv}"
    );

    let (ok, text, err) = keyed(&[]);
    assert!(ok, "{err}");
    let month = period::label(Every::Month, &chrono_tz::UTC, p);
    assert!(
        text.contains(&format!("Uptime report: {month} (UTC)")),
        "{text}"
    );
    assert!(text.contains("alarm web\n"), "{text}");
    assert!(text.contains("incidents    3"), "{text}");
    assert!(text.contains("(+2)"), "{text}");
    assert!(text.contains("longest      45m 0.123s"), "{text}");
    assert!(text.contains("downtime     1h 24m 0.123s"), "{text}");
    assert!(text.contains("alarm db\n  no history"), "{text}");

    // Without the key: the server's refusal, exit 1.
    let (ok, out, err) = report_cli(&d, &range);
    assert!(!ok, "{out}");
    assert!(err.contains("401"), "{err}");
}

/// A mail's text with quoted-printable soft line breaks and escapes undone.
fn decoded(data: &str) -> String {
    data.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
        .replace("=20", " ")
}

const DUE: &str = "report 'monthly' (every month, UTC): the next is due at";

#[test]
fn a_report_owed_for_a_month_that_ended_while_lovebeat_was_down_is_mailed_at_the_start_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path(), 0);
    // The alert's webhook is not the report's: only its mail alerter sends.
    let hook = common::receiver::Receiver::start(|_| Some(200));
    let mut d = Daemon::start(&format!(
        "{ALARMS}[alerts.ops]\nmail = \"ops@example.com\"\nwebhook = \"{}\"\n[mail]\nserver = \"127.0.0.1:{port}\"\nfrom = \"lovebeat@example.com\"\n[[reports]]\nname = \"monthly\"\nalarms = [\"web\", \"db\"]\nevery = \"month\"\nmail = \"ops\"\n",
        hook.url("/hook")
    ));
    let (p, q) = months();
    let file = d.path().join("lovebeat.db.history");
    let record = |file: &Path| {
        sqlite(
            file,
            "SELECT covered_until, coalesce(sent_at, -1) FROM reports_sent WHERE name = 'monthly'",
        )
        .trim()
        .to_string()
    };
    // A new report is owed from the month under way: nothing is mailed
    // for the months before it was configured.
    wait_until(20, "the schedule's first check", || {
        d.stderr().contains(DUE)
    });
    assert_eq!(record(&file), format!("{}|-1", p.until));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        read_mails(&out, 1, 0).is_empty(),
        "a new report mails nothing"
    );

    // Neither of the last two months mailed, as when lovebeat was down
    // when they ended: the latest only is mailed.
    construct(
        &mut d,
        &format!(
            "UPDATE reports_sent SET covered_until = {} WHERE name = 'monthly';",
            q.since
        ),
    );
    let mails = read_mails(&out, 1, 30);
    assert_eq!(mails.len(), 1, "{}", d.stderr());
    let m = &mails[0];
    assert_eq!(m["from"], "lovebeat@example.com");
    assert_eq!(m["to"], serde_json::json!(["ops@example.com"]));
    let data = decoded(m["data"].as_str().expect("data"));
    let month = period::label(Every::Month, &chrono_tz::UTC, p);
    assert!(
        data.contains(&format!(
            "Subject: [LOVEBEAT] Uptime report monthly: {month} (UTC)"
        )),
        "{data}"
    );
    assert!(data.contains("multipart/alternative"), "{data}");
    // The figures of the constructed month, against the month before.
    assert!(
        data.contains("alarm web\r\n") || data.contains("alarm web\n"),
        "{data}"
    );
    assert!(data.contains("incidents    3"), "{data}");
    assert!(data.contains("(+2)"), "{data}");
    assert!(data.contains("downtime     1h 24m 0.123s"), "{data}");
    assert!(data.contains("longest      45m 0.123s"), "{data}");
    assert!(data.contains("MTTR         28m 0.041s"), "{data}");
    assert!(data.contains("maintenance  0s"), "{data}");
    assert!(data.contains("alarm db"), "{data}");
    assert!(data.contains("<table"), "{data}");
    assert!(data.contains("<td>web</td>"), "{data}");
    let prev = period::label(Every::Month, &chrono_tz::UTC, q);
    assert!(!data.contains(&format!("report monthly: {prev}")), "{data}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_mails(&out, 2, 0).len(), 1, "only the latest month");
    wait_until(20, "the mail is recorded", || {
        record(&file).starts_with(&format!("{}|", p.until)) && !record(&file).ends_with("|-1")
    });

    // A restart mails nothing again.
    d.restart();
    wait_until(20, "the schedule's check after the restart", || {
        d.stderr().contains(DUE)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read_mails(&out, 2, 0).len(), 1, "{}", d.stderr());
    assert_eq!(hook.count(), 0, "the webhook got the report");
    drop(smtp);
}

#[test]
fn a_report_whose_mail_fails_is_tried_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, port, out) = smtp_server(dir.path(), 1);
    let mut d = Daemon::start(&format!(
        "{ALARMS}[alerts.ops]\nmail = \"ops@example.com\"\n[mail]\nserver = \"127.0.0.1:{port}\"\n[[reports]]\nname = \"monthly\"\nalarms = [\"web\"]\nevery = \"month\"\nmail = \"ops\"\n"
    ));
    let (p, _) = months();
    wait_until(20, "the schedule's first check", || {
        d.stderr().contains(DUE)
    });
    construct(
        &mut d,
        &format!(
            "UPDATE reports_sent SET covered_until = {} WHERE name = 'monthly';",
            p.since
        ),
    );
    wait_until(20, "the refused mail", || {
        d.stderr().contains("report 'monthly' not mailed")
    });
    // Tried again 30 s later; the server takes it this time.
    let mails = read_mails(&out, 1, 90);
    assert_eq!(mails.len(), 1, "{}", d.stderr());
    let data = decoded(mails[0]["data"].as_str().expect("data"));
    assert!(data.contains("incidents    3"), "{data}");
    drop(smtp);
}

#[test]
fn a_report_takes_a_place_among_the_whole_table_answers() {
    let mut d = Daemon::start(&format!("{ALARMS}[limits]\nmax_http_lists = 1\n"));
    // 300 000 changes of the last day (retention prunes none of them): an
    // export far bigger than the sockets hold.
    let day_ago = lovebeat::clock::now_ms() - DAY;
    construct(
        &mut d,
        &format!(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 300000) \
             INSERT INTO changes (name_id, ts, seq, from_state, to_state, reason) \
             SELECT id, {day_ago} + x, x, NULL, 1 + x % 2, 0 FROM names, n WHERE kind = 1 AND name = 'web';"
        ),
    );
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", d.http)).expect("connect");
    std::io::Write::write_all(
        &mut slow,
        b"GET /api/export HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .expect("write");
    // Its answer has begun (a report asked sooner could take the place
    // first); then, unread, it holds the only place: the report waits its
    // turn.
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut slow, &mut head).expect("the export's status line");
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    wait_until(20, "the report refused", || {
        d.get("/api/reports?alarms=web").status == 503
    });
    let r = d.get("/api/reports?alarms=web");
    assert!(r.body.contains("max_http_lists"), "{}", r.body);
    drop(slow);
    wait_until(60, "the place freed", || {
        d.get("/api/reports?alarms=web").status == 200
    });
}

#[test]
fn a_report_goes_through_mailgun_when_mail_goes_that_way() {
    let rx = common::receiver::Receiver::start(|_| Some(200));
    let mut d = Daemon::start(&format!(
        "{ALARMS}[alerts.ops]\nmail = \"ops@example.com\"\n[mailgun]\ndomain = \"mg.example.com\"\nfrom = \"lb@example.com\"\napi_key = \"key-123\"\napi_base = \"{}\"\n[[reports]]\nname = \"monthly\"\nalarms = [\"web\"]\nevery = \"month\"\nmail = \"ops\"\n",
        rx.url("")
    ));
    let (p, _) = months();
    wait_until(20, "the schedule's first check", || {
        d.stderr().contains(DUE)
    });
    construct(
        &mut d,
        &format!(
            "UPDATE reports_sent SET covered_until = {} WHERE name = 'monthly';",
            p.since
        ),
    );
    let got = rx.wait_for(1, 30);
    assert_eq!(got.len(), 1, "{}", d.stderr());
    assert_eq!(got[0].path, "/v3/mg.example.com/messages");
    assert_eq!(got[0].headers["authorization"], "Basic YXBpOmtleS0xMjM=");
    let form = got[0].form();
    assert_eq!(form["from"], "lb@example.com");
    assert_eq!(form["to"], "ops@example.com");
    let month = period::label(Every::Month, &chrono_tz::UTC, p);
    assert_eq!(
        form["subject"],
        format!("[LOVEBEAT] Uptime report monthly: {month} (UTC)")
    );
    assert!(form["text"].contains("incidents    3"), "{form:?}");
    assert!(form["html"].contains("<td>web</td>"), "{form:?}");
}
