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
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub uploads: UploadsConfig,
    #[serde(default)]
    pub gc: GcConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub identity: BTreeMap<String, IdentityConfig>,
    /// OIDC identity providers whose signed JWTs are accepted as credentials.
    #[serde(default)]
    pub oidc: BTreeMap<String, OidcConfig>,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub fs: FsStorageConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsStorageConfig {
    #[serde(default = "d::root_dir")]
    pub root_dir: PathBuf,
}

impl Default for FsStorageConfig {
    fn default() -> Self {
        FsStorageConfig {
            root_dir: d::root_dir(),
        }
    }
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

/// `[oidc.<name>]`: an identity provider whose JWTs (CI job tokens) are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` a token must carry, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// Where the signing keys are; discovered from `<issuer>/.well-known/openid-configuration`
    /// when absent.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The `aud` a token must carry.
    pub audience: String,
    /// The claim that becomes `identity.username`.
    #[serde(default = "d::username_claim")]
    pub username_claim: String,
    /// PEM roots to trust for the discovery and JWKS endpoints instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "d::oidc_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// How long fetched signing keys are used before they are fetched again.
    #[serde(default = "d::oidc_keys_cache", deserialize_with = "duration")]
    pub keys_cache: Duration,
    /// Least time between two key fetches, however many unknown `kid`s clients send.
    #[serde(default = "d::oidc_keys_refresh_min", deserialize_with = "duration")]
    pub keys_refresh_min: Duration,
    /// Deadline for one discovery or JWKS fetch.
    #[serde(default = "d::upstream_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
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
    /// The password read from a file instead (systemd credentials, Kubernetes secrets); one
    /// trailing newline is dropped. Read at load and at every reload.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The password read from this environment variable instead.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM roots to trust for this upstream instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Deadline to connect and to receive a response head; also the longest pause in a body.
    #[serde(default = "d::upstream_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// A secret given one of three ways: `<key>` in the file, `<key>_file` (a path whose content
/// is the secret, one trailing newline dropped) or `<key>_env` (an environment variable).
pub struct Secret<'a> {
    pub plain: Option<String>,
    pub file: Option<&'a Path>,
    pub env: Option<&'a str>,
}

impl Secret<'_> {
    /// The secret, or None when none of the three is given; an error names `key` when more
    /// than one is, or when the file or variable cannot be read (never the secret itself).
    pub fn resolve(self, key: &str) -> Result<Option<String>, ConfigError> {
        let given = [
            self.plain.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ConfigError(format!(
                "{key}: give one of {key}, {key}_file and {key}_env"
            )));
        }
        if let Some(path) = self.file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("{key}_file: cannot read {}: {e}", path.display()))
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Some(text.to_string()));
        }
        if let Some(var) = self.env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(ConfigError(format!(
                    "{key}_env: environment variable {var:?} is not set (or not UTF-8)"
                ))),
            };
        }
        Ok(self.plain)
    }
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
    pub fn root_dir() -> PathBuf {
        PathBuf::from("./data")
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
    pub fn username_claim() -> String {
        "sub".to_string()
    }
    pub fn oidc_leeway() -> Duration {
        Duration::from_secs(60)
    }
    pub fn oidc_keys_cache() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn oidc_keys_refresh_min() -> Duration {
        Duration::from_secs(10)
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

/// `[server]` keys given on the command line (`--port`, `--bind-address`) or in the
/// environment (`ORIGIN_PORT`, `ORIGIN_BIND_ADDRESS`), applied over the file at every load
/// and reload, so a port change needs no file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub bind_address: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(a) = self.bind_address {
            config.server.bind_address = a;
        }
        if let Some(p) = self.port {
            config.server.port = p;
        }
    }
}

/// Where the configuration came from, for the startup log.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("embedded default"),
        }
    }
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
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets given by file or environment variable into their plain fields.
    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        for (i, repo) in self.repository.iter_mut().enumerate() {
            let Some(m) = &mut repo.mirror else { continue };
            for (j, u) in m.upstream.iter_mut().enumerate() {
                let key = format!("repository[{i}].mirror.upstream[{j}].password");
                let source = Secret {
                    plain: u.password.take(),
                    file: u.password_file.as_deref(),
                    env: u.password_env.as_deref(),
                };
                u.password = source.resolve(&key)?;
            }
        }
        Ok(())
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
        if self.storage.fs.root_dir.as_os_str().is_empty() {
            return bad("storage.fs.root_dir", "must not be empty");
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
        crate::auth::oidc::validate(&self.oidc).map_err(ConfigError)?;
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

    /// Valid but probably not meant: printed by `check-config`, logged at start and reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.repository.is_empty() {
            out.push(
                "no [[repository]] entry: every request is denied (the embedded default allows \
                 everything with namespace = \"\" and policy_default_allow = true)"
                    .to_string(),
            );
        }
        for (i, repo) in self.repository.iter().enumerate() {
            if !repo.policy_default_allow && repo.policies.is_empty() {
                out.push(format!(
                    "repository[{i}] (namespace {:?}) denies every request: \
                     policy_default_allow = false and no policies",
                    repo.namespace
                ));
            }
        }
        out
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
        assert_eq!(c.storage.fs.root_dir, PathBuf::from("./data"));
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

    /// Every key with a documented default may be left out: no `[server]`, no `[storage]`,
    /// `[storage.fs]` without `root_dir`.
    #[test]
    fn documented_defaults_may_be_left_out() {
        let embedded = Config::parse(EMBEDDED_DEFAULT).unwrap();
        for text in [
            "",
            "[storage.fs]\n",
            "[server]\n[storage]\n",
            "[server.tls]\nserver_certificate_bundle = \"a\"\nserver_private_key = \"b\"\n",
        ] {
            let c = Config::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                format!(
                    "{:?}",
                    ServerConfig {
                        tls: None,
                        ..c.server
                    }
                ),
                format!("{:?}", embedded.server),
                "{text:?}"
            );
            assert_eq!(c.storage.fs.root_dir, PathBuf::from("./data"));
        }
    }

    /// A configuration that denies everything by construction is valid, with a warning.
    #[test]
    fn warnings_name_entries_that_deny_everything() {
        assert!(Config::parse(EMBEDDED_DEFAULT)
            .unwrap()
            .warnings()
            .is_empty());
        let none = Config::parse("").unwrap().warnings();
        assert!(none[0].starts_with("no [[repository]] entry"), "{none:?}");
        let closed = Config::parse("[[repository]]\nnamespace = \"team\"\n").unwrap();
        assert!(closed.warnings()[0].starts_with("repository[0]"));
    }

    /// An upstream password may come from a file or an environment variable instead of the
    /// file itself; giving two of them, or a missing file or variable, names the key.
    #[test]
    fn upstream_password_from_file_or_environment() {
        let dir = std::env::temp_dir().join(format!("origin-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        std::env::set_var("ORIGIN_TEST_UPSTREAM_PASSWORD", "from-env");
        let with = |line: &str| {
            format!(
                "[[repository]]\nnamespace = \"hub\"\n[repository.mirror]\n\
                 [[repository.mirror.upstream]]\nurl = \"https://registry.example\"\n\
                 username = \"u\"\n{line}\n"
            )
        };
        let password = |line: &str| {
            Config::parse(&with(line)).map(|c| {
                c.repository[0].mirror.as_ref().unwrap().upstream[0]
                    .password
                    .clone()
            })
        };
        let file_line = format!("password_file = {:?}", file.display().to_string());
        assert_eq!(password(&file_line).unwrap().as_deref(), Some("from-file"));
        assert_eq!(
            password("password_env = \"ORIGIN_TEST_UPSTREAM_PASSWORD\"")
                .unwrap()
                .as_deref(),
            Some("from-env")
        );
        assert_eq!(
            password("password = \"plain\"").unwrap().as_deref(),
            Some("plain")
        );
        let both = password(&format!("password = \"x\"\n{file_line}")).unwrap_err();
        assert!(both.0.contains("give one of"), "{both}");
        let missing = password("password_file = \"/nonexistent/secret\"").unwrap_err();
        assert!(
            missing
                .0
                .starts_with("repository[0].mirror.upstream[0].password_file"),
            "{missing}"
        );
        let unset = password("password_env = \"ORIGIN_TEST_UNSET_VARIABLE\"").unwrap_err();
        assert!(unset.0.contains("is not set"), "{unset}");
        std::fs::remove_dir_all(&dir).unwrap();
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
