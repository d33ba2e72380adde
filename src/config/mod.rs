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
        Ok(())
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
