//! `[storage.s3]`: the serde type `config.rs` embeds, its defaults and its checks, kept here so
//! the S3 backend owns everything it reads.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigError};

/// S3's smallest part (all but the last part of a multipart upload).
pub const PART_BYTES_MIN: u64 = 5 * 1024 * 1024;
/// Largest part size accepted in the config: a part is held in memory while it is sent, so
/// this bounds the memory of one upload request.
pub const PART_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Default part size: S3's minimum plus room, so a 1 MiB write buffer never makes a sixth MiB
/// part spill over, and few enough parts (10,000 max) for blobs up to ~80 GB.
pub const PART_BYTES_DEFAULT: u64 = 8 * 1024 * 1024;
/// Default time for one S3 request's head (connect, send, first response bytes) and for the
/// longest pause inside a body.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default attempts per S3 operation (the first plus retries).
pub const ATTEMPTS_DEFAULT: u32 = 4;
/// Default bound on one S3 operation with all its retries and backoff.
pub const OPERATION_DEADLINE_DEFAULT: Duration = Duration::from_secs(60);
/// Default validity of the presigned URL a redirected blob GET answers with: long enough for
/// a client to start the download (S3 checks the expiry when the GET arrives, not while the
/// body streams), short enough that a leaked URL is soon useless.
pub const REDIRECT_EXPIRY_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Longest presigned URL validity SigV4 allows (7 days).
pub const REDIRECT_EXPIRY_MAX: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default region (what MinIO, moto and most S3-compatible services accept).
pub const REGION_DEFAULT: &str = "us-east-1";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    #[serde(default = "region_default")]
    pub region: String,
    /// `https://host[:port]` of a non-AWS service; AWS's regional endpoint otherwise.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key` (MinIO, Ceph, moto).
    #[serde(default)]
    pub path_style: bool,
    /// Prepended to every key (e.g. `origin/`), so several registries can share a bucket.
    #[serde(default)]
    pub key_prefix: String,
    /// Else `AWS_ACCESS_KEY_ID` from the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Else `AWS_SECRET_ACCESS_KEY` from the environment.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// The secret read from a file instead (systemd credentials, Kubernetes secrets); one
    /// trailing newline dropped. Read into `secret_access_key` when the file is loaded.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// The secret read from this environment variable instead.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// Answer blob GETs with a 307 to a presigned URL, so the bytes go bucket-to-client.
    #[serde(default)]
    pub redirect: bool,
    /// Validity of those presigned URLs.
    #[serde(default = "redirect_expiry_default", deserialize_with = "duration")]
    pub redirect_expiry: Duration,
    #[serde(default = "part_size_default")]
    pub multipart_part_size: u64,
    #[serde(default = "request_timeout_default", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Attempts per operation, the first included (1 = no retries).
    #[serde(default = "attempts_default")]
    pub attempts_max: u32,
    /// Bound on one operation with its retries.
    #[serde(default = "deadline_default", deserialize_with = "duration")]
    pub operation_deadline: Duration,
    /// PEM CA bundle to trust instead of the system roots (a private endpoint).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
}

/// Everything but the secret (configs are compared and may be logged through Debug).
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("key_prefix", &self.key_prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .field("multipart_part_size", &self.multipart_part_size)
            .field("request_timeout", &self.request_timeout)
            .field("attempts_max", &self.attempts_max)
            .field("operation_deadline", &self.operation_deadline)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

fn region_default() -> String {
    REGION_DEFAULT.to_string()
}
fn redirect_expiry_default() -> Duration {
    REDIRECT_EXPIRY_DEFAULT
}
fn part_size_default() -> u64 {
    PART_BYTES_DEFAULT
}
fn request_timeout_default() -> Duration {
    REQUEST_TIMEOUT_DEFAULT
}
fn attempts_default() -> u32 {
    ATTEMPTS_DEFAULT
}
fn deadline_default() -> Duration {
    OPERATION_DEADLINE_DEFAULT
}

/// Access key, secret and optional session token.
#[derive(Clone)]
pub struct Secrets {
    pub key: String,
    pub secret: String,
    pub token: Option<String>,
}

impl S3Config {
    /// Checks what needs no network; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::new(format!("storage.s3.{key}: {why}")));
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return bad("bucket", "must be a bucket name (non-empty, no '/')");
        }
        if self.region.is_empty() {
            return bad("region", "must not be empty");
        }
        if self.redirect_expiry < Duration::from_secs(1)
            || self.redirect_expiry > REDIRECT_EXPIRY_MAX
        {
            return bad("redirect_expiry", "must be 1s..=168h (SigV4's limit)");
        }
        if let Some(e) = &self.endpoint {
            if let Err(why) = crate::http::client::UpstreamUrl::parse(e) {
                return bad("endpoint", &why.to_string());
            }
        }
        if !self.key_prefix.is_empty() {
            let p = self.key_prefix.trim_end_matches('/');
            if !is_relative_path(p) {
                return bad("key_prefix", "must be a relative path like `origin/`");
            }
        }
        if !(PART_BYTES_MIN..=PART_BYTES_MAX).contains(&self.multipart_part_size) {
            return bad(
                "multipart_part_size",
                &format!(
                    "must be {PART_BYTES_MIN}..={PART_BYTES_MAX} (S3's part minimum is 5 MiB)"
                ),
            );
        }
        if self.request_timeout.is_zero() || self.operation_deadline.is_zero() {
            return bad(
                "request_timeout/operation_deadline",
                "must be greater than zero",
            );
        }
        if !(1..=20).contains(&self.attempts_max) {
            return bad("attempts_max", "must be 1..=20");
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad(
                "access_key_id",
                "set both access_key_id and secret_access_key, or neither (then the \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables are used)",
            );
        }
        Ok(())
    }

    /// The credentials: from the file, else the standard environment variables.
    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        if let (Some(key), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            return Ok(Secrets {
                key: key.clone(),
                secret: secret.clone(),
                token: std::env::var("AWS_SESSION_TOKEN").ok(),
            });
        }
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Ok(Secrets {
                key,
                secret,
                token: var("AWS_SESSION_TOKEN"),
            }),
            _ => Err(ConfigError::new(
                "storage.s3: no credentials: set access_key_id and secret_access_key, \
                 or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
            )),
        }
    }

    /// The endpoint URL: the configured one, or AWS's for the region.
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// The key prefix in its stored form: "" or ending in exactly one `/`.
    pub fn normalized_prefix(&self) -> String {
        let p = self.key_prefix.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    }
}

/// A relative path of non-empty components, none `.` or `..`, with no NUL or backslash
/// (what the storage layer accepts as a key).
fn is_relative_path(p: &str) -> bool {
    !p.is_empty()
        && !p.contains(['\0', '\\'])
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> S3Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let c = parse("bucket = \"b\"");
        assert_eq!(c.region, REGION_DEFAULT);
        assert_eq!(c.multipart_part_size, PART_BYTES_DEFAULT);
        assert_eq!(c.request_timeout, REQUEST_TIMEOUT_DEFAULT);
        assert!(c.validate().is_ok());
        assert_eq!(c.endpoint_url(), "https://s3.us-east-1.amazonaws.com");
        let c = parse("bucket = \"b\"\nmultipart_part_size = 1024");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("multipart_part_size"));
        let c = parse("bucket = \"b\"\naccess_key_id = \"k\"");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("secret_access_key"));
        let c = parse("bucket = \"b\"\nkey_prefix = \"/a/../b\"");
        assert!(c.validate().unwrap_err().to_string().contains("key_prefix"));
        let c = parse("bucket = \"b\"\nkey_prefix = \"/reg/\"\nrequest_timeout = \"250ms\"");
        assert_eq!(c.normalized_prefix(), "reg/");
        assert_eq!(c.request_timeout, Duration::from_millis(250));
        assert!(toml::from_str::<S3Config>("bucket = \"b\"\nnope = 1").is_err());
        let c = parse("bucket = \"b\"\nredirect = true");
        assert!(c.validate().is_ok());
        assert_eq!(c.redirect_expiry, REDIRECT_EXPIRY_DEFAULT);
        let c = parse("bucket = \"b\"\nredirect = true\nredirect_expiry = \"169h\"");
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("storage.s3.redirect_expiry"));
    }
}
