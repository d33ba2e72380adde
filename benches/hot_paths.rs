//! Criterion benches of the hot paths (figures in BENCHMARKS.md):
//! statsd parsing, the beat path, the pattern trie against the regex
//! translation, the timer wheel, the auto algorithm, database encode/decode,
//! cron schedules, and whole datagrams applied to a million services.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lovebeat::engine::auto::{lovebeat1, robust};
use lovebeat::engine::membership::{AlarmDef, AlarmMatcher};
use lovebeat::engine::wheel::Wheel;
use lovebeat::engine::{Change, Engine, EngineConfig, Timeout};
use lovebeat::ingest::statsd::parse_line;
use lovebeat::ingest::{apply_packets, IngestStats};

const T0: i64 = 1_700_000_000_000;

fn statsd(c: &mut Criterion) {
    let mut g = c.benchmark_group("statsd");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_beat_line", |b| {
        b.iter(|| parse_line(black_box(b"myapp.mailers.invoice.beat:1|c")))
    });
    g.bench_function("parse_timeout_line_with_rate_and_tags", |b| {
        b.iter(|| {
            parse_line(black_box(
                b"myapp.mailers.invoice.timeout:3600|g|@0.5|#env:prod",
            ))
        })
    });
    g.finish();
}

fn beat(c: &mut Criterion) {
    let mut g = c.benchmark_group("beat");
    g.throughput(Throughput::Elements(1));
    let engine = Engine::new(EngineConfig::default(), T0);
    for i in 0..100_000 {
        engine
            .change(
                &format!("svc.{i:06}"),
                Change {
                    beat: true,
                    ..Change::timeout(Timeout::After(3_600_000))
                },
                T0,
            )
            .expect("valid");
    }
    g.bench_function("existing_rate_limited", |b| {
        b.iter(|| engine.beat(black_box("svc.042424"), T0 + 10))
    });
    let mut now = T0;
    g.bench_function("existing_accepted", |b| {
        b.iter(|| {
            now += 1000;
            engine.beat(black_box("svc.042424"), now)
        })
    });
    g.bench_function("new_service", |b| {
        b.iter_custom(|iters| {
            let engine = Engine::new(EngineConfig::default(), T0);
            let names: Vec<String> = (0..iters).map(|i| format!("new.service.{i:09}")).collect();
            let start = Instant::now();
            for n in &names {
                let _ = engine.beat(n, T0);
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn alarm_defs(n: usize) -> Vec<AlarmDef> {
    (0..n)
        .map(|i| AlarmDef {
            name: format!("team{i}-$host"),
            includes: vec![format!("team{i}.$host.*"), format!("legacy.team{i}.*")],
            excludes: vec![format!("team{i}.*.test")],
            alerts: vec![],
            depends_on: vec![],
        })
        .collect()
}

/// The plain translation of a pattern to a regex, as 1.x did it.
fn to_regex(p: &str) -> regex::Regex {
    let mut re = String::from("^");
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '$' if chars.peek().is_some_and(|c| c.is_ascii_lowercase()) => {
                while chars.peek().is_some_and(|c| c.is_ascii_lowercase()) {
                    chars.next();
                }
                re.push_str("([^.]+)");
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).expect("valid")
}

fn patterns(c: &mut Criterion) {
    let mut g = c.benchmark_group("alarm_membership");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 10_000] {
        let defs = alarm_defs(n);
        let regexes: Vec<(regex::Regex, Vec<regex::Regex>)> = defs
            .iter()
            .map(|d| {
                (
                    to_regex(&d.includes[0]),
                    d.excludes.iter().map(|e| to_regex(e)).collect(),
                )
            })
            .collect();
        let matcher = AlarmMatcher::new(defs);
        let name = format!("team{}.web01.cpu", n / 2);
        g.bench_function(format!("trie_{n}_alarms"), |b| {
            b.iter(|| matcher.alarms_for(black_box(&name)))
        });
        g.bench_function(format!("regex_{n}_alarms"), |b| {
            b.iter(|| {
                regexes
                    .iter()
                    .filter(|(inc, exc)| {
                        inc.is_match(&name) && !exc.iter().any(|e| e.is_match(&name))
                    })
                    .count()
            })
        });
    }
    g.finish();
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    let key = lovebeat::engine::Name::from("svc");
    g.throughput(Throughput::Elements(1));
    g.bench_function("insert", |b| {
        let mut w = Wheel::new(0);
        let mut t = 0u64;
        b.iter(|| {
            t += 7919;
            w.insert(t % 100_000_000 + 1, key.clone());
        })
    });
    g.bench_function("rearm_later_deadline_via_engine_beat", |b| {
        let engine = Engine::new(EngineConfig::default(), T0);
        engine
            .change(
                "s",
                Change {
                    beat: true,
                    ..Change::timeout(Timeout::After(60_000))
                },
                T0,
            )
            .expect("valid");
        let mut now = T0;
        b.iter(|| {
            now += 1000;
            engine.beat("s", now)
        })
    });
    let mut full = Wheel::new(0);
    for i in 0..100_000u64 {
        full.insert(3_600_000 + i * 10, key.clone());
    }
    g.bench_function("advance_nothing_due_100k_held", |b| {
        let mut now = 0u64;
        let mut out = Vec::new();
        b.iter(|| {
            now += 1;
            full.advance(now % 3_000_000, &mut out);
        })
    });
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("advance_100k_due", |b| {
        b.iter_batched(
            || {
                let mut w = Wheel::new(0);
                for i in 0..100_000u64 {
                    w.insert(2000 + (i % 7), key.clone());
                }
                (w, Vec::with_capacity(100_000))
            },
            |(mut w, mut out)| {
                w.advance(5000, &mut out);
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn auto(c: &mut Criterion) {
    let history: Vec<u32> = (0..100).map(|i| 60_000 + (i * 37) % 2000).collect();
    c.bench_function("auto/lovebeat1_100_intervals", |b| {
        b.iter(|| lovebeat1(black_box(&history).iter().copied()))
    });
    c.bench_function("auto/robust_100_intervals", |b| {
        b.iter(|| robust(black_box(&history).iter().copied()))
    });
}

fn database(c: &mut Criterion) {
    let mut g = c.benchmark_group("database_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let engine = Engine::new(EngineConfig::default(), T0);
    for i in 0..100_000 {
        let name = format!("db.service.{i:06}");
        for k in 0..10 {
            let _ = engine.change(
                &name,
                Change {
                    beat: true,
                    ..Change::timeout(Timeout::After(60_000))
                },
                T0 + k * 60_000,
            );
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    g.bench_function("encode_and_save", |b| {
        b.iter(|| lovebeat::db::save(&engine, &path).expect("saved"))
    });
    lovebeat::db::save(&engine, &path).expect("saved");
    g.bench_function("load_and_decode", |b| {
        b.iter(|| lovebeat::db::load(&path).expect("ok").expect("exists"))
    });
    g.finish();
}

/// Job monitoring (README, "Cron jobs and scripts"): the next fire time is computed once per beat
/// of a scheduled service, so its cost is what a scheduled beat adds.
fn job(c: &mut Criterion) {
    use lovebeat::engine::Schedule;
    use std::sync::Arc;
    let mut g = c.benchmark_group("job");
    g.throughput(Throughput::Elements(1));
    let daily = Schedule::parse("0 3 * * *", "Europe/Stockholm", 300_000).expect("valid");
    let mut t = T0;
    g.bench_function("next_fire_daily_stockholm", |b| {
        b.iter(|| {
            t += 61_000;
            daily.next_fire(black_box(t))
        })
    });
    let weekdays = Schedule::parse("*/5 9-17 * * mon-fri", "America/New_York", 0).expect("valid");
    g.bench_function("next_fire_every_5_min_weekdays_new_york", |b| {
        b.iter(|| {
            t += 61_000;
            weekdays.next_fire(black_box(t))
        })
    });
    let engine = Engine::new(EngineConfig::default(), T0);
    let schedule = Arc::new(daily);
    engine
        .change(
            "cron.job",
            Change {
                beat: true,
                ..Change::timeout(Timeout::Schedule(schedule))
            },
            T0,
        )
        .expect("valid");
    let mut now = T0;
    g.bench_function("scheduled_beat_accepted", |b| {
        b.iter(|| {
            now += 1000;
            engine.beat(black_box("cron.job"), now)
        })
    });
    g.finish();
}

/// Whole datagrams of 20 beat lines, names drawn at random from a million
/// services, applied as the UDP reader applies a `recvmmsg` batch: the
/// figure the udp-beat load test is bound by, without the sockets. With
/// the table far larger than the caches this measures memory latency and
/// how well the ingestion pipeline's prefetching overlaps it.
fn ingest(c: &mut Criterion) {
    const SERVICES: usize = 1_000_000;
    const LINES: usize = 20;
    const PACKETS: usize = 65_536;
    let mut g = c.benchmark_group("ingest_1m_services");
    g.throughput(Throughput::Elements((LINES * 32) as u64));
    g.sample_size(20);
    let engine = Engine::new(EngineConfig::default(), T0);
    let mut packet = String::new();
    for i in 0..SERVICES {
        packet.push_str(&format!("lt.{i}.timeout:3600|g\n"));
        if packet.len() > 60_000 {
            apply_packets(&engine, &IngestStats::default(), [packet.as_bytes()], T0);
            packet.clear();
        }
    }
    apply_packets(&engine, &IngestStats::default(), [packet.as_bytes()], T0);
    // A fixed pseudo-random sequence (xorshift), the same every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let packets: Vec<String> = (0..PACKETS)
        .map(|_| {
            (0..LINES)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("lt.{}.beat:1|c\n", x % SERVICES as u64)
                })
                .collect()
        })
        .collect();
    let stats = IngestStats::default();
    let mut next = 0;
    let mut batch = |now: i64| {
        let first = next;
        next = (next + 32) % PACKETS;
        let packets = (0..32).map(|i| packets[(first + i) % PACKETS].as_bytes());
        apply_packets(&engine, &stats, packets, now)
    };
    // Every beat within a second of the previous one: only the check.
    g.bench_function("32_datagrams_of_20_beats_rate_limited", |b| {
        b.iter(|| batch(T0 + 10))
    });
    // A second later each time: every beat is applied and its interval
    // kept (the history is allocated on the second accepted beat).
    let mut now = T0 + 10;
    g.bench_function("32_datagrams_of_20_beats_accepted", |b| {
        b.iter(|| {
            now += 1000;
            batch(now)
        })
    });
    // First beats of names never seen, into the same million: what
    // udp-create is bound by, table growth included as it comes.
    let mut created = 0u64;
    g.bench_function("32_datagrams_of_20_new_services", |b| {
        b.iter_batched(
            || {
                (0..32)
                    .map(|_| {
                        (0..LINES)
                            .map(|_| {
                                created += 1;
                                format!("new.{created}.beat:1|c\n")
                            })
                            .collect::<String>()
                    })
                    .collect::<Vec<String>>()
            },
            |packets| apply_packets(&engine, &stats, packets.iter().map(|p| p.as_bytes()), now),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Accepted beats from two threads at once (two UDP readers) into
/// services of their own, while a live view watches beats (the UI open):
/// what a lock shared by every reader would cost shows here as two
/// threads not taking less time per beat than one.
fn beat_watched(c: &mut Criterion) {
    const PER_THREAD: usize = 50_000;
    let mut g = c.benchmark_group("beat_watched");
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2] {
        let engine = Engine::new(EngineConfig::default(), T0);
        let names: Vec<Vec<String>> = (0..threads)
            .map(|t| {
                (0..PER_THREAD)
                    .map(|i| format!("t{t}.svc.{i:06}"))
                    .collect()
            })
            .collect();
        for n in names.iter().flatten() {
            engine
                .change(
                    n,
                    Change {
                        beat: true,
                        ..Change::timeout(Timeout::After(3_600_000_000))
                    },
                    T0,
                )
                .expect("valid");
        }
        let _watch = engine.watch_beats();
        let mut now = T0;
        g.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                // Each thread beats its services in turn, a second apart
                // per pass so that every beat is accepted.
                let per = (iters as usize).div_ceil(threads);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for mine in &names {
                        let engine = &engine;
                        s.spawn(move || {
                            for i in 0..per {
                                let pass = (i / PER_THREAD) as i64;
                                let _ = engine.beat(&mine[i % PER_THREAD], now + 1000 * (pass + 1));
                            }
                        });
                    }
                });
                let took = start.elapsed();
                now += 1000 * (per / PER_THREAD + 1) as i64;
                drop(engine.take_beaten());
                // Wall time for all `iters` beats: with no shared lock,
                // two threads on two cores halve the time per beat.
                took
            })
        });
    }
    g.finish();
}

/// A mass expiry as the daemon meets it (issue 32): `due` of `table`
/// services share one deadline and one alarm, the history's feed is on
/// (drained by a thread, as its writer does) and a view watches services.
/// One iteration expires the whole batch; criterion's figure per element
/// is the cost of one expiry.
fn expiry(c: &mut Criterion) {
    let mut g = c.benchmark_group("expiry");
    // Each iteration builds its table first (seconds at a million): ten
    // samples of one iteration each, no long warm-up.
    g.sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    for (due, table) in [(10_000usize, 100_000usize), (100_000, 1_000_000)] {
        g.throughput(Throughput::Elements(due as u64));
        g.bench_function(format!("{due}_at_once_of_{table}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += expire_once(due, table);
                }
                total
            })
        });
    }
    g.finish();
}

/// Builds the table, then times the one tick that expires `due` services.
fn expire_once(due: usize, table: usize) -> Duration {
    let config = EngineConfig {
        alarms: vec![AlarmDef {
            name: "expiring".into(),
            includes: vec!["exp.*".into()],
            excludes: vec![],
            alerts: vec![],
            depends_on: vec![],
        }],
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, T0);
    let journal = engine.journal(lovebeat::engine::journal::Feed::History);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (journal, stop) = (journal.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                black_box(journal.take(Duration::from_millis(10)));
            }
        })
    };
    let _watch = engine.watch_services();
    let _events = engine.subscribe();
    let timeout = |ms| Change {
        beat: true,
        ..Change::timeout(Timeout::After(ms))
    };
    for i in 0..table {
        let (name, t) = if i < due {
            (format!("exp.service.{i:08}"), timeout(10_000))
        } else {
            (format!("other.service.{i:08}"), timeout(3_600_000))
        };
        engine.change(&name, t, T0).expect("valid");
    }
    let start = Instant::now();
    let expired = engine.expire_due(T0 + 10_000);
    let took = start.elapsed();
    assert_eq!(expired, due);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    took
}

criterion_group!(
    benches,
    statsd,
    beat,
    beat_watched,
    patterns,
    wheel,
    auto,
    database,
    job,
    ingest,
    expiry
);
criterion_main!(benches);
