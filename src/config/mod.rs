//! Typed configuration: one TOML file, unknown keys rejected, every limit with a default.
//!
//! Values are loaded and validated once, then passed by value or `Arc` to whoever needs them;
//! nothing reads configuration from globals.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod access;
mod audit;
mod events;
mod limits;
mod replication;
pub mod s3;
mod secret;
mod sections;
mod tracing;
mod validate;
mod values;

pub use access::*;
pub use audit::*;
pub use events::*;
pub use limits::*;
pub use replication::*;
pub use secret::Secret;
pub use sections::*;
pub use tracing::*;
pub use values::duration;
#[cfg(test)]
pub use values::parse_duration;

/// The configuration used when no `-c FILE` is given and `./config.toml` does not exist:
/// a registry on 127.0.0.1:5000 with storage under ./data and anonymous access everywhere.
/// `gc.debris_after` is at least `server.query_timeout` plus this: a manifest PUT's storage
/// write, which its deadline does not cut, finishes within it.
pub const DEBRIS_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

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
    pub ui: UiConfig,
    #[serde(default)]
    pub identity: BTreeMap<String, IdentityConfig>,
    /// OIDC identity providers whose signed JWTs are accepted as credentials.
    #[serde(default)]
    pub oidc: BTreeMap<String, OidcConfig>,
    #[serde(default)]
    pub repository: Vec<RepositoryConfig>,
    /// Where events (pushes, pulls, deletions) are sent.
    #[serde(default)]
    pub event_webhook: BTreeMap<String, WebhookConfig>,
    /// Other registries that get what is pushed here.
    #[serde(default)]
    pub replication: BTreeMap<String, ReplicationConfig>,
    /// The audit trail of writes and denials.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Request rates and pull bandwidth per identity (this node's own).
    #[serde(default)]
    pub rate_limit: Vec<RateLimitConfig>,
    /// Traces exported over OTLP.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// A configuration that cannot work (at load, reload or `check`): what is wrong, naming the
/// key, and the cause a parser or the system gave, kept as the error's source. Each area
/// (auth, policy, webhooks, mirrors, storage) says what is wrong with its own section.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
    cause: Option<crate::error::Cause>,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            cause: None,
        }
    }

    /// `what` cannot work because of `cause` (a parse error, an I/O error).
    pub fn caused(what: impl Into<String>, cause: impl Into<crate::error::Cause>) -> Self {
        ConfigError {
            message: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// The same error, found under `context` (a file, a section).
    pub fn within(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cause is printed too: a start-up or reload message is read as one line.
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError::new(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError::new(message)
    }
}

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
            Source::File(p) => e.within(p.display()),
            Source::Embedded => e,
        })?;
        Ok((config, source))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::new(e.to_string()))?;
        if config.storage.fs.is_none() && config.storage.s3.is_none() {
            config.storage.fs = Some(FsStorageConfig::default());
        }
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secrets given by file or environment variable into their plain fields.
    fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        if let Some(s3) = &mut self.storage.s3 {
            let source = Secret {
                plain: s3.secret_access_key.take(),
                file: s3.secret_access_key_file.as_deref(),
                env: s3.secret_access_key_env.as_deref(),
            };
            s3.secret_access_key = source.resolve("storage.s3.secret_access_key")?;
        }
        let ui = &mut self.ui;
        let source = Secret {
            plain: ui.session_secret.take(),
            file: ui.session_secret_file.as_deref(),
            env: ui.session_secret_env.as_deref(),
        };
        ui.session_secret = source.resolve("ui.session_secret")?;
        for (name, id) in self.identity.iter_mut() {
            let source = Secret {
                plain: Some(std::mem::take(&mut id.password)).filter(|p| !p.is_empty()),
                file: id.password_file.as_deref(),
                env: id.password_env.as_deref(),
            };
            id.password = source
                .resolve(&format!("identity.{name}.password"))?
                .unwrap_or_default();
        }
        self.tracing.resolve_secrets()?;
        for (name, w) in self.event_webhook.iter_mut() {
            let source = Secret {
                plain: w.token.take(),
                file: w.token_file.as_deref(),
                env: w.token_env.as_deref(),
            };
            w.token = source.resolve(&format!("event_webhook.{name}.token"))?;
        }
        for (name, r) in self.replication.iter_mut() {
            r.resolve_secrets(name)?;
        }
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
        .map_err(|e| ConfigError::caused(format!("cannot read {}", path.display()), e))
}

#[cfg(test)]
mod tests;
