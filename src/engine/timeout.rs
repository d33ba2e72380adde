//! What a service's deadline follows, as the engine's callers give it.
//!
//! On the wire (the API, statsd, the database) a timeout is one number:
//! milliseconds, or -1 (none), -2 (auto), 0 (always ERROR) and, with a
//! schedule, -3. Those sentinels are easy to get wrong in code, so the
//! engine takes and gives a [`Timeout`]; only [`super::Service`] packs it
//! into its `i64` (a million of them, 88 bytes each).

use std::sync::Arc;

use super::job::Schedule;

/// Wire value: never expires.
pub const TIMEOUT_NONE: i64 = -1;
/// Wire value: learned from the beat intervals.
pub const TIMEOUT_AUTO: i64 = -2;
/// Wire value: follows a cron schedule.
pub const TIMEOUT_SCHEDULE: i64 = -3;

/// A service's timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timeout {
    /// Never expires: the default of a new service (-1).
    None,
    /// Learned from the beat intervals (-2).
    Auto,
    /// Always ERROR: a tripwire for what must never happen (0).
    Always,
    /// ERROR when no beat came for this many milliseconds (more than 0).
    After(u64),
    /// ERROR from the first fire time after the last beat, plus grace, until
    /// the next beat (-3 on the wire).
    Schedule(Arc<Schedule>),
}

impl Timeout {
    /// The wire number: ms, or -1, -2, 0, -3.
    pub fn wire(&self) -> i64 {
        match self {
            Timeout::None => TIMEOUT_NONE,
            Timeout::Auto => TIMEOUT_AUTO,
            Timeout::Always => 0,
            Timeout::After(ms) => i64::try_from(*ms).unwrap_or(i64::MAX),
            Timeout::Schedule(_) => TIMEOUT_SCHEDULE,
        }
    }

    /// The timeout a wire number stands for, except a schedule (whose
    /// expression travels apart from the number): `None` for -3 and for
    /// any other negative number.
    pub fn from_wire(ms: i64) -> Option<Timeout> {
        match ms {
            TIMEOUT_NONE => Some(Timeout::None),
            TIMEOUT_AUTO => Some(Timeout::Auto),
            0 => Some(Timeout::Always),
            ms if ms > 0 => Some(Timeout::After(ms as u64)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip() {
        for t in [
            Timeout::None,
            Timeout::Auto,
            Timeout::Always,
            Timeout::After(1),
            Timeout::After(3_600_000),
        ] {
            assert_eq!(Timeout::from_wire(t.wire()), Some(t));
        }
        assert_eq!(Timeout::from_wire(TIMEOUT_SCHEDULE), None);
        assert_eq!(Timeout::from_wire(-7), None);
    }
}
