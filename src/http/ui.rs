//! The web UI (README, "The web UI"): the files under `ui/`, compiled into the binary so
//! `cargo run --release` alone serves them. They use relative URLs only,
//! so the UI works under a reverse-proxy path prefix.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY};
use hyper::{Response, StatusCode};

use super::router::respond;
use super::Body;

/// One file of the UI.
pub(super) struct Asset {
    /// Its content type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The UI's files, as paths below the root (`""` is the page itself).
pub(super) const FILES: [&str; 5] = ["", "index.html", "app.js", "style.css", "favicon.svg"];

/// The UI file at `path` (one of [`FILES`]), if there is one.
pub(super) fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&'static str, &'static [u8]) = match path {
        "" | "index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../ui/index.html"),
        ),
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../ui/app.js"),
        ),
        "style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../ui/style.css"),
        ),
        "favicon.svg" => ("image/svg+xml", include_bytes!("../../ui/favicon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// What the UI may load and run: its own files and requests only (the
/// websocket included: `'self'` covers `ws:` to the same host), no inline
/// script or style, never inside another site's frame. A name or a job's
/// output that slipped through escaping still cannot run as script.
pub(super) const CONTENT_SECURITY_POLICY_UI: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves an asset; browsers revalidate so an upgrade shows at once.
pub(super) fn serve(asset: Asset) -> Response<Body> {
    let mut r = respond(StatusCode::OK, asset.content_type, asset.body);
    let h = r.headers_mut();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_UI),
    );
    // `?key=` on the websocket's URL must not travel on in a Referer.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `GET /alarms/<name>`, the link alerts carry (`<public_url>alarms/<name>`):
/// sends the browser to the alarm's page in the UI. The target is relative
/// (`../#/alarm/<name>`), so the link works under a reverse-proxy prefix.
pub(super) fn alarm_link(name: &str) -> Response<Body> {
    let target = format!(
        "../#/alarm/{}",
        percent_encoding::utf8_percent_encode(name, crate::redact::PATH_SEGMENT)
    );
    let mut r = respond(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        format!("See {target}\n"),
    );
    if let Ok(v) = HeaderValue::from_str(&target) {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}
