//! Cluster mode, stage 1 (docs/CLUSTER.md; README, "Cluster mode (stage
//! 1)"): several lovebeat nodes share the work through NATS JetStream.
//! Any node takes beats and publishes them to the command stream, one
//! subject per partition (`publish.rs`); each partition has one owner at a
//! time, by a lease in a KV bucket (`lease.rs`), which holds its services
//! in the ordinary engine, snapshots them and, on taking over, restores
//! the snapshot and replays the stream (`owner.rs`). Each node claims at
//! most its share of the partitions (the partitions over the live nodes,
//! rounded up), so partitions move when nodes come and go. NATS is the
//! only coordinator: there is no membership or consensus protocol here.
//!
//! Without a `[cluster]` section none of this runs.

pub mod alarms;
pub mod config;
pub mod lease;
pub mod owner;
pub mod publish;
pub mod reads;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ClusterConfig;
use lease::LeaseClock;
pub use publish::Publisher;

use crate::clock::now_ms;
use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::engine::{Engine, EngineConfig};

/// How long the command stream keeps a command: far longer than any
/// snapshot interval, so a replay from the latest snapshot always finds
/// the commands after it.
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a node's owners share.
pub struct Shared {
    /// The node's engine: only its partitions' services.
    pub engine: Engine,
    /// Makes what a scratch engine for a replay is built from.
    pub engine_config: Box<dyn Fn() -> EngineConfig + Send + Sync>,
    /// The partition count.
    pub partitions: u32,
    /// The NATS connection, for the core subjects (reads).
    pub client: async_nats::Client,
    /// The command stream.
    pub stream: stream::Stream,
    /// The snapshot bucket.
    pub snapshots: kv::Store,
    /// The alarm aggregates' bucket (`alarms.rs`).
    pub alarms: kv::Store,
    /// Starts the alert pipeline over the alerter's engine; set by the
    /// daemon once the pipeline's parts exist.
    pub alerts: std::sync::OnceLock<alarms::AlertRunner>,
    /// Partitions owned (restored and live) now.
    pub owned: AtomicU64,
    /// Command messages that could not be read.
    pub bad_messages: AtomicU64,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
}

/// An owned partition: its lease and its owner task.
struct Held {
    clock: Arc<LeaseClock>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<owner::Ended>,
}

/// A running cluster node.
pub struct Cluster {
    /// This node's name.
    pub node: String,
    /// The partition count.
    pub partitions: u32,
    /// Where inputs send commands.
    pub publisher: Arc<Publisher>,
    shared: Arc<Shared>,
    /// The leases held, read by the engine's expiry gate.
    clocks: Arc<Mutex<BTreeMap<u32, Arc<LeaseClock>>>>,
    /// The newest alarm aggregates read, for `/api/alarms`.
    seen: Mutex<alarms::Seen>,
}

impl Cluster {
    /// Publishes one command and waits until JetStream has stored it (an
    /// HTTP write): `Err` when the buffer is full or no acknowledgement
    /// came in time; the caller answers 503.
    pub async fn submit(&self, cmd: &wire::Command) -> Result<(), Unavailable> {
        let rx = self.publisher.push_acked(cmd).ok_or(Unavailable::Full)?;
        match tokio::time::timeout(SUBMIT_TIMEOUT, rx).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(Unavailable::NotAcknowledged),
        }
    }

    /// Service `name` as its partition's owner shows it, when this node
    /// does not own that partition (`Ok(None)`: no such service). A
    /// node that owns it answers from its own engine instead.
    pub async fn read_service(
        &self,
        name: &str,
        details: bool,
    ) -> Result<Option<serde_json::Value>, reads::ReadError> {
        let p = wire::partition_of(name, self.partitions);
        reads::service(&self.shared.client, p, name, details).await
    }

    /// One page of partition `p`'s services after `after`, from its
    /// owner (`reads.rs`).
    pub async fn list_page(
        &self,
        p: u32,
        after: &str,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), reads::ReadError> {
        reads::page(&self.shared.client, p, after).await
    }

    /// `(num_ok, num_error)` over the whole cluster, as `/api/status`
    /// counts: `local` (this node's engine: its partitions and its own
    /// `lovebeat.self.*`) plus every other partition's, asked of the
    /// owners at once. An error names a partition whose owner did not
    /// answer: counts without it could hide an ERROR.
    pub async fn status(&self, local: (i64, i64)) -> Result<(i64, i64), reads::ReadError> {
        let held = self.held();
        let asked = (0..self.partitions)
            .filter(|p| !held.contains(p))
            .map(|p| reads::status(&self.shared.client, p));
        let mut total = local;
        for r in futures_util::future::join_all(asked).await {
            let (ok, error) = r?;
            total.0 += ok;
            total.1 += error;
        }
        Ok(total)
    }

    /// Whether this node owns `name`'s partition now (its engine then
    /// holds the service, if there is one).
    pub fn owns(&self, name: &str) -> bool {
        let p = wire::partition_of(name, self.partitions);
        lock(&self.clocks).contains_key(&p)
    }

    /// Gives the alerter the alert pipeline (once): until then this node
    /// does not take the alerter's role's work.
    pub fn set_alerts(&self, runner: alarms::AlertRunner) {
        let _ = self.shared.alerts.set(runner);
    }

    /// Every alarm across the partitions, as `/api/alarms` shows it in
    /// cluster mode: the owners' published failed sets and the
    /// alerter's incident numbers.
    pub async fn alarms(&self) -> Result<Vec<crate::engine::AlarmView>, alarms::Fenced> {
        let (union, incidents) =
            alarms::aggregate(&self.shared.alarms, self.partitions, &self.seen).await?;
        Ok(alarms::views(union, &incidents))
    }

    /// The partitions whose leases this node holds now.
    pub fn held(&self) -> Vec<u32> {
        lock(&self.clocks).keys().copied().collect()
    }
}

/// How often [`watch`] looks at the publisher.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Puts `lovebeat.self.cluster` in ERROR while commands cannot be
/// published to NATS (saying how much waits and how much was dropped),
/// and back to OK once they can.
pub async fn watch(
    cluster: Arc<Cluster>,
    trouble: crate::trouble::Trouble,
    stop: CancellationToken,
) {
    let part = crate::trouble::Part::Cluster;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let s = &cluster.publisher.stats;
        if s.failing.load(Ordering::Relaxed) {
            let reason = format!(
                "cannot publish to NATS: {} bytes of beats wait in the buffer (at most {}), {} dropped since the start",
                s.buffered.load(Ordering::Relaxed),
                publish::MAX_BUFFER,
                s.dropped.load(Ordering::Relaxed)
            );
            // Recorded again only when the drops change, not every second.
            let key = format!("{}", s.dropped.load(Ordering::Relaxed));
            if key != last || !trouble.is_failing(part) {
                trouble.fail(part, &reason);
                last = key;
            }
        } else {
            trouble.ok(part);
            last.clear();
        }
    }
}

/// How long an HTTP write waits for JetStream's acknowledgement.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a write could not be stored in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The node's buffer is full (NATS unreachable for a while).
    #[error("the node's buffer for NATS is full")]
    Full,
    /// NATS did not acknowledge the write in time.
    #[error("NATS did not acknowledge the write in time")]
    NotAcknowledged,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to NATS, checks or creates the cluster's stream and buckets,
/// and starts publishing and claiming partitions. Fails, and the daemon
/// with it, when NATS cannot be reached or the cluster was created with
/// another partition count or lease.
pub async fn start(
    cfg: &ClusterConfig,
    engine: Engine,
    engine_config: impl Fn() -> EngineConfig + Send + Sync + 'static,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Arc<Cluster>> {
    let node = cfg.node_name();
    let lease = Duration::from_millis(cfg.lease.ms);
    let client = connect(cfg, &node).await?;
    let js = jetstream::new(client.clone());
    // A NATS cluster that has just started has no JetStream leader for a
    // few seconds: the setup is tried again meanwhile, but a node that
    // disagrees with the cluster's fixed settings stops at once.
    // Each request of the setup waits 2 s, not the client's 5: a server
    // with no JetStream leader yet does not answer, and the next try
    // comes sooner.
    let mut setup_js = js.clone();
    setup_js.set_timeout(Duration::from_secs(2));
    let mut attempt = 0;
    let (stream, leases, nodes, snapshots, alarm_bucket) = loop {
        attempt += 1;
        match setup(cfg, &setup_js, lease).await {
            Ok(s) => break s,
            Err(e) if e.is::<Mismatch>() || attempt >= SETUP_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!("cluster setup: {e:#}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };

    let publisher = Arc::new(Publisher::new(cfg.partitions, &node, now_ms()));
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        engine_config: Box::new(engine_config),
        partitions: cfg.partitions,
        client,
        stream,
        snapshots,
        alarms: alarm_bucket,
        alerts: std::sync::OnceLock::new(),
        owned: AtomicU64::new(0),
        bad_messages: AtomicU64::new(0),
        snapshots_written: AtomicU64::new(0),
    });
    let clocks: Arc<Mutex<BTreeMap<u32, Arc<LeaseClock>>>> = Arc::default();
    {
        let clocks = clocks.clone();
        engine.set_expiry_gate(Arc::new(move || {
            let now = Instant::now();
            lock(&clocks).values().all(|c| c.valid_at(now))
        }));
    }
    let cluster = Arc::new(Cluster {
        node: node.clone(),
        partitions: cfg.partitions,
        publisher: publisher.clone(),
        shared: shared.clone(),
        clocks: clocks.clone(),
        seen: Mutex::default(),
    });
    tasks.spawn({
        let (publisher, js, stop) = (publisher.clone(), js.clone(), stop.clone());
        async move { publisher.run(js, stop).await }
    });
    tasks.spawn(
        Manager {
            node,
            lease,
            partitions: cfg.partitions,
            leases,
            nodes,
            shared,
            clocks,
            held: BTreeMap::new(),
            alerter: None,
        }
        .run(stop),
    );
    tracing::info!(
        "cluster node {} joined: {} partitions, lease {} ms, NATS {}",
        cluster.node,
        cfg.partitions,
        cfg.lease.ms,
        cfg.nats.join(", ")
    );
    Ok(cluster)
}

/// How many times the setup is tried, a second apart.
const SETUP_ATTEMPTS: u32 = 30;

/// A node configured unlike the cluster it joins.
#[derive(Debug, thiserror::Error)]
#[error("this cluster was created with {key} = {have}, and this node is configured with {want}: a node must use the cluster's value ([cluster] in the configuration)")]
pub struct Mismatch {
    key: &'static str,
    have: String,
    want: String,
}

/// The stream and buckets, checked or created.
async fn setup(
    cfg: &ClusterConfig,
    js: &jetstream::Context,
    lease: Duration,
) -> anyhow::Result<(stream::Stream, kv::Store, kv::Store, kv::Store, kv::Store)> {
    let replicas = cfg.nats.len().clamp(1, 3);
    let meta = bucket(js, wire::META_BUCKET, Duration::ZERO, replicas, true).await?;
    for (key, want) in [
        ("partitions", cfg.partitions.to_string()),
        ("lease_ms", cfg.lease.ms.to_string()),
        ("format", wire::VERSION.to_string()),
    ] {
        fixed_setting(&meta, key, &want).await?;
    }
    let stream = js
        .get_or_create_stream(stream::Config {
            name: wire::STREAM.into(),
            subjects: vec![format!("{}*", wire::SUBJECT_PREFIX)],
            num_replicas: replicas,
            max_age: STREAM_MAX_AGE,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the stream {}: {e}", wire::STREAM))?;
    let leases = bucket(js, wire::LEASE_BUCKET, lease, replicas, true).await?;
    let nodes = bucket(js, wire::NODE_BUCKET, lease, replicas, true).await?;
    let snapshots = bucket(js, wire::SNAPSHOT_BUCKET, Duration::ZERO, replicas, true).await?;
    let alarms = bucket(js, wire::ALARMS_BUCKET, Duration::ZERO, replicas, false).await?;
    Ok((stream, leases, nodes, snapshots, alarms))
}

/// The NATS connection, with TLS and credentials as configured.
async fn connect(cfg: &ClusterConfig, node: &str) -> anyhow::Result<async_nats::Client> {
    let mut o = async_nats::ConnectOptions::new()
        .name(format!("lovebeat {node}"))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    if !cfg.tls_ca.is_empty() {
        o = o
            .add_root_certificates(cfg.tls_ca.clone().into())
            .require_tls(true);
    }
    if !cfg.tls_cert.is_empty() {
        o = o.add_client_certificate(cfg.tls_cert.clone().into(), cfg.tls_key.clone().into());
    }
    if !cfg.credentials.is_empty() {
        o = o
            .credentials_file(&cfg.credentials)
            .await
            .with_context(|| format!("[cluster] credentials {}", cfg.credentials))?;
    }
    o.connect(cfg.nats.as_slice())
        .await
        .with_context(|| format!("cannot reach NATS at {}", cfg.nats.join(", ")))
}

/// A bucket, created if it is not there yet (by whichever node comes
/// first; creating an identical one again is harmless). It is created as
/// the stream a KV bucket is (`KV_<name>`, subjects `$KV.<name>.>`), not
/// through the client's bucket creation, which first reads the account's
/// JetStream information in a form nats-server 2.9 does not send.
/// `direct` lets every replica answer reads; the alarms' bucket is read
/// from its leader only, since a lagging replica's older value would
/// make a recovered service seem to fail again, and partitions read
/// from replicas lagging by different amounts would mix old and new.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
    direct: bool,
) -> anyhow::Result<kv::Store> {
    if let Ok(b) = js.get_key_value(name).await {
        return Ok(b);
    }
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: direct,
            discard: stream::DiscardPolicy::New,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match js.get_key_value(name).await {
        Ok(b) => Ok(b),
        Err(e) => match created {
            Err(c) => anyhow::bail!("cannot create the bucket {name}: {c}"),
            Ok(_) => anyhow::bail!("cannot open the bucket {name}: {e}"),
        },
    }
}

/// Records a setting fixed at the cluster's creation, or checks that this
/// node agrees with the one recorded.
async fn fixed_setting(meta: &kv::Store, key: &str, want: &str) -> anyhow::Result<()> {
    match meta.create(key, want.to_string().into()).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot record the cluster's {key}: {e}"),
    }
    let have = meta
        .get(key)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the cluster's {key}: {e}"))?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    if have != want {
        return Err(Mismatch {
            key: if key == "lease_ms" {
                "lease (ms)"
            } else {
                "partitions"
            },
            have,
            want: want.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Claims, renews and gives back this node's leases, and says it is alive.
struct Manager {
    node: String,
    lease: Duration,
    partitions: u32,
    leases: kv::Store,
    nodes: kv::Store,
    shared: Arc<Shared>,
    clocks: Arc<Mutex<BTreeMap<u32, Arc<LeaseClock>>>>,
    held: BTreeMap<u32, Held>,
    /// The alerter's role, while this node holds its lease.
    alerter: Option<Alerter>,
}

/// The alerter's lease and task (`alarms.rs`).
struct Alerter {
    clock: Arc<LeaseClock>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Manager {
    async fn run(mut self, stop: CancellationToken) {
        let poll = lease::poll_every(self.lease);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            self.round(poll).await;
        }
        // A clean stop gives every partition back at once, snapshotted,
        // instead of making the others wait for the leases to end.
        let all: Vec<u32> = self.held.keys().copied().collect();
        for p in all {
            self.release(p).await;
        }
        if let Some(a) = self.alerter.take() {
            a.stop.cancel();
            let _ = tokio::time::timeout(self.lease, a.task).await;
            let _ = tokio::time::timeout(
                poll,
                self.leases
                    .delete_expect_revision(wire::ALERTER_KEY, Some(a.clock.token())),
            )
            .await;
        }
        let _ = tokio::time::timeout(poll, self.nodes.purge(&self.node)).await;
    }

    async fn round(&mut self, poll: Duration) {
        // Owners that ended on their own (a lapsed lease) are forgotten.
        let ended: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            self.forget(p);
        }
        let _ = tokio::time::timeout(
            poll,
            self.nodes.put(&self.node, now_ms().to_string().into()),
        )
        .await;
        let ps: Vec<u32> = self.held.keys().copied().collect();
        for p in ps {
            let Some(h) = self.held.get(&p) else { continue };
            if !h.clock.valid() {
                // Lapsed (this node was paused, or NATS too slow): the
                // owner lets the partition go; it is taken anew later.
                h.stop.cancel();
                continue;
            }
            self.renew(
                &wire::partition_key(p),
                &h.clock,
                &h.stop,
                poll,
                &format!("partition {p}"),
            )
            .await;
        }
        self.alerter_round(poll).await;
        let live = match tokio::time::timeout(poll, count_keys(&self.nodes)).await {
            Ok(Ok(n)) => n.max(1),
            _ => return,
        };
        let target = self.partitions.div_ceil(live) as usize;
        let extra = self.held.len().saturating_sub(target);
        let giving: Vec<u32> = self.held.keys().rev().take(extra).copied().collect();
        for p in giving {
            self.release(p).await;
        }
        if self.held.len() >= target {
            return;
        }
        let start = (wire::fnv1a64(self.node.as_bytes()) % u64::from(self.partitions)) as u32;
        for i in 0..self.partitions {
            let p = (start + i) % self.partitions;
            if self.held.len() >= target {
                break;
            }
            if self.held.contains_key(&p) {
                continue;
            }
            let key = wire::partition_key(p);
            match tokio::time::timeout(poll, self.leases.entry(key.clone())).await {
                Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => continue,
                Ok(Ok(_)) => {}
                _ => continue,
            }
            let sent = Instant::now();
            if let Ok(Ok(rev)) =
                tokio::time::timeout(poll, self.leases.create(key, self.node.clone().into())).await
            {
                self.own(p, rev, sent);
            }
        }
    }

    /// Renews the lease on `key` held with `clock` (a partition's or the
    /// alerter's: one fencing for both), an update naming the revision
    /// held; whoever acts under it is stopped (`stop`) once the lease is
    /// lost or has lapsed by its clock. `what` names it in the log.
    async fn renew(
        &self,
        key: &str,
        clock: &LeaseClock,
        stop: &CancellationToken,
        poll: Duration,
        what: &str,
    ) {
        let sent = Instant::now();
        match tokio::time::timeout(
            poll,
            self.leases
                .update(key, self.node.clone().into(), clock.token()),
        )
        .await
        {
            Ok(Ok(rev)) => {
                if !clock.renewed(rev, sent, self.lease) {
                    stop.cancel();
                }
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!("{what}: lease lost: {e}");
                clock.revoke();
                stop.cancel();
            }
            // NATS moving the bucket's leader, say: the next poll tries
            // again, and the lease lapses by the clock if none gets through.
            Ok(Err(e)) => tracing::warn!("{what}: lease not renewed: {e}"),
            Err(_) => tracing::warn!("{what}: lease renewal timed out"),
        }
    }

    /// Renews the alerter's lease if this node holds it, or takes it when
    /// it is free: the same fencing as a partition's lease, so at most
    /// one node alerts at a time.
    async fn alerter_round(&mut self, poll: Duration) {
        if self
            .alerter
            .as_ref()
            .is_some_and(|a| a.task.is_finished() || !a.clock.valid())
        {
            if let Some(a) = self.alerter.take() {
                a.stop.cancel();
            }
        }
        if let Some(a) = &self.alerter {
            self.renew(wire::ALERTER_KEY, &a.clock, &a.stop, poll, "alerter")
                .await;
            return;
        }
        match tokio::time::timeout(poll, self.leases.entry(wire::ALERTER_KEY)).await {
            Ok(Ok(Some(e))) if e.operation == kv::Operation::Put => return,
            Ok(Ok(_)) => {}
            _ => return,
        }
        let sent = Instant::now();
        if let Ok(Ok(rev)) = tokio::time::timeout(
            poll,
            self.leases
                .create(wire::ALERTER_KEY, self.node.clone().into()),
        )
        .await
        {
            tracing::info!("alerter: lease taken (token {rev})");
            let clock = Arc::new(LeaseClock::new(rev, sent, self.lease));
            let stop = CancellationToken::new();
            let task = tokio::spawn(alarms::alerter(
                self.shared.clone(),
                clock.clone(),
                stop.clone(),
            ));
            self.alerter = Some(Alerter { clock, stop, task });
        }
    }

    fn own(&mut self, p: u32, token: u64, sent: Instant) {
        let clock = Arc::new(LeaseClock::new(token, sent, self.lease));
        let stop = CancellationToken::new();
        lock(&self.clocks).insert(p, clock.clone());
        tracing::info!("partition {p}: lease taken (token {token})");
        let task = tokio::spawn({
            let (shared, clock, stop, clocks) = (
                self.shared.clone(),
                clock.clone(),
                stop.clone(),
                self.clocks.clone(),
            );
            async move {
                let ended = owner::run(shared, p, clock.clone(), stop).await;
                // Out of the engine: expiry need not wait for this lease.
                let mut c = lock(&clocks);
                if c.get(&p).is_some_and(|held| Arc::ptr_eq(held, &clock)) {
                    c.remove(&p);
                }
                ended
            }
        });
        self.held.insert(p, Held { clock, stop, task });
    }

    fn forget(&mut self, p: u32) {
        if let Some(h) = self.held.remove(&p) {
            let mut c = lock(&self.clocks);
            if c.get(&p).is_some_and(|held| Arc::ptr_eq(held, &h.clock)) {
                c.remove(&p);
            }
        }
    }

    /// Gives partition `p` back: its owner snapshots and lets go, then
    /// the lease key is deleted (only if still ours), so the next owner
    /// need not wait for it to age out.
    async fn release(&mut self, p: u32) {
        let Some(mut h) = self.held.remove(&p) else {
            return;
        };
        h.stop.cancel();
        let ended = match tokio::time::timeout(self.lease, &mut h.task).await {
            Ok(ended) => ended,
            Err(_) => {
                // Still letting go (NATS slow to take its snapshot): it
                // stays held, so the partition is not taken again until
                // its services have left the engine; the owner takes its
                // own lease clock out of the expiry gate when it ends.
                tracing::warn!("partition {p}: still being given back");
                self.held.insert(p, h);
                return;
            }
        };
        if matches!(ended, Ok(owner::Ended::Released)) {
            let _ = tokio::time::timeout(
                lease::poll_every(self.lease),
                self.leases
                    .delete_expect_revision(wire::partition_key(p), Some(h.clock.token())),
            )
            .await;
            tracing::info!("partition {p}: given back");
        }
    }
}

/// How many keys a bucket holds (live nodes).
async fn count_keys(b: &kv::Store) -> anyhow::Result<u32> {
    let mut keys = b.keys().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut n = 0u32;
    while let Some(k) = keys.next().await {
        if k.is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

static OWNED: Metric = Metric {
    prometheus: "lovebeat_cluster_partitions_owned",
    statsd: Some("cluster.partitions_owned"),
    help: "Partitions this node owns now (restored and live).",
    kind: Kind::Gauge,
};
static BUFFERED: Metric = Metric {
    prometheus: "lovebeat_cluster_buffered_bytes",
    statsd: Some("cluster.buffered_bytes"),
    help: "Bytes of commands waiting for NATS to acknowledge them (at most 32 MiB).",
    kind: Kind::Gauge,
};
static DROPPED: Metric = Metric {
    prometheus: "lovebeat_cluster_commands_dropped_total",
    statsd: Some("cluster.commands_dropped"),
    help: "Beats and other commands refused because the buffer for NATS was full.",
    kind: Kind::Counter,
};
static PUBLISHED: Metric = Metric {
    prometheus: "lovebeat_cluster_messages_published_total",
    statsd: None,
    help: "Command messages (batches) JetStream acknowledged.",
    kind: Kind::Counter,
};
static FAILURES: Metric = Metric {
    prometheus: "lovebeat_cluster_publish_failures_total",
    statsd: None,
    help: "Command messages not acknowledged in time (each is sent again).",
    kind: Kind::Counter,
};
static SNAPSHOTS: Metric = Metric {
    prometheus: "lovebeat_cluster_snapshots_written_total",
    statsd: None,
    help: "Partition snapshots written.",
    kind: Kind::Counter,
};
static BAD: Metric = Metric {
    prometheus: "lovebeat_cluster_bad_messages_total",
    statsd: None,
    help: "Command messages that could not be read (skipped).",
    kind: Kind::Counter,
};

/// The node's cluster counters, for `/metrics` and the statsd sink.
impl Counted for Cluster {
    fn read(&self, out: &mut Vec<Reading>) {
        let n = |a: &AtomicU64| Value::Count(a.load(Ordering::Relaxed));
        let owned = self.shared.owned.load(Ordering::Relaxed) as f64;
        out.push(Reading::of(&OWNED, Value::Level(owned)));
        let s = &self.publisher.stats;
        out.push(Reading::of(
            &BUFFERED,
            Value::Level(s.buffered.load(Ordering::Relaxed) as f64),
        ));
        out.push(Reading::of(&DROPPED, n(&s.dropped)));
        out.push(Reading::of(&PUBLISHED, n(&s.published)));
        out.push(Reading::of(&FAILURES, n(&s.failures)));
        out.push(Reading::of(&SNAPSHOTS, n(&self.shared.snapshots_written)));
        out.push(Reading::of(&BAD, n(&self.shared.bad_messages)));
    }
}
