//! The server-side half of a commit: a single staged part becomes the blob with one
//! CopyObject; several are assembled with a multipart upload at the destination whose parts
//! are UploadPartCopy'd from them. The bytes never pass through Origin.

use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::{Bucket, Credentials, S3Action};

use super::client::{ok_document, s3_error, sign_with, Request, SIGNATURE_EXPIRY};
use super::{xml, S3Storage};
use crate::storage::Result;

/// Largest CopyObject / UploadPartCopy / Complete response read.
const COPY_RESPONSE_BYTES_MAX: usize = 64 * 1024;

impl S3Storage {
    /// CopyObject (`part` None) or UploadPartCopy into `dest`; the copy's ETag. With
    /// `if_absent` (CopyObject only) the copy is conditional on `dest` being absent
    /// (`If-None-Match: *`): `None` when it exists already.
    pub(super) async fn copy(
        &self,
        dest: &str,
        source: &str,
        part: Option<(u16, &str)>,
        if_absent: bool,
    ) -> Result<Option<String>> {
        let mut headers = vec![(
            "x-amz-copy-source",
            format!("/{}/{}", self.client().bucket.name(), encode_key(source)),
        )];
        if if_absent && part.is_none() {
            headers.push(("if-none-match", "*".to_string()));
        }
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| match part {
            Some((n, id)) => sign_with(b.upload_part(c, dest, n, id), h),
            None => sign_with(b.put_object(c, dest), h),
        };
        let op = if part.is_some() {
            "UploadPartCopy"
        } else {
            "CopyObject"
        };
        let sent = self
            .client()
            .call(&Request {
                op,
                method: "PUT",
                key: dest,
                sign: &sign,
                headers,
                body: &[],
            })
            .await?;
        let status = sent.resp.status;
        if status == 412 && if_absent {
            sent.resp.drain().await;
            return Ok(None);
        }
        let doc = ok_document(sent.resp, op, dest, COPY_RESPONSE_BYTES_MAX).await?;
        xml::field(&doc, "ETag")
            .map(Some)
            .ok_or_else(|| s3_error(op, dest, "no ETag in the copy result"))
    }

    /// A multipart upload at `dest` made of server-side copies of `sources`, completed; aborted
    /// on failure.
    pub(super) async fn assemble(&self, dest: &str, sources: &[String]) -> Result<()> {
        let id = self.create_multipart(dest).await?;
        let mut etags = Vec::with_capacity(sources.len());
        let mut result = Ok(());
        for (i, source) in sources.iter().enumerate() {
            // sources.len() <= PARTS_MAX (10,000), so i + 1 fits in u16.
            let n = u16::try_from(i + 1).unwrap_or(u16::MAX);
            match self.copy(dest, source, Some((n, &id)), false).await {
                Ok(Some(etag)) => etags.push(etag),
                Ok(None) => {
                    result = Err(s3_error("UploadPartCopy", dest, "unexpected 412"));
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self.complete_multipart(dest, &id, &etags).await;
        }
        if result.is_err() {
            self.abort_multipart(dest, &id).await;
        }
        result
    }

    pub(super) async fn create_multipart(&self, dest: &str) -> Result<String> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.create_multipart_upload(c, dest).sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "CreateMultipartUpload",
                method: "POST",
                key: dest,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await?;
        let status = sent.resp.status;
        let body = sent
            .resp
            .bytes(COPY_RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", dest, e))?;
        if status != 200 {
            return Err(s3_error(
                "CreateMultipartUpload",
                dest,
                format!("status {status}"),
            ));
        }
        let parsed = CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&body))
            .map_err(|e| s3_error("CreateMultipartUpload", dest, format!("bad XML: {e}")))?;
        Ok(parsed.upload_id().to_string())
    }

    async fn complete_multipart(&self, dest: &str, id: &str, etags: &[String]) -> Result<()> {
        let body = self
            .client()
            .bucket
            .complete_multipart_upload(None, dest, id, etags.iter().map(String::as_str))
            .body();
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.complete_multipart_upload(c, dest, id, std::iter::empty())
                .sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "CompleteMultipartUpload",
                method: "POST",
                key: dest,
                sign: &sign,
                headers: Vec::new(),
                body: body.as_bytes(),
            })
            .await?;
        ok_document(
            sent.resp,
            "CompleteMultipartUpload",
            dest,
            COPY_RESPONSE_BYTES_MAX,
        )
        .await?;
        Ok(())
    }

    /// Best effort: a bucket lifecycle rule removes what an abort could not.
    pub(super) async fn abort_multipart(&self, dest: &str, id: &str) {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.abort_multipart_upload(c, dest, id).sign(SIGNATURE_EXPIRY)
        };
        let r = self
            .client()
            .call(&Request {
                op: "AbortMultipartUpload",
                method: "DELETE",
                key: dest,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(key = dest, error = %e, "could not abort a multipart upload");
        }
    }
}

/// A key percent-encoded for `x-amz-copy-source` (unreserved characters and `/` kept).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encoding() {
        assert_eq!(
            encode_key("blobs/sha256:ab/data x"),
            "blobs/sha256%3Aab/data%20x"
        );
    }
}
