//! Runs the daemon: builds the engine from the configuration, loads the
//! database, starts every listener and sink, and shuts them down in order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::ingest::{tcp, udp::UdpIngest, IngestStats};
use crate::sinks::alerts::AlertStats;
use crate::sinks::s3::RemoteDb;
use crate::sinks::{self, notify, persistence};

/// The glibc tunable that backs malloc's memory with transparent huge
/// pages (`madvise(MADV_HUGEPAGE)` on the heap and large allocations).
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb";

/// Re-executes the daemon once with glibc's malloc asking for transparent
/// huge pages, unless `GLIBC_TUNABLES` already says what to do about them
/// (`glibc.malloc.hugetlb=0` turns them off). A million services spread
/// over hundreds of megabytes make nearly every beat miss the TLB, and
/// page walks bound ingestion: with huge pages udp-beat took 6–14 % and
/// tcp 8–33 % more lines/s in paired runs, and a million services loaded
/// in 1.37 s instead of 1.48 s, for the same memory per service
/// (BENCHMARKS.md). glibc reads its tunables only at exec, hence
/// the re-exec, which keeps the process id (systemd and container
/// runtimes see no change). Returns only if the exec failed, or was not
/// needed; the daemon then runs as it is.
pub fn reexec_with_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains(HUGE_PAGES_TUNABLE) {
            return;
        }
        let tunables = if current.is_empty() {
            format!("{HUGE_PAGES_TUNABLE}=1")
        } else {
            format!("{current}:{HUGE_PAGES_TUNABLE}=1")
        };
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_else(|| "lovebeat".into());
        let err = std::process::Command::new("/proc/self/exe")
            .arg0(argv0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        // Only a failed exec returns (no /proc, say): run without them.
        eprintln!("lovebeat: running without huge pages: cannot re-execute: {err}");
    }
}

/// Gives the engine its maintenance windows: the configuration's, and
/// those made through the API that the history store kept. Without a
/// usable history the configuration's alone (and the API refuses new
/// ones, saying why).
fn load_maintenance(
    config: &Config,
    engine: &Engine,
    history: &crate::history::HistoryState,
    now: i64,
) -> anyhow::Result<()> {
    if let crate::history::HistoryState::On(h) = history {
        let loaded = h.write(|conn| {
            crate::history::maintenance::load(conn, &config.maintenance, now, h.retention_ms())
        });
        match loaded {
            Ok(windows) => {
                if !windows.is_empty() {
                    tracing::info!("{} maintenance windows", windows.len());
                }
                engine.maintenance().set(windows);
                return Ok(());
            }
            Err(e) => tracing::error!(
                "cannot read the maintenance windows of the history file: {e}; only the configuration's are in force"
            ),
        }
    }
    engine
        .maintenance()
        .set(config.maintenance_windows(now).context("[[maintenance]]")?);
    Ok(())
}

/// Runs until SIGTERM or SIGINT, then stops input, saves and returns.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    // Handled from the first moment: a SIGTERM (or a SIGHUP from log
    // rotation) while the database loads, or between "listening" and the
    // end of the start, would otherwise take the default action and end
    // lovebeat at once, without its save.
    let mut signals = Signals::new()?;
    for f in &config.files {
        tracing::info!("configuration read from {}", f.display());
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    config.limits.fit_file_descriptors();
    // A file-size limit (or a full quota) must fail a write with EFBIG,
    // which a save survives and reports, not kill the monitor.
    // SAFETY: setting a signal's disposition to SIG_IGN has no handler to
    // race with.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let config = Arc::new(config);
    let now = now_ms();
    let engine = Engine::new(config.engine_config(), now);
    let db_path = PathBuf::from(&config.database.filename);
    let remote = RemoteDb::from_config(&config.database).await?.map(Arc::new);
    let clustered = config.cluster.is_some();
    // In cluster mode the state lives in JetStream: the engine holds only
    // the partitions this node owns, restored from there, so no database
    // is loaded (stage 1 imports none).
    let start = if clustered {
        persistence::Start {
            loaded: None,
            remote_trouble: None,
        }
    } else {
        persistence::load_at_start(&db_path, remote.as_deref()).await?
    };
    if clustered {
        tracing::info!("cluster mode: the database file is neither loaded nor saved");
    } else if let Some(loaded) = start.loaded {
        let a = loaded.alarms.len();
        let report = engine.load(loaded.services, loaded.alarms, now);
        let (s, a) = (report.services, a - report.duplicate_alarms);
        tracing::info!(
            "loaded {s} services and {a} alarms from {}",
            db_path.display()
        );
    } else {
        tracing::info!("no database at {}: starting empty", db_path.display());
    }

    // Every sink subscribes before any input can produce an event.
    let trouble = crate::trouble::Trouble::new(engine.clone());
    let status_pages = Arc::new(http::status::StatusPages::new(
        &config.status_pages,
        config.public_url(),
    ));
    let configured =
        crate::history::configured_items(config.alarms.iter().chain(&config.views), &config.alerts);
    let pages = crate::status::Pages::new(&config.status_pages);
    let history = crate::history::History::start(
        &config.history,
        &db_path,
        &engine,
        &trouble,
        &configured,
        pages.auto(),
        pages.notifying(),
    );
    load_maintenance(&config, &engine, &history, now)?;
    let log_events = engine.subscribe();
    let eventlog = (!config.eventlog.path.is_empty()).then(|| {
        (
            engine.journal(crate::engine::journal::Feed::EventLog),
            engine.watch_services(),
        )
    });
    let metrics_events = engine.subscribe();
    let ws_events = engine.subscribe();
    let stats = Arc::new(IngestStats::default());

    // One token reaches every task; its children stop the phases of a
    // shutdown one after the other (see `Stopping`).
    let stop = Stopping::new();
    let cluster = match &config.cluster {
        Some(c) => {
            let node = crate::cluster::start(
                c,
                engine.clone(),
                {
                    let config = config.clone();
                    move || config.engine_config()
                },
                stop.input_token.clone(),
                &stop.input_tasks,
            )
            .await
            .context("cannot join the cluster")?;
            let _ = stats.cluster.set(node.publisher.clone());
            Some(node)
        }
        None => None,
    };
    let udp = UdpIngest::start(
        engine.clone(),
        stats.clone(),
        &config.udp,
        stop.input_token.clone(),
    )
    .with_context(|| format!("cannot listen for statsd on UDP {}", config.udp.listen))?;
    let tcp_listener = TcpListener::bind(config.tcp.listen.addr)
        .await
        .with_context(|| format!("cannot listen for statsd on TCP {}", config.tcp.listen))?;
    let http_listener = TcpListener::bind(config.http.listen.addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    tracing::info!(
        "lovebeat {} listening: statsd UDP {}, statsd TCP {}, HTTP {}",
        env!("CARGO_PKG_VERSION"),
        udp.local_addr,
        tcp_listener.local_addr()?,
        http_listener.local_addr()?
    );

    let (reporter, reports) = notify::reporter(&config.notify);
    // Input: what changes the engine, stopped first.
    // On a thread of its own, so no task that holds a runtime worker can
    // hold expiry up (`Engine::spawn_expiry`).
    let expiry = engine
        .clone()
        .spawn_expiry(stop.input_token.clone(), notify::REPORT_EVERY, {
            let reporter = reporter.clone();
            move || reporter.report(notify::Part::Monitor)
        })
        .context("cannot start the expiry thread")?;
    stop.input_tasks.spawn(expiry);
    stop.input_tasks.spawn(tcp::serve(
        tcp_listener,
        engine.clone(),
        stats.clone(),
        config.limits.max_tcp_connections,
        crate::limits::LimitsConfig::duration(config.limits.tcp_idle_timeout),
        stop.input_token.clone(),
        stop.input_tasks.clone(),
    ));
    let saves = Arc::new(persistence::SaveStats::default());
    let ws_hub = Arc::new(http::ws::WsHub::new(config.limits.max_websockets));
    let alert_stats = Arc::new(AlertStats::default());
    let http_conns = Arc::new(http::conns::Registry::new(
        config.limits.max_http_connections,
        crate::limits::LimitsConfig::duration(config.limits.http_header_timeout),
        crate::limits::LimitsConfig::duration(config.limits.http_idle_timeout),
    ));
    let lists = Arc::new(http::lists::Lists::new(&config.limits));
    // Every component that counts, in the order `/metrics` lists them;
    // each says its own metrics (`crate::counters::Counted`).
    let mut counted: Vec<Arc<dyn crate::counters::Counted>> = vec![
        stats.clone(),
        http_conns.clone(),
        lists.clone(),
        ws_hub.clone(),
        Arc::new(engine.clone()),
        alert_stats.clone(),
        saves.clone(),
    ];
    if let crate::history::HistoryState::On(h) = &history {
        counted.push(h.clone());
    }
    if !config.status_pages.is_empty() {
        counted.push(status_pages.clone());
    }
    if let Some(r) = &remote {
        counted.push(r.clone());
    }
    if let Some(c) = &cluster {
        counted.push(c.clone());
    }
    let counters = crate::counters::Counters::new(counted);
    let alerts_config = Arc::new(config.alerts_config());
    let state = Arc::new(AppState {
        engine: engine.clone(),
        counters: counters.clone(),
        ws: ws_hub.clone(),
        limits: config.limits.clone(),
        alerts: alerts_config.clone(),
        alert_tasks: stop.alert_tasks.clone(),
        conns: http_conns,
        lists,
        history: history.clone(),
        configured_alarms: config
            .alarms
            .iter()
            .chain(&config.views)
            .filter(|a| !a.name.contains('$'))
            .map(|a| a.name.clone())
            .collect(),
        status: status_pages,
        cluster: cluster.clone(),
        gate: http::router::Gate {
            keys: config.http.keys(),
            hosts: http::origin::AllowedHosts::new(
                &config.http.allowed_hosts,
                config.public_url().as_deref(),
            ),
        },
    });
    stop.input_tasks.spawn(http::subscribe::run(
        state.clone(),
        stop.input_token.clone(),
    ));
    stop.input_tasks.spawn(http::serve(
        http_listener,
        state,
        stop.input_token.clone(),
        stop.input_tasks.clone(),
    ));
    // Alerts: drained once input has stopped.
    if let Some(why) = &start.remote_trouble {
        trouble.fail(crate::trouble::Part::Upload, why);
    }
    if let Some(c) = &cluster {
        // In cluster mode one elected node alerts, over every partition's
        // alarms (docs/CLUSTER.md, "The alerter"): the pipeline runs there,
        // over the alerter's engine, not over this node's partitions.
        let (cfg, defs, stats, trouble, reporter) = (
            alerts_config.clone(),
            Arc::new(config.alarm_defs()),
            alert_stats.clone(),
            trouble.clone(),
            reporter.clone(),
        );
        c.set_alerts(Box::new(move |engine, drain| {
            let run = sinks::alerts::run(
                cfg.clone(),
                defs.clone(),
                engine,
                stats.clone(),
                trouble.clone(),
                reporter.clone(),
                drain,
            );
            Box::pin(async move {
                if let Err(e) = run.await {
                    tracing::error!("alerts cannot be delivered: {e:#}");
                }
            })
        }));
    }
    {
        // The node's own pipeline: every alarm on one node; in cluster
        // mode only the node's own `lovebeat.self` (its partitions'
        // alarms are the alerter's), so its user alarms have no alerts.
        let mut defs = config.alarm_defs();
        if clustered {
            for d in &mut defs {
                if d.name != crate::engine::SELF_ALARM {
                    d.alerts.clear();
                }
            }
        }
        stop.alert_tasks.spawn({
            let run = sinks::alerts::run(
                alerts_config.clone(),
                Arc::new(defs),
                engine.clone(),
                alert_stats.clone(),
                trouble.clone(),
                reporter.clone(),
                stop.alert_token.clone(),
            );
            async move {
                if let Err(e) = run.await {
                    tracing::error!("alerts cannot be delivered: {e:#}");
                }
            }
        });
    }
    stop.sink_tasks.spawn(crate::trouble::watch_capacity(
        trouble.clone(),
        stop.sink_token.clone(),
    ));
    if let Some(ours) = udp.ours.clone() {
        stop.sink_tasks.spawn(crate::ingest::owners::watch(
            ours,
            stats.clone(),
            trouble.clone(),
            stop.sink_token.clone(),
        ));
    }
    if let Some(c) = &cluster {
        stop.sink_tasks.spawn(crate::cluster::watch(
            c.clone(),
            trouble.clone(),
            stop.sink_token.clone(),
        ));
    }
    stop.sink_tasks.spawn(tcp::watch_evictions(
        trouble.clone(),
        stats.clone(),
        config.limits.max_tcp_connections,
        stop.sink_token.clone(),
    ));
    // Views and sinks: stopped last, before the final save.
    let reopen = Arc::new(Notify::new());
    stop.sink_tasks.spawn(sinks::log::run(
        engine.clone(),
        log_events,
        stop.sink_token.clone(),
    ));
    if let Some((journal, services)) = eventlog {
        stop.sink_tasks.spawn(sinks::eventlog::run(
            services,
            PathBuf::from(&config.eventlog.path),
            config.eventlog_mode(),
            journal,
            reopen.clone(),
            trouble.clone(),
            stop.sink_token.clone(),
        ));
    }
    stop.sink_tasks.spawn(http::ws::run_hub(
        ws_hub,
        engine.clone(),
        ws_events,
        stop.sink_token.clone(),
    ));
    stop.sink_tasks.spawn(sinks::metrics::run(
        config.metrics.clone(),
        engine.clone(),
        metrics_events,
        counters,
        saves.clone(),
        stop.sink_token.clone(),
    ));
    stop.sink_tasks.spawn(notify::run(
        config.notify.clone(),
        reports,
        stop.sink_token.clone(),
    ));
    if !clustered {
        stop.sink_tasks.spawn(persistence::run(
            engine.clone(),
            db_path.clone(),
            Duration::from_secs(config.database.interval),
            saves.clone(),
            remote.clone(),
            reporter,
            trouble.clone(),
            stop.sink_token.clone(),
            stop.sink_tasks.clone(),
        ));
    }

    match &history {
        crate::history::HistoryState::On(h) => {
            for report in &config.reports {
                let scheduled = crate::reports::schedule::Scheduled {
                    report: report.clone(),
                    alarms: config.report_alarms(report),
                };
                stop.sink_tasks.spawn(crate::reports::schedule::run(
                    scheduled,
                    h.clone(),
                    alerts_config.clone(),
                    stop.sink_token.clone(),
                ));
            }
        }
        _ if !config.reports.is_empty() => {
            tracing::error!("reports are not mailed: the history file is unavailable");
        }
        _ => {}
    }

    signals.wait_for_stop(&reopen).await;
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    tracing::info!("shutting down: stopping input, then alerts, then saving");
    stop.input_token.cancel();
    let _ = tokio::task::spawn_blocking(move || udp.join()).await;
    stop.input_tasks.close();
    if tokio::time::timeout_at(deadline, stop.input_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("input did not stop in time; saving anyway");
    }
    stop.alert_token.cancel();
    stop.alert_tasks.close();
    let drain_until = (tokio::time::Instant::now() + DRAIN_ALERTS).min(deadline - SAVE_RESERVE);
    if tokio::time::timeout_at(drain_until, stop.alert_tasks.wait())
        .await
        .is_err()
    {
        let left = alert_stats
            .queued
            .load(std::sync::atomic::Ordering::Relaxed);
        alert_stats
            .dropped
            .fetch_add(left, std::sync::atomic::Ordering::Relaxed);
        if left > 0 {
            tracing::error!(
                "{left} alert messages still undelivered when the shutdown's time for them ran out: \
                 the database records what each alarm's receivers last heard, and the next start announces the rest"
            );
        } else {
            // Only an alert test, or a pager's close of one, was left.
            tracing::warn!(
                "an alert test was still under way when the shutdown's time for alerts ran out"
            );
        }
    }
    stop.sink_token.cancel();
    stop.sink_tasks.close();
    let _ = tokio::time::timeout_at(deadline - SAVE_RESERVE, stop.sink_tasks.wait()).await;
    if let crate::history::HistoryState::On(h) = &history {
        // The inputs have stopped: what is queued is written, and the stop
        // recorded (the time until the next start is lovebeat's downtime).
        let h = h.clone();
        let writing = tokio::task::spawn_blocking(move || h.stop());
        if tokio::time::timeout_at(deadline - SAVE_RESERVE, writing)
            .await
            .is_err()
        {
            tracing::warn!("the history writer did not finish before the deadline");
        }
    }
    if clustered {
        stop.root.cancel();
        return Ok(());
    }
    let saved = persistence::save_now(&engine, &db_path, &saves, persistence::Priority::Normal)
        .await
        .with_context(|| format!("final save to {} failed", db_path.display()))?;
    tracing::info!(
        "saved {} services and {} alarms to {}",
        saved.services,
        saved.alarms,
        db_path.display()
    );
    if let Some(r) = &remote {
        if tokio::time::timeout_at(deadline, r.upload(&db_path, crate::sinks::s3::IfBusy::Wait))
            .await
            .is_err()
        {
            tracing::error!(
                "the final upload to {} did not finish before the deadline",
                r.url()
            );
        }
    }
    stop.root.cancel();
    Ok(())
}

/// The whole shutdown, from the signal to the exit: within Docker's
/// default 10 s between SIGTERM and SIGKILL, with room to spare.
pub const STOP_WITHIN: Duration = Duration::from_secs(9);
/// How long queued alerts are given to reach their receivers.
const DRAIN_ALERTS: Duration = Duration::from_secs(4);
/// Kept for the final save of a million services (0.6 s measured) and its
/// upload.
const SAVE_RESERVE: Duration = Duration::from_secs(3);

/// The tokens and task trackers of a shutdown, in its order: input (UDP,
/// TCP, HTTP and every connection, and the deadline driver, so nothing
/// changes any more), then alerts (drained: what was queued is
/// delivered), then the views and sinks; then the final save and upload.
/// Each phase's token is a child of `root`, which is cancelled last, so
/// whatever is still running then stops too.
struct Stopping {
    root: CancellationToken,
    input_token: CancellationToken,
    input_tasks: TaskTracker,
    alert_token: CancellationToken,
    alert_tasks: TaskTracker,
    sink_token: CancellationToken,
    sink_tasks: TaskTracker,
}

impl Stopping {
    fn new() -> Stopping {
        let root = CancellationToken::new();
        Stopping {
            input_token: root.child_token(),
            alert_token: root.child_token(),
            sink_token: root.child_token(),
            root,
            input_tasks: TaskTracker::new(),
            alert_tasks: TaskTracker::new(),
            sink_tasks: TaskTracker::new(),
        }
    }
}

/// The signals lovebeat acts on, registered at the start of [`run`] so
/// none of them meets the default disposition (which ends the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for SIGTERM or SIGINT, including one that came while lovebeat
    /// was starting. SIGHUP reopens the event log (there is no config
    /// reload; a restart applies a new config).
    async fn wait_for_stop(&mut self, reopen: &Notify) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reopening the event log");
                    reopen.notify_one();
                }
            }
        }
    }
}
