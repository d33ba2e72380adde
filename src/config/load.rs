//! Reading the configuration files: the main file, then `conf.d` in name
//! order, merged table by table; each file is checked on its own first,
//! so an error names its file, line and key, and never quotes a secret.

use std::path::Path;

use serde::Deserialize;

use super::Config;
use crate::settings::ConfigError;

/// The default main configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/lovebeat.cfg";
/// The default directory of extra configuration files.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/lovebeat.conf.d";

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

    pub(super) fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }
}

/// Keys whose values are secrets: an error about them never quotes them
/// (the alerters' tables say theirs: `alerts::is_secret_key`).
const SECRET_KEYS: [&str; 9] = [
    "slack_webhook_url",
    "write_keys",
    "read_keys",
    "key",
    "password",
    "api_key",
    "webhook",
    "webhook_url",
    "webhooks",
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
pub(super) fn merge(dst: &mut toml::Table, src: toml::Table) {
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
