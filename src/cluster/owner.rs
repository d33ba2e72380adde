//! Owning a partition (docs/CLUSTER.md, "Owning a partition"): restore
//! its latest snapshot, replay the stream from the snapshot's sequence
//! into a scratch engine (no expiry runs there, so a beat further on in the
//! backlog is never preceded by a false expiry), hand the result to the
//! node's engine in one go, then apply the live commands as they come and
//! snapshot every `SNAPSHOT_EVERY`. Whenever the lease lapses by this
//! node's clock, the partition's services leave the engine and nothing
//! more is applied.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::lease::LeaseClock;
use super::wire::{self, Command, Op};
use super::Shared;
use crate::clock::now_ms;
use crate::engine::job::JobRecord;
use crate::engine::{Engine, StoredService};

/// How often an owner snapshots a partition that changed.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

/// The first bytes of a snapshot value, then its stream sequence and the
/// lease token of its writer (both u64, little-endian), then gzip of the
/// services as database `SERV` lines.
const SNAPSHOT_MAGIC: &[u8; 4] = b"LBS1";

/// Why an owner stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Asked to let the partition go while the lease held: snapshotted.
    Released,
    /// The lease lapsed, or could not be used.
    Lost,
}

/// Owns partition `p` until `stop` or until its lease lapses; its services
/// are out of the engine when this returns.
pub async fn run(
    shared: Arc<Shared>,
    p: u32,
    clock: Arc<LeaseClock>,
    stop: CancellationToken,
) -> Ended {
    let ended = own(&shared, p, &clock, &stop).await;
    let partitions = shared.partitions;
    let gone = shared.engine.evict(|n| in_partition(n, partitions, p));
    tracing::info!("partition {p}: no longer owned ({ended:?}); {gone} services let go");
    ended
}

async fn own(
    shared: &Arc<Shared>,
    p: u32,
    clock: &Arc<LeaseClock>,
    stop: &CancellationToken,
) -> Ended {
    let started = std::time::Instant::now();
    // NATS may be moving a stream's leader (a server died): what fails
    // here is tried again while the lease holds, instead of leaving the
    // partition to wait until the lease ages out.
    let (scratch, messages, mut seq, from_snapshot, replayed) = loop {
        match catch_up(shared, p, clock, stop).await {
            Ok(done) => break done,
            Err(CatchUp::Stop) => return Ended::Lost,
            Err(CatchUp::Retry(e)) => {
                tracing::warn!("partition {p}: {e:#}; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => return Ended::Lost,
                }
            }
        }
    };
    if !clock.valid() || stop.is_cancelled() {
        return Ended::Lost;
    }
    shared.engine.adopt(scratch.export(|_| true), now_ms());
    drop(scratch);
    tracing::info!(
        "partition {p}: owned (token {}): {from_snapshot} services from the snapshot, {replayed} commands replayed up to sequence {seq}, in {} ms",
        clock.token(),
        started.elapsed().as_millis()
    );
    shared.owned.fetch_add(1, Ordering::Relaxed);
    // Other nodes' reads of this partition's services are answered here
    // while it is owned (`reads.rs`).
    let reading = stop.child_token();
    let reads = tokio::spawn(super::reads::serve(
        shared.clone(),
        p,
        clock.clone(),
        reading.clone(),
    ));
    // Its failed members per alarm are published for the alerter and
    // every node's /api/alarms while it is owned (`alarms.rs`).
    let publishing = tokio::spawn(super::alarms::publish(
        shared.clone(),
        p,
        clock.clone(),
        reading.clone(),
    ));
    let ended = live(shared, p, clock, stop, messages, &mut seq).await;
    reading.cancel();
    let _ = reads.await;
    // Not waited for: a write NATS is slow to answer must not hold the
    // partition's release up (its lease clock stops it anyway).
    publishing.abort();
    let _ = publishing.await;
    shared.owned.fetch_sub(1, Ordering::Relaxed);
    ended
}

/// Why a catch-up did not finish.
enum CatchUp {
    /// The lease lapsed, or the partition is being given back.
    Stop,
    /// NATS failed; worth trying again while the lease holds.
    Retry(anyhow::Error),
}

/// The partition's snapshot and the stream after it, applied to a scratch
/// engine: the engine, the messages from there on, the sequence reached,
/// and how many services and commands it took.
async fn catch_up(
    shared: &Shared,
    p: u32,
    clock: &LeaseClock,
    stop: &CancellationToken,
) -> Result<(Engine, consumer::pull::Ordered, u64, usize, u64), CatchUp> {
    let (mut seq, services) = restore(shared, p)
        .await
        .map_err(|e| CatchUp::Retry(e.context("cannot read its snapshot")))?;
    let from_snapshot = services.len();
    let scratch = Engine::new((shared.engine_config)(), 0);
    scratch.adopt(services, now_ms());
    let (mut messages, mut pending) = open(shared, p, seq + 1)
        .await
        .map_err(|e| CatchUp::Retry(e.context("cannot read the stream")))?;
    let mut replayed = 0u64;
    while pending > 0 {
        if !clock.valid() {
            return Err(CatchUp::Stop);
        }
        let next = tokio::select! {
            m = tokio::time::timeout(Duration::from_secs(5), messages.next()) => m,
            _ = stop.cancelled() => return Err(CatchUp::Stop),
        };
        let Ok(Some(Ok(m))) = next else {
            return Err(CatchUp::Retry(anyhow::anyhow!(
                "the stream stopped during the replay"
            )));
        };
        let Ok(info) = m.info() else { continue };
        seq = info.stream_sequence;
        pending = info.pending;
        replayed += apply(shared, &scratch, p, &m.payload);
    }
    if !clock.valid() || stop.is_cancelled() {
        return Err(CatchUp::Stop);
    }
    Ok((scratch, messages, seq, from_snapshot, replayed))
}

/// Applies live commands and snapshots until the lease lapses or `stop`.
async fn live(
    shared: &Shared,
    p: u32,
    clock: &LeaseClock,
    stop: &CancellationToken,
    mut messages: consumer::pull::Ordered,
    seq: &mut u64,
) -> Ended {
    let mut snapshotted = 0;
    let mut next_snapshot = tokio::time::Instant::now();
    // Checked often enough that a lapsed lease stops the owner within a
    // fraction of the lease, even when no command comes.
    let mut check = tokio::time::interval(Duration::from_millis(100));
    let mut progress = tokio::time::Instant::now();
    let mut next_stall_check = tokio::time::Instant::now() + STALL_CHECK;
    loop {
        if !clock.valid() {
            return Ended::Lost;
        }
        let now = tokio::time::Instant::now();
        if now >= next_stall_check {
            next_stall_check = now + STALL_CHECK;
            if now.duration_since(progress) >= STALL_CHECK && behind(shared, p, *seq).await {
                // The stream has commands this owner has not seen for a
                // while: its consumer stalled (a NATS server died and the
                // client moved to another). It is opened again where the
                // owner is, so beats never wait for long.
                match open(shared, p, *seq + 1).await {
                    Ok((m, _)) => {
                        tracing::warn!(
                            "partition {p}: reading the stream had stalled; reopened after sequence {seq}"
                        );
                        messages = m;
                    }
                    Err(e) => tracing::warn!("partition {p}: reading the stream stalled: {e:#}"),
                }
                progress = tokio::time::Instant::now();
            }
        }
        if tokio::time::Instant::now() >= next_snapshot {
            if *seq != snapshotted || snapshotted == 0 {
                match snapshot(shared, p, *seq, clock).await {
                    Ok(()) => snapshotted = *seq,
                    Err(e) => tracing::warn!("partition {p}: snapshot not written: {e:#}"),
                }
            }
            next_snapshot = tokio::time::Instant::now() + SNAPSHOT_EVERY;
        }
        tokio::select! {
            m = messages.next() => match m {
                Some(Ok(m)) => {
                    if !clock.valid() {
                        return Ended::Lost;
                    }
                    if let Ok(info) = m.info() {
                        *seq = info.stream_sequence;
                    }
                    progress = tokio::time::Instant::now();
                    apply(shared, &shared.engine, p, &m.payload);
                }
                Some(Err(e)) => {
                    tracing::warn!("partition {p}: reading the stream: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return Ended::Lost,
            },
            _ = check.tick() => {}
            _ = stop.cancelled() => {
                if clock.valid() {
                    if let Err(e) = snapshot(shared, p, *seq, clock).await {
                        tracing::warn!("partition {p}: last snapshot not written: {e:#}");
                    }
                    return Ended::Released;
                }
                return Ended::Lost;
            }
        }
    }
}

/// How long an owner may see nothing new before it asks whether the
/// stream holds more than it has applied.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Reads partition `p`'s subject from sequence `from`: the messages and
/// how many there were when it began.
async fn open(
    shared: &Shared,
    p: u32,
    from: u64,
) -> anyhow::Result<(consumer::pull::Ordered, u64)> {
    tokio::time::timeout(OPEN_TIMEOUT, open_now(shared, p, from))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from NATS in {OPEN_TIMEOUT:?}"))?
}

/// How long opening the stream may take before it is tried again.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

async fn open_now(
    shared: &Shared,
    p: u32,
    from: u64,
) -> anyhow::Result<(consumer::pull::Ordered, u64)> {
    let consumer = shared
        .stream
        .create_consumer(OrderedConfig {
            filter_subject: wire::subject(p),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((messages, pending))
}

/// Whether the stream holds a command of partition `p` after `seq`.
async fn behind(shared: &Shared, p: u32, seq: u64) -> bool {
    match tokio::time::timeout(
        STALL_CHECK,
        shared
            .stream
            .get_last_raw_message_by_subject(&wire::subject(p)),
    )
    .await
    {
        Ok(Ok(m)) => m.sequence > seq,
        _ => false,
    }
}

/// Whether `name` is one of partition `p`'s services: lovebeat's own
/// (`lovebeat.self.*`) are each node's, in no partition.
fn in_partition(name: &str, partitions: u32, p: u32) -> bool {
    !crate::engine::is_internal(name) && wire::partition_of(name, partitions) == p
}

/// Applies one message's commands to `engine`; returns how many. A
/// command whose name is not of this partition (no node of this version
/// writes one) is skipped, so no service is held by the wrong owner.
fn apply(shared: &Shared, engine: &Engine, p: u32, payload: &[u8]) -> u64 {
    let mut n = 0;
    let r = wire::decode(payload, |c: Command| {
        if !in_partition(&c.name, shared.partitions, p) {
            return;
        }
        n += 1;
        let _ = match c.op {
            Op::Change(change) => engine.change(&c.name, change, c.ts),
            Op::Mute(until) => engine.mute_until(&c.name, until, c.ts),
            Op::Unmute => engine.unmute(&c.name, c.ts),
            Op::Delete => {
                engine.delete(&c.name, c.ts);
                Ok(())
            }
        };
    });
    if let Err(e) = r {
        shared.bad_messages.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("partition {p}: a command message was skipped: {e}");
    }
    n
}

/// A service as a `SERV` line of the database (`db/format.rs` reads it).
#[derive(Serialize)]
struct Record<'a> {
    name: &'a str,
    last_beat: i64,
    beat_history: &'a [u32],
    timeout: i64,
    state: &'static str,
    muted_since: i64,
    last_state_change: i64,
    #[serde(flatten)]
    job: Option<&'a JobRecord>,
}

/// Writes partition `p`'s services, as of stream sequence `seq`.
async fn snapshot(shared: &Shared, p: u32, seq: u64, clock: &LeaseClock) -> anyhow::Result<()> {
    let partitions = shared.partitions;
    let services = shared.engine.export(|n| in_partition(n, partitions, p));
    let token = clock.token();
    let value =
        tokio::task::spawn_blocking(move || encode_snapshot(&services, seq, token)).await??;
    if !clock.valid() {
        anyhow::bail!("the lease lapsed");
    }
    shared
        .snapshots
        .put(wire::partition_key(p), value.into())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    shared.snapshots_written.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A snapshot's bytes.
pub fn encode_snapshot(
    services: &[StoredService],
    seq: u64,
    token: u64,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&token.to_le_bytes());
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut line = Vec::new();
    for s in services {
        line.clear();
        line.extend_from_slice(b"SERV\t");
        serde_json::to_writer(
            &mut line,
            &Record {
                name: s.name.as_str(),
                last_beat: s.last_beat,
                beat_history: &s.beat_history,
                timeout: s.timeout,
                state: s.state.as_str(),
                muted_since: s.muted_since,
                last_state_change: s.last_state_change,
                job: s.job.as_deref(),
            },
        )?;
        line.push(b'\n');
        gz.write_all(&line)?;
    }
    Ok(gz.finish()?)
}

/// Reads a snapshot: its sequence and services.
pub fn decode_snapshot(value: &[u8]) -> anyhow::Result<(u64, Vec<StoredService>)> {
    let head = SNAPSHOT_MAGIC.len() + 16;
    if value.len() < head || &value[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        anyhow::bail!("not a lovebeat snapshot");
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&value[4..12]);
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&value[head..])
        .take(1 << 30)
        .read_to_end(&mut text)?;
    let loaded = crate::db::decode(&mut text, std::path::Path::new("snapshot"))?;
    Ok((u64::from_le_bytes(seq), loaded.services))
}

/// The latest snapshot of partition `p`: its sequence (0: none) and
/// services.
async fn restore(shared: &Shared, p: u32) -> anyhow::Result<(u64, Vec<StoredService>)> {
    let value = shared
        .snapshots
        .get(wire::partition_key(p))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(v) = value else {
        return Ok((0, Vec::new()));
    };
    match tokio::task::spawn_blocking(move || decode_snapshot(&v)).await? {
        Ok(s) => Ok(s),
        // A snapshot that cannot be read must not keep the partition
        // unowned for ever: the stream holds every command of the last
        // 7 days, replayed from its start instead.
        Err(e) => {
            tracing::error!(
                "partition {p}: its snapshot cannot be read ({e:#}); replaying the whole stream instead"
            );
            Ok((0, Vec::new()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, EngineConfig, Timeout};

    /// A snapshot gives back the services it was made of, with its
    /// sequence; anything else is an error, not a panic.
    #[test]
    fn snapshots_round_trip() {
        let e = Engine::new(EngineConfig::default(), 1_000);
        e.change("a", Change::timeout(Timeout::After(5_000)), 2_000)
            .expect("a");
        e.change("a", Change::beat(), 3_000).expect("beat");
        e.mute("b", 4_000).expect("b");
        let mut services = e.export(|_| true);
        services.sort_by(|x, y| x.name.cmp(&y.name));
        let bytes = encode_snapshot(&services, 42, 7).expect("encodes");
        let (seq, mut back) = decode_snapshot(&bytes).expect("decodes");
        back.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(seq, 42);
        assert_eq!(back, services);
        assert!(decode_snapshot(b"nope").is_err());
        assert!(decode_snapshot(&bytes[..30]).is_err());
    }
}
