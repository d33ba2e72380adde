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
    pub fn take_beaten(&self) -> HashSet<Name, TableHasher> {
        let mut beaten = self.inner.beaten.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *beaten)
    }

    /// Tells the watchers of an accepted beat, if any watch.
    #[inline]
    pub(super) fn note_beat(&self, name: &str) {
        if self.inner.beat_watchers.load(Ordering::Relaxed) > 0 {
            self.mark_beaten(name);
        }
    }

    #[cold]
    fn mark_beaten(&self, name: &str) {
        let mut beaten = self.inner.beaten.lock().unwrap_or_else(|e| e.into_inner());
        if !beaten.contains(name) {
            beaten.insert(Name::new(name));
        }
    }
}
