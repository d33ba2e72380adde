//! Subscribers to the engine's events and its state: each sink is its own
//! task, added without touching the engine.

pub mod alerts;
pub mod eventlog;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod persistence;
pub mod s3;
