//! Automatic timeouts learned from beat intervals (README, "States";
//! docs/AUTO.md).
//!
//! `lovebeat1` reproduces the 1.x algorithm bit for bit: the same outlier
//! filter, the same bias-adjusted EWMA computed with the same sequence of
//! floating point operations, so learned timeouts do not move when users
//! switch from 1.x.

/// The algorithm that learns automatic timeouts (`[auto] algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// 1.x's algorithm, exactly ([`lovebeat1`]).
    #[default]
    Lovebeat1,
}

impl Algorithm {
    /// The timeout (ms) this algorithm learns from `history`, oldest first.
    pub fn timeout(self, history: impl DoubleEndedIterator<Item = u32> + ExactSizeIterator) -> i64 {
        match self {
            Algorithm::Lovebeat1 => lovebeat1(history),
        }
    }
}

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
