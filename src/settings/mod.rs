//! The vocabulary every configuration section is written in: the error a
//! section's check returns, listening addresses, durations and the serde
//! helpers for 1.x's loose forms.
//!
//! This is the bottom layer: it imports nothing of lovebeat's, so each
//! component can define its own section with these types and the
//! configuration (`config/`, at the top) can gather the sections
//! without a loop between them.

use std::path::PathBuf;

use serde::Deserialize;

pub mod duration;
mod listen;

pub use listen::{BadListenAddr, ListenAddr};

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
