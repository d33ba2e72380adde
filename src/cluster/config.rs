//! `[cluster]`: the NATS servers a node joins, its name, the partition
//! count and the lease time (README, "Cluster mode (stage 1)";
//! docs/CLUSTER.md). Without the section lovebeat is the single node it
//! always was and needs no NATS.

use serde::Deserialize;

use crate::settings::duration::DurationSetting;
use crate::settings::ConfigError;

/// The default partition count: a few per node of a cluster of up to
/// a dozen nodes, so partitions can be spread evenly, and few enough that
/// each node's lease renewals stay a handful of writes a second.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// The most partitions a cluster may have: each is a lease to renew and a
/// subject to consume, by the one node that owns it.
pub const MAX_PARTITIONS: u32 = 1024;

/// The default lease time: a dead owner's partitions are owned again
/// within about this plus one poll (docs/CLUSTER.md, "Handover bound").
pub const DEFAULT_LEASE_MS: u64 = 10_000;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`); the client fails over between
    /// them.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (letters, digits, `-`,
    /// `_`); the host name by default.
    pub node: String,
    /// Partitions, fixed when the cluster is created; a node configured
    /// with another count refuses to start.
    pub partitions: u32,
    /// The lease time: how long an owner holds a partition without
    /// renewing it. Fixed when the cluster is created, like `partitions`.
    pub lease: DurationSetting,
    /// A CA bundle (PEM) to verify the NATS servers with.
    pub tls_ca: String,
    /// A client certificate (PEM) for NATS servers that ask for one.
    pub tls_cert: String,
    /// The client certificate's key (PEM).
    pub tls_key: String,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    pub credentials: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: Vec::new(),
            node: String::new(),
            partitions: DEFAULT_PARTITIONS,
            lease: DurationSetting {
                ms: DEFAULT_LEASE_MS,
            },
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            credentials: String::new(),
        }
    }
}

/// The shortest lease accepted: renewals go out every quarter of it, and a
/// NATS round trip under load must fit well inside that.
const MIN_LEASE_MS: u64 = 2_000;

impl ClusterConfig {
    /// Checks what the section alone can tell: servers given, a usable
    /// node name, partitions and lease in range, a key with a certificate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("[cluster] {m}")));
        if self.nats.is_empty() {
            return bad(
                "nats: give at least one server, e.g. nats = [\"nats://127.0.0.1:4222\"]".into(),
            );
        }
        for u in &self.nats {
            if url::Url::parse(u).is_err() {
                return bad(format!("nats: '{u}' is not a URL (nats://host:port)"));
            }
        }
        if !self.node.is_empty() && !valid_node_name(&self.node) {
            return bad(format!(
                "node '{}': use 1 to 64 letters, digits, '-' or '_'",
                self.node.escape_debug()
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return bad(format!(
                "partitions {}: use 1 to {MAX_PARTITIONS}",
                self.partitions
            ));
        }
        if self.lease.ms < MIN_LEASE_MS || self.lease.ms > 3_600_000 {
            return bad(format!("lease {} ms: use 2s to 1h", self.lease.ms));
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return bad("tls_cert and tls_key go together".into());
        }
        Ok(())
    }

    /// The node's name: `node`, or the host name made valid (other
    /// characters become `-`).
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = hostname();
        let name: String = host
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if name.is_empty() {
            "lovebeat".into()
        } else {
            name
        }
    }
}

/// A node name is a NATS KV key and a log word: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The host name, from the kernel.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let c: ClusterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// The defaults are the documented ones, and a host name becomes a
    /// valid node name.
    #[test]
    fn defaults_and_host_name() {
        let c = parse("nats = [\"nats://127.0.0.1:4222\"]").expect("valid");
        assert_eq!(c.partitions, 16);
        assert_eq!(c.lease.ms, 10_000);
        assert!(valid_node_name(&c.node_name()), "{}", c.node_name());
    }

    /// Each bad value is refused with a message naming its key.
    #[test]
    fn bad_values_are_refused_by_name() {
        for (text, word) in [
            ("nats = []", "nats"),
            ("nats = [\"not a url\"]", "nats"),
            ("nats = [\"nats://a:1\"]\nnode = \"a.b\"", "node"),
            ("nats = [\"nats://a:1\"]\npartitions = 0", "partitions"),
            ("nats = [\"nats://a:1\"]\npartitions = 5000", "partitions"),
            ("nats = [\"nats://a:1\"]\nlease = \"1s\"", "lease"),
            ("nats = [\"nats://a:1\"]\ntls_cert = \"c.pem\"", "tls_key"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(word), "{text}: {e}");
        }
    }
}
