//! The database file: 1.x's format, read and written (README,
//! "Configuration"; docs/ARCHITECTURE.md, "Persistence").
//!
//! A gzip stream of lines `SERV\t<service JSON>\n` and `ALARM\t<alarm
//! JSON>\n`. Lines are parsed with simd-json; a save writes a temporary
//! file, fsyncs it, renames it over the old one and fsyncs the directory, so
//! a crash leaves either the old or the new file, never a partial one.

use std::path::PathBuf;

mod format;
mod load;
mod save;
#[cfg(test)]
mod tests;

pub use format::decode;
pub use load::{load, MAX_RATIO, RATIO_FLOOR};
pub use save::{save, Saved};

use crate::engine::{StoredAlarm, StoredService};

/// A database that exists but cannot be used; the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Reading or decompressing failed.
    #[error("database {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A `SERV` or `ALARM` line is malformed.
    #[error("database {path}, line {line}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// 1-based line in the decompressed stream.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The content decompresses to more than a database could: a gzip
    /// bomb, or not a database.
    #[error("database {path} cannot be read: {read} compressed bytes decompress to {content} bytes or more, over {MAX_RATIO} times as many (plus {} MiB), which no lovebeat database does: damaged, or not a database", RATIO_FLOOR >> 20)]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Compressed bytes read.
        read: u64,
        /// What they decompressed to, when the read stopped.
        content: u64,
    },
    /// The records would not fit in memory.
    #[error("database {path} cannot be read: no memory for its records after line {line}")]
    NoMemory {
        /// The file.
        path: PathBuf,
        /// The line reached.
        line: usize,
    },
}

/// What a load found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The services.
    pub services: Vec<StoredService>,
    /// The alarms.
    pub alarms: Vec<StoredAlarm>,
    /// When it was saved (its `SAVED` record; none in a 1.x file).
    pub saved_at: Option<i64>,
}
