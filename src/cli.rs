//! Command line: clap, plus 1.x's single-dash spellings (`-config FILE`,
//! `-debug`, `-validate-auto`) so 1.x service files keep working.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_DIR;

/// lovebeat: a heartbeat monitor, compatible with Lovebeat 1.x.
#[derive(Debug, Parser)]
#[command(
    name = "lovebeat",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("LOVEBEAT_GIT_REV"), ")"),
    about,
    long_about = None
)]
// The daemon's flags are not `global`: a global flag is listed in every
// subcommand's --help, and the client commands (run from cron, with their
// own --help as their manual) take none of them. `check-config` takes the
// two that name the configuration, as its own (`ConfigFiles`).
pub struct Cli {
    /// Configuration file (must exist). Default: /etc/lovebeat.cfg if present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of extra configuration files, read in name order.
    #[arg(long = "config-dir", value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Log debug messages.
    #[arg(long)]
    pub debug: bool,
    /// Log to the local syslog instead of stderr.
    #[arg(long)]
    pub syslog: bool,
    /// The syslog socket used with --syslog.
    #[arg(long = "syslog-socket", value_name = "PATH", default_value = crate::logging::DEFAULT_SYSLOG_SOCKET)]
    pub syslog_socket: PathBuf,
    /// What to do; without a command, run the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read intervals (ms, one per line) on stdin and print the automatic
    /// timeout after each.
    ValidateAuto {
        /// The algorithm (lovebeat1, robust); see docs/AUTO.md.
        #[arg(long, default_value = "lovebeat1")]
        algorithm: crate::engine::auto::Algorithm,
    },
    /// Read and check the configuration as a start would, and print what
    /// it sets up (exit 0) or the error with its file, line and key (exit
    /// 2); for a systemd unit's ExecStartPre, or before a restart.
    CheckConfig {
        /// The configuration to check, when named after the subcommand.
        #[command(flatten)]
        files: ConfigFiles,
    },
    /// Send a marked test to every alerter of an alert
    /// (`[alerts.<name>]`) through a running server, and print per
    /// alerter whether it was delivered (exit 0 when all were, 1 if not).
    TestAlert {
        /// The alert's name.
        name: String,
        /// Where the server is and how to reach it (a write key).
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the alarms' uptime report over a range (README, "Reports")
    /// from a running server: per alarm, uptime, incidents, downtime,
    /// MTTR and maintenance, against the period before.
    Report {
        /// Start: RFC 3339 or ms since the epoch (with --until; without
        /// both, the last whole month).
        #[arg(long, requires = "until")]
        since: Option<String>,
        /// End, excluded: RFC 3339 or ms since the epoch.
        #[arg(long, requires = "since")]
        until: Option<String>,
        /// Alarms to report, comma-separated (default: every alarm).
        #[arg(long)]
        alarms: Option<String>,
        /// Time zone (IANA) that names the period and shows its times.
        #[arg(long)]
        tz: Option<String>,
        /// Output: text, csv or json.
        #[arg(long, default_value = "text")]
        format: crate::client::ReportFormat,
        /// Where the server is and how to reach it (a read key).
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check that a lovebeat server answers (exit 0) or not (exit 1).
    Ping {
        /// Where the server is and how to reach it.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send one beat to a lovebeat server over HTTP.
    Beat {
        /// The service name.
        name: String,
        /// Where the server is and how to reach it.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a command, reporting its start and exit code (with the tail of
    /// its output) to lovebeat; exits with its status.
    Run {
        /// The service name.
        name: String,
        /// Where the server is and how to reach it.
        #[command(flatten)]
        client: ClientArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// `check-config`'s own `--config` and `--config-dir`, so that
/// `lovebeat check-config --config FILE` (the systemd unit's
/// ExecStartPre) reads as it did while those flags were global; either
/// may also come before the subcommand, as for the daemon.
#[derive(Debug, clap::Args)]
pub struct ConfigFiles {
    /// Configuration file (must exist). Default: /etc/lovebeat.cfg if present.
    #[arg(long = "config", id = "check_config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of extra configuration files, read in name order.
    #[arg(long = "config-dir", id = "check_config_dir", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
}

impl ConfigFiles {
    /// The file and directory to read: these, else the ones given before
    /// the subcommand (or their defaults).
    pub fn or_from(self, config: Option<&Path>, config_dir: &Path) -> (Option<PathBuf>, PathBuf) {
        (
            self.config.or_else(|| config.map(Path::to_path_buf)),
            self.config_dir.unwrap_or_else(|| config_dir.to_path_buf()),
        )
    }
}

/// Where the server is and how to reach it: what every client
/// subcommand takes.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The lovebeat server (default: $LOVEBEAT_URL, else http://localhost:8080).
    #[arg(long)]
    pub server: Option<String>,
    /// API key (default: $LOVEBEAT_KEY).
    #[arg(long)]
    pub key: Option<String>,
}

/// Options of the client subcommands that report a service (`beat`,
/// `run`): its settings, and the server.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Timeout to set: seconds, a duration (90s, 1h30m, 2d) or auto.
    #[arg(long, conflicts_with = "schedule")]
    pub timeout: Option<String>,
    /// Cron schedule to follow instead of a timeout, e.g. "0 3 * * *".
    #[arg(long)]
    pub schedule: Option<String>,
    /// Time zone of the schedule (IANA name; default UTC).
    #[arg(long, requires = "schedule")]
    pub tz: Option<String>,
    /// How late after a fire time a beat may come (default 5m).
    #[arg(long, requires = "schedule")]
    pub grace: Option<String>,
    /// Longest a run may take before it counts as failed.
    #[arg(long)]
    pub max_runtime: Option<String>,
    /// Where the server is and how to reach it.
    #[command(flatten)]
    pub server: ServerArgs,
}

impl ClientArgs {
    /// What a beat sets besides the beat.
    pub fn settings(&self) -> crate::client::Settings {
        crate::client::Settings {
            timeout: self.timeout.clone(),
            schedule: self.schedule.clone(),
            tz: self.tz.clone(),
            grace: self.grace.clone(),
            max_runtime: self.max_runtime.clone(),
        }
    }
}

/// 1.x flags that take a value.
const VALUE_FLAGS: &[&str] = &["config", "config-dir", "syslog-socket"];
/// 1.x boolean flags.
const BOOL_FLAGS: &[&str] = &["debug", "syslog", "version", "help"];

/// Rewrites 1.x single-dash flags to their clap spelling.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut validate = false;
    for (i, arg) in args.into_iter().enumerate() {
        let Some(s) = arg.to_str().filter(|_| i > 0) else {
            out.push(arg);
            continue;
        };
        let Some(flag) = s
            .strip_prefix('-')
            .filter(|f| !f.starts_with('-') && f.len() > 1)
        else {
            out.push(arg);
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name == "validate-auto" {
            validate = !matches!(value, Some("false"));
        } else if VALUE_FLAGS.contains(&name) {
            out.push(format!("--{flag}").into());
        } else if BOOL_FLAGS.contains(&name) {
            if !matches!(value, Some("false")) {
                out.push(format!("--{name}").into());
            }
        } else {
            out.push(arg);
        }
    }
    if validate {
        out.push("validate-auto".into());
    }
    out
}

/// Parses the process arguments (exits with status 2 on bad arguments).
pub fn parse() -> Cli {
    Cli::parse_from(normalize_args(std::env::args_os()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn single_dash_1x_flags_are_rewritten() {
        assert_eq!(
            norm(&["lovebeat", "-config", "/x.cfg", "-debug", "-config-dir=/d"]),
            vec![
                "lovebeat",
                "--config",
                "/x.cfg",
                "--debug",
                "--config-dir=/d"
            ]
        );
        assert_eq!(
            norm(&["lovebeat", "-validate-auto", "-debug"]),
            vec!["lovebeat", "--debug", "validate-auto"]
        );
        assert_eq!(
            norm(&["lovebeat", "-debug=false", "-h"]),
            vec!["lovebeat", "-h"]
        );
        let cli = Cli::parse_from(normalize_args(
            ["lovebeat", "-config", "a.cfg"].map(OsString::from),
        ));
        assert_eq!(cli.config, Some(PathBuf::from("a.cfg")));
    }

    #[test]
    fn check_config_reads_the_files_named_before_or_after_it() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            let Some(Command::CheckConfig { files }) = cli.command else {
                panic!("not check-config");
            };
            files.or_from(cli.config.as_deref(), &cli.config_dir)
        };
        let want = (Some(PathBuf::from("a.cfg")), PathBuf::from("d"));
        assert_eq!(
            parse(&[
                "lovebeat",
                "check-config",
                "--config",
                "a.cfg",
                "--config-dir",
                "d"
            ]),
            want
        );
        assert_eq!(
            parse(&[
                "lovebeat",
                "--config",
                "a.cfg",
                "--config-dir",
                "d",
                "check-config"
            ]),
            want
        );
        assert_eq!(
            parse(&["lovebeat", "check-config"]),
            (None, PathBuf::from(DEFAULT_CONFIG_DIR))
        );
        // The daemon's other flags are not the client commands'.
        assert!(Cli::try_parse_from(["lovebeat", "ping", "--syslog"]).is_err());
        assert!(Cli::try_parse_from(["lovebeat", "--debug", "--syslog"]).is_ok());
    }
}
