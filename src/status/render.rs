//! A page's model as HTML (server-rendered, complete without
//! JavaScript), RSS 2.0 and JSON. The templates are compiled into the
//! binary and rendered by MiniJinja with HTML escaping on (the feed's
//! `.xml` too): every name and text an operator or the API wrote is
//! escaped wherever it lands.

use std::sync::LazyLock;

use minijinja::Environment;
use serde::Serialize;

use super::model::PageModel;

/// The page's stylesheet (served at `/status/style.css`).
pub const STYLE: &str = include_str!("templates/style.css");

/// `u` as a percentage, never rounded up to 100 %: two decimals cut, not
/// rounded (99.999 % reads 99.99 %); `—` when unknown.
pub fn pct(u: Option<f64>) -> String {
    match u {
        None => "—".into(),
        Some(u) if u >= 1.0 => "100%".into(),
        Some(u) => format!("{:.2}%", (u.max(0.0) * 10_000.0).floor() / 100.0),
    }
}

/// `ms` in words: `43 s`, `5 min`, `1 h 3 min`, `2 d 3 h`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn time(ms: i64, tz: &str) -> String {
    let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::UTC);
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_default()
}

fn rfc2822(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc2822())
        .unwrap_or_default()
}

fn status_text(status: &str) -> String {
    let mut c = status.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("pct", pct);
    env.add_filter("duration", duration);
    env.add_filter("time", time);
    env.add_filter("rfc2822", rfc2822);
    env.add_filter("status_text", |s: &str| status_text(s));
    // A mistake in these templates is caught by every test that renders.
    for (name, source) in [
        ("page.html", include_str!("templates/page.html")),
        ("feed.xml", include_str!("templates/feed.xml")),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!("the status page template {name} is broken: {e}");
        }
    }
    env
});

/// Why a page could not be rendered (a mistake in a template).
#[derive(Debug, thiserror::Error)]
#[error("cannot render the status page: {0}")]
pub struct RenderError(#[from] minijinja::Error);

/// An entry's bar as HTML: one cell per day. Made here rather than in
/// the template: a year of a hundred entries is 36 500 cells, which the
/// template engine would take a hundred times longer to write.
fn bar(days: &[super::model::DayModel]) -> String {
    let mut out = String::with_capacity(days.len() * 64);
    for d in days {
        out.push_str(r#"<span class="day l-"#);
        out.push_str(d.level);
        out.push_str(r#"" title=""#);
        out.push_str(&crate::escape::html_attr(&d.summary));
        out.push_str(r#""></span>"#);
    }
    out
}

/// The page as HTML.
pub fn html(page: &PageModel) -> Result<String, RenderError> {
    // Each bar by its entry's segment (unique on a page).
    let bars: std::collections::BTreeMap<&str, minijinja::Value> = page
        .groups
        .iter()
        .flat_map(|g| &g.entries)
        .map(|e| {
            (
                e.segment.as_str(),
                minijinja::Value::from_safe_string(bar(&e.days)),
            )
        })
        .collect();
    Ok(ENV
        .get_template("page.html")?
        .render(minijinja::context! { page => view(page), bars })?)
}

/// An entry as the template reads it: its days are in `bars` already
/// (converting a year of them to template values would cost more than
/// all the rest).
#[derive(Serialize)]
struct EntryView<'a> {
    name: &'a str,
    segment: &'a str,
    state: &'a str,
    state_text: &'a str,
    uptime: &'a super::model::UptimeModel,
}

#[derive(Serialize)]
struct GroupView<'a> {
    title: &'a str,
    entries: Vec<EntryView<'a>>,
}

/// The page as the templates read it: the model without its days.
#[derive(Serialize)]
struct PageView<'a> {
    slug: &'a str,
    title: &'a str,
    description: &'a str,
    days: u16,
    tz: &'a str,
    status: &'a str,
    banner: &'a str,
    history: bool,
    groups: Vec<GroupView<'a>>,
    incidents: &'a super::model::IncidentsModel,
    maintenance: &'a super::model::MaintenanceModel,
    subscribe: bool,
}

fn view(page: &PageModel) -> PageView<'_> {
    PageView {
        slug: &page.slug,
        title: &page.title,
        description: &page.description,
        days: page.days,
        tz: &page.tz,
        status: page.status,
        banner: page.banner,
        history: page.history,
        groups: page
            .groups
            .iter()
            .map(|g| GroupView {
                title: &g.title,
                entries: g
                    .entries
                    .iter()
                    .map(|e| EntryView {
                        name: &e.name,
                        segment: &e.segment,
                        state: e.state.as_str(),
                        state_text: e.state_text,
                        uptime: &e.uptime,
                    })
                    .collect(),
            })
            .collect(),
        incidents: &page.incidents,
        maintenance: &page.maintenance,
        subscribe: page.subscribe,
    }
}

/// The page's incidents and their updates as RSS 2.0; `link` is the
/// page's address (absolute when `public_url` is set).
pub fn rss(page: &PageModel, link: &str) -> Result<String, RenderError> {
    let mut incidents: Vec<_> = page
        .incidents
        .ongoing
        .iter()
        .chain(&page.incidents.past)
        .collect();
    incidents.sort_by_key(|i| std::cmp::Reverse((i.updated, i.id)));
    Ok(ENV
        .get_template("feed.xml")?
        .render(minijinja::context! { page => view(page), incidents, link })?)
}

/// The page as JSON, compact: a year of a hundred entries is large.
pub fn json<T: Serialize>(page: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = serde_json::to_vec(page)?;
    body.push(b'\n');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_compile() {
        let mut env = Environment::new();
        env.add_filter("pct", pct);
        for (name, source) in [
            ("page.html", include_str!("templates/page.html")),
            ("feed.xml", include_str!("templates/feed.xml")),
        ] {
            if let Err(e) = env.add_template(name, source) {
                panic!("{name}: {e:#}");
            }
        }
    }

    #[test]
    fn a_percentage_never_rounds_up_to_100() {
        assert_eq!(pct(Some(1.0)), "100%");
        assert_eq!(pct(Some(0.99999)), "99.99%");
        assert_eq!(pct(Some(0.5)), "50.00%");
        assert_eq!(pct(None), "—");
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration(43_000), "43 s");
        assert_eq!(duration(300_000), "5 min");
        assert_eq!(duration(3_780_000), "1 h 3 min");
        assert_eq!(duration(2 * 86_400_000 + 3_600_000), "2 d 1 h");
    }
}
