//! The hostile scenarios of docs/RELIABILITY.md: what a bad day or a bad
//! client does to the daemon, measured.
//!
//! - `outage`: a tenth of the services' alarms go ERROR together while
//!   websocket clients that never read are attached; every change must
//!   reach the webhook receiver.
//! - `big-alarm`: one alarm over a tenth of the services, whose members
//!   fail one after another with one websocket client reading and four
//!   stalled: the daemon's peak memory and CPU, and the bytes the reader
//!   is sent, must stay bounded (SPEC §8: one `UPDATE_ALARM` per tick).
//! - `idle-conns`: thousands of idle and half-open HTTP connections while
//!   beats, saves and the API must keep working.
//! - `flapping`: one service toggled a thousand times.
//! - `max-services`: ten times `max_services` new names; the daemon must
//!   stop at its cap, count the rest, and keep serving.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::blast::{blast, Kind};
use crate::run::{num, opts, Daemon, Row, Scale};
use crate::sys;

/// What the webhook receiver has seen.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) posts: u64,
    /// POSTs by alarm name and the state it changed to (`soak`).
    pub(crate) changes: std::collections::HashMap<(String, String), u64>,
    names: HashSet<String>,
    flapping_started: u64,
    flapping_stopped: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A webhook receiver: HTTP/1.1 with keep-alive, a thread per connection,
/// answering 200 to every POST and recording its body.
pub(crate) struct Receiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub(crate) fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = shared.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        Ok(Receiver { port, seen })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(crate) fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Seen>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            s.posts += 1;
            s.first.get_or_insert(now);
            s.last = Some(now);
            if let Some(n) = v["name"].as_str() {
                s.names.insert(n.to_string());
                let to = v["to_state"].as_str().unwrap_or_default().to_string();
                *s.changes.entry((n.to_string(), to)).or_insert(0) += 1;
            }
            match v["flapping"].as_bool() {
                Some(true) => s.flapping_started += 1,
                Some(false) => s.flapping_stopped += 1,
                None => {}
            }
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// Sends `text` over one statsd TCP connection.
fn tcp_send(d: &Daemon, text: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(d.statsd)?;
    s.write_all(text.as_bytes())?;
    Ok(())
}

/// A websocket client that upgrades and then never reads.
fn stalled_websocket(port: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    Ok(s)
}

/// Time of one GET, or None if it failed.
fn timed_get(port: u16, path: &str) -> Option<Duration> {
    let t = Instant::now();
    match sys::http_get(port, path) {
        Ok((200, _)) => Some(t.elapsed()),
        _ => None,
    }
}

/// Raises this process's descriptor limit (the idle connections need it).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a struct that lives across the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs the hostile scenarios `want` asks for.
pub(crate) fn run(
    bin: &Path,
    scale: Scale,
    want: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    if want("outage") {
        rows.push(outage(bin, scale.services / 10)?);
    }
    if want("big-alarm") {
        rows.push(big_alarm(bin, scale.services / 10)?);
    }
    if want("idle-conns") {
        rows.extend(idle_conns(bin, scale.hostile_conns)?);
    }
    if want("flapping") {
        rows.push(flapping(bin)?);
    }
    if want("max-services") {
        rows.extend(max_services(bin, scale.services)?);
    }
    Ok(rows)
}

fn outage(bin: &Path, alarms: usize) -> anyhow::Result<Row> {
    const VIEWS: usize = 8;
    let rx = Receiver::start()?;
    let (d, _) = Daemon::start_with(
        bin,
        3600,
        None,
        &format!(
            "[[alarms]]\nname = \"a-$n\"\npattern = \"o.$n\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n",
            rx.url()
        ),
    )?;
    let _views: Vec<TcpStream> = (0..VIEWS)
        .map(|_| stalled_websocket(d.http))
        .collect::<anyhow::Result<_>>()?;
    let reader = ReadingWebsocket::start(d.http)?;
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = sys::rss(d.pid());
    sys::reset_peak(d.pid());
    let mut lines = String::with_capacity(alarms * 24);
    for i in 0..alarms {
        lines.push_str(&format!("o.s{i}.timeout:2|g\n"));
    }
    tcp_send(&d, &lines)?;
    let created = Instant::now();
    let deadline = created + Duration::from_secs(2);
    let limit = created + Duration::from_secs(600);
    while rx.seen(|s| s.names.len()) < alarms && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (names, posts, last) = rx.seen(|s| (s.names.len(), s.posts, s.last));
    let took = last.map_or(f64::NAN, |l| {
        l.saturating_duration_since(deadline).as_secs_f64()
    });
    std::thread::sleep(Duration::from_millis(500));
    let sent = d.metric("lovebeat_alerts_sent_total");
    let dropped =
        d.metric("lovebeat_alerts_dropped_total") + d.metric("lovebeat_alerts_failed_total");
    let peak = sys::status_bytes(d.pid(), "VmHWM:");
    eprintln!("  outage: {names} alarms announced in {posts} POSTs, last {took:.2} s after the deadline; /metrics sent {sent}, failed+dropped {dropped}; RSS {} MB before, peak {} MB; the reading websocket client was sent {} MB",
        rss0 / 1_000_000, peak / 1_000_000, reader.bytes() / 1_000_000);
    Ok(Row {
        scenario: "outage",
        figure: format!(
            "{} alarms ERROR at once, {VIEWS} stalled and 1 reading websocket clients: every change delivered, last POST after the deadline (sent {}, lost {}; peak RSS {} MB from {} MB, {} MB sent to the reader)",
            num(alarms as f64),
            num(sent),
            alarms.saturating_sub(names),
            peak / 1_000_000,
            rss0 / 1_000_000,
            reader.bytes() / 1_000_000
        ),
        value: format!("{took:.1} s"),
        sink: format!("{} POSTs/s", num(posts as f64 / took.max(1e-3))),
        ratio: "-".into(),
        goal: "all delivered",
        met: Some(names == alarms && posts as usize == alarms && sent as usize == alarms && dropped == 0.0),
    })
}

/// A websocket client that reads every frame the daemon sends (server
/// frames are unmasked), counting bytes and keeping the last
/// `UPDATE_ALARM`'s text, and answers pings (the daemon drops a client
/// that answers nothing for long: the soak's stays for hours).
pub(crate) struct ReadingWebsocket {
    bytes: Arc<std::sync::atomic::AtomicU64>,
    last_alarm: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ReadingWebsocket {
    pub(crate) fn start(port: u16) -> anyhow::Result<ReadingWebsocket> {
        let s = stalled_websocket(port)?;
        let mut pong_to = s.try_clone()?;
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let last_alarm = Arc::new(Mutex::new(None));
        let (b, l) = (bytes.clone(), last_alarm.clone());
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, s);
            // The 101 answer's head.
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            loop {
                let mut head = [0u8; 2];
                if r.read_exact(&mut head).is_err() {
                    return;
                }
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut x = [0u8; 2];
                        if r.read_exact(&mut x).is_err() {
                            return;
                        }
                        u16::from_be_bytes(x) as usize
                    }
                    127 => {
                        let mut x = [0u8; 8];
                        if r.read_exact(&mut x).is_err() {
                            return;
                        }
                        u64::from_be_bytes(x) as usize
                    }
                    n => n as usize,
                };
                let mut payload = vec![0u8; len];
                if r.read_exact(&mut payload).is_err() {
                    return;
                }
                b.fetch_add(2 + len as u64, std::sync::atomic::Ordering::Relaxed);
                if head[0] & 0x0f == 0x9 && len <= 125 {
                    // A pong, masked (a client's frames must be) with a
                    // zero key: the payload goes as it is.
                    let mut pong = vec![0x8a, 0x80 | len as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    if pong_to.write_all(&pong).is_err() {
                        return;
                    }
                }
                if payload.starts_with(br#"{"type":"UPDATE_ALARM""#) {
                    *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
                }
            }
        });
        Ok(ReadingWebsocket { bytes, last_alarm })
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Failed services in the last `UPDATE_ALARM` read.
    fn last_failed(&self) -> usize {
        let last = self.last_alarm.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v["alarm"]["failed_services"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

fn big_alarm(bin: &Path, members: usize) -> anyhow::Result<Row> {
    const STALLED: usize = 4;
    let (d, _) = Daemon::start_with(
        bin,
        3600,
        None,
        "[[alarms]]\nname = \"everything\"\npattern = \"m.*\"\n",
    )?;
    let mut lines = String::with_capacity(members * 24);
    for i in 0..members {
        lines.push_str(&format!("m.s{i}.timeout:3600|g\n"));
    }
    tcp_send(&d, &lines)?;
    d.settle(|d| d.services());
    let reader = ReadingWebsocket::start(d.http)?;
    let _stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| stalled_websocket(d.http))
        .collect::<anyhow::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = sys::rss(d.pid());
    sys::reset_peak(d.pid());
    let cpu0 = sys::cpu_secs(d.pid());
    // The members fail one after another over about ten seconds: a
    // hundred steps of a hundredth each.
    let started = Instant::now();
    let step = members.div_ceil(100);
    for chunk in 0..100 {
        let mut text = String::with_capacity(step * 24);
        for i in chunk * step..((chunk + 1) * step).min(members) {
            text.push_str(&format!("m.s{i}.timeout:0|g\n"));
        }
        tcp_send(&d, &text)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let limit = Instant::now() + Duration::from_secs(120);
    while reader.last_failed() < members && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = sys::cpu_secs(d.pid()) - cpu0;
    let peak = sys::status_bytes(d.pid(), "VmHWM:");
    let sent = reader.bytes();
    let failed = reader.last_failed();
    eprintln!(
        "  big-alarm: {members} members failed over {took:.1} s; reader sent {} MB, last update {failed} failed; RSS {} MB before, peak {} MB; CPU {cpu:.1} s",
        sent / 1_000_000,
        rss0 / 1_000_000,
        peak / 1_000_000
    );
    Ok(Row {
        scenario: "big-alarm",
        figure: format!(
            "one alarm of {} members failing one by one over 10 s, 1 reading and {STALLED} stalled websocket clients: peak RSS (from {} MB), bytes sent to the reader, daemon CPU",
            num(members as f64),
            rss0 / 1_000_000
        ),
        value: format!("{} MB peak", peak / 1_000_000),
        sink: format!("{} MB sent, {cpu:.1} s CPU", sent / 1_000_000),
        ratio: "-".into(),
        goal: "bounded; last update whole",
        met: Some(failed == members && peak < rss0 + (256 << 20)),
    })
}

fn idle_conns(bin: &Path, conns: usize) -> anyhow::Result<Vec<Row>> {
    raise_nofile(conns as u64 * 2 + 256);
    let (d, _) = Daemon::start_with(bin, 1, None, "")?;
    let services = conns * 33;
    d.populate("ic", services)?;
    // Half of them send half a request, half nothing at all.
    let mut held = Vec::with_capacity(conns);
    for i in 0..conns {
        let mut s = TcpStream::connect(("127.0.0.1", d.http))?;
        if i % 2 == 0 {
            s.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0")?;
        }
        held.push(s);
    }
    // While they are held: the API, beats and saves.
    let saves0 = d.metric("lovebeat_db_saves_total");
    let mut worst = Duration::ZERO;
    let mut failed = 0;
    for _ in 0..20 {
        match timed_get(d.http, "/api/status") {
            Some(t) => worst = worst.max(t),
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A steady load, not flat out: the saves (which yield the CPU to
    // ingestion) must find room, as they do in production.
    let rate = if conns >= 1000 { 200_000 } else { 20_000 };
    let before = d.accepted();
    let mut o = opts(d.statsd, "ic", services, 20, rate, Kind::Beat, false);
    o.count = rate * 3;
    let sent = blast(&o)?;
    let applied = d.settle(Daemon::accepted) - before;
    let rate = applied / sent.elapsed.as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let saves = d.metric("lovebeat_db_saves_total") - saves0;
    let open = d.metric("lovebeat_http_connections");
    drop(held);
    eprintln!("  idle-conns: {conns} held, API worst {worst:?} ({failed} failed), {rate:.0} lines/s, {saves} saves, {open} connections open");
    Ok(vec![
        Row {
            scenario: "idle-conns",
            figure: format!(
                "GET /api/status, slowest of 20, with {} idle and half-open HTTP connections ({} failed, {open} kept open)",
                num(conns as f64),
                failed
            ),
            value: format!("{} ms", worst.as_millis()),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "answers, ≤ 100 ms",
            met: Some(failed == 0 && worst <= Duration::from_millis(100)),
        },
        Row {
            scenario: "idle-conns",
            figure: format!(
                "udp beats/s applied, paced at {}/s, and saves done meanwhile ({saves} saves in {:.1} s, loss {:.3} %)",
                num(rate as f64),
                sent.elapsed.as_secs_f64() + 2.0,
                (1.0 - applied / sent.lines as f64) * 100.0
            ),
            value: num(rate),
            sink: "-".into(),
            ratio: "-".into(),
            goal: "beats and saves go on",
            met: Some(saves >= 1.0 && applied >= 0.99 * sent.lines as f64),
        },
    ])
}

fn flapping(bin: &Path) -> anyhow::Result<Row> {
    const TOGGLES: usize = 1000;
    let rx = Receiver::start()?;
    let (d, _) = Daemon::start_with(
        bin,
        3600,
        None,
        &format!(
            "[[alarms]]\nname = \"flap\"\npattern = \"flap.*\"\nalerts = [\"hook\"]\n[alerts.hook]\nwebhook = \"{}\"\n[flapping]\nwindow = \"5s\"\n",
            rx.url()
        ),
    )?;
    let mut lines = String::new();
    for _ in 0..TOGGLES {
        lines.push_str("flap.x.fail:1|c\nflap.x.beat:1|c\n");
    }
    tcp_send(&d, &lines)?;
    let limit = Instant::now() + Duration::from_secs(30);
    while rx.seen(|s| s.flapping_stopped) == 0 && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (posts, started, stopped) = rx.seen(|s| (s.posts, s.flapping_started, s.flapping_stopped));
    Ok(Row {
        scenario: "flapping",
        figure: format!(
            "webhook POSTs for one service toggled {} times (flapping notices: {started} started, {stopped} settled)",
            num(TOGGLES as f64)
        ),
        value: num(posts as f64),
        sink: format!("{} changes", num(2.0 * TOGGLES as f64)),
        ratio: "-".into(),
        goal: "≤ 7",
        met: Some(posts <= 7 && started == 1 && stopped == 1),
    })
}

fn max_services(bin: &Path, names: usize) -> anyhow::Result<Vec<Row>> {
    let cap = names / 10;
    let (d, _) = Daemon::start_with(
        bin,
        3600,
        None,
        &format!("[limits]\nmax_services = {cap}\n"),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = sys::rss(d.pid());
    d.populate("cap", cap)?;
    let rss_cap = sys::rss(d.pid());
    let o = opts(d.statsd, "new", names, 20, 300_000, Kind::Beat, true);
    blast(&o)?;
    let refused = {
        let mut last = -1.0;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let r = d.metric("lovebeat_services_refused_total");
            if r == last {
                break r;
            }
            last = r;
        }
    };
    let rss_after = sys::rss(d.pid());
    let services = d.services();
    let api = timed_get(d.http, "/api/status");
    // An existing service still takes beats and changes.
    let before = d.accepted();
    let mut o = opts(d.statsd, "cap", cap, 20, 300_000, Kind::Beat, true);
    o.prefix = "cap".into();
    blast(&o)?;
    let applied = d.settle(Daemon::accepted) - before;
    let per_created = (rss_cap as f64 - rss0 as f64) / cap as f64;
    let growth = (rss_after as f64 - rss_cap as f64) / 1e6;
    eprintln!("  max-services: {services} services, {refused} refused, RSS +{growth:.1} MB after the refusals, existing beats applied {applied}");
    Ok(vec![Row {
        scenario: "max-services",
        figure: format!(
            "{} new names against max_services = {}: services held, refused and counted {}, RSS growth after the cap (created ones: {per_created:.0} B each), API {}",
            num(names as f64),
            num(cap as f64),
            num(refused),
            api.map_or("failed".into(), |t| format!("{} ms", t.as_millis()))
        ),
        value: format!("{} services, +{growth:.1} MB", num(services)),
        sink: "-".into(),
        ratio: "-".into(),
        goal: "stops at the cap, the rest counted, serving",
        met: Some(
            services as usize == cap
                && refused >= names as f64 * 0.99
                && api.is_some()
                && applied >= cap as f64 * 0.99,
        ),
    }])
}
