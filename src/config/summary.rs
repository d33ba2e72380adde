//! What `lovebeat check-config` prints about a configuration, and the
//! settings that work but are likely not what was meant.

use super::Config;

impl Config {
    /// What the configuration sets up, for `lovebeat check-config`: the
    /// files read, listeners, alarms, alerts and sinks. Secrets are left
    /// out (keys are counted, URLs show their host).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let url = crate::redact::url_for_log;
        let mut out = String::new();
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let _ = writeln!(
            out,
            "files: {}",
            if files.is_empty() {
                "none (defaults)".into()
            } else {
                files.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "listening: statsd UDP {} ({}, {} KiB receive buffer each), statsd TCP {}, HTTP {}",
            self.udp.listen,
            match self.udp.sockets {
                0 => "one socket per core".to_string(),
                1 => "one socket".to_string(),
                n => format!("{n} sockets"),
            },
            self.udp.receive_buffer / 1024,
            self.tcp.listen,
            self.http.listen
        );
        let _ = writeln!(
            out,
            "keys: {} write, {} read; allowed hosts: {}",
            self.http.write_keys.len(),
            self.http.read_keys.len(),
            if self.http.allowed_hosts.is_empty() {
                "any".into()
            } else {
                self.http.allowed_hosts.join(", ")
            }
        );
        let db = &self.database;
        let _ = writeln!(
            out,
            "database: {} every {} s{}",
            db.filename,
            db.interval,
            if db.remote_s3_url.is_empty() {
                String::new()
            } else {
                format!(", backed up to {}", db.remote_s3_url)
            }
        );
        if let Some(c) = &self.cluster {
            let servers: Vec<String> = c.nats.iter().map(|u| url(u)).collect();
            let _ = writeln!(
                out,
                "cluster: node {}, {} partitions, lease {} ms, NATS {}{}{}",
                c.node_name(),
                c.partitions,
                c.lease.ms,
                servers.join(", "),
                if c.tls_ca.is_empty() { "" } else { ", TLS" },
                if c.credentials.is_empty() {
                    ""
                } else {
                    ", with credentials"
                }
            );
        }
        let defs = self.alarm_defs();
        let _ = writeln!(out, "alarms: {}", defs.len());
        for d in &defs {
            let mut line = format!("  {}: {}", d.name, d.includes.join(", "));
            if !d.excludes.is_empty() {
                let _ = write!(line, " except {}", d.excludes.join(", "));
            }
            if !d.alerts.is_empty() {
                let _ = write!(line, "; alerts {}", d.alerts.join(", "));
            }
            if !d.depends_on.is_empty() {
                let _ = write!(line, "; held while {} is ERROR", d.depends_on.join(" or "));
            }
            let _ = writeln!(out, "{line}");
        }
        if !self.maintenance.is_empty() {
            let _ = writeln!(out, "maintenance windows: {}", self.maintenance.len());
            for m in &self.maintenance {
                let when = match (&m.start, &m.end, &m.schedule) {
                    (Some(s), Some(e), _) => format!("{s} to {e}"),
                    (_, _, Some(c)) => format!(
                        "'{c}' in {} for {}",
                        m.tz.as_deref().unwrap_or("UTC"),
                        m.duration.as_deref().unwrap_or("?")
                    ),
                    _ => "?".into(),
                };
                let _ = writeln!(
                    out,
                    "  {}: alarms {}; services {}; {when}{}",
                    m.name,
                    if m.alarms.is_empty() {
                        "none".into()
                    } else {
                        m.alarms.join(", ")
                    },
                    if m.services.is_empty() {
                        "none".into()
                    } else {
                        m.services.join(", ")
                    },
                    if m.notify { "; notify" } else { "" }
                );
            }
        }
        let _ = writeln!(out, "alerts: {}", self.alerts.len());
        let alerts_config = self.alerts_config();
        for (name, a) in &self.alerts {
            // Each alerter describes itself, so none is left out.
            let mut channels =
                crate::sinks::alerts::descriptions(&alerts_config, name).unwrap_or_default();
            if let Some(r) = a.repeat {
                channels.push(format!("repeated every {} s", r.ms / 1000));
            }
            let _ = writeln!(
                out,
                "  {name}: {}",
                if channels.is_empty() {
                    "nothing".into()
                } else {
                    channels.join("; ")
                }
            );
        }
        let _ = writeln!(out, "service defaults: {}", self.services.len());
        if !self.eventlog.path.is_empty() {
            let _ = writeln!(
                out,
                "event log: {} (mode {:o})",
                self.eventlog.path, self.eventlog.mode.0
            );
        }
        for m in self.metrics.iter().filter(|m| !m.server.is_empty()) {
            let _ = writeln!(out, "statsd metrics: {} as {}.*", m.server, m.prefix);
        }
        for n in &self.notify {
            let _ = writeln!(out, "notify: {}", url(&n.lovebeat));
        }
        for r in &self.reports {
            let every = r.every.as_str();
            let mut covers = self.report_alarms(r).join(", ");
            if let Some(page) = &r.status_page {
                let _ = write!(
                    covers,
                    "{}status page {page}",
                    if covers.is_empty() { "" } else { ", " }
                );
            }
            let _ = writeln!(
                out,
                "report {}: every {every} ({}), mailed by alert {}: {covers}",
                r.name, r.tz, r.mail
            );
        }
        out
    }

    /// Settings that work but are likely not what was meant: a start logs
    /// them and `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.views.is_empty() {
            w.push("[[views]] is deprecated: it is read as [[alarms]]; rename the sections".into());
        }
        let http = &self.http;
        if http.write_keys.is_empty() && http.allowed_hosts.is_empty() {
            w.push(
                "[http] has neither write_keys nor allowed_hosts: a web page that points its own name at this lovebeat's address (DNS rebinding) could change it through a visitor's browser; set allowed_hosts to the names lovebeat is reached by, or set write_keys".into(),
            );
        }
        if !http.write_keys.is_empty() {
            for (what, listen) in [("udp", &self.udp.listen), ("tcp", &self.tcp.listen)] {
                if !listen.addr.ip().is_loopback() {
                    w.push(format!(
                        "[{what}] listen = \"{listen}\" takes statsd lines from the network, and statsd has no keys: anyone who reaches it can beat, fail or silence services despite write_keys; listen on 127.0.0.1 unless the network is trusted"
                    ));
                }
            }
        }
        if !http.read_keys.is_empty() && http.write_keys.is_empty() {
            w.push(
                "[http] read_keys is set but write_keys is not: reading needs a key, but changes (beats, mutes, deletes) need none; set write_keys to guard them".into(),
            );
        }
        w
    }
}
