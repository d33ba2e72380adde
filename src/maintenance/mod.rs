//! Maintenance windows (README, "Maintenance windows"): planned time during
//! which the matched alarms send no alert and which uptime counts as
//! maintenance, neither up nor down. A window changes no state: services
//! and alarms go on being judged as always, and what a window changes is
//! only who is told (`sinks/alerts/dispatch`) and how the time is counted
//! (`history/uptime`).
//!
//! A window comes from `[[maintenance]]` in the configuration or from
//! `POST /api/maintenance` (kept in the history store, `history/maintenance.rs`).
//! It is either one interval (`start`, `end`) or recurring (`schedule`, a
//! cron expression read in `tz`, each occurrence lasting `duration`). A
//! recurring window is computed lazily: whether it is open at `t` is one
//! search for the first occurrence at or after `t - duration`, so nothing
//! is ever generated per slot.
//!
//! [`Maintenance`] is the registry every reader shares (the dispatcher,
//! the API, the status pages): `engine.maintenance()`.

pub mod recur;

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;
use recur::Recurrence;

/// Windows lovebeat holds at most, configured and made through the API
/// together: each alert and each alarm view looks at every one of them.
pub const MAX_WINDOWS: usize = 200;
/// Names and patterns a window lists at most, `alarms` and `services`
/// together.
pub const MAX_PATTERNS: usize = 100;
/// Longest pattern, in bytes (as long as a name).
pub const MAX_PATTERN_LEN: usize = crate::engine::MAX_NAME_LEN;
/// Longest window name, in bytes.
pub const MAX_NAME_LEN: usize = 100;
/// Longest comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 1000;
/// Longest one-off window: a year (and a day). Longer is a mistake, or an
/// alarm that should be removed instead.
pub const MAX_ONCE_MS: i64 = 367 * 86_400_000;
/// Longest occurrence of a recurring window: a week.
pub const MAX_DURATION_MS: i64 = 7 * 86_400_000;

/// Who made a window made by the configuration.
pub const BY_CONFIG: &str = "config";

/// A window as `[[maintenance]]` or a `POST /api/maintenance` body writes
/// it; what `GET /api/maintenance` shows, with `created_by` beside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Unique among the windows; the key of `DELETE`.
    pub name: String,
    /// Alarm names or patterns: their alerts are held, and their uptime
    /// counts the window as maintenance.
    #[serde(default, deserialize_with = "crate::settings::one_or_many")]
    pub alarms: Vec<String>,
    /// Service names or patterns: their uptime counts the window as
    /// maintenance, and an alarm all of whose failed services are in it
    /// sends no alert.
    #[serde(default, deserialize_with = "crate::settings::one_or_many")]
    pub services: Vec<String>,
    /// A one-off window's start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// A one-off window's end (RFC 3339), excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// A recurring window's start times (cron, 5 fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long each occurrence lasts (`2h`, `90m`, or seconds).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "duration_text"
    )]
    pub duration: Option<String>,
    /// The IANA zone the schedule is read in (UTC when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Why: shown beside the window.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// Tell the mail and chat alerters of the matched alarms' alerts when
    /// the window starts and ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
}

/// A duration as text, also when written as a number of seconds, so the
/// spec shows it as it was given.
fn duration_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(
        match Option::<crate::settings::duration::Written>::deserialize(d)? {
            None => None,
            Some(crate::settings::duration::Written::Secs(s)) => Some(s.to_string()),
            Some(crate::settings::duration::Written::Float(f)) => Some(f.to_string()),
            Some(crate::settings::duration::Written::Text(t)) => Some(t),
        },
    )
}

/// Why a window cannot be made; the message says what to change (a 400,
/// or a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// No name, or one outside the allowed characters or length.
    #[error(
        "window name '{0}' is not allowed: use 1 to {MAX_NAME_LEN} of a-z, 0-9, '.', '_' and '-'"
    )]
    BadName(String),
    /// Neither alarms nor services.
    #[error("window '{0}' matches nothing: give alarms or services (names or patterns)")]
    NoMatch(String),
    /// Too many or too long patterns, or a too long comment.
    #[error("window '{name}': {what}")]
    TooBig {
        /// The window.
        name: String,
        /// What is too big.
        what: String,
    },
    /// Not exactly one of start+end and schedule+duration.
    #[error("window '{0}': give either start and end, or schedule and duration (with tz)")]
    Shape(String),
    /// A time that is not RFC 3339.
    #[error(
        "window '{name}': {field} '{value}' is not an RFC 3339 time (like 2026-12-24T22:00:00Z)"
    )]
    BadTime {
        /// The window.
        name: String,
        /// `start` or `end`.
        field: &'static str,
        /// As given.
        value: String,
    },
    /// End at or before start, or too long a window.
    #[error("window '{name}': {what}")]
    BadInterval {
        /// The window.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A bad schedule, zone or duration.
    #[error("window '{name}': {what}")]
    BadRecurrence {
        /// The window.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// The name is taken.
    #[error("a maintenance window named '{0}' exists already")]
    Exists(String),
    /// [`MAX_WINDOWS`] reached; the window refused, for a retry once
    /// room is made.
    #[error("lovebeat holds its maximum of {MAX_WINDOWS} maintenance windows: delete one first")]
    Full(Box<Window>),
}

/// True for a window name: what a URL segment carries without escaping.
fn valid_window_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && name.bytes().any(|c| c != b'.')
}

/// When a window is open.
#[derive(Debug)]
enum When {
    /// `[start, end)`, ms.
    Once { start: i64, end: i64 },
    /// Each occurrence of the schedule, for its duration.
    Recurring(Box<Recurrence>),
}

/// Where a window came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `[[maintenance]]`: changed only by the configuration.
    Config,
    /// `POST /api/maintenance`: kept in the history store.
    Api,
}

/// A checked window, ready to match names and times.
#[derive(Debug)]
pub struct Window {
    /// As written.
    pub spec: WindowSpec,
    /// `config`, `none` (no key needed) or the key's list and position
    /// (`write_keys[0]`): never the key.
    pub created_by: String,
    /// When it was made (ms): a recurring window covers no occurrence
    /// before it, so a new one does not rewrite the past's uptime.
    pub created_at: i64,
    /// Config or API.
    pub source: Source,
    /// When it was deleted (ms), for the history's rows: it covers nothing
    /// from then on. `None` while it lives.
    pub deleted_at: Option<i64>,
    alarms: Vec<Pattern>,
    services: Vec<Pattern>,
    when: When,
}

/// Whether `pattern` matches `name` whole; a name without `*` or `$`
/// (the common case) is compared as it is.
fn matches(src: &str, pattern: &Pattern, name: &str) -> bool {
    if !src.contains(['*', '$']) {
        return src == name;
    }
    pattern.captures(name).is_some()
}

impl Window {
    /// Checks `spec` and compiles it; the error says what is wrong. A
    /// one-off window may lie in the past (it says that time was
    /// planned); a schedule must fire, at most once an hour.
    pub fn new(
        spec: WindowSpec,
        source: Source,
        created_by: String,
        created_at: i64,
    ) -> Result<Window, WindowError> {
        Window::build(spec, source, created_by, created_at, true)
    }

    /// A window read back from the history store: checked as [`Window::new`]
    /// checks, except the schedule's gaps, which were checked when it was
    /// made (a search of many occurrences, too dear for every uptime query).
    pub fn from_store(
        spec: WindowSpec,
        source: Source,
        created_by: String,
        created_at: i64,
    ) -> Result<Window, WindowError> {
        Window::build(spec, source, created_by, created_at, false)
    }

    fn build(
        spec: WindowSpec,
        source: Source,
        created_by: String,
        created_at: i64,
        check_gaps: bool,
    ) -> Result<Window, WindowError> {
        let name = spec.name.clone();
        if !valid_window_name(&name) {
            return Err(WindowError::BadName(
                name.chars()
                    .take(MAX_NAME_LEN + 1)
                    .collect::<String>()
                    .escape_debug()
                    .to_string(),
            ));
        }
        if spec.alarms.is_empty() && spec.services.is_empty() {
            return Err(WindowError::NoMatch(name));
        }
        let too_big = |what: String| WindowError::TooBig {
            name: name.clone(),
            what,
        };
        if spec.alarms.len() + spec.services.len() > MAX_PATTERNS {
            return Err(too_big(format!(
                "at most {MAX_PATTERNS} alarms and services together"
            )));
        }
        if let Some(p) = spec
            .alarms
            .iter()
            .chain(&spec.services)
            .find(|p| p.is_empty() || p.len() > MAX_PATTERN_LEN)
        {
            return Err(too_big(format!(
                "pattern '{}' must be 1 to {MAX_PATTERN_LEN} bytes",
                p.chars().take(40).collect::<String>().escape_debug()
            )));
        }
        if spec.comment.len() > MAX_COMMENT_LEN {
            return Err(too_big(format!(
                "the comment is longer than {MAX_COMMENT_LEN} bytes"
            )));
        }
        let when = match (&spec.start, &spec.end, &spec.schedule, &spec.duration) {
            (Some(start), Some(end), None, None) if spec.tz.is_none() => {
                let time = |field: &'static str, value: &str| {
                    chrono::DateTime::parse_from_rfc3339(value.trim())
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| WindowError::BadTime {
                            name: name.clone(),
                            field,
                            value: value
                                .chars()
                                .take(64)
                                .collect::<String>()
                                .escape_debug()
                                .to_string(),
                        })
                };
                let (start, end) = (time("start", start)?, time("end", end)?);
                if end <= start {
                    return Err(WindowError::BadInterval {
                        name,
                        what: "end must be after start".into(),
                    });
                }
                if end - start > MAX_ONCE_MS {
                    return Err(WindowError::BadInterval {
                        name,
                        what: "a window lasts at most 367 days".into(),
                    });
                }
                When::Once { start, end }
            }
            (None, None, Some(schedule), Some(duration)) => {
                let rec = Recurrence::new(schedule, spec.tz.as_deref(), duration, check_gaps)
                    .map_err(|what| WindowError::BadRecurrence {
                        name: name.clone(),
                        what,
                    })?;
                When::Recurring(Box::new(rec))
            }
            _ => return Err(WindowError::Shape(name)),
        };
        let compile =
            |list: &[String]| -> Vec<Pattern> { list.iter().map(|p| Pattern::parse(p)).collect() };
        Ok(Window {
            alarms: compile(&spec.alarms),
            services: compile(&spec.services),
            spec,
            created_by,
            created_at,
            source,
            deleted_at: None,
            when,
        })
    }

    /// The first instant it may cover and the last (excluded; `None` for
    /// a recurring window, open-ended): what the store filters rows by.
    pub fn span(&self) -> (i64, Option<i64>) {
        match &self.when {
            When::Once { start, end } => (*start, Some(*end)),
            When::Recurring(_) => (self.created_at, None),
        }
    }

    /// The window's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// True when `alarms` names or matches `alarm`.
    pub fn covers_alarm(&self, alarm: &str) -> bool {
        self.spec
            .alarms
            .iter()
            .zip(&self.alarms)
            .any(|(src, p)| matches(src, p, alarm))
    }

    /// True when `services` names or matches `service`.
    pub fn covers_service(&self, service: &str) -> bool {
        self.spec
            .services
            .iter()
            .zip(&self.services)
            .any(|(src, p)| matches(src, p, service))
    }

    /// The occurrence open at `now`, or else the next one to open:
    /// `(start, end)` in ms; `None` when none is open or to come (a past
    /// one-off window, or a deleted one).
    pub fn current_or_next(&self, now: i64) -> Option<(i64, i64)> {
        let limit = self.deleted_at.unwrap_or(i64::MAX);
        let (start, end) = match &self.when {
            When::Once { start, end } => (*start, *end),
            When::Recurring(r) => r.open_or_next(now.max(self.created_at))?,
        };
        let end = end.min(limit);
        (end > now && start < end).then_some((start, end))
    }

    /// True when the window is open at `t`.
    pub fn is_open(&self, t: i64) -> bool {
        self.current_or_next(t).is_some_and(|(s, _)| s <= t)
    }

    /// The times it covered or will cover within `[lo, hi)`, sorted and
    /// disjoint, cut at the window's deletion; a recurring window's
    /// occurrences before it was made are left out.
    pub fn intervals(&self, lo: i64, hi: i64) -> Vec<(i64, i64)> {
        let mut budget = recur::MAX_OCCURRENCES;
        self.intervals_within(lo, hi, &mut budget)
    }

    /// [`Window::intervals`], counting a recurring window's occurrences
    /// against `budget`: a query over many windows bounds its work.
    pub fn intervals_within(&self, lo: i64, hi: i64, budget: &mut usize) -> Vec<(i64, i64)> {
        let hi = hi.min(self.deleted_at.unwrap_or(i64::MAX));
        if lo >= hi {
            return Vec::new();
        }
        match &self.when {
            When::Once { start, end } => {
                let (a, b) = ((*start).max(lo), (*end).min(hi));
                if a < b {
                    vec![(a, b)]
                } else {
                    Vec::new()
                }
            }
            When::Recurring(r) => r.intervals(lo.max(self.created_at), hi, budget),
        }
    }
}

/// Sorts and merges intervals that overlap or touch.
pub fn merge(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.retain(|s| s.0 < s.1);
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The windows lovebeat holds now, shared by every reader. Changes are
/// rare (a configuration load, an API call) and reads frequent (every
/// alert, every alarm view), so it is a copy-on-write list behind a lock
/// held only to clone an `Arc`.
#[derive(Default)]
pub struct Maintenance {
    windows: RwLock<Arc<Vec<Arc<Window>>>>,
    /// The windows open at a time, and until when that answer holds: a
    /// recurring window's search is done once per opening and closing,
    /// not once per alarm a list shows.
    open: std::sync::Mutex<Option<OpenSet>>,
}

/// The windows open throughout `[from, until)`.
struct OpenSet {
    from: i64,
    until: i64,
    open: Arc<Vec<Arc<Window>>>,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("windows", &self.list().len())
            .finish()
    }
}

impl Maintenance {
    /// Every window, the configuration's first, then the API's in the
    /// order they were made.
    pub fn list(&self) -> Arc<Vec<Arc<Window>>> {
        self.windows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut Vec<Arc<Window>>) -> T) -> T {
        let mut guard = self.windows.write().unwrap_or_else(|e| e.into_inner());
        let mut list = (**guard).clone();
        let out = f(&mut list);
        *guard = Arc::new(list);
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = None;
        out
    }

    /// The windows open at `now`, in the list's order: computed once for
    /// as long as no window opens or closes (exact, not a cache that may
    /// be a moment late).
    pub fn open_windows(&self, now: i64) -> Arc<Vec<Arc<Window>>> {
        let list = self.list();
        let mut cache = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.from <= now && now < c.until {
                return c.open.clone();
            }
        }
        let mut until = i64::MAX;
        let mut open = Vec::new();
        for w in list.iter() {
            match w.current_or_next(now) {
                Some((s, e)) if s <= now => {
                    until = until.min(e);
                    open.push(w.clone());
                }
                Some((s, _)) => until = until.min(s),
                None => {}
            }
        }
        let open = Arc::new(open);
        // Written only if no update came in between (it clears the cache
        // under the list's lock, which this read no longer holds).
        if Arc::ptr_eq(&list, &self.list()) {
            *cache = Some(OpenSet {
                from: now,
                until,
                open: open.clone(),
            });
        }
        open
    }

    /// Replaces every window (at start: the configuration's, then those
    /// the history store kept).
    pub fn set(&self, windows: Vec<Window>) {
        self.update(|list| *list = windows.into_iter().map(Arc::new).collect());
    }

    /// Adds a window made through the API, unless its name is taken or
    /// there is no room.
    pub fn add(&self, window: Window) -> Result<Arc<Window>, WindowError> {
        self.update(|list| {
            if list.iter().any(|w| w.name() == window.name()) {
                return Err(WindowError::Exists(window.spec.name.clone()));
            }
            if list.len() >= MAX_WINDOWS {
                return Err(WindowError::Full(Box::new(window)));
            }
            let w = Arc::new(window);
            list.push(w.clone());
            Ok(w)
        })
    }

    /// The window named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Window>> {
        self.list().iter().find(|w| w.name() == name).cloned()
    }

    /// Removes the window named `name` and returns it.
    pub fn remove(&self, name: &str) -> Option<Arc<Window>> {
        self.update(|list| {
            let at = list.iter().position(|w| w.name() == name)?;
            Some(list.remove(at))
        })
    }

    /// The names of the windows open at `now`, in the list's order: a
    /// view compares it with the last it saw to learn that windows opened
    /// or closed (which no state change says).
    pub fn open_now(&self, now: i64) -> Vec<Arc<str>> {
        self.open_windows(now)
            .iter()
            .map(|w| Arc::from(w.name()))
            .collect()
    }

    /// The names of the windows open at `now` that cover alarm `alarm`
    /// by its name: its alerts are held while one is.
    pub fn active_for_alarm(&self, alarm: &str, now: i64) -> Vec<Arc<str>> {
        self.open_windows(now)
            .iter()
            .filter(|w| w.covers_alarm(alarm))
            .map(|w| Arc::from(w.name()))
            .collect()
    }

    /// The names of the windows open at `now` that cover service
    /// `service` by its name.
    pub fn active_for_service(&self, service: &str, now: i64) -> Vec<Arc<str>> {
        self.open_windows(now)
            .iter()
            .filter(|w| w.covers_service(service))
            .map(|w| Arc::from(w.name()))
            .collect()
    }

    /// The names of the windows open at `now` that hold alarm `alarm`'s
    /// alerts: those that cover it by its name, or else, when every one of
    /// its `failed` services is covered by an open window, those windows
    /// (the alarm fails only through services under maintenance). An
    /// alarm with no failed service is judged by its name alone.
    pub fn holding_alarm(
        &self,
        alarm: &str,
        failed: &[impl AsRef<str>],
        now: i64,
    ) -> Vec<Arc<str>> {
        let open = self.open_windows(now);
        if open.is_empty() {
            return Vec::new();
        }
        let by_name: Vec<Arc<str>> = open
            .iter()
            .filter(|w| w.covers_alarm(alarm))
            .map(|w| Arc::from(w.name()))
            .collect();
        if !by_name.is_empty() || failed.is_empty() {
            return by_name;
        }
        let mut by_services: Vec<Arc<str>> = Vec::new();
        for s in failed {
            let covering = open.iter().filter(|w| w.covers_service(s.as_ref()));
            let mut any = false;
            for w in covering {
                any = true;
                if !by_services.iter().any(|n| &**n == w.name()) {
                    by_services.push(Arc::from(w.name()));
                }
            }
            if !any {
                return Vec::new();
            }
        }
        by_services
    }

    /// True when [`Maintenance::holding_alarm`] names a window.
    pub fn holds_alarm(&self, alarm: &str, failed: &[impl AsRef<str>], now: i64) -> bool {
        !self.holding_alarm(alarm, failed, now).is_empty()
    }

    /// The windows open at `now` or opening before `now + horizon_ms`,
    /// with the occurrence concerned, soonest first: what a status page
    /// shows as ongoing and upcoming maintenance.
    pub fn upcoming(&self, now: i64, horizon_ms: i64) -> Vec<(Arc<Window>, i64, i64)> {
        let until = now.saturating_add(horizon_ms);
        let mut out: Vec<(Arc<Window>, i64, i64)> = self
            .list()
            .iter()
            .filter_map(|w| {
                let (s, e) = w.current_or_next(now)?;
                (s < until).then(|| (w.clone(), s, e))
            })
            .collect();
        out.sort_by_key(|(_, s, _)| *s);
        out
    }
}

/// A window as `GET /api/maintenance` shows it: the spec, who made it and
/// where it came from, and the occurrence open now or next.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    /// As written.
    #[serde(flatten)]
    pub spec: WindowSpec,
    /// `config`, `none` or the key's list and position.
    pub created_by: String,
    /// When it was made (ms).
    pub created_at: i64,
    /// `config` or `api`.
    pub source: Source,
    /// True while open.
    pub active: bool,
    /// The start (ms) of the occurrence open now or next; absent when
    /// none is to come.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_start: Option<i64>,
    /// Its end (ms), excluded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_end: Option<i64>,
}

impl WindowView {
    /// `w` as seen at `now`.
    pub fn of(w: &Window, now: i64) -> WindowView {
        let next = w.current_or_next(now);
        WindowView {
            spec: w.spec.clone(),
            created_by: w.created_by.clone(),
            created_at: w.created_at,
            source: w.source,
            active: next.is_some_and(|(s, _)| s <= now),
            next_start: next.map(|n| n.0),
            next_end: next.map(|n| n.1),
        }
    }
}

#[cfg(test)]
mod tests;
