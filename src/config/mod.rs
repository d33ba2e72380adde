//! Configuration: TOML files with 1.x's sections and defaults (README,
//! "Configuration"; every key is documented in `lovebeat.cfg`).
//!
//! Each section's struct, its defaults and its checks live beside the
//! component it configures (`[udp]` in `ingest/udp.rs`, `[mail]` in
//! `sinks/alerts/mail.rs`, ...), written in the shared types of
//! `crate::settings`; this module is the top of the tree: it gathers the
//! sections into [`Config`] and checks what spans them. Loading the files
//! is `load.rs`; what `check-config` prints is `summary.rs`.
//!
//! The main file (`/etc/lovebeat.cfg` if it exists, or `--config`) is read
//! first, then every non-hidden file of the config directory in name order.
//! Tables merge key by key, arrays of tables (`[[alarms]]`, ...) are
//! appended, and a later scalar replaces an earlier one. Each file is checked
//! on its own first, so an error names its file, line and key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::engine::membership::AlarmDef;
use crate::engine::{AlarmConfig, AutoConfig, EngineConfig, ServiceDefaults};
use crate::http::HttpConfig;
use crate::ingest::tcp::TcpConfig;
use crate::ingest::udp::UdpConfig;
use crate::settings::{one_or_many, ConfigError};
use crate::sinks::alerts::{
    AlertConfig, AlertsConfig, FlappingConfig, MailConfig, MailgunConfig, SelfAlarmConfig,
    SlackConfig,
};
use crate::sinks::eventlog::EventlogConfig;
use crate::sinks::metrics::MetricsConfig;
use crate::sinks::notify::NotifyConfig;
use crate::sinks::persistence::DatabaseConfig;

mod load;
mod summary;
#[cfg(test)]
mod tests;

pub use load::{DEFAULT_CONFIG, DEFAULT_CONFIG_DIR};

/// The whole configuration; every section has 1.x's defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Base URL of the UI, for links in alerts.
    pub public_url: Option<String>,
    /// 1.x's home of `public_url`.
    pub general: General,
    /// SMTP settings for mail alerts.
    pub mail: MailConfig,
    /// Mailgun settings; when `domain` is set, mail goes through Mailgun.
    pub mailgun: MailgunConfig,
    /// Slack incoming webhook.
    pub slack: SlackConfig,
    /// statsd over UDP.
    pub udp: UdpConfig,
    /// statsd over TCP.
    pub tcp: TcpConfig,
    /// The HTTP API and UI.
    pub http: HttpConfig,
    /// Persistence.
    pub database: DatabaseConfig,
    /// statsd metrics out: one section or an array of them.
    #[serde(deserialize_with = "one_or_many")]
    pub metrics: Vec<MetricsConfig>,
    /// Alarms.
    pub alarms: Vec<AlarmConfig>,
    /// 1.x's older name for alarms.
    pub views: Vec<AlarmConfig>,
    /// Alert definitions referenced by alarms.
    pub alerts: BTreeMap<String, AlertConfig>,
    /// When an alarm counts as flapping.
    pub flapping: FlappingConfig,
    /// Who hears of lovebeat's own trouble (the built-in alarm).
    pub self_alarm: SelfAlarmConfig,
    /// The JSON event log.
    pub eventlog: EventlogConfig,
    /// Other lovebeats to report our own health to.
    pub notify: Vec<NotifyConfig>,
    /// Defaults for new services.
    pub services: Vec<ServiceDefaults>,
    /// The automatic timeout algorithm.
    pub auto: AutoConfig,
    /// What bounds the resources clients can make lovebeat hold.
    pub limits: crate::limits::LimitsConfig,
    /// The history store.
    pub history: crate::history::HistoryConfig,
    /// Maintenance windows (README, "Maintenance windows").
    pub maintenance: Vec<crate::maintenance::WindowSpec>,
    /// Uptime reports mailed each month or week.
    pub reports: Vec<crate::reports::ReportConfig>,
    /// Public status pages (README, "Status pages").
    pub status_pages: Vec<crate::status::StatusPageConfig>,
    /// Cluster mode on NATS JetStream; absent: a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// The files it was read from, in order (not a key).
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// `[general]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// See `Config::public_url`.
    pub public_url: Option<String>,
}

impl Config {
    /// What spans sections (each section's own values were checked as the
    /// file was read): alarms name existing alerts and alarms, keys are
    /// usable, reminders are not a flood.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        for a in self.alarms.iter().chain(&self.views) {
            if let Some(problem) = a.problem() {
                return Err(ConfigError::Invalid(problem));
            }
            for alert in &a.alerts {
                if !self.alerts.contains_key(alert) {
                    return Err(ConfigError::Invalid(format!(
                        "alarm '{}' uses alert '{alert}', but there is no [alerts.{alert}] section",
                        a.name
                    )));
                }
            }
        }
        for (name, alert) in &self.alerts {
            alert.validate(name)?;
        }
        for alert in &self.self_alarm.alerts {
            if !self.alerts.contains_key(alert) {
                return Err(ConfigError::Invalid(format!(
                    "[self_alarm] uses alert '{alert}', but there is no [alerts.{alert}] section"
                )));
            }
        }
        if let Some(a) = self
            .alarms
            .iter()
            .chain(&self.views)
            .find(|a| a.name == crate::engine::SELF_ALARM)
        {
            return Err(ConfigError::Invalid(format!(
                "alarm '{}' is built in (lovebeat's own trouble): name yours differently, and set its alerts in [self_alarm]",
                a.name
            )));
        }
        self.flapping.validate()?;
        crate::engine::membership::check_dependencies(&self.alarm_defs())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.http.validate()?;
        self.limits.validate()?;
        self.database.validate()?;
        self.mail.validate()?;
        self.maintenance_windows(0)?;
        self.validate_reports()?;
        let alarm_exists =
            |name: &str| {
                name == crate::engine::SELF_ALARM
                    || self.alarms.iter().chain(&self.views).any(|a| {
                        a.name == name || crate::status::config::fills_template(&a.name, name)
                    })
            };
        crate::status::config::validate(&self.status_pages, &alarm_exists)?;
        for p in &self.status_pages {
            let Some(alert) = &p.mail else { continue };
            let has_mail = self
                .alerts
                .get(alert)
                .is_some_and(|a| a.mail.as_ref().is_some_and(|m| !m.0.is_empty()));
            if !has_mail {
                return Err(ConfigError::Invalid(format!(
                    "[[status_pages]] '{}': mail = '{alert}' must name an [alerts.{alert}] with a mail address: its mail server mails the subscribers",
                    p.slug
                )));
            }
            if self.public_url().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "[[status_pages]] '{}': mail needs public_url, for the links in the mails to confirm and to leave",
                    p.slug
                )));
            }
        }
        Ok(())
    }

    /// The `[[maintenance]]` windows, checked: each on its own, names
    /// unique, at most `maintenance::MAX_WINDOWS`. `now` is when they are
    /// taken to be made.
    pub fn maintenance_windows(
        &self,
        now: i64,
    ) -> Result<Vec<crate::maintenance::Window>, ConfigError> {
        use crate::maintenance::{Source, Window, BY_CONFIG, MAX_WINDOWS};
        if self.maintenance.len() > MAX_WINDOWS {
            return Err(ConfigError::Invalid(format!(
                "[[maintenance]]: at most {MAX_WINDOWS} windows"
            )));
        }
        let mut out: Vec<Window> = Vec::with_capacity(self.maintenance.len());
        for spec in &self.maintenance {
            let w = Window::new(spec.clone(), Source::Config, BY_CONFIG.into(), now)
                .map_err(|e| ConfigError::Invalid(format!("[[maintenance]] {e}")))?;
            if out.iter().any(|o| o.name() == w.name()) {
                return Err(ConfigError::Invalid(format!(
                    "[[maintenance]]: two windows are named '{}'",
                    w.name()
                )));
            }
            out.push(w);
        }
        Ok(out)
    }

    /// Each report's own checks, a name used once, alarms that can exist,
    /// and the history they are computed from.
    fn validate_reports(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        // An alarm with `$` in its name makes others from service names:
        // any name may be one of them.
        let templated = self
            .alarms
            .iter()
            .chain(&self.views)
            .any(|a| a.name.contains('$'));
        for r in &self.reports {
            r.validate(&self.alerts)?;
            if !seen.insert(r.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "[[reports]] name '{}' is used twice: each report's record of what it sent is kept by name",
                    r.name
                )));
            }
            if !self.history.enabled {
                return Err(ConfigError::Invalid(format!(
                    "[[reports]] '{}' is computed from the history, which [history] enabled = false turns off",
                    r.name
                )));
            }
            let known = |name: &str| {
                self.alarms
                    .iter()
                    .chain(&self.views)
                    .any(|a| a.name == name)
            };
            if let Some(slug) = &r.status_page {
                if !self.status_pages.iter().any(|p| &p.slug == slug) {
                    return Err(ConfigError::Invalid(format!(
                        "[[reports]] '{}' covers status_page '{slug}', but no [[status_pages]] has that slug",
                        r.name
                    )));
                }
            }
            if let Some(a) = r.alarms.iter().find(|a| !templated && !known(a)) {
                return Err(ConfigError::Invalid(format!(
                    "[[reports]] '{}' covers alarm '{a}', but no [[alarms]] is named so",
                    r.name
                )));
            }
        }
        Ok(())
    }

    /// The alarms a report covers: its `alarms`, then its status page's
    /// alarm entries, each once.
    pub fn report_alarms(&self, report: &crate::reports::ReportConfig) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(report.alarms.len());
        let page = self
            .status_pages
            .iter()
            .filter(|p| Some(&p.slug) == report.status_page.as_ref())
            .flat_map(|p| &p.groups)
            .flat_map(|g| &g.entries)
            .filter_map(|e| e.alarm.as_ref());
        for a in report.alarms.iter().chain(page) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// The event log's file mode.
    pub fn eventlog_mode(&self) -> u32 {
        self.eventlog.mode.0
    }

    /// The public URL with a trailing `/`, if set.
    pub fn public_url(&self) -> Option<String> {
        let url = self
            .public_url
            .as_ref()
            .or(self.general.public_url.as_ref())?;
        if url.is_empty() {
            return None;
        }
        Some(if url.ends_with('/') {
            url.clone()
        } else {
            format!("{url}/")
        })
    }

    /// The alarms, `[[views]]` included, and last the built-in alarm of
    /// lovebeat's own trouble (`crate::trouble`).
    pub fn alarm_defs(&self) -> Vec<AlarmDef> {
        let mut defs: Vec<AlarmDef> = self
            .alarms
            .iter()
            .chain(&self.views)
            .map(AlarmConfig::to_def)
            .collect();
        defs.push(AlarmDef {
            name: crate::engine::SELF_ALARM.into(),
            includes: vec![format!("{}*", crate::engine::INTERNAL_PREFIX)],
            excludes: Vec::new(),
            alerts: self.self_alarm.alerts.clone(),
            depends_on: Vec::new(),
        });
        defs
    }

    /// What the alerters take from the configuration.
    pub fn alerts_config(&self) -> AlertsConfig {
        AlertsConfig {
            alerts: self.alerts.clone(),
            mail: self.mail.clone(),
            mailgun: self.mailgun.clone(),
            slack: self.slack.clone(),
            flapping: self.flapping.clone(),
            public_url: self.public_url(),
            max_deliveries: self.limits.max_alert_deliveries,
            max_scripts: self.limits.max_scripts,
        }
    }

    /// What the engine is built from.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            alarms: self.alarm_defs(),
            service_defaults: self.services.clone(),
            algorithm: self.auto.algorithm,
            max_services: self.limits.max_services,
            max_alarms: self.limits.max_alarms,
        }
    }
}
