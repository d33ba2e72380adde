//! The configuration's tests: defaults, loading, merging and the checks
//! that span sections.

use super::load::merge;
use super::*;
use crate::engine::Timeout;
use crate::settings::ConfigError;

#[test]
fn defaults_are_1x_defaults() {
    let c = Config::parse("").expect("empty config is valid");
    assert_eq!(c.udp.listen.to_string(), ":8127");
    assert_eq!(c.tcp.listen.to_string(), ":8127");
    assert_eq!(c.http.listen.to_string(), ":8080");
    assert_eq!(c.database.filename, "lovebeat.db");
    assert_eq!(c.database.interval, 60);
    assert_eq!(c.mail.server.to_string(), "localhost:25");
    assert_eq!(c.mail.from, "lovebeat@example.com");
    assert_eq!(c.eventlog_mode(), 0o644);
    assert!(c.metrics.is_empty());
    assert_eq!(c.public_url(), None);
}

#[test]
fn reads_a_1x_config() {
    let c = Config::parse(
        r#"
[general]
public_url = "http://lb.example.com"
[mail]
server = "smtp:25"
[metrics]
server = "localhost:8125"
[[views]]
name = "all"
pattern = "*"
alerts = ["ops"]
[alerts.ops]
mail = "ops@example.com"
[eventlog]
path = "/tmp/x"
mode = 600
"#,
    )
    .expect("valid");
    assert_eq!(c.public_url().as_deref(), Some("http://lb.example.com/"));
    assert_eq!(c.alarm_defs()[0].includes, vec!["*".to_string()]);
    assert_eq!(c.metrics[0].server, "localhost:8125");
    assert_eq!(c.eventlog_mode(), 0o600);
}

#[test]
fn the_auto_algorithm_is_one_of_those_that_exist() {
    use crate::engine::auto::Algorithm;
    let algo = |a: &str| Config::parse(&format!("[auto]\nalgorithm = \"{a}\"\n"));
    assert_eq!(
        algo("robust").expect("robust").engine_config().algorithm,
        Algorithm::Robust
    );
    assert_eq!(
        Config::parse("").expect("empty").engine_config().algorithm,
        Algorithm::Lovebeat1
    );
    let e = algo("best").expect_err("unknown").to_string();
    assert!(e.contains(":2:") && e.contains("lovebeat1, robust"), "{e}");
}

#[test]
fn eventlog_mode_is_octal_as_written() {
    let mode =
        |m: &str| Config::parse(&format!("[eventlog]\nmode = {m}\n")).map(|c| c.eventlog_mode());
    assert_eq!(mode("644").expect("1.x digits"), 0o644);
    assert_eq!(mode("0o644").expect("TOML octal"), 0o644);
    assert_eq!(mode("0o600").expect("TOML octal"), 0o600);
    assert_eq!(
        mode("0644").err().map(|_| ()),
        Some(()),
        "TOML refuses a leading zero"
    );
    assert_eq!(mode("\"0640\"").expect("a string"), 0o640);
    let e = mode("999").expect_err("not octal").to_string();
    assert!(e.contains(":2:") && e.contains("octal"), "{e}");
    assert!(mode("0x1ff").is_err());
    assert!(mode("-1").is_err());
    assert!(mode("0o17777").is_err());
}

#[test]
fn errors_about_secrets_do_not_quote_them() {
    for text in [
        "[mail]\npassword = 123456789\n",
        "[[notify]]\nlovebeat = \"http://x\"\nkey = 123456789\n",
        "[mailgun]\napi_key = 123456789\n",
        "[alerts.a]\nwebhook = 123456789\n",
        "[http]\nwrite_keys = 123456789\n",
        "[http]\nread_keys = [123456789]\n",
    ] {
        let e = Config::parse(text).expect_err("wrong type").to_string();
        assert!(!e.contains("123456789"), "{e}");
        assert!(e.contains(":2:") || e.contains(":3:"), "{e}");
    }
    // One key as a string is a list of one.
    let c = Config::parse("[http]\nwrite_keys = \"w\"\nread_keys = \"r\"\n").expect("valid");
    assert_eq!(
        (c.http.write_keys, c.http.read_keys),
        (vec!["w".to_string()], vec!["r".to_string()])
    );
}

#[test]
fn an_empty_or_padded_key_is_refused_by_position() {
    let keys = |k: &str| Config::parse(&format!("[http]\n{k}\n"));
    let e = keys("write_keys = [\"a\", \"\"]")
        .expect_err("empty")
        .to_string();
    assert!(
        e.contains("write_keys") && e.contains("key 2 of 2") && e.contains("empty"),
        "{e}"
    );
    let e = keys("read_keys = [\"  \"]").expect_err("blank").to_string();
    assert!(e.contains("read_keys") && e.contains("key 1 of 1"), "{e}");
    let e = keys("read_keys = [\"ok\", \" padded\"]")
        .expect_err("padded")
        .to_string();
    assert!(e.contains("key 2 of 2") && e.contains("spaces"), "{e}");
    assert!(keys("write_keys = [\"w\"]\nread_keys = [\"r\"]").is_ok());
}

#[test]
fn unknown_key_names_line_and_key() {
    let err = Config::parse("[database]\nfilename = \"x\"\nbogus = 1\n").expect_err("unknown key");
    let msg = err.to_string();
    assert!(msg.contains(":3:"), "{msg}");
    assert!(msg.contains("bogus"), "{msg}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let msg = Config::parse("[database]\ninterval = \"often\"\n")
        .expect_err("type")
        .to_string();
    assert!(msg.contains(":2:") && msg.contains("interval"), "{msg}");
}

#[test]
fn alarm_with_unknown_alert_is_refused() {
    let e = Config::parse("[[alarms]]\nname = \"a\"\npattern = \"*\"\nalerts = [\"x\"]\n");
    assert!(e
        .expect_err("unknown alert")
        .to_string()
        .contains("alerts.x"));
}

#[test]
fn alert_timers_beyond_a_year_are_refused() {
    for (cfg, key) in [
        (
            "[alerts.a]\nwebhook = \"http://h/\"\nrepeat = \"400d\"\n",
            "repeat",
        ),
        (
            "[alerts.a]\nwebhook = \"http://h/\"\ngroup_interval = \"400d\"\n",
            "group_interval",
        ),
        ("[flapping]\nwindow = \"400d\"\n", "window"),
    ] {
        let msg = Config::parse(cfg).expect_err(key).to_string();
        assert!(msg.contains(key) && msg.contains("365d"), "{msg}");
    }
    Config::parse("[alerts.a]\nwebhook = \"http://h/\"\nrepeat = \"365d\"\n").expect("a year");
}

#[test]
fn service_defaults_take_durations() {
    let c = Config::parse(
            "[[services]]\npattern = \"deprecated.*\"\ntimeout = 0\n[[services]]\npattern = \"x.*\"\ntimeout = \"1h\"\n",
        )
        .expect("valid");
    let d: Vec<(String, Timeout)> = c
        .engine_config()
        .service_defaults
        .into_iter()
        .map(|d| (d.pattern, d.timeout))
        .collect();
    assert_eq!(
        d,
        vec![
            ("deprecated.*".into(), Timeout::Always),
            ("x.*".into(), Timeout::After(3_600_000))
        ]
    );
}

#[test]
fn metrics_in_the_main_file_and_in_conf_d_are_both_kept() {
    let mut a: toml::Table = toml::from_str("[metrics]\nserver = \"a:8125\"\n").expect("toml");
    let b: toml::Table = toml::from_str("[[metrics]]\nserver = \"b:8125\"\n").expect("toml");
    merge(&mut a, b);
    let c: toml::Table = toml::from_str("[metrics]\nserver = \"c:8125\"\n").expect("toml");
    merge(&mut a, c);
    let config = Config::from_table(a).expect("valid");
    let servers: Vec<&str> = config.metrics.iter().map(|m| m.server.as_str()).collect();
    assert_eq!(servers, ["a:8125", "b:8125", "c:8125"]);
}

#[test]
fn empty_credentials_are_none_and_an_unreadable_config_dir_is_an_error() {
    let c = Config::parse(
            "[mail]\nusername = \"\"\npassword = \"\"\n[[notify]]\nlovebeat = \"http://x\"\nkey = \"\"\n",
        )
        .expect("valid");
    assert_eq!((c.mail.username, c.mail.password), (None, None));
    assert_eq!(c.notify[0].key, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").expect("file");
    assert!(matches!(
        Config::load(None, &file),
        Err(ConfigError::Io { .. })
    ));
    assert!(Config::load(None, &dir.path().join("missing")).is_ok());
}

#[test]
fn merge_appends_arrays_and_replaces_scalars() {
    let mut a: toml::Table =
        toml::from_str("[http]\nlisten=\":1\"\n[[alarms]]\nname=\"a\"\npattern=\"*\"")
            .expect("toml");
    let b: toml::Table =
        toml::from_str("[http]\nlisten=\":2\"\n[[alarms]]\nname=\"b\"\npattern=\"*\"")
            .expect("toml");
    merge(&mut a, b);
    let c = Config::from_table(a).expect("valid");
    assert_eq!(c.http.listen.to_string(), ":2");
    assert_eq!(c.alarms.len(), 2);
}

#[test]
fn no_alerter_secret_shows_in_the_configs_debug_output() {
    let text = "[alerts.ops]\n\
            slack_webhook_url = \"https://hooks.example.com/S1-SLACKSECRET\"\n\
            [alerts.ops.pagerduty]\nrouting_key = \"S2-PD\"\n\
            [alerts.ops.opsgenie]\napi_key = \"S3-OG\"\n\
            [alerts.ops.templated_webhook]\nurl = \"https://x.example.com/S4-TW\"\nheaders = { X-Key = \"S5-H\" }\n\
            [alerts.ops.discord]\nwebhook_url = \"https://discord.com/api/webhooks/1/S6-DC\"\n\
            [alerts.ops.teams]\nwebhook_url = \"https://t.example.com/w?sig=S7-TM\"\n\
            [alerts.ops.telegram]\nbot_token = \"S8-TG\"\nchat_id = -100\n\
            [alerts.ops.ntfy]\ntopic = \"t\"\ntoken = \"S9-NT\"\n\
            [alerts.ops.pushover]\ntoken = \"S10-PO\"\nuser = \"S11-PU\"\n\
            [alerts.ops.gotify]\nurl = \"https://g.example.com\"\ntoken = \"S12-GO\"\n\
            [alerts.ops.matrix]\nhomeserver = \"https://m.example.org\"\nroom_id = \"!r:m\"\naccess_token = \"S13-MX\"\n\
            [alerts.ops.mattermost]\nwebhook_url = \"https://mm.example.com/hooks/S17-MM\"\n";
    let text = format!(
        "{text}[slack]\nwebhook_url = \"https://hooks.slack.com/services/S14-SL\"\n\
             [mail]\nusername = \"u\"\npassword = \"S15-PW\"\n\
             [mailgun]\napi_key = \"S16-MG\"\n"
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let shown = format!(
        "{:?} {:?} {:?} {:?}",
        c.alerts["ops"], c.slack, c.mail, c.mailgun
    );
    assert!(
        shown.contains("pagerduty") && shown.contains("matrix"),
        "{shown}"
    );
    for i in 1..=17 {
        assert!(
            !shown.contains(&format!("S{i}-")),
            "secret {i} shown: {shown}"
        );
    }
}

#[test]
fn the_documented_example_config_is_valid_uncommented() {
    // lovebeat.cfg: '##' lines are prose, '#' lines are settings.
    let text: String = include_str!("../../lovebeat.cfg")
        .lines()
        .filter(|l| !l.starts_with("##"))
        .map(|l| l.strip_prefix('#').unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.http.listen.to_string(), ":8080");
    assert_eq!(c.services.len(), 2);
    assert!(c.alerts["ops"].repeat.is_some());
    let ops = &c.alerts["ops"];
    assert!(ops.pagerduty.is_some() && ops.opsgenie.is_some() && ops.templated_webhook.is_some());
    assert!(ops.discord.is_some() && ops.teams.is_some() && ops.telegram.is_some());
    assert!(ops.ntfy.is_some() && ops.pushover.is_some());
    assert!(ops.gotify.is_some() && ops.matrix.is_some() && ops.mattermost.is_some());
    assert_eq!(c.alarms[1].depends_on, vec!["network-$name".to_string()]);
    assert_eq!(c.self_alarm.alerts, ["ops"]);
    assert_eq!(c.limits.max_services, 20_000_000);
    assert_eq!((c.flapping.start, c.flapping.stop), (6, 2));
    assert_eq!(
        c.alerts["ops"].group_interval(),
        crate::sinks::alerts::DEFAULT_GROUP_INTERVAL
    );
}

#[test]
fn maintenance_windows_are_read_checked_and_summarised() {
    let c = Config::parse(
        "[[maintenance]]\nname = \"nightly\"\nalarms = \"db\"\nschedule = \"0 3 * * *\"\nduration = \"30m\"\ntz = \"Europe/Berlin\"\nnotify = true\n\
         [[maintenance]]\nname = \"move\"\nservices = [\"db.*\"]\nstart = \"2026-12-24T22:00:00Z\"\nend = \"2026-12-25T02:00:00Z\"\n",
    )
    .expect("config");
    let windows = c.maintenance_windows(5).expect("windows");
    assert_eq!(windows.len(), 2);
    assert_eq!(windows[0].created_by, "config");
    let s = c.summary();
    assert!(s.contains("maintenance windows: 2"), "{s}");
    assert!(
        s.contains(
            "  nightly: alarms db; services none; '0 3 * * *' in Europe/Berlin for 30m; notify"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "  move: alarms none; services db.*; 2026-12-24T22:00:00Z to 2026-12-25T02:00:00Z"
        ),
        "{s}"
    );
    for (text, says) in [
        (
            "[[maintenance]]\nname = \"a\"\nalarms = \"db\"\nwhen = \"now\"\n",
            "unknown field",
        ),
        (
            "[[maintenance]]\nname = \"a\"\nalarms = \"db\"\nschedule = \"0 3 * * *\"\n",
            "either start and end",
        ),
    ] {
        let e = Config::parse(text).expect_err(text).to_string();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn status_pages_are_checked_when_the_config_is_read() {
    let page = |extra: &str, entries: &str| {
        format!(
            "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n[[alarms]]\nname = \"srv-$n\"\npattern = \"s.$n.*\"\n\
             [[status_pages]]\nslug = \"public\"\ntitle = \"Status\"\n{extra}\n\
             [[status_pages.groups]]\ntitle = \"G\"\nentries = [{entries}]\n"
        )
    };
    let ok = Config::parse(&page(
        "",
        r#"{ alarm = "web", display_name = "Website" }, { alarm = "srv-eu", display_name = "EU" }, { service = "db.main", display_name = "DB" }"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status_pages[0].days, 90);
    for (extra, entries, why) in [
        (
            "",
            r#"{ alarm = "nope", display_name = "X" }"#,
            "no such [[alarms]]",
        ),
        (
            "",
            r#"{ alarm = "web", service = "a", display_name = "X" }"#,
            "exactly one",
        ),
        ("", r#"{ display_name = "X" }"#, "exactly one"),
        (
            "",
            r#"{ service = "Bad Name", display_name = "X" }"#,
            "invalid service name",
        ),
        (
            "",
            r#"{ alarm = "web", display_name = "" }"#,
            "display_name is empty",
        ),
        (
            "",
            r#"{ alarm = "web", display_name = "A b" }, { alarm = "web", display_name = "a-B" }"#,
            "same badge address",
        ),
        (
            "",
            r#"{ alarm = "web", display_name = "X", colour = 1 }"#,
            "unknown field",
        ),
        (
            "days = 366",
            r#"{ alarm = "web", display_name = "X" }"#,
            "days must be 1 to 365",
        ),
        (
            "days = 0",
            r#"{ alarm = "web", display_name = "X" }"#,
            "days must be 1 to 365",
        ),
        (
            "tz = \"Mars/Base\"",
            r#"{ alarm = "web", display_name = "X" }"#,
            "IANA",
        ),
        (
            "description = \"a\\u0007\"",
            r#"{ alarm = "web", display_name = "X" }"#,
            "control character",
        ),
    ] {
        let e = Config::parse(&page(extra, entries))
            .expect_err(why)
            .to_string();
        assert!(e.contains(why), "{why}: {e}");
        assert!(e.contains("'public'") || why == "unknown field", "{e}");
    }
    let twice = format!(
        "{}[[status_pages]]\nslug = \"public\"\ntitle = \"Again\"\n",
        page("", r#"{ alarm = "web", display_name = "X" }"#)
    );
    let e = Config::parse(&twice).expect_err("twice").to_string();
    assert!(e.contains("another page has this slug"), "{e}");
    let bad_slug = page("", "").replace("slug = \"public\"", "slug = \"Public/x\"");
    let e = Config::parse(&bad_slug).expect_err("slug").to_string();
    assert!(e.contains("slug \"Public/x\" must be"), "{e}");
}

#[test]
fn a_status_page_mails_through_an_alert_with_mail_and_needs_public_url() {
    let page = |head: &str, mail: &str| {
        format!(
            "{head}\n[alerts.ops]\nmail = \"ops@example.com\"\n[alerts.hook]\nwebhook = \"http://127.0.0.1:1/\"\n\
             [[status_pages]]\nslug = \"public\"\ntitle = \"Status\"\nmail = \"{mail}\"\n"
        )
    };
    let url = "public_url = \"http://lb.example.com/\"";
    Config::parse(&page(url, "ops")).unwrap_or_else(|e| panic!("{e}"));
    for (head, mail, why) in [
        (
            url,
            "nope",
            "must name an [alerts.nope] with a mail address",
        ),
        (
            url,
            "hook",
            "must name an [alerts.hook] with a mail address",
        ),
        ("", "ops", "mail needs public_url"),
    ] {
        let e = Config::parse(&page(head, mail)).expect_err(why).to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
}

/// `[cluster]` is read with its defaults, checked, and summarised without
/// a password in a NATS URL; without it there is no cluster.
#[test]
fn the_cluster_section_is_read_checked_and_summarised() {
    assert!(Config::parse("").expect("valid").cluster.is_none());
    let c =
        Config::parse("[cluster]\nnats = [\"nats://user:secret@127.0.0.1:4222\"]\nnode = \"n1\"\n")
            .expect("valid");
    let cluster = c.cluster.as_ref().expect("cluster");
    assert_eq!((cluster.partitions, cluster.lease.ms), (16, 10_000));
    let summary = c.summary();
    assert!(
        summary.contains("cluster: node n1, 16 partitions, lease 10000 ms"),
        "{summary}"
    );
    assert!(!summary.contains("secret"), "{summary}");
    let e = Config::parse("[cluster]\nnats = []\n").expect_err("no servers");
    assert!(e.to_string().contains("[cluster] nats"), "{e}");
}
