//! Replaying a trace through a detector the way lovebeat runs it, and the
//! metrics of Chen, Toueg and Aguilera (2002) over the result.
//!
//! The rules (docs/AUTO.md states them for readers):
//! - Beats are taken in arrival order; a lost beat is never seen.
//! - Rate limit: a beat less than 1000 ms after the last accepted one is not
//!   accepted (no interval, the timeout is not recomputed, the deadline
//!   does not move), exactly as `Service::beat` does.
//! - An accepted beat adds the gap since the last accepted beat to the
//!   detector, which then gives the timeout in force until the next
//!   accepted beat. Before the first interval there is no timeout (an auto
//!   service does not expire until one interval is known, SPEC §2).
//! - A gap between accepted beats that holds no labelled failure is normal:
//!   if it is longer than the timeout in force, that is one false alarm.
//! - Every seen beat is a possible last beat of a crash: the delay is the
//!   time from that beat to the deadline in force after it (last accepted
//!   beat + timeout), in the trace's mean intervals at that beat. A delay
//!   over 10 intervals is a missed detection. Beats before the first
//!   interval have no deadline and are not counted. A labelled outage is
//!   such a crash that really happened: its gap then enters the history,
//!   as it does in lovebeat once the service beats again.

use crate::detectors::Detector;
use crate::trace::Trace;

/// A beat this soon (ms) after the last accepted one is not accepted
/// (`service::RATE_LIMIT_MS`).
pub const RATE_LIMIT_MS: u64 = 1000;
/// A detection later than this many intervals is a missed detection.
pub const MISSED_AFTER: f64 = 10.0;

/// How a replay treats the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Apply lovebeat's 1000 ms rate limit (the suite does).
    pub rate_limit: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { rate_limit: true }
    }
}

/// What one detector did on a set of traces.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Normal intervals sent (gaps between consecutive sent beats that are
    /// not outages): the denominator of the mistake rate.
    pub normal_intervals: u64,
    /// Normal gaps longer than the timeout in force.
    pub false_alarms: u64,
    /// Detection delay of a crash after each seen beat, in mean intervals.
    pub delays: Vec<f64>,
    /// Delays over `MISSED_AFTER`.
    pub missed: u64,
    /// Labelled outages (true failures).
    pub failures: u64,
    /// Their detection delays, in mean intervals.
    pub failure_delays: Vec<f64>,
}

impl Metrics {
    /// Adds another replay's figures.
    pub fn merge(&mut self, other: &Metrics) {
        self.normal_intervals += other.normal_intervals;
        self.false_alarms += other.false_alarms;
        self.delays.extend_from_slice(&other.delays);
        self.missed += other.missed;
        self.failures += other.failures;
        self.failure_delays.extend_from_slice(&other.failure_delays);
    }

    /// False alarms per 1000 normal intervals (the mistake rate).
    pub fn false_alarm_rate(&self) -> f64 {
        if self.normal_intervals == 0 {
            return 0.0;
        }
        1000.0 * self.false_alarms as f64 / self.normal_intervals as f64
    }

    /// Mean detection delay, in mean intervals.
    pub fn mean_delay(&self) -> f64 {
        mean(&self.delays)
    }

    /// 99th percentile of the detection delay (nearest rank).
    pub fn p99_delay(&self) -> f64 {
        percentile(&self.delays, 0.99)
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Nearest-rank percentile: the smallest value with at least `q` of the
/// values at or below it.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Replays one trace through a fresh detector.
pub fn replay(trace: &Trace, detector: &mut dyn Detector, opts: Options) -> Metrics {
    let mut m = Metrics::default();
    let Some(first) = trace.beats.first() else {
        return m;
    };
    // The last accepted beat, and the timeout in force after it.
    let mut last_accepted = first.at;
    let mut timeout: Option<f64> = None;
    // Whether an outage lies between the last accepted beat and now.
    let mut outage = false;
    // The delay of a crash right after the latest seen beat.
    let mut last_delay: Option<f64> = None;
    for beat in &trace.beats[1..] {
        if beat.after_failure {
            outage = true;
            m.failures += 1;
            // The crash happened after the latest seen beat.
            if let Some(d) = last_delay {
                m.failure_delays.push(d);
            }
        } else {
            m.normal_intervals += 1;
        }
        if beat.lost {
            continue;
        }
        let gap = beat.at.saturating_sub(last_accepted);
        if !opts.rate_limit || gap >= RATE_LIMIT_MS {
            if !outage && timeout.is_some_and(|t| gap as f64 > t) {
                m.false_alarms += 1;
            }
            detector.observe(u32::try_from(gap).unwrap_or(u32::MAX));
            timeout = Some(detector.timeout());
            last_accepted = beat.at;
            outage = false;
        }
        last_delay = timeout.map(|t| (last_accepted as f64 + t - beat.at as f64) / beat.nominal);
        if let Some(d) = last_delay {
            if d > MISSED_AFTER {
                m.missed += 1;
            }
            m.delays.push(d);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Beat;

    /// A detector whose timeout is fixed.
    struct Fixed(f64, Vec<u32>);

    impl Detector for Fixed {
        fn observe(&mut self, interval: u32) {
            self.1.push(interval);
        }
        fn timeout(&self) -> f64 {
            self.0
        }
    }

    fn beat(at: u64) -> Beat {
        Beat {
            at,
            lost: false,
            after_failure: false,
            nominal: 60_000.0,
        }
    }

    #[test]
    fn a_normal_gap_longer_than_the_timeout_is_one_false_alarm() {
        let trace = Trace {
            beats: vec![beat(0), beat(60_000), beat(120_000), beat(200_000)],
        };
        let mut d = Fixed(70_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options::default());
        assert_eq!(d.1, vec![60_000, 60_000, 80_000]);
        assert_eq!((m.normal_intervals, m.false_alarms, m.missed), (3, 1, 0));
        assert_eq!(m.delays, vec![70_000.0 / 60_000.0; 3]);
        assert!((m.false_alarm_rate() - 1000.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_lost_beat_leaves_a_normal_gap_the_detector_sees_whole() {
        let mut lost = beat(120_000);
        lost.lost = true;
        let trace = Trace {
            beats: vec![beat(0), beat(60_000), lost, beat(180_000)],
        };
        let mut d = Fixed(70_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options::default());
        assert_eq!(d.1, vec![60_000, 120_000]);
        assert_eq!((m.normal_intervals, m.false_alarms), (3, 1));
        assert_eq!(m.delays.len(), 2, "no crash point after an unseen beat");
    }

    #[test]
    fn the_rate_limit_drops_a_beat_without_moving_the_deadline() {
        let trace = Trace {
            beats: vec![beat(0), beat(60_000), beat(60_400), beat(130_000)],
        };
        let mut d = Fixed(65_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options::default());
        assert_eq!(d.1, vec![60_000, 70_000]);
        assert_eq!(m.false_alarms, 1, "70 s since the last accepted beat");
        assert_eq!(m.delays[1], (65_000.0 - 400.0) / 60_000.0);
        let mut d = Fixed(65_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options { rate_limit: false });
        assert_eq!(d.1, vec![60_000, 400, 69_600]);
        assert_eq!(m.false_alarms, 1);
    }

    #[test]
    fn an_outage_is_a_failure_not_a_false_alarm_and_a_late_one_is_missed() {
        let mut back = beat(60_000 + 3_600_000);
        back.after_failure = true;
        let trace = Trace {
            beats: vec![beat(0), beat(60_000), back, beat(3_720_000)],
        };
        let mut d = Fixed(70_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options::default());
        assert_eq!((m.normal_intervals, m.false_alarms, m.failures), (2, 0, 1));
        assert_eq!(m.failure_delays, vec![70_000.0 / 60_000.0]);
        assert_eq!(
            d.1,
            vec![60_000, 3_600_000, 60_000],
            "the outage enters the history"
        );
        let mut d = Fixed(601_000.0, Vec::new());
        let m = replay(&trace, &mut d, Options::default());
        assert_eq!(m.missed, 3);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 198.0);
        assert_eq!(percentile(&[5.0], 0.99), 5.0);
    }
}
