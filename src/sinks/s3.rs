//! The database backup in S3 (README, "Configuration"): downloaded at start, uploaded after
//! every save. Works with S3-compatible stores through `remote_s3_endpoint`
//! (path-style addressing). Credentials come from the standard AWS chain.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aws_sdk_s3::primitives::ByteStream;

use crate::sinks::persistence::DatabaseConfig;

/// A bucket and key, with a client for them.
pub struct RemoteDb {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Set while an upload runs: never two at once.
    uploading: AtomicBool,
    /// Uploads that succeeded.
    pub uploads: AtomicU64,
    /// Uploads that failed (retried at the next save).
    pub upload_failures: AtomicU64,
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
            uploading: AtomicBool::new(false),
            uploads: AtomicU64::new(0),
            upload_failures: AtomicU64::new(0),
        }))
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Downloads the object to `path` (atomically). `Ok(false)` when there
    /// is no such object: an empty start.
    pub async fn download(&self, path: &Path) -> Result<bool, String> {
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
                    return Ok(false);
                }
                return Err(format!(
                    "downloading {}: {}",
                    self.url(),
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ));
            }
        };
        let data = resp
            .body
            .collect()
            .await
            .map_err(|e| format!("downloading {}: {e}", self.url()))?
            .into_bytes();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".download");
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::write(&tmp, &data).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("replacing {}: {e}", path.display()))?;
        Ok(true)
    }

    /// Uploads `path` unless an upload is running already (the next save
    /// uploads then). Failures are logged and counted.
    pub async fn upload(&self, path: &Path) {
        if self.uploading.swap(true, Ordering::AcqRel) {
            tracing::debug!(
                "an upload to {} is still running; skipping this one",
                self.url()
            );
            return;
        }
        let result = match ByteStream::from_path(path).await {
            Ok(body) => self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(&e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                self.uploads.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("uploaded the database to {}", self.url());
            }
            Err(e) => {
                self.upload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "uploading the database to {} failed (retried after the next save): {e}",
                    self.url()
                );
            }
        }
        self.uploading.store(false, Ordering::Release);
    }
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
