//! Timeouts as they are written: statsd lines, HTTP `?timeout=` and JSON,
//! and the configuration, all read by one function so they agree
//! (README, "Sending beats"). Plain durations are read by
//! `crate::settings::duration`, below everything.

use super::Timeout;
use crate::settings::duration::{parse_duration_ms, DurationError, Written};

/// Why a number of seconds is not a timeout ([`timeout_from_decimal`]).
/// Carries nothing, so statsd's hot path reads a bad line without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecsError {
    /// Not `-?digits[.digits]`.
    #[error("not a number of seconds")]
    NotANumber,
    /// Negative, and not the whole number -1 or -2.
    #[error("a negative timeout other than -1 and -2")]
    Negative,
    /// More milliseconds than an `i64` holds.
    #[error("timeout too large")]
    TooLarge,
}

/// The timeout a number of seconds written in decimal (`60`, `2.5`,
/// `0.0004`, `-1`) stands for: the one reading every path shares (statsd
/// lines, HTTP `?timeout=` and JSON, the client through HTTP, the
/// config), so they agree (SPEC §1.3 and §4.1). It is kept to the
/// millisecond (rounded to the nearest), a positive value under 1 ms is
/// 1 ms, and only a value that is exactly zero (`0`, `0.00`) is the
/// tripwire: a sub-second timeout never becomes "always ERROR". Negative
/// values are -1 (none) and -2 (auto), written as whole numbers; any other,
/// `-0` included, is refused. Exact (no floating point) and allocation-free.
pub fn timeout_from_decimal(text: &[u8]) -> Result<Timeout, SecsError> {
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    let (neg, rest) = match text.split_first() {
        Some((b'-', r)) => (true, r),
        _ => (false, text),
    };
    let (int, frac) = match memchr::memchr(b'.', rest) {
        Some(p) => (&rest[..p], Some(&rest[p + 1..])),
        None => (rest, None),
    };
    let frac_digits = frac.unwrap_or_default();
    if !digits(int) || !digits(frac_digits) || (int.is_empty() && frac_digits.is_empty()) {
        return Err(SecsError::NotANumber);
    }
    if neg {
        let first = int.iter().position(|d| *d != b'0').unwrap_or(int.len());
        return match (&int[first..], frac) {
            (b"1", None) => Ok(Timeout::None),
            (b"2", None) => Ok(Timeout::Auto),
            _ => Err(SecsError::Negative),
        };
    }
    let mut secs: u64 = 0;
    for d in int {
        secs = secs
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(SecsError::TooLarge)?;
    }
    let mut part: u64 = 0;
    for i in 0..3 {
        part = part * 10 + frac_digits.get(i).map_or(0, |d| u64::from(d - b'0'));
    }
    let below = frac_digits.get(3..).unwrap_or_default();
    if below.first().is_some_and(|d| *d >= b'5') {
        part += 1;
    }
    let ms = secs
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(part))
        .filter(|ms| *ms <= i64::MAX as u64)
        .ok_or(SecsError::TooLarge)?;
    Ok(match ms {
        0 if below.iter().all(|d| *d == b'0') => Timeout::Always,
        0 => Timeout::After(1),
        ms => Timeout::After(ms),
    })
}

/// Parses a timeout as text: `auto`, whole or decimal seconds (`3600`,
/// `1.5`, `-1`; [`timeout_from_decimal`]), or a duration (`1h30m`).
/// Nothing is trimmed: ` 5` (and `+5` in a query, where `+` is a space)
/// is refused here as statsd refuses it.
pub fn parse_timeout(text: &str) -> Result<Timeout, DurationError> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Timeout::Auto);
    }
    match timeout_from_decimal(text.as_bytes()) {
        Err(SecsError::NotANumber) => {}
        other => return decimal_result(text, other),
    }
    parse_duration_ms(text)
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

/// Reads a JSON number's timeout from the number's text as written
/// (`0.0000000001`, not the `1e-10` a float would print as), with
/// [`timeout_from_decimal`], so a JSON body reads the same number as
/// statsd and `?timeout=` do.
pub fn timeout_from_json_number(text: &str) -> Result<Timeout, DurationError> {
    match timeout_from_decimal(text.as_bytes()) {
        Err(SecsError::NotANumber) => Err(DurationError::Exponent(text.to_string())),
        other => decimal_result(text, other),
    }
}

/// [`timeout_from_decimal`]'s answer for `text` as a [`DurationError`].
fn decimal_result(text: &str, read: Result<Timeout, SecsError>) -> Result<Timeout, DurationError> {
    read.map_err(|e| match e {
        SecsError::Negative => DurationError::BadTimeout(text.to_string()),
        SecsError::TooLarge => DurationError::In {
            what: "timeout",
            text: text.to_string(),
            source: Box::new(DurationError::TooLarge),
        },
        SecsError::NotANumber => DurationError::In {
            what: "timeout",
            text: text.to_string(),
            source: Box::new(DurationError::ExpectedNumber(text.to_string())),
        },
    })
}

/// A timeout as a configuration file writes it: whole seconds (`3600`,
/// `0`, `-1`, `-2`) or text (`"1h30m"`, `"auto"`), read as the file is
/// loaded so a bad one is reported with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutSetting(pub Timeout);

impl<'de> serde::Deserialize<'de> for TimeoutSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TimeoutSetting, D::Error> {
        match Written::deserialize(d)? {
            Written::Secs(s) => parse_timeout(&s.to_string()),
            Written::Float(f) => parse_timeout(&f.to_string()),
            Written::Text(t) => parse_timeout(&t),
        }
        .map(TimeoutSetting)
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::duration::parse_duration_input;
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
        assert!(parse_timeout("-1.0").is_err());
        assert!(parse_timeout("1e3").is_err());
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

    /// SPEC §1.3 and §4.1: kept to the millisecond, a positive value under
    /// 1 ms is 1 ms, only an exact zero is the tripwire, and negative
    /// values are -1 and -2 only.
    /// A JSON number is read from its text as every path reads seconds:
    /// what statsd and `?timeout=` take, it takes; what they refuse, it
    /// refuses.
    #[test]
    fn json_numbers_read_as_statsd_and_the_query_read_them() {
        let j = timeout_from_json_number;
        assert_eq!(j("0.0000000001"), Ok(Timeout::After(1)));
        assert_eq!(j("0.0004"), Ok(Timeout::After(1)));
        assert_eq!(j("0.25"), Ok(Timeout::After(250)));
        assert_eq!(
            j("9223372036854775.807"),
            Ok(Timeout::After(i64::MAX as u64))
        );
        assert_eq!(j("0"), Ok(Timeout::Always));
        assert_eq!(j("-2"), Ok(Timeout::Auto));
        assert!(matches!(j("-0"), Err(DurationError::BadTimeout(_))));
        for exp in ["1e3", "4e-4", "1E3", "1e-10"] {
            assert_eq!(j(exp), Err(DurationError::Exponent(exp.into())));
            assert!(timeout_from_decimal(exp.as_bytes()).is_err(), "{exp}");
            assert!(parse_timeout(exp).is_err(), "{exp}");
        }
        assert!(j("9223372036854775.808").is_err());
    }

    /// `+5` in a query is ` 5`; statsd refuses both, so every path does.
    #[test]
    fn a_sign_or_space_before_a_timeout_is_refused_as_statsd_refuses_it() {
        for text in [" 5", "5 ", "+5", "\t5"] {
            assert!(timeout_from_decimal(text.as_bytes()).is_err(), "{text:?}");
            assert!(parse_timeout(text).is_err(), "{text:?}");
        }
        assert_eq!(parse_timeout("5"), Ok(Timeout::After(5000)));
        assert_eq!(parse_timeout("AUTO"), Ok(Timeout::Auto));
    }

    #[test]
    fn decimal_seconds_are_kept_to_the_millisecond() {
        let t = |s: &str| timeout_from_decimal(s.as_bytes());
        assert_eq!(t("0.5"), Ok(Timeout::After(500)));
        assert_eq!(t("2.5"), Ok(Timeout::After(2500)));
        assert_eq!(t("1.9"), Ok(Timeout::After(1900)));
        assert_eq!(t(".25"), Ok(Timeout::After(250)));
        assert_eq!(t("3."), Ok(Timeout::After(3000)));
        assert_eq!(t("0.0004"), Ok(Timeout::After(1)));
        assert_eq!(t("0.0000000001"), Ok(Timeout::After(1)));
        assert_eq!(t("0.0015"), Ok(Timeout::After(2)));
        assert_eq!(t("0.9999"), Ok(Timeout::After(1000)));
        assert_eq!(t("0"), Ok(Timeout::Always));
        assert_eq!(t("0.000"), Ok(Timeout::Always));
        assert_eq!(t("00"), Ok(Timeout::Always));
        assert_eq!(t("-1"), Ok(Timeout::None));
        assert_eq!(t("-2"), Ok(Timeout::Auto));
        assert_eq!(t("-01"), Ok(Timeout::None));
        for negative in ["-0", "-0.0", "-0.5", "-1.0", "-1.5", "-3", "-00"] {
            assert_eq!(t(negative), Err(SecsError::Negative), "{negative}");
        }
        for junk in ["", ".", "-", "-.", "1.2.3", "1e3", "+1", " 1", "0x1", "1s"] {
            assert_eq!(t(junk), Err(SecsError::NotANumber), "{junk}");
        }
        assert_eq!(
            t("9223372036854775.807"),
            Ok(Timeout::After(i64::MAX as u64))
        );
        assert_eq!(t("9223372036854775.808"), Err(SecsError::TooLarge));
        assert_eq!(t("99999999999999999999999"), Err(SecsError::TooLarge));
        // HTTP and the config read the same.
        assert_eq!(parse_timeout("0.5"), Ok(Timeout::After(500)));
        assert_eq!(parse_timeout("0.0004"), Ok(Timeout::After(1)));
        assert!(parse_timeout("-0").is_err());
    }

    proptest! {
        /// Every decimal number of seconds agrees with exact arithmetic:
        /// rounded to the millisecond, at least 1 ms when positive, the
        /// tripwire only at zero; and its wire number reads back the same.
        #[test]
        fn decimal_seconds_agree_with_exact_arithmetic(
            int in 0u64..10_000_000,
            frac in "[0-9]{0,9}",
        ) {
            let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            let got = timeout_from_decimal(text.as_bytes()).expect("a timeout");
            // The value in nanoseconds, exactly (nine fraction digits).
            let nanos = u128::from(int) * 1_000_000_000
                + format!("{frac:0<9}").parse::<u128>().expect("digits");
            let want = match (nanos + 500_000) / 1_000_000 {
                0 if nanos == 0 => Timeout::Always,
                0 => Timeout::After(1),
                ms => Timeout::After(ms as u64),
            };
            prop_assert_eq!(&got, &want, "{}", text);
            prop_assert_eq!(Timeout::from_wire(got.wire()), Some(got.clone()));
            prop_assert_eq!(parse_timeout(&text), Ok(got.clone()));
            let line = format!("svc.timeout:{text}|g");
            let parsed = crate::ingest::statsd::parse_line(line.as_bytes()).expect("a line");
            prop_assert_eq!(parsed.action, crate::ingest::statsd::Action::Timeout(got));
        }
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
