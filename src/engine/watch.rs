//! Watchers: what the engine does only while someone looks.
//!
//! A million new services, or a hundred thousand expiring at once, are
//! that many service events for every subscriber, and accepted beats can
//! be millions a second. So service events are built and sent only while a
//! [`ServiceWatch`] lives (an event log, statsd metrics, a websocket
//! client, debug logs), and accepted beats are collected (as a set of
//! names, each once per drain) only while a [`BeatWatch`] lives.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::service::Name;
use super::table::TableHasher;
use super::Engine;

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

impl Engine {
    /// Turns on service events (added, state changed, updated, removed) for
    /// as long as the returned guard lives.
    pub fn watch_services(&self) -> ServiceWatch {
        self.inner.service_watchers.fetch_add(1, Ordering::Relaxed);
        ServiceWatch {
            engine: self.clone(),
        }
    }

    /// Starts collecting the names of beaten services for a live view.
    /// Accepted beats publish no event; while at least one [`BeatWatch`]
    /// lives, the engine instead keeps the set of services beaten since
    /// the last [`Engine::take_beaten`], so a watcher sees each at most once
    /// per drain.
    pub fn watch_beats(&self) -> BeatWatch {
        self.inner.beat_watchers.fetch_add(1, Ordering::Relaxed);
        BeatWatch {
            engine: self.clone(),
        }
    }

    /// The services beaten since the previous call (while watched).
    pub fn take_beaten(&self) -> Beaten {
        Beaten(
            self.inner
                .beaten
                .iter()
                .map(|shard| std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner())))
                .filter(|set| !set.is_empty())
                .collect(),
        )
    }

    /// Tells the watchers of an accepted beat of `name` (whose table hash
    /// is `hash`), if any watch.
    #[inline]
    pub(super) fn note_beat(&self, name: &str, hash: u64) {
        if self.inner.beat_watchers.load(Ordering::Relaxed) > 0 {
            self.mark_beaten(name, hash);
        }
    }

    #[cold]
    fn mark_beaten(&self, name: &str, hash: u64) {
        let shard = &self.inner.beaten[beaten_shard(hash)];
        let mut beaten = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !beaten.contains(name) {
            beaten.insert(Name::new(name));
        }
    }
}

/// How many locks the set of beaten names is split over: UDP readers on
/// different cores beating different services, with the UI open, meet
/// on the same lock once in this many beats instead of on every one.
pub(super) const BEATEN_SHARDS: usize = 64;

/// The lock of the beaten names a name's table hash falls in: bits above
/// the ones the table uses within a shard, so the names of one table
/// shard spread over these too.
fn beaten_shard(hash: u64) -> usize {
    (hash >> 40) as usize % BEATEN_SHARDS
}

/// The services beaten since the previous [`Engine::take_beaten`], as the
/// sets of its shards (a name is in one of them at most).
#[derive(Default)]
pub struct Beaten(Vec<HashSet<Name, TableHasher>>);

impl Beaten {
    /// How many services were beaten.
    pub fn len(&self) -> usize {
        self.0.iter().map(HashSet::len).sum()
    }

    /// True when none was.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for Beaten {
    type Item = Name;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<HashSet<Name, TableHasher>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}
