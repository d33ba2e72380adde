//! `[limits]`: what bounds the resources a client (or a bad day) can make
//! lovebeat hold. Each is enforced by the component it bounds; they are
//! gathered here so an operator finds them in one section.

use std::time::Duration;

use serde::Deserialize;

use crate::settings::duration::DurationSetting;
use crate::settings::ConfigError;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// HTTP connections at once; at the cap a new one replaces the one
    /// that has waited longest without a request being handled, failing
    /// that the one whose handler has waited longest for its body.
    pub max_http_connections: usize,
    /// How long a request's headers may take to arrive.
    pub http_header_timeout: DurationSetting,
    /// How long a keep-alive connection may wait for its next request.
    pub http_idle_timeout: DurationSetting,
    /// How long a request's body may take to arrive.
    pub http_body_timeout: DurationSetting,
    /// Bytes per second a request's body must average once its first
    /// seconds have passed (0: no minimum), or it is a 408: a body sent a
    /// byte a second would otherwise hold its connection for the whole
    /// `http_body_timeout`, and a thousand of them every connection.
    pub http_body_min_rate: u64,
    /// statsd TCP connections at once; at the cap a new one replaces the
    /// one that has gone longest without sending a whole line.
    pub max_tcp_connections: usize,
    /// How long a statsd TCP connection may send nothing before it is
    /// closed.
    pub tcp_idle_timeout: DurationSetting,
    /// Websocket clients at once; more are refused (503).
    pub max_websockets: usize,
    /// Answers that hold a whole table (`GET /api/services`,
    /// `/api/alarms`, `/api/alarms/<name>`) being built or sent at once;
    /// more are refused (503). Each holds a thread of the blocking pool,
    /// which alert delivery needs too (DNS lookups).
    pub max_http_lists: usize,
    /// How many of the `max_http_lists` places one client (peer IP
    /// address) may hold at once; beyond, its next is refused (503): one
    /// client's slow readers cannot take every place.
    pub max_http_lists_per_client: usize,
    /// How long one such answer may take before `http_list_min_rate`
    /// applies (its head start); a client that reads it slower is then
    /// cut off (its response ends unfinished).
    pub http_list_timeout: DurationSetting,
    /// Bytes per second a whole-table answer must be read at on average
    /// once its `http_list_timeout` has passed: each such many bytes sent
    /// buy a second more (0: no minimum, the whole answer must be sent
    /// within `http_list_timeout`). A deadline that grew with the table
    /// let four slow readers hold every place for hours at 10 M services.
    pub http_list_min_rate: u64,
    /// Services; beyond, a new name is refused (503 over HTTP, dropped and
    /// counted over statsd) while existing services keep working.
    pub max_services: usize,
    /// Alarms made from `$word` templates; beyond, a new service joins no
    /// new instance (counted and logged).
    pub max_alarms: usize,
    /// Alert deliveries (HTTP and SMTP) under way at once.
    pub max_alert_deliveries: usize,
    /// Alert scripts running at once.
    pub max_scripts: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_http_connections: 1024,
            http_header_timeout: DurationSetting { ms: 10_000 },
            http_idle_timeout: DurationSetting { ms: 60_000 },
            http_body_timeout: DurationSetting { ms: 30_000 },
            http_body_min_rate: 500,
            max_tcp_connections: 1024,
            tcp_idle_timeout: DurationSetting { ms: 600_000 },
            max_websockets: 256,
            max_http_lists: 4,
            max_http_lists_per_client: 2,
            http_list_timeout: DurationSetting { ms: 300_000 },
            http_list_min_rate: 1_000_000,
            max_services: 20_000_000,
            max_alarms: 1_000_000,
            max_alert_deliveries: 64,
            max_scripts: 8,
        }
    }
}

/// File descriptors kept beside the connections: the database and its
/// temporary file, the event log, sockets to alert receivers, S3.
const RESERVED_FDS: u64 = 256;

impl LimitsConfig {
    /// Every limit must allow something, and a timeout must be one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("max_http_connections", self.max_http_connections),
            ("max_tcp_connections", self.max_tcp_connections),
            ("max_websockets", self.max_websockets),
            ("max_http_lists", self.max_http_lists),
            ("max_http_lists_per_client", self.max_http_lists_per_client),
            ("max_services", self.max_services),
            ("max_alarms", self.max_alarms),
            ("max_alert_deliveries", self.max_alert_deliveries),
            ("max_scripts", self.max_scripts),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "[limits] {key} must be at least 1"
                )));
            }
        }
        for (key, value) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("http_body_timeout", self.http_body_timeout),
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            ("http_list_timeout", self.http_list_timeout),
        ] {
            if value.ms < 100 {
                return Err(ConfigError::Invalid(format!(
                    "[limits] {key} must be at least 100ms"
                )));
            }
        }
        Ok(())
    }

    /// A timeout as a `Duration`.
    pub fn duration(setting: DurationSetting) -> Duration {
        Duration::from_millis(setting.ms)
    }

    /// Raises the soft limit on open files to the hard one, and lowers the
    /// connection caps (with a warning) if even that leaves too few
    /// descriptors for them and the `RESERVED_FDS` the rest needs: at the
    /// caps, lovebeat must still be able to open its database.
    pub fn fit_file_descriptors(&mut self) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to
        // a struct that lives across the calls.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if !ok {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let wanted =
            (self.max_http_connections + self.max_tcp_connections + self.max_websockets) as u64;
        let available = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(3);
        if wanted > available {
            let scale = |n: usize| ((n as u64 * available / wanted) as usize).max(1);
            tracing::warn!(
                "only {} open files are allowed (ulimit -n); connection caps lowered to fit: HTTP {} -> {}, statsd TCP {} -> {}, websockets {} -> {}",
                lim.rlim_cur,
                self.max_http_connections,
                scale(self.max_http_connections),
                self.max_tcp_connections,
                scale(self.max_tcp_connections),
                self.max_websockets,
                scale(self.max_websockets)
            );
            self.max_http_connections = scale(self.max_http_connections);
            self.max_tcp_connections = scale(self.max_tcp_connections);
            self.max_websockets = scale(self.max_websockets);
        }
    }
}
