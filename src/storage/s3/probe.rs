//! The start-up probe: before serving, show that the bucket is reachable, the credentials
//! work, and the service honours conditional create and conditional replace, which the whole
//! design rests on. Each failure names what is missing.

use rusty_s3::{Bucket, Credentials, S3Action};

use super::client::{token, Request, SIGNATURE_EXPIRY};
use super::S3Storage;
use crate::config::ConfigError;
use crate::storage::{Etag, PutCondition, PutOutcome, Storage, StorageError};

/// Where probe objects go (under the key prefix); removed after the probe.
pub const PROBE_PREFIX: &str = "_probe/";

impl S3Storage {
    /// Runs the probe; `Err` is a sentence for the operator.
    pub async fn probe(&self) -> Result<(), ConfigError> {
        let bucket = self.client().bucket.name().to_string();
        let at = self.client().bucket.base_url().to_string();
        self.probe_bucket(&bucket, &at).await?;
        let key = format!("{PROBE_PREFIX}{}", token());
        let fail = |what: &str, e: StorageError| {
            format!("storage.s3: {what} failed on bucket {bucket:?} at {at}: {e}")
        };
        let first = self
            .put(&key, b"1".to_vec(), PutCondition::IfAbsent)
            .await
            .map_err(|e| fail("writing a probe object", e))?;
        let PutOutcome::Written(etag) = first else {
            return Err(ConfigError::new(format!(
                "storage.s3: a fresh probe key {key:?} already existed: the service does not \
                 honour conditional create (If-None-Match: *)"
            )));
        };
        let outcome = async {
            let again = self
                .put(&key, b"2".to_vec(), PutCondition::IfAbsent)
                .await
                .map_err(|e| fail("conditional create", e))?;
            if again != PutOutcome::PreconditionFailed {
                return Err(ConfigError::new(format!(
                    "storage.s3: the service at {at} ignores If-None-Match: * (conditional \
                     create); Origin needs it to coordinate nodes"
                )));
            }
            let stale =
                PutCondition::IfMatch(Etag::new("\"00000000000000000000000000000000\"".into()));
            let replaced = self
                .put(&key, b"3".to_vec(), stale)
                .await
                .map_err(|e| fail("conditional replace", e))?;
            if replaced != PutOutcome::PreconditionFailed {
                return Err(ConfigError::new(format!(
                    "storage.s3: the service at {at} ignores If-Match (conditional replace); \
                     Origin needs it to coordinate nodes"
                )));
            }
            let current = self
                .put(&key, b"4".to_vec(), PutCondition::IfMatch(etag))
                .await
                .map_err(|e| fail("conditional replace", e))?;
            if !matches!(current, PutOutcome::Written(_)) {
                return Err(ConfigError::new(format!(
                    "storage.s3: the service at {at} refused If-Match with the current ETag"
                )));
            }
            Ok(())
        }
        .await;
        let removed = self.delete(&key).await;
        outcome?;
        removed.map_err(|e| fail("deleting the probe object", e))?;
        Ok(())
    }

    /// HEAD of the bucket: reachable, exists, credentials accepted.
    async fn probe_bucket(&self, bucket: &str, at: &str) -> Result<(), ConfigError> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.head_bucket(c).sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "HeadBucket",
                method: "HEAD",
                key: bucket,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await
            .map_err(|e| match e {
                StorageError::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    format!(
                        "storage.s3: bucket {bucket:?} at {at} refused the credentials ({io}): \
                         check access_key_id/secret_access_key or AWS_ACCESS_KEY_ID/\
                         AWS_SECRET_ACCESS_KEY"
                    )
                }
                e => format!("storage.s3: cannot reach {at}: {e}"),
            })?;
        match sent.resp.status {
            200 => Ok(()),
            404 => Err(ConfigError::new(format!(
                "storage.s3: bucket {bucket:?} does not exist at {at} (create it first)"
            ))),
            301 | 400 => Err(ConfigError::new(format!(
                "storage.s3: bucket {bucket:?} answered {} at {at}: check storage.s3.region \
                 and path_style",
                sent.resp.status
            ))),
            s => Err(ConfigError::new(format!(
                "storage.s3: bucket {bucket:?} at {at} refused the credentials (HTTP {s}): check \
                 access_key_id/secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ))),
        }
    }
}
