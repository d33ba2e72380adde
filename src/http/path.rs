//! The request path, checked once. The route table and the key check both
//! read the one match of a checked path, so they cannot disagree about
//! what a request names: a spelling that some other parser would read as
//! another path (`//api`, `/./api`, `/%61pi`) is refused before either
//! runs.
//!
//! One escape is read: in the name of `/api/services/<name>` (and its
//! `/mute`, `/unmute`), where it spells a name that §1.1 does not allow
//! and a path cannot carry as it is (a 1.x database may hold `My Service`,
//! and SPEC §7 loads stored names as they are): without it such a service
//! could never be muted or deleted. The router serves it only for a
//! service that exists, to read, mute, unmute or delete. An escape that
//! spells a name §1.1 allows stays a disguise.

/// Why a request path is refused (a 400 before routing and authorization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path (`OPTIONS *`, or an authority-form target).
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// `//` somewhere: an empty segment (one trailing `/` is allowed).
    #[error("the request path has an empty segment ('//')")]
    EmptySegment,
    /// A segment made only of dots (`.`, `..`).
    #[error("the request path has a '.' or '..' segment")]
    DotSegment,
    /// A `%` escape: names are sent as they are (their characters never
    /// need escaping), so an escape can only disguise a path. (The one
    /// exception, a stored name outside §1.1, is [`stored_name`].)
    #[error("the request path has a percent-escape ('%'): send names unescaped")]
    PercentEscape,
}

/// A request path that means what it says: it starts with `/`, and no
/// segment is empty (but a trailing `/`), made of dots only, or holds a
/// `%`. Removing dot segments, merging slashes or decoding escapes, as a
/// proxy or another router might, leaves it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPath<'a>(&'a str);

impl<'a> RequestPath<'a> {
    /// Checks `path` (the path of a request URI, without its query).
    pub fn parse(path: &'a str) -> Result<RequestPath<'a>, PathError> {
        let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.contains('%') && stored_name(path).is_none() {
            return Err(PathError::PercentEscape);
        }
        let mut segments = rest.split('/').peekable();
        while let Some(s) = segments.next() {
            let last = segments.peek().is_none();
            if s.is_empty() && !last {
                return Err(PathError::EmptySegment);
            }
            if !s.is_empty() && s.bytes().all(|c| c == b'.') {
                return Err(PathError::DotSegment);
            }
        }
        Ok(RequestPath(path))
    }

    /// The path, for the route table.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// The name of `/api/services/<name>`, `/api/services/<name>/mute` or
/// `/api/services/<name>/unmute`, decoded, when it is written with
/// percent-escapes (every `%` followed by two hex digits, UTF-8 once
/// decoded) and spells a name outside §1.1; `None` for any other path.
/// Only a name a path cannot carry otherwise is read this way, so no
/// name that new input may create has a second spelling.
pub fn stored_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/services/")?;
    let escaped = match rest.split_once('/') {
        None => rest,
        Some((name, "mute" | "unmute")) => name,
        Some(_) => return None,
    };
    let bytes = escaped.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !escaped.contains('%') || !well_formed {
        return None;
    }
    let name = percent_encoding::percent_decode_str(escaped)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!name.is_empty() && !crate::engine::valid_name(name.as_bytes())).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_paths_are_kept() {
        for p in [
            "/",
            "/api/services",
            "/api/services/",
            "/api/services/a.b-c_d",
            "/badge/x.svg",
            "/api/services/.a",
            "/api/services/a..b",
        ] {
            assert_eq!(RequestPath::parse(p).map(|r| r.as_str()), Ok(p));
        }
    }

    #[test]
    fn disguised_paths_are_refused() {
        for (p, e) in [
            ("//api/services", PathError::EmptySegment),
            ("///api/services", PathError::EmptySegment),
            ("/api//services", PathError::EmptySegment),
            ("/api/services//", PathError::EmptySegment),
            ("//", PathError::EmptySegment),
            ("/./api/services", PathError::DotSegment),
            ("/api/../api/services", PathError::DotSegment),
            ("/api/services/..", PathError::DotSegment),
            ("/api/services/.", PathError::DotSegment),
            ("/api/services/...", PathError::DotSegment),
            ("/api%2Fservices", PathError::PercentEscape),
            ("/%61pi/services", PathError::PercentEscape),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(RequestPath::parse(p), Err(e), "{p}");
        }
    }

    /// A name outside §1.1 (a 1.x database's) may be escaped in a
    /// service's path, to read, mute, unmute or delete it; an escape that
    /// spells an allowed name, or stands anywhere else, is still refused.
    #[test]
    fn only_a_stored_name_outside_the_rules_may_be_escaped() {
        for (p, name) in [
            ("/api/services/My%20Service", "My Service"),
            ("/api/services/a%2Fb/mute", "a/b"),
            ("/api/services/%2E%2E/unmute", ".."),
            ("/api/services/50%25off", "50%off"),
            ("/api/services/caf%C3%A9", "café"),
            ("/api/services/Upper%41", "UpperA"),
        ] {
            assert_eq!(stored_name(p).as_deref(), Some(name), "{p}");
            assert_eq!(RequestPath::parse(p).map(|r| r.as_str()), Ok(p));
        }
        for p in [
            "/api/services/%61",
            "/api/services/a%2Eb",
            "/api/services/My%20Service/start",
            "/api/services/My%20Service/exit/1",
            "/api/services/My%2",
            "/api/services/My%zz",
            "/api/services/%FF",
            "/api/alarms/My%20Alarm",
            "/api%2Fservices/My%20Service",
            "/api/services/My%20Service/",
        ] {
            assert_eq!(stored_name(p), None, "{p}");
            assert_eq!(RequestPath::parse(p), Err(PathError::PercentEscape), "{p}");
        }
    }

    /// RFC 3986's `remove_dot_segments` (section 5.2.4), as a reference
    /// written apart from the parser.
    fn remove_dot_segments(path: &str) -> String {
        let mut input = path.to_string();
        let mut out = String::new();
        while !input.is_empty() {
            if let Some(r) = input.strip_prefix("../").or(input.strip_prefix("./")) {
                input = r.to_string();
            } else if input.starts_with("/./") {
                input = input[2..].to_string();
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") || input == "/.." {
                input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                out.push_str(&input[..end]);
                input = input[end..].to_string();
            }
        }
        out
    }

    /// What a lenient server would route: dot segments removed, slashes
    /// merged, escapes decoded.
    fn normalise(path: &str) -> String {
        let mut p = remove_dot_segments(path);
        while p.contains("//") {
            p = p.replace("//", "/");
        }
        percent_encoding::percent_decode_str(&p)
            .decode_utf8_lossy()
            .into_owned()
    }

    proptest! {
        /// An accepted path is one that every normalisation leaves as it
        /// is: what the key check reads is what any router would read.
        #[test]
        fn an_accepted_path_is_its_own_normal_form(p in "/[a./%61F-]{0,12}") {
            if let Ok(r) = RequestPath::parse(&p) {
                prop_assert_eq!(normalise(r.as_str()), p.clone());
            }
            if normalise(&p) != p {
                prop_assert!(RequestPath::parse(&p).is_err(), "{} normalises to {}", p, normalise(&p));
            }
        }
    }
}
