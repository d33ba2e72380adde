//! Timeout and duration inputs: seconds as in 1.x, plus `90s`, `15m`,
//! `1h30m`, `2d` and `auto` (SPEC §1.3).

use crate::engine::{TIMEOUT_AUTO, TIMEOUT_NONE};

/// Converts a timeout given in whole seconds to its stored form (ms or a
/// special value), refusing negative values other than -1 and -2.
pub fn timeout_from_secs(secs: i64) -> Result<i64, String> {
    match secs {
        s if s > 0 => s
            .checked_mul(1000)
            .ok_or_else(|| format!("timeout {s} is too large")),
        0 | TIMEOUT_NONE | TIMEOUT_AUTO => Ok(secs),
        s => Err(format!(
            "timeout {s} is not allowed: use seconds > 0, 0 (always error), -1 (never) or -2 / auto"
        )),
    }
}

/// Parses a timeout as text: `auto`, whole or decimal seconds (`3600`,
/// `1.5`, `-1`), or a duration (`1h30m`).
pub fn parse_timeout(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("auto") {
        return Ok(TIMEOUT_AUTO);
    }
    if let Ok(secs) = t.parse::<i64>() {
        return timeout_from_secs(secs);
    }
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..9.0e15).contains(&secs) {
            return Ok((secs * 1000.0).round() as i64);
        }
        return Err(format!("timeout '{text}' is not allowed"));
    }
    parse_duration_ms(t).map_err(|e| format!("timeout '{text}': {e}"))
}

/// Parses a duration input of SPEC §10 (`grace`, `max_runtime`, `for`):
/// a bare number is seconds (decimals allowed), else a duration (`10m`).
/// Never negative.
pub fn parse_duration_input(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..1e12).contains(&secs) {
            return Ok((secs * 1000.0).round() as i64);
        }
        return Err(format!("duration '{text}' must be 0 or more seconds"));
    }
    parse_duration_ms(t).map_err(|e| format!("duration '{text}': {e}"))
}

/// Parses a duration such as `90s`, `15m`, `1h30m`, `2d`, `500ms` into ms.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: i64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(format!("expected a number at '{}'", &text[start..]));
        }
        let n: i64 = text[start..i]
            .parse()
            .map_err(|_| "number too large".to_string())?;
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
            "" => return Err("missing unit (use ms, s, m, h or d)".into()),
            u => return Err(format!("unknown unit '{u}' (use ms, s, m, h or d)")),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_string())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("3600"), Ok(3_600_000));
        assert_eq!(parse_timeout("auto"), Ok(-2));
        assert_eq!(parse_timeout("-2"), Ok(-2));
        assert_eq!(parse_timeout("-1"), Ok(-1));
        assert_eq!(parse_timeout("0"), Ok(0));
        assert_eq!(parse_timeout("1.5"), Ok(1500));
        assert_eq!(parse_timeout("90s"), Ok(90_000));
        assert_eq!(parse_timeout("15m"), Ok(900_000));
        assert_eq!(parse_timeout("1h30m"), Ok(5_400_000));
        assert_eq!(parse_timeout("2d"), Ok(172_800_000));
        assert!(parse_timeout("-3").is_err());
        assert!(parse_timeout("-1.5").is_err());
        assert!(parse_timeout("1x").is_err());
        assert!(parse_timeout("h").is_err());
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("99999999999999999999d").is_err());
    }
}
