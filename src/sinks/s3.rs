//! The database backup in S3 (README, "Configuration"): downloaded at
//! start, uploaded after every save. Works with S3-compatible stores
//! through `remote_s3_endpoint` (path-style addressing). Credentials come
//! from the standard AWS chain.
//!
//! An upload sends an immutable snapshot: a hard link to the file the save
//! just renamed into place, which a later save renames over without
//! touching. Periodic uploads never overlap (one still running makes the
//! next save skip its upload, which is reported as upload trouble); the
//! final upload at shutdown waits for a running one instead of being
//! skipped. A download lands in a temporary file that the caller validates
//! before anything replaces the local database
//! (`persistence::load_at_start`).
//!
//! Every request has a deadline (`[database] remote_s3_timeout`, plus 1 s
//! per MiB it carries), a download's body included: a store that accepts
//! the connection and then says nothing holds neither the start nor the
//! uploads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;

use crate::sinks::persistence::DatabaseConfig;

/// What went wrong with the remote copy.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The store did not answer the download as asked.
    #[error("downloading {url}: {reason}")]
    Download {
        /// `s3://bucket/key`.
        url: String,
        /// The SDK's account of it.
        reason: String,
    },
    /// The store did not take the upload.
    #[error("uploading to {url}: {reason}")]
    Upload {
        /// `s3://bucket/key`.
        url: String,
        /// The SDK's account of it.
        reason: String,
    },
    /// A periodic upload found the one before it still running: skipped,
    /// and the store is that slow.
    #[error("the upload to {url} started before this save's is still running: this save's upload is skipped")]
    StillUploading {
        /// `s3://bucket/key`.
        url: String,
    },
    /// An upload went through, but a later save's was skipped while it
    /// ran: the copy in the store is older than the last save.
    #[error("the upload to {url} went through, but a later save's was skipped meanwhile: the copy there is behind the last save")]
    Behind {
        /// `s3://bucket/key`.
        url: String,
    },
    /// A local file could not be written, linked or read.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// `remote_s3_url` is not an `s3://bucket/key` URL.
    #[error("remote_s3_url '{url}' must look like s3://bucket/key")]
    BadUrl {
        /// The URL as configured.
        url: String,
    },
}

/// A bucket and key, with a client for them.
pub struct RemoteDb {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Held while an upload runs: never two at once.
    uploading: tokio::sync::Mutex<()>,
    /// A save's upload was skipped since the running one started: when
    /// that one ends, the store is still behind.
    skipped: AtomicBool,
    /// `[database] remote_s3_timeout`.
    timeout: Duration,
    /// Uploads that succeeded.
    pub uploads: AtomicU64,
    /// Uploads that failed (retried at the next save).
    pub upload_failures: AtomicU64,
}

/// Whether an upload that finds another running waits for it (the final
/// one) or leaves the upload to the next save (the periodic ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfBusy {
    /// Skip: the next save uploads a newer file anyway.
    Skip,
    /// Wait, then upload: nothing comes after it.
    Wait,
}

/// Splits `s3://bucket/key`.
pub fn parse_url(url: &str) -> Result<(String, String), S3Error> {
    let bad = || S3Error::BadUrl {
        url: url.to_string(),
    };
    let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(bad()),
    }
}

/// The connect timeout the SDK sets by default, kept beside the others.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// How long a request carrying `bytes` may take: `base` plus 1 s per MiB,
/// so a large database on a slow link is not cut off while a store that
/// says nothing is.
pub fn allowance(base: Duration, bytes: u64) -> Duration {
    base + Duration::from_secs(bytes.div_ceil(1 << 20))
}

/// The SDK's timeouts for a request carrying `bytes`: each attempt within
/// its [`allowance`], the whole operation with its retries within twice
/// that. Without them the SDK sets only a connect timeout, and a store
/// that stalls after connecting hangs the request for ever.
pub fn timeouts(base: Duration, bytes: u64) -> aws_sdk_s3::config::timeout::TimeoutConfig {
    let attempt = allowance(base, bytes);
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt * 2)
        .build()
}

impl RemoteDb {
    /// The remote database of `[database]`, or `None` when no URL is set.
    pub async fn from_config(db: &DatabaseConfig) -> Result<Option<RemoteDb>, S3Error> {
        if db.remote_s3_url.is_empty() {
            return Ok(None);
        }
        let (bucket, key) = parse_url(&db.remote_s3_url)?;
        let timeout = crate::limits::LimitsConfig::duration(db.remote_s3_timeout);
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts(timeout, 0));
        if !db.remote_s3_region.is_empty() {
            loader = loader.region(aws_config::Region::new(db.remote_s3_region.clone()));
        }
        if !db.remote_s3_endpoint.is_empty() {
            loader = loader.endpoint_url(&db.remote_s3_endpoint);
        }
        let shared = loader.load().await;
        let mut conf = aws_sdk_s3::config::Builder::from(&shared);
        if !db.remote_s3_endpoint.is_empty() {
            conf = conf.force_path_style(true);
        }
        if shared.region().is_none() {
            conf = conf.region(aws_config::Region::new("us-east-1"));
        }
        Ok(Some(RemoteDb {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket,
            key,
            uploading: tokio::sync::Mutex::new(()),
            skipped: AtomicBool::new(false),
            timeout,
            uploads: AtomicU64::new(0),
            upload_failures: AtomicU64::new(0),
        }))
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Downloads the object to a new file beside `path` (created 0600:
    /// it holds job output) and returns it, or `None` when there is no
    /// such object. The caller validates it before it replaces anything.
    pub async fn download(&self, path: &Path) -> Result<Option<PathBuf>, S3Error> {
        let failed = |reason: String| S3Error::Download {
            url: self.url(),
            reason,
        };
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send();
        // The SDK's own timeouts bound this; the backstop is for whatever
        // they do not cover.
        let within = backstop(timeouts(self.timeout, 0));
        let resp = match tokio::time::timeout(within, get).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(failed(
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                ));
            }
            Err(_) => return Err(failed(no_answer(within))),
        };
        // The body is read after the SDK's operation has ended: it has a
        // deadline of its own, by its announced size.
        let size = resp.content_length().unwrap_or(0).max(0) as u64;
        let within = allowance(self.timeout, size);
        let data = match tokio::time::timeout(within, resp.body.collect()).await {
            Ok(body) => body.map_err(|e| failed(e.to_string()))?.into_bytes(),
            Err(_) => {
                return Err(failed(format!(
                    "the object ({size} bytes) did not arrive within {} s",
                    within.as_secs()
                )))
            }
        };
        let tmp = beside(path, "download");
        let local = |source| S3Error::Local {
            path: tmp.clone(),
            source,
        };
        let written = (|| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(local(e));
        }
        Ok(Some(tmp))
    }

    /// Uploads a snapshot of `path` (see the module's doc); with
    /// [`IfBusy::Skip`], not when another upload is running, which is
    /// logged and returned as [`S3Error::StillUploading`]: uploads slower
    /// than saves are trouble. Failures are logged and counted, and
    /// returned.
    pub async fn upload(&self, path: &Path, if_busy: IfBusy) -> Result<(), S3Error> {
        let _one = match if_busy {
            IfBusy::Wait => self.uploading.lock().await,
            IfBusy::Skip => match self.uploading.try_lock() {
                Ok(g) => g,
                Err(_) => {
                    self.skipped.store(true, Ordering::Relaxed);
                    let e = S3Error::StillUploading { url: self.url() };
                    tracing::warn!("{e}");
                    return Err(e);
                }
            },
        };
        // This upload takes the newest save: nothing is skipped yet.
        self.skipped.store(false, Ordering::Relaxed);
        let snapshot = beside(path, "upload");
        let result = match std::fs::hard_link(path, &snapshot) {
            Err(source) => Err(S3Error::Local {
                path: snapshot.clone(),
                source,
            }),
            Ok(()) => {
                let r = self.put(&snapshot).await;
                let _ = std::fs::remove_file(&snapshot);
                r
            }
        };
        match &result {
            Ok(()) => {
                self.uploads.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("uploaded the database to {}", self.url());
            }
            Err(e) => {
                self.upload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("the upload failed (retried after the next save): {e}");
            }
        }
        // Reported as trouble still: an upload that went through must not
        // clear the skip of a later save (uploads slower than saves would
        // turn the trouble on and off at every save).
        if result.is_ok() && self.skipped.load(Ordering::Relaxed) {
            let e = S3Error::Behind { url: self.url() };
            tracing::warn!("{e}");
            return Err(e);
        }
        result
    }

    async fn put(&self, snapshot: &Path) -> Result<(), S3Error> {
        let local = |source| S3Error::Local {
            path: snapshot.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(snapshot).map_err(local)?.len();
        let body = ByteStream::from_path(snapshot)
            .await
            .map_err(|e| local(std::io::Error::other(e)))?;
        // This request's timeouts, by its size.
        let limits = timeouts(self.timeout, size);
        let within = backstop(limits.clone());
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .body(body)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(limits))
            .send();
        let failed = |reason: String| S3Error::Upload {
            url: self.url(),
            reason,
        };
        match tokio::time::timeout(within, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failed(
                aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            )),
            Err(_) => Err(failed(no_answer(within))),
        }
    }
}

/// The deadline past the SDK's own: its operation timeout and a connect.
fn backstop(limits: aws_sdk_s3::config::timeout::TimeoutConfig) -> Duration {
    limits
        .operation_timeout()
        .unwrap_or(Duration::from_secs(60))
        + CONNECT_TIMEOUT
}

/// Why a request that ran into the backstop failed.
fn no_answer(within: Duration) -> String {
    format!("no answer within {} s", within.as_secs())
}

/// `<path>.<what>.<pid>.<n>`: a file beside `path` no other one uses.
fn beside(path: &Path, what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{what}.{}.{n}", std::process::id()));
    PathBuf::from(s)
}

static UPLOADS: crate::counters::Metric = crate::counters::Metric {
    prometheus: "lovebeat_s3_uploads_total",
    statsd: None,
    help: "Database uploads to S3 that succeeded.",
    kind: crate::counters::Kind::Counter,
};

static UPLOAD_FAILURES: crate::counters::Metric = crate::counters::Metric {
    prometheus: "lovebeat_s3_upload_failures_total",
    statsd: None,
    help: "Database uploads to S3 that failed (retried after the next save).",
    kind: crate::counters::Kind::Counter,
};

/// The S3 backup's counters, for `/metrics`.
impl crate::counters::Counted for RemoteDb {
    fn read(&self, out: &mut Vec<crate::counters::Reading>) {
        use crate::counters::{Reading, Value};
        out.push(Reading::of(
            &UPLOADS,
            Value::Count(self.uploads.load(std::sync::atomic::Ordering::Relaxed)),
        ));
        let failures = self
            .upload_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        out.push(Reading::of(&UPLOAD_FAILURES, Value::Count(failures)));
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_url, timeouts};
    use std::time::Duration;

    #[test]
    fn every_request_has_a_deadline_that_grows_with_what_it_carries() {
        let t = timeouts(Duration::from_secs(30), 0);
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(3100)));
        let t = timeouts(Duration::from_secs(30), 100 << 20);
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_secs(130))
        );
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(260)));
        let t = timeouts(Duration::from_secs(30), 1);
        assert_eq!(t.operation_attempt_timeout(), Some(Duration::from_secs(31)));
    }

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_url("s3://b/k/db.gz").ok(),
            Some(("b".into(), "k/db.gz".into()))
        );
        assert!(parse_url("s3://b").is_err());
        assert!(parse_url("http://b/k").is_err());
        assert_eq!(
            parse_url("s3:///k").map_err(|e| e.to_string()),
            Err("remote_s3_url 's3:///k' must look like s3://bucket/key".to_string())
        );
    }
}
