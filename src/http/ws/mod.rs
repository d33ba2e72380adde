//! `/ws`: live changes for the UI (README, "The web UI").
//!
//! One hub task turns engine events into JSON text messages, each encoded
//! once and shared by every client. Accepted beats publish no event; the hub
//! drains the engine's beaten set every 250 ms instead, so a service yields
//! at most one beat message per 250 ms however fast it beats. An alarm's
//! changes are coalesced the same way (`AlarmUpdates`): a change only marks
//! the alarm, and each tick sends one `UPDATE_ALARM` per marked alarm with its
//! state at that moment, so an alarm whose members fail one by one costs one
//! copy of its failed list per tick, not one per member (which was quadratic:
//! 100 000 members sent gigabytes). A big alarm's next message also waits
//! until its last one would have gone out at `ALARM_BYTES_PER_SEC`. Every
//! client has a queue bounded in messages and in bytes: the hub only appends
//! to it, never waits, so a slow or dead browser can never slow the engine
//! nor hold more than its bound. A queue that overflows is emptied and
//! replaced by `{"type": "RESYNC"}`, after which the client reloads its
//! lists over HTTP. A writer task per client drains its queue in batches
//! (many frames, one flush), pings every 30 s and drops a connection that
//! has not answered for 75 s. The hub and its messages are here; one
//! client's queue, upgrade and connection are in `client.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{upgrade, Frame, OpCode, Payload, WebSocketError};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::io::BufWriter;
use tokio::sync::{broadcast, Notify};

use crate::clock::now_ms;
use crate::engine::{
    AlarmView, BeatWatch, Engine, Event, EventKind, ServiceView, ServiceWatch, State,
};
use crate::http::router::error;
use crate::http::Body;

mod alarms;
mod client;

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use alarms::{marks, send_alarm_updates, AlarmUpdates};

pub use client::upgrade;
use client::Client;
#[cfg(test)]
use client::{Outgoing, Queue};

/// Messages a client may have waiting before it is sent RESYNC instead.
pub const CLIENT_QUEUE: usize = 4096;
/// Bytes a client may have waiting before it is sent RESYNC instead. One
/// message bigger than this (a huge alarm's) is still queued when nothing
/// else waits, so every message can reach a client that reads.
pub const CLIENT_QUEUE_BYTES: usize = 4 << 20;
/// The rate a big alarm's messages are paced to: after a message of `n`
/// bytes, its next one waits `n / ALARM_BYTES_PER_SEC` (at least one tick,
/// at most `ALARM_MAX_HOLD`), the last state winning meanwhile.
pub const ALARM_BYTES_PER_SEC: usize = 1 << 20;
/// The longest a changed alarm waits for its message.
const ALARM_MAX_HOLD: Duration = Duration::from_secs(5);
/// The rate all alarms' messages together are paced to, so that many big
/// alarms failing at once do not add up to more than a client on a modest
/// link reads (each would be sent RESYNC, and reload the lists, again and
/// again). What is not sent at a tick waits for the next, the last state
/// winning; a message bigger than what is left still goes when anything
/// is left, and its debt is forgiven past `ALARM_MAX_HOLD`.
pub const ALARMS_BYTES_PER_SEC: usize = 2 << 20;
/// How often accepted beats are collected into messages.
pub const BEAT_COALESCE: Duration = Duration::from_millis(250);
/// How often an idle connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A connection silent this long (no pong, no frame) is dropped.
const DEAD_AFTER_MS: i64 = 75_000;
/// A batch that cannot be written in this time means a stuck client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame accepted from a browser (it only sends control frames).
const MAX_INCOMING: usize = 64 * 1024;

/// The resync message, shared.
const RESYNC: &[u8] = br#"{"type":"RESYNC"}"#;

/// The clients and the counters `/metrics` reports.
#[derive(Default)]
pub struct WsHub {
    /// `[limits] max_websockets` (0: no limit).
    max: usize,
    /// Upgrades refused at `max` (`/metrics`).
    pub refused: std::sync::atomic::AtomicU64,
    clients: Mutex<Vec<Arc<Client>>>,
    /// Each client's connection task, so shutdown can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Messages queued for clients (one per client per change).
    pub sent: std::sync::atomic::AtomicU64,
    /// Bytes of the messages queued for clients (`/metrics`).
    pub sent_bytes: std::sync::atomic::AtomicU64,
    /// RESYNCs sent because a client fell behind.
    pub resyncs: std::sync::atomic::AtomicU64,
}

impl WsHub {
    /// A hub for at most `max` clients.
    pub fn new(max: usize) -> WsHub {
        WsHub {
            max,
            ..WsHub::default()
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        self.clients().len()
    }

    fn broadcast(&self, msg: &Bytes) {
        let clients = self.clients();
        let mut resyncs = 0;
        for c in clients.iter() {
            if !c.push(msg) {
                resyncs += 1;
            }
        }
        let n = clients.len() as u64;
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.sent_bytes
            .fetch_add(n * msg.len() as u64, Ordering::Relaxed);
        if resyncs > 0 {
            self.resyncs.fetch_add(resyncs, Ordering::Relaxed);
        }
    }

    fn resync_all(&self) {
        let clients = self.clients();
        for c in clients.iter() {
            c.queue().resync();
            c.wake.notify_one();
        }
        self.resyncs
            .fetch_add(clients.len() as u64, Ordering::Relaxed);
    }

    fn remove(&self, client: &Arc<Client>) {
        self.clients().retain(|c| !Arc::ptr_eq(c, client));
    }
}

#[derive(Serialize)]
struct ServiceMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    service: &'a ServiceView,
}

#[derive(Serialize)]
struct AlarmMsg<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    alarm: &'a AlarmView,
}

fn encode<T: Serialize>(value: &T) -> Option<Bytes> {
    match serde_json::to_vec(value) {
        Ok(v) => Some(Bytes::from(v)),
        Err(e) => {
            tracing::error!("could not encode a websocket message: {e}");
            None
        }
    }
}

fn service_msg(kind: &'static str, service: &ServiceView) -> Option<Bytes> {
    encode(&ServiceMsg { kind, service })
}

fn alarm_msg(kind: &'static str, alarm: &AlarmView) -> Option<Bytes> {
    encode(&AlarmMsg { kind, alarm })
}

/// The message for one event that is sent at once, if the UI needs one.
/// An alarm's updates are not: they mark it in `AlarmUpdates` (`marks`).
fn message(engine: &Engine, event: &Event) -> Option<Bytes> {
    match &event.kind {
        EventKind::ServiceAdded(s) => service_msg("ADD_SERVICE", s),
        // Creation is announced by ADD_SERVICE, which carries the state.
        EventKind::ServiceStateChanged {
            previous: State::New,
            ..
        } => None,
        EventKind::ServiceStateChanged { service, .. } => service_msg("UPDATE_SERVICE", service),
        EventKind::ServiceUpdated(name) => {
            service_msg("UPDATE_SERVICE", &engine.service(name, false)?)
        }
        EventKind::ServiceRemoved(s) => service_msg("REMOVE_SERVICE", s),
        EventKind::AlarmAdded(a) => alarm_msg("ADD_ALARM", &engine.with_suppression(a.clone())),
        EventKind::AlarmStateChanged { .. } | EventKind::AlarmUpdated(_) => None,
        EventKind::AlarmRemoved(a) => alarm_msg("REMOVE_ALARM", a),
        EventKind::JobRun(_) => None,
    }
}

/// The hub task: events and collected beats to every client's queue.
pub async fn run_hub(
    hub: Arc<WsHub>,
    engine: Engine,
    mut events: broadcast::Receiver<Arc<Event>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(BEAT_COALESCE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alarms = AlarmUpdates::default();
    // The maintenance windows open at the last look: when they change,
    // every alarm's `maintenance` may have, without an event of its own.
    let mut open_windows: Vec<Arc<str>> = Vec::new();
    let mut tick_count: u32 = 0;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if hub.client_count() > 0 {
                        if let Some(msg) = message(&engine, &ev) {
                            hub.broadcast(&msg);
                        }
                        marks(&engine, &ev, &mut alarms);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("websocket hub missed {n} events; clients resync");
                    hub.resync_all();
                    alarms.clear();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick() => {
                if hub.client_count() == 0 {
                    alarms.clear();
                }
                // Services first, then the alarms they changed.
                let beaten = engine.take_beaten();
                if beaten.len() > CLIENT_QUEUE {
                    hub.resync_all();
                    alarms.clear();
                    continue;
                }
                for name in beaten {
                    let msg = engine
                        .service(&name, false)
                        .and_then(|s| service_msg("UPDATE_SERVICE", &s));
                    if let Some(msg) = msg {
                        hub.broadcast(&msg);
                    }
                }
                tick_count = tick_count.wrapping_add(1);
                if tick_count % 4 == 0 && hub.client_count() > 0 {
                    let open = engine.maintenance().open_now(crate::clock::now_ms());
                    if open != open_windows {
                        open_windows = open;
                        for name in engine.alarm_names() {
                            alarms.mark(&name);
                        }
                    }
                }
                send_alarm_updates(&hub, &engine, &mut alarms);
            }
            _ = stop.cancelled() => {
                // 1001: going away. Each client's task sends it and ends.
                for c in hub.clients().iter() {
                    c.push_control(OpCode::Close, 1001u16.to_be_bytes().to_vec());
                }
                hub.tasks.close();
                hub.tasks.wait().await;
                return;
            }
        }
    }
}

static REFUSED: Metric = Metric {
    prometheus: "lovebeat_websockets_refused_total",
    statsd: None,
    help: "Websocket upgrades refused at [limits] max_websockets.",
    kind: Kind::Counter,
};

static MESSAGES: Metric = Metric {
    prometheus: "lovebeat_websocket_messages_total",
    statsd: None,
    help: "Messages queued for websocket clients.",
    kind: Kind::Counter,
};

static BYTES: Metric = Metric {
    prometheus: "lovebeat_websocket_bytes_total",
    statsd: None,
    help: "Bytes of the messages queued for websocket clients (a message counted once per client).",
    kind: Kind::Counter,
};

static RESYNCS: Metric = Metric {
    prometheus: "lovebeat_websocket_resyncs_total",
    statsd: None,
    help: "RESYNCs sent to websocket clients that fell behind.",
    kind: Kind::Counter,
};

static CLIENTS: Metric = Metric {
    prometheus: "lovebeat_websocket_clients",
    statsd: None,
    help: "Connected websocket clients.",
    kind: Kind::Gauge,
};

/// The websocket clients' counters, for `/metrics`.
impl Counted for WsHub {
    fn read(&self, out: &mut Vec<Reading>) {
        let n = |a: &std::sync::atomic::AtomicU64| {
            Value::Count(a.load(std::sync::atomic::Ordering::Relaxed))
        };
        out.push(Reading::of(&REFUSED, n(&self.refused)));
        out.push(Reading::of(&MESSAGES, n(&self.sent)));
        out.push(Reading::of(&BYTES, n(&self.sent_bytes)));
        out.push(Reading::of(&RESYNCS, n(&self.resyncs)));
        out.push(Reading::of(
            &CLIENTS,
            Value::Level(self.client_count() as f64),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn a_queue_is_bounded_in_bytes_and_resyncs_when_full() {
        let mut q = Queue::default();
        let msg = Bytes::from(vec![b'x'; 100_000]);
        let mut resynced = false;
        for _ in 0..1_000 {
            resynced |= !q.push_text(&msg);
            assert!(q.bytes <= CLIENT_QUEUE_BYTES, "{} bytes queued", q.bytes);
        }
        assert!(resynced, "100 MB offered to a 4 MiB queue");
        assert!(matches!(q.msgs.front(), Some(Outgoing::Text(b)) if &b[..] == RESYNC));
    }

    #[test]
    fn a_message_bigger_than_the_bound_still_reaches_an_empty_queue() {
        let mut q = Queue::default();
        let huge = Bytes::from(vec![b'x'; CLIENT_QUEUE_BYTES * 2]);
        assert!(q.push_text(&huge));
        assert!(!q.push_text(&Bytes::from_static(b"{}")), "full behind it");
        assert_eq!(q.msgs.len(), 1);
    }

    #[test]
    fn an_alarm_changed_many_times_is_due_once() {
        let mut u = AlarmUpdates::default();
        let a: Arc<str> = "a".into();
        for _ in 0..1_000 {
            u.mark(&a);
        }
        let now = Instant::now();
        assert_eq!(u.due(now), vec![a.clone()]);
        assert!(u.due(now).is_empty());
    }

    #[test]
    fn a_big_alarm_waits_for_its_bytes_at_the_paced_rate_and_no_longer_than_the_cap() {
        let mut u = AlarmUpdates::default();
        let (big, small): (Arc<str>, Arc<str>) = ("big".into(), "small".into());
        let t0 = Instant::now();
        u.sent(&big, 2 * ALARM_BYTES_PER_SEC, t0);
        u.sent(&small, 1_000, t0);
        u.mark(&big);
        u.mark(&small);
        assert_eq!(u.due(t0 + BEAT_COALESCE), vec![small.clone()]);
        assert!(u.due(t0 + Duration::from_millis(1_900)).is_empty());
        assert_eq!(u.due(t0 + Duration::from_millis(2_001)), vec![big.clone()]);
        u.sent(&big, 100 * ALARM_BYTES_PER_SEC, t0);
        u.mark(&big);
        assert_eq!(
            u.due(t0 + ALARM_MAX_HOLD + Duration::from_millis(1)),
            vec![big]
        );
    }

    #[test]
    fn many_big_alarms_share_one_budget_and_the_rest_wait_their_turn() {
        let mut u = AlarmUpdates::default();
        let t0 = Instant::now();
        let names: Vec<Arc<str>> = (0..20).map(|i| format!("a{i}").into()).collect();
        let mut sent = 0usize;
        // Twenty alarms of 512 KiB each, all changed at every tick for 4 s.
        for tick in 0..16u32 {
            let now = t0 + BEAT_COALESCE * tick;
            for n in &names {
                u.mark(n);
            }
            let mut left = u.refill(now);
            for n in u.due(now) {
                if !left {
                    u.defer(n);
                    continue;
                }
                u.sent(&n, 512 << 10, now);
                sent += 512 << 10;
                left = u.budget > 0.0;
            }
        }
        // One second's burst plus 4 s at the rate, and one message over.
        let bound = ALARMS_BYTES_PER_SEC * 5 + (512 << 10);
        assert!(sent <= bound, "{sent} bytes sent in 4 s (at most {bound})");
        assert!(
            sent >= ALARMS_BYTES_PER_SEC * 3,
            "{sent} bytes: the budget is spent"
        );
    }

    #[test]
    fn a_removed_alarm_is_not_updated_after_its_removal() {
        let mut u = AlarmUpdates::default();
        let a: Arc<str> = "a".into();
        u.mark(&a);
        u.forget(&a);
        assert!(u.due(Instant::now()).is_empty());
    }
}
