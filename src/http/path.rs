//! The request path, parsed once. The router and the key check both read
//! the segments parsed here, so they cannot disagree about what a request
//! names: a spelling that one of them would read differently from the
//! other (`//api`, `/./api`, `/%61pi`) is refused before either runs.

use std::fmt;

/// Why a request path is refused (a 400 before routing and authorization).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path (`OPTIONS *`, or an absolute-form URI without
    /// one).
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

/// A request path split into its segments. `/` is one empty segment, and
/// a trailing `/` leaves an empty last segment (`/api/services/` is
/// `["api", "services", ""]`); no other segment is empty, made of dots
/// only, or holds a `%`.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestPath<'a> {
    segments: Vec<&'a str>,
}

impl<'a> RequestPath<'a> {
    /// Splits `path` (the path of a request URI, without its query) into
    /// segments, or says why it is refused.
    pub fn parse(path: &'a str) -> Result<RequestPath<'a>, PathError> {
        let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.contains('%') {
            return Err(PathError::PercentEscape);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let last = segments.len() - 1;
        for (i, s) in segments.iter().enumerate() {
            if s.is_empty() && i != last {
                return Err(PathError::EmptySegment);
            }
            if !s.is_empty() && s.bytes().all(|c| c == b'.') {
                return Err(PathError::DotSegment);
            }
        }
        Ok(RequestPath { segments })
    }

    /// The segments, for matching routes.
    pub fn segments(&self) -> &[&'a str] {
        &self.segments
    }
}

impl fmt::Debug for RequestPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.segments.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segs(p: &str) -> Result<Vec<&str>, PathError> {
        RequestPath::parse(p).map(|r| r.segments().to_vec())
    }

    #[test]
    fn plain_paths_split_into_segments() {
        assert_eq!(segs("/"), Ok(vec![""]));
        assert_eq!(segs("/api/services"), Ok(vec!["api", "services"]));
        assert_eq!(segs("/api/services/"), Ok(vec!["api", "services", ""]));
        assert_eq!(
            segs("/api/services/a.b-c_d"),
            Ok(vec!["api", "services", "a.b-c_d"])
        );
        assert_eq!(segs("/badge/x.svg"), Ok(vec!["badge", "x.svg"]));
        assert_eq!(segs("/api/services/.a"), Ok(vec!["api", "services", ".a"]));
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
            assert_eq!(segs(p), Err(e), "{p}");
        }
    }

    proptest! {
        /// Whatever a client sends, an accepted path is exactly its
        /// segments joined by `/`: nothing is normalised away, so what
        /// the key check reads is what the router reads.
        #[test]
        fn an_accepted_path_is_its_segments(p in "/[a-z./%_-]{0,12}") {
            if let Ok(r) = RequestPath::parse(&p) {
                prop_assert_eq!(format!("/{}", r.segments().join("/")), p.clone());
                let n = r.segments().len();
                for (i, s) in r.segments().iter().enumerate() {
                    prop_assert!(!s.is_empty() || i == n - 1);
                    prop_assert!(s.is_empty() || !s.bytes().all(|c| c == b'.'));
                    prop_assert!(!s.contains('%'));
                }
            }
        }
    }
}
