//! The service table: a `DashMap` reached through its raw shards, and every
//! `unsafe` the engine has.
//!
//! A beat must cost one hash, one shard lock and one probe, and with a
//! million services its memory must be prefetched a few lines ahead of
//! use. `DashMap`'s safe API hashes and probes again for each call, so
//! the engine reaches each shard's hashbrown `RawTable` itself (dashmap's
//! `raw-api` feature). What this relies on, checked by the test
//! `the_table_layout_is_what_the_prefetch_stages_assume`:
//!
//! - dashmap 6.2 (pinned in Cargo.toml) keeps a shard as
//!   `RwLock<hashbrown::raw::RawTable<(K, SharedValue<V>)>>` and picks the
//!   shard from the hash with `determine_shard`;
//! - hashbrown 0.14 (dashmap's, pinned by Cargo.lock) stores one control
//!   byte per bucket right after the entries (`data_end()`), probes from
//!   `hash & (buckets - 1)` in groups of 16 control bytes (SSE2; 8 on
//!   other architectures), and puts a new entry in the first free bucket of
//!   the first group that has one.
//!
//! Nothing outside this module touches the raw table.

use std::hash::BuildHasher;

use dashmap::{DashMap, SharedValue};

use super::service::{Name, Service};
use crate::prefetch::{prefetch_line, prefetch_range};

/// The hasher of the engine's maps: foldhash, seeded at random per process,
/// is several times faster than SipHash on short names and still resists
/// flooding.
pub type TableHasher = foldhash::fast::RandomState;

/// The services, sharded.
pub(crate) type ServiceMap = DashMap<Name, Service, TableHasher>;

/// Control bytes hashbrown reads per probe step, its group: 16 with SSE2
/// (x86), 8 elsewhere (its NEON and generic groups). A new entry goes to
/// the first free bucket of the first group that has one.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const PROBE_GROUP: usize = 16;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
const PROBE_GROUP: usize = 8;

/// Bytes of one entry of the service table (name and record, as dashmap
/// stores them in a bucket).
pub(crate) const ENTRY_SIZE: usize = std::mem::size_of::<(Name, SharedValue<Service>)>();

// An entry is prefetched as the lines it spans: at most two whole ones.
const _: () = assert!(ENTRY_SIZE <= 128);

/// The hash the table files `name` under.
#[inline]
pub(crate) fn hash(map: &ServiceMap, name: &str) -> u64 {
    map.hash_usize(&name) as u64
}

/// Finds `name` (whose hash is `hash`) under its shard's write lock and
/// calls `f` with it and `None`; if it is absent, inserts the service that
/// `create` makes (or returns `Ok(None)` when `create` makes nothing) and
/// calls `f` with the new entry and what `create` returned beside it. One
/// hash, one lock and one probe, for a new service as for an existing one.
/// The lock is held while `f` runs, so `f` may take the locks that come
/// after a service shard (see the engine's lock order).
pub(crate) fn with_entry<C, R, E>(
    map: &ServiceMap,
    name: &str,
    hash: u64,
    create: impl FnOnce() -> Result<Option<(Service, C)>, E>,
    f: impl FnOnce(&Name, &mut Service, Option<C>) -> R,
) -> Result<Option<R>, E> {
    let mut table = map.shards()[map.determine_shard(hash as usize)].write();
    if let Some(bucket) = table.find(hash, |(key, _)| key.as_str() == name) {
        // SAFETY: `find` returned a full bucket of this table, and the write
        // lock, held until `table` drops at the end of this function, keeps
        // the table in place and the entry ours alone.
        let (key, svc) = unsafe { bucket.as_mut() };
        return Ok(Some(f(key, svc.get_mut(), None)));
    }
    let Some((svc, created)) = create()? else {
        return Ok(None);
    };
    let hasher = map.hasher();
    let bucket = table.insert(
        hash,
        (Name::new(name), SharedValue::new(svc)),
        |(key, _)| hasher.hash_one(key),
    );
    // SAFETY: as above; the bucket was just filled under this lock.
    let (key, svc) = unsafe { bucket.as_mut() };
    Ok(Some(f(key, svc.get_mut(), Some(created))))
}

/// The shard `hash` is filed in: what a batch sorts by to take each
/// shard's lock once (`ShardGuard`).
#[inline]
pub(crate) fn shard_of(map: &ServiceMap, hash: u64) -> usize {
    map.determine_shard(hash as usize)
}

/// One shard under its write lock, for a batch that finds many services
/// of it (a mass expiry): one lock for the batch instead of one per
/// service. Beats to this shard wait while it lives; keep it short.
pub(crate) struct ShardGuard<'a> {
    table: dashmap::RwLockWriteGuard<'a, hashbrown::raw::RawTable<(Name, SharedValue<Service>)>>,
}

impl ShardGuard<'_> {
    /// Locks shard `shard` (from [`shard_of`]) for writing.
    pub(crate) fn lock(map: &ServiceMap, shard: usize) -> ShardGuard<'_> {
        ShardGuard {
            table: map.shards()[shard].write(),
        }
    }

    /// The service `name` (whose hash is `hash`, filed in this shard), if
    /// present.
    pub(crate) fn find_mut(&mut self, hash: u64, name: &str) -> Option<(&Name, &mut Service)> {
        let bucket = self.table.find(hash, |(key, _)| key.as_str() == name)?;
        // SAFETY: `find` returned a full bucket of this table, and the write
        // lock in `self`, held at least as long as the returned borrow of
        // `self`, keeps the table in place and the entry ours alone.
        let (key, svc) = unsafe { bucket.as_mut() };
        Some((key, svc.get_mut()))
    }
}

/// Sizes every shard for `total` services spread evenly, plus an eighth:
/// a million services loaded at start would otherwise regrow (and rehash)
/// each table a dozen times.
pub(crate) fn reserve(map: &ServiceMap, total: usize) {
    let shards = map.shards();
    let per_shard = total / shards.len() + total / shards.len() / 8 + 1;
    let hasher = *map.hasher();
    for shard in shards {
        shard
            .write()
            .reserve(per_shard, |(name, _)| hasher.hash_one(name));
    }
}

/// Calls `f` once per shard with that shard's services, under the shard's
/// read lock. `f` should only copy what it needs and do slow work after it
/// returns: every beat to the shard waits while it runs.
pub(crate) fn for_each_shard(
    map: &ServiceMap,
    mut f: impl FnMut(&mut dyn Iterator<Item = (&Name, &Service)>),
) {
    for shard in map.shards() {
        let table = shard.read();
        // SAFETY: the read guard keeps the table allocated and unchanged
        // for as long as the iterator and the references it yields live,
        // which is the call of `f` below.
        let mut items = unsafe { table.iter() }.map(|bucket| {
            // SAFETY: as above; the bucket is full (yielded by iter).
            let (name, svc) = unsafe { bucket.as_ref() };
            (name, svc.get())
        });
        f(&mut items);
    }
}

/// First prefetch stage: starts loading the control bytes where the probe
/// for `hash` begins. With a million services a beat misses cache (and
/// TLB) on the control bytes, on the entry and on the history it writes;
/// ingestion runs the three stages a few lines ahead of applying each
/// line, so those misses overlap instead of adding up.
#[inline]
pub(crate) fn prefetch_control(map: &ServiceMap, hash: u64) {
    let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() else {
        return; // A writer holds the shard: it is busy, and so is its memory.
    };
    // The allocated table always has at least 4 buckets; 1 is the empty
    // singleton, which has no control bytes of its own.
    if table.buckets() >= 2 {
        let pos = hash as usize & (table.buckets() - 1);
        prefetch_line(table.data_end().as_ptr().cast::<u8>().wrapping_add(pos));
    }
}

/// Second stage, once the control bytes are in cache: finds the entry
/// whose tag matches `hash` and starts loading it. Reading the tags is what
/// makes this exact: an entry sits at the first free bucket of its probe
/// group, often a few buckets (a few hundred bytes) past where the probe
/// begins. For a name not in the table it loads the bucket the new entry
/// will be written to: the first free one of the probe's first group, as
/// hashbrown chooses it.
#[inline]
pub(crate) fn prefetch_entry(map: &ServiceMap, hash: u64) {
    let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() else {
        return;
    };
    if table.buckets() < 2 {
        return;
    }
    // `find` compares tags only: the predicate does not read the entry. A
    // false tag match (1 in 128) just prefetches another entry.
    let bucket = match table.find(hash, |_| true) {
        Some(b) => b,
        None => {
            // A full first group sends the entry further: its start is
            // as good a guess as any.
            let slot = free_slot(&table, hash).unwrap_or(hash as usize & (table.buckets() - 1));
            // SAFETY: `free_slot` is below `buckets()` and the read lock
            // keeps the table in place; the bucket is only used for its
            // address.
            unsafe { table.bucket(slot) }
        }
    };
    // The pointer only reaches prefetch hints, never a dereference. An
    // entry spans two or three cache lines.
    prefetch_range(bucket.as_ptr().cast::<u8>(), ENTRY_SIZE);
}

/// The bucket a new entry for `hash` goes to when its probe's first group
/// has a free one: the first of them.
fn free_slot<T>(table: &hashbrown::raw::RawTable<T>, hash: u64) -> Option<usize> {
    let mask = table.buckets() - 1;
    let start = hash as usize & mask;
    (0..PROBE_GROUP)
        .map(|k| (start + k) & mask)
        // SAFETY: every index is masked below `buckets()` of an allocated
        // table (the callers check `buckets() >= 2`); this reads a control
        // byte only.
        .find(|&i| unsafe { !table.is_bucket_full(i) })
}

/// Third stage, once the entry is in cache: starts loading what a beat
/// will write out of line (its history slot). Takes the shard's read lock
/// only if it is free, like the other stages.
#[inline]
pub(crate) fn prefetch_history(map: &ServiceMap, name: &str, hash: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        Service::new(0, super::super::TIMEOUT_NONE, thin_vec::ThinVec::new())
    }

    /// What the prefetch stages assume of dashmap and hashbrown, checked on
    /// a real table: an upgrade that changes any of it fails here, not
    /// silently in the benchmarks.
    #[test]
    fn the_table_layout_is_what_the_prefetch_stages_assume() {
        let map: ServiceMap = DashMap::with_hasher_and_shard_amount(TableHasher::default(), 4);
        let mut predicted_hits = 0;
        for i in 0..2000 {
            let name = format!("svc.{i}");
            let h = hash(&map, &name);
            let shard = &map.shards()[map.determine_shard(h as usize)];
            // Where the second stage says a new entry will go.
            let predicted = {
                let table = shard.read();
                (table.buckets() >= 2 && table.len() + 1 < table.buckets() * 7 / 8)
                    .then(|| free_slot(&table, h))
                    .flatten()
            };
            with_entry::<_, _, ()>(
                &map,
                &name,
                h,
                || Ok(Some((service(), ()))),
                |_, _, new| {
                    assert!(new.is_some(), "created");
                },
            )
            .expect("created");
            let table = shard.read();
            let bucket = table
                .find(h, |(k, _)| k.as_str() == name)
                .expect("the entry is found by its hash");
            // SAFETY: the read lock is held and the table is allocated.
            let index = unsafe { table.bucket_index(&bucket) };
            // The control bytes follow the entries, one per bucket, and a
            // full one holds the top 7 bits of the hash.
            // SAFETY: `index` is a full bucket of this table, so its
            // control byte is within the allocation.
            let ctrl = unsafe { *table.data_end().as_ptr().cast::<u8>().add(index) };
            assert_eq!(u64::from(ctrl), h >> 57, "control byte of {name}");
            // SAFETY: as above; only the address is compared.
            let entry = unsafe { table.bucket(index) }.as_ptr().cast::<u8>();
            assert_eq!(entry, bucket.as_ptr().cast::<u8>());
            if let Some(slot) = predicted {
                // No growth happened: the new entry is where predicted.
                assert_eq!(index, slot, "a new entry goes to the first free bucket");
                predicted_hits += 1;
            }
        }
        assert!(
            predicted_hits > 1000,
            "{predicted_hits} predictions checked"
        );
    }

    /// Prefetching is harmless whatever the table holds: empty, a few
    /// services, the very name being looked up, or a hash from before the
    /// table changed.
    #[test]
    fn prefetch_on_any_table() {
        let map: ServiceMap = DashMap::with_hasher_and_shard_amount(TableHasher::default(), 4);
        let h = hash(&map, "nothing.here");
        prefetch_control(&map, h);
        prefetch_entry(&map, h);
        prefetch_history(&map, "nothing.here", h);
        let hx = hash(&map, "x");
        with_entry::<_, _, ()>(&map, "x", hx, || Ok(Some((service(), ()))), |_, _, _| ())
            .expect("x");
        prefetch_entry(&map, h);
        for name in ["x", "y"] {
            let h = hash(&map, name);
            prefetch_control(&map, h);
            prefetch_entry(&map, h);
            prefetch_history(&map, name, h);
        }
        assert!(map.contains_key("x") && !map.contains_key("y"));
    }
}
