//! Durations as they are written in the configuration and the API:
//! seconds as in 1.x, plus `90s`, `15m`, `1h30m`, `2d` (README, "Sending
//! beats"). Timeouts, which add `auto` and 1.x's negative sentinels, are
//! read on top of these by the engine (`engine/timeout_text.rs`).

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
    /// A JSON number that is not written as plain decimal seconds
    /// (`1e3`): every path reads seconds as statsd does, without an
    /// exponent.
    #[error("timeout {0} is not allowed: write seconds as a plain decimal number (60, 0.5, -1), without an exponent")]
    Exponent(String),
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

/// A number or a string, as a setting may be written: durations and
/// timeouts (`engine/timeout_text.rs`) read the same forms.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub enum Written {
    /// Whole seconds.
    Secs(i64),
    /// Decimal seconds.
    Float(f64),
    /// A duration (`10m`) or a word (`auto`).
    Text(String),
}
