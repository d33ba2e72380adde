//! `loadtest`: the throughput, latency and memory figures of lovebeat.
//!
//! - `blast` sends statsd lines (UDP with `sendmmsg`, or TCP);
//! - `sink` is the reference receiver, the physical limit;
//! - `run` starts the release daemon and prints the table of BENCHMARKS.md.

mod blast;
mod dbgen;
mod hostile;
mod run;
mod sink;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", about = "Load figures for lovebeat")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send statsd lines to a target.
    Blast {
        #[arg(long, default_value = "127.0.0.1:8127")]
        target: SocketAddr,
        /// Distinct service names.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        #[arg(long, default_value_t = 20)]
        lines_per_packet: usize,
        /// Lines per second, 0 = flat out.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seconds to send for.
        #[arg(long)]
        duration: Option<f64>,
        /// Lines to send.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, value_enum, default_value = "beat")]
        kind: blast::Kind,
        /// Each service once, in order.
        #[arg(long)]
        sequential: bool,
        /// Use one TCP connection instead of UDP.
        #[arg(long)]
        tcp: bool,
        #[arg(long, default_value = "loadtest")]
        prefix: String,
    },
    /// Receive and count lines, as fast as the machine allows.
    Sink {
        #[arg(long, default_value = "127.0.0.1:8127")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        sockets: usize,
        /// Stop after this long without a datagram.
        #[arg(long, default_value_t = 1000)]
        idle_ms: u64,
        /// Stop after this long in any case.
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Run the scenarios against the release daemon and print the table.
    Run {
        /// Scenarios to run (default: all).
        scenarios: Vec<String>,
        /// Small sizes, under a minute: checks that every scenario runs.
        #[arg(long)]
        quick: bool,
        /// The daemon binary (default: target/figures/lovebeat, built first).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Blast {
            target,
            services,
            lines_per_packet,
            rate,
            duration,
            count,
            kind,
            sequential,
            tcp,
            prefix,
        } => {
            let r = blast::blast(&blast::BlastOpts {
                target,
                services,
                lines_per_packet,
                rate,
                count,
                duration: duration.map(Duration::from_secs_f64),
                kind,
                sequential,
                tcp,
                prefix,
            })?;
            println!(
                "sent {} lines in {} packets in {:.3} s: {:.0} lines/s, {:.0} packets/s",
                r.lines,
                r.packets,
                r.elapsed.as_secs_f64(),
                r.lines_per_sec(),
                r.packets_per_sec()
            );
            Ok(())
        }
        Cmd::Sink {
            listen,
            sockets,
            idle_ms,
            max_secs,
        } => sink::run(
            listen,
            sockets,
            Duration::from_millis(idle_ms),
            Duration::from_secs(max_secs),
        ),
        Cmd::Run {
            scenarios,
            quick,
            daemon,
        } => {
            for s in &scenarios {
                anyhow::ensure!(
                    run::SCENARIOS.contains(&s.as_str()),
                    "unknown scenario '{s}' (known: {})",
                    run::SCENARIOS.join(", ")
                );
            }
            let bin = match daemon {
                Some(b) => b,
                None => build_daemon()?,
            };
            // The daemon runs in a temporary directory.
            let bin = std::fs::canonicalize(&bin)
                .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
            let scale = if quick {
                run::Scale::quick()
            } else {
                run::Scale::full()
            };
            run::run(&bin, scale, &scenarios)
        }
    }
}

/// Builds the daemon with the `figures` profile (the build BENCHMARKS.md's
/// figures come from) and returns its path.
fn build_daemon() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--profile", "figures", "--bin", "lovebeat"])
            .current_dir(&root)
            .status()?;
    anyhow::ensure!(status.success(), "building the daemon failed");
    Ok(root.join("target/figures/lovebeat"))
}
