//! Timeout and duration inputs: seconds as in 1.x, plus `90s`, `15m`,
//! `1h30m`, `2d` and `auto` (README, "Sending beats").

use crate::engine::{Timeout, TIMEOUT_AUTO, TIMEOUT_NONE};

/// Why a timeout or a duration cannot be read; the message names the
/// problem for a 400 or a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A negative timeout other than -1 and -2.
    #[error(
        "timeout {0} is not allowed: use seconds > 0, 0 (always error), -1 (never) or -2 / auto"
    )]
    BadTimeout(String),
    /// A negative or absurdly large duration in seconds.
    #[error("duration '{0}' must be 0 or more seconds")]
    Negative(String),
    /// Nothing given.
    #[error("empty duration")]
    Empty,
    /// Text where a number should be.
    #[error("expected a number at '{0}'")]
    ExpectedNumber(String),
    /// A number without `ms`, `s`, `m`, `h` or `d`.
    #[error("missing unit (use ms, s, m, h or d)")]
    MissingUnit,
    /// Another unit.
    #[error("unknown unit '{0}' (use ms, s, m, h or d)")]
    UnknownUnit(String),
    /// More milliseconds than fit.
    #[error("duration too large")]
    TooLarge,
    /// One of the above, in a named input.
    #[error("{what} '{text}': {source}")]
    In {
        /// `timeout` or `duration`.
        what: &'static str,
        /// The input as given.
        text: String,
        /// What is wrong with it.
        source: Box<DurationError>,
    },
}

/// The timeout a number of whole seconds stands for (1.x's statsd and JSON
/// form): N > 0 is N s, 0 always ERROR, -1 none, -2 auto; other negative
/// numbers are refused.
pub fn timeout_from_secs(secs: i64) -> Result<Timeout, DurationError> {
    match secs {
        s if s > 0 => s
            .checked_mul(1000)
            .map(|ms| Timeout::After(ms as u64))
            .ok_or(DurationError::TooLarge),
        0 => Ok(Timeout::Always),
        TIMEOUT_NONE => Ok(Timeout::None),
        TIMEOUT_AUTO => Ok(Timeout::Auto),
        s => Err(DurationError::BadTimeout(s.to_string())),
    }
}

/// Parses a timeout as text: `auto`, whole or decimal seconds (`3600`,
/// `1.5`, `-1`), or a duration (`1h30m`).
pub fn parse_timeout(text: &str) -> Result<Timeout, DurationError> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(Timeout::Auto);
    }
    if let Ok(secs) = t.parse::<i64>() {
        return timeout_from_secs(secs);
    }
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..9.0e15).contains(&secs) {
            return Ok(match (secs * 1000.0).round() as u64 {
                0 => Timeout::Always,
                ms => Timeout::After(ms),
            });
        }
        return Err(DurationError::BadTimeout(text.to_string()));
    }
    parse_duration_ms(t)
        .map(|ms| match ms {
            0 => Timeout::Always,
            ms => Timeout::After(ms),
        })
        .map_err(|e| DurationError::In {
            what: "timeout",
            text: text.to_string(),
            source: Box::new(e),
        })
}

/// Parses a duration input (`grace`, `max_runtime`, `for`, `repeat`): a
/// bare number is seconds (decimals allowed), else a duration (`10m`).
/// Never negative.
pub fn parse_duration_input(text: &str) -> Result<u64, DurationError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..1e12).contains(&secs) {
            return Ok((secs * 1000.0).round() as u64);
        }
        return Err(DurationError::Negative(text.to_string()));
    }
    parse_duration_ms(t).map_err(|e| DurationError::In {
        what: "duration",
        text: text.to_string(),
        source: Box::new(e),
    })
}

/// Parses a duration such as `90s`, `15m`, `1h30m`, `2d`, `500ms` into ms.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(DurationError::ExpectedNumber(text[start..].to_string()));
        }
        let n: u64 = text[start..i]
            .parse()
            .map_err(|_| DurationError::TooLarge)?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &text[ustart..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(DurationError::MissingUnit),
            u => return Err(DurationError::UnknownUnit(u.to_string())),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(total)
}

/// A timeout as a configuration file writes it: whole seconds (`3600`,
/// `0`, `-1`, `-2`) or text (`"1h30m"`, `"auto"`), read as the file is
/// loaded so a bad one is reported with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutSetting(pub Timeout);

impl<'de> serde::Deserialize<'de> for TimeoutSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimeoutSetting, D::Error> {
        match Written::deserialize(d)? {
            Written::Secs(s) => timeout_from_secs(s),
            Written::Float(f) => parse_timeout(&f.to_string()),
            Written::Text(t) => parse_timeout(&t),
        }
        .map(TimeoutSetting)
        .map_err(serde::de::Error::custom)
    }
}

/// A duration as a configuration file writes it: seconds (`30`, `1.5`) or
/// text (`"10m"`), never negative; read as the file is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting {
    /// The duration in milliseconds.
    pub ms: u64,
}

impl<'de> serde::Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DurationSetting, D::Error> {
        match Written::deserialize(d)? {
            Written::Secs(s) if s >= 0 => Ok(s.saturating_mul(1000) as u64),
            Written::Secs(s) => Err(DurationError::Negative(s.to_string())),
            Written::Float(f) => parse_duration_input(&f.to_string()),
            Written::Text(t) => parse_duration_input(&t),
        }
        .map(|ms| DurationSetting { ms })
        .map_err(serde::de::Error::custom)
    }
}

/// A number or a string, as a setting may be written.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Written {
    Secs(i64),
    Float(f64),
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("3600"), Ok(Timeout::After(3_600_000)));
        assert_eq!(parse_timeout("auto"), Ok(Timeout::Auto));
        assert_eq!(parse_timeout("-2"), Ok(Timeout::Auto));
        assert_eq!(parse_timeout("-1"), Ok(Timeout::None));
        assert_eq!(parse_timeout("0"), Ok(Timeout::Always));
        assert_eq!(parse_timeout("1.5"), Ok(Timeout::After(1500)));
        assert_eq!(parse_timeout("90s"), Ok(Timeout::After(90_000)));
        assert_eq!(parse_timeout("15m"), Ok(Timeout::After(900_000)));
        assert_eq!(parse_timeout("1h30m"), Ok(Timeout::After(5_400_000)));
        assert_eq!(parse_timeout("2d"), Ok(Timeout::After(172_800_000)));
        assert!(parse_timeout("-3").is_err());
        assert!(parse_timeout("-1.5").is_err());
        assert!(parse_timeout("1x").is_err());
        assert!(parse_timeout("h").is_err());
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("99999999999999999999d").is_err());
        assert!(
            parse_timeout("106751991168d").is_err(),
            "more ms than an i64"
        );
    }

    #[test]
    fn errors_name_the_input_and_the_problem() {
        let e = parse_timeout("10x").expect_err("bad unit").to_string();
        assert!(e.contains("'10x'") && e.contains("unknown unit 'x'"), "{e}");
        let e = parse_duration_input("-5")
            .expect_err("negative")
            .to_string();
        assert!(e.contains("'-5'") && e.contains("0 or more"), "{e}");
    }

    proptest! {
        /// Whatever the text, reading it never panics, and a timeout read
        /// is one whose wire number reads back the same.
        #[test]
        fn any_text_reads_or_is_refused(text in "\\PC{0,12}") {
            let _ = parse_duration_input(&text);
            if let Ok(t) = parse_timeout(&text) {
                prop_assert_eq!(Timeout::from_wire(t.wire()), Some(t));
            }
        }
    }
}
