//! The heart of lovebeat: services, alarms and deadlines. No I/O in here.
//!
//! `Engine` is a cheap `Clone` handle. Services live in a sharded `DashMap`,
//! so a beat takes one shard lock and no global lock; deadlines sit in a
//! hierarchical timer wheel driven by one task (`run_expiry`), touched only
//! when a deadline moves earlier (lazy re-arming). Every state change is
//! published as an [`Event`] on a broadcast channel that sinks subscribe to.

pub mod alarms;
pub mod auto;
pub mod events;
pub mod job;
pub mod service;
pub mod wheel;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::{DashMap, SharedValue};
use thin_vec::ThinVec;
use tokio::sync::{broadcast, watch, Notify};

use crate::clock::now_ms;
use crate::pattern::PatternSet;
pub use alarms::{AlarmDef, AlarmMatcher, AlarmView};
pub use events::{Event, EventKind};
pub use job::{Failure, Schedule, TIMEOUT_SCHEDULE};
pub use service::{Name, Service, ServiceView, State, TIMEOUT_AUTO, TIMEOUT_NONE};
use wheel::Wheel;

/// Longest accepted service name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Events buffered per subscriber before the slowest one starts losing the
/// oldest.
const EVENT_CAPACITY: usize = 1 << 16;
/// Shards of the service map: many, so a save holds each one only briefly.
const SHARDS: usize = 256;

/// A hint to load the cache line at `p`; never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that does not access memory
    // architecturally: it cannot fault, even on an invalid address.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to load every cache line of `len` bytes from `start`
/// (the first byte, every 64 after it, and the last, so a range that
/// does not start on a line boundary loses no line). Never faults.
#[inline(always)]
pub(crate) fn prefetch_range(start: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    for offset in (0..len).step_by(64).chain([len - 1]) {
        prefetch_line(start.wrapping_add(offset));
    }
}

/// Control bytes hashbrown reads per probe step (its SSE2 group): a new
/// entry goes to the first free bucket among the first group's.
const PROBE_GROUP: usize = 16;

/// Bytes of one entry of the service table (name and record, as dashmap
/// stores them in a bucket).
const ENTRY_SIZE: usize = std::mem::size_of::<(Name, dashmap::SharedValue<Service>)>();

/// True for a valid service name (SPEC §1.1): `[a-z0-9._-]+`, ≤ 255 bytes,
/// and not dots only (so `/api/services/..` can never name a service).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        // The first byte settles it for nearly every name.
        && (name[0] != b'.' || name.iter().any(|c| *c != b'.'))
}

/// Why an engine operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The name breaks SPEC §1.1.
    #[error(
        "invalid name '{0}': use lower-case letters, digits, '.', '_' and '-', not dots only (at most 255 bytes)"
    )]
    InvalidName(String),
    /// An alarm cannot be deleted while it has services.
    #[error("alarm '{0}' still has services")]
    AlarmNotEmpty(String),
}

/// A change requested for one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Update {
    /// Record a beat.
    pub beat: bool,
    /// Set the timeout (ms or a special value).
    pub timeout: Option<i64>,
}

/// What the engine is built from.
#[derive(Debug, Default)]
pub struct EngineConfig {
    /// The configured `[[alarms]]`.
    pub alarms: Vec<AlarmDef>,
    /// `[[services]]` defaults; the first that matches wins.
    pub service_defaults: Vec<ServiceDefaults>,
}

/// What a new service matching `pattern` starts with (`[[services]]`).
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    /// Which services.
    pub pattern: String,
    /// Timeout (ms or a special value); ignored when `schedule` is set.
    pub timeout: i64,
    /// A cron schedule instead of a timeout.
    pub schedule: Option<Arc<Schedule>>,
    /// Longest allowed run (ms).
    pub max_runtime: Option<i64>,
}

impl ServiceDefaults {
    /// Defaults with only a timeout.
    pub fn timeout(pattern: &str, timeout: i64) -> ServiceDefaults {
        ServiceDefaults {
            pattern: pattern.to_string(),
            timeout,
            schedule: None,
            max_runtime: None,
        }
    }
}

/// A change of the job fields of one service (SPEC §10), applied in this
/// order: timeout or schedule, `max_runtime`, start, fail, beat.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    /// Set a timeout (clears a schedule).
    pub timeout: Option<i64>,
    /// Follow a schedule (replaces the timeout).
    pub schedule: Option<Arc<Schedule>>,
    /// Set `max_runtime` (ms); `Some(0)` clears it.
    pub max_runtime: Option<i64>,
    /// A run started.
    pub start: bool,
    /// A run failed: exit code (if known) and output.
    pub fail: Option<(Option<i32>, String)>,
    /// A beat.
    pub beat: bool,
}

/// A service as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    /// Name, taken as it is.
    pub name: Name,
    /// Last accepted beat or -1.
    pub last_beat: i64,
    /// Timeout (ms or special).
    pub timeout: i64,
    /// State when saved.
    pub state: State,
    /// When muting began, 0 if not muted.
    pub muted_since: i64,
    /// Time of its latest state change.
    pub last_state_change: i64,
    /// Beat intervals, oldest first.
    pub beat_history: Vec<u32>,
    /// Job monitoring fields (SPEC §10), if any are in use. Boxed: they
    /// are rare, and a million loaded records should not each carry their
    /// 200 bytes.
    pub job: Option<Box<job::JobRecord>>,
}

/// An alarm as read from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlarm {
    /// Alarm name.
    pub name: String,
    /// State when saved.
    pub state: State,
    /// Latest incident number.
    pub incident_nbr: u64,
    /// Time of its latest state change.
    pub last_state_change: i64,
    /// False if it had been deleted through the API.
    pub listed: bool,
}

/// Keeps beat collection on while it lives (see [`Engine::watch_beats`]).
pub struct BeatWatch {
    engine: Engine,
}

impl Drop for BeatWatch {
    fn drop(&mut self) {
        let inner = &self.engine.inner;
        if inner.beat_watchers.fetch_sub(1, Ordering::Relaxed) == 1 {
            drop(self.engine.take_beaten());
        }
    }
}

/// Keeps service events flowing while it lives (see
/// [`Engine::watch_services`]).
pub struct ServiceWatch {
    engine: Engine,
}

impl Drop for ServiceWatch {
    fn drop(&mut self) {
        let inner = &self.engine.inner;
        inner.service_watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The wheel and the time its driver will next wake, kept under one lock so
/// an insert can tell whether the driver must be woken early.
struct Timers {
    wheel: Wheel<Name>,
    /// When the driver wakes next (`i64::MAX`: not before notified).
    next_wake: i64,
}

/// The hasher of the maps: foldhash, seeded at random per process, is several
/// times faster than SipHash on short names and still resists flooding.
pub type Hasher = foldhash::fast::RandomState;

struct Inner {
    services: DashMap<Name, Service, Hasher>,
    alarms: DashMap<Arc<str>, alarms::Alarm, Hasher>,
    matcher: AlarmMatcher,
    defaults: PatternSet,
    default_values: Vec<ServiceDefaults>,
    timers: Mutex<Timers>,
    wake: Notify,
    events: broadcast::Sender<Arc<Event>>,
    /// Services per state, indexed by `State as usize`.
    counts: [AtomicI64; 4],
    /// When this engine started: beats before it add no interval.
    started_at: i64,
    /// Live [`ServiceWatch`]es; service events are published while non-zero.
    service_watchers: AtomicUsize,
    /// Live [`BeatWatch`]es; accepted beats are collected while non-zero.
    beat_watchers: AtomicUsize,
    /// Services beaten since the last [`Engine::take_beaten`].
    beaten: Mutex<HashSet<Name, Hasher>>,
}

/// Handle to the engine; clone freely.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// A new, empty engine whose clock started at `now`.
    pub fn new(config: EngineConfig, now: i64) -> Engine {
        let mut defaults = PatternSet::default();
        for d in &config.service_defaults {
            defaults.add(&d.pattern);
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Engine {
            inner: Arc::new(Inner {
                services: DashMap::with_hasher_and_shard_amount(Hasher::default(), SHARDS),
                alarms: DashMap::with_hasher(Hasher::default()),
                matcher: AlarmMatcher::new(config.alarms),
                defaults,
                default_values: config.service_defaults,
                timers: Mutex::new(Timers {
                    wheel: Wheel::new(now.max(0) as u64),
                    next_wake: i64::MAX,
                }),
                wake: Notify::new(),
                events,
                counts: Default::default(),
                started_at: now,
                service_watchers: AtomicUsize::new(0),
                beat_watchers: AtomicUsize::new(0),
                beaten: Mutex::new(HashSet::default()),
            }),
        }
    }

    /// When the engine started (ms): restart grace counts from here.
    pub fn started_at(&self) -> i64 {
        self.inner.started_at
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

    /// Turns on service events (added, state changed, updated, removed)
    /// for as long as the returned guard lives. A million new services or
    /// a hundred thousand expiring at once are that many events for every
    /// subscriber, so they are built and sent only when some sink uses
    /// them: an event log, statsd metrics, a websocket client, debug logs.
    pub fn watch_services(&self) -> ServiceWatch {
        self.inner.service_watchers.fetch_add(1, Ordering::Relaxed);
        ServiceWatch {
            engine: self.clone(),
        }
    }

    /// Records a beat for `name`, creating the service if needed.
    pub fn beat(&self, name: &str, now: i64) -> Result<(), EngineError> {
        self.update(
            name,
            Update {
                beat: true,
                timeout: None,
            },
            now,
        )
    }

    /// Applies a beat and/or a timeout change, creating the service if
    /// needed. The hot path: one shard lock, no allocation for a known name.
    pub fn update(&self, name: &str, update: Update, now: i64) -> Result<(), EngineError> {
        let hash = self.inner.services.hash_usize(&name) as u64;
        self.update_hashed(name, hash, update, now)
    }

    /// [`Engine::update`] for a name whose hash is known (from
    /// [`Engine::prefetch_probe`]).
    pub fn update_hashed(
        &self,
        name: &str,
        hash: u64,
        update: Update,
        now: i64,
    ) -> Result<(), EngineError> {
        let mut accepted = false;
        self.with_service_hashed(name, hash, true, now, |svc, started_at| {
            let mut changed = false;
            if let Some(t) = update.timeout {
                changed |= svc.timeout != t;
                svc.set_timeout(t, now);
            }
            if update.beat {
                accepted = svc.beat(now, started_at);
                // A job's beat may end a run or a failure: worth an event.
                changed |= svc.ext.is_some();
            }
            changed
        })?;
        self.note_beat(name, accepted);
        Ok(())
    }

    /// First stage of prefetching a beat: starts loading the control bytes
    /// where the probe for `name` begins, and returns its hash for
    /// [`Engine::prefetch_entry`] and [`Engine::prefetch_history`]. With a
    /// million services a beat misses cache (and TLB) on the control
    /// bytes, on the entry and on the history it writes; ingestion runs
    /// the three stages a few lines ahead of applying each line, so those
    /// misses overlap instead of adding up.
    #[inline]
    pub fn prefetch_probe(&self, name: &str) -> u64 {
        let hash = self.inner.services.hash_usize(&name) as u64;
        self.prefetch_control(hash);
        hash
    }

    /// The first stage for a name whose hash is known.
    #[inline]
    fn prefetch_control(&self, hash: u64) {
        let map = &self.inner.services;
        let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() else {
            return; // A writer holds the shard: it is busy, and so is its memory.
        };
        // The allocated table always has at least 4 buckets; 1 is the empty
        // singleton, which has no control bytes of its own.
        if table.buckets() >= 2 {
            // hashbrown probes from `hash & (buckets - 1)`; its control
            // bytes follow the entries, one per bucket.
            let pos = hash as usize & (table.buckets() - 1);
            prefetch_line(table.data_end().as_ptr().cast::<u8>().wrapping_add(pos));
        }
    }

    /// Second stage, once the control bytes are in cache: finds the entry
    /// whose tag matches `hash` and starts loading it. Reading the tags is
    /// what makes this exact: an entry sits at the first free bucket of
    /// its probe group, often a few buckets (a few hundred bytes) past
    /// where the probe begins. For a name not in the table it loads the
    /// bucket the new entry will be written to: the first free one of the
    /// probe's first group, as hashbrown chooses it.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        let map = &self.inner.services;
        let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() else {
            return;
        };
        if table.buckets() < 2 {
            return;
        }
        // `find` compares tags only: the predicate does not read the entry.
        // A false tag match (1 in 128) just prefetches another entry.
        let bucket = match table.find(hash, |_| true) {
            Some(b) => b,
            None => {
                let mask = table.buckets() - 1;
                let start = hash as usize & mask;
                let slot = (0..PROBE_GROUP)
                    .map(|k| (start + k) & mask)
                    // SAFETY: every index is masked below `buckets()`, the
                    // table is allocated (checked above) and the read lock
                    // keeps it in place; this reads a control byte only.
                    .find(|&i| unsafe { !table.is_bucket_full(i) })
                    .unwrap_or(start);
                // SAFETY: as above; the bucket is only used for its address.
                unsafe { table.bucket(slot) }
            }
        };
        // The pointer only reaches prefetch hints, never a dereference. An
        // entry (name and record, 112 bytes) spans two or three lines.
        prefetch_range(bucket.as_ptr().cast::<u8>(), ENTRY_SIZE);
    }

    /// Third stage, once the entry is in cache: starts loading what a beat
    /// will write out of line (its history slot). Takes the shard's read
    /// lock only if it is free, like the other stages.
    #[inline]
    pub fn prefetch_history(&self, name: &str, hash: u64) {
        let map = &self.inner.services;
        let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() else {
            return;
        };
        if let Some(bucket) = table.find(hash, |(key, _)| key.as_str() == name) {
            // SAFETY: the bucket is full (found), and the read lock keeps it
            // allocated and unchanged while the reference lives.
            let (_, svc) = unsafe { bucket.as_ref() };
            svc.get().prefetch_beat();
        }
    }

    /// Tells the watchers of an accepted beat, if any watch.
    #[inline]
    fn note_beat(&self, name: &str, accepted: bool) {
        if accepted && self.inner.beat_watchers.load(Ordering::Relaxed) > 0 {
            self.mark_beaten(name);
        }
    }

    /// Notes an accepted beat for the watchers (see [`Engine::watch_beats`]).
    #[cold]
    fn mark_beaten(&self, name: &str) {
        let mut beaten = self.inner.beaten.lock().unwrap_or_else(|e| e.into_inner());
        if !beaten.contains(name) {
            beaten.insert(Name::new(name));
        }
    }

    /// Starts collecting the names of beaten services for a live view.
    /// Accepted beats publish no event (there can be millions a second);
    /// while at least one [`BeatWatch`] lives, the engine instead keeps the
    /// set of services beaten since the last [`Engine::take_beaten`], so a
    /// watcher sees each at most once per drain.
    pub fn watch_beats(&self) -> BeatWatch {
        self.inner.beat_watchers.fetch_add(1, Ordering::Relaxed);
        BeatWatch {
            engine: self.clone(),
        }
    }

    /// The services beaten since the previous call (while watched).
    pub fn take_beaten(&self) -> HashSet<Name, Hasher> {
        let mut beaten = self.inner.beaten.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *beaten)
    }

    /// Mutes a service (creating it if needed); idempotent.
    pub fn mute(&self, name: &str, now: i64) -> Result<(), EngineError> {
        self.mute_until(name, None, now)
    }

    /// Mutes a service until `until` (ms; a snooze), or with no end. The
    /// latest request wins; `muted_since` keeps the start of the muting.
    pub fn mute_until(&self, name: &str, until: Option<i64>, now: i64) -> Result<(), EngineError> {
        self.with_service(name, true, now, |svc, _| {
            let mut changed = false;
            if svc.muted_since == 0 {
                svc.muted_since = now;
                changed = true;
            }
            let until = until.unwrap_or(0);
            if svc.ext.as_ref().map_or(0, |e| e.muted_until) != until {
                svc.ext_mut().muted_until = until;
                svc.drop_unused_ext();
                changed = true;
            }
            changed
        })
        .map(|_| ())
    }

    /// Unmutes a service; unknown names are ignored. Idempotent.
    pub fn unmute(&self, name: &str, now: i64) -> Result<(), EngineError> {
        self.with_service(name, false, now, |svc, _| {
            let was = svc.muted_since != 0;
            svc.muted_since = 0;
            if let Some(e) = svc.ext.as_deref_mut() {
                e.muted_until = 0;
            }
            svc.drop_unused_ext();
            was
        })
        .map(|_| ())
    }

    /// Applies a job change (SPEC §10), creating the service if needed.
    pub fn update_job(&self, name: &str, u: JobUpdate, now: i64) -> Result<(), EngineError> {
        let mut accepted = false;
        self.with_service(name, true, now, |svc, started_at| {
            let mut changed = false;
            if let Some(schedule) = u.schedule {
                svc.set_schedule(schedule, now);
                changed = true;
            } else if let Some(t) = u.timeout {
                changed |= svc.timeout != t;
                svc.set_timeout(t, now);
            }
            if let Some(max) = u.max_runtime {
                svc.ext_mut().max_runtime = (max > 0).then_some(max);
                changed = true;
            }
            if u.start {
                let ext = svc.ext_mut();
                ext.started_at = now;
                ext.running = true;
                changed = true;
            }
            if let Some((exit_code, output)) = u.fail {
                let ext = svc.ext_mut();
                ext.running = false;
                ext.failed = true;
                ext.last_failure = Some(Failure {
                    ts: now,
                    exit_code,
                    output,
                    reason: None,
                });
                changed = true;
            }
            if u.beat {
                accepted = svc.beat(now, started_at);
                changed |= svc.ext.is_some();
            }
            svc.drop_unused_ext();
            changed
        })?;
        self.note_beat(name, accepted);
        Ok(())
    }

    /// Runs `f` on the service (created first if `create`), then settles its
    /// state, alarms, events and deadline. Returns whether it existed or was
    /// created.
    fn with_service(
        &self,
        name: &str,
        create: bool,
        now: i64,
        f: impl FnOnce(&mut Service, i64) -> bool,
    ) -> Result<bool, EngineError> {
        let hash = self.inner.services.hash_usize(&name) as u64;
        self.with_service_hashed(name, hash, create, now, f)
    }

    /// `with_service` for a name whose hash ingestion computed already (to
    /// prefetch): one hash, one shard lock and one probe per line, for a
    /// new service as for an existing one.
    fn with_service_hashed(
        &self,
        name: &str,
        hash: u64,
        create: bool,
        now: i64,
        f: impl FnOnce(&mut Service, i64) -> bool,
    ) -> Result<bool, EngineError> {
        let inner = &*self.inner;
        let map = &inner.services;
        let mut table = map.shards()[map.determine_shard(hash as usize)].write();
        if let Some(bucket) = table.find(hash, |(key, _)| key.as_str() == name) {
            // SAFETY: `find` returned a full bucket of this table, and the
            // write lock, held until `table` drops at the end of this
            // block, keeps the table in place and the entry ours alone.
            let (key, svc) = unsafe { bucket.as_mut() };
            let svc = svc.get_mut();
            let before = svc.state;
            let changed = f(svc, inner.started_at);
            self.settle(key, svc, before, changed, now);
            return Ok(true);
        }
        if !create {
            return Ok(false);
        }
        if !valid_name(name.as_bytes()) {
            return Err(EngineError::InvalidName(name.to_string()));
        }
        let memberships = self.resolve_alarms(name);
        let alarm_keys: ThinVec<Arc<str>> = memberships.iter().map(|(k, _)| k.clone()).collect();
        let entry = (
            Name::new(name),
            SharedValue::new(self.new_service(name, alarm_keys, now)),
        );
        let hasher = map.hasher();
        let bucket = table.insert(hash, entry, |(key, _)| {
            std::hash::BuildHasher::hash_one(hasher, key)
        });
        // SAFETY: as above; the bucket was just filled under this lock.
        let (key, svc) = unsafe { bucket.as_mut() };
        let svc = svc.get_mut();
        f(svc, inner.started_at);
        self.settle_new(key, svc, &memberships, now);
        Ok(true)
    }

    /// The alarms a new service joins, with the alarm's shared key where the
    /// alarm exists already.
    fn resolve_alarms(&self, name: &str) -> Vec<(Arc<str>, usize)> {
        self.inner
            .matcher
            .alarms_for(name)
            .into_iter()
            .map(|(alarm, def)| {
                let key = match self.inner.alarms.get(alarm.as_str()) {
                    Some(a) => a.key().clone(),
                    None => Arc::from(alarm),
                };
                (key, def)
            })
            .collect()
    }

    /// A new service with the first `[[services]]` default that matches
    /// (else no timeout).
    fn new_service(&self, name: &str, alarms: ThinVec<Arc<str>>, now: i64) -> Service {
        let inner = &*self.inner;
        let mut defaults = None;
        if !inner.defaults.is_empty() {
            let mut ids = Vec::new();
            inner.defaults.matches(name.as_bytes(), &mut ids);
            defaults = ids
                .iter()
                .min()
                .map(|id| &inner.default_values[*id as usize]);
        }
        let Some(d) = defaults else {
            return Service::new(now, TIMEOUT_NONE, alarms);
        };
        let mut svc = Service::new(now, d.timeout, alarms);
        if let Some(s) = &d.schedule {
            svc.set_schedule(s.clone(), now);
        }
        if let Some(max) = d.max_runtime {
            svc.ext_mut().max_runtime = Some(max);
        }
        svc
    }

    /// First evaluation of a just-created service, then joining its alarms.
    fn settle_new(
        &self,
        key: &Name,
        svc: &mut Service,
        memberships: &[(Arc<str>, usize)],
        now: i64,
    ) {
        let state = svc.evaluate(now);
        svc.state = state;
        svc.last_state_change = now;
        self.count(state, 1);
        self.emit_service(now, || EventKind::ServiceAdded(svc.view(key, false)));
        self.emit_service(now, || EventKind::ServiceStateChanged {
            service: svc.view(key, false),
            previous: State::New,
        });
        for (alarm, def) in memberships {
            self.alarm_join(alarm, *def, key, state, now);
        }
        self.arm_if_needed(key, svc, now);
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
            let (was, is) = (before == State::Error, after == State::Error);
            if was != is {
                for alarm in svc.alarms.iter() {
                    self.alarm_member_changed(alarm, key, is, now);
                }
            }
            let (was, is) = (before == State::Muted, after == State::Muted);
            if was != is {
                for alarm in svc.alarms.iter() {
                    if let Some(mut a) = self.inner.alarms.get_mut(&**alarm) {
                        a.count_muted(is);
                    }
                }
            }
        } else if changed {
            self.emit_service(now, || EventKind::ServiceUpdated(key.clone()));
        }
        self.arm_if_needed(key, svc, now);
    }

    /// Puts the service's next wake time (deadline, snooze end, run limit)
    /// in the wheel unless an entry at or before it is live already (a later
    /// one is found when that entry expires: lazy re-arm).
    fn arm_if_needed(&self, key: &Name, svc: &mut Service, now: i64) {
        let Some(deadline) = svc.next_wake() else {
            return;
        };
        if deadline >= svc.armed {
            return;
        }
        let at = deadline.min(now.saturating_add(wheel::MAX_AHEAD as i64));
        svc.armed = at;
        let mut timers = self.timers();
        timers.wheel.insert(at.max(0) as u64, key.clone());
        if at < timers.next_wake {
            timers.next_wake = at;
            self.inner.wake.notify_one();
        }
    }

    fn timers(&self) -> MutexGuard<'_, Timers> {
        // A panic while holding this lock would be a bug in the wheel; the
        // data stays consistent enough to keep going, so ignore poisoning.
        self.inner.timers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles a wheel entry for `key` armed at `when`.
    fn expire(&self, key: &Name, when: i64, now: i64) {
        let Some(mut guard) = self.inner.services.get_mut(&**key) else {
            return;
        };
        if guard.armed != when {
            return; // superseded by an earlier entry
        }
        guard.armed = service::NOT_ARMED;
        let before = guard.state;
        self.settle(key, &mut guard, before, false, now);
    }

    /// Drives the timer wheel until `shutdown` turns true: sleeps until the
    /// next deadline (or an earlier one is armed) and expires what is due.
    /// Calls `alive` at start and every `alive_every` after, from this loop,
    /// so whoever watches it (the `[[notify]]` peers) hears from the
    /// engine only while its driver really runs.
    pub async fn run_expiry(
        self,
        mut shutdown: watch::Receiver<bool>,
        alive_every: Duration,
        mut alive: impl FnMut(),
    ) {
        let mut due = Vec::new();
        let mut next_alive = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if tokio::time::Instant::now() >= next_alive {
                alive();
                // From now, not from when it was due: a driver held up
                // for minutes reports once, not once per minute missed.
                next_alive = tokio::time::Instant::now() + alive_every;
            }
            let wake = {
                let mut timers = self.timers();
                let wake = timers.wheel.next_wake().map_or(i64::MAX, |t| t as i64);
                timers.next_wake = wake;
                wake
            };
            let now = now_ms();
            if wake > now {
                let nap = if wake == i64::MAX {
                    Duration::MAX
                } else {
                    Duration::from_millis((wake - now) as u64)
                };
                let until_alive = next_alive.saturating_duration_since(tokio::time::Instant::now());
                tokio::select! {
                    _ = tokio::time::sleep(nap.min(until_alive)) => {}
                    _ = self.inner.wake.notified() => continue,
                    _ = shutdown.changed() => return,
                }
                if now_ms() < wake {
                    continue; // woke to report, nothing is due yet
                }
            }
            self.tick_with_clock(now_ms(), &mut due, now_ms);
        }
    }

    /// Expires everything due at `now`. Public for tests and benches that
    /// drive time themselves.
    pub fn tick(&self, now: i64, due: &mut Vec<(u64, Name)>) {
        self.tick_with_clock(now, due, || now);
    }

    /// Expires everything due at `now`, stamping each change with `clock()`
    /// read every 256 services, so a long batch records when each change
    /// really happened.
    fn tick_with_clock(&self, now: i64, due: &mut Vec<(u64, Name)>, clock: impl Fn() -> i64) {
        self.timers().wheel.advance(now.max(0) as u64, due);
        let mut stamp = now;
        for (i, (when, key)) in due.drain(..).enumerate() {
            if i % 256 == 255 {
                stamp = clock().max(now);
            }
            self.expire(&key, when as i64, stamp);
        }
    }

    /// Deletes a service and its alarm memberships; idempotent.
    pub fn delete(&self, name: &str, now: i64) {
        if !self.inner.services.contains_key(name) {
            return;
        }
        if let Entry::Occupied(o) = self.inner.services.entry(Name::new(name)) {
            let key = o.key().clone();
            let svc = o.get();
            self.count(svc.state, -1);
            self.emit_service(now, || EventKind::ServiceRemoved(svc.view(&key, false)));
            for alarm in svc.alarms.iter() {
                self.alarm_leave(alarm, &key, svc.state, now);
            }
            o.remove();
        }
    }

    fn alarm_join(&self, alarm: &Arc<str>, def: usize, service: &Name, state: State, now: i64) {
        let error = state == State::Error;
        let mut a = self
            .inner
            .alarms
            .entry(alarm.clone())
            .or_insert_with(|| alarms::Alarm::new(Some(def), now));
        if a.def.is_none() || (a.depends_on.is_empty() && a.members == 0) {
            a.def = Some(def);
            a.depends_on = self.inner.matcher.dependencies(def, service).into();
        }
        a.members += 1;
        if state == State::Muted {
            a.count_muted(true);
        }
        if error {
            a.failed.insert(service.clone());
            a.cause = Some(service.clone());
        }
        if a.state == State::New || !a.listed {
            a.listed = true;
            self.emit(now, || EventKind::AlarmAdded(a.view(alarm)));
        }
        self.alarm_settle(alarm, &mut a, error, now);
    }

    fn alarm_member_changed(&self, alarm: &Arc<str>, service: &Name, error: bool, now: i64) {
        if let Some(mut a) = self.inner.alarms.get_mut(&**alarm) {
            a.cause = Some(service.clone());
            if error {
                a.failed.insert(service.clone());
            } else {
                a.failed.remove(service);
            }
            self.alarm_settle(alarm, &mut a, true, now);
        }
    }

    fn alarm_leave(&self, alarm: &Arc<str>, service: &Name, state: State, now: i64) {
        if let Some(mut a) = self.inner.alarms.get_mut(&**alarm) {
            a.members = a.members.saturating_sub(1);
            if state == State::Muted {
                a.count_muted(false);
            }
            let removed = state == State::Error && a.failed.remove(service);
            self.alarm_settle(alarm, &mut a, removed, now);
        }
    }

    /// Re-evaluates an alarm; emitted while its lock is held, so events of
    /// one alarm are published in order.
    fn alarm_settle(&self, name: &Arc<str>, a: &mut alarms::Alarm, failed_changed: bool, now: i64) {
        let after = a.evaluate();
        if after != a.state {
            let previous = a.state;
            a.transition(after, now);
            self.emit(now, || EventKind::AlarmStateChanged {
                alarm: a.view(name),
                previous,
            });
        } else if failed_changed {
            self.emit(now, || EventKind::AlarmUpdated(name.clone()));
        }
    }

    /// Deletes an alarm that has no services. `Ok(false)` if unknown.
    pub fn delete_alarm(&self, name: &str, now: i64) -> Result<bool, EngineError> {
        let Some(mut a) = self.inner.alarms.get_mut(name) else {
            return Ok(false);
        };
        if !a.listed {
            return Ok(false);
        }
        if a.members > 0 {
            return Err(EngineError::AlarmNotEmpty(name.to_string()));
        }
        a.listed = false;
        let key = a.key().clone();
        self.emit(now, || EventKind::AlarmRemoved(a.view(&key)));
        Ok(true)
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

    fn emit(&self, now: i64, kind: impl FnOnce() -> EventKind) {
        if self.inner.events.receiver_count() > 0 {
            // An error only means every receiver is gone: nothing to do.
            let _ = self.inner.events.send(Arc::new(Event {
                ts: now,
                kind: kind(),
            }));
        }
    }

    /// One service as the API shows it.
    pub fn service(&self, name: &str, details: bool) -> Option<ServiceView> {
        self.inner
            .services
            .get(name)
            .map(|s| s.view(s.key(), details))
    }

    /// Calls `f` for every service. Holds one shard's read lock at a time:
    /// keep `f` short and never call back into the engine from it.
    pub fn for_each_service(&self, mut f: impl FnMut(&Name, &Service)) {
        for r in self.inner.services.iter() {
            f(r.key(), r.value());
        }
    }

    /// Calls `f` once per shard with that shard's services, under the
    /// shard's read lock. For a save: `f` should only copy what it needs
    /// (cheap, sequential memory) and do slow work such as encoding after
    /// it returns, so the lock is held for as little of the save as
    /// possible. A save thread runs at low priority, and one that is
    /// descheduled while holding a lock stalls every beat to that shard.
    pub fn for_each_shard(&self, mut f: impl FnMut(&mut dyn Iterator<Item = (&Name, &Service)>)) {
        for shard in self.inner.services.shards() {
            let table = shard.read();
            // SAFETY: the read guard keeps the table allocated and
            // unchanged for as long as the iterator and the references it
            // yields live, which is the call of `f` below.
            let mut items = unsafe { table.iter() }.map(|bucket| {
                // SAFETY: as above; the bucket is full (yielded by iter).
                let (name, svc) = unsafe { bucket.as_ref() };
                (name, svc.get())
            });
            f(&mut items);
        }
    }

    /// The names of all services at this moment: a snapshot that holds no
    /// lock afterwards, for long walks (saves, lists) that must not block
    /// ingestion.
    pub fn names(&self) -> Vec<Name> {
        let mut names = Vec::with_capacity(self.service_count());
        self.for_each_service(|name, _| names.push(name.clone()));
        names
    }

    /// Runs `f` on one service under its shard's read lock, briefly.
    pub fn inspect<R>(&self, name: &str, f: impl FnOnce(&Name, &Service) -> R) -> Option<R> {
        self.inner.services.get(name).map(|s| f(s.key(), s.value()))
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.inner.services.len()
    }

    /// Services by state: `(ok, error, muted)`. O(1).
    pub fn state_counts(&self) -> (i64, i64, i64) {
        let c = &self.inner.counts;
        (
            c[State::Ok as usize].load(Ordering::Relaxed),
            c[State::Error as usize].load(Ordering::Relaxed),
            c[State::Muted as usize].load(Ordering::Relaxed),
        )
    }

    /// `(num_ok, num_error)` over all services, as `/api/status` counts. O(1).
    pub fn status(&self) -> (i64, i64) {
        let (ok, error, muted) = self.state_counts();
        (ok + muted, error)
    }

    /// `(num_ok, num_error)` over an alarm's services, or `None` if it is
    /// not listed. O(1).
    pub fn alarm_status(&self, name: &str) -> Option<(i64, i64)> {
        let a = self.inner.alarms.get(name)?;
        if !a.listed {
            return None;
        }
        let error = a.failed.len() as i64;
        Some((a.members as i64 - error, error))
    }

    /// Every listed alarm.
    pub fn alarms(&self) -> Vec<AlarmView> {
        let views: Vec<AlarmView> = self
            .inner
            .alarms
            .iter()
            .filter(|a| a.listed)
            .map(|a| a.view(a.key()))
            .collect();
        views
            .into_iter()
            .map(|v| self.with_suppression(v))
            .collect()
    }

    /// One listed alarm.
    pub fn alarm(&self, name: &str) -> Option<AlarmView> {
        let view = self
            .inner
            .alarms
            .get(name)
            .filter(|a| a.listed)
            .map(|a| a.view(a.key()))?;
        Some(self.with_suppression(view))
    }

    /// True when the alarm has members and every one is muted. O(1).
    pub fn alarm_all_muted(&self, name: &str) -> bool {
        self.inner
            .alarms
            .get(name)
            .is_some_and(|a| a.members > 0 && a.muted == a.members)
    }

    /// True when the alarm exists and is ERROR.
    pub fn alarm_in_error(&self, name: &str) -> bool {
        self.inner
            .alarms
            .get(name)
            .is_some_and(|a| a.listed && a.state == State::Error)
    }

    /// Fills `suppressed_by`: the alarms it depends on that are ERROR now.
    /// Takes no lock of its own alarm, so call it with none held.
    pub fn with_suppression(&self, mut view: AlarmView) -> AlarmView {
        view.suppressed_by = view
            .depends_on
            .iter()
            .filter(|d| self.alarm_in_error(d))
            .cloned()
            .collect();
        view
    }

    /// The services of an alarm (a scan of all services).
    pub fn alarm_services(&self, alarm: &str) -> Vec<ServiceView> {
        let mut out = Vec::new();
        self.for_each_service(|name, svc| {
            if svc.alarms.binary_search_by(|a| (**a).cmp(alarm)).is_ok() {
                out.push(svc.view(name, false));
            }
        });
        out
    }

    /// Every alarm including deleted ones (whose incident numbers are kept),
    /// for the database.
    pub fn stored_alarms(&self) -> Vec<(AlarmView, bool)> {
        self.inner
            .alarms
            .iter()
            .map(|a| (a.view(a.key()), a.listed))
            .collect()
    }

    /// Loads a database into an empty engine at start, applying the restart
    /// grace of SPEC §7: a service stored as ERROR stays ERROR; every other
    /// one counts its deadline from `now`. Alarms keep state and incident.
    /// Publishes no events.
    pub fn load(&self, services: Vec<StoredService>, stored_alarms: Vec<StoredAlarm>, now: i64) {
        let inner = &*self.inner;
        for a in stored_alarms {
            let mut alarm = alarms::Alarm::new(None, a.last_state_change);
            alarm.state = a.state;
            alarm.incident_nbr = a.incident_nbr;
            alarm.listed = a.listed;
            inner.alarms.insert(Arc::from(a.name), alarm);
        }
        // Size every shard's table for its share up front: a million
        // services would otherwise regrow (and rehash) each table a dozen
        // times while loading.
        let shards = inner.services.shards();
        let per_shard = services.len() / shards.len() + services.len() / shards.len() / 8 + 1;
        let hasher = *inner.services.hasher();
        for shard in shards {
            shard.write().reserve(per_shard, |(name, _)| {
                std::hash::BuildHasher::hash_one(&hasher, name)
            });
        }
        // Each insert writes to a random place in a table of hundreds of
        // megabytes. As ingestion does, a record's place in the table is
        // prefetched in two stages ahead of its insert (control bytes
        // `2 * AHEAD` records ahead, then its bucket `AHEAD` ahead), so the
        // cache misses of consecutive inserts overlap.
        const AHEAD: usize = 8;
        let map = &inner.services;
        let hashes: Vec<u64> = services
            .iter()
            .map(|s| map.hash_usize(&s.name.as_str()) as u64)
            .collect();
        for h in hashes.iter().take(2 * AHEAD) {
            self.prefetch_control(*h);
        }
        for (i, s) in services.into_iter().enumerate() {
            if let Some(h) = hashes.get(i + 2 * AHEAD) {
                self.prefetch_control(*h);
            }
            if let Some(h) = hashes.get(i + AHEAD) {
                self.prefetch_entry(*h);
            }
            let memberships = self.resolve_alarms(&s.name);
            let key = s.name;
            let mut svc = Service::new(
                now,
                s.timeout,
                memberships.iter().map(|(k, _)| k.clone()).collect(),
            );
            svc.last_beat = s.last_beat;
            svc.muted_since = s.muted_since;
            svc.set_history(s.beat_history);
            svc.anchor = now;
            match s.job.as_deref().map(job::JobRecord::to_ext) {
                Some(Ok(Some(mut ext))) => {
                    if let Some(sched) = &ext.schedule {
                        // Restart grace: a fire missed while down is not due.
                        ext.next_deadline = sched.deadline_after(s.last_beat.max(now));
                    }
                    if ext.running {
                        // Its run time limit also counts from the restart.
                        ext.started_at = ext.started_at.max(now);
                    }
                    svc.ext = Some(Box::new(ext));
                }
                Some(Err(e)) => tracing::warn!(service = %key, "ignoring its job settings: {e}"),
                _ => {}
            }
            let state = if s.state == State::Error && s.muted_since == 0 {
                State::Error
            } else {
                svc.evaluate(now)
            };
            svc.state = state;
            svc.last_state_change = if state == s.state {
                s.last_state_change
            } else {
                now
            };
            self.count(state, 1);
            for (alarm, def) in &memberships {
                let mut a = inner
                    .alarms
                    .entry(alarm.clone())
                    .or_insert_with(|| alarms::Alarm::new(Some(*def), now));
                if a.def.is_none() {
                    a.def = Some(*def);
                    a.depends_on = inner.matcher.dependencies(*def, &key).into();
                }
                a.members += 1;
                a.listed = true;
                if state == State::Muted {
                    a.count_muted(true);
                }
                if state == State::Error {
                    a.failed.insert(key.clone());
                }
            }
            self.arm_if_needed(&key, &mut svc, now);
            inner.services.insert(key, svc);
        }
        for mut a in inner.alarms.iter_mut() {
            let after = a.evaluate();
            if a.members > 0 && after != a.state {
                tracing::info!(alarm = %a.key(), "alarm {} loaded as {}, its services make it {}", a.key(), a.state.as_upper(), after.as_upper());
                a.transition(after, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
