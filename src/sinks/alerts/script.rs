//! The script alerter (README, "Alerts"): runs an executable with the alarm in its
//! environment, logs its output line by line, kills its process group after
//! 10 seconds.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use futures_util::future::BoxFuture;

use super::alerter::{each, Alerter, Pool};
use super::config::AlertsConfig;
use super::delivery::Senders;
use super::DeliveryError;
use super::Notice;

/// How long a script may run.
pub(super) const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest value put in the script's environment, in bytes. Linux refuses
/// to start a program with a single environment string over 128 KiB; a
/// job's output is at most 10 KiB, but names loaded from a database are
/// taken as they are.
pub(super) const MAX_ENV_VALUE: usize = 64 * 1024;

/// `text` as an environment value the script can always be started with:
/// a NUL (which no environment string can hold: the spawn would fail, and
/// with it every alert of the alarm) becomes U+FFFD, and an overlong
/// value keeps its last `MAX_ENV_VALUE` bytes, cut at a character.
pub(super) fn env_value(text: &str) -> String {
    let mut start = text.len().saturating_sub(MAX_ENV_VALUE);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].replace('\0', "\u{fffd}")
}

/// Runs the script; an error if it cannot start, exits non-zero, or is
/// killed for running too long.
pub(super) async fn run(path: &str, n: &Notice) -> std::io::Result<()> {
    let mut cmd = Command::new(path);
    cmd.env("LOVEBEAT_ALARM", env_value(&n.alarm.name))
        .env("LOVEBEAT_STATE", n.alarm.state.as_upper())
        .env("LOVEBEAT_PREVIOUS_STATE", n.previous.as_upper())
        .env("LOVEBEAT_INCIDENT", n.alarm.incident_nbr.to_string())
        // Every name, as 1.x gave them (a script may split the list),
        // within what the kernel takes.
        .env(
            "LOVEBEAT_FAILED_SERVICES",
            env_value(&n.alarm.failed_services.join(", ")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(url) = &n.url {
        cmd.env("LOVEBEAT_URL", env_value(url));
    }
    if let Some(f) = &n.failure {
        cmd.env("LOVEBEAT_OUTPUT", env_value(&f.output));
        if let Some(c) = f.exit_code {
            cmd.env("LOVEBEAT_EXIT_CODE", c.to_string());
        }
    }
    if n.test {
        cmd.env("LOVEBEAT_TEST", "1");
    }
    if n.repeat > 0 {
        cmd.env("LOVEBEAT_REPEAT", n.repeat.to_string());
    }
    match n.flapping {
        Some(super::Flapping::Started { .. }) => {
            cmd.env("LOVEBEAT_FLAPPING", "1");
        }
        Some(super::Flapping::Stopped) => {
            cmd.env("LOVEBEAT_FLAPPING", "0");
        }
        None => {}
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let alarm = n.alarm.name.to_string();
    // The readers are not in a tracker of their own: this delivery's task
    // (in the alert tracker) waits for them or aborts them before it ends.
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(log_lines(
            BufReader::new(out),
            path.to_string(),
            alarm.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(log_lines(
            BufReader::new(err),
            path.to_string(),
            alarm.clone(),
        )));
    }
    let status = match tokio::time::timeout(SCRIPT_TIMEOUT, child.wait()).await {
        Ok(s) => s?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the process group of a child we started
                // in its own group; the worst case is ESRCH.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            let _ = child.wait().await;
            for r in readers {
                r.abort();
            }
            return Err(std::io::Error::other(format!(
                "script {path} killed after {} s",
                SCRIPT_TIMEOUT.as_secs()
            )));
        }
    };
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
    }
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "script {path} exited with {status}"
        )))
    }
}

async fn log_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    path: String,
    alarm: String,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(
            "script {path} (alarm {}): {}",
            alarm.escape_debug(),
            line.escape_debug()
        );
    }
}

/// An executable run for each change, with the alarm in its environment.
#[derive(Debug, Clone)]
pub(super) struct ScriptAlerter {
    /// Its path.
    path: String,
}

/// The script alerter of `alert`, if its `script` is set.
pub(super) fn alerter(alert: &super::config::AlertConfig) -> Option<std::sync::Arc<dyn Alerter>> {
    let path = alert.script.as_ref().filter(|s| !s.is_empty())?;
    Some(std::sync::Arc::new(ScriptAlerter { path: path.clone() }))
}

impl Alerter for ScriptAlerter {
    fn kind(&self) -> &'static str {
        "script"
    }

    fn groups(&self) -> bool {
        false
    }

    fn pool(&self) -> Pool {
        Pool::Scripts
    }

    fn secrets(&self, _shared: &AlertsConfig) -> Vec<String> {
        Vec::new()
    }

    fn describe(&self, _shared: &AlertsConfig) -> String {
        format!("script {}", self.path)
    }

    fn send<'a>(
        &'a self,
        _senders: &'a Senders,
        group: &'a [&'a Notice],
    ) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let path = self.path.as_str();
        Box::pin(each(group, move |n| async move {
            run(path, n)
                .await
                .map_err(|e| DeliveryError::permanent(e.to_string()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_hold_no_nul_and_fit_the_kernel_limit() {
        assert_eq!(env_value("disk\0full"), "disk\u{fffd}full");
        assert_eq!(env_value("plain"), "plain");
        let long = format!("é{}", "x".repeat(MAX_ENV_VALUE));
        let v = env_value(&long);
        assert!(v.len() <= MAX_ENV_VALUE && v.ends_with('x'));
        // A cut inside a character moves past it.
        let long = format!("{}é", "x".repeat(MAX_ENV_VALUE - 1));
        assert_eq!(
            env_value(&long),
            format!("{}é", "x".repeat(MAX_ENV_VALUE - 2))
        );
    }
}
