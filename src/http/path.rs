//! The request path, checked once. The route table and the key check both
//! read the one match of a checked path, so they cannot disagree about
//! what a request names: a spelling that some other parser would read as
//! another path (`//api`, `/./api`, `/%61pi`) is refused before either
//! runs.

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
    /// need escaping), so an escape can only disguise a path.
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
        if rest.contains('%') {
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
