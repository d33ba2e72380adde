//! API keys (SPEC §10): write keys guard every change, read keys guard
//! reading the API, `/ws` and `/metrics`. Badges, `/version` and the UI's
//! files stay open. Keys are compared in constant time and never logged.
//!
//! What a request needs is decided from the same [`RequestPath`] the
//! router matches, and closed by default: only the open paths are listed,
//! every other path needs a read key to be read and every request that is
//! not a read needs a write key.

use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use super::path::RequestPath;
use super::router::{error, query_param};
use super::Body;

/// The configured keys.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    /// `[http] read_keys`.
    pub read: Vec<String>,
    /// `[http] write_keys`.
    pub write: Vec<String>,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Read,
    Write,
}

/// True for the methods that only read.
pub fn is_read_only(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The paths anyone may read: the UI's files, badges and the version.
fn is_open(path: &RequestPath<'_>) -> bool {
    match path.segments() {
        ["badge", _] | ["version"] => true,
        [file] => super::ui::asset(file).is_some(),
        _ => false,
    }
}

fn need(method: &Method, path: &RequestPath<'_>) -> Need {
    if !is_read_only(method) {
        Need::Write
    } else if is_open(path) {
        Need::Nothing
    } else {
        Need::Read
    }
}

/// The key a request carries: `Authorization: Bearer <key>` or `?key=`.
fn presented<B>(req: &Request<B>) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim().to_string());
        }
    }
    query_param(req, "key")
}

fn any_matches(keys: &[String], key: &str) -> bool {
    // Every key is compared, so the time taken does not say which matched.
    keys.iter().fold(false, |found, k| {
        found | bool::from(k.as_bytes().ct_eq(key.as_bytes()))
    })
}

impl Keys {
    /// True when no key is configured: nothing to check.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// `None` if the request may go on, else the 401 or 403 to answer.
    pub fn check<B>(&self, req: &Request<B>, path: &RequestPath<'_>) -> Option<Response<Body>> {
        if self.is_empty() {
            return None;
        }
        let need = need(req.method(), path);
        let guarded = match need {
            Need::Nothing => false,
            Need::Read => !self.read.is_empty(),
            Need::Write => !self.write.is_empty(),
        };
        if !guarded {
            return None;
        }
        let Some(key) = presented(req) else {
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "an API key is required: send 'Authorization: Bearer <key>' or '?key=<key>'".into(),
            ));
        };
        let write = any_matches(&self.write, &key);
        let read = any_matches(&self.read, &key);
        match need {
            Need::Write if write => None,
            Need::Write if read => Some(error(
                StatusCode::FORBIDDEN,
                "this key may only read; changes need a write key".into(),
            )),
            Need::Read if write || read => None,
            _ => Some(error(StatusCode::UNAUTHORIZED, "unknown API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, bearer: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(k) = bearer {
            b = b.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        b.body(()).expect("request")
    }

    fn status(keys: &Keys, method: &str, uri: &str, bearer: Option<&str>) -> u16 {
        let r = req(method, uri, bearer);
        let path = RequestPath::parse(r.uri().path()).expect("a plain path");
        keys.check(&r, &path).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn write_keys_alone_leave_reading_open() {
        let k = Keys {
            read: vec![],
            write: vec!["w".into()],
        };
        assert_eq!(status(&k, "GET", "/api/services", None), 200);
        assert_eq!(status(&k, "POST", "/api/services/a", None), 401);
        assert_eq!(status(&k, "POST", "/api/services/a", Some("x")), 401);
        assert_eq!(status(&k, "POST", "/api/services/a", Some("w")), 200);
        assert_eq!(status(&k, "POST", "/api/services/a?key=w", None), 200);
        assert_eq!(status(&k, "DELETE", "/api/services/a", None), 401);
    }

    #[test]
    fn read_keys_guard_reading_and_a_read_key_cannot_write() {
        let k = Keys {
            read: vec!["r".into()],
            write: vec!["w".into()],
        };
        for path in ["/api/services", "/api/status", "/ws", "/metrics"] {
            assert_eq!(status(&k, "GET", path, None), 401, "{path}");
            assert_eq!(status(&k, "GET", path, Some("r")), 200, "{path}");
            assert_eq!(status(&k, "GET", path, Some("w")), 200, "{path}");
        }
        assert_eq!(status(&k, "POST", "/api/services/a", Some("r")), 403);
        for open in ["/badge/x.svg", "/version", "/", "/app.js"] {
            assert_eq!(status(&k, "GET", open, None), 200, "{open}");
        }
    }

    #[test]
    fn paths_not_known_to_be_open_are_closed() {
        let k = Keys {
            read: vec!["r".into()],
            write: vec!["w".into()],
        };
        for path in [
            "/apis",
            "/nothing",
            "/badge",
            "/badge/a/b",
            "/ws/",
            "/version/x",
        ] {
            assert_eq!(status(&k, "GET", path, None), 401, "{path}");
        }
        for path in ["/version", "/badge/x.svg", "/", "/nothing"] {
            assert_eq!(status(&k, "POST", path, None), 401, "{path}");
            assert_eq!(status(&k, "POST", path, Some("r")), 403, "{path}");
            assert_eq!(status(&k, "PUT", path, Some("w")), 200, "{path}");
        }
    }
}
