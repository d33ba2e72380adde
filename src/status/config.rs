//! `[[status_pages]]` (README, "Status pages"): what a public page shows,
//! checked when the configuration is read so a page never names what it
//! was not configured to name, and never grows past its bounds.

use serde::Deserialize;

use crate::settings::ConfigError;

/// Pages one configuration may hold at most.
pub const MAX_PAGES: usize = 100;
/// Groups one page may hold at most.
pub const MAX_GROUPS: usize = 50;
/// Entries one page may hold at most (over all its groups).
pub const MAX_ENTRIES: usize = 200;
/// Characters of a title, a group's title or a display name at most.
pub const MAX_TITLE: usize = 200;
/// Characters of a page's description at most.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Bytes of a slug at most.
pub const MAX_SLUG: usize = 64;
/// Days a page's bars cover at most (and the longest uptime figure).
pub const MAX_DAYS: u16 = 365;

fn default_days() -> u16 {
    90
}

/// One `[[status_pages]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageConfig {
    /// The page's address: `/status/<slug>`; lower-case letters, digits,
    /// `-` and `_`.
    pub slug: String,
    /// The page's heading.
    pub title: String,
    /// A line under the heading.
    #[serde(default)]
    pub description: String,
    /// Days the bars cover (default 90, at most 365).
    #[serde(default = "default_days")]
    pub days: u16,
    /// The IANA time zone the days are cut in (default UTC).
    #[serde(default)]
    pub tz: Option<String>,
    /// The groups of entries, in order.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// The alert (`[alerts.<name>]`, with a `mail` address) whose mail
    /// server mails the page's subscribers; unset: no subscriptions.
    #[serde(default)]
    pub mail: Option<String>,
    /// URLs that get a JSON POST of each update of the page's incidents
    /// (secrets: only their hosts are logged).
    #[serde(default)]
    pub webhooks: Webhooks,
}

/// `webhooks`: never shown whole, as they may hold a secret in their path.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Webhooks(pub Vec<crate::sinks::alerts::HttpUrl>);

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|u| crate::redact::url_for_log(u.0.as_str())),
            )
            .finish()
    }
}

/// Webhooks one page may have at most.
pub const MAX_WEBHOOKS: usize = 10;

/// One `[[status_pages.groups]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's heading.
    pub title: String,
    /// What it shows, in order.
    #[serde(default)]
    pub entries: Vec<EntryConfig>,
}

/// One entry: an alarm or a service, shown under its display name only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryConfig {
    /// The alarm it shows (one of `[[alarms]]`).
    pub alarm: Option<String>,
    /// The service it shows.
    pub service: Option<String>,
    /// What the page calls it; the page never shows the alarm's or the
    /// service's own name.
    pub display_name: String,
}

/// What an entry watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An alarm, by name.
    Alarm(String),
    /// A service, by name.
    Service(String),
}

impl EntryConfig {
    /// What it watches (checked: exactly one of `alarm` and `service`).
    pub fn target(&self) -> Option<Target> {
        match (&self.alarm, &self.service) {
            (Some(a), None) => Some(Target::Alarm(a.clone())),
            (None, Some(s)) => Some(Target::Service(s.clone())),
            _ => None,
        }
    }
}

/// The URL segment of an entry's badge: its display name in lower-case
/// ASCII letters and digits, every other run of characters one `-`; a
/// name with no such character gets `entry-<n>` (its place on the page,
/// from 1). Request paths carry no escapes (`http/path.rs`), so the
/// segment never needs one.
pub fn segment(display_name: &str, place: usize) -> String {
    let mut out = String::new();
    for c in display_name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        format!("entry-{place}")
    } else {
        out
    }
}

/// True when `name` is `template` with each `$word` filled by a
/// non-empty, dot-free part: the name of one instance of a `$word` alarm.
/// Both are at most 255 bytes (alarm names are); the search remembers
/// the positions it has tried, so no template makes it slow.
pub fn fills_template(template: &str, name: &str) -> bool {
    fn go(t: &[u8], n: &[u8], i: usize, j: usize, failed: &mut [bool]) -> bool {
        let at = i * (n.len() + 1) + j;
        if failed.get(at).copied().unwrap_or(true) {
            return false;
        }
        let (rest_t, rest_n) = (
            t.get(i..).unwrap_or_default(),
            n.get(j..).unwrap_or_default(),
        );
        let found = match rest_t.first() {
            None => rest_n.is_empty(),
            Some(b'$') => {
                let word = rest_t
                    .iter()
                    .skip(1)
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                if word == 0 {
                    rest_n.first() == Some(&b'$') && go(t, n, i + 1, j + 1, failed)
                } else {
                    let max = rest_n.iter().take_while(|c| **c != b'.').count();
                    (1..=max).any(|k| go(t, n, i + 1 + word, j + k, failed))
                }
            }
            Some(c) => rest_n.first() == Some(c) && go(t, n, i + 1, j + 1, failed),
        };
        if !found {
            if let Some(f) = failed.get_mut(at) {
                *f = true;
            }
        }
        found
    }
    if template.len() > 255 || name.len() > 255 {
        return false;
    }
    let mut failed = vec![false; (template.len() + 1) * (name.len() + 1)];
    go(template.as_bytes(), name.as_bytes(), 0, 0, &mut failed)
}

/// True for a slug: 1 to [`MAX_SLUG`] bytes of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter or digit.
pub fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= MAX_SLUG
        && slug
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && slug
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn text(what: &str, value: &str, max: usize, required: bool) -> Result<(), String> {
    if required && value.trim().is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{what} is longer than {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what} holds a control character"));
    }
    Ok(())
}

/// Checks every page: slugs valid and unique, texts bounded, entries
/// naming exactly one alarm (configured: `alarm_exists`) or service, their
/// URL segments unique within their page.
pub fn validate(
    pages: &[StatusPageConfig],
    alarm_exists: &dyn Fn(&str) -> bool,
) -> Result<(), ConfigError> {
    if pages.len() > MAX_PAGES {
        return Err(ConfigError::Invalid(format!(
            "{} [[status_pages]]: at most {MAX_PAGES}",
            pages.len()
        )));
    }
    let mut slugs = std::collections::HashSet::new();
    for (i, p) in pages.iter().enumerate() {
        let at = if valid_slug(&p.slug) {
            format!("[[status_pages]] '{}'", p.slug)
        } else {
            return Err(ConfigError::Invalid(format!(
                "[[status_pages]] {}: slug {:?} must be 1 to {MAX_SLUG} of a-z, 0-9, '-' and '_', starting with a letter or digit",
                i + 1,
                p.slug.chars().take(80).collect::<String>()
            )));
        };
        let fail = |m: String| ConfigError::Invalid(format!("{at}: {m}"));
        if !slugs.insert(p.slug.as_str()) {
            return Err(fail("another page has this slug".into()));
        }
        text("title", &p.title, MAX_TITLE, true).map_err(fail)?;
        text("description", &p.description, MAX_DESCRIPTION, false).map_err(fail)?;
        if !(1..=MAX_DAYS).contains(&p.days) {
            return Err(fail(format!(
                "days must be 1 to {MAX_DAYS}, not {}",
                p.days
            )));
        }
        if let Some(tz) = &p.tz {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(fail(format!(
                    "tz {:?} is not an IANA time zone such as Europe/Stockholm",
                    tz.chars().take(64).collect::<String>()
                )));
            }
        }
        if p.webhooks.0.len() > MAX_WEBHOOKS {
            return Err(fail(format!("at most {MAX_WEBHOOKS} webhooks")));
        }
        if p.groups.len() > MAX_GROUPS {
            return Err(fail(format!("at most {MAX_GROUPS} groups")));
        }
        let total: usize = p.groups.iter().map(|g| g.entries.len()).sum();
        if total > MAX_ENTRIES {
            return Err(fail(format!("{total} entries: at most {MAX_ENTRIES}")));
        }
        let mut segments = std::collections::HashSet::new();
        let mut place = 0;
        for g in &p.groups {
            text("a group's title", &g.title, MAX_TITLE, true).map_err(fail)?;
            for e in &g.entries {
                place += 1;
                let which = format!("entry {place} ({:?})", e.display_name);
                text(
                    &format!("{which}: display_name"),
                    &e.display_name,
                    MAX_TITLE,
                    true,
                )
                .map_err(fail)?;
                match e.target() {
                    Some(Target::Alarm(a)) if !alarm_exists(&a) => {
                        return Err(fail(format!(
                            "{which} names alarm '{a}', but there is no such [[alarms]]"
                        )))
                    }
                    Some(Target::Service(s)) if !crate::engine::valid_name(s.as_bytes()) => {
                        return Err(fail(format!("{which} names an invalid service name")))
                    }
                    Some(_) => {}
                    None => {
                        return Err(fail(format!(
                            "{which} must name exactly one of alarm and service"
                        )))
                    }
                }
                if !segments.insert(segment(&e.display_name, place)) {
                    return Err(fail(format!(
                        "{which}: another entry's display name makes the same badge address /status/{}/{}/badge.svg",
                        p.slug,
                        segment(&e.display_name, place)
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_the_display_name_in_lower_case_ascii() {
        assert_eq!(segment("API (EU)", 1), "api-eu");
        assert_eq!(segment("  Web -- site  ", 2), "web-site");
        assert_eq!(segment("Köln", 3), "k-ln");
        assert_eq!(segment("東京", 4), "entry-4");
        assert_eq!(segment("<script>", 5), "script");
    }

    #[test]
    fn an_instance_fills_its_template() {
        assert!(fills_template("server-$name", "server-web"));
        assert!(fills_template("a-$x-$y", "a-b-c-d"));
        assert!(!fills_template("server-$name", "server-"));
        assert!(!fills_template("server-$name", "server-a.b"));
        assert!(!fills_template("server-$name", "other-web"));
        assert!(fills_template("plain", "plain"));
        // A template that would try every split of a long name, fast.
        let t = "$a".repeat(40);
        let started = std::time::Instant::now();
        assert!(!fills_template(&t, &format!("{}.", "x".repeat(200))));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn slugs_are_plain() {
        assert!(valid_slug("public"));
        assert!(valid_slug("a-b_1"));
        for bad in ["", "-a", "A", "a.json", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_slug(bad), "{bad}");
        }
    }
}
