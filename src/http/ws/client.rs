//! One browser's connection: its bounded queue, the upgrade that admits
//! it, and the reader and writer that serve it until it goes.

use super::*;

/// What a client's writer sends next.
pub(super) enum Outgoing {
    /// A JSON text message.
    Text(Bytes),
    /// A control frame owed to the peer (pong, close reply).
    Control(OpCode, Vec<u8>),
}

/// What a client has waiting, and its size in bytes.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) msgs: VecDeque<Outgoing>,
    /// Sum of the text messages' lengths in `msgs`.
    pub(super) bytes: usize,
}

impl Queue {
    /// Appends a message, or empties the queue down to one RESYNC when it
    /// would pass either bound (false then).
    pub(super) fn push_text(&mut self, msg: &Bytes) -> bool {
        let full = self.msgs.len() >= CLIENT_QUEUE
            || (!self.msgs.is_empty() && self.bytes + msg.len() > CLIENT_QUEUE_BYTES);
        if full {
            self.resync();
        } else {
            self.bytes += msg.len();
            self.msgs.push_back(Outgoing::Text(msg.clone()));
        }
        !full
    }

    /// Empties the queue down to one RESYNC.
    pub(super) fn resync(&mut self) {
        self.msgs.clear();
        self.msgs
            .push_back(Outgoing::Text(Bytes::from_static(RESYNC)));
        self.bytes = RESYNC.len();
    }
}

/// One connected browser: its queue and what its writer needs to know.
pub(super) struct Client {
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Notify,
    /// Last time anything arrived from the peer (ms).
    pub(super) last_seen: AtomicI64,
    /// Set by the reader when the peer went away.
    pub(super) gone: AtomicBool,
    /// Keeps the engine collecting beats while this client is connected.
    pub(super) _beats: BeatWatch,
    /// Keeps service events flowing while the client is connected.
    pub(super) _services: ServiceWatch,
}

impl Client {
    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Only pushes and drains happen under this lock; a panic there
        // leaves a valid queue, so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a message, or replaces the backlog by RESYNC when it would
    /// pass either bound. Returns false when it did the latter.
    pub(super) fn push(&self, msg: &Bytes) -> bool {
        let fits = self.queue().push_text(msg);
        self.wake.notify_one();
        fits
    }

    /// Queues a control frame; a close always, a pong or ping only while
    /// the queue has room (a peer that pings without reading gets no more).
    pub(super) fn push_control(&self, opcode: OpCode, payload: Vec<u8>) {
        let mut q = self.queue();
        if opcode == OpCode::Close || q.msgs.len() < CLIENT_QUEUE {
            q.msgs.push_back(Outgoing::Control(opcode, payload));
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Takes everything waiting, for the writer.
    pub(super) fn take(&self, into: &mut Vec<Outgoing>) {
        let mut q = self.queue();
        into.extend(q.msgs.drain(..));
        q.bytes = 0;
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
        .any(|p| p.trim() == crate::http::auth::WS_PROTOCOL);
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
        queue: Mutex::new(Queue::default()),
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
            hyper::header::HeaderValue::from_static(crate::http::auth::WS_PROTOCOL),
        );
    }
    Response::from_parts(parts, crate::http::router::full(Bytes::new()))
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
    // Not in a tracker of its own: it lives inside this client's task,
    // which the sink tracker holds, and is aborted before that task ends.
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
        client.take(&mut batch);
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
