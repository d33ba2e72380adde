//! Public status pages over HTTP (README, "Status pages"):
//! `/status/<slug>` (HTML), `.json` and `.rss`, its badges, and the API of
//! its incidents. The pages and badges need no key, whatever `[http]`
//! says of the rest; the incidents' API takes the keys as the rest of the
//! API does.
//!
//! A page is built and rendered on the blocking pool at most once per
//! [`FRESH`] for each slug: visitors who come meanwhile wait for that one
//! render (a per-page lock) and share it, so a flood of visitors during a
//! mass outage costs one render. Each answer carries an `ETag` from its
//! content and a short public `Cache-Control`; `If-None-Match` is a 304.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::router::{error, json, query_param, respond};
use super::{AppState, Body};
use crate::history::pages::{self, PagesError};
use crate::history::HistoryState;
use crate::status::model::{self, EntryState};
use crate::status::{render, PageDef, Pages};

/// How long a rendered page is served before it is built again.
pub const FRESH: Duration = Duration::from_secs(2);

/// How old a page may be and still be served while its next build runs
/// in the background: older than this (nobody came for a while), the
/// visitor waits for the build rather than read old news.
pub const STALE_FOR: Duration = Duration::from_secs(30);

/// What browsers and proxies may keep: a few seconds, like [`FRESH`].
const CACHE: &str = "public, max-age=5";

/// What the page may load: its stylesheet, nothing else; no script runs,
/// its form (to subscribe) posts only to lovebeat, never inside another
/// site's frame.
const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One rendered form of a page.
#[derive(Clone)]
struct Variant {
    body: Bytes,
    etag: HeaderValue,
}

impl Variant {
    fn new(body: Vec<u8>) -> Variant {
        let digest = Sha256::digest(&body);
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Variant {
            body: body.into(),
            etag: HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }
}

/// The configured pages and their last renders.
pub struct StatusPages {
    pages: Pages,
    /// `public_url`, for the feed's links.
    public_url: Option<String>,
    /// One slot per page (the pages are fixed at start, so this is
    /// bounded): its lock is what makes concurrent visitors share one
    /// render.
    cache: HashMap<String, tokio::sync::Mutex<Slot>>,
    /// The subscriptions' rate limits.
    pub(super) limits: super::subscribe::Limiter,
    /// The mails to confirm sent to each mailbox, apart from `limits`:
    /// a flood of new addresses must not crowd clients out of it.
    pub(super) mailboxes: super::subscribe::Limiter,
    /// For mail through Mailgun's API.
    pub(super) client: reqwest::Client,
    /// Pages built (`/metrics`): a crowd of visitors shares one build.
    builds: std::sync::atomic::AtomicU64,
}

static BUILDS: crate::counters::Metric = crate::counters::Metric {
    prometheus: "lovebeat_status_page_builds_total",
    statsd: None,
    help: "Status pages built from the engine and the history (at most one a page every 2 s, however many visitors).",
    kind: crate::counters::Kind::Counter,
};

/// The status pages' counter, for `/metrics`.
impl crate::counters::Counted for StatusPages {
    fn read(&self, out: &mut Vec<crate::counters::Reading>) {
        out.push(crate::counters::Reading::of(
            &BUILDS,
            crate::counters::Value::Count(self.builds.load(std::sync::atomic::Ordering::Relaxed)),
        ));
    }
}

/// A page's last model and the forms rendered from it (each on its first
/// request: a visitor of the HTML does not pay for the JSON), and the
/// days before today its entries had.
#[derive(Default)]
struct Slot {
    model: Option<(Instant, Arc<model::PageModel>)>,
    forms: [Option<Variant>; 3],
    past: model::PastDays,
    /// A build runs in the background; visitors meanwhile get `model`.
    building: bool,
    /// Bumped by [`StatusPages::invalidate`]: a background build begun
    /// before a change does not replace what shows it.
    generation: u64,
}

impl StatusPages {
    /// The pages of `configs` (checked), with empty caches.
    pub fn new(configs: &[crate::status::StatusPageConfig], public_url: Option<String>) -> Self {
        let pages = Pages::new(configs);
        let cache = pages
            .slugs()
            .map(|s| (s.to_string(), tokio::sync::Mutex::new(Slot::default())))
            .collect();
        StatusPages {
            pages,
            public_url,
            cache,
            limits: Default::default(),
            mailboxes: Default::default(),
            client: reqwest::Client::new(),
            builds: Default::default(),
        }
    }

    /// The page of `slug`.
    pub(super) fn page(&self, slug: &str) -> Option<&Arc<PageDef>> {
        self.pages.get(slug)
    }

    /// The pages whose incidents' updates go out (mail or webhooks).
    pub(super) fn notifying(&self) -> impl Iterator<Item = &Arc<PageDef>> {
        self.pages.all().filter(|d| d.notifies())
    }

    /// `public_url`, with its trailing `/`.
    pub(super) fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Drops `slug`'s render, so the next visitor sees a change at once.
    async fn invalidate(&self, slug: &str) {
        if let Some(slot) = self.cache.get(slug) {
            let mut slot = slot.lock().await;
            slot.model = None;
            slot.forms = Default::default();
            slot.generation = slot.generation.wrapping_add(1);
        }
    }
}

/// The form a page is asked in.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Html = 0,
    Json = 1,
    Rss = 2,
}

fn no_page(slug: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no status page '{}'",
            slug.chars().take(80).collect::<String>().escape_debug()
        ),
    )
}

fn failed(e: impl std::fmt::Display) -> Response<Body> {
    tracing::error!("cannot render a status page: {e}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot render the status page: {e}"),
    )
}

/// The page in `form`, from a model at most [`FRESH`] old (built now if
/// there is none), rendered once per model. Both run on the blocking
/// pool, under the page's lock.
async fn variant(
    state: &AppState,
    def: &Arc<PageDef>,
    form: Form,
) -> Result<Variant, Response<Body>> {
    let pages = &state.status;
    let Some(slot) = pages.cache.get(&def.slug) else {
        return Err(no_page(&def.slug));
    };
    let mut slot = slot.lock().await;
    let age = slot.model.as_ref().map(|m| m.0.elapsed());
    let model = match slot.model.as_ref() {
        Some((_, m)) if age.is_some_and(|a| a < FRESH) => m.clone(),
        // Stale but recent: served as it is while one build runs in the
        // background, so no visitor waits for a build during a mass
        // outage (each build reads every entry's changes).
        Some((_, m)) if age.is_some_and(|a| a < STALE_FOR) => {
            let m = m.clone();
            if !slot.building {
                slot.building = true;
                let past = std::mem::take(&mut slot.past);
                rebuild(state, def, past, slot.generation);
            }
            m
        }
        _ => {
            let history = match &state.history {
                HistoryState::On(h) if h.failing().is_none() => Some(h.clone()),
                _ => None,
            };
            let (engine, def) = (state.engine.clone(), def.clone());
            let past = std::mem::take(&mut slot.past);
            let (model, past) =
                tokio::task::spawn_blocking(move || build(history, engine, def, past))
                    .await
                    .map_err(failed)?;
            slot.past = past;
            pages
                .builds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            slot.model = Some((Instant::now(), model.clone()));
            slot.forms = Default::default();
            model
        }
    };
    if let Some(v) = slot.forms.get(form as usize).and_then(Option::as_ref) {
        return Ok(v.clone());
    }
    let link = match &pages.public_url {
        Some(base) => format!("{base}status/{}", def.slug),
        None => def.slug.clone(),
    };
    let made = tokio::task::spawn_blocking(move || -> anyhow::Result<Variant> {
        let body = match form {
            Form::Html => render::html(&model)?.into_bytes(),
            Form::Json => render::json(&model)?,
            Form::Rss => render::rss(&model, &link)?.into_bytes(),
        };
        Ok(Variant::new(body))
    })
    .await
    .map_err(failed)?
    .map_err(|e| failed(format!("{e:#}")))?;
    if let Some(f) = slot.forms.get_mut(form as usize) {
        *f = Some(made.clone());
    }
    Ok(made)
}

/// Builds `def`'s model now (blocking: run it on the blocking pool),
/// from `history` when it is readable, else from the engine alone.
fn build(
    history: Option<Arc<crate::history::History>>,
    engine: crate::engine::Engine,
    def: Arc<PageDef>,
    mut past: model::PastDays,
) -> (Arc<model::PageModel>, model::PastDays) {
    let now = crate::clock::now_ms();
    let model = match &history {
        Some(h) => h
            .read(|c| rusqlite::Result::Ok(model::build(&def, &engine, Some(c), now, &mut past)))
            .unwrap_or_else(|e: rusqlite::Error| {
                tracing::error!("a status page is built without its history: {e}");
                model::build(&def, &engine, None, now, &mut past)
            }),
        None => model::build(&def, &engine, None, now, &mut past),
    };
    (Arc::new(model), past)
}

/// Builds `def`'s model in the background and puts it in its slot
/// (with its HTML, the form most visitors ask for), unless the page
/// changed meanwhile (`generation`); the slot's `building` is cleared
/// whatever happens, so a failed build is tried again by the next visitor.
fn rebuild(state: &AppState, def: &Arc<PageDef>, past: model::PastDays, generation: u64) {
    let history = match &state.history {
        HistoryState::On(h) if h.failing().is_none() => Some(h.clone()),
        _ => None,
    };
    let (pages, engine, def) = (state.status.clone(), state.engine.clone(), def.clone());
    tokio::spawn(async move {
        let d = def.clone();
        let built = tokio::task::spawn_blocking(move || {
            let (model, past) = build(history, engine, d, past);
            let html = render::html(&model).map(|h| Variant::new(h.into_bytes()));
            (model, past, html)
        })
        .await;
        let Some(slot) = pages.cache.get(&def.slug) else {
            return;
        };
        let mut slot = slot.lock().await;
        slot.building = false;
        let Ok((model, past, html)) = built else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        slot.past = past;
        pages
            .builds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        slot.model = Some((Instant::now(), model));
        slot.forms = Default::default();
        if let (Some(f), Ok(html)) = (slot.forms.get_mut(Form::Html as usize), html) {
            *f = Some(html);
        }
    });
}

/// True when the request's `If-None-Match` names `etag` (or `*`).
fn not_modified<B>(req: &Request<B>, etag: &HeaderValue) -> bool {
    req.headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes())
}

/// `GET /status/<slug>`, `/status/<slug>.json`, `/status/<slug>.rss`.
pub(super) async fn page<B>(req: &Request<B>, state: &AppState, file: &str) -> Response<Body> {
    let (slug, form) = if let Some(s) = file.strip_suffix(".json") {
        (s, Form::Json)
    } else if let Some(s) = file.strip_suffix(".rss") {
        (s, Form::Rss)
    } else {
        (file, Form::Html)
    };
    if file == "style.css" {
        let mut r = respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            render::STYLE.as_bytes(),
        );
        r.headers_mut().insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        return r;
    }
    let Some(def) = state.status.pages.get(slug).cloned() else {
        return no_page(slug);
    };
    let variant = match variant(state, &def, form).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    let content_type = match form {
        Form::Html => "text/html; charset=utf-8",
        Form::Json => "application/json",
        Form::Rss => "application/rss+xml; charset=utf-8",
    };
    let mut resp = if not_modified(req, &variant.etag) {
        let mut resp = respond(StatusCode::NOT_MODIFIED, content_type, Bytes::new());
        resp.headers_mut().remove(hyper::header::CONTENT_TYPE);
        resp
    } else {
        respond(StatusCode::OK, content_type, variant.body)
    };
    let h = resp.headers_mut();
    h.insert(ETAG, variant.etag);
    h.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE));
    if form == Form::Html {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
        h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    } else {
        // Public data, meant for other sites' widgets too; no credentials
        // go with it (no key is needed, none is taken).
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    resp
}

/// `GET /status/<slug>/badge.svg` (the page's overall state) and
/// `/status/<slug>/<entry>/badge.svg` (one entry's, by its URL segment):
/// from the engine's state now, O(entries).
pub(super) fn badge<B>(
    req: &Request<B>,
    state: &AppState,
    slug: &str,
    entry: Option<&str>,
) -> Response<Body> {
    let Some(def) = state.status.pages.get(slug) else {
        return no_page(slug);
    };
    let (label, message, color) = match entry {
        None => {
            let (status, _) = model::overall(
                def.entries()
                    .map(|e| model::live_state(&state.engine, &e.target)),
            );
            let color = match status {
                "operational" => EntryState::Up.color(),
                "degraded" => "#dfb317",
                _ => EntryState::Down.color(),
            };
            ("status".to_string(), status, color)
        }
        Some(segment) => {
            let Some(e) = def.entries().find(|e| e.segment == segment) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no entry '{}' on this page",
                        segment.chars().take(80).collect::<String>().escape_debug()
                    ),
                );
            };
            let s = model::live_state(&state.engine, &e.target);
            (e.display_name.clone(), s.as_str(), s.color())
        }
    };
    let label = query_param(req, "label")
        .map(|l| l.chars().take(100).collect())
        .unwrap_or(label);
    super::badge::svg(&label, message, color)
}

/// A new incident, as `POST /api/status_pages/<slug>/incidents` takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewIncident {
    title: String,
    #[serde(default = "investigating")]
    status: String,
    text: String,
    #[serde(default)]
    postmortem: Option<String>,
}

fn investigating() -> String {
    "investigating".into()
}

/// An update, as `POST .../incidents/<id>/updates` takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUpdate {
    status: String,
    text: String,
    #[serde(default)]
    postmortem: Option<String>,
}

/// What is wrong with a text a visitor will read, if anything: empty,
/// too long, or holding a control character other than line breaks and
/// tabs (none at all in a title, `one_line`), which no feed could carry.
fn text_problem(what: &str, text: &str, max: usize, one_line: bool) -> Option<String> {
    if text.trim().is_empty() {
        return Some(format!("{what} is empty"));
    }
    if text.chars().count() > max {
        return Some(format!("{what} is longer than {max} characters"));
    }
    let allowed = |c: char| !one_line && matches!(c, '\n' | '\r' | '\t');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Some(format!("{what} holds a control character"));
    }
    None
}

/// What is wrong with an update's status, if anything.
fn status_problem(status: &str) -> Option<String> {
    if pages::STATUSES.contains(&status) {
        return None;
    }
    Some(format!(
        "invalid status '{}': one of {}",
        status.chars().take(40).collect::<String>().escape_debug(),
        pages::STATUSES.join(", ")
    ))
}

/// The problem with an optional postmortem, if any.
fn postmortem_problem(p: &Option<String>) -> Option<String> {
    p.as_deref()
        .and_then(|p| text_problem("postmortem", p, pages::MAX_POSTMORTEM, false))
}

async fn body_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
    state: &AppState,
) -> Result<T, Response<Body>> {
    let body = super::api::read_body(req, state).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Runs `f` on the history's connection on the blocking pool.
async fn on_history<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, PagesError> + Send + 'static,
) -> Result<T, Response<Body>> {
    let history = super::history::open(state).map_err(|r| *r)?;
    match tokio::task::spawn_blocking(move || history.write(f)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(PagesError::NotFound(id))) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no incident {id} on this page"),
        )),
        Ok(Err(e @ PagesError::Full(_))) => Err(error(StatusCode::CONFLICT, e.to_string())),
        Ok(Err(PagesError::Sqlite(e))) => {
            tracing::error!("cannot use the history file for a status page: {e}");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot use the history file: {e}"),
            ))
        }
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the query failed: {e}"),
        )),
    }
}

/// The answer of a list of incidents.
#[derive(Serialize)]
struct IncidentList {
    page: String,
    incidents: Vec<pages::PageIncident>,
}

/// `GET` and `POST /api/status_pages/<slug>/incidents`.
pub(super) async fn incidents(
    req: Request<Incoming>,
    state: &AppState,
    slug: &str,
) -> Response<Body> {
    if state.status.pages.get(slug).is_none() {
        return no_page(slug);
    }
    let page = slug.to_string();
    match *req.method() {
        Method::GET | Method::HEAD => {
            let slug = page.clone();
            match on_history(state, move |c| Ok(pages::list(c, &slug, pages::MAX_LIST)?)).await {
                Ok(incidents) => json(StatusCode::OK, &IncidentList { page, incidents }),
                Err(r) => r,
            }
        }
        Method::POST => {
            let new: NewIncident = match body_json(req, state).await {
                Ok(n) => n,
                Err(r) => return r,
            };
            let problem = text_problem("title", &new.title, pages::MAX_TITLE, true)
                .or_else(|| status_problem(&new.status))
                .or_else(|| text_problem("text", &new.text, pages::MAX_TEXT, false))
                .or_else(|| postmortem_problem(&new.postmortem));
            if let Some(m) = problem {
                return error(StatusCode::BAD_REQUEST, m);
            }
            let slug = page.clone();
            let made = on_history(state, move |c| {
                Ok(pages::create(
                    c,
                    &slug,
                    new.title.trim(),
                    &new.status,
                    &new.text,
                    new.postmortem.as_deref(),
                    crate::clock::now_ms(),
                )?)
            })
            .await;
            state.status.invalidate(&page).await;
            match made {
                Ok(i) => json(StatusCode::CREATED, &i),
                Err(r) => r,
            }
        }
        _ => super::router::not_allowed("GET, POST"),
    }
}

/// `GET` and `POST /api/status_pages/<slug>/incidents/<id>/updates`.
pub(super) async fn updates(
    req: Request<Incoming>,
    state: &AppState,
    slug: &str,
    id: &str,
) -> Response<Body> {
    if state.status.pages.get(slug).is_none() {
        return no_page(slug);
    }
    let Some(id) = id.parse::<i64>().ok().filter(|i| *i > 0) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid incident id '{}': a number from a list of incidents",
                id.chars().take(40).collect::<String>().escape_debug()
            ),
        );
    };
    let page = slug.to_string();
    match *req.method() {
        Method::GET | Method::HEAD => {
            let slug = page.clone();
            let found = on_history(state, move |c| {
                pages::get(c, &slug, id)?.ok_or(PagesError::NotFound(id))
            })
            .await;
            match found {
                Ok(i) => json(StatusCode::OK, &i),
                Err(r) => r,
            }
        }
        Method::POST => {
            let new: NewUpdate = match body_json(req, state).await {
                Ok(n) => n,
                Err(r) => return r,
            };
            let problem = status_problem(&new.status)
                .or_else(|| text_problem("text", &new.text, pages::MAX_TEXT, false))
                .or_else(|| postmortem_problem(&new.postmortem));
            if let Some(m) = problem {
                return error(StatusCode::BAD_REQUEST, m);
            }
            let slug = page.clone();
            let made = on_history(state, move |c| {
                pages::update(
                    c,
                    &slug,
                    id,
                    &new.status,
                    &new.text,
                    new.postmortem.as_deref(),
                    crate::clock::now_ms(),
                )
            })
            .await;
            state.status.invalidate(&page).await;
            match made {
                Ok(i) => json(StatusCode::CREATED, &i),
                Err(r) => r,
            }
        }
        _ => super::router::not_allowed("GET, POST"),
    }
}
