//! The sections that set up the process: `[server]` (with `[server.tls]`), `[log]`,
//! `[storage]`, `[uploads]`, `[gc]`, `[metrics]`, `[ui]`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{d, duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else the polling driver.
    Auto,
    IoUring,
    Poll,
}

impl std::fmt::Display for IoDriver {
    /// The name as written in the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoDriver::Auto => "auto",
            IoDriver::IoUring => "io_uring",
            IoDriver::Poll => "poll",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "d::bind_address")]
    pub bind_address: IpAddr,
    #[serde(default = "d::port")]
    pub port: u16,
    /// Worker threads, each with its own runtime and listener; 0 means one per available core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default = "d::io_driver")]
    pub io_driver: IoDriver,
    /// Deadline for the work of one request, from its complete head; a blob body that keeps
    /// moving (each pause within `body_idle_timeout`) is not cut by it.
    #[serde(default = "d::query_timeout", deserialize_with = "duration")]
    pub query_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit.
    #[serde(default = "d::grace", deserialize_with = "duration")]
    pub query_timeout_grace_period: Duration,
    /// Deadline for the TLS handshake of a new connection.
    #[serde(default = "d::tls_handshake_timeout", deserialize_with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// Deadline for a request head to arrive once its first byte has.
    #[serde(default = "d::head_read_timeout", deserialize_with = "duration")]
    pub head_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    #[serde(default = "d::keep_alive_timeout", deserialize_with = "duration")]
    pub keep_alive_timeout: Duration,
    /// Longest pause allowed while a request body or a response is in transit.
    #[serde(default = "d::body_idle_timeout", deserialize_with = "duration")]
    pub body_idle_timeout: Duration,
    /// Open connections per worker; accepting pauses at this number.
    #[serde(default = "d::connections_per_worker_max")]
    pub connections_per_worker_max: usize,
    #[serde(default = "d::request_line_bytes_max")]
    pub request_line_bytes_max: usize,
    #[serde(default = "d::header_bytes_max")]
    pub header_bytes_max: usize,
    #[serde(default = "d::header_count_max")]
    pub header_count_max: usize,
    /// Largest manifest body accepted (the spec suggests 4 MiB).
    #[serde(default = "d::manifest_bytes_max")]
    pub manifest_bytes_max: u64,
    /// Largest blob upload body accepted in one request.
    #[serde(default = "d::blob_bytes_max")]
    pub blob_bytes_max: u64,
    /// Memory for the manifest cache shared by all workers (0 disables it).
    #[serde(default = "d::manifest_cache_bytes")]
    pub manifest_cache_bytes: usize,
    /// How long a cached manifest is served before it is read from storage again: the bound
    /// on serving a manifest that another process or node deleted.
    #[serde(default = "d::manifest_cache_ttl", deserialize_with = "duration")]
    pub manifest_cache_ttl: Duration,
    /// Largest body accepted by any other route.
    #[serde(default = "d::other_body_bytes_max")]
    pub other_body_bytes_max: u64,
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub server_certificate_bundle: PathBuf,
    pub server_private_key: PathBuf,
    pub client_ca_bundle: Option<PathBuf>,
    /// Whether a client certificate is required or optional; only with `client_ca_bundle`,
    /// where it defaults to optional (certificates are one identity source among others).
    #[serde(default)]
    pub client_certificate: Option<ClientCertificate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificate {
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A RUST_LOG-style filter; the RUST_LOG environment variable overrides it.
    #[serde(default = "d::log_filter")]
    pub filter: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: d::log_filter(),
            format: LogFormat::Text,
        }
    }
}

impl Default for ServerConfig {
    /// Every key at its documented default, as an empty `[server]` table gives.
    fn default() -> Self {
        // Every field has a serde default and `tls` is optional: an empty table always
        // deserializes (the config tests check the values against the documented ones).
        match toml::from_str::<ServerConfig>("") {
            Ok(server) => server,
            Err(e) => unreachable!("an empty [server] table is valid: {e}"),
        }
    }
}

/// `[storage]`: a local directory or an S3-compatible bucket. With neither given, the
/// directory `./data` (filled in when the configuration is parsed).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// A local directory; exclusive with `s3`.
    #[serde(default)]
    pub fs: Option<FsStorageConfig>,
    /// An S3-compatible bucket; exclusive with `fs` (its type: `config::s3`).
    #[serde(default)]
    pub s3: Option<super::s3::S3Config>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStorageConfig {
    #[serde(default = "d::root_dir")]
    pub root_dir: PathBuf,
    /// The free-space guard: with less than this many bytes free on the filesystem of
    /// `root_dir`, writes that add data answer 507 (0: off). Reloadable.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// The same as a share of the filesystem's size, 0.0 to 1.0 (0: off). Reloadable.
    #[serde(default)]
    pub min_free_ratio: f64,
}

impl Default for FsStorageConfig {
    fn default() -> Self {
        FsStorageConfig {
            root_dir: d::root_dir(),
            min_free_bytes: 0,
            min_free_ratio: 0.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// An upload session untouched for this long is removed with its data.
    #[serde(default = "d::upload_idle_expiry", deserialize_with = "duration")]
    pub idle_expiry: Duration,
    /// Open upload sessions per repository; POST answers 429 beyond it (per process: N
    /// nodes on one bucket admit up to N times this, see `registry/session_cap.rs`).
    #[serde(default = "d::upload_sessions_max")]
    pub sessions_per_repository_max: usize,
    /// Admit an index whose children are not stored (docker buildx attestation indexes).
    #[serde(default = "d::yes")]
    pub allow_missing_index_children: bool,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            idle_expiry: d::upload_idle_expiry(),
            sessions_per_repository_max: d::upload_sessions_max(),
            allow_missing_index_children: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate plain-HTTP listener for /metrics, /healthz and /readyz (e.g. "127.0.0.1:9090").
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Serve /metrics on the main listener too. /healthz and /readyz are always served there.
    #[serde(default = "d::yes")]
    pub expose_on_main: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            expose_on_main: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Run collection passes in the background while serving.
    #[serde(default = "d::yes")]
    pub enabled: bool,
    /// Time between passes.
    #[serde(default = "d::gc_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// A blob released, uploaded or mounted within this long is kept.
    #[serde(default = "d::gc_grace", deserialize_with = "duration")]
    pub grace_period: Duration,
    /// Delete manifests without a tag (not index children, not referrers) after the grace
    /// period. Off by default: pulls by digest of untagged manifests keep working.
    #[serde(default)]
    pub remove_untagged: bool,
    /// Apply the `retention` rules of `[[repository]]` entries before each pass.
    #[serde(default)]
    pub retention: bool,
    /// A manifest PUT's references older than this, with no manifest to show for them, are
    /// a crashed or cut request's debris and are undone. Longer than any manifest PUT can
    /// run (`server.query_timeout` bounds it; checked at load).
    #[serde(default = "d::gc_debris_after", deserialize_with = "duration")]
    pub debris_after: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval: d::gc_interval(),
            grace_period: d::gc_grace(),
            remove_untagged: false,
            retention: false,
            debris_after: d::gc_debris_after(),
        }
    }
}

/// The web UI: served under `path` by the same listener, assets compiled into the binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the UI (and redirect `/` to it).
    #[serde(default = "d::yes")]
    pub enabled: bool,
    /// Where the UI lives: starts and ends with `/`, outside `/v2/` and the ops paths.
    #[serde(default = "d::ui_path")]
    pub path: String,
    /// The name shown in the page title and header.
    #[serde(default = "d::ui_title")]
    pub title: String,
    /// How long a login lasts (the session cookie's life): after it the person logs in again.
    #[serde(default = "d::ui_session_ttl", deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// The key that signs session cookies (at least 32 bytes), the same on every node; or
    /// `session_secret_file` / `session_secret_env`. When none is given, a random key is
    /// created once in storage (a conditional write) and every node sharing it reads it.
    pub session_secret: Option<String>,
    pub session_secret_file: Option<PathBuf>,
    pub session_secret_env: Option<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            enabled: true,
            path: d::ui_path(),
            title: d::ui_title(),
            session_ttl: d::ui_session_ttl(),
            session_secret: None,
            session_secret_file: None,
            session_secret_env: None,
        }
    }
}

/// Longest `ui.title` accepted: a brand, not a paragraph.
pub const UI_TITLE_CHARS_MAX: usize = 80;
/// Longest `ui.path` accepted.
pub const UI_PATH_BYTES_MAX: usize = 100;
/// Shortest `ui.session_secret`: 256 bits of key for HMAC-SHA256.
pub const UI_SESSION_SECRET_BYTES_MIN: usize = 32;
/// Bounds of `ui.session_ttl`: a login longer than 30 days is a standing credential.
pub const UI_SESSION_TTL_MIN: Duration = Duration::from_secs(60);
pub const UI_SESSION_TTL_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

impl UiConfig {
    /// What is wrong with the section, naming the key.
    pub(super) fn problem(&self) -> Option<(&'static str, &'static str)> {
        let p = &self.path;
        let reserved = ["/v2", "/metrics", "/healthz", "/readyz"];
        if p.len() < 2 || !p.starts_with('/') || !p.ends_with('/') || p.len() > UI_PATH_BYTES_MAX {
            return Some(("ui.path", "must start and end with '/', with a name between (e.g. \"/ui/\"), at most 100 bytes"));
        }
        let segments_ok = p[1..p.len() - 1].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        if !segments_ok {
            return Some((
                "ui.path",
                "segments may only use letters, digits, '-', '_' and '.'",
            ));
        }
        if reserved.iter().any(|r| p.starts_with(&format!("{r}/"))) {
            return Some(("ui.path", "must not be under /v2/ or an ops path"));
        }
        let t = &self.title;
        if t.trim().is_empty()
            || t.chars().count() > UI_TITLE_CHARS_MAX
            || t.chars().any(char::is_control)
        {
            return Some((
                "ui.title",
                "must be 1 to 80 characters, none of them control characters",
            ));
        }
        if self.session_ttl < UI_SESSION_TTL_MIN || self.session_ttl > UI_SESSION_TTL_MAX {
            return Some(("ui.session_ttl", "must be between 1m and 720h (30 days)"));
        }
        if self
            .session_secret
            .as_ref()
            .is_some_and(|s| s.len() < UI_SESSION_SECRET_BYTES_MIN)
        {
            return Some(("ui.session_secret", "must be at least 32 bytes"));
        }
        None
    }
}
