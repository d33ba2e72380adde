//! `/ws`: live changes for the UI (README, "The web UI").
//!
//! One hub task turns engine events into JSON text messages, each encoded
//! once and shared by every client. Accepted beats publish no event; the hub
//! drains the engine's beaten set every 250 ms instead, so a service yields
//! at most one beat message per 250 ms however fast it beats. Every client
//! has a bounded queue: the hub only appends to it, never waits, so a slow or
//! dead browser can never slow the engine. A queue that overflows is emptied
//! and replaced by `{"type": "RESYNC"}`, after which the client reloads its
//! lists over HTTP. A writer task per client drains its queue in batches
//! (many frames, one flush), pings every 30 s and drops a connection that
//! has not answered for 75 s.

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

use super::router::error;
use super::Body;
use crate::clock::now_ms;
use crate::engine::{
    AlarmView, BeatWatch, Engine, Event, EventKind, ServiceView, ServiceWatch, State,
};

/// Messages a client may have waiting before it is sent RESYNC instead.
pub const CLIENT_QUEUE: usize = 4096;
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

/// What a client's writer sends next.
enum Outgoing {
    /// A JSON text message.
    Text(Bytes),
    /// A control frame owed to the peer (pong, close reply).
    Control(OpCode, Vec<u8>),
}

/// One connected browser: its queue and what its writer needs to know.
struct Client {
    queue: Mutex<VecDeque<Outgoing>>,
    wake: Notify,
    /// Last time anything arrived from the peer (ms).
    last_seen: AtomicI64,
    /// Set by the reader when the peer went away.
    gone: AtomicBool,
    /// Keeps the engine collecting beats while this client is connected.
    _beats: BeatWatch,
    /// Keeps service events flowing while the client is connected.
    _services: ServiceWatch,
}

impl Client {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Outgoing>> {
        // Only pushes and drains happen under this lock; a panic there
        // leaves a valid deque, so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a message, or replaces the backlog by RESYNC when full.
    fn push(&self, msg: &Bytes) {
        let mut q = self.queue();
        if q.len() >= CLIENT_QUEUE {
            q.clear();
            q.push_back(Outgoing::Text(Bytes::from_static(RESYNC)));
        } else {
            q.push_back(Outgoing::Text(msg.clone()));
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Queues a control frame; a close always, a pong or ping only while
    /// the queue has room (a peer that pings without reading gets no more).
    fn push_control(&self, opcode: OpCode, payload: Vec<u8>) {
        let mut q = self.queue();
        if opcode == OpCode::Close || q.len() < CLIENT_QUEUE {
            q.push_back(Outgoing::Control(opcode, payload));
        }
        drop(q);
        self.wake.notify_one();
    }
}

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
        for c in clients.iter() {
            c.push(msg);
        }
        self.sent.fetch_add(clients.len() as u64, Ordering::Relaxed);
    }

    fn resync_all(&self) {
        let clients = self.clients();
        for c in clients.iter() {
            let mut q = c.queue();
            q.clear();
            q.push_back(Outgoing::Text(Bytes::from_static(RESYNC)));
            drop(q);
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

/// The message for one event, if the UI needs one.
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
        EventKind::AlarmStateChanged { alarm, .. } => {
            alarm_msg("UPDATE_ALARM", &engine.with_suppression(alarm.clone()))
        }
        EventKind::AlarmUpdated(name) => alarm_msg("UPDATE_ALARM", &engine.alarm(name)?),
        EventKind::AlarmRemoved(a) => alarm_msg("REMOVE_ALARM", a),
    }
}

/// When an alarm changes state, the alarms that depend on it change their
/// `suppressed_by` (README, "Cron jobs and scripts") without an event of their own: one
/// `UPDATE_ALARM` each. Alarms are few; this walks them only then.
fn dependents(engine: &Engine, event: &Event) -> Vec<Bytes> {
    let EventKind::AlarmStateChanged { alarm, .. } = &event.kind else {
        return Vec::new();
    };
    if !engine
        .matcher()
        .defs()
        .iter()
        .any(|d| !d.depends_on.is_empty())
    {
        return Vec::new();
    }
    engine
        .alarms_depending_on(&alarm.name)
        .iter()
        .filter_map(|a| alarm_msg("UPDATE_ALARM", a))
        .collect()
}

/// The hub task: events and collected beats to every client's queue.
pub async fn run_hub(
    hub: Arc<WsHub>,
    engine: Engine,
    mut events: broadcast::Receiver<Arc<Event>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut beats = tokio::time::interval(BEAT_COALESCE);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if hub.client_count() > 0 {
                        if let Some(msg) = message(&engine, &ev) {
                            hub.broadcast(&msg);
                        }
                        for msg in dependents(&engine, &ev) {
                            hub.broadcast(&msg);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!("websocket hub missed {n} events; clients resync");
                    hub.resync_all();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = beats.tick() => {
                let beaten = engine.take_beaten();
                if beaten.len() > CLIENT_QUEUE {
                    hub.resync_all();
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

/// GET /ws: upgrades the connection and serves it until it closes.
pub fn upgrade(mut req: Request<Incoming>, hub: &Arc<WsHub>, engine: &Engine) -> Response<Body> {
    // A browser refuses the connection unless the answer names one of the
    // subprotocols it offered; the UI offers `lovebeat` (beside the one
    // carrying its key).
    let offered_lovebeat = req
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == super::auth::WS_PROTOCOL);
    let full = |hub: &WsHub| {
        hub.refused.fetch_add(1, Ordering::Relaxed);
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "lovebeat serves its maximum of {} websocket clients ([limits] max_websockets)",
                hub.max
            ),
        )
    };
    if hub.max > 0 && hub.client_count() >= hub.max {
        return full(hub);
    }
    if !upgrade::is_upgrade_request(&req) {
        return error(
            StatusCode::BAD_REQUEST,
            "/ws expects a websocket upgrade".into(),
        );
    }
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("websocket upgrade failed: {e}"),
            )
        }
    };
    let client = Arc::new(Client {
        queue: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        last_seen: AtomicI64::new(now_ms()),
        gone: AtomicBool::new(false),
        _beats: engine.watch_beats(),
        _services: engine.watch_services(),
    });
    // Registered before the 101 goes out: every change after the client's
    // handshake reaches it, so its HTTP reload that follows misses nothing.
    {
        // Counted and added under one lock: upgrades racing on two
        // workers cannot both take the last place.
        let mut clients = hub.clients();
        if hub.max > 0 && clients.len() >= hub.max {
            drop(clients);
            return full(hub);
        }
        clients.push(client.clone());
    }
    let hub_ = hub.clone();
    hub.tasks.spawn(async move {
        let hub = hub_;
        match fut.await {
            Ok(ws) => serve(ws, &client).await,
            Err(e) => tracing::debug!("websocket upgrade did not complete: {e}"),
        }
        hub.remove(&client);
    });
    let (mut parts, _) = response.into_parts();
    if offered_lovebeat {
        parts.headers.insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            hyper::header::HeaderValue::from_static(super::auth::WS_PROTOCOL),
        );
    }
    Response::from_parts(parts, super::router::full(Bytes::new()))
}

type Upgraded = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Runs one connection: a reader for the peer's frames, this task writing.
async fn serve(ws: fastwebsockets::WebSocket<Upgraded>, client: &Arc<Client>) {
    let (mut rd, mut wr) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::new(w))
    });
    rd.set_max_message_size(MAX_INCOMING);
    wr.set_writev(false);
    let reader_client = client.clone();
    let reader = tokio::spawn(async move {
        let c = reader_client;
        loop {
            let mut owed = |f: Frame<'_>| {
                c.push_control(f.opcode, f.payload.to_vec());
                std::future::ready(Ok::<(), std::io::Error>(()))
            };
            match rd.read_frame(&mut owed).await {
                Ok(frame) => {
                    c.last_seen.store(now_ms(), Ordering::Relaxed);
                    if frame.opcode == OpCode::Close {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        c.gone.store(true, Ordering::Relaxed);
        c.wake.notify_one();
    });
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut batch = Vec::new();
    'conn: loop {
        tokio::select! {
            _ = client.wake.notified() => {}
            _ = ping.tick() => {
                if now_ms() - client.last_seen.load(Ordering::Relaxed) > DEAD_AFTER_MS {
                    tracing::debug!("websocket client stopped answering; dropped");
                    break;
                }
                client.push_control(OpCode::Ping, Vec::new());
            }
        }
        if client.gone.load(Ordering::Relaxed) {
            break;
        }
        batch.extend(client.queue().drain(..));
        let write = async {
            for out in batch.drain(..) {
                let (opcode, bytes): (OpCode, &[u8]) = match &out {
                    Outgoing::Text(b) => (OpCode::Text, b),
                    Outgoing::Control(op, p) => (*op, p),
                };
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(bytes));
                wr.write_frame(frame).await?;
                if opcode == OpCode::Close {
                    wr.flush().await?;
                    return Ok::<bool, WebSocketError>(true);
                }
            }
            wr.flush().await?;
            Ok(false)
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => break 'conn,
            Ok(Err(e)) => {
                tracing::debug!("websocket write failed: {e}");
                break;
            }
            Err(_) => {
                tracing::debug!("websocket client stopped reading; dropped");
                break;
            }
        }
    }
    reader.abort();
}
