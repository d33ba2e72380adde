//! Running detectors over the suite and printing the tables.

use std::fmt::Write;

use crate::detectors::Kind;
use crate::replay::{replay, Metrics, Options};
use crate::trace::{Family, Trace, FAMILIES};

/// The frozen suite's seed: the figures of docs/AUTO.md.
pub const FROZEN_SEED: u64 = 1;
/// Normal intervals per family in the frozen suite.
pub const FROZEN_INTERVALS: usize = 20_000;

/// A family with its generated traces.
pub struct Generated {
    /// Which family.
    pub family: &'static Family,
    /// Its traces for the seed, each a service replayed from scratch.
    pub traces: Vec<Trace>,
}

/// Generates the chosen families (all when `names` is empty).
pub fn generate(names: &[String], seed: u64, intervals: usize) -> anyhow::Result<Vec<Generated>> {
    for n in names {
        anyhow::ensure!(
            FAMILIES.iter().any(|f| f.name == n),
            "unknown family '{n}' (known: {})",
            FAMILIES
                .iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(FAMILIES
        .iter()
        .filter(|f| names.is_empty() || names.iter().any(|n| n == f.name))
        .map(|family| Generated {
            family,
            traces: family.traces(seed, intervals),
        })
        .collect())
}

/// One detector at one knob value on one family.
pub fn evaluate(kind: Kind, knob: f64, g: &Generated, opts: Options) -> Metrics {
    let mut total = Metrics::default();
    for t in &g.traces {
        let mut d = kind.build(knob);
        total.merge(&replay(t, d.as_mut(), opts));
    }
    total
}

/// Every detector at its default knob on every family: `results[d][f]`.
pub fn run_all(kinds: &[Kind], suite: &[Generated], opts: Options) -> Vec<Vec<Metrics>> {
    kinds
        .iter()
        .map(|&k| {
            suite
                .iter()
                .map(|g| evaluate(k, k.default_knob(), g, opts))
                .collect()
        })
        .collect()
}

/// All of a detector's families pooled.
pub fn aggregate(per_family: &[Metrics]) -> Metrics {
    let mut total = Metrics::default();
    for m in per_family {
        total.merge(m);
    }
    total
}

/// A number for a table: fixed decimals, "–" for no value.
fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.decimals$}")
    }
}

/// The four tables (false alarms, mean delay, p99 delay, missed) with a
/// row per family and a column per detector, in Markdown.
pub fn tables(kinds: &[Kind], suite: &[Generated], results: &[Vec<Metrics>]) -> String {
    type Col = (&'static str, fn(&Metrics) -> String);
    let metrics: [Col; 4] = [
        ("False alarms per 1000 normal intervals", |m| {
            num(m.false_alarm_rate(), 2)
        }),
        ("Mean detection delay (mean intervals)", |m| {
            num(m.mean_delay(), 3)
        }),
        ("p99 detection delay (mean intervals)", |m| {
            num(m.p99_delay(), 3)
        }),
        ("Missed detections (no alarm within 10 intervals)", |m| {
            m.missed.to_string()
        }),
    ];
    let aggregates: Vec<Metrics> = results.iter().map(|r| aggregate(r)).collect();
    let mut out = String::new();
    for (title, f) in metrics {
        let _ = writeln!(out, "#### {title}\n");
        let _ = write!(out, "| family |");
        for k in kinds {
            let _ = write!(out, " {} |", k.name());
        }
        let _ = write!(out, "\n|---|");
        for _ in kinds {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for (fi, g) in suite.iter().enumerate() {
            let _ = write!(out, "| {} |", g.family.name);
            for r in results {
                let _ = write!(out, " {} |", f(&r[fi]));
            }
            out.push('\n');
        }
        let _ = write!(out, "| **all** |");
        for a in &aggregates {
            let _ = write!(out, " **{}** |", f(a));
        }
        out.push_str("\n\n");
    }
    out
}

/// Ours against lovebeat1, family by family, with the acceptance criteria
/// of issue 20: false alarms no worse on every family and at most half in
/// aggregate, mean delay no worse, p99 delay at most 1.05×, nothing missed.
pub fn criteria(suite: &[Generated], base: &[Metrics], ours: &[Metrics]) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| family | false alarms lovebeat1 → {o} | mean delay lovebeat1 → {o} | p99 delay lovebeat1 → {o} | missed {o} | criteria |\n|---|---:|---:|---:|---:|---|",
        o = Kind::Ours.name()
    );
    let mut all_ok = true;
    let row = |out: &mut String, name: &str, b: &Metrics, o: &Metrics, aggregate: bool| -> bool {
        let mut failed = Vec::new();
        let fa_ok = if aggregate {
            o.false_alarm_rate() <= 0.5 * b.false_alarm_rate()
        } else {
            o.false_alarms as f64 * b.normal_intervals as f64
                <= b.false_alarms as f64 * o.normal_intervals as f64
        };
        if !fa_ok {
            failed.push(if aggregate {
                "false alarms > ½"
            } else {
                "false alarms"
            });
        }
        if o.mean_delay() > b.mean_delay() {
            failed.push("mean delay");
        }
        if o.p99_delay() > 1.05 * b.p99_delay() {
            failed.push("p99 > 1.05×");
        }
        if o.missed > 0 {
            failed.push("missed");
        }
        let verdict = if failed.is_empty() {
            "met".to_string()
        } else {
            format!("**not met: {}**", failed.join(", "))
        };
        let _ = writeln!(
            out,
            "| {name} | {} → {} | {} → {} | {} → {} | {} | {verdict} |",
            num(b.false_alarm_rate(), 2),
            num(o.false_alarm_rate(), 2),
            num(b.mean_delay(), 4),
            num(o.mean_delay(), 4),
            num(b.p99_delay(), 4),
            num(o.p99_delay(), 4),
            o.missed,
        );
        failed.is_empty()
    };
    for (fi, g) in suite.iter().enumerate() {
        all_ok &= row(&mut out, g.family.name, &base[fi], &ours[fi], false);
    }
    let (b, o) = (aggregate(base), aggregate(ours));
    all_ok &= row(&mut out, "**all**", &b, &o, true);
    (out, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_suite_runs_every_detector_on_every_family() {
        let suite = generate(&[], 1, 400).expect("suite");
        assert_eq!(suite.len(), FAMILIES.len());
        let results = run_all(&Kind::ALL, &suite, Options::default());
        for (k, per_family) in Kind::ALL.iter().zip(&results) {
            for (g, m) in suite.iter().zip(per_family) {
                assert!(m.normal_intervals > 300, "{} {}", k.name(), g.family.name);
                assert!(m.mean_delay().is_finite(), "{} {}", k.name(), g.family.name);
            }
        }
        let text = tables(&Kind::ALL, &suite, &results);
        assert!(text.contains("| cold-start |"));
        let (text, _) = criteria(&suite, &results[0], &results[6]);
        assert!(text.contains("| **all** |"));
    }

    #[test]
    fn lovebeat1_on_constant_beats_waits_the_period_plus_one_second() {
        let suite = generate(&["constant".into()], 1, 100).expect("suite");
        let m = evaluate(Kind::Lovebeat1, 3.0, &suite[0], Options::default());
        assert_eq!(m.false_alarms, 0);
        assert!((m.mean_delay() - 61.0 / 60.0).abs() < 1e-9);
    }
}
