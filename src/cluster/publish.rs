//! The ingest side of a node (docs/CLUSTER.md, "Taking beats"): commands
//! wait in a bounded buffer, batched per partition, and one task publishes
//! the batches to JetStream. Pushing never blocks and never awaits, so the
//! UDP reader thread can push; when the buffer is full the command is
//! refused and counted, and the caller drops the line (UDP, TCP) or
//! answers 503 (HTTP). A batch that is not acknowledged is sent again with
//! the same message id, which the stream's duplicate window drops if the
//! first one was stored after all.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::wire::{self, Command};

/// A batch is closed at this size: well under NATS's default 1 MiB
/// message limit, large enough that a burst is a few messages.
const MAX_BATCH: usize = 64 * 1024;

/// The most bytes of commands held while NATS does not acknowledge them:
/// about half a million beats of 60-byte names.
pub const MAX_BUFFER: usize = 32 * 1024 * 1024;

/// How long a publish waits for its acknowledgement before it is tried
/// again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The wait before trying again after a failed round, doubled up to
/// `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Commands of one partition sent as one message.
struct Batch {
    data: Vec<u8>,
    /// Its `Nats-Msg-Id` suffix, fixed when it is first sent.
    id: u64,
    /// Sent once and not acknowledged: nothing more may join it, or a
    /// retry deduplicated against the first send would lose the newcomers.
    sealed: bool,
    /// HTTP requests waiting for the acknowledgement.
    waiters: Vec<oneshot::Sender<bool>>,
}

/// Every partition's batches, oldest first.
struct Queues {
    per: Vec<VecDeque<Batch>>,
    bytes: usize,
    next_id: u64,
}

/// The publisher's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct PublishStats {
    /// Commands refused because the buffer was full.
    pub dropped: AtomicU64,
    /// Messages JetStream acknowledged.
    pub published: AtomicU64,
    /// Publishes not acknowledged (each is tried again).
    pub failures: AtomicU64,
    /// Bytes waiting now.
    pub buffered: AtomicU64,
    /// The last round of publishes failed (NATS unreachable or silent).
    pub failing: std::sync::atomic::AtomicBool,
}

/// The bounded, batched way from any input to the command stream.
pub struct Publisher {
    partitions: u32,
    queues: Mutex<Queues>,
    wake: Notify,
    /// This node and its start, for message ids unique in the cluster.
    id_prefix: String,
    /// Counters.
    pub stats: PublishStats,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("partitions", &self.partitions)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// An empty publisher for `partitions` partitions.
    pub fn new(partitions: u32, node: &str, started_ms: i64) -> Publisher {
        let mut per = Vec::new();
        per.resize_with(partitions.max(1) as usize, VecDeque::new);
        Publisher {
            partitions: partitions.max(1),
            queues: Mutex::new(Queues {
                per,
                bytes: 0,
                next_id: 0,
            }),
            wake: Notify::new(),
            id_prefix: format!("{node}.{started_ms}."),
            stats: PublishStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues commands; never blocks. Returns how many were refused
    /// because the buffer is full (counted in `dropped`).
    pub fn push_all<'a>(&self, cmds: impl IntoIterator<Item = &'a Command>) -> u64 {
        let mut refused = 0;
        {
            let mut q = self.lock();
            for c in cmds {
                if !self.push_locked(&mut q, c, None) {
                    refused += 1;
                }
            }
        }
        if refused > 0 {
            self.stats.dropped.fetch_add(refused, Ordering::Relaxed);
        }
        self.wake.notify_one();
        refused
    }

    /// Queues one command and returns a receiver told `true` once
    /// JetStream has stored it; `None` when the buffer is full.
    pub fn push_acked(&self, cmd: &Command) -> Option<oneshot::Receiver<bool>> {
        let (tx, rx) = oneshot::channel();
        let ok = self.push_locked(&mut self.lock(), cmd, Some(tx));
        if !ok {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.wake.notify_one();
        Some(rx)
    }

    fn push_locked(
        &self,
        q: &mut Queues,
        cmd: &Command,
        waiter: Option<oneshot::Sender<bool>>,
    ) -> bool {
        if q.bytes >= MAX_BUFFER {
            return false;
        }
        let p = wire::partition_of(&cmd.name, self.partitions) as usize;
        let Some(queue) = q.per.get_mut(p) else {
            return false;
        };
        let open = queue
            .back()
            .is_some_and(|b| !b.sealed && b.data.len() < MAX_BATCH);
        if !open {
            let mut data = Vec::with_capacity(256);
            wire::begin(&mut data);
            q.next_id += 1;
            queue.push_back(Batch {
                data,
                id: q.next_id,
                sealed: false,
                waiters: Vec::new(),
            });
        }
        let Some(batch) = queue.back_mut() else {
            return false;
        };
        let before = batch.data.len();
        wire::encode(&mut batch.data, cmd);
        batch.waiters.extend(waiter);
        q.bytes += batch.data.len() - before;
        self.stats.buffered.store(q.bytes as u64, Ordering::Relaxed);
        true
    }

    /// Takes the oldest batch of every partition that has one.
    fn take_round(&self) -> Vec<(u32, Batch)> {
        let mut q = self.lock();
        let mut round = Vec::new();
        for (p, queue) in q.per.iter_mut().enumerate() {
            if let Some(b) = queue.pop_front() {
                round.push((p as u32, b));
            }
        }
        round
    }

    /// Puts a batch that was not acknowledged back in front, sealed.
    fn put_back(&self, p: u32, mut b: Batch) {
        b.sealed = true;
        if let Some(queue) = self.lock().per.get_mut(p as usize) {
            queue.push_front(b);
        }
    }

    /// Counts a batch out of the buffer and tells its waiters.
    fn done(&self, b: Batch, stored: bool) {
        {
            let mut q = self.lock();
            q.bytes = q.bytes.saturating_sub(b.data.len().saturating_sub(1));
            self.stats.buffered.store(q.bytes as u64, Ordering::Relaxed);
        }
        for w in b.waiters {
            let _ = w.send(stored);
        }
    }

    /// Publishes batches until `stop`: every partition's oldest batch in
    /// one round, the acknowledgements awaited together; what failed is
    /// sent again (same id) after a backoff, in order.
    pub async fn run(&self, js: jetstream::Context, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        let mut down_since: Option<tokio::time::Instant> = None;
        loop {
            let round = self.take_round();
            if round.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            }
            let mut sent: Vec<(u32, Batch, Option<PublishAckFuture>)> = Vec::new();
            for (p, b) in round {
                let msg = PublishMessage::build()
                    .payload(bytes::Bytes::copy_from_slice(&b.data))
                    .message_id(format!("{}{}", self.id_prefix, b.id));
                let fut =
                    match tokio::time::timeout(ACK_TIMEOUT, js.send_publish(wire::subject(p), msg))
                        .await
                    {
                        Ok(Ok(f)) => Some(f),
                        _ => None,
                    };
                sent.push((p, b, fut));
            }
            let mut failed = false;
            for (p, b, fut) in sent {
                let stored = match fut {
                    Some(f) => matches!(tokio::time::timeout(ACK_TIMEOUT, f).await, Ok(Ok(_))),
                    None => false,
                };
                if stored {
                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                    self.done(b, true);
                } else {
                    failed = true;
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    self.put_back(p, b);
                }
            }
            self.stats.failing.store(failed, Ordering::Relaxed);
            if failed {
                let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < backoff * 2 {
                    tracing::warn!(
                        "cannot publish to NATS: beats wait in the buffer ({} bytes of at most {MAX_BUFFER})",
                        self.stats.buffered.load(Ordering::Relaxed)
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                if down_since.take().is_some() {
                    tracing::info!("publishing to NATS again");
                }
                backoff = MIN_BACKOFF;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::Op;
    use crate::engine::Change;

    fn beat(name: &str) -> Command {
        Command {
            ts: 1,
            name: name.into(),
            op: Op::Change(Change::beat()),
        }
    }

    /// Commands are batched per partition, many to a message, and the
    /// buffer refuses (and counts) what would pass its bound.
    #[test]
    fn batches_per_partition_and_bounded() {
        let p = Publisher::new(4, "n", 0);
        let cmds: Vec<Command> = (0..100).map(|i| beat(&format!("s{i}"))).collect();
        assert_eq!(p.push_all(&cmds), 0);
        let round = p.take_round();
        assert!(round.len() <= 4 && !round.is_empty());
        let mut n = 0;
        for (part, b) in &round {
            wire::decode(&b.data, |c| {
                assert_eq!(wire::partition_of(&c.name, 4), *part);
                n += 1;
            })
            .expect("decodes");
        }
        assert_eq!(n, 100, "20 lines are not 20 messages");
        let big = beat(&"x".repeat(1000));
        let mut refused = 0;
        for _ in 0..(MAX_BUFFER / 1000 + 10) {
            refused += p.push_all([&big]);
        }
        assert!(refused > 0);
        assert_eq!(p.stats.dropped.load(Ordering::Relaxed), refused);
        assert!(p.push_acked(&big).is_none(), "an HTTP beat is refused too");
    }
}
