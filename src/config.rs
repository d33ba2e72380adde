//! Configuration: TOML files with 1.x's sections and defaults (SPEC §9).
//!
//! The main file (`/etc/lovebeat.cfg` if it exists, or `--config`) is read
//! first, then every non-hidden file of the config directory in name order.
//! Tables merge key by key, arrays of tables (`[[alarms]]`, ...) are
//! appended, and a later scalar replaces an earlier one. Each file is checked
//! on its own first, so an error names its file, line and key.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::{parse_timeout, timeout_from_secs};
use crate::engine::{AlarmDef, EngineConfig, Schedule, ServiceDefaults, Timeout};
use std::sync::Arc;

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
    pub mail: Mail,
    /// Mailgun settings; when `domain` is set, mail goes through Mailgun.
    pub mailgun: Mailgun,
    /// Slack incoming webhook.
    pub slack: Slack,
    /// statsd over UDP.
    pub udp: Udp,
    /// statsd over TCP.
    pub tcp: Listen,
    /// The HTTP API and UI.
    pub http: Http,
    /// Persistence.
    pub database: Database,
    /// statsd metrics out: one section or an array of them.
    #[serde(deserialize_with = "one_or_many")]
    pub metrics: Vec<Metrics>,
    /// Alarms.
    pub alarms: Vec<AlarmConfig>,
    /// 1.x's older name for alarms.
    pub views: Vec<AlarmConfig>,
    /// Alert definitions referenced by alarms.
    pub alerts: BTreeMap<String, AlertConfig>,
    /// The JSON event log.
    pub eventlog: Eventlog,
    /// Other lovebeats to report our own health to.
    pub notify: Vec<Notify>,
    /// Defaults for new services.
    pub services: Vec<ServiceDefault>,
    /// The automatic timeout algorithm.
    pub auto: Auto,
}

/// `[general]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// See `Config::public_url`.
    pub public_url: Option<String>,
}

/// `[mail]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mail {
    /// SMTP server as host:port.
    pub server: String,
    /// Sender address.
    pub from: String,
    /// SMTP user name, if the server needs one.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<String>,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
}

impl Default for Mail {
    fn default() -> Self {
        Mail {
            server: "localhost:25".into(),
            from: "lovebeat@example.com".into(),
            username: None,
            password: None,
            tls: "none".into(),
        }
    }
}

/// `[mailgun]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mailgun {
    /// Sending domain; empty disables Mailgun.
    pub domain: String,
    /// Sender address.
    pub from: String,
    /// API key.
    pub api_key: String,
    /// API base URL.
    pub api_base: String,
}

impl Default for Mailgun {
    fn default() -> Self {
        Mailgun {
            domain: String::new(),
            from: String::new(),
            api_key: String::new(),
            api_base: "https://api.mailgun.net".into(),
        }
    }
}

/// `[slack]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Slack {
    /// Incoming webhook URL.
    pub webhook_url: String,
}

/// A listening address such as `:8080` or `127.0.0.1:8080`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address; an empty host means every interface.
    pub listen: String,
}

/// `[http]`: where the API and UI listen, and the API keys (SPEC §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address; an empty host means every interface.
    pub listen: String,
    /// Keys allowed to change state; when set, every change needs one.
    #[serde(deserialize_with = "one_or_many_strings")]
    pub write_keys: Vec<String>,
    /// Keys allowed to read; when set, reading needs a read or write key.
    #[serde(deserialize_with = "one_or_many_strings")]
    pub read_keys: Vec<String>,
    /// Host names lovebeat answers to (besides IP addresses, `localhost`
    /// and `public_url`'s host); empty: any.
    #[serde(deserialize_with = "one_or_many_strings")]
    pub allowed_hosts: Vec<String>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: ":8080".into(),
            write_keys: Vec::new(),
            read_keys: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// `[udp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Udp {
    /// Address; an empty host means every interface.
    pub listen: String,
    /// Number of `SO_REUSEPORT` sockets, 0 = one per core.
    pub sockets: usize,
    /// Receive buffer per socket, bytes: what absorbs a burst (every cron
    /// job beating at the top of the minute) while the reader catches up.
    pub receive_buffer: usize,
}

impl Default for Udp {
    fn default() -> Self {
        Udp {
            listen: ":8127".into(),
            sockets: 0,
            receive_buffer: 32 << 20,
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// Database file.
    pub filename: String,
    /// Seconds between saves.
    pub interval: u64,
    /// `s3://bucket/key` to download on start and upload after saves.
    pub remote_s3_url: String,
    /// Region of the bucket.
    pub remote_s3_region: String,
    /// Endpoint of an S3-compatible store.
    pub remote_s3_endpoint: String,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            filename: "lovebeat.db".into(),
            interval: 60,
            remote_s3_url: String::new(),
            remote_s3_region: String::new(),
            remote_s3_endpoint: String::new(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// statsd server host:port; empty = off.
    pub server: String,
    /// Prefix of every metric name.
    pub prefix: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            server: String::new(),
            prefix: "lovebeat".into(),
        }
    }
}

/// `[[alarms]]`.
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

/// `[alerts.<name>]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Comma-separated addresses.
    pub mail: Option<String>,
    /// URL to POST to.
    pub webhook: Option<String>,
    /// Slack channel.
    pub slack_channel: Option<String>,
    /// Executable to run.
    pub script: Option<String>,
    /// Send again every this long while the alarm stays ERROR.
    pub repeat: Option<TimeoutValue>,
}

/// `[eventlog]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Eventlog {
    /// File to append to; empty = off.
    pub path: String,
    /// File mode.
    pub mode: FileMode,
}

impl Default for Eventlog {
    fn default() -> Self {
        Eventlog {
            path: String::new(),
            mode: FileMode(0o644),
        }
    }
}

/// A file mode, written in octal: bare digits as in 1.x (`mode = 644`) or
/// TOML's octal integer (`mode = 0o644`). TOML reads both as integers
/// (644 and 420), so the loader hands over the token as written, and
/// this reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    /// Reads a mode as written in the file: `644`, `0644` or `0o644`.
    pub fn from_token(token: &str) -> Result<FileMode, String> {
        let digits = token.strip_prefix("0o").unwrap_or(token).replace('_', "");
        match u32::from_str_radix(&digits, 8) {
            Ok(m) if m <= 0o7777 && !digits.is_empty() && !digits.starts_with('+') => {
                Ok(FileMode(m))
            }
            _ => Err(format!(
                "mode = {token}: write the mode in octal, as 644 or 0o644"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FileMode, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            /// The token as written (what the loader passes on).
            Token(String),
            /// An integer whose token is not known: its decimal digits
            /// are the octal digits, as 1.x read them.
            Digits(i64),
        }
        let token = match Written::deserialize(d)? {
            Written::Token(t) => t,
            Written::Digits(n) => n.to_string(),
        };
        FileMode::from_token(&token).map_err(serde::de::Error::custom)
    }
}

/// `[[notify]]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Notify {
    /// Base URL of the other lovebeat.
    pub lovebeat: String,
    /// API key for a peer that requires one.
    pub key: Option<String>,
}

/// `[[services]]`: defaults for new services matching `pattern`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDefault {
    /// Which services.
    pub pattern: String,
    /// Seconds, a duration string or "auto".
    pub timeout: Option<TimeoutValue>,
    /// A cron schedule instead of a timeout (SPEC §10).
    pub schedule: Option<String>,
    /// The schedule's IANA zone (default UTC).
    pub tz: Option<String>,
    /// Grace after a fire time (default 5 minutes).
    pub grace: Option<TimeoutValue>,
    /// Longest allowed run.
    pub max_runtime: Option<TimeoutValue>,
}

impl ServiceDefault {
    /// The engine's form, or why it is invalid.
    pub fn to_engine(&self) -> Result<ServiceDefaults, String> {
        let grace = match &self.grace {
            Some(g) => Some(g.to_duration_ms()? as i64),
            None => None,
        };
        let schedule = Schedule::from_settings(
            self.schedule.as_deref(),
            self.tz.as_deref(),
            grace,
            self.timeout.is_some(),
        )
        .map_err(|e| e.to_string())?;
        let timeout = match (&self.timeout, schedule) {
            (_, Some(s)) => Timeout::Schedule(Arc::new(s)),
            (Some(t), None) => t.to_timeout()?,
            (None, None) if self.max_runtime.is_some() => Timeout::None,
            (None, None) => return Err("needs a timeout or a schedule".into()),
        };
        let max_runtime = match &self.max_runtime {
            Some(m) => Some(m.to_duration_ms()?).filter(|m| *m > 0),
            None => None,
        };
        Ok(ServiceDefaults {
            pattern: self.pattern.clone(),
            timeout,
            max_runtime,
        })
    }
}

/// A timeout written as a number of seconds or as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeoutValue {
    /// Whole seconds.
    Secs(i64),
    /// `auto`, a duration or decimal seconds.
    Text(String),
}

impl TimeoutValue {
    /// The timeout it stands for.
    pub fn to_timeout(&self) -> Result<Timeout, String> {
        match self {
            TimeoutValue::Secs(s) => timeout_from_secs(*s),
            TimeoutValue::Text(t) => parse_timeout(t),
        }
        .map_err(|e| e.to_string())
    }

    /// As a plain duration (ms): a number is seconds.
    pub fn to_duration_ms(&self) -> Result<u64, String> {
        match self {
            TimeoutValue::Secs(s) if *s >= 0 => Ok(s.saturating_mul(1000) as u64),
            TimeoutValue::Secs(s) => Err(format!("duration {s} must be 0 or more")),
            TimeoutValue::Text(t) => {
                crate::duration::parse_duration_input(t).map_err(|e| e.to_string())
            }
        }
    }
}

/// `[auto]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auto {
    /// Algorithm for automatic timeouts.
    pub algorithm: String,
}

impl Default for Auto {
    fn default() -> Self {
        Auto {
            algorithm: "lovebeat1".into(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            listen: ":8080".into(),
        }
    }
}

/// Accepts `[metrics]` or `[[metrics]]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Metrics>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Metrics),
        Many(Vec<Metrics>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(m) => vec![m],
        OneOrMany::Many(v) => v,
    })
}

/// Accepts one string where a list of them is expected (`write_keys =
/// "k"`): a likely slip, and the type error would quote the key.
fn one_or_many_strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    match OneOrMany::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(
            "expected a string or a list of strings",
        )),
    }
}

/// The TCP default differs from HTTP's; serde's field default cannot say
/// that, so the loader fills it in when `[tcp]` is absent.
const TCP_DEFAULT: &str = ":8127";

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
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut extra: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .collect();
            extra.sort();
            files.extend(extra);
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
        Config::from_table(merged)
    }

    /// Builds and validates a configuration from one TOML text (tests).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table = check_file(Path::new("<config>"), text)?;
        Config::from_table(table)
    }

    fn from_table(mut table: toml::Table) -> Result<Config, ConfigError> {
        if !table.contains_key("tcp") {
            let mut tcp = toml::Table::new();
            tcp.insert("listen".into(), TCP_DEFAULT.into());
            table.insert("tcp".into(), tcp.into());
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (what, addr) in [
            ("[udp] listen", &self.udp.listen),
            ("[tcp] listen", &self.tcp.listen),
            ("[http] listen", &self.http.listen),
        ] {
            listen_addr(addr).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
        }
        for a in self.alarms.iter().chain(&self.views) {
            if a.name.is_empty() {
                return Err(ConfigError::Invalid(
                    "[[alarms]] section without a name".into(),
                ));
            }
            if a.pattern.is_none() && a.includes.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "alarm '{}' has neither pattern nor includes",
                    a.name
                )));
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
        for s in &self.services {
            s.to_engine().map_err(|e| {
                ConfigError::Invalid(format!("[[services]] pattern '{}': {e}", s.pattern))
            })?;
        }
        for (name, alert) in &self.alerts {
            if let Some(r) = &alert.repeat {
                match r.to_duration_ms() {
                    Ok(ms) if ms >= 1000 => {}
                    Ok(_) => {
                        return Err(ConfigError::Invalid(format!(
                            "[alerts.{name}] repeat must be at least 1s"
                        )))
                    }
                    Err(e) => {
                        return Err(ConfigError::Invalid(format!("[alerts.{name}] repeat: {e}")))
                    }
                }
            }
        }
        crate::engine::membership::check_dependencies(&self.alarm_defs())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.check_keys()?;
        if self.auto.algorithm != "lovebeat1" {
            return Err(ConfigError::Invalid(format!(
                "[auto] algorithm '{}' is unknown (available: lovebeat1)",
                self.auto.algorithm
            )));
        }
        if !["none", "starttls", "tls"].contains(&self.mail.tls.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "[mail] tls = '{}': use none, starttls or tls",
                self.mail.tls
            )));
        }
        Ok(())
    }

    /// The event log's file mode.
    pub fn eventlog_mode(&self) -> u32 {
        self.eventlog.mode.0
    }

    /// An empty key would be a key anyone could guess, and one with
    /// spaces around it could never be presented (a presented key is
    /// trimmed): both are mistakes, refused rather than run with.
    fn check_keys(&self) -> Result<(), ConfigError> {
        for (what, keys) in [
            ("write_keys", &self.http.write_keys),
            ("read_keys", &self.http.read_keys),
        ] {
            for (i, key) in keys.iter().enumerate() {
                let problem = if key.trim().is_empty() {
                    "is empty"
                } else if key.trim() != key {
                    "has spaces around it, so it could never be presented"
                } else {
                    continue;
                };
                return Err(ConfigError::Invalid(format!(
                    "[http] {what}: key {} of {} {problem}; remove it or write the key",
                    i + 1,
                    keys.len()
                )));
            }
        }
        Ok(())
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

    /// The alarms, `[[views]]` included.
    pub fn alarm_defs(&self) -> Vec<AlarmDef> {
        self.alarms
            .iter()
            .chain(&self.views)
            .map(|a| AlarmDef {
                name: a.name.clone(),
                includes: a.pattern.iter().chain(&a.includes).cloned().collect(),
                excludes: a.excludes.clone(),
                alerts: a.alerts.clone(),
                depends_on: a.depends_on.clone(),
            })
            .collect()
    }

    /// What the engine is built from.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            alarms: self.alarm_defs(),
            service_defaults: self
                .services
                .iter()
                // validate() checked every entry.
                .filter_map(|s| s.to_engine().ok())
                .collect(),
        }
    }
}

/// Parses a 1.x-style listen address; `:port` means every interface.
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    full.to_socket_addrs()
        .map_err(|e| format!("'{text}' is not a valid address: {e}"))?
        .next()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

/// Keys whose values are secrets: an error about them never quotes them.
const SECRET_KEYS: [&str; 7] = [
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
        if SECRET_KEYS.contains(&key.as_str()) {
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
/// values replaced.
fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
            (Some(toml::Value::Array(d)), toml::Value::Array(s)) => d.extend(s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_1x_defaults() {
        let c = Config::parse("").expect("empty config is valid");
        assert_eq!(c.udp.listen, ":8127");
        assert_eq!(c.tcp.listen, ":8127");
        assert_eq!(c.http.listen, ":8080");
        assert_eq!(c.database.filename, "lovebeat.db");
        assert_eq!(c.database.interval, 60);
        assert_eq!(c.mail.server, "localhost:25");
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
    fn merge_appends_arrays_and_replaces_scalars() {
        let mut a: toml::Table =
            toml::from_str("[http]\nlisten=\":1\"\n[[alarms]]\nname=\"a\"\npattern=\"*\"")
                .expect("toml");
        let b: toml::Table =
            toml::from_str("[http]\nlisten=\":2\"\n[[alarms]]\nname=\"b\"\npattern=\"*\"")
                .expect("toml");
        merge(&mut a, b);
        let c = Config::from_table(a).expect("valid");
        assert_eq!(c.http.listen, ":2");
        assert_eq!(c.alarms.len(), 2);
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
        assert_eq!(c.http.listen, ":8080");
        assert_eq!(c.services.len(), 2);
        assert!(c.alerts["ops"].repeat.is_some());
        assert_eq!(c.alarms[1].depends_on, vec!["network-$name".to_string()]);
    }
}
