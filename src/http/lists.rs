//! Answers that hold a whole table: `GET /api/services`, `/api/alarms` and
//! `/api/alarms/<name>` (whose members are found by a walk of every
//! service). With a million services or members, building such an answer
//! on a runtime worker would stall the runtime, and holding it whole would
//! double the memory; so each is built on a thread of the blocking pool, a
//! chunk at a time, and sent as it is built.
//!
//! The blocking pool is shared: DNS lookups for alert delivery (webhooks,
//! mail, S3) run there too. A reader that takes a chunk just often enough
//! not to be cut as stalled would otherwise keep its thread for hours, and
//! enough of them would leave no thread for an alert. So at most
//! `[limits] max_http_lists` such answers are under way at once, at most
//! `max_http_lists_per_client` of them for one peer address (more get a
//! 503 with the usual JSON error), and each must be read at
//! `[limits] http_list_min_rate` bytes a second on average once its
//! `http_list_timeout` head start has passed (as Apache's mod_reqtimeout
//! `MinRate` does for request bodies): past that it is cut. A deadline
//! that grew by 1 ms per object instead let a reader of 10 M services at
//! 190 kB/s keep its place for three hours. A cut answer ends unfinished
//! (the connection is closed before the end of its chunked body), so a
//! client can tell it from a whole one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use serde::Serialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::router::busy;
use super::Body;
use crate::counters::{Counted, Kind, Metric, Reading, Value};
use crate::limits::LimitsConfig;

/// Bytes of an answer gathered before they are sent.
const CHUNK: usize = 64 * 1024;

/// How long a reader may take to accept the next chunk: a client that
/// stops reading does not keep its thread and its snapshot longer.
const STALLED: Duration = Duration::from_secs(30);

/// The peer address a request came from (canonical), for the per-client
/// share of the places; `None` for a request that came through no
/// connection (unit tests).
pub(crate) fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<Arc<super::conns::Conn>>()
        .map(|c| c.source())
}

/// The whole-table answers under way, and their limits.
pub(crate) struct Lists {
    permits: Arc<Semaphore>,
    /// `[limits] max_http_lists`.
    max: usize,
    /// `[limits] max_http_lists_per_client`.
    per_client: usize,
    /// Places held per peer address; an address holding none is absent.
    held: Mutex<HashMap<IpAddr, usize>>,
    /// `[limits] http_list_timeout`: the head start before `min_rate`
    /// applies.
    timeout: Duration,
    /// `[limits] http_list_min_rate` (bytes/s; 0: none).
    min_rate: u64,
    /// How long a reader may leave a chunk untaken (`STALLED`; shorter in
    /// tests).
    stalled: Duration,
    /// Answers refused because `max` were under way, or `per_client` for
    /// their client (`/metrics`).
    pub(crate) refused: AtomicU64,
    /// Answers cut at their deadline (`/metrics`).
    pub(crate) cut: AtomicU64,
}

impl Lists {
    /// The places and deadlines that `[limits]` sets.
    pub(crate) fn new(limits: &LimitsConfig) -> Lists {
        Lists {
            permits: Arc::new(Semaphore::new(limits.max_http_lists.max(1))),
            max: limits.max_http_lists.max(1),
            per_client: limits.max_http_lists_per_client.max(1),
            held: Mutex::new(HashMap::new()),
            timeout: LimitsConfig::duration(limits.http_list_timeout),
            min_rate: limits.http_list_min_rate,
            stalled: STALLED,
            refused: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        }
    }

    /// The same, with a reader allowed `stalled` per chunk instead of
    /// [`STALLED`].
    #[cfg(test)]
    pub(crate) fn with_stall(mut self, stalled: Duration) -> Lists {
        self.stalled = stalled;
        self
    }

    /// The places held per peer; a panic while it was held left the
    /// counts whole (each change is one statement), so poison is ignored.
    fn held(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more answer to `peer`, or the 503 that says there
    /// is none (none left, or none left for `peer`).
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
    ) -> Result<Admitted, Box<Response<Body>>> {
        let mut held = self.held();
        if let Some(ip) = peer {
            if held.get(&ip).copied().unwrap_or(0) >= self.per_client {
                drop(held);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Box::new(busy(
                    format!(
                        "this client is being sent {} answers that hold a whole table already ([limits] max_http_lists_per_client): try again when one ends",
                        self.per_client
                    ),
                    "1",
                )));
            }
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if let Some(ip) = peer {
                    *held.entry(ip).or_insert(0) += 1;
                }
                Ok(Admitted {
                    place: Place {
                        lists: self.clone(),
                        _permit: permit,
                        peer,
                    },
                    since: Instant::now(),
                })
            }
            Err(_) => {
                drop(held);
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Box::new(busy(
                    format!(
                        "{} answers that hold a whole table are being sent already ([limits] max_http_lists): try again shortly",
                        self.max
                    ),
                    "1",
                )))
            }
        }
    }
}

/// A place among the answers under way and its client's share of them,
/// given back when dropped.
struct Place {
    lists: Arc<Lists>,
    _permit: OwnedSemaphorePermit,
    peer: Option<IpAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(ip) = self.peer else { return };
        let mut held = self.lists.held();
        if let Some(n) = held.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&ip);
            }
        }
    }
}

/// A place among the answers under way, held until the answer is sent,
/// cut or abandoned.
pub(crate) struct Admitted {
    place: Place,
    since: Instant,
}

impl Admitted {
    /// Answers 200 with the JSON that `build` writes into its [`Out`], on
    /// a thread of the blocking pool, sent a chunk at a time. `build`
    /// returns `None` when a write says the answer is over (the client is
    /// gone, stalled or past the deadline): it should then return at once.
    pub(crate) fn stream(
        self,
        build: impl FnOnce(&mut Out) -> Option<()> + Send + 'static,
    ) -> Response<Body> {
        let (tx, rx) = mpsc::channel::<Chunk>(4);
        let handle = tokio::runtime::Handle::current();
        let Admitted { place, since } = self;
        tokio::task::spawn_blocking(move || {
            let mut out = Out {
                buf: Vec::with_capacity(CHUNK + 4096),
                tx,
                handle,
                since,
                sent: 0,
                objects: 0,
                lists: place.lists.clone(),
            };
            if build(&mut out).is_some() {
                let last = std::mem::take(&mut out.buf);
                out.send(Chunk::Last(last.into()));
            }
            drop(place);
        });
        let mut r = Response::new(
            ChannelBody {
                rx,
                finished: false,
            }
            .boxed(),
        );
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

/// A piece of an answer: more to come, or the end.
enum Chunk {
    More(Bytes),
    Last(Bytes),
}

/// Where an answer is written, on its blocking thread.
pub(crate) struct Out {
    buf: Vec<u8>,
    tx: mpsc::Sender<Chunk>,
    handle: tokio::runtime::Handle,
    /// When the answer was admitted: its deadline counts from here.
    since: Instant,
    /// Bytes handed to the client's connection so far.
    sent: u64,
    /// Objects the answer holds, as announced (for the log).
    objects: usize,
    lists: Arc<Lists>,
}

impl Out {
    /// The answer holds `objects` objects (said in the log if it is cut).
    pub(crate) fn holds(&mut self, objects: usize) {
        self.objects += objects;
    }

    /// When the answer must have been taken by: its head start, plus a
    /// second for each `http_list_min_rate` bytes already taken.
    fn deadline(&self) -> Instant {
        let start = self.since + self.lists.timeout;
        if self.lists.min_rate == 0 {
            return start;
        }
        start + Duration::from_secs_f64(self.sent as f64 / self.lists.min_rate as f64)
    }

    /// Appends raw bytes.
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends `value` as an element of a list that is a field of the
    /// top-level object, pretty-printed as serde_json prints it there
    /// (after `[` or `,`, on a line of its own, 4 spaces in), then sends
    /// the chunk if it is full; `None` when the answer is over.
    pub(crate) fn element<T: Serialize>(&mut self, first: &mut bool, value: &T) -> Option<()> {
        self.put(if *first { b"\n" } else { b",\n" });
        *first = false;
        self.put(b"    ");
        nested(&mut self.buf, value, b"    ");
        self.flush_full()
    }

    /// Appends `bytes` as they are (a line of NDJSON or CSV), then sends
    /// the chunk if it is full; `None` when the answer is over.
    pub(crate) fn line(&mut self, bytes: &[u8]) -> Option<()> {
        self.put(bytes);
        self.flush_full()
    }

    /// Sends the chunk if it is full; `None` when the answer is over.
    fn flush_full(&mut self) -> Option<()> {
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096));
            return self.send(Chunk::More(chunk.into())).then_some(());
        }
        Some(())
    }

    /// Appends `value` as the value of a field of the top-level object,
    /// pretty-printed as serde_json prints it there (its first line after
    /// the key, the others 2 spaces in).
    pub(crate) fn field<T: Serialize>(&mut self, value: &T) {
        nested(&mut self.buf, value, b"  ");
    }

    /// Sends a chunk from the blocking thread; false when the client is
    /// gone, did not take it within the stall limit, or the deadline has
    /// passed.
    fn send(&mut self, chunk: Chunk) -> bool {
        let left = self.deadline().saturating_duration_since(Instant::now());
        if left.is_zero() {
            return self.cut();
        }
        let wait = left.min(self.lists.stalled);
        let len = match &chunk {
            Chunk::More(b) | Chunk::Last(b) => b.len() as u64,
        };
        let sent = self
            .handle
            .block_on(tokio::time::timeout(wait, self.tx.send(chunk)));
        match sent {
            Ok(Ok(())) => {
                self.sent += len;
                true
            }
            Ok(Err(_)) => false, // the client went away
            Err(_) if wait < left => {
                tracing::debug!("a client stopped reading a list: dropped");
                false
            }
            Err(_) => self.cut(),
        }
    }

    /// The deadline has passed: the answer ends unfinished. Always false.
    fn cut(&self) -> bool {
        self.lists.cut.fetch_add(1, Ordering::Relaxed);
        let why = if self.lists.min_rate == 0 {
            "it was not taken within [limits] http_list_timeout".to_string()
        } else {
            format!(
                "its client read it slower than [limits] http_list_min_rate ({} bytes/s) once its http_list_timeout had passed",
                self.lists.min_rate
            )
        };
        tracing::warn!(
            "an answer of {} objects was cut after {} bytes in {:.1} s: {why}",
            self.objects,
            self.sent,
            self.since.elapsed().as_secs_f64()
        );
        false
    }
}

/// Appends `value` pretty-printed, every line after the first indented by
/// `indent`: how serde_json's pretty printer writes a value nested that
/// deep (JSON text has no raw newline inside a value, so the lines are the
/// printer's own).
fn nested<T: Serialize>(buf: &mut Vec<u8>, value: &T, indent: &[u8]) {
    let Ok(text) = serde_json::to_vec_pretty(value) else {
        return;
    };
    for (i, line) in text.split(|c| *c == b'\n').enumerate() {
        if i > 0 {
            buf.push(b'\n');
            buf.extend_from_slice(indent);
        }
        buf.extend_from_slice(line);
    }
}

/// A response body fed by an answer's thread. A channel that closes
/// before the last chunk is an answer cut short: the body ends with an
/// error, so hyper closes the connection without ending the chunked body,
/// and the client cannot take a cut answer for a whole one.
struct ChannelBody {
    rx: mpsc::Receiver<Chunk>,
    finished: bool,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Chunk::More(b))) => Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            Poll::Ready(Some(Chunk::Last(b))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(b))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(std::io::Error::other("the answer was cut short"))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

static REFUSED: Metric = Metric {
    prometheus: "lovebeat_http_lists_refused_total",
    statsd: None,
    help: "Requests for a whole table (/api/services, /api/alarms, an alarm's page, /api/export) refused with 503 at [limits] max_http_lists or max_http_lists_per_client.",
    kind: Kind::Counter,
};

static CUT: Metric = Metric {
    prometheus: "lovebeat_http_lists_cut_total",
    statsd: None,
    help: "Answers holding a whole table cut because their client read them slower than [limits] http_list_min_rate once http_list_timeout had passed.",
    kind: Kind::Counter,
};

/// The whole-table answers' counters, for `/metrics`.
impl Counted for Lists {
    fn read(&self, out: &mut Vec<Reading>) {
        out.push(Reading::of(
            &REFUSED,
            Value::Count(self.refused.load(std::sync::atomic::Ordering::Relaxed)),
        ));
        out.push(Reading::of(
            &CUT,
            Value::Count(self.cut.load(std::sync::atomic::Ordering::Relaxed)),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::RETRY_AFTER;
    use hyper::StatusCode;

    /// Writes `n` elements of 64 KiB each: far more than the channel and
    /// a chunk hold, so the answer's thread waits for its reader.
    fn big(n: usize) -> impl FnOnce(&mut Out) -> Option<()> + Send + 'static {
        move |out| {
            out.holds(0);
            out.put(b"{\n  \"big\": [");
            let mut first = true;
            let item = "x".repeat(64 * 1024);
            for _ in 0..n {
                out.element(&mut first, &item)?;
            }
            out.put(b"\n  ]\n}\n");
            Some(())
        }
    }

    /// Places and deadlines as `[limits]` would set them.
    fn lists(max: usize, per_client: usize, timeout_ms: u64, min_rate: u64) -> Arc<Lists> {
        Arc::new(Lists::new(&LimitsConfig {
            max_http_lists: max,
            max_http_lists_per_client: per_client,
            http_list_timeout: crate::settings::duration::DurationSetting { ms: timeout_ms },
            http_list_min_rate: min_rate,
            ..Default::default()
        }))
    }

    /// A place among the answers, which must be free.
    fn place(lists: &Arc<Lists>) -> Admitted {
        match lists.admit(None) {
            Ok(a) => a,
            Err(_) => panic!("no place among the answers"),
        }
    }

    /// Waits up to 5 s for a place among the answers.
    async fn admitted(lists: &Arc<Lists>) -> Admitted {
        for _ in 0..500 {
            if let Ok(a) = lists.admit(None) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no place was given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_max_lists_an_answer_is_a_503_json_error_until_one_ends() {
        let lists = lists(2, 2, 60_000, 0);
        let first = place(&lists).stream(big(100));
        let _second = place(&lists).stream(big(100));
        let Err(refused) = lists.admit(None) else {
            panic!("a third must be refused")
        };
        let refused = *refused;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            refused.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = refused
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.contains("max_http_lists")),
            "{v}"
        );
        assert_eq!(lists.refused.load(Ordering::Relaxed), 1);
        // The first client goes away: its thread ends, and its place is
        // given to the next.
        drop(first);
        let _third = admitted(&lists).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_read_too_slowly_is_cut_at_its_deadline_and_ends_unfinished() {
        let lists = lists(1, 1, 500, 0);
        let mut body = place(&lists).stream(big(100)).into_body();
        // One chunk every 100 ms: never stalled (30 s), far too slow for
        // 6.4 MB in 500 ms.
        let start = Instant::now();
        let mut got = 0;
        let ended = loop {
            match body.frame().await {
                Some(Ok(f)) => got += f.into_data().map_or(0, |d| d.len()),
                Some(Err(e)) => break e,
                None => panic!("a cut answer must not end as a whole one"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(start.elapsed() < Duration::from_secs(10), "never cut");
        };
        assert!(ended.to_string().contains("cut short"), "{ended}");
        assert!(got < 100 * 64 * 1024, "{got}");
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert_eq!(lists.cut.load(Ordering::Relaxed), 1);
        // Its place is free again.
        let _next = admitted(&lists).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_above_the_min_rate_gets_the_whole_answer_past_the_head_start() {
        // A 100 ms head start, then 500 kB/s: 20 chunks of 64 KiB (1.3
        // MB) taken one every 20 ms (3 MB/s) end whole after about 400 ms,
        // long past the head start.
        let lists = lists(1, 1, 100, 500_000);
        let mut body = place(&lists).stream(big(20)).into_body();
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            got.extend_from_slice(&f.expect("not cut").into_data().expect("data"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v: serde_json::Value = serde_json::from_slice(&got).expect("whole JSON");
        assert_eq!(v["big"].as_array().map(Vec::len), Some(20));
        assert_eq!(lists.cut.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_below_the_min_rate_is_cut_however_big_the_answer() {
        // 640 kB/s (a chunk every 100 ms) against 2 MB/s: cut soon after
        // the 300 ms head start, though its answer holds a million
        // objects (which bought 1 000 s more before).
        let lists = lists(1, 1, 300, 2_000_000);
        let build = |out: &mut Out| {
            out.holds(1_000_000);
            big(200)(out)
        };
        let mut body = place(&lists).stream(build).into_body();
        let start = Instant::now();
        let ended = loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("a cut answer must not end as a whole one"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(start.elapsed() < Duration::from_secs(15), "never cut");
        };
        assert!(ended.to_string().contains("cut short"), "{ended}");
        assert_eq!(lists.cut.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_client_holds_at_most_its_share_of_the_places() {
        let lists = lists(4, 2, 60_000, 0);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let Ok(first) = lists.admit(Some(a)) else {
            panic!("a first place")
        };
        let Ok(_second) = lists.admit(Some(a)) else {
            panic!("a second place")
        };
        let Err(refused) = lists.admit(Some(a)) else {
            panic!("a third for one client must be refused")
        };
        assert_eq!(refused.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        let body = refused
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("max_http_lists_per_client"),
            "{body:?}"
        );
        let Ok(_other) = lists.admit(Some(b)) else {
            panic!("another client still gets a place")
        };
        // Its place given back, the first client may have one more.
        drop(first);
        assert!(lists.admit(Some(a)).is_ok());
        assert_eq!(lists.refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_stops_is_dropped_after_the_stall_limit() {
        let lists = Arc::new(
            Lists::new(&LimitsConfig {
                max_http_lists: 1,
                ..Default::default()
            })
            .with_stall(Duration::from_millis(200)),
        );
        let held = place(&lists).stream(big(100));
        let start = Instant::now();
        let _next = admitted(&lists).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert_eq!(lists.cut.load(Ordering::Relaxed), 0, "a stall is not a cut");
        drop(held);
    }
}
