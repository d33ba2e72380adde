//! The engine's configuration: `[[alarms]]` (and 1.x's `[[views]]`),
//! `[[services]]` defaults and `[auto]`, as a file writes them and as the
//! engine is built from them.

use std::sync::Arc;

use serde::Deserialize;

use super::auto::Algorithm;
use super::job::{Schedule, ScheduleError};
use super::membership::AlarmDef;
use super::Timeout;
use crate::engine::timeout_text::TimeoutSetting;
use crate::settings::duration::DurationSetting;

/// What the engine is built from.
#[derive(Debug, Default)]
pub struct EngineConfig {
    /// The configured `[[alarms]]`.
    pub alarms: Vec<AlarmDef>,
    /// `[[services]]` defaults; the first that matches wins.
    pub service_defaults: Vec<ServiceDefaults>,
    /// How automatic timeouts are learned.
    pub algorithm: Algorithm,
    /// Services at most (`[limits] max_services`; 0: the default).
    pub max_services: usize,
    /// Alarm instances at most (`[limits] max_alarms`; 0: the default).
    pub max_alarms: usize,
}

/// `[[alarms]]`: a group of services chosen by patterns, with its alerts.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Name, possibly with `$word` templates.
    pub name: String,
    /// One include pattern.
    pub pattern: Option<String>,
    /// More include patterns.
    pub includes: Vec<String>,
    /// Exclude patterns.
    pub excludes: Vec<String>,
    /// Alert sections to fire.
    pub alerts: Vec<String>,
    /// Alarms whose ERROR holds this alarm's alerts (`$word` filled from
    /// this alarm's captures).
    pub depends_on: Vec<String>,
}

impl AlarmConfig {
    /// The engine's form. A section without a name or a pattern is
    /// refused when the file is checked ([`AlarmConfig::problem`]).
    pub fn to_def(&self) -> AlarmDef {
        AlarmDef {
            name: self.name.clone(),
            includes: self.pattern.iter().chain(&self.includes).cloned().collect(),
            excludes: self.excludes.clone(),
            alerts: self.alerts.clone(),
            depends_on: self.depends_on.clone(),
        }
    }

    /// What is wrong with the section on its own, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.name.is_empty() {
            return Some("[[alarms]] section without a name".into());
        }
        if self.pattern.is_none() && self.includes.is_empty() {
            return Some(format!(
                "alarm '{}' has neither pattern nor includes",
                self.name
            ));
        }
        None
    }
}

/// What a new service matching `pattern` starts with (`[[services]]`).
/// Read from the file through [`ServiceDefaultsFile`], so a bad schedule
/// or duration is reported with its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ServiceDefaultsFile")]
pub struct ServiceDefaults {
    /// Which services.
    pub pattern: String,
    /// Their timeout (a schedule included).
    pub timeout: Timeout,
    /// Longest allowed run (ms).
    pub max_runtime: Option<u64>,
}

impl ServiceDefaults {
    /// Defaults with only a timeout.
    pub fn timeout(pattern: &str, timeout: Timeout) -> ServiceDefaults {
        ServiceDefaults {
            pattern: pattern.to_string(),
            timeout,
            max_runtime: None,
        }
    }
}

/// A `[[services]]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefaultsFile {
    /// Which services.
    pub pattern: String,
    /// Seconds, a duration or `auto`.
    pub timeout: Option<TimeoutSetting>,
    /// A cron schedule instead of a timeout.
    pub schedule: Option<String>,
    /// The schedule's IANA zone (default UTC).
    pub tz: Option<String>,
    /// Grace after a fire time (default 5 minutes).
    pub grace: Option<DurationSetting>,
    /// Longest allowed run.
    pub max_runtime: Option<DurationSetting>,
}

/// Why a `[[services]]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceDefaultsError {
    /// The schedule, its zone or its grace.
    #[error("[[services]] pattern '{pattern}': {source}")]
    Schedule {
        /// The section's pattern.
        pattern: String,
        /// What is wrong.
        source: ScheduleError,
    },
    /// Nothing to default to.
    #[error("[[services]] pattern '{0}': needs a timeout or a schedule")]
    Empty(String),
}

impl TryFrom<ServiceDefaultsFile> for ServiceDefaults {
    type Error = ServiceDefaultsError;

    fn try_from(f: ServiceDefaultsFile) -> Result<ServiceDefaults, ServiceDefaultsError> {
        let schedule = Schedule::from_settings(
            f.schedule.as_deref(),
            f.tz.as_deref(),
            f.grace.map(|g| g.ms as i64),
            f.timeout.is_some(),
        )
        .map_err(|source| ServiceDefaultsError::Schedule {
            pattern: f.pattern.clone(),
            source,
        })?;
        let timeout = match (f.timeout, schedule) {
            (_, Some(s)) => Timeout::Schedule(Arc::new(s)),
            (Some(t), None) => t.0,
            (None, None) if f.max_runtime.is_some() => Timeout::None,
            (None, None) => return Err(ServiceDefaultsError::Empty(f.pattern)),
        };
        Ok(ServiceDefaults {
            pattern: f.pattern,
            timeout,
            max_runtime: f.max_runtime.map(|m| m.ms).filter(|m| *m > 0),
        })
    }
}

/// `[auto]`: how automatic timeouts are learned.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AutoConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
}
