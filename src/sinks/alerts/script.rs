//! The script alerter (SPEC §6.4): runs an executable with the alarm in its
//! environment, logs its output line by line, kills its process group after
//! 10 seconds.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::{failed_list, Notice};

/// How long a script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the script; an error if it cannot start, exits non-zero, or is
/// killed for running too long.
pub async fn run(path: &str, n: &Notice) -> std::io::Result<()> {
    let mut cmd = Command::new(path);
    cmd.env("LOVEBEAT_ALARM", n.alarm.name.as_ref())
        .env("LOVEBEAT_STATE", n.alarm.state.as_upper())
        .env("LOVEBEAT_PREVIOUS_STATE", n.previous.as_upper())
        .env("LOVEBEAT_INCIDENT", n.alarm.incident_nbr.to_string())
        .env("LOVEBEAT_FAILED_SERVICES", failed_list(&n.alarm))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(url) = &n.url {
        cmd.env("LOVEBEAT_URL", url);
    }
    if let Some(f) = &n.failure {
        cmd.env("LOVEBEAT_OUTPUT", &f.output);
        if let Some(c) = f.exit_code {
            cmd.env("LOVEBEAT_EXIT_CODE", c.to_string());
        }
    }
    if n.repeat > 0 {
        cmd.env("LOVEBEAT_REPEAT", n.repeat.to_string());
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let alarm = n.alarm.name.to_string();
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
        tracing::info!("script {path} (alarm {alarm}): {line}");
    }
}
