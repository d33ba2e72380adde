//! The heart of lovebeat: services, alarms and deadlines. No I/O in here.
//!
//! [`Engine`] is a cheap `Clone` handle with the operations every input
//! uses (a beat, a timeout, a mute, a delete) and the reads every view
//! uses. A beat goes: [`Engine::change`] → `table::with_entry` (one hash,
//! one shard lock, one probe) → `Service::apply` → `settle` (the state
//! rule, counts, service events) → `alarms` (membership and incidents)
//! → `expiry::arm` (the timer wheel, only when the deadline moved
//! earlier). The files, in that order:
//!
//! - `table.rs`: the sharded service map and every `unsafe` of the engine;
//! - `service.rs`, `timeout.rs`, `job.rs`, `auto.rs`: one service's record,
//!   its state machine, schedules and learned timeouts;
//! - `alarms.rs`: alarm records and how members join, leave and change
//!   them (incidents); `membership.rs`: which alarms a name belongs to;
//! - `expiry.rs` and `wheel.rs`: deadlines and the task that expires them;
//! - `events.rs` and `watch.rs`: what the engine tells its sinks;
//! - `queries.rs`: the reads of the API, views and saves;
//! - `restore.rs`: loading a database at start.
//!
//! # Lock order
//!
//! A service shard's lock, then an alarm shard's lock (then, briefly, the
//! queue of alarms with transitions waiting for the alert dispatcher),
//! then the timers' mutex; never the other way. A change takes its service's shard lock,
//! settles the service, updates its alarms (each under its own shard lock,
//! one at a time) and arms the wheel, all before releasing the service's
//! shard. The expiry task takes the timers alone, releases them, then
//! expires each due service as a change does. Events are published while
//! the lock of what they describe is held, so the events of one service or
//! one alarm are in order.

mod adopt;
pub mod alarms;
mod announce;
pub mod auto;
pub mod config;
pub mod events;
mod expiry;
pub mod job;
pub mod journal;
pub mod membership;
mod orphans;
mod queries;
mod restore;
pub mod service;
mod table;
pub mod timeout;
pub mod timeout_text;
mod watch;
pub mod wheel;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use thin_vec::ThinVec;
use tokio::sync::{broadcast, Notify};

use crate::pattern::PatternSet;
pub use adopt::ExpiryGate;
pub use alarms::{AlarmView, Transition};
pub use announce::MAX_PENDING;
pub use config::{AlarmConfig, AutoConfig, EngineConfig, ServiceDefaults};
pub use events::{Event, EventKind, JobRun};
pub use job::{JobFailure, Schedule};
pub use membership::{AlarmDef, AlarmMatcher};
pub use restore::{LoadReport, StoredAlarm, StoredService};
pub use service::{Name, Service, ServiceView, State};
pub use table::TableHasher;
pub use timeout::{Timeout, TIMEOUT_AUTO, TIMEOUT_NONE, TIMEOUT_SCHEDULE};
pub use watch::{BeatWatch, Beaten, ServiceWatch};

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use expiry::Timers;
use table::ServiceMap;

/// Longest accepted service name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Events buffered per subscriber before the slowest one starts losing the
/// oldest.
const EVENT_CAPACITY: usize = 1 << 16;
/// Shards of the service map: many, so a save holds each one only briefly.
const SHARDS: usize = 256;

/// True for a valid service name (README, "Sending beats"):
/// `[a-z0-9._-]+`, at most 255 bytes, and not dots only (so
/// `/api/services/..` can never name a service).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        // The first byte settles it for nearly every name.
        && (name[0] != b'.' || name.iter().any(|c| *c != b'.'))
}

/// The names lovebeat reports its own trouble under (`lovebeat.self.*`,
/// README "Watching lovebeat itself"): made by lovebeat only, never by
/// input, and never refused for lack of room.
pub const INTERNAL_PREFIX: &str = "lovebeat.self.";

/// The built-in alarm of lovebeat's own trouble; its pattern is
/// `lovebeat.self.*`. The engine treats it apart (it is never refused for
/// room, and an alarm of that name cannot be configured), so the name is
/// the engine's; `crate::trouble` feeds it.
pub const SELF_ALARM: &str = "lovebeat.self";

/// True for a name in lovebeat's own namespace ([`INTERNAL_PREFIX`]).
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// Why an engine operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The name is not a valid service name ([`valid_name`]).
    #[error(
        "invalid name '{0}': use lower-case letters, digits, '.', '_' and '-', not dots only (at most 255 bytes)"
    )]
    InvalidName(String),
    /// An alarm cannot be deleted while it has services.
    #[error("alarm '{0}' still has services")]
    AlarmNotEmpty(String),
    /// `[limits] max_services` is reached: a new name is refused, existing
    /// services keep working.
    #[error(
        "lovebeat holds its maximum of {0} services ([limits] max_services): '{1}' was not created"
    )]
    Full(usize, String),
}

/// A job run that failed, as reported by a client (README, "Cron jobs and
/// scripts").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailReport {
    /// The run's exit code, when the client knows it.
    pub exit_code: Option<i32>,
    /// The tail of the run's output (at most [`job::OUTPUT_LIMIT`] bytes).
    pub output: String,
}

/// A change to one service, as any input asks for it (a statsd line, an
/// HTTP request, the client), applied in this order: timeout (a schedule
/// included), `max_runtime`, start, fail, beat. A plain beat allocates
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Set the timeout; a schedule replaces it, any other clears a schedule.
    pub timeout: Option<Timeout>,
    /// Set the longest allowed run (ms); 0 clears it.
    pub max_runtime: Option<u64>,
    /// A run started.
    pub start: bool,
    /// A run failed.
    pub fail: Option<FailReport>,
    /// A beat.
    pub beat: bool,
}

impl Change {
    /// A beat and nothing else.
    pub fn beat() -> Change {
        Change {
            beat: true,
            ..Change::default()
        }
    }

    /// A new timeout and nothing else.
    pub fn timeout(timeout: Timeout) -> Change {
        Change {
            timeout: Some(timeout),
            ..Change::default()
        }
    }
}

/// The run `change` ends on `svc`, if it ends one: a fail ends a run
/// (started or not), a beat ends a started one.
fn job_run(svc: &Service, change: &Change, name: &str) -> Option<JobRun> {
    let job = svc.job.as_deref();
    let started = job.filter(|j| j.running).map(|j| j.started_at);
    // A start in the same change begins a new run: nothing ended.
    // lovebeat's own trouble is reported as fails, but is no job.
    if change.start || is_internal(name) {
        return None;
    }
    let ran_too_long = started.is_some()
        && job.is_some_and(|j| {
            j.failed
                && j.last_failure
                    .as_ref()
                    .is_some_and(|f| f.reason.is_some() && f.ts >= j.started_at)
        });
    if let Some(fail) = &change.fail {
        return Some(JobRun {
            name: name.into(),
            started,
            exit_code: fail.exit_code,
            ok: false,
            ran_too_long,
            output: fail.output.clone(),
        });
    }
    (change.beat && started.is_some()).then(|| JobRun {
        name: name.into(),
        started,
        exit_code: Some(0),
        ok: true,
        ran_too_long,
        output: String::new(),
    })
}

/// What the handles share.
struct Inner {
    services: ServiceMap,
    alarms: DashMap<Arc<str>, alarms::Alarm, TableHasher>,
    matcher: AlarmMatcher,
    /// `[[services]]` patterns; an id indexes `default_settings`.
    default_patterns: PatternSet,
    /// What each `[[services]]` section gives a new service.
    default_settings: Vec<ServiceDefaults>,
    /// How automatic timeouts are learned (`[auto] algorithm`).
    algorithm: auto::Algorithm,
    /// `[limits] max_services`.
    max_services: usize,
    /// `[limits] max_alarms`.
    max_alarms: usize,
    /// Listed alarms in `alarms` (what `max_alarms` bounds; dashmap's `len`
    /// would lock every shard).
    alarm_count: AtomicUsize,
    /// New names refused at `max_services`.
    services_refused: std::sync::atomic::AtomicU64,
    /// Memberships not made at `max_alarms`.
    alarms_refused: std::sync::atomic::AtomicU64,
    /// Services waiting for a place under `max_alarms` (`orphans.rs`).
    orphans: Mutex<orphans::Orphans>,
    /// How many services `orphans` holds, read without its lock.
    orphan_count: AtomicUsize,
    timers: Mutex<Timers>,
    /// Wakes the expiry task when a deadline earlier than its next wake
    /// was armed.
    wake: Notify,
    events: broadcast::Sender<Arc<Event>>,
    /// Alarm transitions waiting for the alert dispatcher: the lossless
    /// path (`announce.rs`).
    announcements: announce::Announcements,
    /// The lossless feeds, each once it is asked for (`journal.rs`).
    journals: [std::sync::OnceLock<Arc<journal::Journal>>; journal::FEEDS],
    /// Services per state, indexed by `State as usize`.
    counts: [AtomicI64; 4],
    /// When this engine started: beats before it add no interval.
    started_at: i64,
    /// Live [`ServiceWatch`]es; service events are published while non-zero.
    service_watchers: AtomicUsize,
    /// Live [`BeatWatch`]es; accepted beats are collected while non-zero.
    beat_watchers: AtomicUsize,
    /// Services beaten since the last [`Engine::take_beaten`].
    beaten: Box<[Mutex<HashSet<Name, TableHasher>>]>,
    /// The maintenance windows (README, "Maintenance windows"): here so
    /// that every reader of alarms (the dispatcher, the API, the views)
    /// finds them where it finds the alarms.
    maintenance: crate::maintenance::Maintenance,
    /// Cluster mode's hold on expiry while a lease is in doubt (`adopt.rs`).
    expiry_gate: std::sync::OnceLock<adopt::ExpiryGate>,
    /// Times the expiry driver found it had been held up while lovebeat was
    /// busy (not suspended): `lovebeat_expiry_held_up_total`.
    held_up: std::sync::atomic::AtomicU64,
}

/// Handle to the engine; clone freely.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// A new, empty engine whose clock started at `now`.
    pub fn new(config: EngineConfig, now: i64) -> Engine {
        let mut default_patterns = PatternSet::default();
        for d in &config.service_defaults {
            default_patterns.add(&d.pattern);
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Engine {
            inner: Arc::new(Inner {
                services: DashMap::with_hasher_and_shard_amount(TableHasher::default(), SHARDS),
                alarms: DashMap::with_hasher(TableHasher::default()),
                matcher: AlarmMatcher::new(config.alarms),
                default_patterns,
                default_settings: config.service_defaults,
                algorithm: config.algorithm,
                max_services: match config.max_services {
                    0 => crate::limits::LimitsConfig::default().max_services,
                    n => n,
                },
                max_alarms: match config.max_alarms {
                    0 => crate::limits::LimitsConfig::default().max_alarms,
                    n => n,
                },
                alarm_count: AtomicUsize::new(0),
                services_refused: Default::default(),
                alarms_refused: Default::default(),
                orphans: Mutex::default(),
                orphan_count: AtomicUsize::new(0),
                timers: Mutex::new(Timers::new(now)),
                wake: Notify::new(),
                events,
                announcements: Default::default(),
                journals: Default::default(),
                counts: Default::default(),
                started_at: now,
                service_watchers: AtomicUsize::new(0),
                beat_watchers: AtomicUsize::new(0),
                beaten: (0..watch::BEATEN_SHARDS)
                    .map(|_| Mutex::new(HashSet::default()))
                    .collect(),
                maintenance: Default::default(),
                expiry_gate: std::sync::OnceLock::new(),
                held_up: Default::default(),
            }),
        }
    }

    /// When the engine started (ms): restart grace counts from here.
    pub fn started_at(&self) -> i64 {
        self.inner.started_at
    }

    /// The maintenance windows: which hold an alarm's alerts now, which
    /// are open or coming (README, "Maintenance windows").
    pub fn maintenance(&self) -> &crate::maintenance::Maintenance {
        &self.inner.maintenance
    }

    /// The compiled alarm configuration.
    pub fn matcher(&self) -> &AlarmMatcher {
        &self.inner.matcher
    }

    /// A receiver of every event from now on. Alarm events always flow;
    /// service events only while a [`ServiceWatch`] lives.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// Records a beat for `name`, creating the service if needed.
    pub fn beat(&self, name: &str, now: i64) -> Result<(), EngineError> {
        self.change(name, Change::beat(), now)
    }

    /// Applies `change` to `name`, creating the service if needed. The hot
    /// path: one shard lock, no allocation for a known name and a beat.
    pub fn change(&self, name: &str, change: Change, now: i64) -> Result<(), EngineError> {
        let hash = table::hash(&self.inner.services, name);
        self.change_hashed(name, hash, change, now)
    }

    /// [`Engine::change`] for a name whose hash ingestion computed already
    /// (to prefetch): one hash, one shard lock and one probe per line, for
    /// a new service as for an existing one.
    pub(crate) fn change_hashed(
        &self,
        name: &str,
        hash: u64,
        change: Change,
        now: i64,
    ) -> Result<(), EngineError> {
        let beat = change.beat;
        let accepted = self.with_service(name, hash, true, now, |svc, started_at| {
            // A run's end is worth a history row: seen here, where the
            // run's start is still known, only when the history is kept.
            let run = self
                .history_journal()
                .and_then(|_| job_run(svc, &change, name));
            let r = svc.apply(change, now, started_at);
            if let Some(run) = run {
                self.record_run(now, run);
            }
            r
        })?;
        if beat && accepted == Some(true) {
            self.note_beat(name, hash);
        }
        Ok(())
    }

    /// First prefetch stage of ingesting a line for `name`: starts loading
    /// the table's control bytes and returns the hash the next stages
    /// ([`Engine::prefetch_entry`], [`Engine::prefetch_history`]) and
    /// [`Engine::change_hashed`] take.
    #[inline]
    pub(crate) fn prefetch_probe(&self, name: &str) -> u64 {
        let hash = table::hash(&self.inner.services, name);
        table::prefetch_control(&self.inner.services, hash);
        hash
    }

    /// Second prefetch stage: the entry (or where a new one will go).
    #[inline]
    pub(crate) fn prefetch_entry(&self, hash: u64) {
        table::prefetch_entry(&self.inner.services, hash);
    }

    /// Third prefetch stage: what an accepted beat writes out of line.
    #[inline]
    pub(crate) fn prefetch_history(&self, name: &str, hash: u64) {
        table::prefetch_history(&self.inner.services, name, hash);
    }

    /// Mutes a service (creating it if needed); idempotent.
    pub fn mute(&self, name: &str, now: i64) -> Result<(), EngineError> {
        self.mute_until(name, None, now)
    }

    /// Mutes a service until `until` (ms; a snooze), or with no end. The
    /// latest request wins; `muted_since` keeps the start of the muting.
    pub fn mute_until(&self, name: &str, until: Option<i64>, now: i64) -> Result<(), EngineError> {
        let hash = table::hash(&self.inner.services, name);
        self.with_service(name, hash, true, now, |svc, _| (svc.mute(until, now), ()))
            .map(|_| ())
    }

    /// Unmutes a service; unknown names are ignored. Idempotent.
    pub fn unmute(&self, name: &str, now: i64) -> Result<(), EngineError> {
        let hash = table::hash(&self.inner.services, name);
        self.with_service(name, hash, false, now, |svc, _| (svc.unmute(), ()))
            .map(|_| ())
    }

    /// Runs `f` on the service (created first if `create`), then settles
    /// its state, alarms, events and deadline. `f` says whether it changed
    /// anything worth an event, and what it returns beside. `None` when the
    /// service did not exist and was not created.
    fn with_service<R>(
        &self,
        name: &str,
        hash: u64,
        create: bool,
        now: i64,
        f: impl FnOnce(&mut Service, i64) -> (bool, R),
    ) -> Result<Option<R>, EngineError> {
        let inner = &*self.inner;
        table::with_entry(
            &inner.services,
            name,
            hash,
            || {
                if !create {
                    return Ok(None);
                }
                if !valid_name(name.as_bytes()) {
                    return Err(EngineError::InvalidName(name.to_string()));
                }
                if self.service_count_fast() >= inner.max_services && !is_internal(name) {
                    inner.services_refused.fetch_add(1, Ordering::Relaxed);
                    return Err(EngineError::Full(inner.max_services, name.to_string()));
                }
                let (joined, refused) = self.resolve_alarms(name);
                let keys: ThinVec<Arc<str>> = joined.iter().map(|(k, _)| k.clone()).collect();
                Ok(Some((self.new_service(name, keys, now), (joined, refused))))
            },
            |key, svc, joined| {
                let before = svc.state;
                let (changed, r) = f(svc, inner.started_at);
                match joined {
                    None => self.settle(key, svc, before, changed, now),
                    Some((joined, refused)) => {
                        self.settle_new(key, svc, &joined, now);
                        self.orphan(key, &refused);
                    }
                }
                r
            },
        )
    }

    /// A new service with the first `[[services]]` default that matches
    /// (else no timeout).
    fn new_service(&self, name: &str, alarms: ThinVec<Arc<str>>, now: i64) -> Service {
        let inner = &*self.inner;
        let mut svc = Service::new(now, TIMEOUT_NONE, alarms);
        svc.set_algorithm(inner.algorithm);
        if inner.default_patterns.is_empty() {
            return svc;
        }
        let mut ids = Vec::new();
        inner.default_patterns.matches(name.as_bytes(), &mut ids);
        if let Some(d) = ids
            .iter()
            .min()
            .map(|id| &inner.default_settings[*id as usize])
        {
            svc.set_timeout(d.timeout.clone(), now);
            if let Some(max) = d.max_runtime.filter(|m| *m > 0) {
                svc.job_mut().max_runtime = Some(max as i64);
            }
        }
        svc
    }

    /// First evaluation of a just-created service, then joining its alarms.
    fn settle_new(&self, key: &Name, svc: &mut Service, joined: &[(Arc<str>, usize)], now: i64) {
        let state = svc.evaluate(now);
        svc.state = state;
        svc.last_state_change = now;
        self.count(state, 1);
        self.emit_service(now, || EventKind::ServiceAdded(svc.view(key, false)));
        self.emit_service(now, || EventKind::ServiceStateChanged {
            service: svc.view(key, false),
            previous: State::New,
        });
        for (alarm, def) in joined {
            self.alarm_join(alarm, *def, key, state, now);
        }
        self.arm(key, svc, now);
    }

    /// Re-evaluates a service after a change (or an expiry) and propagates
    /// a state change to counts, alarms and events.
    fn settle(&self, key: &Name, svc: &mut Service, before: State, changed: bool, now: i64) {
        let changed = svc.advance(now) | changed;
        let after = svc.evaluate(now);
        if after != before {
            svc.state = after;
            svc.last_state_change = now;
            self.count(before, -1);
            self.count(after, 1);
            self.emit_service(now, || EventKind::ServiceStateChanged {
                service: svc.view(key, false),
                previous: before,
            });
            self.alarms_member_changed(key, &svc.alarms, before, after, now);
        } else if changed {
            self.emit_service(now, || EventKind::ServiceUpdated(key.clone()));
        }
        self.arm(key, svc, now);
    }

    /// Deletes a service and its alarm memberships; idempotent.
    pub fn delete(&self, name: &str, now: i64) {
        let removed = self.inner.services.remove_if(name, |key, svc| {
            self.count(svc.state, -1);
            self.disarm(svc);
            self.emit_service(now, || EventKind::ServiceRemoved(svc.view(key, false)));
            for alarm in svc.alarms.iter() {
                self.alarm_leave(alarm, key, svc.state, now);
            }
            self.forget_orphan(key);
            true
        });
        drop(removed);
    }

    /// Services now, from the counts by state: three atomic loads, where
    /// dashmap's `len` locks every shard.
    fn service_count_fast(&self) -> usize {
        let (ok, error, muted) = self.state_counts();
        (ok + error + muted).max(0) as usize
    }

    /// New names refused at `max_services`, and alarm memberships not made
    /// at `max_alarms`, so far.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.inner.services_refused.load(Ordering::Relaxed),
            self.inner.alarms_refused.load(Ordering::Relaxed),
        )
    }

    fn count(&self, state: State, delta: i64) {
        self.inner.counts[state as usize].fetch_add(delta, Ordering::Relaxed);
    }

    /// Publishes a service event, if anyone watches services (see
    /// [`Engine::watch_services`]).
    #[inline]
    fn emit_service(&self, now: i64, kind: impl FnOnce() -> EventKind) {
        if self.inner.service_watchers.load(Ordering::Relaxed) > 0 {
            self.emit(now, kind);
        }
    }

    /// Whether a service event would reach anyone now: what a batch checks
    /// before it builds the event.
    #[inline]
    fn service_events_wanted(&self) -> bool {
        self.inner.service_watchers.load(Ordering::Relaxed) > 0 && self.events_wanted()
    }

    /// Whether any event would reach anyone now (a subscriber or a feed).
    #[inline]
    fn events_wanted(&self) -> bool {
        self.inner.events.receiver_count() > 0
            || self.inner.journals.iter().any(|j| j.get().is_some())
    }

    /// Publishes events built already, in order, and empties `events`: each
    /// feed takes them under one lock and one wake-up of its writer.
    fn emit_all(&self, events: &mut Vec<Arc<Event>>) {
        if events.is_empty() {
            return;
        }
        for j in self.inner.journals.iter().filter_map(|j| j.get()) {
            j.push_all(events);
        }
        for event in events.drain(..) {
            // An error only means every receiver is gone: nothing to do.
            let _ = self.inner.events.send(event);
        }
    }

    /// The history's feed, once it is asked for.
    fn history_journal(&self) -> Option<&Arc<journal::Journal>> {
        self.inner.journals[journal::Feed::History as usize].get()
    }

    /// Queues an ended job run for the history alone: the views and the
    /// event log keep state changes, not runs.
    fn record_run(&self, now: i64, run: JobRun) {
        if let Some(j) = self.history_journal() {
            j.push(&Arc::new(Event {
                ts: now,
                kind: EventKind::JobRun(Arc::new(run)),
            }));
        }
    }

    fn emit(&self, now: i64, kind: impl FnOnce() -> EventKind) {
        let journals = &self.inner.journals;
        if self.events_wanted() {
            let event = Arc::new(Event {
                ts: now,
                kind: kind(),
            });
            for j in journals.iter().filter_map(|j| j.get()) {
                j.push(&event);
            }
            // An error only means every receiver is gone: nothing to do.
            let _ = self.inner.events.send(event);
        }
    }
}

static SERVICES_REFUSED: Metric = Metric {
    prometheus: "lovebeat_services_refused_total",
    statsd: Some("services.refused"),
    help: "New service names refused at [limits] max_services.",
    kind: Kind::Counter,
};

static ALARMS_REFUSED: Metric = Metric {
    prometheus: "lovebeat_alarms_refused_total",
    statsd: None,
    help: "Alarm memberships not made at [limits] max_alarms.",
    kind: Kind::Counter,
};

static MERGED: Metric = Metric {
    prometheus: "lovebeat_alarm_transitions_merged_total",
    statsd: None,
    help: "Alarm transitions merged because an alarm changed state faster than its alerts were dispatched.",
    kind: Kind::Counter,
};

static EVENTLOG_LOST: Metric = Metric {
    prometheus: "lovebeat_eventlog_lost_total",
    statsd: None,
    help: "Events the event log lost: counted instead of logged while its writer was stalled, or not written because the file could not be (a gap record marks where).",
    kind: Kind::Counter,
};

static HELD_UP: Metric = Metric {
    prometheus: "lovebeat_expiry_held_up_total",
    statsd: None,
    help: "Times the expiry driver did not run for seconds while lovebeat was busy (not suspended): deadlines were late, not restarted.",
    kind: Kind::Counter,
};

static ORPHANS: Metric = Metric {
    prometheus: "lovebeat_orphaned_services",
    statsd: None,
    help: "Services waiting for a place under [limits] max_alarms to join their alarm.",
    kind: Kind::Gauge,
};

static STARTED: Metric = Metric {
    prometheus: "lovebeat_start_time_seconds",
    statsd: None,
    help: "When the engine started (Unix time); restart deadlines count from it.",
    kind: Kind::Gauge,
};

static SERVICES: Metric = Metric {
    prometheus: "lovebeat_services",
    statsd: None,
    help: "Services by state.",
    kind: Kind::Gauge,
};
static ALARMS: Metric = Metric {
    prometheus: "lovebeat_alarms",
    statsd: None,
    help: "Alarms by state.",
    kind: Kind::Gauge,
};

/// The engine's counters and counts, for `/metrics` and the statsd sink.
impl Counted for Engine {
    fn read(&self, out: &mut Vec<Reading>) {
        let (services, alarms) = self.refused();
        out.push(Reading::of(&SERVICES_REFUSED, Value::Count(services)));
        out.push(Reading::of(&ALARMS_REFUSED, Value::Count(alarms)));
        out.push(Reading::of(
            &MERGED,
            Value::Count(self.transitions_merged()),
        ));
        let lost = self.journal_lost(journal::Feed::EventLog);
        out.push(Reading::of(&EVENTLOG_LOST, Value::Count(lost)));
        out.push(Reading::of(&HELD_UP, Value::Count(self.expiry_held_up())));
        out.push(Reading::of(&ORPHANS, Value::Level(self.orphans() as f64)));
        let started = self.started_at() as f64 / 1000.0;
        out.push(Reading::of(&STARTED, Value::Level(started)));
        // Gauges: counts now, written as Prometheus reads any gauge.
        let state = |metric: &'static Metric, label: &str, n: f64| Reading {
            metric,
            labels: vec![("state", label.to_string())],
            value: Value::Level(n),
        };
        let (ok, error, muted) = self.state_counts();
        for (label, n) in [("ok", ok), ("error", error), ("muted", muted)] {
            out.push(state(&SERVICES, label, n as f64));
        }
        let (a_err, a_ok) = self.alarm_state_counts();
        out.push(state(&ALARMS, "ok", a_ok as f64));
        out.push(state(&ALARMS, "error", a_err as f64));
    }
}

#[cfg(test)]
mod tests;
