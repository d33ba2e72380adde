//! Automatic timeouts learned from beat intervals (README, "States";
//! docs/AUTO.md).
//!
//! `lovebeat1` reproduces the 1.x algorithm bit for bit: the same outlier
//! filter, the same bias-adjusted EWMA computed with the same sequence of
//! floating point operations, so learned timeouts do not move when users
//! switch from 1.x.
//!
//! `robust` is the algorithm measured against it (and against the failure
//! detectors of the literature) on the trace suite of `autotrace`; the
//! figures and the definitions are in docs/AUTO.md. [`Algorithm`] names
//! the choice.

/// How many of the most recent intervals the algorithm looks at.
const WINDOW: usize = 20;
/// Centre of mass of the exponentially weighted moving average.
const COM: f64 = 10.0;
/// How many standard deviations of headroom the timeout gets.
const FACTOR: f64 = 3.0;

/// The timeout (ms) that 1.x's "lovebeat1" algorithm derives from a beat
/// history given oldest first. Allocates nothing.
pub fn lovebeat1(history: impl DoubleEndedIterator<Item = u32> + ExactSizeIterator) -> i64 {
    let mut window = [0f64; WINDOW];
    let skip = history.len().saturating_sub(WINDOW);
    let mut n = 0;
    for v in history.skip(skip) {
        window[n] = f64::from(v);
        n += 1;
    }
    let mut kept = [0f64; WINDOW];
    let k = remove_outliers(&window[..n], &mut kept);
    let series = &kept[..k];
    if series.is_empty() {
        return 1000;
    }
    let m = ewma_last(series.iter().copied());
    let sd = ewm_std_last(series);
    let ret = m + FACTOR * sd + 1000.0;
    if ret.is_nan() {
        return 0;
    }
    // 1.x: int64(ret + 0.5), a truncation toward zero.
    (ret + 0.5) as i64
}

/// Keeps the values strictly within three sample standard deviations of the
/// mean, or all of them if that would keep none. Returns how many were kept.
fn remove_outliers(series: &[f64], out: &mut [f64; WINDOW]) -> usize {
    let n = series.len();
    let mean = series.iter().sum::<f64>() / n as f64;
    let total: f64 = series.iter().map(|v| (v - mean) * (v - mean)).sum();
    // n == 1 divides by zero and gives NaN, so nothing is "inside" and all is
    // kept, exactly as in 1.x.
    let s = (total / (n as f64 - 1.0)).sqrt();
    let mut k = 0;
    for &v in series {
        if mean - 3.0 * s < v && v < mean + 3.0 * s {
            out[k] = v;
            k += 1;
        }
    }
    if k == 0 {
        out[..n].copy_from_slice(series);
        return n;
    }
    k
}

/// The last value of the bias-adjusted EWMA (pandas `ewm(com, adjust=True)`),
/// computed as 1.x does: the recursive average first, then the adjustment
/// factor built up by repeated multiplication.
fn ewma_last(series: impl Iterator<Item = f64>) -> f64 {
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
}

/// 1.x's bias-corrected exponentially weighted standard deviation of the
/// last point (not pandas' `ewm().std()`).
fn ewm_std_last(series: &[f64]) -> f64 {
    let m1 = ewma_last(series.iter().copied());
    let m2 = ewma_last(series.iter().map(|v| v * v));
    let mut t = m2 - m1 * m1;
    t *= (1.0 + 2.0 * COM) / (2.0 * COM);
    if t < 0.0 {
        return 0.0;
    }
    t.sqrt()
}

/// The algorithms a service's automatic timeout can be learned with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// 1.x's algorithm, exactly ([`lovebeat1`]): the default, so a 1.x
    /// user changes nothing.
    #[default]
    Lovebeat1,
    /// Robust statistics over the current regime ([`robust`]).
    Robust,
}

impl Algorithm {
    /// Every algorithm, in the order the documentation lists them.
    pub const ALL: [Algorithm; 2] = [Algorithm::Lovebeat1, Algorithm::Robust];

    /// The name in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Lovebeat1 => "lovebeat1",
            Algorithm::Robust => "robust",
        }
    }

    /// The timeout (ms) for a beat history given oldest first. Allocates
    /// nothing.
    pub fn timeout(self, history: impl DoubleEndedIterator<Item = u32> + ExactSizeIterator) -> i64 {
        match self {
            Algorithm::Lovebeat1 => lovebeat1(history),
            Algorithm::Robust => robust(history),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no [`Algorithm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown algorithm '{0}' (available: lovebeat1, robust)")]
pub struct UnknownAlgorithm(pub String);

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Algorithm, UnknownAlgorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

/// How many intervals `robust` looks at: the whole history a service keeps.
const ROBUST_WINDOW: usize = 100;
/// Standard deviations of headroom (before the margin knob).
const ROBUST_K: f64 = 2.8;
/// Weight of an interval halves every this many newer ones.
const ROBUST_DECAY: f64 = 0.982_820_598_545_251_1; // 0.5^(1/40)
/// A value further than this many robust deviations (plus `ROBUST_DELTA`
/// of the level) from the current level disagrees with it.
const ROBUST_TOLERANCE: f64 = 5.0;
/// Relative part of the tolerance, so that a perfectly regular service
/// still accepts a little drift.
const ROBUST_DELTA: f64 = 0.05;
/// Older values above the level in a row that end the regime...
const ROBUST_OLD_BLOCK: u32 = 6;
/// ...once this many recent values agree on the lower level.
const ROBUST_DOWN_EVIDENCE: u32 = 12;
/// Tukey's far-out fences: quartiles ± 3 interquartile ranges.
const ROBUST_FENCE: f64 = 3.0;
/// The interquartile range used for the fences is at least this share of
/// the median, so a very tight service does not call its own slow beats
/// outliers.
const ROBUST_IQR_FLOOR: f64 = 0.1;
/// A drift is followed when its slope is this many standard errors.
const ROBUST_TREND_T: f64 = 4.0;
/// A slow phase is made of intervals at most this many times the mean.
const ROBUST_SLOW_MAX: f64 = 4.0;
/// More than this share of intervals above the upper fence are kept.
const ROBUST_MODE_SHARE: f64 = 0.05;
/// Fences are used from this many intervals in the regime on.
const ROBUST_FENCE_MIN: usize = 8;
/// Prior relative deviation for short histories, fading to 0 at
/// `ROBUST_PRIOR_UNTIL` intervals: a few equal intervals prove little.
const ROBUST_PRIOR: f64 = 0.15;
const ROBUST_PRIOR_UNTIL: f64 = 20.0;
/// Constant headroom: a tenth of the interval, at most 1.x's one second.
const ROBUST_HEADROOM: f64 = 0.1;
const ROBUST_HEADROOM_MAX_MS: f64 = 1000.0;

/// The timeout (ms) that the "robust" algorithm derives from a beat
/// history given oldest first. Allocates nothing; linear in the history.
///
/// The idea: 1.x's mean + 3 standard deviations is the right shape (on
/// the trace suite a tail-quantile rule detects later than 1.x, and the
/// delay must not grow), but 1.x estimates it from 20 intervals, so its
/// timeout is noisy (false alarms on jittery services), adds one second
/// whatever the period (twice the interval of a 1 s service) and takes a
/// lost beat for a new period or a new period for an outlier. Here:
///
/// 1. The current regime. The level is the median of the last three
///    intervals; the jitter is the median absolute difference of successive
///    intervals (÷ 0.954, a standard deviation for normal jitter), which a
///    change of period or a lost beat moves by one or two differences only.
///    Scanning back from the newest interval, a block of six older
///    intervals well below the level (5 jitters + 5 %) means the period
///    went up: only what follows counts, once two intervals agree on the
///    new level. Six well above it end the regime only after twelve recent
///    ones agree on the lower level (a shorter timeout needs more
///    evidence). A lost beat, a double beat or two periods mixed (a 1 s
///    service whose beats the rate limit thins) make no block.
/// 2. Outliers within the regime: Tukey's far-out fences, quartiles ± 3
///    interquartile ranges (the range at least a tenth of the median), drop
///    lost beats and outages but keep a skewed tail; more than 5 % of
///    intervals above the upper fence are a mode of the service and kept.
/// 3. A recency-weighted mean and standard deviation of the rest (weights
///    halve every 40 intervals), along a weighted linear trend when its
///    slope is over 4 standard errors (a drifting period: the level is the
///    trend's next value and sd its residual); sd is at least a prior
///    0.15·mean·(1/n − 1/20) while fewer than 20 intervals are known (cold
///    start, or a new regime).
/// 4. The timeout is level + 2.8·sd + min(mean/10, 1 s), or, when the
///    newest two or more intervals are all above the upper fence (and under
///    4 means: a slow phase, not losses), at least their own mean + 2.8 sd.
///
/// Sources: the metrics and the fixed-margin estimator of Chen, Toueg and
/// Aguilera (2002); the accrual view of Hayashibara et al. (2004); the
/// two-windows idea of Tomsic et al. (2015), a short memory for changes
/// next to a long one for precision; Tukey's fences (Exploratory Data
/// Analysis, 1977); the successive-difference scale of von Neumann et al.
/// (1941). docs/AUTO.md has the figures.
pub fn robust(history: impl DoubleEndedIterator<Item = u32> + ExactSizeIterator) -> i64 {
    robust_with_margin(history, 1.0)
}

/// [`robust`] with its 2.8 standard deviations scaled by `margin`: the
/// knob `autotrace` sweeps for the trade-off curve. `robust` is `margin`
/// 1.
pub fn robust_with_margin(
    history: impl DoubleEndedIterator<Item = u32> + ExactSizeIterator,
    margin: f64,
) -> i64 {
    let total = history.len();
    let n = total.min(ROBUST_WINDOW);
    if n == 0 {
        return 1000;
    }
    // The intervals as given (selections on integers are cheaper) and as
    // floating point for the sums.
    let mut raw = [0u32; ROBUST_WINDOW];
    for (slot, v) in raw.iter_mut().zip(history.skip(total - n)) {
        *slot = v;
    }
    let raw = &raw[..n];
    let mut buf = [0f64; ROBUST_WINDOW];
    for (slot, &v) in buf.iter_mut().zip(raw) {
        *slot = f64::from(v);
    }
    let x = &buf[..n];
    let mut scratch = [0u32; ROBUST_WINDOW];

    // 1. The current regime.
    let jitter = if n >= 3 {
        for (d, w) in scratch.iter_mut().zip(raw.windows(2)) {
            *d = w[1].abs_diff(w[0]);
        }
        f64::from(median(&mut scratch[..n - 1])) / 0.954
    } else {
        0.0
    };
    let recent = n.min(3);
    scratch[..recent].copy_from_slice(&raw[n - recent..]);
    let level = f64::from(median(&mut scratch[..recent]));
    let tolerance = ROBUST_TOLERANCE * jitter + ROBUST_DELTA * level;
    let mut start = 0;
    let (mut below, mut above, mut agree) = (0u32, 0u32, 0u32);
    for i in (0..n).rev() {
        let v = x[i];
        if v < level - tolerance {
            below += 1;
            above = 0;
            if below == ROBUST_OLD_BLOCK && agree >= 2 {
                start = i + ROBUST_OLD_BLOCK as usize;
                break;
            }
        } else if v > level + tolerance {
            above += 1;
            below = 0;
            if above == ROBUST_OLD_BLOCK && agree >= ROBUST_DOWN_EVIDENCE {
                start = i + ROBUST_OLD_BLOCK as usize;
                break;
            }
        } else {
            below = 0;
            above = 0;
            agree += 1;
        }
    }
    let x = &x[start..];
    let raw = &raw[start..];
    let n = x.len();

    // 2. Outliers: far-out fences.
    let (lo, hi) = if n >= ROBUST_FENCE_MIN {
        let s = &mut scratch[..n];
        s.copy_from_slice(raw);
        let rank = |p: f64| ((p * (n - 1) as f64).round() as usize).min(n - 1);
        let (r1, r2, r3) = (rank(0.25), rank(0.5), rank(0.75));
        // The median first; then each quartile within its half.
        let q2 = select(s, r2);
        let (left, right) = s.split_at_mut(r2 + 1);
        let q1 = f64::from(select(left, r1));
        let q3 = f64::from(select(right, r3 - r2 - 1));
        let q2 = f64::from(q2);
        let iqr = (q3 - q1).max(ROBUST_IQR_FLOOR * q2);
        let hi = q3 + ROBUST_FENCE * iqr;
        // Long intervals too many to be lost beats are a mode of the
        // service (a 1 s service whose beats the rate limit halves).
        let long = x.iter().filter(|&&v| v > hi).count();
        let hi = if long as f64 > ROBUST_MODE_SHARE * n as f64 {
            f64::INFINITY
        } else {
            hi
        };
        (q1 - ROBUST_FENCE * iqr, hi)
    } else {
        (f64::NEG_INFINITY, f64::INFINITY)
    };

    // 3. Recency-weighted mean and deviation of the rest, along a trend
    // when the period drifts measurably (age 0 is the newest interval).
    let (mut w_sum, mut w_sq, mut kept) = (0f64, 0f64, 0f64);
    let (mut s_a, mut s_v, mut s_aa, mut s_av, mut s_vv) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut w = 1.0;
    for (age, &v) in x.iter().rev().enumerate() {
        if (lo..=hi).contains(&v) {
            let a = age as f64;
            w_sum += w;
            w_sq += w * w;
            kept += 1.0;
            s_a += w * a;
            s_v += w * v;
            s_aa += w * a * a;
            s_av += w * a * v;
            s_vv += w * v * v;
        }
        w *= ROBUST_DECAY;
    }
    // The quartiles lie within the fences, so something is kept.
    let mean = s_v / w_sum;
    let mean_age = s_a / w_sum;
    let var_v = (s_vv / w_sum - mean * mean).max(0.0);
    let var_a = (s_aa / w_sum - mean_age * mean_age).max(0.0);
    let cov = s_av / w_sum - mean_age * mean;
    let mut level = mean;
    let mut sd = var_v.sqrt();
    if var_a > 0.0 && kept >= ROBUST_FENCE_MIN as f64 {
        let slope = cov / var_a;
        let resid = (var_v - slope * cov).max(0.0);
        let n_eff = w_sum * w_sum / w_sq;
        let se = (resid / (var_a * n_eff)).sqrt();
        if slope.abs() > ROBUST_TREND_T * se {
            // The next interval is one step younger than the newest.
            level = mean + slope * (-1.0 - mean_age);
            sd = resid.sqrt();
        }
    }
    let prior = mean * ROBUST_PRIOR * (1.0 / kept - 1.0 / ROBUST_PRIOR_UNTIL).max(0.0);

    // 4. The timeout.
    let headroom = (ROBUST_HEADROOM * mean).min(ROBUST_HEADROOM_MAX_MS);
    let mut t = level + ROBUST_K * margin * sd.max(prior);
    // A slow phase: the newest intervals are all beyond the upper fence
    // (congestion, an overloaded host). While it lasts, it is the regime.
    // Longer than `ROBUST_SLOW_MAX` intervals is a loss or an outage.
    let slow = x
        .iter()
        .rev()
        .take_while(|&&v| v > hi && v <= ROBUST_SLOW_MAX * mean)
        .count();
    if slow >= 2 {
        let phase = &x[n - slow..];
        let k = slow as f64;
        let m = phase.iter().sum::<f64>() / k;
        let var = phase.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / k;
        let prior = m * ROBUST_PRIOR * (1.0 / k - 1.0 / ROBUST_PRIOR_UNTIL).max(0.0);
        t = t.max(m + ROBUST_K * margin * var.sqrt().max(prior));
    }
    let t = t + headroom;
    if t.is_nan() {
        return 0;
    }
    (t + 0.5) as i64
}

/// The value that would be at `rank` if `v` were sorted (reorders `v`).
fn select(v: &mut [u32], rank: usize) -> u32 {
    let (_, x, _) = v.select_nth_unstable(rank);
    *x
}

/// The upper median of `v` (reorders `v`).
fn median(v: &mut [u32]) -> u32 {
    select(v, v.len() / 2)
}

/// Spread of the beat intervals shown in the API and UI (1.x's analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BeatAnalysis {
    /// Interval at the 10th percentile, whole seconds.
    pub lower: i64,
    /// Interval at the 90th percentile, whole seconds.
    pub upper: i64,
    /// Share of intervals between `lower` and `upper`: always 90.
    pub percentage: u32,
    /// Set when the upper bound is at least five times the lower one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unstable: bool,
}

/// Analyses the intervals (any order); `None` with fewer than 10.
pub fn analyze(intervals: &[u32]) -> Option<BeatAnalysis> {
    if intervals.len() < 10 {
        return None;
    }
    let mut sorted = intervals.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let secs = |idx: f64| -> i64 {
        let v = sorted[(idx as usize).min(sorted.len() - 1)];
        (f64::from(v) / 1000.0 + 0.5).floor() as i64
    };
    let lower = secs(n * 0.1);
    let upper = secs(n * 0.9);
    Some(BeatAnalysis {
        lower,
        upper,
        percentage: 90,
        unstable: upper >= 5 * lower,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeout after each prefix of `intervals`.
    fn after_each(intervals: &[u32]) -> Vec<i64> {
        (1..=intervals.len())
            .map(|n| lovebeat1(intervals[..n].iter().copied()))
            .collect()
    }

    #[test]
    fn empty_history_gives_one_second() {
        assert_eq!(lovebeat1(std::iter::empty()), 1000);
    }

    #[test]
    fn matches_1x_reference_points() {
        assert_eq!(after_each(&[60000, 60000]), vec![61000, 61000]);
        assert_eq!(after_each(&[60000; 6]), vec![61000; 6]);
        assert_eq!(after_each(&[1000, 2000, 3000]), vec![2000, 4059, 5568]);
        assert_eq!(
            after_each(&[60000, 61000, 59000, 120000, 60000]),
            vec![61000, 63059, 63533, 161676, 150272]
        );
        let mut with_outlier = vec![5000; 10];
        with_outlier.push(50000);
        with_outlier.push(5000);
        assert_eq!(after_each(&with_outlier), vec![6000; 12]);
    }

    #[test]
    fn only_last_twenty_intervals_count() {
        let mut long = vec![1_000_000u32; 30];
        long.extend([60000; 20]);
        assert_eq!(lovebeat1(long.iter().copied()), 61000);
    }

    #[test]
    fn robust_learns_the_period_plus_a_tenth_up_to_one_second() {
        assert_eq!(robust(std::iter::empty()), 1000);
        assert_eq!(robust([60000u32; 50].into_iter()), 61000);
        assert_eq!(robust([1000u32; 50].into_iter()), 1100);
        assert_eq!(robust([5000u32; 100].into_iter()), 5500);
    }

    #[test]
    fn robust_is_cautious_on_a_cold_start_and_settles_by_twenty_intervals() {
        let timeouts: Vec<i64> = (1..=25)
            .map(|n| robust([60000u32; 25][..n].iter().copied()))
            .collect();
        // One interval: a prior of 0.15 × (1 − 1/20) relative deviation.
        assert_eq!(timeouts[0], 60000 + 23940 + 1000);
        assert_eq!(timeouts[1], 60000 + 11340 + 1000);
        assert!(timeouts.windows(2).all(|w| w[1] <= w[0]), "{timeouts:?}");
        assert!(timeouts[19..].iter().all(|&t| t == 61000), "{timeouts:?}");
    }

    /// Normal-looking jitter around 60 s without a random number generator.
    fn jittery(n: usize) -> Vec<u32> {
        (0..n)
            .map(|i| 60000 + ((i * 7919) % 4001) as u32 - 2000)
            .collect()
    }

    #[test]
    fn robust_ignores_a_lost_beat() {
        let plain = jittery(60);
        let mut lost = plain.clone();
        lost[59] = 120_000;
        let (a, b) = (robust(plain.iter().copied()), robust(lost.iter().copied()));
        assert!(a > 62000 && a < 66000, "{a}");
        assert!((a - b).abs() < a / 50, "{a} vs {b}");
        lost[30] = 3_600_000;
        let c = robust(lost.iter().copied());
        assert!((a - c).abs() < a / 50, "an outage: {a} vs {c}");
    }

    #[test]
    fn robust_follows_a_longer_period_after_two_intervals() {
        let mut h = jittery(60);
        h.push(120_000);
        assert!(
            robust(h.iter().copied()) < 70000,
            "one long gap is a lost beat"
        );
        h.push(121_000);
        assert!(robust(h.iter().copied()) > 125_000);
    }

    #[test]
    fn robust_follows_a_shorter_period_after_twelve_intervals() {
        let mut h = vec![120_000u32; 60];
        h.extend([60000; 12]);
        let t = robust(h.iter().copied());
        assert!(t < 70000, "{t}");
    }

    #[test]
    fn robust_takes_a_double_beat_for_noise_not_a_new_period() {
        let mut h = jittery(60);
        h.extend([30000, 30000]);
        h.extend(jittery(3));
        let plain = robust(jittery(65).iter().copied());
        let t = robust(h.iter().copied());
        assert!((t - plain).abs() < plain / 50, "{t} vs {plain}");
    }

    #[test]
    fn robust_follows_a_drifting_period() {
        // +100 ms per beat: 1.x-style averages lag behind.
        let h: Vec<u32> = (0..100).map(|i| 60000 + 100 * i).collect();
        let t = robust(h.iter().copied());
        assert!(t > 69_900 + 1000, "{t}");
        assert!(t < 69_900 + 2500, "{t}");
    }

    #[test]
    fn robust_widens_during_a_slow_phase() {
        let mut h = jittery(60);
        h.extend([150_000, 170_000]);
        assert!(robust(h.iter().copied()) > 170_000);
    }

    #[test]
    fn algorithms_parse_by_name_and_lovebeat1_is_the_default() {
        assert_eq!(Algorithm::default(), Algorithm::Lovebeat1);
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!(
            "lovebeat2".parse::<Algorithm>().map_err(|e| e.to_string()),
            Err("unknown algorithm 'lovebeat2' (available: lovebeat1, robust)".to_string())
        );
        let h = [60000u32, 61000, 59000, 120000, 60000];
        assert_eq!(Algorithm::Lovebeat1.timeout(h.iter().copied()), 150272);
        assert_eq!(
            Algorithm::Robust.timeout(h.iter().copied()),
            robust(h.iter().copied())
        );
    }

    #[test]
    fn analysis_needs_ten_intervals() {
        assert_eq!(analyze(&[1000; 9]), None);
        let a = analyze(&[
            60000, 61000, 59000, 60000, 60000, 60000, 58000, 61000, 60000, 62000,
        ])
        .expect("ten intervals");
        assert_eq!(
            (a.lower, a.upper, a.percentage, a.unstable),
            (59, 62, 90, false)
        );
        let mut jittery = vec![1000u32; 5];
        jittery.extend([10000; 5]);
        assert!(analyze(&jittery).expect("ten").unstable);
    }
}
