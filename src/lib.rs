//! lovebeat: a fast heartbeat monitor, compatible with Lovebeat 1.x.
//!
//! The binary in `main.rs` is a thin layer over this crate, which tests and
//! benches use directly.

#![warn(missing_docs, unreachable_pub)]

pub mod background;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod db;
pub mod engine;
pub mod escape;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod history;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod logging;
pub mod maintenance;
pub mod pattern;
pub mod prefetch;
pub mod redact;
pub mod reports;
pub mod settings;
pub mod sinks;
pub mod status;
pub mod trouble;
