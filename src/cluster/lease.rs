//! Partition leases (docs/CLUSTER.md, "Leases"): a key per partition in
//! the `lovebeat-leases` bucket, whose `max_age` is the lease time. A node
//! takes a free partition with a create (it fails if the key exists),
//! renews it with an update that names the revision it holds (it fails if
//! anyone wrote since), and gives it back with a delete that names it
//! too. The revision is the fencing token. JetStream removes a key that
//! was not renewed within the lease, and a node notices by reading.
//!
//! An owner trusts its lease only until its own monotonic clock says the
//! lease may have ended: the time it sent the last successful renewal plus
//! the lease, less a margin. The server counts the lease from when it
//! stored the renewal, which is later, so the owner stops before anyone
//! else can take over; a node that was paused (SIGSTOP) and wakes up finds
//! its leases past their time and acts on none of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What an owner keeps of its lease: until when (by this process's
/// monotonic clock) it may act, and the revision it holds.
#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    /// Nanoseconds after `base` until which the lease holds.
    until_ns: AtomicU64,
    /// The revision of the lease key this node wrote last: the token.
    token: AtomicU64,
}

impl LeaseClock {
    /// A lease taken with revision `token` by a write sent at `sent`.
    pub fn new(token: u64, sent: Instant, lease: Duration) -> LeaseClock {
        let c = LeaseClock {
            base: sent,
            until_ns: AtomicU64::new(0),
            token: AtomicU64::new(token),
        };
        c.set(token, sent, lease);
        c
    }

    /// Records a renewal with revision `token`, sent at `sent`. A lease
    /// that has lapsed stays lapsed (false): its owner has stopped, or is
    /// stopping, and a partition is taken anew (restored and replayed),
    /// never resumed, since the engine missed what came meanwhile.
    pub fn renewed(&self, token: u64, sent: Instant, lease: Duration) -> bool {
        if !self.valid() {
            return false;
        }
        self.set(token, sent, lease);
        true
    }

    fn set(&self, token: u64, sent: Instant, lease: Duration) {
        let until = sent.saturating_duration_since(self.base) + usable(lease);
        self.until_ns.store(
            until.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Release,
        );
        self.token.store(token, Ordering::Release);
    }

    /// Whether the lease still holds at `now`.
    pub fn valid_at(&self, now: Instant) -> bool {
        let until = Duration::from_nanos(self.until_ns.load(Ordering::Acquire));
        now.saturating_duration_since(self.base) < until
    }

    /// Whether the lease still holds now.
    pub fn valid(&self) -> bool {
        self.valid_at(Instant::now())
    }

    /// Ends the lease now: a renewal was refused, because someone else
    /// wrote the key or because a renewal of ours was stored but its
    /// answer lost; either way the revision held is no longer the key's.
    pub fn revoke(&self) {
        self.until_ns.store(0, Ordering::Release);
    }

    /// The revision held.
    pub fn token(&self) -> u64 {
        self.token.load(Ordering::Acquire)
    }
}

/// The part of a lease an owner acts on: all of it less a tenth (at least
/// 200 ms), for clock rate differences and the server's own expiry timer.
pub fn usable(lease: Duration) -> Duration {
    lease.saturating_sub((lease / 10).max(Duration::from_millis(200)))
}

/// How often leases are renewed and the buckets polled: a quarter of the
/// lease, so three renewals in a row can fail before the lease ends.
pub fn poll_every(lease: Duration) -> Duration {
    lease / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease holds for its usable part from the renewal's sending, not
    /// from when it was looked at; a later renewal moves the end; a node
    /// waking from a pause past the end finds it lapsed.
    #[test]
    fn a_lease_lapses_by_the_owners_own_clock() {
        let lease = Duration::from_secs(10);
        let t0 = Instant::now();
        let c = LeaseClock::new(7, t0, lease);
        assert!(c.valid_at(t0 + Duration::from_secs(8)));
        assert!(!c.valid_at(t0 + Duration::from_millis(9_000)));
        c.set(9, t0 + Duration::from_secs(5), lease);
        assert_eq!(c.token(), 9);
        assert!(c.valid_at(t0 + Duration::from_secs(13)));
        assert!(
            !c.valid_at(t0 + Duration::from_secs(60)),
            "a paused node wakes to a lapsed lease"
        );
        assert_eq!(usable(Duration::from_secs(2)), Duration::from_millis(1_800));
        let lapsed = LeaseClock::new(3, Instant::now() - Duration::from_secs(60), lease);
        assert!(
            !lapsed.renewed(4, Instant::now(), lease),
            "a lapsed lease is not revived"
        );
        assert!(!lapsed.valid());
        let fresh = LeaseClock::new(3, Instant::now(), lease);
        assert!(fresh.renewed(4, Instant::now(), lease));
        assert_eq!(fresh.token(), 4);
    }
}
