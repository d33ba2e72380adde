//! Subscriptions to public status pages by mail (README, "Status pages"):
//! `POST /status/<slug>/subscribe`, the link mailed to confirm
//! (`/status/<slug>/confirm?token=`) and the link in every mail to leave
//! (`/status/<slug>/unsubscribe?token=`): the only changes that need no
//! key. Each link opens a page whose button does the change (a POST), so
//! a mail scanner that follows links confirms and cancels nothing.
//!
//! Bounded: per client (requests to subscribe per window), per address
//! (one mail to confirm per [`subscribers::REMAIL_AFTER_MS`]) and per page
//! (mails to confirm per window, and the subscribers it holds). Every
//! request to subscribe gets the same answer, so the answer tells nobody
//! whether an address is subscribed. Addresses are never shown.
//!
//! [`run`] mails each update of a page's incidents to its confirmed
//! subscribers, once: a cursor per page in the history file says which
//! were mailed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY};
use hyper::{Method, Request, Response, StatusCode};

use super::router::{error, query_param, respond};
use super::{AppState, Body};
use crate::history::pages::PageIncident;
use crate::history::subscribers::{self, Subscribe};
use crate::history::HistoryState;
use crate::sinks::alerts::{send_text, Recipients};
use crate::status::model::MaintenanceView;

/// Requests to subscribe one client may make per [`WINDOW`].
pub const PER_CLIENT: u32 = 10;
/// Mails to confirm one page may send per [`WINDOW`].
pub const PER_PAGE: u32 = 100;
/// The rate limits' window.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Clients and pages the limiter remembers at most.
const REMEMBERED: usize = 10_000;
/// Bytes of an address at most (RFC 5321's path limit).
const MAX_ADDRESS: usize = 254;

/// True for an address of a plain mailbox: a local part of letters,
/// digits and `.!#$%&'*+/=?^_`{|}~-` (no quoted string) at a host name.
/// RFC 5321 also allows quoted local parts (`"a,b"@x`) and address
/// literals (`a@[10.0.0.1]`), but a mail server or Mailgun's API that
/// reads a recipient list may split such an address into other
/// recipients, and lettre cannot send to them anyway: each would be
/// answered "a link is on its way" and hold a place among the page's
/// pending subscribers for a week with no mail ever sent.
fn plain(address: &lettre::Address) -> bool {
    let atom = |part: &str, extra: &str| {
        !part.is_empty()
            && part.split('.').all(|w| {
                !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || extra.contains(c))
            })
    };
    atom(address.user(), "!#$%&'*+/=?^_`{|}~-") && atom(address.domain(), "-")
}

/// The client a request to subscribe is counted against: an IPv4
/// address, or an IPv6 address's /64. One host is commonly given a whole
/// /64 and may send from any address in it, so counting each IPv6
/// address apart let one client make as many requests as it liked.
fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}

/// The mailbox an address reaches, as far as it can be told: the local
/// part without its `+tag` and its dots, at the domain. Most mail
/// services deliver `victim+1@`, `victim+2@` and `v.ictim@` to one
/// mailbox, so counting each address apart let anyone send one mailbox
/// the page's whole budget of mails to confirm (100 per 10 minutes).
fn mailbox_root(address: &lettre::Address) -> String {
    let user = address.user();
    let user = user.split('+').next().unwrap_or(user).replace('.', "");
    format!("{user}@{}", address.domain())
}

/// Fixed-window counters by key, bounded.
#[derive(Default)]
pub struct Limiter {
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    /// Counts one for `key`; false when it is past `max` in this window
    /// (or when too many keys are remembered to count it).
    fn take(&self, key: String, max: u32) -> bool {
        self.count(key, max, false)
    }

    /// As [`Limiter::take`], but true when too many keys are remembered
    /// to count this one: for a limit that others back up (a mailbox's,
    /// which the page's bounds), so that filling the map with keys shuts
    /// nobody out.
    fn take_or_open(&self, key: String, max: u32) -> bool {
        self.count(key, max, true)
    }

    fn count(&self, key: String, max: u32, open_when_full: bool) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= REMEMBERED && !counts.contains_key(&key) {
            counts.retain(|_, (at, _)| at.elapsed() < WINDOW);
            if counts.len() >= REMEMBERED {
                return open_when_full;
            }
        }
        let slot = counts.entry(key).or_insert((Instant::now(), 0));
        if slot.0.elapsed() >= WINDOW {
            *slot = (Instant::now(), 0);
        }
        if slot.1 >= max {
            return false;
        }
        slot.1 += 1;
        true
    }
}

/// 32 bytes from the kernel's generator, as hex: a token nobody guesses.
fn token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A token as the links carry it: 64 hex digits, else `None`.
fn valid_token(t: &str) -> Option<String> {
    (t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

/// What the answer pages may do: their stylesheet, and post their own form.
const CSP: &str = "default-src 'none'; style-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// A small page of the status page's look: `heading`, `text`, and a
/// form that posts `token` back when `button` is given. Everything is
/// escaped.
fn page(
    status: StatusCode,
    title: &str,
    heading: &str,
    text: &str,
    form: Option<(&str, &str)>,
) -> Response<Body> {
    let e = crate::escape::html_attr;
    let form = form
        .map(|(token, button)| {
            format!(
                r#"<form method="post"><input type="hidden" name="token" value="{}"><button type="submit">{}</button></form>"#,
                e(token),
                e(button)
            )
        })
        .unwrap_or_default();
    // The page is at /status/<slug>/<what>: the stylesheet is one up.
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"../style.css\"></head>\
         <body><main><h1>{}</h1><p>{}</p>{form}</main></body></html>\n",
        e(title),
        e(heading),
        e(text)
    );
    let mut r = respond(status, "text/html; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// The page's definition if it takes subscribers, else the 404.
fn subscribable(
    state: &AppState,
    slug: &str,
) -> Result<Arc<crate::status::PageDef>, Box<Response<Body>>> {
    match state.status.page(slug) {
        Some(def) if def.subscriptions => Ok(def.clone()),
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!(
                "no status page '{}' that takes subscribers",
                slug.chars().take(80).collect::<String>().escape_debug()
            ),
        ))),
    }
}

/// The value of `key` in a form or JSON body.
fn field(body: &[u8], json: bool, key: &str) -> Option<String> {
    if json {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        return v.get(key)?.as_str().map(str::to_string);
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn is_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Runs `f` on the history's connection on the blocking pool.
async fn on_history<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Response<Body>> {
    let history = super::history::open(state).map_err(|r| *r)?;
    match tokio::task::spawn_blocking(move || history.write(f)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => {
            tracing::error!("cannot use the history file for a subscription: {e}");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "subscriptions are unavailable now: try again later".into(),
            ))
        }
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the query failed: {e}"),
        )),
    }
}

/// `POST /status/<slug>/subscribe` (form or JSON field `email`).
pub(super) async fn subscribe(
    req: Request<Incoming>,
    state: &AppState,
    slug: &str,
) -> Response<Body> {
    let def = match subscribable(state, slug) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    if req.method() != Method::POST {
        return super::router::not_allowed("POST");
    }
    let client = req
        .extensions()
        .get::<Arc<super::conns::Conn>>()
        .map(|c| c.source());
    let json = is_json(&req);
    let body = match super::api::read_body(req, state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let address = field(&body, json, "email").unwrap_or_default();
    let address = address.trim().to_ascii_lowercase();
    let parsed = (address.len() <= MAX_ADDRESS)
        .then(|| address.parse::<lettre::Address>().ok())
        .flatten()
        .filter(plain);
    let Some(parsed) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "give one mail address as 'email', such as name@example.com".into(),
        );
    };
    let who = client.map_or_else(|| "unknown".to_string(), client_key);
    if !state
        .status
        .limits
        .take(format!("client {who}"), PER_CLIENT)
    {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests to subscribe from this address: try again later".into(),
        );
        r.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("600"));
        return r;
    }
    let token = match token() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("cannot make a subscription token: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "subscriptions are unavailable now: try again later".into(),
            );
        }
    };
    let (slug_owned, stored) = (def.slug.clone(), parsed.to_string());
    let outcome = on_history(state, move |c| {
        subscribers::subscribe(c, &slug_owned, &stored, &token, crate::clock::now_ms())
    })
    .await;
    match outcome {
        Ok(Subscribe::Mail(token)) => {
            let mailbox = format!("mailbox {} {}", def.slug, mailbox_root(&parsed));
            if !state.status.mailboxes.take_or_open(mailbox, 1) {
                tracing::warn!(
                    "status page '{}': a mail to confirm was sent to the same mailbox in the last {} s, this one not sent",
                    def.slug,
                    WINDOW.as_secs()
                );
            } else if state.status.limits.take(format!("page {}", def.slug), PER_PAGE) {
                confirmation_mail(state, &def, parsed, token);
            } else {
                tracing::warn!(
                    "status page '{}': more than {PER_PAGE} mails to confirm in {} s, this one not sent",
                    def.slug,
                    WINDOW.as_secs()
                );
            }
        }
        Ok(Subscribe::Nothing) => {}
        Ok(Subscribe::Full) => tracing::warn!(
            "status page '{}' holds as many subscribers as it may: a request to subscribe was dropped",
            def.slug
        ),
        Err(r) => return r,
    }
    page(
        StatusCode::ACCEPTED,
        &def.title,
        "Check your mail",
        &format!(
            "If {address} can get mail about {}, a link to confirm is on its way.",
            def.title
        ),
        None,
    )
}

/// The page's address, for mails.
fn page_url(state: &AppState, slug: &str) -> String {
    format!(
        "{}status/{slug}",
        state.status.public_url().unwrap_or_default()
    )
}

/// Sends the mail to confirm, in the alert tasks (a shutdown waits).
fn confirmation_mail(
    state: &AppState,
    def: &crate::status::PageDef,
    to: lettre::Address,
    token: String,
) {
    let url = page_url(state, &def.slug);
    let subject = format!("Confirm your subscription to {}", def.title);
    let body = format!(
        "Someone asked to get mail about {} ({url}) at this address.\n\n\
         To confirm, open this link:\n{url}/confirm?token={token}\n\n\
         If it was not you, ignore this mail: nothing more will be sent.\n",
        def.title
    );
    let (alerts, client) = (state.alerts.clone(), state.status.client.clone());
    state.alert_tasks.spawn(async move {
        let to = Recipients(vec![lettre::message::Mailbox::new(None, to)].into());
        if let Err(e) = send_text(&alerts, &client, &to, &subject, &body).await {
            tracing::warn!("a mail to confirm a subscription failed: {}", e.reason);
        }
    });
}

/// `GET` (a page with a button) and `POST` (the change) of
/// `/status/<slug>/confirm?token=` and `/status/<slug>/unsubscribe?token=`.
pub(super) async fn link(
    req: Request<Incoming>,
    state: &AppState,
    slug: &str,
    confirm: bool,
) -> Response<Body> {
    let def = match subscribable(state, slug) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let post = match *req.method() {
        Method::GET | Method::HEAD => false,
        Method::POST => true,
        _ => return super::router::not_allowed("GET, POST"),
    };
    let mut given = query_param(&req, "token");
    if post && given.is_none() {
        let body = match super::api::read_body(req, state).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        given = field(&body, false, "token");
    }
    let Some(token) = given.as_deref().and_then(valid_token) else {
        return page(
            StatusCode::NOT_FOUND,
            &def.title,
            "This link is not valid",
            "Open the link of the mail as it was sent.",
            None,
        );
    };
    if !post {
        return if confirm {
            page(
                StatusCode::OK,
                &def.title,
                &format!("Get mail about {}", def.title),
                "Confirm to get a mail when an incident opens, changes or is resolved, and when maintenance starts.",
                Some((&token, "Confirm")),
            )
        } else {
            page(
                StatusCode::OK,
                &def.title,
                &format!("Stop mail about {}", def.title),
                "Unsubscribe to get no more mail from this page.",
                Some((&token, "Unsubscribe")),
            )
        };
    }
    let slug = def.slug.clone();
    let done = on_history(state, move |c| {
        if confirm {
            subscribers::confirm(c, &slug, &token, crate::clock::now_ms())
        } else {
            subscribers::unsubscribe(c, &slug, &token)
        }
    })
    .await;
    match (done, confirm) {
        (Err(r), _) => r,
        (Ok(true), true) => page(
            StatusCode::OK,
            &def.title,
            "Subscribed",
            &format!(
                "You will get a mail when an incident of {} opens, changes or is resolved, and when maintenance starts.",
                def.title
            ),
            None,
        ),
        (Ok(true), false) => page(
            StatusCode::OK,
            &def.title,
            "Unsubscribed",
            "You will get no more mail from this page.",
            None,
        ),
        (Ok(false), _) => page(
            StatusCode::NOT_FOUND,
            &def.title,
            "This link is not valid any more",
            "It was replaced by a newer one, or the subscription has ended.",
            None,
        ),
    }
}

/// The subject and body of the mail of one update.
fn update_mail(
    title: &str,
    url: &str,
    update: i64,
    i: &PageIncident,
    token: &str,
) -> (String, String) {
    let u = i.updates.iter().find(|u| u.id == update);
    let status = u.map_or(i.status.as_str(), |u| u.status.as_str());
    let text = u.map_or("", |u| u.text.as_str());
    let subject = format!("[{title}] {}: {status}", i.title);
    let body = format!(
        "{}: {status}\n\n{text}\n\n{url}\n\n--\nTo get no more mail about {title}: {url}/unsubscribe?token={token}\n",
        i.title
    );
    (subject, body)
}

/// What a page's webhooks get for one update: the page, the incident
/// (without its other updates) and the update.
fn webhook_body(
    slug: &str,
    title: &str,
    url: &str,
    update: i64,
    i: &PageIncident,
) -> serde_json::Value {
    let u = i.updates.iter().find(|u| u.id == update);
    let mut incident = serde_json::to_value(i).unwrap_or_default();
    if let Some(o) = incident.as_object_mut() {
        o.remove("updates");
    }
    serde_json::json!({
        "page": {"slug": slug, "title": title, "url": url},
        "incident": incident,
        "update": u,
    })
}

/// `ms` as a reader of the page reads it: in the page's zone.
fn local_time(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
    )
}

/// The subject and body of the mail that a maintenance window began: its
/// name, times, comment and the entries it covers by their display names
/// (never a service's or an alarm's name).
fn maintenance_mail(
    def: &crate::status::PageDef,
    url: &str,
    m: &MaintenanceView,
    token: &str,
) -> (String, String) {
    let title = &def.title;
    let subject = format!("[{title}] Maintenance started: {}", m.title);
    let mut body = format!(
        "Maintenance started: {}\n\nFrom {} to {}\nAffects: {}\n",
        m.title,
        local_time(m.start, def.tz),
        local_time(m.end, def.tz),
        m.entries.join(", ")
    );
    if !m.comment.is_empty() {
        body.push_str(&format!("\n{}\n", m.comment));
    }
    body.push_str(&format!(
        "\n{url}\n\n--\nTo get no more mail about {title}: {url}/unsubscribe?token={token}\n"
    ));
    (subject, body)
}

/// What a page's webhooks get when a maintenance window begins: the page
/// and a `maintenance` object (times in ms, like an incident's).
fn maintenance_webhook_body(
    def: &crate::status::PageDef,
    url: &str,
    m: &MaintenanceView,
) -> serde_json::Value {
    serde_json::json!({
        "page": {"slug": def.slug, "title": def.title, "url": url},
        "maintenance": {
            "name": m.title,
            "start": m.start,
            "end": m.end,
            "comment": m.comment,
            "entries": m.entries,
        },
    })
}

/// Posts `body` to each of `hooks`, once, logging (never with the URL's
/// secrets) what fails.
async fn post_hooks(state: &AppState, hooks: &[reqwest::Url], body: &serde_json::Value) {
    for hook in hooks {
        let sent = state
            .status
            .client
            .post(hook.clone())
            .timeout(Duration::from_secs(10))
            .json(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(e) = sent {
            tracing::warn!(
                "a status page's webhook {} failed: {}",
                crate::redact::url_for_log(hook.as_str()),
                e.without_url()
            );
        }
    }
}

/// Tells `def`'s subscribers and webhooks of each maintenance window over
/// its entries that is open now and was not told yet (the history keeps
/// what was told, so a restart repeats nothing and an occurrence that
/// began while lovebeat was down is told if still open). At most the
/// windows a page shows are looked at a round, computed lazily as the
/// page does. False when no mail of a window could be sent: it is tried
/// again later (its webhooks were posted once, `posted` remembers).
async fn announce_maintenance(
    state: &AppState,
    history: &Arc<crate::history::History>,
    def: &crate::status::PageDef,
    people: &[(String, String)],
    posted: &mut std::collections::HashSet<(String, i64)>,
) -> bool {
    let now = crate::clock::now_ms();
    let ongoing = crate::status::model::maintenance(def, &state.engine, now).ongoing;
    let url = page_url(state, &def.slug);
    for m in ongoing {
        let (h, s, n, start) = (history.clone(), def.slug.clone(), m.title.clone(), m.start);
        let told = tokio::task::spawn_blocking(move || {
            h.read(|c| subscribers::maintenance_told(c, &s, &n, start))
        })
        .await;
        match told {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) | Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!("cannot read a status page's announced maintenance: {e}");
                continue;
            }
        }
        if posted.len() > 10_000 {
            posted.clear();
        }
        if posted.insert((m.title.clone(), m.start)) {
            post_hooks(
                state,
                &def.webhooks,
                &maintenance_webhook_body(def, &url, &m),
            )
            .await;
        }
        let (mut sent, mut failed) = (0usize, 0usize);
        for (address, token) in people {
            let Ok(to) = address.parse::<lettre::message::Mailbox>() else {
                continue;
            };
            let (subject, body) = maintenance_mail(def, &url, &m, token);
            let to = Recipients(vec![to].into());
            match send_text(&state.alerts, &state.status.client, &to, &subject, &body).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!("a status page's mail failed: {}", e.reason);
                }
            }
        }
        if failed > 0 && sent == 0 {
            return false;
        }
        let (h, s, n) = (history.clone(), def.slug.clone(), m.title.clone());
        let _ = tokio::task::spawn_blocking(move || {
            h.read(|c| subscribers::tell_maintenance(c, &s, &n, start, now))
        })
        .await;
    }
    true
}

/// Sends the pages' new incident updates out until `stop`: every 2 s, at
/// most 20 updates a page a round, each to the page's webhooks (once,
/// 10 s each) and to its confirmed subscribers by mail (the latest of an
/// incident's updates of the round), then the maintenance that began
/// ([`announce_maintenance`]). A round in which
/// no mail could be sent keeps its update for the next try (after 30 s).
pub async fn run(state: Arc<AppState>, stop: tokio_util::sync::CancellationToken) {
    let HistoryState::On(history) = &state.history else {
        return;
    };
    let pages: Vec<Arc<crate::status::PageDef>> = state.status.notifying().cloned().collect();
    if pages.is_empty() {
        return;
    }
    // Updates already posted to the webhooks, while their mail waits.
    let mut posted = std::collections::HashSet::new();
    // Maintenance posted to each page's webhooks, while its mail waits.
    let mut told: HashMap<String, std::collections::HashSet<(String, i64)>> = HashMap::new();
    let mut wait = Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        wait = Duration::from_secs(2);
        for def in &pages {
            let (h, s, mail) = (history.clone(), def.slug.clone(), def.subscriptions);
            let read = tokio::task::spawn_blocking(move || {
                h.read(|c| {
                    let people = if mail {
                        subscribers::confirmed(c, &s)?
                    } else {
                        Vec::new()
                    };
                    Ok::<_, rusqlite::Error>((subscribers::unmailed(c, &s, 20)?, people))
                })
            })
            .await;
            let (updates, people) = match read {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!("cannot read a status page's subscribers: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            let url = page_url(&state, &def.slug);
            // An incident's updates of one round make one mail, of the
            // latest (a flapping alarm's incident changes fast).
            let latest: HashMap<i64, i64> = updates.iter().map(|(u, i)| (i.id, *u)).collect();
            for (update, incident) in updates {
                if posted.len() > 10_000 {
                    posted.clear();
                }
                if posted.insert(update) {
                    let body = webhook_body(&def.slug, &def.title, &url, update, &incident);
                    post_hooks(&state, &def.webhooks, &body).await;
                }
                let (mut sent, mut failed) = (0usize, 0usize);
                let superseded = latest.get(&incident.id) != Some(&update);
                for (address, token) in people.iter().filter(|_| !superseded) {
                    let Ok(to) = address.parse::<lettre::message::Mailbox>() else {
                        continue;
                    };
                    let (subject, body) = update_mail(&def.title, &url, update, &incident, token);
                    let to = Recipients(vec![to].into());
                    match send_text(&state.alerts, &state.status.client, &to, &subject, &body).await
                    {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            failed += 1;
                            tracing::warn!("a status page's mail failed: {}", e.reason);
                        }
                    }
                }
                if failed > 0 && sent == 0 {
                    wait = Duration::from_secs(30);
                    break;
                }
                let (h, s) = (history.clone(), def.slug.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    h.read(|c| subscribers::mailed(c, &s, update))
                })
                .await;
            }
            let told = told.entry(def.slug.clone()).or_default();
            if !announce_maintenance(&state, history, def, &people, told).await {
                wait = Duration::from_secs(30);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_and_an_ipv4_one_by_its_address() {
        let key = |s: &str| client_key(s.parse().expect("address"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        let limits = Limiter::default();
        let taken = (0..=PER_CLIENT)
            .filter(|i| {
                let ip: IpAddr = format!("2001:db8::{i:x}").parse().expect("address");
                limits.take(format!("client {}", client_key(ip)), PER_CLIENT)
            })
            .count();
        assert_eq!(taken, PER_CLIENT as usize);
    }

    #[test]
    fn a_full_limiter_shuts_new_clients_out_but_lets_mailboxes_through() {
        let limits = Limiter::default();
        for n in 0..REMEMBERED {
            assert!(limits.take(format!("key {n}"), 1));
        }
        assert!(!limits.take("a new client".into(), PER_CLIENT));
        assert!(limits.take_or_open("a new mailbox".into(), 1));
        assert!(
            !limits.take_or_open("key 0".into(), 1),
            "a known key still counts"
        );
    }
}
