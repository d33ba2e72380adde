//! The trace families: beat arrival times generated from a seed.
//!
//! A trace is what lovebeat would receive from one service: the arrival
//! time of every beat (ms), whether the beat was lost on the way, and
//! whether the gap before it is a real failure (the service was down) rather
//! than a normal interval. Nothing is stored: the same seed gives the same
//! traces on every machine (ChaCha8 and pinned `rand_distr` samplers).
//!
//! The families model what the failure-detector literature reports of real
//! heartbeat streams (docs/AUTO.md cites the sources for each).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, Normal, Pareto};

/// One beat as lovebeat sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beat {
    /// Arrival time, ms from an arbitrary origin.
    pub at: u64,
    /// Sent but never received (packet loss): the detector does not see it,
    /// and the gap it leaves is still a normal interval.
    pub lost: bool,
    /// The gap before this beat is an outage of the service: a true failure
    /// that a detector must report.
    pub after_failure: bool,
    /// The process's mean interval (ms) at this beat, the unit delays are
    /// counted in.
    pub nominal: f64,
}

/// One service's beats, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// The first beat starts the service; each later one ends an interval.
    pub beats: Vec<Beat>,
}

/// A family of traces: one kind of beat stream.
pub struct Family {
    /// Short name used on the command line and in the tables.
    pub name: &'static str,
    /// What the traces look like, one line.
    pub about: &'static str,
    /// Builds the family's traces, about `intervals` normal intervals in all.
    generate: fn(&mut ChaCha8Rng, usize) -> Vec<Trace>,
}

impl Family {
    /// The family's traces for `seed`; the same seed gives the same traces.
    pub fn traces(&self, seed: u64, intervals: usize) -> Vec<Trace> {
        // Each family draws from its own stream, so adding a family or
        // changing one leaves the others' traces as they were.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(self.name));
        (self.generate)(&mut rng, intervals)
    }
}

/// The frozen suite: every family, in table order.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "constant",
        about: "60 s exactly",
        generate: constant,
    },
    Family {
        name: "normal-2s",
        about: "60 s ± N(0, 2 s)",
        generate: normal_2s,
    },
    Family {
        name: "normal-10s",
        about: "60 s ± N(0, 10 s)",
        generate: normal_10s,
    },
    Family {
        name: "uniform",
        about: "60 s ± U(-10 s, 10 s)",
        generate: uniform,
    },
    Family {
        name: "lognormal",
        about: "lognormal, mean 60 s, σ = 0.3",
        generate: lognormal,
    },
    Family {
        name: "exp-tail",
        about: "55 s + exponential (mean 5 s)",
        generate: exp_tail,
    },
    Family {
        name: "second",
        about: "1 s ± N(0, 50 ms)",
        generate: second,
    },
    Family {
        name: "scales",
        about: "1 s, 10 s, 1 min, 10 min, 1 h, 1 day, each ± N(0, 2 %)",
        generate: scales,
    },
    Family {
        name: "ramp",
        about: "period ramps 60 s → 180 s → 60 s over 4000 beats, ± N(0, 2 %)",
        generate: ramp,
    },
    Family {
        name: "daily-sine",
        about: "period 60 s × (1 + 0.5 sin(2π t / 1 day)), ± N(0, 3 %)",
        generate: daily_sine,
    },
    Family {
        name: "step",
        about: "period steps 60 s ↔ 120 s every 1000 beats, ± N(0, 2 %)",
        generate: step,
    },
    Family {
        name: "bursty",
        about: "10 s sends, on/off congestion (Pareto delays, α = 1.5)",
        generate: bursty,
    },
    Family {
        name: "lost-1pct",
        about: "60 s ± N(0, 2 s), 1 % of beats lost",
        generate: lost_1pct,
    },
    Family {
        name: "lost-bursts",
        about: "60 s ± N(0, 2 s), losses in bursts (Gilbert, mean 3)",
        generate: lost_bursts,
    },
    Family {
        name: "outages",
        about: "60 s ± N(0, 2 s), 0.2 % of gaps are 10–100 P outages (failures)",
        generate: outages,
    },
    Family {
        name: "spikes",
        about: "60 s ± N(0, 1 s), 0.2 %: 1–5 intervals of 2–4 P, then normal",
        generate: spikes,
    },
    Family {
        name: "double-beats",
        about: "60 s ± N(0, 1 s), 3 % repeated at once, 3 % at P/2",
        generate: double_beats,
    },
    Family {
        name: "cold-start",
        about: "services of 20 intervals, P log-uniform 1 s–1 h, ± N(0, 5 %)",
        generate: cold_start,
    },
];

/// Finds a family by name.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// FNV-1a: a stable hash of a family name for its seed (std's hasher is
/// not stable across releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Builds one trace beat by beat. Times are kept in f64 ms and rounded on
/// output, so rounding never accumulates.
struct Builder {
    t: f64,
    trace: Trace,
}

impl Builder {
    /// A trace whose first beat arrives at a fixed origin.
    fn new(nominal: f64) -> Builder {
        let t = 1.0e9;
        Builder {
            t,
            trace: Trace {
                beats: vec![Beat {
                    at: t as u64,
                    lost: false,
                    after_failure: false,
                    nominal,
                }],
            },
        }
    }

    /// The next beat, `gap` ms (at least 1) after the previous one.
    fn push(&mut self, gap: f64, nominal: f64) {
        self.push_beat(gap, nominal, false, false);
    }

    fn push_beat(&mut self, gap: f64, nominal: f64, lost: bool, after_failure: bool) {
        self.t += gap.max(1.0);
        self.trace.beats.push(Beat {
            at: self.t.round() as u64,
            lost,
            after_failure,
            nominal,
        });
    }

    fn finish(self) -> Trace {
        self.trace
    }
}

/// `n` intervals drawn from `gap`, around a mean of `nominal` ms.
fn iid(n: usize, nominal: f64, mut gap: impl FnMut() -> f64) -> Trace {
    let mut b = Builder::new(nominal);
    for _ in 0..n {
        b.push(gap(), nominal);
    }
    b.finish()
}

fn normal(mean: f64, sd: f64) -> Normal<f64> {
    Normal::new(mean, sd).expect("valid normal")
}

const P: f64 = 60_000.0;

fn constant(_: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    vec![iid(n, P, || P)]
}

fn normal_2s(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 2000.0);
    vec![iid(n, P, || d.sample(rng))]
}

fn normal_10s(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 10_000.0);
    vec![iid(n, P, || d.sample(rng))]
}

fn uniform(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    vec![iid(n, P, || P + rng.gen_range(-10_000.0..10_000.0))]
}

fn lognormal(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let sigma: f64 = 0.3;
    let d = LogNormal::new(P.ln() - sigma * sigma / 2.0, sigma).expect("valid lognormal");
    vec![iid(n, P, || d.sample(rng))]
}

fn exp_tail(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = Exp::new(1.0 / 5000.0).expect("valid exponential");
    vec![iid(n, P, || 55_000.0 + d.sample(rng))]
}

fn second(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(1000.0, 50.0);
    vec![iid(n, 1000.0, || d.sample(rng))]
}

fn scales(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let periods = [1.0, 10.0, 60.0, 600.0, 3600.0, 86_400.0].map(|s| s * 1000.0);
    let each = n / periods.len();
    periods
        .iter()
        .map(|&p| {
            let d = normal(p, 0.02 * p);
            iid(each, p, || d.sample(rng))
        })
        .collect()
}

fn ramp(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let half = 2000.0;
    let mut b = Builder::new(P);
    for k in 0..n {
        let phase = (k as f64 % (2.0 * half)) / half;
        let frac = if phase <= 1.0 { phase } else { 2.0 - phase };
        let p = P + frac * 2.0 * P;
        b.push(normal(p, 0.02 * p).sample(rng), p);
    }
    vec![b.finish()]
}

fn daily_sine(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let day = 86_400_000.0;
    let mut b = Builder::new(P);
    for _ in 0..n {
        let p = P * (1.0 + 0.5 * (std::f64::consts::TAU * b.t / day).sin());
        b.push(normal(p, 0.03 * p).sample(rng), p);
    }
    vec![b.finish()]
}

fn step(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let mut b = Builder::new(P);
    for k in 0..n {
        let p = if (k / 1000) % 2 == 0 { P } else { 2.0 * P };
        b.push(normal(p, 0.02 * p).sample(rng), p);
    }
    vec![b.finish()]
}

/// Periodic sends whose network delay switches between a quiet state and
/// congestion episodes with heavy-tailed delays (a two-state Markov chain,
/// as in Gilbert–Elliott loss models); beats can arrive bunched up.
fn bursty(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let p: f64 = 10_000.0;
    let quiet = Exp::new(1.0 / 10.0).expect("valid exponential");
    let congested = Pareto::<f64>::new(500.0, 1.5).expect("valid pareto");
    let mut on = false;
    let mut arrivals: Vec<f64> = (0..=n)
        .map(|k| {
            on = if on {
                rng.gen::<f64>() >= 0.05
            } else {
                rng.gen::<f64>() < 0.005
            };
            let delay = if on {
                congested.sample(rng).min(6.0 * p)
            } else {
                20.0 + quiet.sample(rng)
            };
            1.0e9 + k as f64 * p + delay
        })
        .collect();
    arrivals.sort_by(f64::total_cmp);
    let beats = arrivals
        .iter()
        .map(|&t| Beat {
            at: t.round() as u64,
            lost: false,
            after_failure: false,
            nominal: p,
        })
        .collect();
    vec![Trace { beats }]
}

fn lost_1pct(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 2000.0);
    let mut b = Builder::new(P);
    for _ in 0..n {
        let gap = d.sample(rng);
        let lost = rng.gen::<f64>() < 0.01;
        b.push_beat(gap, P, lost, false);
    }
    vec![b.finish()]
}

fn lost_bursts(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 2000.0);
    let mut b = Builder::new(P);
    let mut losing = false;
    for _ in 0..n {
        let gap = d.sample(rng);
        losing = if losing {
            rng.gen::<f64>() < 2.0 / 3.0
        } else {
            rng.gen::<f64>() < 0.005
        };
        b.push_beat(gap, P, losing, false);
    }
    vec![b.finish()]
}

fn outages(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 2000.0);
    let mut b = Builder::new(P);
    for _ in 0..n {
        if rng.gen::<f64>() < 0.002 {
            let down = P * rng.gen_range(10.0..100.0);
            b.push_beat(down, P, false, true);
        } else {
            b.push(d.sample(rng), P);
        }
    }
    vec![b.finish()]
}

fn spikes(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 1000.0);
    let mut b = Builder::new(P);
    let mut slow = 0;
    for _ in 0..n {
        if slow == 0 && rng.gen::<f64>() < 0.002 {
            slow = rng.gen_range(1..=5);
        }
        if slow > 0 {
            slow -= 1;
            b.push(P * rng.gen_range(2.0..4.0), P);
        } else {
            b.push(d.sample(rng), P);
        }
    }
    vec![b.finish()]
}

fn double_beats(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let d = normal(P, 1000.0);
    let half = normal(0.5, 0.02);
    let mut b = Builder::new(P);
    let mut k = 0;
    while k < n {
        let gap = d.sample(rng);
        let u = rng.gen::<f64>();
        if u < 0.03 {
            // Sent twice at once (a retry, two cron entries).
            let first = rng.gen_range(10.0..2000.0);
            b.push(first, P);
            b.push(gap - first, P);
            k += 2;
        } else if u < 0.06 {
            // A second sender half a period out of phase.
            let first = gap * half.sample(rng);
            b.push(first, P);
            b.push(gap - first, P);
            k += 2;
        } else {
            b.push(gap, P);
            k += 1;
        }
    }
    vec![b.finish()]
}

fn cold_start(rng: &mut ChaCha8Rng, n: usize) -> Vec<Trace> {
    let len = 20;
    (0..(n / len).max(1))
        .map(|_| {
            let p = 1000.0 * 3600f64.powf(rng.gen::<f64>());
            let d = normal(p, 0.05 * p);
            iid(len, p, || d.sample(rng))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_traces() {
        for f in FAMILIES {
            let a = f.traces(7, 500);
            let b = f.traces(7, 500);
            let c = f.traces(8, 500);
            let at = |t: &[Trace]| -> Vec<u64> {
                t.iter()
                    .flat_map(|t| t.beats.iter().map(|b| b.at))
                    .collect()
            };
            assert_eq!(at(&a), at(&b), "{}", f.name);
            if f.name != "constant" {
                assert_ne!(at(&a), at(&c), "{}", f.name);
            }
        }
    }

    #[test]
    fn beats_arrive_in_order_and_families_have_the_asked_size() {
        for f in FAMILIES {
            let traces = f.traces(1, 2000);
            let gaps: usize = traces.iter().map(|t| t.beats.len() - 1).sum();
            assert!((1800..=2200).contains(&gaps), "{}: {gaps}", f.name);
            for t in &traces {
                assert!(t.beats.windows(2).all(|w| w[0].at <= w[1].at), "{}", f.name);
            }
        }
    }
}
