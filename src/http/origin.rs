//! Requests that a page of another site makes the user's browser send.
//!
//! Without keys, anyone's browser that can reach lovebeat can change it,
//! and a page on another site could make it do so (a form posted to
//! `http://lovebeat:8080/api/services/x/mute`). Browsers say where such a
//! request comes from, so a change is refused with a 403 when
//! `Sec-Fetch-Site` is `cross-site`, or when `Origin` names another host
//! than the one the request was sent to (`Host`, or `X-Forwarded-Host`
//! from a reverse proxy). The websocket is held to the same rule, since a
//! browser lets any page open one and read what it sends. Clients that
//! are not browsers (curl, `lovebeat beat`, scripts) send no `Origin` and
//! pass; so does the UI, whose requests are same-origin.
//!
//! A page whose own host name was pointed at lovebeat's address (DNS
//! rebinding) is same-origin, so [`AllowedHosts`] refuses requests for any
//! host name not configured in `[http] allowed_hosts`.

use std::net::IpAddr;

use hyper::header::{HeaderName, HOST, ORIGIN};
use hyper::{Request, Response, StatusCode};

use super::auth::is_read_only;
use super::router::error;
use super::Body;

/// `Sec-Fetch-Site`, sent by browsers on every request.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
/// `X-Forwarded-Host`: the host the client asked a reverse proxy for.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The host names this lovebeat answers to (`[http] allowed_hosts`), the
/// defence against DNS rebinding: a page of another site that points its
/// own name at lovebeat's address is same-origin to the browser, so no
/// origin check can tell its requests apart, but they name the other
/// site's host. Empty: every host is answered.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// Lower-case names; loopback names and IP addresses are always allowed
    /// once any is listed (a rebinding page cannot make its browser send
    /// an IP address as the host).
    names: Vec<String>,
}

impl AllowedHosts {
    /// The configured names, plus the host of `public_url`, if any.
    pub fn new(names: &[String], public_url: Option<&str>) -> AllowedHosts {
        let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        if !names.is_empty() {
            if let Some(host) = public_url.and_then(|u| u.split_once("://")).map(|(_, r)| r) {
                let authority = host.split(['/', '?', '#']).next().unwrap_or_default();
                let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                names.push(hostname(authority).to_ascii_lowercase());
            }
            names.extend(["localhost".to_string()]);
        }
        AllowedHosts { names }
    }

    /// True when no name is configured: every host is answered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn allows(&self, host: &str) -> bool {
        let name = hostname(host.trim());
        let address = match name.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .is_some_and(|a| a.parse::<IpAddr>().is_ok()),
            None => name.parse::<IpAddr>().is_ok(),
        };
        address
            || self
                .names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.trim_end_matches('.')))
    }

    /// `None` if the request names an allowed host (in `Host` and, from a
    /// proxy, `X-Forwarded-Host`), else the 421 to answer.
    pub fn check<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        if self.is_empty() {
            return None;
        }
        let headers = req.headers();
        let mut named = [headers.get(HOST), headers.get(X_FORWARDED_HOST)]
            .into_iter()
            .flatten()
            .peekable();
        named.peek()?;
        for v in named {
            let host = v
                .to_str()
                .ok()
                .and_then(|v| v.split(',').next())
                .unwrap_or("");
            if !self.allows(host) {
                return Some(error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "this lovebeat does not answer to the host '{}': add it to [http] allowed_hosts",
                        host.escape_debug()
                    ),
                ));
            }
        }
        None
    }
}

/// The host of a `host[:port]` authority (`[::1]:80` gives `[::1]`).
fn hostname(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// `None` if the request may go on, else the 403 to answer. `websocket`
/// is true for an upgrade to the websocket, which is checked although it
/// is a GET.
pub fn check<B>(req: &Request<B>, websocket: bool) -> Option<Response<Body>> {
    if is_read_only(req.method()) && !websocket {
        return None;
    }
    let headers = req.headers();
    if headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Some(refuse(
            "the browser says this request comes from another site",
        ));
    }
    let origin = headers.get(ORIGIN)?;
    let Some((scheme, origin_host)) = origin.to_str().ok().and_then(split_origin) else {
        return Some(refuse("the request's Origin is not a web page's address"));
    };
    let same = [headers.get(HOST), headers.get(X_FORWARDED_HOST)]
        .into_iter()
        .flatten()
        .filter_map(|v| v.to_str().ok())
        // A chain of proxies lists hosts, the client's first.
        .filter_map(|v| v.split(',').next())
        .any(|host| authority(scheme, host.trim()) == authority(scheme, origin_host));
    if same {
        None
    } else {
        Some(refuse(
            "the request's Origin is another site than this lovebeat",
        ))
    }
}

/// `("https", "example.com:8443")` from `https://example.com:8443`;
/// `None` for `null` and anything that is not a web origin.
fn split_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some((scheme, rest))
}

/// A host and port as compared: lower case, without the scheme's default
/// port (an origin leaves it out, a `Host` header may not).
fn authority(scheme: &str, host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let default = if scheme == "https" { ":443" } else { ":80" };
    match host.strip_suffix(default) {
        Some(h) => h.to_string(),
        None => host,
    }
}

fn refuse(why: &str) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        format!("{why}: changes are accepted from lovebeat's own pages and from clients that are not browsers"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, headers: &[(&str, &str)], websocket: bool) -> u16 {
        let mut b = Request::builder().method(method).uri("/api/services/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).expect("request");
        check(&req, websocket).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn clients_without_an_origin_pass() {
        assert_eq!(status("POST", &[("Host", "lb:8080")], false), 200);
        assert_eq!(status("DELETE", &[], false), 200);
    }

    #[test]
    fn same_origin_passes_and_another_origin_is_refused() {
        let host = ("Host", "lb.example.com:8080");
        assert_eq!(
            status(
                "POST",
                &[host, ("Origin", "http://lb.example.com:8080")],
                false
            ),
            200
        );
        assert_eq!(
            status(
                "POST",
                &[host, ("Origin", "http://LB.example.com:8080")],
                false
            ),
            200
        );
        for evil in [
            "http://evil.example",
            "http://lb.example.com:8081",
            "http://lb.example.com",
            "null",
            "file://",
            "lb.example.com:8080",
        ] {
            assert_eq!(
                status("POST", &[host, ("Origin", evil)], false),
                403,
                "{evil}"
            );
        }
        // Default ports are the same origin with or without them.
        assert_eq!(
            status(
                "POST",
                &[("Host", "lb:443"), ("Origin", "https://lb")],
                false
            ),
            200
        );
        assert_eq!(
            status("POST", &[("Host", "lb"), ("Origin", "http://lb:80")], false),
            200
        );
    }

    #[test]
    fn a_reverse_proxy_names_the_host_in_x_forwarded_host() {
        let h = [
            ("Host", "127.0.0.1"),
            ("X-Forwarded-Host", "status.example.com:8443"),
            ("Origin", "https://status.example.com:8443"),
        ];
        assert_eq!(status("POST", &h, false), 200);
        let chain = [
            ("Host", "127.0.0.1"),
            ("X-Forwarded-Host", "status.example.com, inner.proxy"),
            ("Origin", "https://status.example.com"),
        ];
        assert_eq!(status("POST", &chain, false), 200);
    }

    #[test]
    fn cross_site_fetch_metadata_is_refused_even_without_an_origin() {
        assert_eq!(
            status("POST", &[("Sec-Fetch-Site", "cross-site")], false),
            403
        );
        assert_eq!(
            status("POST", &[("Sec-Fetch-Site", "same-origin")], false),
            200
        );
        assert_eq!(status("POST", &[("Sec-Fetch-Site", "none")], false), 200);
    }

    #[test]
    fn allowed_hosts_refuse_a_rebound_name_and_keep_addresses_and_loopback() {
        let hosts = AllowedHosts::new(
            &["lovebeat.internal".into()],
            Some("https://status.example.com:8443/lb/"),
        );
        let status = |host: &str, fwd: Option<&str>| {
            let mut b = Request::builder().uri("/api/status").header("Host", host);
            if let Some(f) = fwd {
                b = b.header("X-Forwarded-Host", f);
            }
            let req = b.body(()).expect("request");
            hosts.check(&req).map_or(200, |r| r.status().as_u16())
        };
        for ok in [
            "lovebeat.internal:8080",
            "LOVEBEAT.internal",
            "lovebeat.internal.",
            "status.example.com",
            "localhost:8080",
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
        ] {
            assert_eq!(status(ok, None), 200, "{ok}");
        }
        for evil in [
            "attacker.example:8080",
            "lovebeat.internal.evil",
            "",
            "[::1",
        ] {
            assert_eq!(status(evil, None), 421, "{evil}");
        }
        assert_eq!(status("127.0.0.1", Some("attacker.example")), 421);
        assert_eq!(status("127.0.0.1", Some("lovebeat.internal")), 200);
        // Nothing configured: every host is answered.
        let any = AllowedHosts::new(&[], Some("https://x/"));
        let req = Request::builder()
            .header("Host", "attacker.example")
            .body(())
            .expect("request");
        assert!(any.check(&req).is_none());
    }

    #[test]
    fn reads_pass_but_a_websocket_is_checked() {
        let evil = [("Host", "lb:8080"), ("Origin", "http://evil.example")];
        assert_eq!(status("GET", &evil, false), 200);
        assert_eq!(status("GET", &evil, true), 403);
        let own = [("Host", "lb:8080"), ("Origin", "http://lb:8080")];
        assert_eq!(status("GET", &own, true), 200);
    }
}
