//! Alert delivery (README, "Alerts"): an alarm's changes (OK→ERROR,
//! ERROR→OK, NEW→ERROR) reach the people its `[alerts.<name>]` sections
//! name, every one of them.
//!
//! The parts, in the order a change travels:
//!
//! - the engine keeps each alarm transition until it is taken (the
//!   lossless path, `engine/announce.rs`);
//! - [`dispatch`] takes them in order and decides what is said: held while
//!   a dependency is ERROR, folded while the alarm is flapping
//!   ([`flapping`]), repeated while it stays ERROR, grouped within
//!   `group_interval` for the receivers that group (mail, Slack, the
//!   chats and pushes: [`alerter::Alerter::groups`]);
//! - [`delivery`] sends each message with retries, a bounded number at a
//!   time, and reports back so the dispatcher can tell the engine what
//!   each alarm's receivers have heard (kept in the database: a restart
//!   announces what was not);
//! - each alerter is a component ([`alerter`]): it says its kind,
//!   whether it groups, its pool, its secrets, how it describes and
//!   validates itself and how it sends, and [`alerter::alerters_of`]
//!   lists an alert's;
//! - [`mail`], [`http`], [`script`], [`pagerduty`], [`opsgenie`] and
//!   [`templated`] say it in each channel's words, and so do the chats
//!   and pushes ([`discord`], [`teams`], [`telegram`], [`matrix`], [`mattermost`],
//!   [`ntfy`], [`pushover`], [`gotify`]) from [`text`]; [`incident`] is how the pagers name an
//!   incident so that what one notice opens the next one closes.

mod alerter;
mod config;
mod delivery;
mod discord;
mod dispatch;
mod flapping;
mod gotify;
mod http;
mod incident;
mod mail;
mod matrix;
mod mattermost;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod pushover;
mod script;
mod teams;
mod telegram;
mod templated;
mod test_send;
mod text;

pub use alerter::descriptions;
pub use config::{
    is_secret_key, AlertConfig, AlertsConfig, FlappingConfig, HttpUrl, Recipients, Secret,
    SecretUrl, SelfAlarmConfig, DEFAULT_GROUP_INTERVAL,
};
pub use discord::DiscordConfig;
pub use dispatch::run;
pub use gotify::GotifyConfig;
pub use http::SlackConfig;
pub use mail::{send_message, send_text, HostPort, Mail, MailConfig, MailgunConfig, Tls};
pub use matrix::MatrixConfig;
pub use ntfy::NtfyConfig;
pub use opsgenie::{OpsgenieConfig, OpsgenieRegion};
pub use pagerduty::{PagerDutyConfig, PagerDutySeverity};
pub use pushover::PushoverConfig;
pub use teams::TeamsConfig;
pub use telegram::{ChatId, TelegramConfig};
pub use templated::TemplatedWebhookConfig;
pub use test_send::{alerter_kinds, send_test, TestResult};

use std::sync::atomic::AtomicU64;

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::engine::{AlarmView, JobFailure, State};

/// Alert delivery counters, shown in `/metrics`. A message is what one
/// receiver gets: one webhook POST, pager event, templated request or
/// script run per change; one mail, Slack or chat post per group of
/// changes.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Messages delivered.
    pub sent: AtomicU64,
    /// Messages that failed for good (after their retries).
    pub failed: AtomicU64,
    /// Messages still undelivered when the shutdown's time for them ran
    /// out (their changes are announced after the restart).
    pub dropped: AtomicU64,
    /// Messages waiting or being delivered now.
    pub queued: AtomicU64,
    /// Times an alarm started flapping.
    pub flapping: AtomicU64,
    /// Messages delivered and failed for good per alerter kind
    /// (`pagerduty`, `slack`, ...), so a graph shows which service fails.
    pub by_kind: std::sync::Mutex<std::collections::BTreeMap<&'static str, KindCounts>>,
}

/// One alerter kind's messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KindCounts {
    /// Delivered.
    pub sent: u64,
    /// Failed for good.
    pub failed: u64,
}

impl AlertStats {
    /// Counts one message of `kind`.
    pub(crate) fn count_kind(&self, kind: &'static str, delivered: bool) {
        let mut m = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        let c = m.entry(kind).or_default();
        if delivered {
            c.sent += 1;
        } else {
            c.failed += 1;
        }
    }

    /// Each kind's counts, by name.
    pub fn kinds(&self) -> Vec<(&'static str, KindCounts)> {
        let m = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, c)| (*k, *c)).collect()
    }
}

/// What a flapping notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flapping {
    /// The alarm changed state `changes` times within the window: its
    /// changes are not announced one by one until it settles.
    Started {
        /// Changes counted in the window.
        changes: usize,
    },
    /// It settled; the notice carries its final state.
    Stopped,
}

/// One thing to announce about one alarm: a change, a reminder, or the
/// start or end of flapping.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The alarm after the change.
    pub alarm: AlarmView,
    /// The state its receivers heard of before.
    pub previous: State,
    /// When it changed (ms).
    pub ts: i64,
    /// `<public_url>alarms/<name>`, if a public URL is configured (a test
    /// alert, whose alarm has no page, links the bare public URL).
    pub url: Option<String>,
    /// The `last_failure` of the service whose change fired it.
    pub failure: Option<JobFailure>,
    /// 0 for the change itself, n for its n-th reminder.
    pub repeat: u32,
    /// Set on the notices that flapping starts and ends.
    pub flapping: Option<Flapping>,
    /// The incident the alarm's receivers were last told is open (an
    /// ERROR, or the start of flapping), before this notice: what pagers
    /// ([`incident`]) close when it recovers or another incident opens.
    pub open_incident: Option<u64>,
    /// A test sent on request (`POST /api/alerts/<name>/test`): every
    /// alerter marks it as one, and pagers close what it opens at once.
    pub test: bool,
    /// Set on the notice that a maintenance window with `notify = true`
    /// opened or ended (README, "Maintenance windows"): only the mail and
    /// chat alerters get it ([`alerter::Alerter::hears_maintenance`]), and
    /// its `alarm` is a stand-in named after the window.
    pub maintenance: Option<MaintenanceNote>,
}

/// What a maintenance notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceNote {
    /// The window.
    pub window: String,
    /// True when it opened, false when it ended.
    pub opened: bool,
    /// When the occurrence ends (ms), for an opening.
    pub until: i64,
    /// The window's comment.
    pub comment: String,
    /// The alarms it holds, by name.
    pub alarms: Vec<String>,
}

/// Why a delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct DeliveryError {
    /// What went wrong, for the log (never a secret).
    pub reason: String,
    /// Connection errors, timeouts, 429 and 5xx answers are worth
    /// retrying; other 4xx answers and bad addresses are not.
    pub retry: bool,
    /// How long the receiver asked us to wait (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl DeliveryError {
    /// A failure that trying again cannot mend.
    pub fn permanent(reason: String) -> DeliveryError {
        DeliveryError {
            reason,
            retry: false,
            retry_after: None,
        }
    }
}

/// True for the transitions that fire alerts (not NEW→OK, which 1.x
/// reported as noise).
pub fn fires(previous: State, current: State) -> bool {
    matches!(
        (previous, current),
        (State::Ok, State::Error) | (State::Error, State::Ok) | (State::New, State::Error)
    )
}

/// Failed services named in a message at most; the rest are counted. A
/// mass outage fails thousands, and a message that long is refused for
/// good by the services that cap their messages (Telegram 4096
/// characters, Opsgenie's details 8000, Teams 28 KB).
pub const FAILED_LISTED: usize = 50;

/// The failed services as one comma-separated string: the first
/// [`FAILED_LISTED`], then "and N more".
pub fn failed_list(alarm: &AlarmView) -> String {
    failed_list_max(alarm, FAILED_LISTED)
}

/// Characters of names a failed list holds at most: fifty names of the
/// longest kind (255 bytes) would be 12.8 KB, over Opsgenie's 8000 for
/// all of an alert's details.
pub const FAILED_LIST_CHARS: usize = 4000;

/// The failed services as one comma-separated string: the first `max`
/// that fit in [`FAILED_LIST_CHARS`] (the first always does), then "and
/// N more".
pub(crate) fn failed_list_max(alarm: &AlarmView, max: usize) -> String {
    let failed = &alarm.failed_services;
    let mut out = String::new();
    let mut listed = 0;
    for name in failed.iter().take(max) {
        if listed > 0 {
            if out.len() + 2 + name.len() > FAILED_LIST_CHARS {
                break;
            }
            out.push_str(", ");
        }
        out.push_str(name);
        listed += 1;
    }
    if failed.len() > listed {
        out.push_str(&format!(" and {} more", failed.len() - listed));
    }
    out
}

static SENT: Metric = Metric {
    prometheus: "lovebeat_alerts_sent_total",
    statsd: Some("alert.sent"),
    help: "Alert messages delivered (a webhook POST or script run per change, a mail or Slack post per group).",
    kind: Kind::Counter,
};

static FAILED: Metric = Metric {
    prometheus: "lovebeat_alerts_failed_total",
    statsd: Some("alert.failed"),
    help: "Alert messages that failed for good, after their retries (each is logged).",
    kind: Kind::Counter,
};

static DROPPED: Metric = Metric {
    prometheus: "lovebeat_alerts_dropped_total",
    statsd: Some("alert.dropped"),
    help: "Alert messages still undelivered when the shutdown's time for them ran out (announced after the restart).",
    kind: Kind::Counter,
};

static FLAPPING: Metric = Metric {
    prometheus: "lovebeat_alarms_flapping_total",
    statsd: None,
    help: "Times an alarm started flapping (its changes then held until it settles).",
    kind: Kind::Counter,
};

static QUEUED: Metric = Metric {
    prometheus: "lovebeat_alerts_queued",
    statsd: None,
    help: "Alert messages waiting or being delivered.",
    kind: Kind::Gauge,
};

static BY_KIND: Metric = Metric {
    prometheus: "lovebeat_alert_messages_total",
    statsd: None,
    help: "Alert messages delivered (result=\"sent\") and failed for good (result=\"failed\"), per alerter kind.",
    kind: Kind::Counter,
};

/// The alert deliveries' counters, for `/metrics` and the statsd sink.
impl Counted for AlertStats {
    fn read(&self, out: &mut Vec<Reading>) {
        let n = |a: &AtomicU64| Value::Count(a.load(std::sync::atomic::Ordering::Relaxed));
        out.push(Reading::of(&SENT, n(&self.sent)));
        out.push(Reading::of(&FAILED, n(&self.failed)));
        out.push(Reading::of(&DROPPED, n(&self.dropped)));
        out.push(Reading::of(&FLAPPING, n(&self.flapping)));
        let queued = self.queued.load(std::sync::atomic::Ordering::Relaxed) as f64;
        out.push(Reading::of(&QUEUED, Value::Level(queued)));
        for (kind, c) in self.kinds() {
            for (result, v) in [("sent", c.sent), ("failed", c.failed)] {
                out.push(Reading {
                    metric: &BY_KIND,
                    labels: vec![("kind", kind.to_string()), ("result", result.to_string())],
                    value: Value::Count(v),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's failure reported at 1 ms with `exit_code` and `output`.
    pub(super) fn failed_job(exit_code: Option<i32>, output: impl Into<String>) -> JobFailure {
        JobFailure {
            ts: 1,
            exit_code,
            output: output.into(),
            reason: None,
        }
    }

    pub(super) fn notice(repeat: u32, failure: Option<JobFailure>) -> Notice {
        Notice {
            alarm: AlarmView {
                announced: (State::Ok, 6),
                ..AlarmView::standalone("jobs", State::Error, 7, vec!["job.etl".into()], 1)
            },
            previous: State::Ok,
            ts: 1,
            url: None,
            failure,
            repeat,
            flapping: None,
            open_incident: None,
            test: false,
            maintenance: None,
        }
    }

    #[test]
    fn a_failed_list_names_fifty_and_counts_the_rest() {
        let mut n = notice(0, None);
        n.alarm.failed_services = (0..1234).map(|i| format!("s{i}").into()).collect();
        let list = failed_list(&n.alarm);
        assert!(list.starts_with("s0, s1, "), "{list}");
        assert!(list.ends_with("s49 and 1184 more"), "{list}");
        n.alarm.failed_services.truncate(FAILED_LISTED);
        assert!(failed_list(&n.alarm).ends_with("s48, s49"));
        // Names of the longest kind: as many as fit, the rest counted.
        n.alarm.failed_services = (0..FAILED_LISTED)
            .map(|i| format!("{i:0>255}").into())
            .collect();
        let list = failed_list(&n.alarm);
        assert!(list.len() <= FAILED_LIST_CHARS + " and 50 more".len());
        assert!(list.ends_with(&format!(", {:0>255} and 35 more", 14)));
    }

    #[test]
    fn a_failure_and_a_reminder_reach_every_alerter() {
        let f = failed_job(Some(3), "disk full\n");
        let n = notice(2, Some(f.clone()));
        assert_eq!(mail::subject(&[&n]), "[LOVEBEAT] jobs-7 (reminder 2)");
        let body = mail::body(&[&n]);
        assert!(
            body.contains("exit code 3") && body.contains("Output:\ndisk full\n"),
            "{body}"
        );
        let slack = http::slack_body("#ops", &[&n]);
        let att = &slack["attachments"][0];
        assert_eq!(att["title"], "jobs is in ERROR (reminder 2)");
        assert!(att["text"].as_str().unwrap_or("").contains("disk full"));
        let hook = http::webhook_body(&n);
        assert_eq!(hook["repeat"], 2);
        assert_eq!(hook["failure"]["exit_code"], 3);
        assert_eq!(hook["failure"]["output"], "disk full\n");
        // Without them, the 1.x shapes are untouched.
        let plain = notice(0, None);
        assert_eq!(mail::subject(&[&plain]), "[LOVEBEAT] jobs-7");
        let hook = http::webhook_body(&plain);
        assert!(hook.get("repeat").is_none() && hook.get("failure").is_none());
        assert!(hook.get("flapping").is_none());
        let ran_long = JobFailure {
            reason: Some("ran too long".into()),
            exit_code: None,
            ..f
        };
        assert!(mail::body(&[&notice(0, Some(ran_long))]).contains("ran too long"));
    }

    #[test]
    fn a_group_names_every_alarm_and_its_new_state() {
        let a = notice(0, None);
        let mut b = notice(0, None);
        b.alarm.name = "db".into();
        b.alarm.state = State::Ok;
        b.previous = State::Error;
        b.alarm.incident_nbr = 3;
        let group = [&a, &b];
        assert_eq!(mail::subject(&group), "[LOVEBEAT] 2 alarm changes");
        let body = mail::body(&group);
        assert!(body.contains("'jobs' (incident 7): OK -> ERROR"), "{body}");
        assert!(body.contains("'db' (incident 3): ERROR -> OK"), "{body}");
        assert!(body.contains("Failed services: job.etl"), "{body}");
        let slack = http::slack_body("#ops", &group);
        let att = &slack["attachments"][0];
        assert_eq!(att["color"], "danger", "one ERROR makes the group red");
        let text = att["text"].as_str().unwrap_or_default();
        assert!(text.contains("jobs") && text.contains("db"), "{text}");
    }

    #[test]
    fn a_mass_outage_makes_one_mail_of_bounded_size() {
        let mut big = notice(0, None);
        big.alarm.failed_services = (0..1000).map(|i| format!("svc.{i}").into()).collect();
        let group: Vec<Notice> = (0..10_000)
            .map(|i| {
                let mut n = big.clone();
                n.alarm.name = format!("a-{i}").into();
                n
            })
            .collect();
        let refs: Vec<&Notice> = group.iter().collect();
        let body = mail::body(&refs);
        // Unbounded, it would be 10 000 × 1 000 names: about 80 MB.
        assert!(body.len() < 1 << 20, "{} bytes", body.len());
        assert!(
            body.starts_with("10000 alarm changes:"),
            "every change is counted"
        );
        assert!(body.contains("'a-499' (incident 7)") && !body.contains("'a-500'"));
        assert!(
            body.contains("… and 9500 more changes"),
            "the rest are counted"
        );
        assert!(
            body.contains("svc.19 and 980 more\n"),
            "failed services counted"
        );
    }

    #[test]
    fn flapping_notices_say_so_in_every_channel() {
        let mut n = notice(0, None);
        n.flapping = Some(Flapping::Started { changes: 6 });
        assert_eq!(mail::subject(&[&n]), "[LOVEBEAT] jobs-7 is flapping");
        assert!(mail::body(&[&n]).contains("changed state 6 times"));
        assert_eq!(http::webhook_body(&n)["flapping"], true);
        n.flapping = Some(Flapping::Stopped);
        n.alarm.state = State::Ok;
        assert_eq!(mail::subject(&[&n]), "[LOVEBEAT] jobs-7 stopped flapping");
        let hook = http::webhook_body(&n);
        assert_eq!(
            (hook["flapping"].as_bool(), hook["to_state"].as_str()),
            (Some(false), Some("ok"))
        );
    }

    #[test]
    fn slack_text_from_a_job_cannot_mention_or_format() {
        let f = failed_job(Some(1), "<!channel> wake up & <@U123> ```\n*bold*");
        let mut n = notice(0, Some(f));
        n.alarm.name = "a<b>".into();
        n.alarm.failed_services = vec!["x<!here>".into()];
        let body = http::slack_body("#ops", &[&n]);
        let att = &body["attachments"][0];
        let text = att["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("&lt;!channel&gt; wake up &amp; &lt;@U123&gt;"),
            "{text}"
        );
        // The output's own fence is broken up; only lovebeat's two remain.
        assert_eq!(text.matches("```").count(), 2, "{text}");
        assert!(!att["title"].as_str().unwrap_or_default().contains('<'));
        let fields = att["fields"].to_string();
        assert!(
            !fields.contains("<!here>") && fields.contains("&lt;!here&gt;"),
            "{fields}"
        );
    }
}
