//! `loadtest`: the throughput, latency and memory figures of lovebeat.
//!
//! - `blast` sends statsd lines (UDP with `sendmmsg`, or TCP);
//! - `sink` is the reference receiver, the physical limit;
//! - `run` starts the release daemon and prints the table of BENCHMARKS.md;
//! - `soak` runs it for hours under steady work and fails on a leak or a
//!   lost alert;
//! - `curve` runs scenarios at growing sizes and plots each figure;
//! - `run mass-outage history-queries history-write` measure the history
//!   store (`history.rs`).

mod blast;
mod curve;
mod dbgen;
mod history;
mod hostile;
mod plot;
mod run;
mod sink;
mod soak;
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
        /// Scenarios to run (default: all but the history's, which run
        /// only when named: mass-outage, history-queries, history-write).
        scenarios: Vec<String>,
        /// Small sizes, under a minute: checks that every scenario runs.
        #[arg(long)]
        quick: bool,
        /// Services that go ERROR at once in `mass-outage` (default
        /// 1 000 000; 20 000 with --quick).
        #[arg(long)]
        outage_services: Option<usize>,
        /// Services in the `history-queries` file (default 1 000 000;
        /// 2 000 with --quick).
        #[arg(long)]
        history_services: Option<usize>,
        /// State changes of each of them (default 100; 20 with --quick).
        #[arg(long)]
        history_changes: Option<usize>,
        /// Services flipping in `history-write` (default 1 000 000;
        /// 20 000 with --quick).
        #[arg(long)]
        write_services: Option<usize>,
        /// Flips a second sent in `history-write` (default 250 000;
        /// 20 000 with --quick).
        #[arg(long)]
        write_rate: Option<u64>,
        /// The daemon binary (default: target/figures/lovebeat, built first).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Hours of steady beats, silences, saves, alerts and a websocket
    /// client, sampled every cycle; fails on a lost alert, a late expiry,
    /// or open files, memory, CPU or lateness growing after the warm-up.
    Soak {
        /// Hours to run.
        #[arg(long, conflicts_with = "minutes")]
        hours: Option<f64>,
        /// Minutes to run (instead of --hours).
        #[arg(long)]
        minutes: Option<f64>,
        #[arg(long, default_value_t = 1_000_000)]
        services: usize,
        /// Beats per second.
        #[arg(long, default_value_t = 200_000)]
        rate: u64,
        /// Seconds per cycle: a group of 1 % goes silent, a save, a sample.
        #[arg(long, default_value_t = 60)]
        every: u64,
        /// Minutes of warm-up left out of the trend tests (default: a
        /// third of the run, at most 10).
        #[arg(long)]
        warmup: Option<f64>,
        /// Hard bound on an expiry's lateness, ms.
        #[arg(long, default_value_t = 1000.0)]
        max_lateness_ms: f64,
        /// RSS slope after the warm-up that is a leak, MB/hour.
        #[arg(long, default_value_t = 32.0)]
        max_growth_mb_per_hour: f64,
        /// The CI check: 2 minutes, 50 000 services at 25 000 beats/s,
        /// 20 s cycles, a bound of 3 s on lateness (the debug build on a
        /// shared machine); hard invariants only. Overrides the above.
        #[arg(long)]
        ci: bool,
        /// Where soak.csv and the SVG plots go.
        #[arg(long, default_value = "target/soak")]
        out: PathBuf,
        /// The daemon binary (default: target/figures/lovebeat, built first).
        #[arg(long)]
        daemon: Option<PathBuf>,
    },
    /// Runs scenarios at growing numbers of services and writes the
    /// table and an SVG plot per figure.
    Curve {
        /// Sizes, services (default 10 000, 100 000, 1 000 000; add
        /// 3 000 000 and 10 000 000 when the machine has the memory).
        #[arg(long, value_delimiter = ',')]
        sizes: Vec<usize>,
        /// Where curve.md, curve.csv and the SVG plots go.
        #[arg(long, default_value = "target/curve")]
        out: PathBuf,
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
            outage_services,
            history_services,
            history_changes,
            write_services,
            write_rate,
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
            let mut scale = if quick {
                run::Scale::quick()
            } else {
                run::Scale::full()
            };
            scale.outage_services = outage_services.unwrap_or(scale.outage_services);
            scale.hq_services = history_services.unwrap_or(scale.hq_services);
            scale.hq_changes = history_changes.unwrap_or(scale.hq_changes);
            scale.write_services = write_services.unwrap_or(scale.write_services);
            scale.write_rate = write_rate.unwrap_or(scale.write_rate);
            anyhow::ensure!(
                scale.outage_services >= 100
                    && scale.hq_services >= 1
                    && scale.hq_changes >= 1
                    && scale.write_services >= 1,
                "at least 100 outage services (one per page entry's alarm) and 1 of the others"
            );
            run::run(&bin, scale, &scenarios)
        }
        Cmd::Soak {
            hours,
            minutes,
            services,
            rate,
            every,
            warmup,
            max_lateness_ms,
            max_growth_mb_per_hour,
            ci,
            out,
            daemon,
        } => {
            let minutes = minutes.unwrap_or(hours.unwrap_or(1.0) * 60.0);
            let mut o = soak::SoakOpts {
                services,
                rate,
                duration: Duration::from_secs_f64(minutes * 60.0),
                every: Duration::from_secs(every),
                warmup: Duration::from_secs_f64(warmup.unwrap_or((minutes / 3.0).min(10.0)) * 60.0),
                max_lateness_ms,
                max_growth_mb_per_hour,
                hard_only: false,
                out,
            };
            if ci {
                o = soak::SoakOpts {
                    services: 50_000,
                    rate: 25_000,
                    duration: Duration::from_secs(120),
                    every: Duration::from_secs(20),
                    warmup: Duration::from_secs(60),
                    max_lateness_ms: 3000.0,
                    hard_only: true,
                    ..o
                };
            }
            let bin = daemon_path(daemon)?;
            soak::run(&bin, &o)
        }
        Cmd::Curve { sizes, out, daemon } => {
            let sizes = if sizes.is_empty() {
                vec![10_000, 100_000, 1_000_000]
            } else {
                sizes
            };
            let bin = daemon_path(daemon)?;
            curve::run(&bin, &sizes, &out)
        }
    }
}

/// The daemon to run: `given`, or the figures build, built first.
fn daemon_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(b) => b,
        None => build_daemon()?,
    };
    // The daemon runs in a temporary directory.
    std::fs::canonicalize(&bin).map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))
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
