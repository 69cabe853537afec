//! Several objects removed with one request (DeleteObjects), and listings that keep each
//! key's LastModified: what a commit and the session expiry need to spend one request where
//! one per key would do.

use std::time::SystemTime;

use rusty_s3::actions::{DeleteObjectsResponse, ObjectIdentifier};
use rusty_s3::{Bucket, Credentials};

use super::client::{ok_document, s3_error, sign_with, Request};
use super::{S3Storage, LIST_PAGE_KEYS_MAX};
use crate::storage::Result;

/// Keys per DeleteObjects request: S3's maximum.
const DELETE_KEYS_MAX: usize = 1000;
/// Largest DeleteObjects response read: quiet mode lists only failures, a few hundred bytes
/// each for at most `DELETE_KEYS_MAX` keys.
const DELETE_RESPONSE_BYTES_MAX: usize = 1024 * 1024;

impl S3Storage {
    /// Removes the objects at bucket keys `fulls`: one DeleteObject for a single key, else
    /// DeleteObjects in batches of `DELETE_KEYS_MAX` (S3 answers for each key whether or not
    /// it existed; an absent key is no error).
    pub(super) async fn delete_many(&self, fulls: &[String]) -> Result<()> {
        if let [one] = fulls {
            return self.delete_full(one).await;
        }
        for chunk in fulls.chunks(DELETE_KEYS_MAX) {
            self.delete_batch(chunk).await?;
        }
        Ok(())
    }

    async fn delete_batch(&self, fulls: &[String]) -> Result<()> {
        let objects: Vec<ObjectIdentifier> = fulls
            .iter()
            .map(|k| ObjectIdentifier::new(k.clone()))
            .collect();
        let what = fulls.first().map_or("", String::as_str);
        // The body and its Content-MD5 (S3 refuses a DeleteObjects without a checksum).
        let mut action = self.client().bucket.delete_objects(None, objects.iter());
        action.set_quiet(true);
        let (body, md5) = action.body_with_md5();
        let headers = vec![("content-md5", md5)];
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| {
            sign_with(b.delete_objects(c, objects.iter()), h)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "DeleteObjects",
                method: "POST",
                key: what,
                sign: &sign,
                headers,
                body: body.as_bytes(),
            })
            .await?;
        let doc = ok_document(sent.resp, "DeleteObjects", what, DELETE_RESPONSE_BYTES_MAX).await?;
        if doc.trim().is_empty() {
            // A 200 with no document reports no failure (moto 5.2 answers so; AWS sends an
            // empty <DeleteResult> in quiet mode when every key went).
            return Ok(());
        }
        let parsed = DeleteObjectsResponse::parse(&doc)
            .map_err(|e| s3_error("DeleteObjects", what, format!("bad XML: {e}")))?;
        match parsed.errors.iter().find(|e| e.code != "NoSuchKey") {
            Some(e) => Err(s3_error(
                "DeleteObjects",
                &e.key,
                format!("{} {}", e.code, e.message),
            )),
            None => Ok(()),
        }
    }

    /// Keys under the storage prefix `prefix` with their LastModified, at most `limit`
    /// (one ListObjectsV2 per 1,000 keys; no HEAD per key).
    pub async fn list_modified(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, SystemTime)>> {
        crate::storage::validate_prefix(prefix)?;
        let full_prefix = self.full(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let want = (limit - out.len()).min(LIST_PAGE_KEYS_MAX);
            let parsed = self
                .list_page_parsed(&full_prefix, None, false, want, token.as_deref())
                .await?;
            for c in parsed.contents.into_iter().take(want) {
                if let Some(key) = self.strip(&c.key) {
                    out.push((key.to_string(), rfc3339(c.last_modified.as_deref())));
                }
            }
            match parsed.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }
}

/// A listing's LastModified (RFC 3339) as a time; now when it does not parse, so that an
/// unreadable date never makes an object look old enough to remove.
fn rfc3339(text: Option<&str>) -> SystemTime {
    text.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|ts| u64::try_from(ts.as_second()).ok())
        .map_or_else(SystemTime::now, |s| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_dates() {
        let t = rfc3339(Some("2020-12-01T20:43:11.794Z"));
        let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_606_855_391);
        // Unreadable: treated as new.
        assert!(rfc3339(Some("yesterday")) > t);
        assert!(rfc3339(None) > t);
    }
}
