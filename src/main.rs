//! The `lovebeat` binary: parse the command line, load the configuration,
//! run, and map errors to exit codes (2: bad config or arguments, 1: runtime).

use std::io::BufRead;
use std::process::ExitCode;

use lovebeat::cli::{self, Command};
use lovebeat::client;
use lovebeat::config::Config;
use lovebeat::engine::auto;

fn main() -> ExitCode {
    let cli = cli::parse();
    lovebeat::logging::init(cli.debug, cli.syslog.then_some(cli.syslog_socket.as_path()));
    match cli.command {
        Some(Command::ValidateAuto { algorithm }) => return validate_auto(algorithm),
        Some(Command::CheckConfig { files }) => {
            let (config, dir) = files.or_from(cli.config.as_deref(), &cli.config_dir);
            return match Config::load(config.as_deref(), &dir) {
                Ok(c) => {
                    print!("{}", c.summary());
                    for w in c.warnings() {
                        println!("warning: {w}");
                    }
                    println!("configuration OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lovebeat: configuration error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(Command::Ping { server }) => {
            return client::ping_command(&client::Target::resolve(server.server, server.key));
        }
        Some(Command::Report {
            since,
            until,
            alarms,
            tz,
            format,
            server,
        }) => {
            let target = client::Target::resolve(server.server, server.key);
            let query = client::ReportQuery {
                since,
                until,
                alarms,
                tz,
            };
            return client::report_command(&target, &query, format);
        }
        Some(Command::TestAlert { name, server }) => {
            let target = client::Target::resolve(server.server, server.key);
            return client::test_alert_command(&target, &name);
        }
        Some(Command::Beat { name, client }) => {
            let settings = client.settings();
            let target = client::Target::resolve(client.server.server, client.server.key);
            return client::beat_command(&target, &name, &settings);
        }
        Some(Command::Run {
            name,
            client,
            command,
        }) => {
            let settings = client.settings();
            let target = client::Target::resolve(client.server.server, client.server.key);
            return client::run_command(&target, &name, &settings, &command);
        }
        None => lovebeat::daemon::reexec_with_huge_pages(),
    }
    let config = match Config::load(cli.config.as_deref(), &cli.config_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lovebeat: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lovebeat: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(lovebeat::daemon::run(config));
    // Tasks still running (a delivery whose time ran out, a blocking
    // read) are not waited for past the shutdown's deadline.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lovebeat: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `lovebeat validate-auto`: one interval (ms) per line in, the automatic
/// timeout for all intervals so far out, by `algorithm`.
fn validate_auto(algorithm: auto::Algorithm) -> ExitCode {
    let mut history: Vec<u32> = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lovebeat: reading stdin: {e}");
                return ExitCode::from(1);
            }
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match text.parse::<u32>() {
            Ok(v) => {
                history.push(v);
                println!("{}", algorithm.timeout(history.iter().copied()));
            }
            Err(_) => {
                eprintln!(
                    "lovebeat: line {}: '{text}' is not an interval in ms",
                    n + 1
                );
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
