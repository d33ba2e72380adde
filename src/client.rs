//! Client subcommands for cron jobs and scripts (SPEC §9): `lovebeat beat`
//! sends one beat over HTTP; `lovebeat run` runs a command and beats only if
//! it succeeds, passing its output and exit status through untouched.

use std::process::{Command, ExitCode};
use std::time::Duration;

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
}

/// Sends one beat; the error is a sentence for the user.
pub fn beat(target: &Target, name: &str, timeout: Option<&str>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("lovebeat-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        let base = target.server.trim_end_matches('/');
        let mut url = format!("{base}/api/services/{name}");
        if let Some(t) = timeout {
            url.push_str("?timeout=");
            url.extend(form_urlencoded::byte_serialize(t.as_bytes()));
        }
        let mut req = client.post(&url);
        if let Some(key) = &target.key {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the lovebeat server at {base}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(format!(
            "the lovebeat server at {base} refused the beat for '{name}' (HTTP {status}): {msg}"
        ))
    })
}

/// `lovebeat ping`: 0 when the server answers `/version`, 1 otherwise
/// (for container health checks and scripts).
pub fn ping_command(target: &Target) -> ExitCode {
    let base = target.server.trim_end_matches('/').to_string();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                let resp = client
                    .get(format!("{base}/version"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", resp.status()))
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovebeat: the lovebeat server at {base} does not answer: {e}");
            ExitCode::from(1)
        }
    }
}

/// `lovebeat beat`: 0 when the beat was accepted, 1 otherwise.
pub fn beat_command(target: &Target, name: &str, timeout: Option<&str>) -> ExitCode {
    match beat(target, name, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovebeat: {e}");
            ExitCode::from(1)
        }
    }
}

/// `lovebeat run`: runs the command with its stdio untouched, beats if it
/// exits 0, and exits with the command's status (128 + signal if killed,
/// 127 if it cannot be started).
pub fn run_command(
    target: &Target,
    name: &str,
    timeout: Option<&str>,
    command: &[String],
) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("lovebeat: run needs a command after --");
        return ExitCode::from(2);
    };
    let status = match Command::new(program).args(args).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lovebeat: cannot run '{program}': {e}");
            return ExitCode::from(127);
        }
    };
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    if code == 0 {
        if let Err(e) = beat(target, name, timeout) {
            eprintln!("lovebeat: the command succeeded but the beat was not sent: {e}");
        }
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
