//! Configuration: TOML files with 1.x's sections and defaults (README,
//! "Configuration"; every key is documented in `lovebeat.cfg`).
//!
//! Each section's struct, its defaults and its checks live beside the
//! component it configures (`[udp]` in `ingest/udp.rs`, `[mail]` in
//! `sinks/alerts/mail.rs`, ...); this module loads the files, merges
//! `conf.d` into the main file, reports errors with their file, line and
//! key, and checks what spans sections.
//!
//! The main file (`/etc/lovebeat.cfg` if it exists, or `--config`) is read
//! first, then every non-hidden file of the config directory in name order.
//! Tables merge key by key, arrays of tables (`[[alarms]]`, ...) are
//! appended, and a later scalar replaces an earlier one. Each file is checked
//! on its own first, so an error names its file, line and key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::membership::AlarmDef;
use crate::engine::{AlarmConfig, AutoConfig, EngineConfig, ServiceDefaults};
use crate::http::HttpConfig;
use crate::ingest::tcp::TcpConfig;
use crate::ingest::udp::UdpConfig;
use crate::sinks::alerts::{
    AlertConfig, AlertsConfig, FlappingConfig, MailConfig, MailgunConfig, SelfAlarmConfig,
    SlackConfig,
};
use crate::sinks::eventlog::EventlogConfig;
use crate::sinks::metrics::MetricsConfig;
use crate::sinks::notify::NotifyConfig;
use crate::sinks::persistence::DatabaseConfig;

/// The default main configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/lovebeat.cfg";
/// The default directory of extra configuration files.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/lovebeat.conf.d";

/// A configuration that cannot be used; the daemon exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not fit the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The problem, naming the key.
        message: String,
    },
    /// Valid TOML whose values do not make sense together.
    #[error("{0}")]
    Invalid(String),
}

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

/// A listening address as 1.x writes it: `:8080` (every interface) or
/// `host:port`, resolved when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// The address to bind.
    pub addr: SocketAddr,
    /// As written, for messages.
    text: String,
}

impl ListenAddr {
    /// Every interface, on `port`.
    pub fn any(port: u16) -> ListenAddr {
        ListenAddr {
            addr: SocketAddr::from(([0, 0, 0, 0], port)),
            text: format!(":{port}"),
        }
    }

    /// Reads `:port` or `host:port`.
    pub fn parse(text: &str) -> Result<ListenAddr, BadListenAddr> {
        let full = if text.starts_with(':') {
            format!("0.0.0.0{text}")
        } else {
            text.to_string()
        };
        let addr = full
            .to_socket_addrs()
            .map_err(|e| BadListenAddr::Invalid(text.to_string(), e))?
            .next()
            .ok_or_else(|| BadListenAddr::Nowhere(text.to_string()))?;
        Ok(ListenAddr {
            addr,
            text: text.to_string(),
        })
    }
}

/// Why a listening address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadListenAddr {
    /// Not `:port` or `host:port`, or the host does not resolve.
    #[error("'{0}' is not a valid address: {1}")]
    Invalid(String, #[source] std::io::Error),
    /// A host with no address.
    #[error("'{0}' resolves to no address")]
    Nowhere(String),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ListenAddr, D::Error> {
        ListenAddr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Reads an optional string where an empty one means unset, as the
/// documented defaults (`password = ""`) write it.
pub fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// Accepts one value where a list of them is expected: `[metrics]` for
/// `[[metrics]]`, or `write_keys = "k"` (a likely slip, whose type error
/// would quote the key).
pub fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(v)) => Ok(vec![v]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected one value or a list of them",
        )),
    }
}

impl Config {
    /// Reads the configuration: `path` (which must exist) or the default
    /// file if present, then `dir` if it exists.
    pub fn load(path: Option<&Path>, dir: &Path) -> Result<Config, ConfigError> {
        let mut files = Vec::new();
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::Io {
                        path: p.to_path_buf(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                    });
                }
                files.push(p.to_path_buf());
            }
            None => {
                let p = Path::new(DEFAULT_CONFIG);
                if p.exists() {
                    files.push(p.to_path_buf());
                }
            }
        }
        let io = |source| ConfigError::Io {
            path: dir.to_path_buf(),
            source,
        };
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut extra = Vec::new();
                for e in entries {
                    let e = e.map_err(io)?;
                    let hidden = e.file_name().to_string_lossy().starts_with('.');
                    if !hidden && !e.file_type().map_err(io)?.is_dir() {
                        extra.push(e.path());
                    }
                }
                extra.sort();
                files.extend(extra);
            }
            // No directory: nothing to add (the default one rarely exists).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut merged = toml::Table::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Io {
                path: f.clone(),
                source,
            })?;
            let table = check_file(f, &text)?;
            merge(&mut merged, table);
        }
        let mut config = Config::from_table(merged)?;
        config.files = files;
        Ok(config)
    }

    /// Builds and validates a configuration from one TOML text (tests).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table = check_file(Path::new("<config>"), text)?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// What spans sections (each section's own values were checked as the
    /// file was read): alarms name existing alerts and alarms, keys are
    /// usable, reminders are not a flood.
    fn validate(&self) -> Result<(), ConfigError> {
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
            .find(|a| a.name == crate::trouble::SELF_ALARM)
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

    /// What the configuration sets up, for `lovebeat check-config`: the
    /// files read, listeners, alarms, alerts and sinks. Secrets are left
    /// out (keys are counted, URLs show their host).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let url = crate::redact::url_for_log;
        let mut out = String::new();
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let _ = writeln!(
            out,
            "files: {}",
            if files.is_empty() {
                "none (defaults)".into()
            } else {
                files.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "listening: statsd UDP {} ({}, {} KiB receive buffer each), statsd TCP {}, HTTP {}",
            self.udp.listen,
            match self.udp.sockets {
                0 => "one socket per core".to_string(),
                1 => "one socket".to_string(),
                n => format!("{n} sockets"),
            },
            self.udp.receive_buffer / 1024,
            self.tcp.listen,
            self.http.listen
        );
        let _ = writeln!(
            out,
            "keys: {} write, {} read; allowed hosts: {}",
            self.http.write_keys.len(),
            self.http.read_keys.len(),
            if self.http.allowed_hosts.is_empty() {
                "any".into()
            } else {
                self.http.allowed_hosts.join(", ")
            }
        );
        let db = &self.database;
        let _ = writeln!(
            out,
            "database: {} every {} s{}",
            db.filename,
            db.interval,
            if db.remote_s3_url.is_empty() {
                String::new()
            } else {
                format!(", backed up to {}", db.remote_s3_url)
            }
        );
        let defs = self.alarm_defs();
        let _ = writeln!(out, "alarms: {}", defs.len());
        for d in &defs {
            let mut line = format!("  {}: {}", d.name, d.includes.join(", "));
            if !d.excludes.is_empty() {
                let _ = write!(line, " except {}", d.excludes.join(", "));
            }
            if !d.alerts.is_empty() {
                let _ = write!(line, "; alerts {}", d.alerts.join(", "));
            }
            if !d.depends_on.is_empty() {
                let _ = write!(line, "; held while {} is ERROR", d.depends_on.join(" or "));
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "alerts: {}", self.alerts.len());
        let alerts_config = self.alerts_config();
        for (name, a) in &self.alerts {
            // Each alerter describes itself, so none is left out.
            let mut channels =
                crate::sinks::alerts::descriptions(&alerts_config, name).unwrap_or_default();
            if let Some(r) = a.repeat {
                channels.push(format!("repeated every {} s", r.ms / 1000));
            }
            let _ = writeln!(
                out,
                "  {name}: {}",
                if channels.is_empty() {
                    "nothing".into()
                } else {
                    channels.join("; ")
                }
            );
        }
        let _ = writeln!(out, "service defaults: {}", self.services.len());
        if !self.eventlog.path.is_empty() {
            let _ = writeln!(
                out,
                "event log: {} (mode {:o})",
                self.eventlog.path, self.eventlog.mode.0
            );
        }
        for m in self.metrics.iter().filter(|m| !m.server.is_empty()) {
            let _ = writeln!(out, "statsd metrics: {} as {}.*", m.server, m.prefix);
        }
        for n in &self.notify {
            let _ = writeln!(out, "notify: {}", url(&n.lovebeat));
        }
        out
    }

    /// Settings that work but are likely not what was meant: a start logs
    /// them and `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.views.is_empty() {
            w.push("[[views]] is deprecated: it is read as [[alarms]]; rename the sections".into());
        }
        let http = &self.http;
        if http.write_keys.is_empty() && http.allowed_hosts.is_empty() {
            w.push(
                "[http] has neither write_keys nor allowed_hosts: a web page that points its own name at this lovebeat's address (DNS rebinding) could change it through a visitor's browser; set allowed_hosts to the names lovebeat is reached by, or set write_keys".into(),
            );
        }
        if !http.write_keys.is_empty() {
            for (what, listen) in [("udp", &self.udp.listen), ("tcp", &self.tcp.listen)] {
                if !listen.addr.ip().is_loopback() {
                    w.push(format!(
                        "[{what}] listen = \"{listen}\" takes statsd lines from the network, and statsd has no keys: anyone who reaches it can beat, fail or silence services despite write_keys; listen on 127.0.0.1 unless the network is trusted"
                    ));
                }
            }
        }
        if !http.read_keys.is_empty() && http.write_keys.is_empty() {
            w.push(
                "[http] read_keys is set but write_keys is not: reading needs a key, but changes (beats, mutes, deletes) need none; set write_keys to guard them".into(),
            );
        }
        w
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
            name: crate::trouble::SELF_ALARM.into(),
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

/// Keys whose values are secrets: an error about them never quotes them
/// (the alerters' tables say theirs: `alerts::is_secret_key`).
const SECRET_KEYS: [&str; 8] = [
    "slack_webhook_url",
    "write_keys",
    "read_keys",
    "key",
    "password",
    "api_key",
    "webhook",
    "webhook_url",
];

/// Parses one file and checks it against the schema on its own, so errors
/// carry its name and a line number.
fn check_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let located = |e: toml::de::Error| {
        let (line, column, key) = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
                let line_text = text.lines().nth(line - 1).unwrap_or("");
                let key = line_text.split('=').next().unwrap_or("").trim().to_string();
                (line, column, key)
            }
            None => (1, 1, String::new()),
        };
        let mut message = e.message().trim().to_string();
        if SECRET_KEYS.contains(&key.as_str()) || crate::sinks::alerts::is_secret_key(&key) {
            // serde quotes the value it could not use: not a secret's.
            message = match message.split_once(", expected") {
                Some((_, expected)) => format!(
                    "the value has the wrong type (not shown: it is a secret); expected{expected}"
                ),
                None => "the value cannot be used (not shown: it is a secret)".to_string(),
            };
        }
        if !key.is_empty() && !key.starts_with('[') {
            message = format!("key `{key}`: {message}");
        }
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let text = quote_mode_token(text).map_err(located)?;
    let table: toml::Table = toml::from_str(&text).map_err(located)?;
    let _: Config = toml::from_str(&text).map_err(located)?;
    Ok(table)
}

/// `text` with an integer `[eventlog] mode` put in quotes as it is
/// written, for [`FileMode`] to read: the parsed integer cannot tell `644`
/// (octal digits, as 1.x reads them) from `0o644` (420). Only that token
/// changes, so every line and key stays where it was for error messages.
fn quote_mode_token(text: &str) -> Result<std::borrow::Cow<'_, str>, toml::de::Error> {
    #[derive(Deserialize)]
    struct File {
        eventlog: Option<EventlogMode>,
    }
    #[derive(Deserialize)]
    struct EventlogMode {
        mode: Option<toml::Spanned<toml::Value>>,
    }
    let file: File = toml::from_str(text)?;
    let Some(mode) = file.eventlog.and_then(|e| e.mode) else {
        return Ok(text.into());
    };
    let span = mode.span();
    match (mode.get_ref().is_integer(), text.get(span.clone())) {
        (true, Some(token)) => Ok(format!(
            "{}\"{}\"{}",
            &text[..span.start],
            token.trim(),
            &text[span.end..]
        )
        .into()),
        // A string is read as it is; another type is refused by the schema.
        _ => Ok(text.into()),
    }
}

/// Merges `src` into `dst`: tables recursively, arrays appended, other
/// values replaced. A section that may be one table or an array of them
/// (`[metrics]` and `[[metrics]]`) is appended either way.
fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (k, v) in src {
        let one_or_many = k == "metrics";
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Array(d)), toml::Value::Array(s)) => d.extend(s),
            (Some(toml::Value::Array(d)), toml::Value::Table(s)) if one_or_many => {
                d.push(toml::Value::Table(s))
            }
            (Some(toml::Value::Table(d)), toml::Value::Array(s)) if one_or_many => {
                let mut all = vec![toml::Value::Table(std::mem::take(d))];
                all.extend(s);
                dst.insert(k, toml::Value::Array(all));
            }
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timeout;

    #[test]
    fn defaults_are_1x_defaults() {
        let c = Config::parse("").expect("empty config is valid");
        assert_eq!(c.udp.listen.to_string(), ":8127");
        assert_eq!(c.tcp.listen.to_string(), ":8127");
        assert_eq!(c.http.listen.to_string(), ":8080");
        assert_eq!(c.database.filename, "lovebeat.db");
        assert_eq!(c.database.interval, 60);
        assert_eq!(c.mail.server.to_string(), "localhost:25");
        assert_eq!(c.mail.from, "lovebeat@example.com");
        assert_eq!(c.eventlog_mode(), 0o644);
        assert!(c.metrics.is_empty());
        assert_eq!(c.public_url(), None);
    }

    #[test]
    fn reads_a_1x_config() {
        let c = Config::parse(
            r#"
[general]
public_url = "http://lb.example.com"
[mail]
server = "smtp:25"
[metrics]
server = "localhost:8125"
[[views]]
name = "all"
pattern = "*"
alerts = ["ops"]
[alerts.ops]
mail = "ops@example.com"
[eventlog]
path = "/tmp/x"
mode = 600
"#,
        )
        .expect("valid");
        assert_eq!(c.public_url().as_deref(), Some("http://lb.example.com/"));
        assert_eq!(c.alarm_defs()[0].includes, vec!["*".to_string()]);
        assert_eq!(c.metrics[0].server, "localhost:8125");
        assert_eq!(c.eventlog_mode(), 0o600);
    }

    #[test]
    fn the_auto_algorithm_is_one_of_those_that_exist() {
        use crate::engine::auto::Algorithm;
        let algo = |a: &str| Config::parse(&format!("[auto]\nalgorithm = \"{a}\"\n"));
        assert_eq!(
            algo("robust").expect("robust").engine_config().algorithm,
            Algorithm::Robust
        );
        assert_eq!(
            Config::parse("").expect("empty").engine_config().algorithm,
            Algorithm::Lovebeat1
        );
        let e = algo("best").expect_err("unknown").to_string();
        assert!(e.contains(":2:") && e.contains("lovebeat1, robust"), "{e}");
    }

    #[test]
    fn eventlog_mode_is_octal_as_written() {
        let mode = |m: &str| {
            Config::parse(&format!("[eventlog]\nmode = {m}\n")).map(|c| c.eventlog_mode())
        };
        assert_eq!(mode("644").expect("1.x digits"), 0o644);
        assert_eq!(mode("0o644").expect("TOML octal"), 0o644);
        assert_eq!(mode("0o600").expect("TOML octal"), 0o600);
        assert_eq!(
            mode("0644").err().map(|_| ()),
            Some(()),
            "TOML refuses a leading zero"
        );
        assert_eq!(mode("\"0640\"").expect("a string"), 0o640);
        let e = mode("999").expect_err("not octal").to_string();
        assert!(e.contains(":2:") && e.contains("octal"), "{e}");
        assert!(mode("0x1ff").is_err());
        assert!(mode("-1").is_err());
        assert!(mode("0o17777").is_err());
    }

    #[test]
    fn errors_about_secrets_do_not_quote_them() {
        for text in [
            "[mail]\npassword = 123456789\n",
            "[[notify]]\nlovebeat = \"http://x\"\nkey = 123456789\n",
            "[mailgun]\napi_key = 123456789\n",
            "[alerts.a]\nwebhook = 123456789\n",
            "[http]\nwrite_keys = 123456789\n",
            "[http]\nread_keys = [123456789]\n",
        ] {
            let e = Config::parse(text).expect_err("wrong type").to_string();
            assert!(!e.contains("123456789"), "{e}");
            assert!(e.contains(":2:") || e.contains(":3:"), "{e}");
        }
        // One key as a string is a list of one.
        let c = Config::parse("[http]\nwrite_keys = \"w\"\nread_keys = \"r\"\n").expect("valid");
        assert_eq!(
            (c.http.write_keys, c.http.read_keys),
            (vec!["w".to_string()], vec!["r".to_string()])
        );
    }

    #[test]
    fn an_empty_or_padded_key_is_refused_by_position() {
        let keys = |k: &str| Config::parse(&format!("[http]\n{k}\n"));
        let e = keys("write_keys = [\"a\", \"\"]")
            .expect_err("empty")
            .to_string();
        assert!(
            e.contains("write_keys") && e.contains("key 2 of 2") && e.contains("empty"),
            "{e}"
        );
        let e = keys("read_keys = [\"  \"]").expect_err("blank").to_string();
        assert!(e.contains("read_keys") && e.contains("key 1 of 1"), "{e}");
        let e = keys("read_keys = [\"ok\", \" padded\"]")
            .expect_err("padded")
            .to_string();
        assert!(e.contains("key 2 of 2") && e.contains("spaces"), "{e}");
        assert!(keys("write_keys = [\"w\"]\nread_keys = [\"r\"]").is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err =
            Config::parse("[database]\nfilename = \"x\"\nbogus = 1\n").expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains(":3:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let msg = Config::parse("[database]\ninterval = \"often\"\n")
            .expect_err("type")
            .to_string();
        assert!(msg.contains(":2:") && msg.contains("interval"), "{msg}");
    }

    #[test]
    fn alarm_with_unknown_alert_is_refused() {
        let e = Config::parse("[[alarms]]\nname = \"a\"\npattern = \"*\"\nalerts = [\"x\"]\n");
        assert!(e
            .expect_err("unknown alert")
            .to_string()
            .contains("alerts.x"));
    }

    #[test]
    fn alert_timers_beyond_a_year_are_refused() {
        for (cfg, key) in [
            (
                "[alerts.a]\nwebhook = \"http://h/\"\nrepeat = \"400d\"\n",
                "repeat",
            ),
            (
                "[alerts.a]\nwebhook = \"http://h/\"\ngroup_interval = \"400d\"\n",
                "group_interval",
            ),
            ("[flapping]\nwindow = \"400d\"\n", "window"),
        ] {
            let msg = Config::parse(cfg).expect_err(key).to_string();
            assert!(msg.contains(key) && msg.contains("365d"), "{msg}");
        }
        Config::parse("[alerts.a]\nwebhook = \"http://h/\"\nrepeat = \"365d\"\n").expect("a year");
    }

    #[test]
    fn service_defaults_take_durations() {
        let c = Config::parse(
            "[[services]]\npattern = \"deprecated.*\"\ntimeout = 0\n[[services]]\npattern = \"x.*\"\ntimeout = \"1h\"\n",
        )
        .expect("valid");
        let d: Vec<(String, Timeout)> = c
            .engine_config()
            .service_defaults
            .into_iter()
            .map(|d| (d.pattern, d.timeout))
            .collect();
        assert_eq!(
            d,
            vec![
                ("deprecated.*".into(), Timeout::Always),
                ("x.*".into(), Timeout::After(3_600_000))
            ]
        );
    }

    #[test]
    fn metrics_in_the_main_file_and_in_conf_d_are_both_kept() {
        let mut a: toml::Table = toml::from_str("[metrics]\nserver = \"a:8125\"\n").expect("toml");
        let b: toml::Table = toml::from_str("[[metrics]]\nserver = \"b:8125\"\n").expect("toml");
        merge(&mut a, b);
        let c: toml::Table = toml::from_str("[metrics]\nserver = \"c:8125\"\n").expect("toml");
        merge(&mut a, c);
        let config = Config::from_table(a).expect("valid");
        let servers: Vec<&str> = config.metrics.iter().map(|m| m.server.as_str()).collect();
        assert_eq!(servers, ["a:8125", "b:8125", "c:8125"]);
    }

    #[test]
    fn empty_credentials_are_none_and_an_unreadable_config_dir_is_an_error() {
        let c = Config::parse(
            "[mail]\nusername = \"\"\npassword = \"\"\n[[notify]]\nlovebeat = \"http://x\"\nkey = \"\"\n",
        )
        .expect("valid");
        assert_eq!((c.mail.username, c.mail.password), (None, None));
        assert_eq!(c.notify[0].key, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").expect("file");
        assert!(matches!(
            Config::load(None, &file),
            Err(ConfigError::Io { .. })
        ));
        assert!(Config::load(None, &dir.path().join("missing")).is_ok());
    }

    #[test]
    fn merge_appends_arrays_and_replaces_scalars() {
        let mut a: toml::Table =
            toml::from_str("[http]\nlisten=\":1\"\n[[alarms]]\nname=\"a\"\npattern=\"*\"")
                .expect("toml");
        let b: toml::Table =
            toml::from_str("[http]\nlisten=\":2\"\n[[alarms]]\nname=\"b\"\npattern=\"*\"")
                .expect("toml");
        merge(&mut a, b);
        let c = Config::from_table(a).expect("valid");
        assert_eq!(c.http.listen.to_string(), ":2");
        assert_eq!(c.alarms.len(), 2);
    }

    #[test]
    fn no_alerter_secret_shows_in_the_configs_debug_output() {
        let text = "[alerts.ops]\n\
            slack_webhook_url = \"https://hooks.example.com/S1-SLACKSECRET\"\n\
            [alerts.ops.pagerduty]\nrouting_key = \"S2-PD\"\n\
            [alerts.ops.opsgenie]\napi_key = \"S3-OG\"\n\
            [alerts.ops.templated_webhook]\nurl = \"https://x.example.com/S4-TW\"\nheaders = { X-Key = \"S5-H\" }\n\
            [alerts.ops.discord]\nwebhook_url = \"https://discord.com/api/webhooks/1/S6-DC\"\n\
            [alerts.ops.teams]\nwebhook_url = \"https://t.example.com/w?sig=S7-TM\"\n\
            [alerts.ops.telegram]\nbot_token = \"S8-TG\"\nchat_id = -100\n\
            [alerts.ops.ntfy]\ntopic = \"t\"\ntoken = \"S9-NT\"\n\
            [alerts.ops.pushover]\ntoken = \"S10-PO\"\nuser = \"S11-PU\"\n\
            [alerts.ops.gotify]\nurl = \"https://g.example.com\"\ntoken = \"S12-GO\"\n\
            [alerts.ops.matrix]\nhomeserver = \"https://m.example.org\"\nroom_id = \"!r:m\"\naccess_token = \"S13-MX\"\n";
        let text = format!(
            "{text}[slack]\nwebhook_url = \"https://hooks.slack.com/services/S14-SL\"\n\
             [mail]\nusername = \"u\"\npassword = \"S15-PW\"\n\
             [mailgun]\napi_key = \"S16-MG\"\n"
        );
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            c.alerts["ops"], c.slack, c.mail, c.mailgun
        );
        assert!(
            shown.contains("pagerduty") && shown.contains("matrix"),
            "{shown}"
        );
        for i in 1..=16 {
            assert!(
                !shown.contains(&format!("S{i}-")),
                "secret {i} shown: {shown}"
            );
        }
    }

    #[test]
    fn the_documented_example_config_is_valid_uncommented() {
        // lovebeat.cfg: '##' lines are prose, '#' lines are settings.
        let text: String = include_str!("../lovebeat.cfg")
            .lines()
            .filter(|l| !l.starts_with("##"))
            .map(|l| l.strip_prefix('#').unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.http.listen.to_string(), ":8080");
        assert_eq!(c.services.len(), 2);
        assert!(c.alerts["ops"].repeat.is_some());
        let ops = &c.alerts["ops"];
        assert!(
            ops.pagerduty.is_some() && ops.opsgenie.is_some() && ops.templated_webhook.is_some()
        );
        assert!(ops.discord.is_some() && ops.teams.is_some() && ops.telegram.is_some());
        assert!(ops.ntfy.is_some() && ops.pushover.is_some());
        assert!(ops.gotify.is_some() && ops.matrix.is_some());
        assert_eq!(c.alarms[1].depends_on, vec!["network-$name".to_string()]);
        assert_eq!(c.self_alarm.alerts, ["ops"]);
        assert_eq!(c.limits.max_services, 20_000_000);
        assert_eq!((c.flapping.start, c.flapping.stop), (6, 2));
        assert_eq!(
            c.alerts["ops"].group_interval(),
            crate::sinks::alerts::DEFAULT_GROUP_INTERVAL
        );
    }
}
