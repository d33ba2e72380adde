//! API keys (README, "Cron jobs and scripts"): write keys guard every change, read keys guard
//! reading the API, `/ws` and `/metrics`. Badges (unless `[http]
//! public_badges = false`), `/version` and the UI's files stay open. Keys
//! are compared in constant time and never logged.
//!
//! What a request needs is decided from the same match of the route
//! table that the router dispatches on, and closed by default: only the
//! open endpoints ([`Endpoint::is_open`]) may be read without a key; any
//! other path, known or not, needs a read key to be read, and every
//! request that is not a read needs a write key.

use base64::Engine as _;
use hyper::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::router::{error, query_param, Endpoint};
use super::Body;

/// The configured keys.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    /// `[http] read_keys`.
    pub read: Vec<String>,
    /// `[http] write_keys`.
    pub write: Vec<String>,
    /// `[http] public_badges = false`: badges need a read key like the
    /// rest of the API, since a badge tells whether an alarm of that name
    /// exists and its state.
    pub closed_badges: bool,
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

fn need(method: &Method, endpoint: Option<Endpoint>, closed_badges: bool) -> Need {
    if endpoint.is_some_and(Endpoint::is_open_change) {
        Need::Nothing
    } else if !is_read_only(method) {
        Need::Write
    } else if closed_badges && endpoint == Some(Endpoint::Badge) {
        Need::Read
    } else if endpoint.is_some_and(Endpoint::is_open) {
        Need::Nothing
    } else {
        Need::Read
    }
}

/// The websocket subprotocol the UI names to say it speaks lovebeat's
/// messages; the daemon answers with it.
pub const WS_PROTOCOL: &str = "lovebeat";

/// The prefix of the websocket subprotocol that carries a key, base64url
/// encoded: a browser cannot set `Authorization` on a websocket, and a key
/// in the URL would end up in every proxy's access log.
pub const WS_KEY_PROTOCOL: &str = "lovebeat-key.";

/// The key in a `Sec-WebSocket-Protocol` list, if one is there.
fn websocket_key<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_KEY_PROTOCOL))
        .and_then(|k| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k)
                .ok()
        })
        .and_then(|k| String::from_utf8(k).ok())
}

/// The key a request carries: `Authorization: Bearer <key>`, a websocket
/// subprotocol ([`WS_KEY_PROTOCOL`]) or `?key=`.
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
    websocket_key(req).or_else(|| query_param(req, "key"))
}

/// Whether `key` is one of `keys`, in a time that says neither which one
/// matched nor how long any of them is: each side is hashed with SHA-256
/// first, so every comparison is of 32 bytes (a comparison of the keys
/// themselves ends at once when their lengths differ), the digests are
/// compared in constant time, and every key is compared.
#[cfg(test)]
fn any_matches(keys: &[String], key: &str) -> bool {
    position(keys, key).is_some()
}

/// The position of `key` in `keys` (the last, were it listed twice),
/// found as [`any_matches`] says: every key compared, in constant time,
/// the position picked without a branch.
fn position(keys: &[String], key: &str) -> Option<usize> {
    let presented = Sha256::digest(key.as_bytes());
    let (found, at) =
        keys.iter()
            .enumerate()
            .fold((Choice::from(0), 0u64), |(found, at), (i, k)| {
                let eq = Sha256::digest(k.as_bytes())
                    .as_slice()
                    .ct_eq(presented.as_slice());
                (found | eq, u64::conditional_select(&at, &(i as u64), eq))
            });
    bool::from(found).then_some(at as usize)
}

/// Who made a request, as the audit trail names it (README, "History"):
/// the list and position of its key in the configuration, never the key;
/// `none` when the request needed no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// No key was needed (none configured for what it asked).
    None,
    /// `write_keys[i]`.
    Write(usize),
    /// `read_keys[i]`.
    Read(usize),
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::None => f.write_str("none"),
            Identity::Write(i) => write!(f, "write_keys[{i}]"),
            Identity::Read(i) => write!(f, "read_keys[{i}]"),
        }
    }
}

impl Keys {
    /// Who made a change, as what the server records beside it (a
    /// maintenance window's `created_by`, the audit trail): the list and
    /// 0-based position in the configuration of the key presented
    /// (`write_keys[0]`, `read_keys[1]`), never the key; `none` when the
    /// request carried no configured key (none was needed).
    pub fn who<B>(&self, req: &Request<B>) -> String {
        let Some(key) = presented(req) else {
            return "none".into();
        };
        if let Some(i) = position(&self.write, &key) {
            return format!("write_keys[{i}]");
        }
        if let Some(i) = position(&self.read, &key) {
            return format!("read_keys[{i}]");
        }
        "none".into()
    }

    /// True when no key is configured: nothing to check.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// `None` if the request may go on, else the 401 or 403 to answer.
    pub fn check<B>(&self, req: &Request<B>, endpoint: Option<Endpoint>) -> Option<Response<Body>> {
        self.identify(req, endpoint).err().map(|r| *r)
    }

    /// Who the request is, if it may go on ([`Identity`]: the key that
    /// let it through, or none needed), else the 401 or 403 to answer.
    pub fn identify<B>(
        &self,
        req: &Request<B>,
        endpoint: Option<Endpoint>,
    ) -> Result<Identity, Box<Response<Body>>> {
        if self.is_empty() {
            return Ok(Identity::None);
        }
        let need = need(req.method(), endpoint, self.closed_badges);
        let guarded = match need {
            Need::Nothing => false,
            Need::Read => !self.read.is_empty(),
            Need::Write => !self.write.is_empty(),
        };
        if !guarded {
            return Ok(Identity::None);
        }
        let Some(key) = presented(req) else {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "an API key is required: send 'Authorization: Bearer <key>' or '?key=<key>'".into(),
            )));
        };
        let write = position(&self.write, &key);
        let read = position(&self.read, &key);
        match (need, write, read) {
            (Need::Write, Some(i), _) => Ok(Identity::Write(i)),
            (Need::Write, None, Some(_)) => Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "this key may only read; changes need a write key".into(),
            ))),
            (Need::Read, Some(i), _) => Ok(Identity::Write(i)),
            (Need::Read, None, Some(i)) => Ok(Identity::Read(i)),
            _ => Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "unknown API key".into(),
            ))),
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
        let endpoint = super::super::router::endpoint_of(r.uri().path());
        keys.check(&r, endpoint)
            .map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn a_key_matches_only_itself_whatever_the_lengths() {
        let keys = vec!["first-key".to_string(), "second".to_string()];
        assert!(any_matches(&keys, "first-key"));
        assert!(any_matches(&keys, "second"));
        // Same length, one byte off; a prefix; a longer key; empty.
        assert!(!any_matches(&keys, "first-kez"));
        assert!(!any_matches(&keys, "first"));
        assert!(!any_matches(&keys, "second-and-more"));
        assert!(!any_matches(&keys, ""));
        assert!(!any_matches(&[], "first-key"));
        assert!(!any_matches(&[], ""));
        assert!(any_matches(&[String::new()], ""));
    }

    #[test]
    fn who_names_the_list_and_position_of_the_key_never_the_key() {
        let k = Keys {
            read: vec!["r0".into(), "r1".into()],
            write: vec!["w0".into(), "w1".into()],
            ..Keys::default()
        };
        assert_eq!(
            k.who(&req("POST", "/api/maintenance", Some("w1"))),
            "write_keys[1]"
        );
        assert_eq!(
            k.who(&req("POST", "/api/maintenance?key=w0", None)),
            "write_keys[0]"
        );
        assert_eq!(
            k.who(&req("GET", "/api/maintenance", Some("r1"))),
            "read_keys[1]"
        );
        assert_eq!(
            k.who(&req("POST", "/api/maintenance", Some("nope"))),
            "none"
        );
        assert_eq!(k.who(&req("POST", "/api/maintenance", None)), "none");
    }

    #[test]
    fn the_identity_is_the_keys_list_and_place_never_the_key() {
        let k = Keys {
            read: vec!["r0".into(), "r1".into()],
            write: vec!["w0".into(), "w1".into()],
            ..Keys::default()
        };
        let who = |method: &str, bearer: Option<&str>| {
            let r = req(method, "/api/services/a", bearer);
            k.identify(&r, Some(Endpoint::Service))
                .map(|i| i.to_string())
                .map_err(|r| r.status().as_u16())
        };
        assert_eq!(who("POST", Some("w1")), Ok("write_keys[1]".into()));
        assert_eq!(who("POST", Some("w0")), Ok("write_keys[0]".into()));
        assert_eq!(who("GET", Some("r1")), Ok("read_keys[1]".into()));
        assert_eq!(who("POST", Some("r1")), Err(403));
        assert_eq!(who("POST", Some("nope")), Err(401));
        let open = Keys {
            read: vec!["r0".into()],
            ..Keys::default()
        };
        let r = req("POST", "/api/services/a", None);
        assert_eq!(
            open.identify(&r, Some(Endpoint::Service)).ok(),
            Some(Identity::None)
        );
    }

    #[test]
    fn write_keys_alone_leave_reading_open() {
        let k = Keys {
            read: vec![],
            write: vec!["w".into()],
            ..Keys::default()
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
            ..Keys::default()
        };
        for path in ["/api/services", "/api/status", "/ws", "/metrics"] {
            assert_eq!(status(&k, "GET", path, None), 401, "{path}");
            assert_eq!(status(&k, "GET", path, Some("r")), 200, "{path}");
            assert_eq!(status(&k, "GET", path, Some("w")), 200, "{path}");
        }
        assert_eq!(status(&k, "POST", "/api/services/a", Some("r")), 403);
        for open in ["/badge/x.svg", "/version", "/", "/app.js", "/alarms/x"] {
            assert_eq!(status(&k, "GET", open, None), 200, "{open}");
        }
    }

    #[test]
    fn closed_badges_need_a_read_key_like_the_rest() {
        let k = Keys {
            read: vec!["r".into()],
            write: vec!["w".into()],
            closed_badges: true,
        };
        assert_eq!(status(&k, "GET", "/badge/x.svg", None), 401);
        assert_eq!(status(&k, "GET", "/badge/x.json?key=nope", None), 401);
        assert_eq!(status(&k, "GET", "/badge/x.svg", Some("r")), 200);
        assert_eq!(status(&k, "GET", "/badge/x.json?key=w", None), 200);
        assert_eq!(status(&k, "GET", "/version", None), 200);
    }

    #[test]
    fn a_websocket_may_carry_its_key_as_a_subprotocol() {
        let k = Keys {
            read: vec!["r/+?".into()],
            write: vec![],
            ..Keys::default()
        };
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("r/+?");
        let with = |protocols: &str| {
            let r = Request::builder()
                .uri("/ws")
                .header(SEC_WEBSOCKET_PROTOCOL, protocols)
                .body(())
                .expect("request");
            k.check(&r, Some(Endpoint::Websocket))
                .map_or(200, |r| r.status().as_u16())
        };
        assert_eq!(with(&format!("lovebeat, lovebeat-key.{encoded}")), 200);
        assert_eq!(with("lovebeat, lovebeat-key.eA"), 401);
        assert_eq!(with("lovebeat, lovebeat-key.!!"), 401);
        assert_eq!(with("lovebeat"), 401);
    }

    #[test]
    fn status_pages_are_open_and_only_their_subscriptions_change_without_a_key() {
        let k = Keys {
            read: vec!["r".into()],
            write: vec!["w".into()],
            closed_badges: true,
        };
        for path in [
            "/status/public",
            "/status/public.json",
            "/status/public/badge.svg",
            "/status/public/web/badge.svg",
        ] {
            assert_eq!(status(&k, "GET", path, None), 200, "{path}");
            assert_eq!(status(&k, "POST", path, None), 401, "{path}");
        }
        for path in [
            "/status/public/subscribe",
            "/status/public/confirm",
            "/status/public/unsubscribe",
        ] {
            assert_eq!(status(&k, "POST", path, None), 200, "{path}");
        }
        let incidents = "/api/status_pages/public/incidents";
        assert_eq!(status(&k, "GET", incidents, None), 401);
        assert_eq!(status(&k, "POST", incidents, Some("r")), 403);
        assert_eq!(status(&k, "POST", "/status/public/other", None), 401);
    }

    #[test]
    fn paths_not_known_to_be_open_are_closed() {
        let k = Keys {
            read: vec!["r".into()],
            write: vec!["w".into()],
            ..Keys::default()
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
