//! Status badges for READMEs and dashboards (README, "Cron jobs and scripts"):
//! `/badge/<alarm>.svg` and shields.io's endpoint JSON `/badge/<alarm>.json`.

use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::router::{error, json, query_param, respond};
use super::{AppState, Body};
use crate::engine::valid_name;

/// The badge's message and colour for an alarm: `down` while it is ERROR,
/// `muted` when every one of its services is muted, else `up`. O(1): a
/// badge needs no key, and an alarm's view would copy every failed name.
fn status(state: &AppState, alarm: &str) -> Option<(&'static str, &'static str)> {
    state.engine.alarm_status(alarm)?;
    if state.engine.alarm_in_error(alarm) {
        return Some(("down", "#e05d44"));
    }
    if state.engine.alarm_all_muted(alarm) {
        return Some(("muted", "#9f9f9f"));
    }
    Some(("up", "#4c1"))
}

/// Rough text width in Verdana 11px, as shields.io lays badges out.
fn text_width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if c.is_ascii_uppercase() || c == 'm' || c == 'w' {
                9
            } else {
                7
            }
        })
        .sum::<usize>()
        + 10
}

/// GET /badge/<file>.
pub(super) fn serve<B>(req: &Request<B>, state: &AppState, file: &str) -> Response<Body> {
    let (alarm, kind) = match file.rsplit_once('.') {
        Some((a, k @ ("svg" | "json"))) => (a, k),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no such badge: {file} (use <alarm>.svg or <alarm>.json)"),
            )
        }
    };
    if !valid_name(alarm.as_bytes()) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid alarm name '{alarm}'"),
        );
    }
    let label = query_param(req, "label").unwrap_or_else(|| "lovebeat".into());
    let Some((message, color)) = status(state, alarm) else {
        return error(StatusCode::NOT_FOUND, format!("no such alarm: {alarm}"));
    };
    if kind == "svg" {
        return svg(&label, message, color);
    }
    let mut r = {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Endpoint<'a> {
            schema_version: u8,
            label: &'a str,
            message: &'a str,
            color: &'a str,
        }
        json(
            StatusCode::OK,
            &Endpoint {
                schema_version: 1,
                label: &label,
                message,
                color: match message {
                    "down" => "red",
                    "muted" => "lightgrey",
                    _ => "brightgreen",
                },
            },
        )
    };
    // Badges are embedded in pages that cache images: ask for fresh ones.
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    r
}

/// A badge as SVG, shields.io's flat style: `label` (escaped) on grey,
/// `message` on `color`. Status pages' badges use it too.
pub(super) fn svg(label: &str, message: &str, color: &str) -> Response<Body> {
    let (lw, mw) = (text_width(label), text_width(message));
    let w = lw + mw;
    let label = crate::escape::html_attr(label);
    let message = crate::escape::html_attr(message);
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{label}: {message}"><title>{label}: {message}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{color}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{mx}" y="14">{message}</text></g></svg>
"##,
        lx = lw / 2,
        mx = lw + mw / 2,
    );
    let mut r = respond(StatusCode::OK, "image/svg+xml", svg.into_bytes());
    // Badges are embedded in pages that cache images: ask for fresh ones.
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0"),
    );
    r
}
