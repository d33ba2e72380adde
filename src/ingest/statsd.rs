//! The statsd line protocol (README, "Sending beats"), parsed without
//! copying: the name is borrowed from the datagram.

use crate::engine::timeout_text::{timeout_from_decimal, SecsError};
use crate::engine::{valid_name, Timeout, INTERNAL_PREFIX};

/// What a line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `<name>.beat`: a beat.
    Beat,
    /// `<name>.autobeat`: set the timeout to auto and beat.
    Autobeat,
    /// `<name>.start`: a job run started.
    Start,
    /// `<name>.fail`: a job run failed.
    Fail,
    /// `<name>.timeout`: set the timeout (the value is in seconds).
    Timeout(Timeout),
}

/// One parsed line, borrowing the service name from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    /// The service name (a valid one: [`valid_name`]).
    pub name: &'a str,
    /// What to do.
    pub action: Action,
}

/// Why a line was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `:` separating the metric from its value.
    #[error("no ':' between the metric and its value")]
    MissingColon,
    /// The action is not `beat`, `autobeat`, `timeout`, `start` or `fail`.
    #[error("the action is not beat, autobeat, timeout, start or fail")]
    UnknownAction,
    /// The service name is not a valid one.
    #[error("the service name is not [a-z0-9._-]+ of at most 255 bytes")]
    BadName,
    /// The value is not a number.
    #[error("the value is not a number")]
    BadValue,
    /// The type is missing or not `c`, `g` or `ms`.
    #[error("the type is missing or not c, g or ms")]
    BadType,
    /// Something after the type is not `|@rate` or `|#tags`.
    #[error("what follows the type is not |@rate or |#tags")]
    BadSuffix,
    /// A timeout below -2.
    #[error("a timeout below -2")]
    BadTimeout,
}

/// The action word of a line, before its value is known.
#[derive(Clone, Copy)]
enum Verb {
    Beat,
    Autobeat,
    Timeout,
    Start,
    Fail,
}

/// Parses one line (without its `\n`; a trailing `\r` is allowed).
pub fn parse_line(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let colon = memchr::memchr(b':', line).ok_or(ParseError::MissingColon)?;
    let (metric, rest) = (&line[..colon], &line[colon + 1..]);
    let dot = memchr::memrchr(b'.', metric).ok_or(ParseError::UnknownAction)?;
    let verb = match &metric[dot + 1..] {
        b"beat" => Verb::Beat,
        b"autobeat" => Verb::Autobeat,
        b"timeout" => Verb::Timeout,
        b"start" => Verb::Start,
        b"fail" => Verb::Fail,
        _ => return Err(ParseError::UnknownAction),
    };
    let name = &metric[..dot];
    if !valid_name(name) || name.starts_with(INTERNAL_PREFIX.as_bytes()) {
        return Err(ParseError::BadName);
    }
    let mut fields = rest.split(|c| *c == b'|');
    let value = fields.next().unwrap_or_default();
    // A timeout is kept to the millisecond, as every path keeps it; other
    // values are only checked.
    let action = match verb {
        Verb::Timeout => Action::Timeout(timeout_from_decimal(value).map_err(|e| match e {
            SecsError::Negative => ParseError::BadTimeout,
            SecsError::NotANumber | SecsError::TooLarge => ParseError::BadValue,
        })?),
        other => {
            parse_value(value)?;
            match other {
                Verb::Autobeat => Action::Autobeat,
                Verb::Start => Action::Start,
                Verb::Fail => Action::Fail,
                Verb::Beat | Verb::Timeout => Action::Beat,
            }
        }
    };
    match fields.next() {
        Some(b"c" | b"g" | b"ms") => {}
        _ => return Err(ParseError::BadType),
    }
    for (i, field) in fields.enumerate() {
        match field.split_first() {
            // The sample rate: 1.x accepted `[0-9.]+`, and only first.
            Some((b'@', rate))
                if i == 0
                    && !rate.is_empty()
                    && rate.iter().all(|c| c.is_ascii_digit() || *c == b'.') => {}
            // dogstatsd tags, ignored.
            Some((b'#', _)) => {}
            _ => return Err(ParseError::BadSuffix),
        }
    }
    // SAFETY: valid_name accepted only the ASCII bytes [a-z0-9._-], and
    // ASCII is valid UTF-8.
    let name = unsafe { std::str::from_utf8_unchecked(name) };
    Ok(Command { name, action })
}

/// An integer, or a non-negative decimal truncated toward zero: the value
/// of a beat, autobeat, start or fail, which only has to be a number (a
/// timeout's is read by [`timeout_from_decimal`]).
fn parse_value(v: &[u8]) -> Result<i64, ParseError> {
    let (neg, digits) = match v.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, v),
    };
    let (int, frac) = match memchr::memchr(b'.', digits) {
        Some(p) => (&digits[..p], Some(&digits[p + 1..])),
        None => (digits, None),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadValue);
    }
    if let Some(frac) = frac {
        if neg || frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadValue);
        }
    }
    let mut n: i64 = 0;
    for d in int {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(ParseError::BadValue)?;
    }
    Ok(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> (String, Action) {
        let c = parse_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        (c.name.to_string(), c.action)
    }

    #[test]
    fn good_lines() {
        use Action::*;
        let after = |ms| Action::Timeout(crate::engine::Timeout::After(ms));
        let table: Vec<(&str, (&str, Action))> = vec![
            (
                "myapp.mailers.invoice.beat:1|c",
                ("myapp.mailers.invoice", Beat),
            ),
            ("a.beat:0|c", ("a", Beat)),
            ("a.beat:1|g", ("a", Beat)),
            ("a.beat:1|ms", ("a", Beat)),
            ("a.beat:-5|c", ("a", Beat)),
            ("a.beat:1|c|@0.1", ("a", Beat)),
            ("a.beat:1|c|@0.5|#env:prod,x:y", ("a", Beat)),
            ("a.beat:1|c|#env:prod", ("a", Beat)),
            ("a.beat:1|c\r", ("a", Beat)),
            ("a.timeout:60|g", ("a", after(60_000))),
            ("a.timeout:1.9|g", ("a", after(1900))),
            ("a.timeout:0.5|g", ("a", after(500))),
            ("a.timeout:0.0004|g", ("a", after(1))),
            (
                "a.timeout:0|g",
                ("a", Action::Timeout(crate::engine::Timeout::Always)),
            ),
            (
                "a.timeout:-1|g",
                ("a", Action::Timeout(crate::engine::Timeout::None)),
            ),
            (
                "a.timeout:-2|g",
                ("a", Action::Timeout(crate::engine::Timeout::Auto)),
            ),
            ("a.timeout:5|c", ("a", after(5000))),
            ("a.autobeat:1|c", ("a", Autobeat)),
            ("job.start:1|c", ("job", Start)),
            ("job.fail:1|c", ("job", Fail)),
            ("x-y_z.9.beat:1|c", ("x-y_z.9", Beat)),
        ];
        for (line, (name, action)) in table {
            assert_eq!(ok(line), (name.to_string(), action), "{line}");
        }
    }

    #[test]
    fn bad_lines() {
        use ParseError::*;
        let table: &[(&str, ParseError)] = &[
            ("a.beat", MissingColon),
            ("a.beat:1", BadType),
            ("a.beat:1|", BadType),
            ("a.beat:1|h", BadType),
            ("a.beat:x|c", BadValue),
            ("a.beat:|c", BadValue),
            ("a.beat:-1.5|c", BadValue),
            ("a.beat:1.|c", BadValue),
            ("a.beat:99999999999999999999|c", BadValue),
            ("a.timeout:-3|g", BadTimeout),
            ("a.timeout:-0|g", BadTimeout),
            ("a.timeout:-0.5|g", BadTimeout),
            ("a.timeout:-1.0|g", BadTimeout),
            ("a.timeout:1e3|g", BadValue),
            ("a.timeout:|g", BadValue),
            ("a.timeout:9223372036854775807|g", BadValue),
            ("a.bogus:1|c", UnknownAction),
            ("beat:1|c", UnknownAction),
            (".beat:1|c", BadName),
            ("...beat:1|c", BadName),
            ("lovebeat.self.save.beat:1|c", BadName),
            ("A.beat:1|c", BadName),
            ("a b.beat:1|c", BadName),
            ("a.beat:1|c|@", BadSuffix),
            ("a.beat:1|c|x", BadSuffix),
            ("a.beat:1|c|@1|@1", BadSuffix),
        ];
        for (line, want) in table {
            assert_eq!(parse_line(line.as_bytes()), Err(*want), "{line}");
        }
        let long = format!("{}.beat:1|c", "a".repeat(256));
        assert_eq!(parse_line(long.as_bytes()), Err(BadName));
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn valid_beats_round_trip(name in "[a-z0-9._-]{1,40}", v in 0i64..1_000_000) {
            prop_assume!(name.bytes().any(|c| c != b'.'), "a name of dots only is no name");
            let line = format!("{name}.beat:{v}|c");
            let c = parse_line(line.as_bytes()).expect("valid line");
            prop_assert_eq!(c.name, name.as_str());
        }
    }
}
