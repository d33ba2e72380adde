//! The web UI in a real headless Chromium (README, "The web UI"): each test starts a
//! daemon (and, for the proxy test, a real nginx) and runs one scenario of
//! `tests/ui/browser.mjs`. A failing scenario leaves a screenshot in
//! `target/ui-screenshots/`.
//!
//! Needs `node`, Debian's `chromium` and `npm ci --prefix tests/ui`
//! (`.ci/run` installs all three).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use common::receiver::Receiver;
use common::{answers_http, free_port, Daemon};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one browser scenario against `page_url`; panics with its output if
/// it fails.
fn scenario(name: &str, d: &Daemon, page_url: &str) {
    scenario_with(name, d, page_url, &[]);
}

/// [`scenario`] with more environment for the script.
fn scenario_with(name: &str, d: &Daemon, page_url: &str, env: &[(&str, String)]) {
    let root = repo();
    assert!(
        root.join("tests/ui/node_modules/playwright-core").exists(),
        "browser tests need playwright-core: run `npm ci --prefix tests/ui` (and install Debian's chromium)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "browser tests need Chromium at {chromium} (apt-get install chromium, or set CHROMIUM)"
    );
    let out = Command::new("node")
        .arg("tests/ui/browser.mjs")
        .arg(name)
        .current_dir(&root)
        .env("LOVEBEAT_URL", page_url)
        .env("LOVEBEAT_API", format!("http://127.0.0.1:{}/", d.http))
        .env("LOVEBEAT_UDP", d.statsd.to_string())
        .env("LOVEBEAT_SHOTS", root.join("target/ui-screenshots"))
        .env("CHROMIUM", &chromium)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("node (install Node.js 18 or later)");
    assert!(
        out.status.success(),
        "browser scenario '{name}' failed:\n{}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.stderr()
    );
}

fn page(d: &Daemon) -> String {
    format!("http://127.0.0.1:{}/", d.http)
}

#[test]
fn a_beat_appears_live_turns_red_then_green() {
    let d = Daemon::start("");
    scenario("live", &d, &page(&d));
}

#[test]
fn mute_unmute_and_delete_from_the_page() {
    let d = Daemon::start("");
    scenario("actions", &d, &page(&d));
}

#[test]
fn names_sort_by_their_numbers_a_schedule_stays_in_its_row_and_dates_name_their_zone() {
    let d = Daemon::start("");
    scenario("order", &d, &page(&d));
}

#[test]
fn a_service_page_draws_its_history_as_a_timeline() {
    let d = Daemon::start("");
    scenario("timeline", &d, &page(&d));
}

#[test]
fn an_alarm_page_shows_its_uptime_figures_and_incidents_with_durations() {
    let d = Daemon::start("[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n");
    scenario("alarmhistory", &d, &page(&d));
}

#[test]
fn a_jobs_page_lists_its_runs_with_exit_codes_and_durations() {
    let d = Daemon::start("");
    scenario("jobruns", &d, &page(&d));
}

#[test]
fn editing_a_timeout_to_1h30m_sets_5400000_ms() {
    let d = Daemon::start("");
    scenario("timeout", &d, &page(&d));
}

#[test]
fn an_alarm_page_lists_exactly_its_services() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\n[[alarms]]\nname = \"db\"\npattern = \"db.*\"\n",
    );
    scenario("alarm", &d, &page(&d));
}

#[test]
fn an_alarm_page_sends_a_test_alert_and_shows_each_receivers_answer() {
    let hook = Receiver::start(|_| Some(200));
    let ntfy = Receiver::start_with_answer(Duration::ZERO, |_| {
        Some((400, String::new(), r#"{"error":"topic is gone"}"#.into()))
    });
    let d = Daemon::start(&format!(
        "[[alarms]]\nname = \"web\"\npattern = \"web.*\"\nalerts = [\"ops\"]\n\
         [[alarms]]\nname = \"quiet\"\npattern = \"quiet.*\"\n\
         [alerts.ops]\nwebhook = \"{}\"\n\
         [alerts.ops.ntfy]\nurl = \"{}\"\ntopic = \"ops\"\n",
        hook.url("/hook"),
        ntfy.url("")
    ));
    scenario("testalert", &d, &page(&d));
    // One test, once: the dismissed question sent nothing, and a test is
    // not retried.
    let got = hook.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = got[0].json();
    assert_eq!(body["test"], true, "{body}");
    assert_eq!(body["name"], "lovebeat.test.ops", "{body}");
    assert_eq!(ntfy.count(), 1);
}

#[test]
fn an_auto_service_chart_steps_with_its_learned_timeout() {
    let d = Daemon::start("");
    scenario("autochart", &d, &page(&d));
}

#[test]
fn fifty_thousand_services_render_and_filter() {
    let d = Daemon::start("");
    scenario("many", &d, &page(&d));
}

#[test]
fn job_fields_in_the_page_schedule_text_and_failure_output() {
    let d = Daemon::start("");
    scenario("jobs", &d, &page(&d));
}

#[test]
fn the_page_asks_for_a_read_key_once() {
    let d = Daemon::start_keyed("");
    let r = d.request(
        "POST",
        "/api/services/secret.svc",
        &[("Authorization", "Bearer writer")],
        b"",
    );
    assert_eq!(r.status, 200);
    scenario("keys", &d, &page(&d));
}

/// nginx from Debian, in the foreground, with everything in `dir`.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, port: u16, upstream: u16) -> Nginx {
        let conf = format!(
            r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    # The README example: lovebeat under a path prefix, websocket included.
    location /monitoring/lovebeat/ {{
      proxy_pass http://127.0.0.1:{upstream}/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_read_timeout 1h;
    }}
    # A page of another site (reached as localhost, not 127.0.0.1) that
    # forges a change to the daemon itself.
    location = /evil.html {{
      default_type text/html;
      return 200 '<!doctype html><form id="f" method="POST" action="http://127.0.0.1:{upstream}/api/services/csrf.form/mute"><input name="x" value="1"></form><script>fetch("http://127.0.0.1:{upstream}/api/services/csrf.fetch", {{method: "POST", mode: "no-cors", body: "x"}}).finally(() => document.getElementById("f").submit());</script>';
    }}
  }}
}}
"#,
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx (apt-get install nginx-light)");
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !answers_http(port) {
            if let Ok(Some(status)) = n.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}):\n{log}");
            }
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        n
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers with it (SIGKILL
    /// left them running after every test), then SIGKILL if it hangs.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child we started and still own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..250 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn works_behind_nginx_under_a_path_prefix() {
    let d = Daemon::start("[[alarms]]\nname = \"via\"\npattern = \"via.*\"\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port, d.http);
    scenario(
        "proxy",
        &d,
        &format!("http://127.0.0.1:{port}/monitoring/lovebeat/"),
    );
}

#[test]
fn a_page_of_another_site_cannot_change_anything() {
    let d = Daemon::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port, d.http);
    scenario_with(
        "crosssite",
        &d,
        &page(&d),
        &[(
            "LOVEBEAT_EVIL",
            format!("http://localhost:{port}/evil.html"),
        )],
    );
}

/// A status page under nginx's path prefix: every link it holds, resolved
/// as a browser would against its address behind the proxy, is found
/// there, and its ETag answers 304 through the proxy (no browser needed).
#[test]
fn a_status_page_works_behind_nginx_under_a_path_prefix() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"via\"\npattern = \"via.*\"\n\
         [[status_pages]]\nslug = \"public\"\ntitle = \"Via\"\n\
         [[status_pages.groups]]\ntitle = \"G\"\n\
         entries = [ { alarm = \"via\", display_name = \"Via proxy\" } ]\n",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port, d.http);
    let at = format!("http://127.0.0.1:{port}/monitoring/lovebeat/status/public");
    let page = common::http_request(port, "GET", "/monitoring/lovebeat/status/public", &[], b"");
    assert_eq!(page.status, 200, "{}", page.body);
    let base = url::Url::parse(&at).expect("url");
    let links: Vec<&str> = page
        .body
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(links.len() >= 3, "{links:?}");
    for link in links {
        let target = base.join(link).expect("link");
        assert!(
            target.path().starts_with("/monitoring/lovebeat/"),
            "{link} leaves the prefix: {target}"
        );
        let r = common::http_request(port, "GET", target.path(), &[], b"");
        assert_eq!(r.status, 200, "{link} as {target}: {}", r.body);
    }
    let badge = base.join("public/badge.svg").expect("badge");
    assert_eq!(
        common::http_request(port, "GET", badge.path(), &[], b"").status,
        200
    );
    let etag = page.header("etag").expect("etag").to_string();
    let again = common::http_request(
        port,
        "GET",
        "/monitoring/lovebeat/status/public",
        &[("If-None-Match", &etag)],
        b"",
    );
    // Nothing on the page changed (no data yet): the same tag, a 304.
    assert_eq!(again.status, 304, "{}", again.body);
}

/// The status page in Chromium behind nginx's prefix: the `status`
/// scenario of `browser.mjs`.
#[test]
fn a_status_page_reads_well_in_a_browser_and_on_a_phone() {
    let d = Daemon::start(
        "[[alarms]]\nname = \"hidden-alarm\"\npattern = \"secretsvc.*\"\n\
         [[status_pages]]\nslug = \"public\"\ntitle = \"Acme\"\n\
         [[status_pages.groups]]\ntitle = \"Frontend\"\n\
         entries = [ { alarm = \"hidden-alarm\", display_name = \"Website\" }, \
         { service = \"secretsvc.other\", display_name = \"Other\" } ]\n",
    );
    assert_eq!(
        d.post("/api/services/secretsvc.other?timeout=3600").status,
        200
    );
    assert_eq!(
        d.post("/api/services/secretsvc.main?timeout=3600").status,
        200
    );
    let r = d.request(
        "POST",
        "/api/services/secretsvc.main/fail",
        &[],
        b"leaked output",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = d.request(
        "POST",
        "/api/status_pages/public/incidents",
        &[("Content-Type", "application/json")],
        br#"{"title": "Payments are slow", "text": "We are on it."}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _nginx = Nginx::start(dir.path(), port, d.http);
    scenario(
        "status",
        &d,
        &format!("http://127.0.0.1:{port}/monitoring/lovebeat/status/public"),
    );
}
