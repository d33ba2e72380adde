//! Deadlines: the timer wheel that holds them and the task that expires
//! them.
//!
//! A service's next wake time (its deadline, the end of a snooze, a run's
//! `max_runtime`) goes into the wheel only when it moves earlier than the
//! entry already there (lazy re-arming): a beat that pushes the deadline
//! later touches no wheel, and the old entry, when it fires, finds the
//! service not due and arms the later time instead.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::events::{Event, EventKind};
use super::service::{Name, Service, State, NOT_ARMED};
use super::table::{self, ShardGuard};
use super::wheel::{self, Wheel};
use super::Engine;
use crate::clock::now_ms;

/// Superseded entries allowed beyond the live ones before the wheel is
/// compacted.
const STALE_SLACK: usize = 4096;

/// The wheel and the time its driver will next wake, kept under one lock so
/// an insert can tell whether the driver must be woken early.
pub(super) struct Timers {
    wheel: Wheel<Name>,
    /// When the driver wakes next (`i64::MAX`: not before notified).
    next_wake: i64,
    /// Entries in the wheel.
    entries: usize,
    /// Of those, entries known to be superseded (their service armed an
    /// earlier one, or was deleted): they fire to no effect. When they
    /// outnumber the live ones (plus `STALE_SLACK`), the driver compacts
    /// the wheel, so a service holds one live entry however often its
    /// timeout changes, and memory stays in proportion to the services.
    stale: usize,
}

impl Timers {
    /// Empty timers whose clock starts at `now`.
    pub(super) fn new(now: i64) -> Timers {
        Timers {
            wheel: Wheel::new(now.max(0) as u64),
            next_wake: i64::MAX,
            entries: 0,
            stale: 0,
        }
    }

    fn needs_compaction(&self) -> bool {
        // `stale` may run ahead of `entries` for a moment (an entry taken
        // out to fire, then superseded before it does).
        self.stale > self.entries.saturating_sub(self.stale) + STALE_SLACK
    }
}

/// What a mass expiry works in, kept by the driver from batch to batch so
/// that expiring a million services allocates only what their events hold
/// (issue 32: 100 000 at once were all ERROR only 452 ms after their
/// deadline, one lock, one journal wake-up and one alarm lookup per
/// service).
#[derive(Default)]
pub(crate) struct Scratch {
    /// The entries due, as the wheel gives them.
    due: Vec<(u64, Name)>,
    /// `(shard, hash, index in due)`, sorted by shard: each shard's lock is
    /// taken once per batch.
    order: Vec<(u32, u64, u32)>,
    /// Service events of the shard at hand, published together (one
    /// journal lock and wake-up) before its lock is let go.
    events: Vec<std::sync::Arc<Event>>,
    /// `(alarm, service, before, after)` of the shard at hand: applied
    /// alarm by alarm (one alarm lock each) before the shard's lock is let
    /// go, so a beat to one of its services cannot come between.
    members: Vec<(std::sync::Arc<str>, Name, State, State)>,
    /// Services per state moved by the shard at hand.
    counts: [i64; 4],
}

/// The deadline driver looks at the clocks at least this often.
const CLOCK_CHECK: Duration = Duration::from_secs(1);
/// How far the wall clock may drift from the monotonic one between two
/// looks before it counts as a jump.
const JUMP: Duration = Duration::from_secs(2);
/// How much longer than it meant to sleep the driver may have been gone
/// before it counts as a suspension.
const SUSPENDED: Duration = Duration::from_secs(5);

/// How often the pulse thread wakes (see [`Pulse`]).
const PULSE_EVERY: Duration = Duration::from_millis(250);

/// A thread of its own that does nothing but wake every [`PULSE_EVERY`]
/// and note the longest time it was not woken. A suspended machine or a
/// paused VM (or a SIGSTOP) runs none of lovebeat's threads, so the pulse
/// falls silent as long as the driver; a driver held up by lovebeat's own
/// work (a burst of a million creates, a task holding a runtime thread)
/// finds the pulse kept beating. Measuring the process's CPU time instead
/// failed on a loaded machine, where a busy process gets a fifth of a core.
struct Pulse {
    /// The longest silence (ms) since the driver last took it.
    silence: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When the thread last woke (ms after `base`): a silence still going
    /// on (the driver looks first after a resume) counts too.
    woke: std::sync::Arc<std::sync::atomic::AtomicU64>,
    base: std::time::Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Pulse {
    /// Starts the thread; `None` if it cannot be (then every long gap is a
    /// suspension, as before the pulse).
    fn start() -> Option<Pulse> {
        let silence = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let woke = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = std::time::Instant::now();
        let (s, w, st) = (silence.clone(), woke.clone(), stop.clone());
        let started = std::thread::Builder::new()
            .name("lovebeat-pulse".into())
            .spawn(move || {
                let mut last = base;
                while !st.load(Ordering::Relaxed) {
                    std::thread::sleep(PULSE_EVERY);
                    let now = std::time::Instant::now();
                    let quiet = now.duration_since(last).as_millis() as u64;
                    s.fetch_max(quiet, Ordering::Relaxed);
                    w.store(
                        now.duration_since(base).as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    last = now;
                }
            });
        match started {
            Ok(_) => Some(Pulse {
                silence,
                woke,
                base,
                stop,
            }),
            Err(e) => {
                tracing::warn!(
                    "cannot start the pulse thread ({e}): a driver held up will count as suspended"
                );
                None
            }
        }
    }

    /// The longest silence since the last call, up to now (one still going
    /// on included).
    fn take(&self) -> Duration {
        let past = self.silence.swap(0, Ordering::Relaxed);
        let now = self.base.elapsed().as_millis() as u64;
        let going_on = now.saturating_sub(self.woke.load(Ordering::Relaxed));
        Duration::from_millis(past.max(going_on))
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The wall and monotonic clocks as the driver last read them. Deadlines
/// are wall times (the API shows them), so a step of the wall clock (NTP,
/// an operator) or a suspension (a VM paused for an hour) would expire
/// every service at once; seen here, they are treated like a restart.
struct Clocks {
    wall: i64,
    mono: std::time::Instant,
}

/// What a look at the clocks found since the last one.
#[derive(Debug, PartialEq)]
enum Gap {
    /// The wall clock moved this many ms more (or less) than the monotonic
    /// one: deadlines count from now.
    Jump(i64),
    /// The driver did not run for this long and neither did the rest of
    /// the process: the machine was suspended (or lovebeat starved of CPU),
    /// and beats may have been lost meanwhile, so deadlines count from now.
    Suspended(Duration),
    /// The driver did not run for `gap` while the process did (its pulse
    /// was silent at most `silence`): lovebeat was busy, not asleep, and
    /// beats were read meanwhile, so what is due is due (no restart).
    HeldUp { gap: Duration, silence: Duration },
}

/// Tells what happened in a gap between two looks at the clocks: `mono`
/// elapsed on the monotonic clock, `wall_ms` on the wall clock, and the
/// pulse thread was silent at most `silence` meanwhile (`None`: no pulse).
/// `None`: nothing to act on.
fn classify(mono: Duration, wall_ms: i64, silence: Option<Duration>) -> Option<Gap> {
    let drift = wall_ms - mono.as_millis() as i64;
    if drift.unsigned_abs() > JUMP.as_millis() as u64 {
        Some(Gap::Jump(drift))
    } else if mono > CLOCK_CHECK + SUSPENDED {
        match silence {
            Some(silence) if silence <= SUSPENDED => Some(Gap::HeldUp { gap: mono, silence }),
            _ => Some(Gap::Suspended(mono)),
        }
    } else {
        None
    }
}

impl Clocks {
    fn now() -> Clocks {
        Clocks {
            wall: now_ms(),
            mono: std::time::Instant::now(),
        }
    }

    /// What happened since the last look, if the clocks say something did.
    fn gap(&mut self, pulse: Option<&Pulse>) -> Option<Gap> {
        let then = std::mem::replace(self, Clocks::now());
        let mono = self.mono.duration_since(then.mono);
        // The pulse's silence up to now, which includes the part of its
        // current sleep already gone.
        let silence = pulse.map(|p| p.take());
        classify(mono, self.wall - then.wall, silence)
    }
}

/// How soon expiry looks again at a closed gate (cluster mode).
const GATE_RETRY: Duration = Duration::from_millis(50);

impl Engine {
    /// Puts the service's next wake time in the wheel unless an entry at or
    /// before it is live already.
    pub(super) fn arm(&self, key: &Name, svc: &mut Service, now: i64) {
        let Some(deadline) = svc.next_wake() else {
            return;
        };
        if deadline >= svc.armed {
            return;
        }
        let at = deadline.min(now.saturating_add(wheel::MAX_AHEAD as i64));
        let superseded = svc.armed != NOT_ARMED;
        svc.armed = at;
        let mut timers = self.timers();
        timers.wheel.insert(at.max(0) as u64, key.clone());
        timers.entries += 1;
        timers.stale += usize::from(superseded);
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

    /// Counts a service's live entry as superseded (it was deleted).
    pub(super) fn disarm(&self, svc: &Service) {
        if svc.armed != NOT_ARMED {
            self.timers().stale += 1;
        }
    }

    /// Takes every entry out of the wheel, drops the stale ones and puts the
    /// live ones back. Run by the driver (so no deadline is advanced past
    /// meanwhile) when stale entries outnumber live ones; the timers' lock
    /// is held only to take and to put back, never while services are
    /// looked at.
    fn compact(&self) {
        let mut all = Vec::new();
        {
            let mut timers = self.timers();
            timers.wheel.drain_all(&mut all);
            timers.entries = timers.entries.saturating_sub(all.len());
        }
        let taken = all.len();
        all.retain(|(when, key)| {
            self.inner
                .services
                .get(&**key)
                .is_some_and(|s| s.armed == *when as i64)
        });
        let kept = all.len();
        let mut timers = self.timers();
        timers.stale = timers.stale.saturating_sub(taken - kept);
        timers.entries += kept;
        for (when, key) in all {
            timers.wheel.insert(when, key);
        }
        tracing::debug!(
            "timer wheel compacted: {} stale entries dropped",
            taken - kept
        );
    }

    /// Drives the timer wheel until `stop` is cancelled: sleeps until the
    /// next deadline (or an earlier one is armed) and expires what is due.
    /// Calls `alive` at start and every `alive_every` after, from this loop,
    /// so whoever watches it (the `[[notify]]` peers) hears from the engine
    /// only while its driver really runs.
    pub async fn run_expiry(
        self,
        stop: CancellationToken,
        alive_every: Duration,
        mut alive: impl FnMut(),
    ) {
        let mut scratch = Scratch::default();
        let mut next_alive = tokio::time::Instant::now();
        let mut clocks = Clocks::now();
        let pulse = Pulse::start();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let restart = match clocks.gap(pulse.as_ref()) {
                None => None,
                Some(Gap::HeldUp { gap, silence }) => {
                    self.inner.held_up.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "the expiry driver was held up {} s while lovebeat ran (silent {} ms at most): not a suspension, so deadlines are not restarted and what is due expires late",
                        gap.as_secs(),
                        silence.as_millis()
                    );
                    None
                }
                Some(Gap::Jump(drift)) => Some(format!(
                    "the wall clock jumped {} by {} s",
                    if drift > 0 { "forward" } else { "back" },
                    drift.unsigned_abs() / 1000
                )),
                Some(Gap::Suspended(gap)) => Some(format!(
                    "lovebeat did not run for {} s (suspended, or starved of CPU)",
                    gap.as_secs()
                )),
            };
            if let Some(what) = restart {
                tracing::warn!(
                    "{what}: every service's deadline counts from now, as after a restart (beats sent meanwhile may have been lost)"
                );
                self.grant_grace(now_ms());
            }
            if tokio::time::Instant::now() >= next_alive {
                alive();
                // From now, not from when it was due: a driver held up for
                // minutes reports once, not once per minute missed.
                next_alive = tokio::time::Instant::now() + alive_every;
            }
            if self.timers().needs_compaction() {
                self.compact();
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
                    _ = tokio::time::sleep(nap.min(until_alive).min(CLOCK_CHECK)) => {}
                    _ = self.inner.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
                // Whatever woke it, the clocks are looked at before anything
                // expires: a wall clock that stepped during the sleep must
                // not expire everything it stepped over.
                continue;
            }
            if !self.expiry_allowed() {
                // Cluster mode: a lease this node relies on is past its
                // time (the node was paused, or cut from NATS), so what
                // this engine holds may be another node's now; nothing
                // expires until the partitions are let go or renewed.
                tokio::select! {
                    _ = tokio::time::sleep(GATE_RETRY) => {}
                    _ = stop.cancelled() => return,
                }
                continue;
            }
            self.tick_with_clock(now_ms(), &mut scratch, now_ms);
        }
    }

    /// Runs [`Engine::run_expiry`] on a thread of its own (with a runtime of
    /// one thread), and returns what ends when it has stopped. On the shared
    /// runtime, a task that blocks its worker (the TCP reader waiting for
    /// the history's writer during a burst of a million creates) kept the
    /// driver from being polled for seconds (BENCHMARKS.md, the 1 M soak):
    /// deadlines expired late, and the driver took its own starvation for
    /// a suspension. Its own thread is scheduled by the kernel whatever
    /// the runtime's workers do.
    pub fn spawn_expiry(
        self,
        stop: CancellationToken,
        alive_every: Duration,
        alive: impl FnMut() + Send + 'static,
    ) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("lovebeat-expiry".into())
            .spawn(move || {
                runtime.block_on(self.run_expiry(stop, alive_every, alive));
                // Nobody may wait any more (the daemon gave up): fine.
                let _ = done.send(());
            })?;
        Ok(async move {
            // An error means the thread ended without saying so (it
            // panicked): it has stopped either way.
            let _ = ended.await;
        })
    }

    /// Gives every service that is not failing its restart grace (its
    /// deadline counts from `now`): after the clock jumped, or the process
    /// was not running for a while. Holds one shard's lock at a time.
    pub fn grant_grace(&self, now: i64) {
        for mut svc in self.inner.services.iter_mut() {
            if svc.state != super::State::Error {
                svc.restart_grace(now);
            }
        }
    }

    /// Expires everything due at `now`. For tests that drive time
    /// themselves.
    #[cfg(test)]
    pub(crate) fn tick(&self, now: i64, due: &mut Vec<(u64, Name)>) {
        let mut scratch = Scratch {
            due: std::mem::take(due),
            ..Scratch::default()
        };
        self.tick_with_clock(now, &mut scratch, || now);
        *due = scratch.due;
    }

    /// Expires everything due at `now` as the driver does, stamping each
    /// change with the real clock: exists so the criterion benches can time
    /// a mass expiry without a runtime. Returns the entries taken.
    #[doc(hidden)]
    pub fn expire_due(&self, now: i64) -> usize {
        let taken = self.timer_entries().0;
        self.tick_with_clock(now, &mut Scratch::default(), || now_ms().max(now));
        taken.saturating_sub(self.timer_entries().0)
    }

    /// Expires everything due at `now`, stamping each change with `clock()`
    /// read every 256 services, so a long batch records when each change
    /// really happened. The batch goes shard by shard: each shard's lock
    /// is taken once, and its services' events, counts and alarm changes
    /// are published together before it is let go (so a beat to one of
    /// them still comes after, in every feed, as one at a time did).
    fn tick_with_clock(&self, now: i64, scratch: &mut Scratch, clock: impl Fn() -> i64) {
        {
            let mut timers = self.timers();
            timers.wheel.advance(now.max(0) as u64, &mut scratch.due);
            timers.entries = timers.entries.saturating_sub(scratch.due.len());
        }
        let services = &self.inner.services;
        let mut order = std::mem::take(&mut scratch.order);
        order.clear();
        order.extend(scratch.due.iter().enumerate().map(|(i, (_, key))| {
            let hash = table::hash(services, key);
            (table::shard_of(services, hash) as u32, hash, i as u32)
        }));
        order.sort_unstable_by_key(|&(shard, _, i)| (shard, i));
        let mut stamp = now;
        let mut stale = 0;
        let mut done = 0usize;
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = ShardGuard::lock(services, group[0].0 as usize);
            for &(_, hash, i) in group {
                if done % 256 == 255 {
                    stamp = clock().max(now);
                }
                done += 1;
                let Some((when, key)) = scratch.due.get(i as usize) else {
                    continue;
                };
                match shard.find_mut(hash, key) {
                    Some((key, svc)) if svc.armed == *when as i64 => {
                        svc.armed = NOT_ARMED;
                        self.settle_batched(key, svc, stamp, scratch);
                    }
                    _ => stale += 1,
                }
            }
            self.publish_batch(scratch, stamp);
            drop(shard);
        }
        scratch.due.clear();
        scratch.order = order;
        let compact = {
            let mut timers = self.timers();
            timers.stale = timers.stale.saturating_sub(stale);
            timers.needs_compaction()
        };
        if compact {
            self.compact();
        }
    }

    /// `settle` for a service of a batch: its counts, events and alarm
    /// changes go to `scratch`, for `publish_batch` to apply once per shard.
    fn settle_batched(&self, key: &Name, svc: &mut Service, now: i64, scratch: &mut Scratch) {
        let before = svc.state;
        let changed = svc.advance(now);
        let after = svc.evaluate(now);
        let watched = self.service_events_wanted();
        if after != before {
            svc.state = after;
            svc.last_state_change = now;
            scratch.counts[before as usize] -= 1;
            scratch.counts[after as usize] += 1;
            if watched {
                scratch.events.push(std::sync::Arc::new(Event {
                    ts: now,
                    kind: EventKind::ServiceStateChanged {
                        service: svc.view(key, false),
                        previous: before,
                    },
                }));
            }
            let error_changed = (before == State::Error) != (after == State::Error);
            let muted_changed = (before == State::Muted) != (after == State::Muted);
            if error_changed || muted_changed {
                for alarm in svc.alarms.iter() {
                    scratch
                        .members
                        .push((alarm.clone(), key.clone(), before, after));
                }
            }
        } else if changed && watched {
            scratch.events.push(std::sync::Arc::new(Event {
                ts: now,
                kind: EventKind::ServiceUpdated(key.clone()),
            }));
        }
        self.arm(key, svc, now);
    }

    /// Applies what `settle_batched` gathered for one shard: the counts,
    /// the service events (one journal lock and wake-up for all), and the
    /// alarm changes, one alarm lock per alarm. Called with the shard's
    /// lock held.
    fn publish_batch(&self, scratch: &mut Scratch, now: i64) {
        // Increments first: the sum of the counts (what `max_services`
        // is checked against) never reads low meanwhile.
        for (state, n) in scratch.counts.iter().enumerate() {
            if *n > 0 {
                self.inner.counts[state].fetch_add(*n, Ordering::Relaxed);
            }
        }
        for (state, n) in scratch.counts.iter().enumerate() {
            if *n < 0 {
                self.inner.counts[state].fetch_add(*n, Ordering::Relaxed);
            }
        }
        scratch.counts = [0; 4];
        self.emit_all(&mut scratch.events);
        // Alarm by alarm; a set's members in name order, which is the
        // order its failed set keeps (inserting in order stays on one path
        // of the tree).
        scratch
            .members
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for group in scratch.members.chunk_by(|a, b| a.0 == b.0) {
            self.alarm_members_changed(&group[0].0, group, now);
        }
        scratch.members.clear();
    }
    /// Times the driver was held up while lovebeat was busy, not
    /// suspended: counted, so a burst that starves expiry shows in
    /// `/metrics` and not only in the log.
    pub fn expiry_held_up(&self) -> u64 {
        self.inner.held_up.load(Ordering::Relaxed)
    }

    /// Entries in the timer wheel, and how many of them are superseded.
    pub fn timer_entries(&self) -> (usize, usize) {
        let t = self.timers();
        (t.entries, t.stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_long_gap_with_the_process_running_is_a_hold_up_not_a_suspension() {
        let quiet = Some(S / 4);
        assert_eq!(
            classify(7 * S, 7_000, quiet),
            Some(Gap::HeldUp {
                gap: 7 * S,
                silence: S / 4
            })
        );
        // The pulse was silent as long: the whole process did not run.
        assert_eq!(
            classify(7 * S, 7_000, Some(7 * S)),
            Some(Gap::Suspended(7 * S))
        );
        assert_eq!(classify(7 * S, 7_000, None), Some(Gap::Suspended(7 * S)));
        // A stepped wall clock is a jump, pulse or not.
        assert_eq!(classify(S, 9_000, quiet), Some(Gap::Jump(8_000)));
        assert_eq!(classify(S, 1_000, None), None);
        assert_eq!(classify(2 * S, 2_100, quiet), None);
    }

    #[test]
    fn the_pulse_beats_while_another_thread_is_held() {
        let pulse = Pulse::start().expect("pulse thread");
        std::thread::sleep(Duration::from_millis(1200));
        let silence = pulse.take();
        assert!(silence >= PULSE_EVERY, "{silence:?}");
        assert!(silence <= SUSPENDED, "{silence:?}");
    }
}
