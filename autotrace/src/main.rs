//! `autotrace`: replays seeded synthetic beat traces through automatic
//! timeout detectors and prints the figures of docs/AUTO.md.
//!
//! - `run` prints, for every detector at its default, the tables of false
//!   alarms and detection delays per family, and ours against lovebeat1;
//! - `sweep` prints the trade-off curves (each detector's knob swept);
//! - `plot` writes those curves as SVG files;
//! - `dump` prints one family's beats; `families` lists the suite.

mod detectors;
mod plot;
mod replay;
mod suite;
mod trace;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use detectors::Kind;
use replay::Options;
use suite::{FROZEN_INTERVALS, FROZEN_SEED};

#[derive(Parser)]
#[command(
    name = "autotrace",
    about = "Automatic timeouts replayed on synthetic beat traces"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Which traces.
#[derive(Args, Clone)]
struct SuiteArgs {
    /// Families (default: all).
    #[arg(long = "family", value_name = "NAME")]
    families: Vec<String>,
    /// The suite's seed (the frozen figures use 1).
    #[arg(long, default_value_t = FROZEN_SEED)]
    seed: u64,
    /// Normal intervals per family.
    #[arg(long, default_value_t = FROZEN_INTERVALS)]
    intervals: usize,
    /// Ignore lovebeat's 1000 ms rate limit (every beat is accepted).
    #[arg(long)]
    no_rate_limit: bool,
}

impl SuiteArgs {
    fn options(&self) -> Options {
        Options {
            rate_limit: !self.no_rate_limit,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Every detector at its default on every family: the tables.
    Run {
        #[command(flatten)]
        suite: SuiteArgs,
        /// Detectors (default: all).
        #[arg(long = "detector", value_name = "NAME")]
        detectors: Vec<String>,
        /// Exit with status 1 unless ours meets the acceptance criteria.
        #[arg(long)]
        check: bool,
    },
    /// The trade-off curves as text: one line per family, detector, knob.
    Sweep {
        #[command(flatten)]
        suite: SuiteArgs,
        #[arg(long = "detector", value_name = "NAME")]
        detectors: Vec<String>,
    },
    /// The trade-off curves as SVG files, one per family and one for all.
    Plot {
        #[command(flatten)]
        suite: SuiteArgs,
        /// Output directory.
        #[arg(long, default_value = "docs/auto")]
        out: PathBuf,
    },
    /// One family's beats: trace, arrival (ms), gap (ms), flags.
    Dump {
        family: String,
        #[arg(long, default_value_t = FROZEN_SEED)]
        seed: u64,
        #[arg(long, default_value_t = FROZEN_INTERVALS)]
        intervals: usize,
    },
    /// The families of the suite.
    Families,
}

fn kinds(names: &[String]) -> anyhow::Result<Vec<Kind>> {
    if names.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Kind::parse(n).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown detector '{n}' (known: {})",
                    Kind::ALL.map(Kind::name).join(", ")
                )
            })
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run {
            suite: s,
            detectors,
            check,
        } => {
            let kinds = kinds(&detectors)?;
            let generated = suite::generate(&s.families, s.seed, s.intervals)?;
            let results = suite::run_all(&kinds, &generated, s.options());
            println!(
                "seed {}, {} intervals per family, rate limit {}\n",
                s.seed,
                s.intervals,
                if s.no_rate_limit { "off" } else { "on" }
            );
            print!("{}", suite::tables(&kinds, &generated, &results));
            let find = |k: Kind| kinds.iter().position(|&x| x == k);
            if let (Some(b), Some(o)) = (find(Kind::Lovebeat1), find(Kind::Ours)) {
                let (text, ok) = suite::criteria(&generated, &results[b], &results[o]);
                println!("#### {} against lovebeat1\n\n{text}", Kind::Ours.name());
                if check && !ok {
                    anyhow::bail!("the acceptance criteria are not all met");
                }
            }
            Ok(())
        }
        Cmd::Sweep {
            suite: s,
            detectors,
        } => {
            let kinds = kinds(&detectors)?;
            let generated = suite::generate(&s.families, s.seed, s.intervals)?;
            for &k in &kinds {
                println!("# {}: knob = {}", k.name(), k.knob_name());
            }
            println!(
                "family\tdetector\tknob\tfalse_alarms_per_1000\tmean_delay\tp99_delay\tmissed"
            );
            let line = |family: &str, k: Kind, knob: f64, m: &replay::Metrics| {
                println!(
                    "{family}\t{}\t{knob}\t{:.3}\t{:.3}\t{:.3}\t{}",
                    k.name(),
                    m.false_alarm_rate(),
                    m.mean_delay(),
                    m.p99_delay(),
                    m.missed
                );
            };
            for &k in &kinds {
                for &knob in k.sweep() {
                    let per_family: Vec<replay::Metrics> = generated
                        .iter()
                        .map(|g| suite::evaluate(k, knob, g, s.options()))
                        .collect();
                    for (g, m) in generated.iter().zip(&per_family) {
                        line(g.family.name, k, knob, m);
                    }
                    line("all", k, knob, &suite::aggregate(&per_family));
                }
            }
            Ok(())
        }
        Cmd::Plot { suite: s, out } => {
            let generated = suite::generate(&s.families, s.seed, s.intervals)?;
            std::fs::create_dir_all(&out)?;
            let mut all: Vec<(Kind, Vec<Vec<replay::Metrics>>)> = Vec::new();
            for k in Kind::ALL {
                let per_knob = k
                    .sweep()
                    .iter()
                    .map(|&knob| {
                        generated
                            .iter()
                            .map(|g| suite::evaluate(k, knob, g, s.options()))
                            .collect()
                    })
                    .collect();
                all.push((k, per_knob));
            }
            let point = |k: Kind, i: usize, m: &replay::Metrics| plot::Point {
                delay: m.mean_delay(),
                false_alarms: m.false_alarm_rate(),
                default: k.sweep()[i] == k.default_knob(),
            };
            for (fi, g) in generated.iter().enumerate() {
                let curves: Vec<(Kind, Vec<plot::Point>)> = all
                    .iter()
                    .map(|(k, per_knob)| {
                        let pts = per_knob
                            .iter()
                            .enumerate()
                            .map(|(i, fam)| point(*k, i, &fam[fi]))
                            .collect();
                        (*k, pts)
                    })
                    .collect();
                let path = out.join(format!("{}.svg", g.family.name));
                plot::trade_off(
                    &path,
                    &format!("{} — {}", g.family.name, g.family.about),
                    &curves,
                )?;
                println!("{}", path.display());
            }
            let curves: Vec<(Kind, Vec<plot::Point>)> = all
                .iter()
                .map(|(k, per_knob)| {
                    let pts = per_knob
                        .iter()
                        .enumerate()
                        .map(|(i, fam)| point(*k, i, &suite::aggregate(fam)))
                        .collect();
                    (*k, pts)
                })
                .collect();
            let path = out.join("all.svg");
            plot::trade_off(&path, "all families", &curves)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Dump {
            family,
            seed,
            intervals,
        } => {
            let f = trace::family(&family)
                .ok_or_else(|| anyhow::anyhow!("unknown family '{family}'"))?;
            println!("# {}: {} (seed {seed})", f.name, f.about);
            println!("trace\tat_ms\tgap_ms\tnominal_ms\tflags");
            for (ti, t) in f.traces(seed, intervals).iter().enumerate() {
                let mut prev = None;
                for b in &t.beats {
                    let gap = prev.map_or(String::from("-"), |p: u64| (b.at - p).to_string());
                    let mut flags = Vec::new();
                    if b.lost {
                        flags.push("lost");
                    }
                    if b.after_failure {
                        flags.push("after-failure");
                    }
                    println!(
                        "{ti}\t{}\t{gap}\t{:.0}\t{}",
                        b.at,
                        b.nominal,
                        flags.join(",")
                    );
                    prev = Some(b.at);
                }
            }
            Ok(())
        }
        Cmd::Families => {
            for f in trace::FAMILIES {
                println!("{:<13} {}", f.name, f.about);
            }
            Ok(())
        }
    }
}
