//! What the fuzzers run: one function per input a hostile client or a bad
//! file can reach. `fuzz/` (cargo-fuzz, on the nightly toolchain) calls
//! them with generated inputs; `tests/fuzz_corpora.rs` replays the
//! committed corpora through them on stable, so every input the fuzzers
//! kept (and every crash they found) is checked by `./test`.
//!
//! Each function must not panic on any input, and asserts what must hold
//! whatever the input (a refused path is refused, a key is needed where it
//! is configured, a parsed timeout reads back as itself).

use std::sync::OnceLock;

use crate::engine::{Engine, EngineConfig, Timeout};

/// A statsd line: parsed or refused, never a panic; a parsed name is one
/// the engine accepts.
pub fn statsd_line(data: &[u8]) {
    if let Ok(cmd) = crate::ingest::statsd::parse_line(data) {
        assert!(crate::engine::valid_name(cmd.name.as_bytes()));
    }
}

/// One engine shared by the datagram and database targets: creating 256
/// shards per input would be most of the work.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let alarms = vec![crate::engine::AlarmDef {
            name: "a-$x".into(),
            includes: vec!["*$x.*".into(), "$x".into()],
            excludes: vec!["z*".into()],
            ..Default::default()
        }];
        Engine::new(
            EngineConfig {
                alarms,
                service_defaults: Vec::new(),
                ..Default::default()
            },
            1_700_000_000_000,
        )
    })
}

/// A whole datagram applied to an engine: every line is counted as
/// accepted or dropped.
pub fn datagram(data: &[u8]) {
    let stats = crate::ingest::IngestStats::default();
    let lines = data
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty() && *l != b"\r")
        .count() as u64;
    let (ok, bad) = crate::ingest::apply_packet(engine(), &stats, data, 1_700_000_000_000);
    assert_eq!(ok + bad, lines);
}

/// The decompressed content of a database file: decoded or refused with a
/// line number; what decodes loads into an engine.
pub fn database(data: &[u8]) {
    let mut bytes = data.to_vec();
    if let Ok(loaded) = crate::db::decode(&mut bytes, std::path::Path::new("fuzz.db")) {
        let e = Engine::new(EngineConfig::default(), 1_700_000_000_000);
        e.load(loaded.services, loaded.alarms, 1_700_000_000_000);
        let _ = e.alarms();
    }
}

/// A configuration file: loaded or refused with an error, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text);
    }
}

/// Patterns and names, split at NUL: the first part is patterns (one per
/// line), the rest names. Matching never panics, and a pattern whose
/// captures are found for a name is one the trie says matches it.
pub fn pattern(data: &[u8]) {
    let mut parts = data.split(|c| *c == 0);
    let patterns: Vec<String> = parts
        .next()
        .map(|p| {
            String::from_utf8_lossy(p)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut set = crate::pattern::PatternSet::default();
    for p in patterns.iter().take(16) {
        set.add(p);
    }
    for name in parts.take(16) {
        let mut ids = Vec::new();
        set.matches(name, &mut ids);
        let text = String::from_utf8_lossy(name);
        for id in 0..set.len() as u32 {
            if let Some(caps) = set.pattern(id).captures(&text) {
                if text.as_bytes() == name {
                    assert!(ids.contains(&id), "captured but not matched");
                }
                let _ = crate::pattern::expand_template("x-$a-$b", &caps);
            }
        }
    }
}

/// Timeouts and durations as text: read or refused, and a timeout read
/// is one whose wire number reads back the same.
pub fn duration(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = crate::engine::timeout_text::parse_timeout(&text) {
        assert_eq!(Timeout::from_wire(t.wire()), Some(t));
    }
    let _ = crate::settings::duration::parse_duration_input(&text);
}

/// A cron schedule and zone, split at the first NUL: parsed or refused;
/// a parsed one's next fire time is after the time asked about.
pub fn schedule(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (expr, tz) = text.split_once('\0').unwrap_or((&text, "UTC"));
    if let Ok(s) = crate::engine::Schedule::parse(expr, tz, 0) {
        for from in [0, 1_700_000_000_000, 4_102_444_800_000] {
            if let Some(next) = s.next_fire(from) {
                assert!(next > from);
            }
        }
    }
}

/// An HTTP request's method, target and browser headers, checked as the
/// server does before any handler: a request without the write key never
/// gets through as a change, one without a key never reads what is
/// closed, and a path that another parser would read differently never
/// gets through at all.
pub fn http_request(data: &[u8]) {
    use crate::http::auth::Keys;
    use crate::http::origin::AllowedHosts;
    use crate::http::router::{admit, Gate};
    static GATE: OnceLock<Gate> = OnceLock::new();
    let gate = GATE.get_or_init(|| Gate {
        keys: Keys {
            read: vec!["reader".into()],
            write: vec!["writer".into()],
            ..Keys::default()
        },
        hosts: AllowedHosts::new(&["lovebeat.internal".into()], None),
    });
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let method = match fields.next().unwrap_or("").len() % 5 {
        0 => "GET",
        1 => "POST",
        2 => "DELETE",
        3 => "HEAD",
        _ => "PATCH",
    };
    let target = fields.next().unwrap_or("/");
    let mut builder = hyper::Request::builder().method(method).uri(target);
    for (name, value) in [
        "host",
        "origin",
        "sec-fetch-site",
        "authorization",
        "x-forwarded-host",
        "sec-websocket-protocol",
    ]
    .into_iter()
    .zip(fields)
    {
        if !value.is_empty() {
            builder = builder.header(name, value);
        }
    }
    let Ok(req) = builder.body(()) else {
        return; // not a request hyper would parse
    };
    let path = req.uri().path().to_string();
    let Ok(matched) = admit(&req, &path, gate) else {
        return;
    };
    assert!(crate::http::path::RequestPath::parse(&path).is_ok());
    assert!(!path.contains("//") && !path.contains('%') && !path.contains("/./"));
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let query_key = req.uri().query().unwrap_or("").contains("key=");
    let subprotocol = req.headers().contains_key("sec-websocket-protocol");
    let may_carry_key =
        auth.contains("writer") || auth.contains("reader") || query_key || subprotocol;
    // Subscribing to a status page, confirming and leaving are the only
    // changes open to anyone (README, "Status pages").
    let open_change = matched.as_ref().is_some_and(|m| m.value.is_open_change());
    if !crate::http::auth::is_read_only(req.method()) && !open_change {
        assert!(
            may_carry_key,
            "a change got through without a key: {method} {target}"
        );
    }
    let open = matched.as_ref().is_some_and(|m| m.value.is_open());
    if !open {
        assert!(
            may_carry_key,
            "a closed read got through: {method} {target}"
        );
    }
}
