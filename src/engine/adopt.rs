//! What cluster mode (src/cluster/, docs/CLUSTER.md) needs of the engine:
//! taking a partition's services in when this node becomes its owner,
//! copying them out for a snapshot, letting them go when the node no
//! longer owns them, and holding expiry while a lease is in doubt.
//!
//! Unlike a load at start (`restore.rs`), adopting gives no restart
//! grace: the beats of a handover waited in the stream and were replayed
//! with their own times, so each deadline counts from the service's real
//! last beat, and one that passed during the handover is reported at once.

use std::sync::Arc;

use super::job::JobRecord;
use super::restore::Arrival;
use super::service::{Name, Service};
use super::{Engine, StoredService};

/// Says whether expiry may act now (cluster mode: every lease this node
/// relies on is still within its time).
pub type ExpiryGate = Arc<dyn Fn() -> bool + Send + Sync>;

impl Engine {
    /// Takes services in as they are, without restart grace: a stored
    /// ERROR or muted service stays so, any other is OK with its deadline
    /// counted from its last beat; one whose deadline has passed expires
    /// at the next tick, as a transition like any other. A name already
    /// here is replaced. Publishes no events of its own.
    pub fn adopt(&self, services: Vec<StoredService>, now: i64) {
        for s in services {
            if self.inner.services.contains_key(s.name.as_str()) {
                self.unload_service(&s.name);
            }
            self.insert_stored(s, now, Arrival::Handover);
        }
        for mut a in self.inner.alarms.iter_mut() {
            let after = a.evaluate();
            if a.members > 0 && after != a.state {
                a.transition(after, now);
            }
        }
    }

    /// The services whose names `keep` accepts, as records for a snapshot
    /// (or for [`Engine::adopt`]). One shard's read lock at a time.
    pub fn export(&self, keep: impl Fn(&str) -> bool) -> Vec<StoredService> {
        let mut out = Vec::new();
        self.for_each_shard(|items| {
            for (name, svc) in items {
                if keep(name) {
                    out.push(stored(name, svc));
                }
            }
        });
        out
    }

    /// Lets go of the services whose names `gone` accepts: they leave the
    /// engine, its counts, timers and alarms without an event, since they
    /// live on at their new owner. Returns how many left.
    pub fn evict(&self, gone: impl Fn(&str) -> bool) -> usize {
        let names: Vec<Name> = self
            .names()
            .into_iter()
            .filter(|n| gone(n.as_str()))
            .collect();
        for n in &names {
            self.unload_service(n);
        }
        names.len()
    }

    /// Settles every alarm whose members give another state than it is
    /// in, as a transition its receivers hear of: the cluster's alerter
    /// loads alarms recorded ERROR whose failed members all recovered
    /// while no alerter ran, and which no member will ever leave.
    pub fn settle_alarms(&self, now: i64) {
        let names: Vec<Arc<str>> = self
            .inner
            .alarms
            .iter()
            .filter(|a| a.state != super::State::New && a.evaluate() != a.state)
            .map(|a| a.key().clone())
            .collect();
        for n in names {
            if let Some(mut a) = self.inner.alarms.get_mut(&n) {
                self.alarm_settle(&n, &mut a, false, now);
            }
        }
    }

    /// Sets what expiry asks before it acts (cluster mode); once.
    pub fn set_expiry_gate(&self, gate: ExpiryGate) {
        let _ = self.inner.expiry_gate.set(gate);
    }

    /// Whether expiry may act now: always, unless a gate says otherwise.
    pub(super) fn expiry_allowed(&self) -> bool {
        self.inner.expiry_gate.get().is_none_or(|g| g())
    }
}

/// A service's record, as a save writes it.
fn stored(name: &Name, svc: &Service) -> StoredService {
    StoredService {
        name: name.clone(),
        last_beat: svc.last_beat,
        timeout: svc.timeout_wire(),
        state: svc.state,
        muted_since: svc.muted_since,
        last_state_change: svc.last_state_change,
        beat_history: svc.intervals().collect(),
        job: svc.job.as_deref().map(JobRecord::from_ext).map(Box::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, EngineConfig, State, Timeout};

    const T0: i64 = 1_700_000_000_000;

    /// Adopted services keep their own deadlines (no restart grace): one
    /// whose last beat is older than its timeout expires at the next tick,
    /// one that beat recently stays OK, a stored ERROR stays ERROR; and an
    /// export of them adopted elsewhere gives the same services.
    #[test]
    fn adopted_services_keep_their_deadlines() {
        let old = Engine::new(EngineConfig::default(), T0);
        for (name, at) in [("stopped", T0), ("alive", T0 + 25_000)] {
            old.change(name, Change::timeout(Timeout::After(10_000)), at)
                .expect("made");
            old.change(name, Change::beat(), at).expect("beat");
        }
        let exported = old.export(|_| true);
        assert_eq!(exported.len(), 2);
        let new = Engine::new(EngineConfig::default(), T0 + 30_000);
        new.adopt(exported, T0 + 30_000);
        let mut due = Vec::new();
        new.tick(T0 + 30_001, &mut due);
        assert_eq!(new.service_state("stopped"), Some(State::Error));
        assert_eq!(new.service_state("alive"), Some(State::Ok));
        assert_eq!(
            new.service("alive", false).map(|s| s.last_beat),
            Some(T0 + 25_000)
        );
        assert_eq!(new.evict(|n| n == "stopped"), 1);
        assert_eq!(new.service_count(), 1);
        assert_eq!(new.status(), (1, 0));
    }

    /// While the gate is closed (a lease in doubt), expiry marks nothing,
    /// however far past its deadline a service is; opened, it does.
    #[tokio::test]
    async fn a_closed_gate_holds_expiry() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let now = crate::clock::now_ms();
        let e = Engine::new(EngineConfig::default(), now);
        let open = Arc::new(AtomicBool::new(false));
        e.set_expiry_gate({
            let open = open.clone();
            Arc::new(move || open.load(Ordering::SeqCst))
        });
        e.change("s", Change::timeout(Timeout::After(50)), now)
            .expect("made");
        e.change("s", Change::beat(), now).expect("beat");
        let stop = tokio_util::sync::CancellationToken::new();
        let driver = tokio::spawn(e.clone().run_expiry(
            stop.clone(),
            std::time::Duration::from_secs(60),
            || {},
        ));
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(e.service_state("s"), Some(State::Ok), "held by the gate");
        open.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while e.service_state("s") != Some(State::Error) {
            assert!(
                std::time::Instant::now() < deadline,
                "never expired once open"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = driver.await;
    }
}
