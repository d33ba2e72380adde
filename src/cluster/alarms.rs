//! Alarms across partitions (docs/CLUSTER.md, "Alarms across
//! partitions"): each owner publishes, per partition, the failed members
//! of each alarm to the `lovebeat-alarms` bucket (key `p.<p>`, fenced by
//! its lease token), and one node, the *alerter* (lease key `alerter`),
//! unions them and drives the ordinary alarm engine and alert pipeline
//! over stand-in services, one always-ERROR service per failed name. Its
//! record of every alarm's state, incident and what its receivers last
//! heard (`incidents`) is written with the key's revision compare-and-set,
//! so a new alerter starts where the last one recorded and incident
//! numbers stay global and monotonic.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::lease::LeaseClock;
use super::{wire, Shared};
use crate::clock::now_ms;
use crate::engine::alarms::AlarmView;
use crate::engine::{Change, Engine, FailReport, State, StoredAlarm};

/// Starts the alert pipeline (`sinks::alerts`) over an engine until the
/// token is cancelled: the daemon makes it, since it holds what the
/// pipeline needs (its configuration, counters, trouble and reporter).
pub type AlertRunner = Box<
    dyn Fn(Engine, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// How often an owner looks for a change of its partitions' failed sets,
/// and the alerter for a change of their union: the part of an alert's
/// delay that cluster mode adds.
const EVERY: Duration = Duration::from_millis(250);

/// What the owner of a partition publishes: the failed members in the
/// partition of each alarm the owner's node knows (an empty list for an
/// alarm with none failed there, so every node can list it).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionAlarms {
    /// The writer's lease token: a write from an older token is refused.
    pub token: u64,
    /// Alarm name to its failed members in this partition, sorted.
    pub alarms: BTreeMap<String, Vec<String>>,
}

/// The alerter's record of one alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `ok` or `error` (`new` before its first evaluation).
    pub state: String,
    /// Its current or latest incident number.
    pub incident: u64,
    /// When it last changed state (ms).
    pub last_state_change: i64,
    /// The state its receivers last heard of.
    pub announced_state: String,
    /// The incident its receivers last heard of.
    pub announced_incident: u64,
}

/// The alerter's record of every alarm (key `incidents`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    /// The writer's alerter lease token.
    pub token: u64,
    /// Alarm name to its record.
    pub alarms: BTreeMap<String, Record>,
}

/// Why a fenced write was not made.
#[derive(Debug, thiserror::Error)]
pub enum Fenced {
    /// A writer with a newer token wrote the key: this node was deposed.
    #[error("a newer owner wrote the key")]
    Deposed,
    /// NATS failed (tried again later).
    #[error("{0}")]
    Nats(String),
}

fn state_of(s: &str) -> State {
    match s {
        "ok" => State::Ok,
        "error" => State::Error,
        "muted" => State::Muted,
        _ => State::New,
    }
}

/// Partition `p`'s failed members per alarm, from the node's engine.
/// lovebeat's own alarm and services are the node's, not the cluster's.
pub fn partition_alarms(engine: &Engine, partitions: u32, p: u32) -> BTreeMap<String, Vec<String>> {
    engine
        .alarms()
        .into_iter()
        .filter(|a| &*a.name != crate::engine::SELF_ALARM)
        .map(|a| {
            let failed = a
                .failed_services
                .iter()
                .filter(|n| {
                    !crate::engine::is_internal(n) && wire::partition_of(n, partitions) == p
                })
                .map(|n| n.to_string())
                .collect();
            (a.name.to_string(), failed)
        })
        .collect()
}

/// Writes `value` (carrying `token`) to `key` if no newer token wrote it:
/// the key is read, its token checked, and the write names the revision
/// read, so a write from a newer writer in between makes it fail.
async fn write_fenced<T: Serialize>(
    store: &kv::Store,
    key: &str,
    token: u64,
    value: &T,
    theirs: impl Fn(&[u8]) -> u64,
) -> Result<u64, Fenced> {
    let entry = store
        .entry(key)
        .await
        .map_err(|e| Fenced::Nats(e.to_string()))?;
    let body = serde_json::to_vec(value).map_err(|e| Fenced::Nats(e.to_string()))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            if theirs(&e.value) > token {
                return Err(Fenced::Deposed);
            }
            store
                .update(key, body.into(), e.revision)
                .await
                .map_err(|e| Fenced::Nats(e.to_string()))
        }
        Some(e) => store
            .update(key, body.into(), e.revision)
            .await
            .map_err(|e| Fenced::Nats(e.to_string())),
        None => store
            .create(key, body.into())
            .await
            .map_err(|e| Fenced::Nats(e.to_string())),
    }
}

fn partition_token(v: &[u8]) -> u64 {
    serde_json::from_slice::<PartitionAlarms>(v)
        .map(|a| a.token)
        .unwrap_or(0)
}

fn incidents_token(v: &[u8]) -> u64 {
    serde_json::from_slice::<Incidents>(v)
        .map(|a| a.token)
        .unwrap_or(0)
}

/// Publishes partition `p`'s failed members per alarm while this node
/// owns it (from the moment it is restored and live), each time they
/// change; stops at `stop`, when the lease lapses, or when a newer owner
/// has written the key.
pub async fn publish(shared: Arc<Shared>, p: u32, clock: Arc<LeaseClock>, stop: CancellationToken) {
    let key = wire::partition_key(p);
    let mut last: Option<BTreeMap<String, Vec<String>>> = None;
    let mut rev: Option<u64> = None;
    let mut failing = false;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if !clock.valid() {
            return;
        }
        let now = partition_alarms(&shared.engine, shared.partitions, p);
        if last.as_ref() == Some(&now) {
            continue;
        }
        let value = PartitionAlarms {
            token: clock.token(),
            alarms: now,
        };
        // After a first write, the next names the revision written, so no
        // (lagging) read comes between; a refusal goes back to reading.
        let written = match rev {
            Some(r) => {
                let body = serde_json::to_vec(&value).unwrap_or_default();
                match shared.alarms.update(key.as_str(), body.into(), r).await {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        rev = None;
                        Err(Fenced::Nats(e.to_string()))
                    }
                }
            }
            None => write_fenced(&shared.alarms, &key, value.token, &value, partition_token).await,
        };
        match written {
            Ok(r) => {
                rev = Some(r);
                if failing {
                    tracing::info!("partition {p}: its alarms are published again");
                    failing = false;
                }
                last = Some(value.alarms);
            }
            Err(Fenced::Deposed) => {
                tracing::warn!("partition {p}: a newer owner publishes its alarms");
                return;
            }
            Err(Fenced::Nats(e)) => {
                if !failing {
                    tracing::warn!("partition {p}: cannot publish its alarms: {e}");
                    failing = true;
                }
            }
        }
    }
}

/// The newest entry of each key read so far: a bucket's replicas answer
/// reads too (`allow_direct`), and one that lags would give an older
/// value than the last read, so a recovered service seems to fail again.
/// A read older than the one kept is ignored, so what a reader sees of
/// each key only moves forward.
#[derive(Debug, Default)]
pub struct Seen {
    partitions: BTreeMap<u32, (u64, BTreeMap<String, Vec<String>>)>,
    incidents: Option<(u64, Incidents)>,
}

/// Every alarm's failed members across all partitions, as their owners
/// last published them, and the alerter's record, read into `seen`.
pub async fn aggregate(
    store: &kv::Store,
    partitions: u32,
    seen: &std::sync::Mutex<Seen>,
) -> Result<(BTreeMap<String, BTreeSet<String>>, Incidents), Fenced> {
    let keys: Vec<String> = (0..partitions).map(wire::partition_key).collect();
    let reads = keys.iter().map(|k| store.entry(k.as_str()));
    let read = futures_util::future::join_all(reads).await;
    let record = store
        .entry(wire::INCIDENTS_KEY)
        .await
        .map_err(|e| Fenced::Nats(e.to_string()))?;
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    for (p, r) in (0u32..).zip(read) {
        let Some(e) = r.map_err(|e| Fenced::Nats(e.to_string()))? else {
            continue;
        };
        if seen
            .partitions
            .get(&p)
            .is_some_and(|(rev, _)| *rev > e.revision)
        {
            continue;
        }
        match serde_json::from_slice::<PartitionAlarms>(&e.value) {
            Ok(a) => {
                seen.partitions.insert(p, (e.revision, a.alarms));
            }
            Err(err) => tracing::warn!("partition {p}: its alarms cannot be read: {err}"),
        }
    }
    if let Some(e) = record {
        if seen
            .incidents
            .as_ref()
            .is_none_or(|(rev, _)| *rev <= e.revision)
        {
            match serde_json::from_slice::<Incidents>(&e.value) {
                Ok(i) => seen.incidents = Some((e.revision, i)),
                Err(err) => tracing::warn!("the alerter's record cannot be read: {err}"),
            }
        }
    }
    let mut union: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, alarms) in seen.partitions.values() {
        for (alarm, failed) in alarms {
            union
                .entry(alarm.clone())
                .or_default()
                .extend(failed.iter().cloned());
        }
    }
    let incidents = seen
        .incidents
        .as_ref()
        .map(|(_, i)| i.clone())
        .unwrap_or_default();
    Ok((union, incidents))
}

/// `/api/alarms` in cluster mode: every alarm any partition's owner
/// knows or the alerter recorded, ERROR while any member in any
/// partition is, with the alerter's incident number, sorted by name.
pub fn views(union: BTreeMap<String, BTreeSet<String>>, incidents: &Incidents) -> Vec<AlarmView> {
    let mut names: BTreeSet<&String> = union.keys().collect();
    names.extend(incidents.alarms.keys());
    names
        .into_iter()
        .map(|name| {
            let failed: Vec<crate::engine::Name> = union
                .get(name)
                .map(|f| f.iter().map(|n| n.as_str().into()).collect())
                .unwrap_or_default();
            let state = if failed.is_empty() {
                State::Ok
            } else {
                State::Error
            };
            let (incident, changed) = incidents
                .alarms
                .get(name)
                .map(|r| (r.incident, r.last_state_change))
                .unwrap_or((0, 0));
            AlarmView::standalone(name, state, incident, failed, changed)
        })
        .collect()
}

/// The alerter's record of `engine`'s alarms.
fn record(engine: &Engine, token: u64) -> Incidents {
    Incidents {
        token,
        alarms: engine
            .alarms()
            .into_iter()
            .map(|a| {
                (
                    a.name.to_string(),
                    Record {
                        state: a.state.as_str().into(),
                        incident: a.incident_nbr,
                        last_state_change: a.last_state_change,
                        announced_state: a.announced.0.as_str().into(),
                        announced_incident: a.announced.1,
                    },
                )
            })
            .collect(),
    }
}

/// Makes the stand-ins of the alerter's engine the failed names of
/// `union`: a new one fails (ERROR, joining its alarms as the real
/// service does on its owner), a recovered one is deleted.
fn sync(
    engine: &Engine,
    standins: &mut BTreeSet<String>,
    union: &BTreeMap<String, BTreeSet<String>>,
) {
    let failed: BTreeSet<&String> = union.values().flatten().collect();
    let now = now_ms();
    // New failures first, then recoveries: an alarm whose one failed
    // member recovered as another failed stays ERROR, as on one node,
    // instead of going OK and opening a new incident in between.
    for n in &failed {
        if standins.contains(*n) {
            continue;
        }
        let fail = Change {
            fail: Some(FailReport::default()),
            ..Change::default()
        };
        match engine.change(n, fail, now) {
            Ok(()) => {
                standins.insert((*n).clone());
            }
            Err(e) => tracing::warn!("alerter: cannot count {n} as failed: {e}"),
        }
    }
    let gone: Vec<String> = standins
        .iter()
        .filter(|n| !failed.contains(n))
        .cloned()
        .collect();
    for n in gone {
        engine.delete(&n, now);
        standins.remove(&n);
    }
}

/// The alerter: while this node holds the alerter lease, unions the
/// partitions' failed sets into an alarm-only engine loaded from the
/// record, runs the alert pipeline over it, and records every alarm
/// after each change. Stops at `stop`, when the lease lapses, or when
/// the record was written by a newer alerter.
pub async fn alerter(shared: Arc<Shared>, clock: Arc<LeaseClock>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seen = std::sync::Mutex::new(Seen::default());
    // Take the record: written back with this lease's token, so an older
    // alerter's next write is refused.
    let (mut rev, mut written, union) = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if !clock.valid() {
            return;
        }
        if shared.alerts.get().is_none() {
            continue;
        }
        let (union, mut incidents) = match aggregate(&shared.alarms, shared.partitions, &seen).await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("alerter: cannot read the alarms: {e}");
                continue;
            }
        };
        incidents.token = clock.token();
        match write_fenced(
            &shared.alarms,
            wire::INCIDENTS_KEY,
            incidents.token,
            &incidents,
            incidents_token,
        )
        .await
        {
            Ok(rev) => break (rev, incidents, union),
            Err(Fenced::Deposed) => return,
            Err(Fenced::Nats(e)) => tracing::warn!("alerter: cannot take the record: {e}"),
        }
    };
    let Some(runner) = shared.alerts.get() else {
        return;
    };
    let now = now_ms();
    let engine = Engine::new((shared.engine_config)(), now);
    let stored = written
        .alarms
        .iter()
        .map(|(name, r)| StoredAlarm {
            name: name.clone(),
            state: state_of(&r.state),
            incident_nbr: r.incident,
            last_state_change: r.last_state_change,
            listed: true,
            announced: Some((state_of(&r.announced_state), r.announced_incident)),
        })
        .collect();
    engine.load(Vec::new(), stored, now);
    let mut standins = BTreeSet::new();
    sync(&engine, &mut standins, &union);
    // An alarm recorded ERROR whose members all recovered meanwhile has
    // no stand-in to leave it: it is settled here, as a transition.
    engine.settle_alarms(now_ms());
    tracing::info!(
        "alerter: taken (token {}), {} alarms recorded, {} services failed",
        clock.token(),
        written.alarms.len(),
        standins.len()
    );
    let drain = CancellationToken::new();
    let alerts = tokio::spawn(runner(engine.clone(), drain.clone()));
    loop {
        let now = record(&engine, clock.token());
        if now != written {
            // Written naming the revision this alerter wrote last: any
            // other write since (a newer alerter's) makes it fail.
            let body = serde_json::to_vec(&now).unwrap_or_default();
            match shared
                .alarms
                .update(wire::INCIDENTS_KEY, body.into(), rev)
                .await
            {
                Ok(r) => {
                    rev = r;
                    written = now;
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!("alerter: a newer alerter took over");
                    break;
                }
                Err(e) => tracing::warn!("alerter: cannot record the alarms: {e}"),
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        if !clock.valid() {
            break;
        }
        match aggregate(&shared.alarms, shared.partitions, &seen).await {
            Ok((union, _)) => sync(&engine, &mut standins, &union),
            Err(e) => tracing::warn!("alerter: cannot read the alarms: {e}"),
        }
    }
    // A deposed or stopping alerter sends nothing more: what it had not
    // delivered (and recorded) is the next alerter's to send.
    alerts.abort();
    let _ = alerts.await;
    tracing::info!("alerter: let go");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AlarmDef, EngineConfig};

    fn alarm_engine() -> Engine {
        let config = EngineConfig {
            alarms: vec![AlarmDef {
                name: "web".into(),
                includes: vec!["web.*".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        Engine::new(config, 1_000)
    }

    fn failed(names: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        let mut u: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        u.entry("web".into())
            .or_default()
            .extend(names.iter().map(|n| n.to_string()));
        u
    }

    /// The alerter's stand-ins follow the union: one failed member that
    /// recovers as another fails (seen in the same read) keeps the alarm
    /// in its incident, as one node would; all recovered makes it OK.
    #[test]
    fn stand_ins_follow_the_union_without_a_gap() {
        let e = alarm_engine();
        let mut standins = BTreeSet::new();
        sync(&e, &mut standins, &failed(&["web.x"]));
        let a = e.alarm("web").expect("made");
        assert_eq!((a.state, a.incident_nbr), (State::Error, 1));
        sync(&e, &mut standins, &failed(&["web.y"]));
        let a = e.alarm("web").expect("kept");
        assert_eq!(
            (a.state, a.incident_nbr),
            (State::Error, 1),
            "no new incident"
        );
        sync(&e, &mut standins, &failed(&[]));
        assert_eq!(e.alarm("web").expect("kept").state, State::Ok);
        assert!(standins.is_empty());
    }

    /// An alarm recorded ERROR whose members all recovered while no
    /// alerter ran is settled OK when the next alerter loads it, as a
    /// transition its receivers hear of; one recorded and still failing
    /// keeps its incident and announces nothing again.
    #[test]
    fn a_new_alerter_settles_what_changed_meanwhile() {
        let e = alarm_engine();
        let rec = |name: &str| StoredAlarm {
            name: name.into(),
            state: State::Error,
            incident_nbr: 3,
            last_state_change: 500,
            listed: true,
            announced: Some((State::Error, 3)),
        };
        e.load(Vec::new(), vec![rec("web"), rec("db")], 1_000);
        let mut standins = BTreeSet::new();
        sync(&e, &mut standins, &failed(&["web.x"]));
        e.settle_alarms(1_000);
        let web = e.alarm("web").expect("loaded");
        assert_eq!((web.state, web.incident_nbr), (State::Error, 3));
        let db = e.alarm("db").expect("loaded");
        assert_eq!((db.state, db.incident_nbr), (State::Ok, 3));
        let sent: Vec<(String, State)> = e
            .take_transitions()
            .into_iter()
            .map(|t| (t.alarm.name.to_string(), t.alarm.state))
            .collect();
        assert_eq!(sent, vec![("db".to_string(), State::Ok)]);
    }

    /// The aggregate lists every alarm any partition knows, ERROR while
    /// any partition has a failed member, with the recorded incident.
    #[test]
    fn views_union_the_partitions() {
        let mut union: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        union
            .entry("web".into())
            .or_default()
            .extend(["a.1".to_string(), "b.2".to_string()]);
        union.entry("db".into()).or_default();
        let mut incidents = Incidents::default();
        incidents.alarms.insert(
            "web".into(),
            Record {
                state: "error".into(),
                incident: 4,
                last_state_change: 9,
                announced_state: "error".into(),
                announced_incident: 4,
            },
        );
        let v = views(union, &incidents);
        assert_eq!(v.len(), 2);
        assert_eq!(&*v[1].name, "web");
        assert_eq!(v[1].state, State::Error);
        assert_eq!(v[1].incident_nbr, 4);
        assert_eq!(v[1].failed_services.len(), 2);
        assert_eq!(v[0].state, State::Ok);
        assert_eq!(state_of("bogus"), State::New);
        assert_eq!(partition_token(b"not json"), 0);
    }
}
