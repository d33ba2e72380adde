//! The detectors compared on the suite, each as a timeout after the last
//! accepted beat (the only form lovebeat can use: a service expires at
//! `last_beat + timeout`).
//!
//! `lovebeat1` and ours are lovebeat's own functions, fed the last 100
//! intervals as a service keeps them. The others are reference
//! implementations of the literature, written from the papers and the
//! projects' sources (docs/AUTO.md cites them) and given their native
//! state: windows of 1000 intervals, running estimators.

use std::collections::VecDeque;

use lovebeat::engine::auto;

/// How many intervals a lovebeat service keeps (`service::HISTORY_LEN`).
pub const LOVEBEAT_HISTORY: usize = 100;

/// A failure detector expressed as a timeout.
pub trait Detector {
    /// An accepted beat came `interval` ms after the previous accepted one.
    fn observe(&mut self, interval: u32);
    /// The timeout (ms) in force after the latest accepted beat. Asked only
    /// once at least one interval was observed.
    fn timeout(&self) -> f64;
}

/// The detectors, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1.x's algorithm, lovebeat's `auto::lovebeat1`.
    Lovebeat1,
    /// φ accrual as Akka's `PhiAccrualFailureDetector` computes it.
    Akka,
    /// Cassandra's exponential φ (`FailureDetector.ArrivalWindow`).
    Cassandra,
    /// Chen, Toueg and Aguilera's estimator with a fixed safety margin.
    Chen,
    /// Bertier, Marin and Sens: Chen's estimate plus Jacobson's margin.
    Bertier,
    /// Tomsic et al.'s two windows: the later of two Chen estimates.
    TwoWindows,
    /// Ours: lovebeat's `auto::robust`.
    Ours,
}

impl Kind {
    /// Every detector, in table order.
    pub const ALL: [Kind; 7] = [
        Kind::Lovebeat1,
        Kind::Akka,
        Kind::Cassandra,
        Kind::Chen,
        Kind::Bertier,
        Kind::TwoWindows,
        Kind::Ours,
    ];

    /// The name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lovebeat1 => "lovebeat1",
            Kind::Akka => "akka-phi",
            Kind::Cassandra => "cassandra-phi",
            Kind::Chen => "chen",
            Kind::Bertier => "bertier",
            Kind::TwoWindows => "two-windows",
            Kind::Ours => OURS,
        }
    }

    /// Parses a name from [`Kind::name`].
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// What the knob is, for the plots.
    pub fn knob_name(self) -> &'static str {
        match self {
            Kind::Lovebeat1 => "standard deviations (3)",
            Kind::Akka | Kind::Cassandra => "φ threshold (8)",
            Kind::Chen | Kind::TwoWindows => "margin α / mean interval (0.1)",
            Kind::Bertier => "φ, weight of the deviation (4)",
            Kind::Ours => "factor on its 2.8 standard deviations (1)",
        }
    }

    /// The knob's value in the table (the implementation's default).
    pub fn default_knob(self) -> f64 {
        match self {
            Kind::Lovebeat1 => 3.0,
            Kind::Akka | Kind::Cassandra => 8.0,
            Kind::Chen | Kind::TwoWindows => 0.1,
            Kind::Bertier => 4.0,
            Kind::Ours => 1.0,
        }
    }

    /// The knob values of the trade-off curve, from fast to cautious.
    pub fn sweep(self) -> &'static [f64] {
        match self {
            Kind::Lovebeat1 => &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0],
            Kind::Akka => &[0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
            Kind::Cassandra => &[0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 4.0, 8.0],
            Kind::Chen | Kind::TwoWindows => &[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0],
            Kind::Bertier => &[0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            Kind::Ours => &[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0],
        }
    }

    /// A fresh detector (a new service) with the knob at `knob`.
    pub fn build(self, knob: f64) -> Box<dyn Detector> {
        match self {
            Kind::Lovebeat1 => Box::new(Lovebeat1 {
                history: VecDeque::with_capacity(LOVEBEAT_HISTORY),
                factor: knob,
            }),
            Kind::Akka => Box::new(Akka::new(knob)),
            Kind::Cassandra => Box::new(Cassandra {
                window: Window::new(1000),
                threshold: knob,
            }),
            Kind::Chen => Box::new(Chen {
                window: Window::new(1000),
                alpha: knob,
            }),
            Kind::Bertier => Box::new(Bertier::new(knob)),
            Kind::TwoWindows => Box::new(TwoWindows {
                long: Window::new(1000),
                last: 0.0,
                alpha: knob,
            }),
            Kind::Ours => Box::new(Ours {
                history: VecDeque::with_capacity(LOVEBEAT_HISTORY),
                margin: knob,
            }),
        }
    }
}

/// The name of lovebeat's new algorithm.
pub const OURS: &str = "robust";

fn push_capped(history: &mut VecDeque<u32>, interval: u32) {
    if history.len() == LOVEBEAT_HISTORY {
        history.pop_front();
    }
    history.push_back(interval);
}

/// lovebeat's `auto::lovebeat1` at its 3 standard deviations; other values
/// of the knob run the same computation with another factor, for the curve.
struct Lovebeat1 {
    history: VecDeque<u32>,
    factor: f64,
}

impl Detector for Lovebeat1 {
    fn observe(&mut self, interval: u32) {
        push_capped(&mut self.history, interval);
    }

    fn timeout(&self) -> f64 {
        if self.factor == 3.0 {
            auto::lovebeat1(self.history.iter().copied()) as f64
        } else {
            lovebeat1_with_factor(self.history.iter().copied(), self.factor)
        }
    }
}

/// 1.x's algorithm with `factor` standard deviations instead of 3: the same
/// steps as `auto::lovebeat1` (SPEC §3), checked equal to it at 3.
pub fn lovebeat1_with_factor(history: impl ExactSizeIterator<Item = u32>, factor: f64) -> f64 {
    const COM: f64 = 10.0;
    let skip = history.len().saturating_sub(20);
    let window: Vec<f64> = history.skip(skip).map(f64::from).collect();
    let n = window.len() as f64;
    let mean = window.iter().sum::<f64>() / n;
    let total: f64 = window.iter().map(|v| (v - mean) * (v - mean)).sum();
    let s = (total / (n - 1.0)).sqrt();
    let mut kept: Vec<f64> = window
        .iter()
        .copied()
        .filter(|&v| mean - 3.0 * s < v && v < mean + 3.0 * s)
        .collect();
    if kept.is_empty() {
        kept = window;
    }
    if kept.is_empty() {
        return 1000.0;
    }
    let ewma = |series: &mut dyn Iterator<Item = f64>| {
        let oldw = COM / (1.0 + COM);
        let mut adj = oldw;
        let mut prev = f64::NAN;
        let mut last_adj = adj;
        for (i, cur) in series.enumerate() {
            prev = if i == 0 {
                cur / (1.0 + COM)
            } else {
                (COM * prev + cur) / (1.0 + COM)
            };
            last_adj = adj;
            adj *= oldw;
        }
        prev / (1.0 - last_adj)
    };
    let m = ewma(&mut kept.iter().copied());
    let m1 = ewma(&mut kept.iter().copied());
    let m2 = ewma(&mut kept.iter().map(|v| v * v));
    let mut t = m2 - m1 * m1;
    t *= (1.0 + 2.0 * COM) / (2.0 * COM);
    let sd = if t < 0.0 { 0.0 } else { t.sqrt() };
    let ret = m + factor * sd + 1000.0;
    if ret.is_nan() {
        return 0.0;
    }
    ((ret + 0.5) as i64) as f64
}

/// Ours, from lovebeat: the timeout over the last 100 intervals.
struct Ours {
    history: VecDeque<u32>,
    margin: f64,
}

impl Detector for Ours {
    fn observe(&mut self, interval: u32) {
        push_capped(&mut self.history, interval);
    }

    fn timeout(&self) -> f64 {
        auto::robust_with_margin(self.history.iter().copied(), self.margin) as f64
    }
}

/// A window of intervals with running sums (O(1) per beat).
struct Window {
    values: VecDeque<f64>,
    cap: usize,
    sum: f64,
    sum_sq: f64,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            values: VecDeque::with_capacity(cap),
            cap,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    fn push(&mut self, v: f64) {
        if self.values.len() == self.cap {
            if let Some(old) = self.values.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.values.push_back(v);
        self.sum += v;
        self.sum_sq += v * v;
    }

    fn mean(&self) -> f64 {
        self.sum / self.values.len() as f64
    }

    /// Population standard deviation, as Akka's `HeartbeatHistory`.
    fn std_dev(&self) -> f64 {
        let m = self.mean();
        (self.sum_sq / self.values.len() as f64 - m * m)
            .max(0.0)
            .sqrt()
    }
}

/// Akka's `PhiAccrualFailureDetector` (akka-remote), with the defaults of
/// `akka.cluster.failure-detector`: threshold 8, max-sample-size 1000,
/// min-std-deviation 100 ms, acceptable-heartbeat-pause 3 s. φ uses Akka's
/// logistic approximation of the normal CDF; the timeout is where φ reaches
/// the threshold. Lovebeat knows no heartbeat-interval setting, so the
/// bootstrap Akka makes from it (mean ± mean/4) uses the first interval.
/// An interval that arrives after φ crossed the threshold is left out of
/// the history, as Akka does ("don't use the first heartbeat after failure").
struct Akka {
    window: Window,
    /// y = (t - mean) / sd at which φ reaches the threshold.
    y: f64,
}

const AKKA_PAUSE_MS: f64 = 3000.0;
const AKKA_MIN_STD_MS: f64 = 100.0;

impl Akka {
    fn new(threshold: f64) -> Akka {
        Akka {
            window: Window::new(1000),
            y: akka_y_at(threshold),
        }
    }
}

/// Akka's φ for y standard deviations past the mean.
fn akka_phi(y: f64) -> f64 {
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if y > 0.0 {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// Solves `akka_phi(y) = threshold` by bisection (φ grows with y).
fn akka_y_at(threshold: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 40.0);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if akka_phi(mid) < threshold {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

impl Detector for Akka {
    fn observe(&mut self, interval: u32) {
        let x = f64::from(interval);
        if self.window.values.is_empty() {
            self.window.push(x - x / 4.0);
            self.window.push(x + x / 4.0);
        } else if x >= self.timeout() {
            return;
        }
        self.window.push(x);
    }

    fn timeout(&self) -> f64 {
        let sd = self.window.std_dev().max(AKKA_MIN_STD_MS);
        self.window.mean() + AKKA_PAUSE_MS + self.y * sd
    }
}

/// Cassandra's `ArrivalWindow`: φ = t / (mean · ln 10), so φ reaches the
/// threshold (phi_convict_threshold, 8) at t = threshold · ln 10 · mean.
/// Window 1000. Cassandra leaves out intervals longer than
/// `fd_max_interval` (twice the 1 s gossip interval by default); lovebeat
/// knows no nominal interval, so twice the window's mean stands for it.
struct Cassandra {
    window: Window,
    threshold: f64,
}

impl Detector for Cassandra {
    fn observe(&mut self, interval: u32) {
        let x = f64::from(interval);
        if self.window.values.is_empty() || x <= 2.0 * self.window.mean() {
            self.window.push(x);
        }
    }

    fn timeout(&self) -> f64 {
        self.threshold * std::f64::consts::LN_10 * self.window.mean()
    }
}

/// Chen, Toueg and Aguilera (2002), NFD-E: freshness point τ = EA + α with
/// a constant safety margin α (here a fraction of the mean interval, so one
/// knob fits services of every period), window 1000.
///
/// Chen's EA averages the last n arrivals' offsets from a periodic
/// schedule with a known period Δ. Lovebeat's beats carry no sequence
/// number, their period is not known, and most services are timers whose
/// jitter accumulates (arrivals are a random walk, not a schedule plus
/// delays): the schedule form then drifts by the walk's excursion
/// (docs/AUTO.md gives the figures). The form used is the one it takes for
/// such renewal processes: EA = last arrival + mean interval.
struct Chen {
    window: Window,
    alpha: f64,
}

impl Detector for Chen {
    fn observe(&mut self, interval: u32) {
        self.window.push(f64::from(interval));
    }

    fn timeout(&self) -> f64 {
        (1.0 + self.alpha) * self.window.mean()
    }
}

/// Bertier, Marin and Sens (2002): Chen's EA plus a margin from Jacobson's
/// round-trip estimator, α = β·delay + φ·var with β = 1, φ = 4, γ = 0.1,
/// where the error is the interval minus the expected one.
struct Bertier {
    window: Window,
    delay: f64,
    var: f64,
    phi: f64,
}

impl Bertier {
    fn new(phi: f64) -> Bertier {
        Bertier {
            window: Window::new(1000),
            delay: 0.0,
            var: 0.0,
            phi,
        }
    }
}

impl Detector for Bertier {
    fn observe(&mut self, interval: u32) {
        const GAMMA: f64 = 0.1;
        let x = f64::from(interval);
        if !self.window.values.is_empty() {
            let error = x - self.window.mean() - self.delay;
            self.delay += GAMMA * error;
            self.var += GAMMA * (error.abs() - self.var);
        }
        self.window.push(x);
    }

    fn timeout(&self) -> f64 {
        const BETA: f64 = 1.0;
        self.window.mean() + BETA * self.delay + self.phi * self.var
    }
}

/// Tomsic, Sens, Garcia, Arantes and Sopena (2015): two Chen estimates,
/// over 1000 intervals and over the last one, the later one wins; τ =
/// max(EA₁₀₀₀, EA₁) + α (α a fraction of the long mean, as for Chen).
struct TwoWindows {
    long: Window,
    last: f64,
    alpha: f64,
}

impl Detector for TwoWindows {
    fn observe(&mut self, interval: u32) {
        self.last = f64::from(interval);
        self.long.push(self.last);
    }

    fn timeout(&self) -> f64 {
        let mean = self.long.mean();
        mean.max(self.last) + self.alpha * mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_parametric_lovebeat1_is_lovebeat1_at_three() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for len in 1..60 {
            let h: Vec<u32> = (0..len).map(|_| rng.gen_range(500..120_000)).collect();
            assert_eq!(
                lovebeat1_with_factor(h.iter().copied(), 3.0),
                auto::lovebeat1(h.iter().copied()) as f64,
                "{h:?}"
            );
        }
    }

    #[test]
    fn chen_expects_the_mean_interval_plus_its_margin() {
        let mut c = Kind::Chen.build(0.1);
        for _ in 0..50 {
            c.observe(60_000);
        }
        assert!((c.timeout() - 66_000.0).abs() < 1e-6);
        let mut t = Kind::TwoWindows.build(0.1);
        for _ in 0..50 {
            t.observe(60_000);
        }
        t.observe(120_000);
        assert!(t.timeout() > 126_000.0, "the one-interval window wins");
    }

    #[test]
    fn akka_phi_reaches_eight_about_five_deviations_out() {
        let y = akka_y_at(8.0);
        assert!((akka_phi(y) - 8.0).abs() < 1e-9);
        assert!((5.0..6.0).contains(&y), "{y}");
    }

    #[test]
    fn cassandra_convicts_at_threshold_times_ln10_means() {
        let mut c = Kind::Cassandra.build(8.0);
        c.observe(1000);
        c.observe(1000);
        assert!((c.timeout() - 8.0 * 1000.0 * std::f64::consts::LN_10).abs() < 1e-6);
    }
}
