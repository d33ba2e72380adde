//! Client subcommands for cron jobs and scripts (README, "Cron jobs and scripts"): `lovebeat
//! beat` sends one beat over HTTP; `lovebeat run` reports the start, runs a
//! command, and reports its exit code with the tail of its output, passing
//! its output and exit status through.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::escape::error_chain;

/// Where and how to reach the daemon.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, e.g. `http://localhost:8080`.
    pub server: String,
    /// API key sent as a bearer token, if any.
    pub key: Option<String>,
}

impl Target {
    /// `--server`, else `$LOVEBEAT_URL`, else `http://localhost:8080`; the
    /// key from `--key`, else `$LOVEBEAT_KEY`.
    pub fn resolve(server: Option<String>, key: Option<String>) -> Target {
        let server = server
            .or_else(|| std::env::var("LOVEBEAT_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "http://localhost:8080".into());
        let key = key.or_else(|| std::env::var("LOVEBEAT_KEY").ok().filter(|s| !s.is_empty()));
        Target { server, key }
    }

    /// The server as messages name it: its scheme and host only
    /// ([`crate::redact::url_for_log`], as the daemon logs its receivers).
    /// A user, password, path or `?key=` in `--server` may be a secret,
    /// and cron mails whatever a job prints. When the text between `//`
    /// and its last `@` is not the user and password the URL parser read
    /// (a password with an unescaped `#`, `/` or `?` is read as a host
    /// and port), only the scheme is named: that text may be a password.
    pub fn shown(&self) -> String {
        let Ok(url) = reqwest::Url::parse(&self.server) else {
            return "<the --server URL, which does not parse>".to_string();
        };
        let written = self
            .server
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .map(|(userinfo, _)| userinfo);
        let parsed = match (url.username(), url.password()) {
            ("", None) => None,
            (user, None) => Some(user.to_string()),
            (user, Some(password)) => Some(format!("{user}:{password}")),
        };
        if written != parsed.as_deref() {
            return format!("{}://…", url.scheme());
        }
        crate::redact::url_for_log(self.server.trim_end_matches('/'))
    }

    /// The URL of `path` (`/api/services/x`) on the server: the server's
    /// own path is its prefix, and its own query (`?key=`) comes after
    /// the path, before `pairs`. Appending the path to the text as
    /// written would put it inside the query.
    fn endpoint(&self, path: &str, pairs: &[(&str, &str)]) -> Result<reqwest::Url, ClientError> {
        let mut url = reqwest::Url::parse(&self.server).map_err(ClientError::BadServer)?;
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        url.set_fragment(None);
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        Ok(url)
    }

    /// What the target carries that is secret: the key, and the user,
    /// password and query values of the server URL (as written, as the
    /// URL parser read them, percent-decoded, and as the
    /// `Authorization: Basic` header a server or proxy may echo).
    fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.key.iter().cloned().collect();
        let rest = self
            .server
            .split_once("://")
            .map_or(self.server.as_str(), |(_, r)| r);
        // Up to the last `@`, not the first `/`: a password may hold an
        // unescaped `/`, `?` or `#`.
        let mut pairs = Vec::new();
        if let Some((userinfo, _)) = rest.rsplit_once('@') {
            out.push(userinfo.to_string());
            out.extend(userinfo.split(':').map(str::to_string));
            if let Some((user, password)) = userinfo.split_once(':') {
                out.push(password.to_string());
                pairs.push((user.to_string(), password.to_string()));
            }
        }
        if let Ok(url) = reqwest::Url::parse(&self.server) {
            if let Some(password) = url.password() {
                out.push(url.username().to_string());
                out.push(password.to_string());
                pairs.push((url.username().to_string(), password.to_string()));
            }
        }
        if let Some((_, query)) = rest.split_once('?') {
            let query = query.split('#').next().unwrap_or_default();
            for pair in query.split('&') {
                out.push(pair.split_once('=').map_or(pair, |(_, v)| v).to_string());
            }
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let decoded: Vec<String> = out.iter().map(|s| decode(s)).collect();
        out.extend(decoded);
        for (user, password) in pairs {
            out.push(crate::redact::basic_credentials(&user, &password));
            out.push(crate::redact::basic_credentials(
                &decode(&user),
                &decode(&password),
            ));
        }
        out
    }

    /// `text` with every secret of the target ([`Target::secrets`]) of 4
    /// bytes or more replaced by `…`, longest first: what a client error
    /// may print, whatever the server or a library put in it.
    pub fn scrub(&self, text: &str) -> String {
        let mut secrets: Vec<String> = self
            .secrets()
            .into_iter()
            .filter(|s| s.len() >= 4)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for s in &secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "…");
            }
        }
        out
    }
}

/// What a beat may set besides the beat itself (README, "Cron jobs and scripts").
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--timeout`.
    pub timeout: Option<String>,
    /// `--schedule`.
    pub schedule: Option<String>,
    /// `--tz`.
    pub tz: Option<String>,
    /// `--grace`.
    pub grace: Option<String>,
    /// `--max-runtime`.
    pub max_runtime: Option<String>,
}

impl Settings {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("timeout", &self.timeout),
            ("schedule", &self.schedule),
            ("tz", &self.tz),
            ("grace", &self.grace),
            ("max_runtime", &self.max_runtime),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// Why a request to the server did not succeed; each is one sentence for
/// the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not a URL. The parser's reason never quotes the
    /// text, which may hold a password.
    #[error("the --server URL does not parse: {0}")]
    BadServer(#[source] url::ParseError),
    /// The client itself could not start (no runtime, no TLS roots).
    #[error("cannot start the HTTP client: {0}")]
    Start(#[source] std::io::Error),
    /// The server could not be reached.
    #[error(
        "cannot reach the lovebeat server at {server}: {}",
        error_chain(source)
    )]
    Unreachable {
        /// The server, as [`Target::shown`] names it.
        server: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    #[error("the lovebeat server at {server} refused '{what}' (HTTP {status}): {message}")]
    Refused {
        /// The server, as [`Target::shown`] names it.
        server: String,
        /// The service and the endpoint.
        what: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The server's error message.
        message: String,
    },
}

/// POSTs to `<server>/api/services/<name><suffix>` with the query `pairs`
/// and `body`.
fn post(
    target: &Target,
    name: &str,
    suffix: &str,
    pairs: &[(&str, &str)],
    body: Vec<u8>,
    json: bool,
) -> Result<(), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Start)?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("lovebeat-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Start(std::io::Error::other(e)))?;
        let url = target.endpoint(&format!("/api/services/{name}{suffix}"), pairs)?;
        let mut req = client.post(url).body(body);
        if json {
            req = req.header("Content-Type", "application/json");
        }
        if let Some(key) = &target.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            server: target.shown(),
            source: e.without_url(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(ClientError::Refused {
            server: target.shown(),
            what: format!("{name}{suffix}"),
            status,
            message: msg,
        })
    })
}

/// Sends one beat with `settings`.
pub fn beat(target: &Target, name: &str, settings: &Settings) -> Result<(), ClientError> {
    post(target, name, "", &settings.pairs(), Vec::new(), false)
}

/// Why a one-shot client command (`ping`, `test-alert`) has no answer
/// to show; each reads as the command printed it before it had a type.
#[derive(Debug, thiserror::Error)]
enum OneShotError {
    /// The command's runtime could not be built.
    #[error("{0}")]
    Runtime(#[source] std::io::Error),
    /// The HTTP client could not be built (no TLS roots).
    #[error("{0}")]
    Client(#[source] reqwest::Error),
    /// `--server` does not parse.
    #[error("{0}")]
    Server(#[from] ClientError),
    /// The request got no answer: the whole chain of causes, without the
    /// URL (it may hold a key).
    #[error("{}", error_chain(.0))]
    Unanswered(reqwest::Error),
    /// The server answered with an error status.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The server answered with an error status and said why.
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The server's `error` message.
        message: String,
    },
    /// One of the above, said of the server it was asked of.
    #[error("{at}: {source}")]
    At {
        /// The server, as [`Target::shown`] names it.
        at: String,
        /// What went wrong there.
        source: Box<OneShotError>,
    },
}

impl OneShotError {
    /// This error, said of the server `at`.
    fn at(self, at: &str) -> OneShotError {
        OneShotError::At {
            at: at.to_string(),
            source: Box::new(self),
        }
    }
}

/// Runs `f` with an HTTP client (`timeout`, lovebeat's user agent) on a
/// runtime of its own: what each one-shot client command needs.
fn with_client<T, F, Fut>(timeout: Duration, f: F) -> Result<T, OneShotError>
where
    F: FnOnce(reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, OneShotError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(OneShotError::Runtime)?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("lovebeat-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(OneShotError::Client)?;
    runtime.block_on(f(client))
}

/// `lovebeat ping`: 0 when the server answers `/version`, 1 otherwise
/// (for container health checks and scripts).
pub fn ping_command(target: &Target) -> ExitCode {
    let result = with_client(Duration::from_secs(5), |client| async move {
        let url = target.endpoint("/version", &[])?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| OneShotError::Unanswered(e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(OneShotError::Status(resp.status()))
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "lovebeat: {}",
                target.scrub(&format!(
                    "the lovebeat server at {} does not answer: {e}",
                    target.shown()
                ))
            );
            ExitCode::from(1)
        }
    }
}

/// `lovebeat beat`: 0 when the beat was accepted, 1 otherwise.
pub fn beat_command(target: &Target, name: &str, settings: &Settings) -> ExitCode {
    match beat(target, name, settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovebeat: {}", target.scrub(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// Output kept for the failure report: what the server keeps.
const OUTPUT_TAIL: usize = crate::engine::job::OUTPUT_LIMIT;

/// Copies a child's pipe to our own stream untouched, keeping its tail.
fn tee(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    tail: Arc<Mutex<VecDeque<u8>>>,
) -> std::thread::JoinHandle<()> {
    // The client has no shutdown to track it: `run_command` joins it.
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let _ = to.write_all(&buf[..n]);
            let _ = to.flush();
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            t.extend(&buf[..n]);
            let excess = t.len().saturating_sub(OUTPUT_TAIL);
            t.drain(..excess);
        }
    })
}

/// `lovebeat test-alert <name>`: asks the server to send a test to every
/// alerter of the alert, prints each one's result, and exits 0 when every
/// one delivered it, 1 otherwise (or when the server refused).
pub fn test_alert_command(target: &Target, name: &str) -> ExitCode {
    // The server takes no escapes in a path (one spelling per path, for
    // the key check): a name that needs one cannot be asked for.
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~');
    if name.is_empty() || !name.chars().all(plain) {
        eprintln!(
            "lovebeat: alert '{}' cannot be tested over HTTP: only names of letters, digits, '.', '_', '-' and '~' can (rename its [alerts.<name>] section)",
            name.escape_debug()
        );
        return ExitCode::from(2);
    }
    let shown = target.shown();
    let at = shown.as_str();
    let result = with_client(Duration::from_secs(60), |client| async move {
        let base = at;
        let url = target.endpoint(&format!("/api/alerts/{name}/test"), &[])?;
        let mut req = client.post(url);
        if let Some(key) = &target.key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| OneShotError::Unanswered(e.without_url()).at(base))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("").to_string();
            return Err(OneShotError::Refused {
                status,
                message: msg,
            }
            .at(base));
        }
        Ok(body)
    });
    let body = match result {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lovebeat: {}", target.scrub(&e.to_string()));
            return ExitCode::from(1);
        }
    };
    let results = body["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("alert {name} has no alerters");
    }
    for r in &results {
        let kind = r["alerter"].as_str().unwrap_or("?");
        match r["error"].as_str() {
            None => println!("{kind}: delivered"),
            Some(e) => println!("{kind}: NOT delivered: {e}"),
        }
    }
    if body["delivered"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `lovebeat report --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// A block per alarm, for people.
    Text,
    /// The server's CSV.
    Csv,
    /// The server's JSON.
    Json,
}

/// What `lovebeat report` asks the server for (`GET /api/reports`).
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// `--since`.
    pub since: Option<String>,
    /// `--until`.
    pub until: Option<String>,
    /// `--alarms`.
    pub alarms: Option<String>,
    /// `--tz`.
    pub tz: Option<String>,
}

/// `lovebeat report`: prints the report the server computes, as text
/// (rendered here from its JSON, as the mail's text part is), CSV or
/// JSON; exit 0, or 1 with the server's reason.
pub fn report_command(target: &Target, query: &ReportQuery, format: ReportFormat) -> ExitCode {
    let shown = target.shown();
    let at = shown.as_str();
    let mut pairs: Vec<(&str, &str)> = [
        ("since", &query.since),
        ("until", &query.until),
        ("alarms", &query.alarms),
        ("tz", &query.tz),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    .collect();
    if format == ReportFormat::Csv {
        pairs.push(("format", "csv"));
    }
    let result = with_client(Duration::from_secs(120), |client| async move {
        let url = target.endpoint("/api/reports", &pairs)?;
        let mut req = client.get(url);
        if let Some(key) = &target.key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| OneShotError::Unanswered(e.without_url()).at(at))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| OneShotError::Unanswered(e.without_url()).at(at))?;
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(OneShotError::Refused { status, message }.at(at));
        }
        Ok(body)
    });
    let body = match result {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lovebeat: {}", target.scrub(&e.to_string()));
            return ExitCode::from(1);
        }
    };
    match format {
        ReportFormat::Csv => print!("{body}"),
        ReportFormat::Json => println!("{}", body.trim_end()),
        ReportFormat::Text => match serde_json::from_str::<crate::reports::Report>(&body) {
            Ok(r) => print!("{}", crate::reports::render::text(&r)),
            Err(e) => {
                eprintln!("lovebeat: the server's report does not read as one: {e}");
                return ExitCode::from(1);
            }
        },
    }
    ExitCode::SUCCESS
}

/// `lovebeat run`: reports the start, runs the command (its output still
/// reaches the terminal), then reports `exit/<code>` with the last 10 KiB of
/// its combined output, and exits with the command's status (128 + signal
/// if killed, 127 if it cannot be started). Reporting problems are printed
/// but never change the exit status.
pub fn run_command(
    target: &Target,
    name: &str,
    settings: &Settings,
    command: &[String],
) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("lovebeat: run needs a command after --");
        return ExitCode::from(2);
    };
    let report = |what: &str, r: Result<(), ClientError>| {
        if let Err(e) = r {
            eprintln!(
                "lovebeat: could not report the {what}: {}",
                target.scrub(&e.to_string())
            );
        }
    };
    if !settings.pairs().is_empty() {
        let body = settings_json(settings).into_bytes();
        report("settings", post(target, name, "", &[], body, true));
    }
    report(
        "start",
        post(target, name, "/start", &[], Vec::new(), false),
    );
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(OUTPUT_TAIL)));
    let mut child = match Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lovebeat: cannot run '{program}': {e}");
            let msg = format!("lovebeat: cannot run '{program}': {e}\n");
            report(
                "failure",
                post(target, name, "/exit/127", &[], msg.into_bytes(), false),
            );
            return ExitCode::from(127);
        }
    };
    let mut pipes = Vec::new();
    if let Some(out) = child.stdout.take() {
        pipes.push(tee(out, std::io::stdout(), tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        pipes.push(tee(err, std::io::stderr(), tail.clone()));
    }
    let status = child.wait();
    for p in pipes {
        let _ = p.join();
    }
    let code = match status {
        Ok(s) => match s.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + s.signal().unwrap_or(0)
            }
        },
        Err(e) => {
            eprintln!("lovebeat: lost track of '{program}': {e}");
            1
        }
    };
    let code = u8::try_from(code).unwrap_or(1);
    let output: Vec<u8> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let body = if code == 0 { Vec::new() } else { output };
    report(
        "exit status",
        post(target, name, &format!("/exit/{code}"), &[], body, false),
    );
    ExitCode::from(code)
}

/// The settings as a JSON body that sets them without a beat.
fn settings_json(settings: &Settings) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("beat".into(), serde_json::Value::Bool(false));
    for (k, v) in settings.pairs() {
        obj.insert(k.into(), serde_json::Value::String(v.to_string()));
    }
    serde_json::Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_scrubs_its_password_user_query_and_key_also_decoded() {
        let t = Target {
            server: "https://tokenUser:p%40ssWord@host:8443/base?key=k3y%2Fvalue&x=1#frag".into(),
            key: Some("Bearer-key-1".into()),
        };
        assert_eq!(t.shown(), "https://host:8443/…");
        let text = "tokenUser p%40ssWord p@ssWord k3y%2Fvalue k3y/value Bearer-key-1 host";
        assert_eq!(t.scrub(text), "… … … … … … host");
    }

    /// A password with an unescaped `#`, `/` or `?` is read as a host and
    /// port: the name printed must hold none of it.
    #[test]
    fn a_server_whose_password_the_parser_misreads_is_named_by_its_scheme_only() {
        for (server, password) in [
            ("http://admin:hunter2#x@127.0.0.1:1/", "hunter2#x"),
            ("http://user:Pass/word@127.0.0.1:1/", "Pass/word"),
            ("http://admin:hun?ter2@127.0.0.1:1/", "hun?ter2"),
            ("http://h/path@x", "h/path"),
        ] {
            let t = Target {
                server: server.into(),
                key: None,
            };
            let shown = t.shown();
            assert!(
                ["http://…", "<the --server URL, which does not parse>"].contains(&shown.as_str()),
                "{server}: {shown}"
            );
            let scrubbed = t.scrub(&format!("pw {password}."));
            assert_eq!(scrubbed, "pw ….", "{server}");
        }
        let t = Target {
            server: "not a url hunter2".into(),
            key: None,
        };
        assert_eq!(t.shown(), "<the --server URL, which does not parse>");
    }

    /// A server or proxy that echoes the request echoes the password as
    /// `Authorization: Basic` carries it.
    #[test]
    fn a_target_scrubs_its_credentials_in_basic_authorization_form() {
        use base64::Engine as _;
        let t = Target {
            server: "http://urlUser1:Pa%24%24word@127.0.0.1:1/".into(),
            key: None,
        };
        let basic = base64::engine::general_purpose::STANDARD.encode("urlUser1:Pa$$word");
        let text = format!("authorization: Basic {basic}");
        assert_eq!(t.scrub(&text), "authorization: Basic …");
    }

    /// The API path goes before the server URL's own query, after its
    /// own path.
    #[test]
    fn endpoints_keep_the_servers_path_prefix_and_query() {
        let t = |s: &str| Target {
            server: s.into(),
            key: None,
        };
        let url = |s: &str, pairs: &[(&str, &str)]| {
            t(s).endpoint("/api/services/x", pairs)
                .map(|u| u.to_string())
                .expect("a URL")
        };
        assert_eq!(
            url("http://h/lb/?key=Q", &[("timeout", "5")]),
            "http://h/lb/api/services/x?key=Q&timeout=5"
        );
        assert_eq!(url("http://h:8080", &[]), "http://h:8080/api/services/x");
        assert_eq!(
            url("http://h/?key=Q#f", &[]),
            "http://h/api/services/x?key=Q"
        );
        assert!(t("http://h:bad").endpoint("/version", &[]).is_err());
    }
}
