//! The HTTP connections: how many there are, what each is doing, and
//! closing the ones that hold a socket without using it.
//!
//! A client that sends half a request, or opens a keep-alive connection
//! and never sends another, would keep its socket forever; a few thousand
//! of them exhaust the file descriptors, and then neither the API nor a
//! save (which needs a descriptor too) works. So every connection is
//! registered here with what it is doing, a reaper closes one whose
//! request headers take longer than `http_header_timeout` or that has been
//! idle longer than `http_idle_timeout`, and at `max_http_connections` a
//! new connection takes the place of the one that has waited longest
//! without a request being handled: the API keeps answering whoever
//! actually sends requests. A connection still sending a streamed answer
//! (a whole table) goes last: it gives way only when every other one is
//! busy too, and it is idle (reaped) once nothing is read or written for
//! `http_idle_timeout`, so a client that stops reading holds nothing.
//! A connection whose handler waits for its request's body gives way
//! after the idle ones (the one that has waited longest first): a body
//! trickled in a byte a second is within its timeouts for a while, and
//! a cap full of them must not lock every other client out.
//!
//! That order runs within one source: at the cap the connection to close
//! is taken from the peer address (IP, not port) holding the most
//! connections, counting the new one. Else a source that holds most of
//! the cap and keeps every connection a little busier than the others
//! (a line a second each) makes every quieter client's connection the
//! one to give way; this way a source hogging the cap closes its own.
//! With every connection from one address (a proxy, a test) the order is
//! the one above.
//!
//! statsd over TCP (`crate::ingest::tcp`) holds its connections to its
//! cap by the same rule: they never enter a handler, and their last use
//! is their last whole line ([`Registry::used`]), not their last byte, so
//! one that trickles a line it never ends is the first to give way.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::counters::{Counted, Kind, Metric, Reading, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Milliseconds since the registry started: a monotonic clock cheap to
/// keep in an atomic.
fn mono_ms(start: Instant) -> i64 {
    start.elapsed().as_millis() as i64
}

/// What one connection is doing.
pub(crate) struct Conn {
    /// Requests being handled now (a keep-alive connection handles one at
    /// a time, but an upgrade keeps its request open).
    in_handler: AtomicUsize,
    /// When a byte was last read or written (registry ms).
    last_io: AtomicI64,
    /// When the first byte of a request not yet handled arrived (registry
    /// ms), or -1 while none is under way.
    request_started: AtomicI64,
    /// Cancelled to close the connection at once.
    pub(crate) kill: CancellationToken,
    /// Set once the connection was upgraded to a websocket: it is the
    /// websocket hub's from then on.
    upgraded: AtomicBool,
    /// Streamed answers being sent (after their handler returned).
    streaming: AtomicUsize,
    /// When its handler started waiting for the request's body (registry
    /// ms), or -1 while it waits for none.
    body_since: AtomicI64,
    /// The peer's address (canonical: an IPv4-mapped IPv6 one is its
    /// IPv4): the source whose count decides who gives way at the cap.
    source: IpAddr,
}

impl Conn {
    /// The client's address, as lovebeat sees it (a proxy's, behind one).
    pub(crate) fn source(&self) -> IpAddr {
        self.source
    }
}

impl Conn {
    /// A request's headers are complete and its handler runs; the returned
    /// guard says when it is done.
    pub(crate) fn handling(self: &Arc<Conn>) -> Handling {
        self.in_handler.fetch_add(1, Ordering::Relaxed);
        self.request_started.store(-1, Ordering::Relaxed);
        Handling(self.clone())
    }

    /// A streamed answer's body is being sent; the returned guard says
    /// when it is over (sent, cut or dropped).
    pub(crate) fn streaming(self: &Arc<Conn>) -> Streaming {
        self.streaming.fetch_add(1, Ordering::Relaxed);
        Streaming(self.clone())
    }

    /// The connection was upgraded (a websocket): no longer reaped here.
    pub(crate) fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }
}

/// Ends a request's handling when dropped.
pub(crate) struct Handling(Arc<Conn>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.in_handler.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends a handler's wait for its request's body when dropped.
pub(crate) struct ReadingBody(Arc<Conn>);

impl Drop for ReadingBody {
    fn drop(&mut self) {
        self.0.body_since.store(-1, Ordering::Relaxed);
    }
}

/// Ends a streamed answer's sending when dropped.
pub(crate) struct Streaming(Arc<Conn>);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.streaming.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live connections and the limits on them.
pub(crate) struct Registry {
    start: Instant,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// `max_http_connections`.
    max: usize,
    /// `http_header_timeout`.
    header_timeout: Duration,
    /// `http_idle_timeout`.
    idle_timeout: Duration,
    /// Connections closed to make room, or for taking too long (`/metrics`).
    pub(crate) closed: AtomicU64,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new(max: usize, header_timeout: Duration, idle_timeout: Duration) -> Registry {
        Registry {
            start: Instant::now(),
            conns: Mutex::new(Vec::new()),
            max: max.max(1),
            header_timeout,
            idle_timeout,
            closed: AtomicU64::new(0),
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live connections.
    pub(crate) fn len(&self) -> usize {
        self.conns().len()
    }

    /// Registers a new connection from `peer`. At the cap one is closed
    /// to make room, taken from the source (peer address) holding the
    /// most connections, the new one counted, that has one able to give
    /// way; within that source, the connection that has waited longest
    /// without a request being handled; failing that, the one whose
    /// handler has waited longest for its request's body; one still
    /// sending a streamed answer only when no other can be. If every one
    /// is handling a request that is past its body, `None`: the new one
    /// is refused.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<Arc<Conn>> {
        self.admit_evicting(peer).map(|(conn, _)| conn)
    }

    /// [`admit`](Registry::admit), saying too whether another connection
    /// was closed to make room (for a caller that counts those apart).
    pub(crate) fn admit_evicting(&self, peer: IpAddr) -> Option<(Arc<Conn>, bool)> {
        let now = mono_ms(self.start);
        let source = peer.to_canonical();
        let mut evicted = false;
        let mut conns = self.conns();
        if conns.len() >= self.max {
            let victim = Self::victim(&conns, source)?;
            let gone = conns.swap_remove(victim);
            gone.kill.cancel();
            self.closed.fetch_add(1, Ordering::Relaxed);
            evicted = true;
        }
        let conn = Arc::new(Conn {
            in_handler: AtomicUsize::new(0),
            last_io: AtomicI64::new(now),
            request_started: AtomicI64::new(-1),
            kill: CancellationToken::new(),
            upgraded: AtomicBool::new(false),
            streaming: AtomicUsize::new(0),
            body_since: AtomicI64::new(-1),
            source,
        });
        conns.push(conn.clone());
        Some((conn, evicted))
    }

    /// The connection to close at the cap for a newcomer from `newcomer`:
    /// the sources by how many connections they hold (the newcomer's
    /// counting it), the largest first, and within a source (or sources
    /// holding as many) by [`giving_way`](Registry::giving_way). A linear
    /// scan, run only at the cap, so nothing per request or line costs
    /// more.
    fn victim(conns: &[Arc<Conn>], newcomer: IpAddr) -> Option<usize> {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for c in conns.iter().map(|c| c.source).chain([newcomer]) {
            *held.entry(c).or_default() += 1;
        }
        conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let count = held.get(&c.source).copied().unwrap_or(0);
                Some((i, (Reverse(count), Self::giving_way(c)?)))
            })
            .min_by_key(|(_, rank)| *rank)
            .map(|(i, _)| i)
    }

    /// Where `c` stands in the line to give way at the cap (the least
    /// first), or `None` if it cannot: idle ones by when they were last
    /// used, then those waiting for a body by when they began to, then
    /// those sending a streamed answer by when they last sent.
    fn giving_way(c: &Conn) -> Option<(u8, i64)> {
        if c.in_handler.load(Ordering::Relaxed) == 0 {
            let streaming = c.streaming.load(Ordering::Relaxed) > 0;
            return Some((
                if streaming { 2 } else { 0 },
                c.last_io.load(Ordering::Relaxed),
            ));
        }
        let body = c.body_since.load(Ordering::Relaxed);
        (body >= 0).then_some((1, body))
    }

    /// `conn`'s handler waits for its request's body until the returned
    /// guard is dropped: meanwhile the connection can give way at the cap.
    pub(crate) fn reading_body(&self, conn: &Arc<Conn>) -> ReadingBody {
        conn.body_since
            .store(mono_ms(self.start), Ordering::Relaxed);
        ReadingBody(conn.clone())
    }

    /// `conn` was used just now (for a connection that is not [`track`]ed,
    /// or whose bytes alone do not say it is used).
    ///
    /// [`track`]: Registry::track
    pub(crate) fn used(&self, conn: &Conn) {
        conn.last_io.store(mono_ms(self.start), Ordering::Relaxed);
    }

    /// Forgets a connection that ended.
    pub(crate) fn remove(&self, conn: &Arc<Conn>) {
        let mut conns = self.conns();
        if let Some(i) = conns.iter().position(|c| Arc::ptr_eq(c, conn)) {
            conns.swap_remove(i);
        }
    }

    /// Closes every connection whose request headers took longer than the
    /// header timeout, or that has been idle longer than the idle timeout.
    /// Returns how many.
    pub(crate) fn reap(&self) -> usize {
        let now = mono_ms(self.start);
        let header = self.header_timeout.as_millis() as i64;
        let idle = self.idle_timeout.as_millis() as i64;
        let mut conns = self.conns();
        let before = conns.len();
        conns.retain(|c| {
            if c.in_handler.load(Ordering::Relaxed) > 0 || c.upgraded.load(Ordering::Relaxed) {
                return true;
            }
            // A request read while an answer still streams waits for it,
            // not for its own headers.
            let started = c.request_started.load(Ordering::Relaxed);
            let slow_headers =
                started >= 0 && c.streaming.load(Ordering::Relaxed) == 0 && now - started > header;
            let idle_too_long = now - c.last_io.load(Ordering::Relaxed) > idle;
            if slow_headers || idle_too_long {
                c.kill.cancel();
                return false;
            }
            true
        });
        let n = before - conns.len();
        self.closed.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Wraps a connection's stream so its reads and writes are seen.
    pub(crate) fn track<S>(self: &Arc<Self>, conn: Arc<Conn>, stream: S) -> Tracked<S> {
        Tracked {
            stream,
            conn,
            registry: self.clone(),
        }
    }
}

/// A stream whose activity is recorded in its connection's entry.
pub(crate) struct Tracked<S> {
    stream: S,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl<S> Tracked<S> {
    fn saw_io(&self, read: bool) {
        let now = mono_ms(self.registry.start);
        self.conn.last_io.store(now, Ordering::Relaxed);
        // The first byte of a request: its headers' time starts.
        if read
            && self.conn.in_handler.load(Ordering::Relaxed) == 0
            && self.conn.request_started.load(Ordering::Relaxed) < 0
        {
            self.conn.request_started.store(now, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.saw_io(true);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.saw_io(false);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.saw_io(false);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

static CLOSED: Metric = Metric {
    prometheus: "lovebeat_http_connections_closed_total",
    statsd: None,
    help: "HTTP connections closed to make room at [limits] max_http_connections, or for being idle or slow past the timeouts.",
    kind: Kind::Counter,
};

static OPEN: Metric = Metric {
    prometheus: "lovebeat_http_connections",
    statsd: None,
    help: "Open HTTP connections.",
    kind: Kind::Gauge,
};

/// The connections' counters, for `/metrics`.
impl Counted for Registry {
    fn read(&self, out: &mut Vec<Reading>) {
        out.push(Reading::of(
            &CLOSED,
            Value::Count(self.closed.load(std::sync::atomic::Ordering::Relaxed)),
        ));
        out.push(Reading::of(&OPEN, Value::Level(self.len() as f64)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one source of the tests that are about the order within one.
    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room() {
        let r = Registry::new(2, Duration::from_secs(10), Duration::from_secs(60));
        let a = r.admit(HOST).expect("room");
        std::thread::sleep(Duration::from_millis(5));
        let b = r.admit(HOST).expect("room");
        let _busy = b.handling();
        let c = r.admit(HOST).expect("a's place");
        assert!(a.kill.is_cancelled() && !b.kill.is_cancelled() && !c.kill.is_cancelled());
        let _busy_c = c.handling();
        assert!(
            r.admit(HOST).is_none(),
            "every connection is handling a request"
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_handler_waiting_for_its_body_gives_way_after_the_idle_ones() {
        let r = Registry::new(3, Duration::from_secs(10), Duration::from_secs(60));
        let (first, second, done) = (
            r.admit(HOST).expect("room"),
            r.admit(HOST).expect("room"),
            r.admit(HOST).expect("room"),
        );
        let (_h1, _h2, _h3) = (first.handling(), second.handling(), done.handling());
        let _waiting_first = r.reading_body(&first);
        std::thread::sleep(Duration::from_millis(5));
        let waiting_second = r.reading_body(&second);
        // `done` read its body: it is past the point of giving way.
        let idle = r.admit(HOST).expect("the first body's place");
        assert!(first.kill.is_cancelled() && !second.kill.is_cancelled());
        let next = r.admit(HOST).expect("the idle one's place");
        assert!(idle.kill.is_cancelled() && !second.kill.is_cancelled());
        let _h4 = next.handling();
        let second_place = r.admit(HOST).expect("the second body's place");
        assert!(second.kill.is_cancelled() && !done.kill.is_cancelled());
        drop(waiting_second);
        let _h5 = second_place.handling();
        assert!(r.admit(HOST).is_none(), "handlers past their body stay");
        assert!(!done.kill.is_cancelled() && !next.kill.is_cancelled());
    }

    #[test]
    fn a_connection_used_lately_is_kept_over_one_that_only_sent_bytes() {
        let r = Registry::new(2, Duration::from_secs(10), Duration::from_secs(60));
        let (a, b) = (r.admit(HOST).expect("room"), r.admit(HOST).expect("room"));
        std::thread::sleep(Duration::from_millis(5));
        r.used(&a);
        let (_c, evicted) = r.admit_evicting(HOST).expect("b's place");
        assert!(evicted && b.kill.is_cancelled() && !a.kill.is_cancelled());
    }

    #[test]
    fn at_the_cap_the_source_holding_the_most_connections_gives_way_not_a_quiet_one() {
        let (busy, quiet, other): (IpAddr, IpAddr, IpAddr) = (
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            [10, 0, 0, 3].into(),
        );
        let r = Registry::new(4, Duration::from_secs(10), Duration::from_secs(60));
        // The quiet source's one connection was used long before the busy
        // source's three, which keep sending a line each.
        let lone = r.admit(quiet).expect("room");
        std::thread::sleep(Duration::from_millis(5));
        let hog: Vec<_> = (0..3).map(|_| r.admit(busy).expect("room")).collect();
        for c in &hog {
            r.used(c);
        }
        let (_new, evicted) = r.admit_evicting(other).expect("a busy one's place");
        assert!(evicted && !lone.kill.is_cancelled(), "the quiet one stays");
        assert_eq!(hog.iter().filter(|c| c.kill.is_cancelled()).count(), 1);
        let _more = r.admit(busy).expect("its own place");
        assert!(!lone.kill.is_cancelled());
        assert_eq!(hog.iter().filter(|c| c.kill.is_cancelled()).count(), 2);
        // An IPv4-mapped IPv6 peer is the same source as its IPv4.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let _mapped = r.admit(mapped).expect("room");
        assert!(!lone.kill.is_cancelled());
        assert_eq!(hog.iter().filter(|c| c.kill.is_cancelled()).count(), 3);
    }

    #[test]
    fn a_newcomer_counts_for_its_source_and_a_source_that_cannot_give_way_is_skipped() {
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let r = Registry::new(4, Duration::from_secs(10), Duration::from_secs(60));
        let a_old = r.admit(a).expect("room");
        std::thread::sleep(Duration::from_millis(5));
        let b1 = r.admit(b).expect("room");
        let _a2 = r.admit(a).expect("room");
        let b2 = r.admit(b).expect("room");
        // Two each: a third from b makes b the largest, so b's oldest goes
        // though a's is older.
        let b3 = r.admit(b).expect("b's own place");
        assert!(b1.kill.is_cancelled() && !a_old.kill.is_cancelled());
        // b holds the most but every one of its connections is handling a
        // request past its body: a's oldest gives way instead.
        let (_h2, _h3) = (b2.handling(), b3.handling());
        let _c = r.admit(b).expect("a's place");
        assert!(a_old.kill.is_cancelled() && !b2.kill.is_cancelled());
    }

    #[test]
    fn slow_headers_and_long_idleness_are_reaped_busy_ones_are_not() {
        let r = Registry::new(10, Duration::from_millis(20), Duration::from_millis(60));
        let idle = r.admit(HOST).expect("room");
        let slow = r.admit(HOST).expect("room");
        slow.request_started
            .store(mono_ms(r.start), Ordering::Relaxed);
        let busy = r.admit(HOST).expect("room");
        let _h = busy.handling();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(r.reap(), 1);
        assert!(slow.kill.is_cancelled() && !idle.kill.is_cancelled());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(r.reap(), 1);
        assert!(idle.kill.is_cancelled() && !busy.kill.is_cancelled());
    }
}
