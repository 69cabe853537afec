//! Typed configuration: one TOML file, unknown keys rejected, every limit with a default.
//!
//! Values are loaded and validated once, then passed by value or `Arc` to whoever needs them;
//! nothing reads configuration from globals.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The configuration used when no `-c FILE` is given and `./config.toml` does not exist:
/// a registry on 127.0.0.1:5000 with storage under ./data and anonymous access everywhere.
pub const EMBEDDED_DEFAULT: &str = r#"
[server]
bind_address = "127.0.0.1"
port = 5000

[storage.fs]
root_dir = "./data"

[[repository]]
namespace = ""
policy_default_allow = true
policies = []
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub uploads: UploadsConfig,
    #[serde(default)]
    pub gc: GcConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub identity: BTreeMap<String, IdentityConfig>,
    #[serde(default)]
    pub repository: Vec<RepositoryConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else the polling driver.
    Auto,
    IoUring,
    Poll,
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
    /// Deadline for one request, from its complete head to the end of its response.
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
    /// where it defaults to required.
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// A local directory; exclusive with `s3`.
    #[serde(default)]
    pub fs: Option<FsStorageConfig>,
    /// An S3-compatible bucket; exclusive with `fs` (its type: `storage::s3::config`).
    #[serde(default)]
    pub s3: Option<crate::storage::s3::S3Config>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStorageConfig {
    pub root_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// An upload session untouched for this long is removed with its data.
    #[serde(default = "d::upload_idle_expiry", deserialize_with = "duration")]
    pub idle_expiry: Duration,
    /// Open upload sessions per repository; POST answers 429 beyond it.
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
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: true,
            interval: d::gc_interval(),
            grace_period: d::gc_grace(),
            remove_untagged: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub username: String,
    /// An argon2 PHC string, as printed by `origin hash-password`.
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub namespace: String,
    #[serde(default)]
    pub policy_default_allow: bool,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Makes the namespace a pull-through cache of upstream registries.
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
}

/// `[repository.mirror]`: the namespace caches content pulled from upstream registries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The registry name containerd sends as `?ns=`; defaults to the namespace.
    #[serde(default)]
    pub registry: Option<String>,
    /// Serves repository names without a registry prefix (the Docker engine's
    /// `registry-mirrors` sends `/v2/library/alpine/...`). At most one mirror is the default.
    #[serde(default)]
    pub default: bool,
    /// How long a tag is trusted before it is checked upstream again.
    #[serde(default = "d::tag_freshness", deserialize_with = "duration")]
    pub tag_freshness: Duration,
    /// Clients may push and delete here too (off: the namespace is read-only).
    #[serde(default)]
    pub writable: bool,
    /// Manifests not pulled for this long are removed (their blobs then go to GC).
    #[serde(default, deserialize_with = "opt_duration")]
    pub evict_after: Option<Duration>,
    /// Upstream registries, tried in order.
    pub upstream: Vec<UpstreamConfig>,
}

/// `[[repository.mirror.upstream]]`: one upstream registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://registry-1.docker.io` or `http://host:port`.
    pub url: String,
    /// Credentials for Basic auth, or for fetching Bearer tokens.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM roots to trust for this upstream instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Deadline to connect and to receive a response head; also the longest pause in a body.
    #[serde(default = "d::upstream_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// Default values, one function each so serde can name them.
mod d {
    use super::*;
    pub fn bind_address() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
    pub fn port() -> u16 {
        5000
    }
    pub fn io_driver() -> IoDriver {
        IoDriver::Auto
    }
    pub fn query_timeout() -> Duration {
        Duration::from_secs(900)
    }
    pub fn grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn tls_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn head_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn keep_alive_timeout() -> Duration {
        Duration::from_secs(75)
    }
    pub fn body_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn connections_per_worker_max() -> usize {
        16_384
    }
    pub fn request_line_bytes_max() -> usize {
        8 * 1024
    }
    pub fn header_bytes_max() -> usize {
        64 * 1024
    }
    pub fn header_count_max() -> usize {
        100
    }
    pub fn manifest_bytes_max() -> u64 {
        4 * 1024 * 1024
    }
    pub fn blob_bytes_max() -> u64 {
        64 * 1024 * 1024 * 1024
    }
    pub fn manifest_cache_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn other_body_bytes_max() -> u64 {
        64 * 1024
    }
    pub fn log_filter() -> String {
        "info".to_string()
    }
    pub fn upload_idle_expiry() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn upload_sessions_max() -> usize {
        1024
    }
    pub fn yes() -> bool {
        true
    }
    pub fn gc_interval() -> Duration {
        Duration::from_secs(600)
    }
    pub fn gc_grace() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn tag_freshness() -> Duration {
        Duration::from_secs(300)
    }
    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

/// A duration as whole seconds (`30`) or a number with a unit (`250ms`, `30s`, `5m`, `2h`).
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 5m, 250ms"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
    };
    Ok(d)
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where the configuration came from, for the startup log.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl Config {
    /// Loads `path`, or `./config.toml`, or the embedded default, in that order.
    pub fn load(path: Option<&Path>) -> Result<(Config, Source), ConfigError> {
        let (text, source) = match path {
            Some(p) => (read(p)?, Source::File(p.to_path_buf())),
            None if Path::new("config.toml").exists() => {
                let p = Path::new("config.toml");
                (read(p)?, Source::File(p.to_path_buf()))
            }
            None => (EMBEDDED_DEFAULT.to_string(), Source::Embedded),
        };
        let config = Config::parse(&text).map_err(|e| match &source {
            Source::File(p) => ConfigError(format!("{}: {}", p.display(), e.0)),
            Source::Embedded => e,
        })?;
        Ok((config, source))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if s.workers > 1024 {
            return bad("server.workers", "at most 1024 (0 means one per core)");
        }
        if s.connections_per_worker_max == 0 {
            return bad("server.connections_per_worker_max", "must be at least 1");
        }
        if !(64..=1024 * 1024).contains(&s.request_line_bytes_max) {
            return bad("server.request_line_bytes_max", "must be 64..=1048576");
        }
        if !(1024..=1024 * 1024).contains(&s.header_bytes_max) {
            return bad("server.header_bytes_max", "must be 1024..=1048576");
        }
        if !(8..=1024).contains(&s.header_count_max) {
            return bad("server.header_count_max", "must be 8..=1024");
        }
        for (key, v) in [
            ("gc.interval", self.gc.interval),
            ("server.query_timeout", s.query_timeout),
            ("server.head_read_timeout", s.head_read_timeout),
            ("server.tls_handshake_timeout", s.tls_handshake_timeout),
            ("server.keep_alive_timeout", s.keep_alive_timeout),
            ("server.body_idle_timeout", s.body_idle_timeout),
        ] {
            if v.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        if s.manifest_bytes_max == 0 || s.manifest_bytes_max > 64 * 1024 * 1024 {
            return bad("server.manifest_bytes_max", "must be 1..=67108864");
        }
        match (&self.storage.fs, &self.storage.s3) {
            (Some(fs), None) if fs.root_dir.as_os_str().is_empty() => {
                return bad("storage.fs.root_dir", "must not be empty");
            }
            (Some(_), None) => {}
            (None, Some(s3)) => s3.validate().map_err(ConfigError)?,
            (Some(_), Some(_)) => {
                return bad("storage", "set [storage.fs] or [storage.s3], not both")
            }
            (None, None) => return bad("storage", "needs [storage.fs] or [storage.s3]"),
        }
        for (id, ident) in &self.identity {
            if ident.username.is_empty() || ident.username.contains(':') {
                return bad(
                    &format!("identity.{id}.username"),
                    "must be non-empty and contain no ':'",
                );
            }
            if argon2::PasswordHash::new(&ident.password).is_err() {
                return bad(
                    &format!("identity.{id}.password"),
                    "is not an argon2 PHC string (make one with `origin hash-password`)",
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut registries = std::collections::BTreeSet::new();
        let mut defaults = 0;
        for (i, repo) in self.repository.iter().enumerate() {
            let ns = repo.namespace.trim_end_matches('/');
            if !seen.insert(ns.to_string()) {
                return bad(
                    &format!("repository[{i}].namespace"),
                    &format!("{ns:?} is configured twice"),
                );
            }
            let Some(m) = &repo.mirror else { continue };
            let key = |k: &str| format!("repository[{i}].mirror.{k}");
            if ns.is_empty() || crate::oci::RepoName::parse(ns).is_err() {
                return bad(
                    &format!("repository[{i}].namespace"),
                    "a mirror needs a non-empty namespace that is a valid repository name (e.g. \"docker.io\")",
                );
            }
            let registry = m.registry.as_deref().unwrap_or(ns);
            if registry.is_empty() || !registries.insert(registry.to_string()) {
                return bad(
                    &key("registry"),
                    &format!("{registry:?} is empty or used twice"),
                );
            }
            defaults += usize::from(m.default);
            if defaults > 1 {
                return bad(&key("default"), "only one mirror may be the default");
            }
            if m.upstream.is_empty() {
                return bad(&key("upstream"), "at least one upstream is needed");
            }
            for (j, u) in m.upstream.iter().enumerate() {
                if let Err(e) = crate::mirror::UpstreamUrl::parse(&u.url) {
                    return bad(&format!("{}[{j}].url", key("upstream")), &e);
                }
                if u.username.is_some() != u.password.is_some() {
                    return bad(
                        &format!("{}[{j}]", key("upstream")),
                        "username and password go together",
                    );
                }
                if u.timeout.is_zero() {
                    return bad(
                        &format!("{}[{j}].timeout", key("upstream")),
                        "must be greater than zero",
                    );
                }
            }
        }
        Ok(())
    }

    /// Worker count after resolving 0 to the number of available cores.
    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_with_expected_values() {
        let c = Config::parse(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.server.port, 5000);
        assert_eq!(c.server.bind_address.to_string(), "127.0.0.1");
        assert_eq!(c.storage.fs.unwrap().root_dir, PathBuf::from("./data"));
        assert_eq!(c.repository.len(), 1);
        assert!(c.repository[0].policy_default_allow);
        assert_eq!(c.server.manifest_bytes_max, 4 * 1024 * 1024);
    }

    /// The documented example is valid and documents the real defaults.
    #[test]
    fn example_file_parses_and_matches_defaults() {
        let example = Config::parse(include_str!("../config.example.toml")).unwrap();
        let minimal = Config::parse(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(
            format!("{:?}", example.server),
            format!("{:?}", minimal.server)
        );
        assert_eq!(
            format!("{:?}", example.uploads),
            format!("{:?}", minimal.uploads)
        );
        assert_eq!(format!("{:?}", example.log), format!("{:?}", minimal.log));
        assert_eq!(format!("{:?}", example.gc), format!("{:?}", minimal.gc));
        assert_eq!(
            format!("{:?}", example.metrics),
            format!("{:?}", minimal.metrics)
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let text = format!("{EMBEDDED_DEFAULT}\n[log]\nfromat = \"json\"\n");
        let e = Config::parse(&text).unwrap_err();
        assert!(e.0.contains("fromat"), "{e}");
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
        let text = EMBEDDED_DEFAULT.replace("port = 5000", "port = 5000\nquery_timeout = \"2m\"");
        assert_eq!(
            Config::parse(&text).unwrap().server.query_timeout,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn validation_names_the_bad_key() {
        let text = EMBEDDED_DEFAULT.replace("port = 5000", "port = 5000\nheader_count_max = 1");
        let e = Config::parse(&text).unwrap_err();
        assert!(e.0.starts_with("server.header_count_max"), "{e}");
        let text = format!(
            "{EMBEDDED_DEFAULT}\n[identity.alice]\nusername = \"alice\"\npassword = \"plain\"\n"
        );
        let e = Config::parse(&text).unwrap_err();
        assert!(e.0.starts_with("identity.alice.password"), "{e}");
    }
}
