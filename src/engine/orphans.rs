//! Orphans: services that could not join an alarm because `[limits]
//! max_alarms` was reached when they were made (SPEC §5). They are kept by
//! the alarm they wait for, in the order they were refused, so that a
//! freed place (a deleted alarm) goes to them and all the services waiting
//! for that alarm join it at once, in their current state; and they are
//! counted, so `lovebeat.self.capacity` stays ERROR while any waits.
//!
//! Nothing here scans the services: what is waiting is bounded by
//! `max_services`, and adopting costs the members that join.
//!
//! Lock order: the orphans' mutex is taken last and alone (no other lock
//! is taken while it is held), so it may be taken under a service shard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::service::Name;
use super::{table, Engine, EventKind, TableHasher};

/// The alarms services wait for, and the services waiting.
#[derive(Default)]
pub(super) struct Orphans {
    /// Each awaited alarm: the section that makes it and who waits.
    waiting: HashMap<Arc<str>, Waiting, TableHasher>,
    /// Awaited alarms in the order they were first refused (a name that
    /// no longer waits is skipped when it comes up; `compact` bounds them).
    queue: VecDeque<Arc<str>>,
    /// Waiting services, with how many alarms each waits for.
    services: HashMap<Name, u32, TableHasher>,
}

/// Who waits for one alarm.
struct Waiting {
    /// The `[[alarms]]` section that makes it.
    def: usize,
    /// The services waiting to join it.
    services: HashSet<Name, TableHasher>,
}

impl Orphans {
    /// Drops the queue's names that no longer wait (and repeats), once they
    /// outnumber those that do: the queue stays within twice the waiting
    /// alarms, at an amortised constant cost per name.
    fn compact(&mut self) {
        if self.queue.len() <= 2 * self.waiting.len() + 64 {
            return;
        }
        let mut seen: HashSet<Arc<str>, TableHasher> = HashSet::default();
        let waiting = &self.waiting;
        self.queue
            .retain(|a| waiting.contains_key(a) && seen.insert(a.clone()));
    }
}

impl Engine {
    /// `service` could not join `refused` (alarms beyond `max_alarms`): it
    /// waits for them. Called as the service is made, under its shard lock.
    pub(super) fn orphan(&self, service: &Name, refused: &[(Arc<str>, usize)]) {
        if refused.is_empty() {
            return;
        }
        let mut o = self.orphans_lock();
        let o = &mut *o;
        let mut added = 0;
        for (alarm, def) in refused {
            let w = o.waiting.entry(alarm.clone()).or_insert_with(|| {
                o.queue.push_back(alarm.clone());
                Waiting {
                    def: *def,
                    services: HashSet::default(),
                }
            });
            if w.services.insert(service.clone()) {
                added += 1;
            }
        }
        if added > 0 {
            *o.services.entry(service.clone()).or_insert(0) += added;
        }
        self.inner
            .orphan_count
            .store(o.services.len(), Ordering::Relaxed);
    }

    /// `service` was deleted: it waits for nothing any more.
    pub(super) fn forget_orphan(&self, service: &str) {
        if self.inner.orphan_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut o = self.orphans_lock();
        if o.services.remove(service).is_none() {
            return;
        }
        for (alarm, _) in self.inner.matcher.alarms_for(service) {
            if let Some(w) = o.waiting.get_mut(alarm.as_str()) {
                w.services.remove(service);
                if w.services.is_empty() {
                    o.waiting.remove(alarm.as_str());
                }
            }
        }
        o.compact();
        self.inner
            .orphan_count
            .store(o.services.len(), Ordering::Relaxed);
    }

    /// Services waiting for a place under `max_alarms` to join an alarm.
    pub fn orphans(&self) -> usize {
        self.inner.orphan_count.load(Ordering::Relaxed)
    }

    /// Gives the places free under `max_alarms` to the alarms orphans wait
    /// for, oldest first, until one does not fit: each such alarm is made
    /// (or listed again) and every service waiting for it joins it in its
    /// current state (an orphan in ERROR makes it ERROR, with its alerts).
    /// Takes no lock on entry.
    pub(super) fn adopt_orphans(&self, now: i64) {
        if self.orphans() == 0 {
            return;
        }
        // Each round takes one name off the queue or stops.
        let rounds = self.orphans_lock().queue.len();
        for _ in 0..rounds {
            let Some(alarm) = self.next_awaited() else {
                return;
            };
            let Some(key) = self.alarm_place(&alarm) else {
                return;
            };
            let (def, services) = {
                let mut o = self.orphans_lock();
                let o = &mut *o;
                if o.queue.front() == Some(&alarm) {
                    o.queue.pop_front();
                }
                let Some(w) = o.waiting.remove(&alarm) else {
                    continue;
                };
                for s in &w.services {
                    if let Some(n) = o.services.get_mut(s) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            o.services.remove(s);
                        }
                    }
                }
                o.compact();
                self.inner
                    .orphan_count
                    .store(o.services.len(), Ordering::Relaxed);
                (w.def, w.services)
            };
            for service in services {
                self.join_late(&service, &key, def, now);
            }
        }
    }

    /// The alarm at the head of the queue that services still wait for.
    fn next_awaited(&self) -> Option<Arc<str>> {
        let mut o = self.orphans_lock();
        while let Some(a) = o.queue.front() {
            if o.waiting.contains_key(a) {
                return Some(a.clone());
            }
            o.queue.pop_front();
        }
        None
    }

    /// An existing service joins `alarm` (made if needed): under its shard
    /// lock, as a new member joins.
    fn join_late(&self, service: &Name, alarm: &Arc<str>, def: usize, now: i64) {
        let hash = table::hash(&self.inner.services, service);
        let _ = table::with_entry(
            &self.inner.services,
            service,
            hash,
            || Ok::<_, Infallible>(None::<(super::Service, ())>),
            |key, svc, _| {
                let Err(at) = svc.alarms.binary_search(alarm) else {
                    return;
                };
                svc.alarms.insert(at, alarm.clone());
                self.alarm_join(alarm, def, key, svc.state, now);
                self.emit_service(now, || EventKind::ServiceUpdated(key.clone()));
            },
        );
    }

    fn orphans_lock(&self) -> std::sync::MutexGuard<'_, Orphans> {
        self.inner.orphans.lock().unwrap_or_else(|e| e.into_inner())
    }
}
