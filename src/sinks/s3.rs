//! The database backup in S3 (README, "Configuration"): downloaded at
//! start, uploaded after every save. Works with S3-compatible stores
//! through `remote_s3_endpoint` (path-style addressing). Credentials come
//! from the standard AWS chain.
//!
//! An upload sends an immutable snapshot: a hard link to the file the save
//! just renamed into place, which a later save renames over without
//! touching. Periodic uploads never overlap (one still running makes the
//! next save skip its upload); the final upload at shutdown waits for a
//! running one instead of being skipped. A download lands in a temporary
//! file that the caller validates before anything replaces the local
//! database (`persistence::load_at_start`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A local file could not be written, linked or read.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A bucket and key, with a client for them.
pub struct RemoteDb {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Held while an upload runs: never two at once.
    uploading: tokio::sync::Mutex<()>,
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
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("remote_s3_url '{url}' must look like s3://bucket/key"))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => Err(format!(
            "remote_s3_url '{url}' must look like s3://bucket/key"
        )),
    }
}

impl RemoteDb {
    /// The remote database of `[database]`, or `None` when no URL is set.
    pub async fn from_config(db: &DatabaseConfig) -> Result<Option<RemoteDb>, String> {
        if db.remote_s3_url.is_empty() {
            return Ok(None);
        }
        let (bucket, key) = parse_url(&db.remote_s3_url)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
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
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(failed(
                    aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                ));
            }
        };
        let data = resp
            .body
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .into_bytes();
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
    /// [`IfBusy::Skip`], not when another upload is running. Failures are
    /// logged and counted, and returned.
    pub async fn upload(&self, path: &Path, if_busy: IfBusy) -> Result<(), S3Error> {
        let _one = match if_busy {
            IfBusy::Wait => self.uploading.lock().await,
            IfBusy::Skip => match self.uploading.try_lock() {
                Ok(g) => g,
                Err(_) => {
                    tracing::debug!(
                        "an upload to {} is still running; the next save uploads",
                        self.url()
                    );
                    return Ok(());
                }
            },
        };
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
        result
    }

    async fn put(&self, snapshot: &Path) -> Result<(), S3Error> {
        let body = ByteStream::from_path(snapshot)
            .await
            .map_err(|e| S3Error::Local {
                path: snapshot.to_path_buf(),
                source: std::io::Error::other(e),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| S3Error::Upload {
                url: self.url(),
                reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            })
    }
}

/// `<path>.<what>.<pid>.<n>`: a file beside `path` no other one uses.
fn beside(path: &Path, what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{what}.{}.{n}", std::process::id()));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn s3_urls() {
        assert_eq!(
            parse_url("s3://b/k/db.gz"),
            Ok(("b".into(), "k/db.gz".into()))
        );
        assert!(parse_url("s3://b").is_err());
        assert!(parse_url("http://b/k").is_err());
    }
}
