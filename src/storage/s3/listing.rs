//! ListObjectsV2 pages under a bucket prefix, parsed, and whole listings built from them.

use super::*;

impl S3Storage {
    /// One ListObjectsV2 page under a bucket prefix: (keys, common prefixes, next token).
    pub(super) async fn list_page(
        &self,
        full_prefix: &str,
        start_after: Option<&str>,
        delimiter: bool,
        max_keys: usize,
        continuation: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>, Option<String>)> {
        let parsed = self
            .list_page_parsed(full_prefix, start_after, delimiter, max_keys, continuation)
            .await?;
        let keys = parsed.contents.into_iter().map(|c| c.key).collect();
        let dirs = parsed
            .common_prefixes
            .into_iter()
            .map(|p| p.prefix)
            .collect();
        Ok((keys, dirs, parsed.next_continuation_token))
    }

    /// One ListObjectsV2 page under a bucket prefix, as parsed (with each key's metadata).
    pub(super) async fn list_page_parsed(
        &self,
        full_prefix: &str,
        start_after: Option<&str>,
        delimiter: bool,
        max_keys: usize,
        continuation: Option<&str>,
    ) -> Result<ListObjectsV2Response> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            let mut a: ListObjectsV2 = b.list_objects_v2(c);
            if !full_prefix.is_empty() {
                a.with_prefix(full_prefix);
            }
            if let Some(s) = start_after {
                a.with_start_after(s);
            }
            if delimiter {
                a.with_delimiter("/");
            }
            if let Some(t) = continuation {
                a.with_continuation_token(t);
            }
            a.with_max_keys(max_keys);
            a.sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "ListObjectsV2",
                method: "GET",
                key: full_prefix,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await?;
        if sent.resp.status != 200 {
            return Err(s3_error(
                "ListObjectsV2",
                full_prefix,
                format!("status {} (does the bucket exist?)", sent.resp.status),
            ));
        }
        let body = sent
            .resp
            .bytes(LIST_RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| s3_error("ListObjectsV2", full_prefix, e))?;
        let text = String::from_utf8_lossy(&body);
        ListObjectsV2::parse_response(&text)
            .map_err(|e| s3_error("ListObjectsV2", full_prefix, format!("bad XML: {e}")))
    }

    /// Every bucket key under `full_prefix`, at most `limit`.
    pub(super) async fn list_full(
        &self,
        full_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let want = (limit - out.len()).min(LIST_PAGE_KEYS_MAX);
            let (keys, _, next) = self
                .list_page(full_prefix, start_after, false, want, token.as_deref())
                .await?;
            out.extend(keys.into_iter().take(want));
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }
}
