//! `[replication.<name>]`: another registry kept in step with what is pushed here.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, opt_duration};
use super::{ConfigError, Secret};

/// When a client's manifest PUT is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// After the copy is recorded as a job in storage; a worker sends it.
    Async,
    /// After the target has the manifest and everything it names; a target failure fails
    /// the push.
    Sync,
}

/// What is replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationEvent {
    /// Manifests, tags, their blobs and referrers.
    Push,
    /// Deletions of manifests and tags (opt-in).
    Delete,
}

/// Which way a target copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationDirection {
    /// What is pushed here is sent to `url`.
    #[default]
    Push,
    /// Repositories at `url` are copied here every `schedule`.
    Pull,
}

fn default_events() -> Vec<ReplicationEvent> {
    vec![ReplicationEvent::Push]
}
fn default_mode() -> ReplicationMode {
    ReplicationMode::Async
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retries() -> u32 {
    10
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_reconcile_interval() -> Duration {
    RECONCILE_INTERVAL_DEFAULT
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The target registry: `https://host` or `http://host:port`.
    pub url: String,
    /// Credentials for Basic auth, or for fetching Bearer tokens from the target's token
    /// service (the Docker token flow of the pull-through cache).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// A fixed Bearer token sent with every request (instead of username and password).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// PEM roots to trust for the target instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// Regular expressions matched against the whole repository name; empty: every one.
    #[serde(default)]
    pub repository_filter: Vec<String>,
    /// Regular expressions matched against the whole tag; empty: every tag. Pushes by
    /// digest (index children, referrers) are not filtered by tag.
    #[serde(default)]
    pub tag_filter: Vec<String>,
    /// Prepended to repository names at the target (`mirror` sends `team/app` to
    /// `mirror/team/app`).
    #[serde(default)]
    pub target_prefix: Option<String>,
    /// `push`, and `delete` when deletions are to be replicated too.
    #[serde(default = "default_events")]
    pub events: Vec<ReplicationEvent>,
    #[serde(default = "default_mode")]
    pub mode: ReplicationMode,
    /// Jobs of this target run at once on each node.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline to connect and to receive a response head; also the longest pause in a body.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts of a job after the first before it is marked failed.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Longest wait between two attempts (the backoff doubles up to it, with jitter).
    #[serde(default = "default_backoff_max", deserialize_with = "duration")]
    pub retry_backoff_max: Duration,
    /// `push` (the default) or `pull` (see `replication::pull`).
    #[serde(default)]
    pub direction: ReplicationDirection,
    /// A pull target's interval between runs (once per interval across every node on the
    /// storage); required for `pull`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub schedule: Option<Duration>,
    /// A pull target's upstream repositories (names at `url`); empty: the upstream's
    /// `_catalog`, filtered by `repository_filter`.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// How often the target is compared with this registry (tags and digests) and its drift
    /// repaired, once per interval across every node on the storage; `0` turns it off.
    #[serde(default = "default_reconcile_interval", deserialize_with = "duration")]
    pub reconcile_interval: Duration,
    /// Blob bytes per second sent to this target by this node, all its copies together
    /// (each node has its own budget); unset: no limit.
    #[serde(default)]
    pub max_bytes_per_second: Option<u64>,
}

/// On unless turned off: a target that was down, wiped or changed by hand converges within
/// an hour with nobody acting, for one tags-list page per repository and one HEAD per tag.
pub const RECONCILE_INTERVAL_DEFAULT: Duration = Duration::from_secs(3600);
/// Shortest reconcile interval (other than `0`, off): a pass lists every covered repository.
pub const RECONCILE_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// Jobs of one target at once per node: each holds a chunk of a blob in memory.
pub const REPLICATION_CONCURRENCY_MAX: usize = 64;
/// Shortest `schedule` of a pull target: each run lists and HEADs every tag upstream.
pub const PULL_SCHEDULE_MIN: Duration = Duration::from_secs(1);
/// Repositories a pull target may name in `repositories`.
pub const PULL_REPOSITORIES_LISTED_MAX: usize = 1000;

/// Retries of a job: with the backoff capped, more would only delay the visible failure.
pub const REPLICATION_RETRIES_MAX: u32 = 100;
/// Lowest `max_bytes_per_second`: below it a paced chunk (a tenth of a second's worth) is
/// under a packet, and a layer of any size takes hours.
pub const REPLICATION_BYTES_PER_SECOND_MIN: u64 = 16 * 1024;

impl ReplicationConfig {
    /// Reads the password and token given by file or environment into their plain fields.
    pub(super) fn resolve_secrets(&mut self, name: &str) -> Result<(), ConfigError> {
        let source = Secret {
            plain: self.password.take(),
            file: self.password_file.as_deref(),
            env: self.password_env.as_deref(),
        };
        self.password = source.resolve(&format!("replication.{name}.password"))?;
        let source = Secret {
            plain: self.token.take(),
            file: self.token_file.as_deref(),
            env: self.token_env.as_deref(),
        };
        self.token = source.resolve(&format!("replication.{name}.token"))?;
        Ok(())
    }

    /// Checks what needs no I/O beyond the parse, naming the key.
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("replication.{name}.{k}");
        let bad = |k: &str, why: &str| Err(ConfigError::new(format!("{}: {why}", key(k))));
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(ConfigError::new(format!(
                "replication.{name}: a target's name is 1 to 64 of a-z, A-Z, 0-9, - and _"
            )));
        }
        if self.username.is_some() != self.password.is_some() {
            return bad("username", "username and password go together");
        }
        if self.token.is_some() && self.username.is_some() {
            return bad("token", "give a token or a username and password, not both");
        }
        if self.events.is_empty() {
            return bad("events", "list at least one of \"push\" and \"delete\"");
        }
        if !(1..=REPLICATION_CONCURRENCY_MAX).contains(&self.concurrency) {
            return bad(
                "concurrency",
                &format!("must be 1..={REPLICATION_CONCURRENCY_MAX}"),
            );
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be greater than zero");
        }
        if self.retry_backoff_max.is_zero() {
            return bad("retry_backoff_max", "must be greater than zero");
        }
        if !self.reconcile_interval.is_zero() && self.reconcile_interval < RECONCILE_INTERVAL_MIN {
            return bad("reconcile_interval", "must be 0 (off) or at least 1s");
        }
        if self.max_retries > REPLICATION_RETRIES_MAX {
            return bad("max_retries", &format!("at most {REPLICATION_RETRIES_MAX}"));
        }
        self.validate_direction(name)?;
        if self
            .max_bytes_per_second
            .is_some_and(|b| b < REPLICATION_BYTES_PER_SECOND_MIN)
        {
            return bad(
                "max_bytes_per_second",
                &format!("at least {REPLICATION_BYTES_PER_SECOND_MIN} (16 KiB/s)"),
            );
        }
        if let Some(p) = &self.target_prefix {
            let p = p.trim_matches('/');
            if p.is_empty() || crate::oci::RepoName::parse(p).is_err() {
                return bad(
                    "target_prefix",
                    "must be a valid repository name (e.g. \"mirror\" or \"dr/site-a\")",
                );
            }
        }
        Ok(())
    }

    /// The keys of one direction are refused on a target of the other: a pull target's
    /// `schedule` and `repositories`; a push target's `mode = "sync"` and `delete` events
    /// (the defaults, `async` and `push`, mean nothing on a pull target and are accepted).
    fn validate_direction(&self, name: &str) -> Result<(), ConfigError> {
        let bad =
            |k: &str, why: &str| Err(ConfigError::new(format!("replication.{name}.{k}: {why}")));
        match self.direction {
            ReplicationDirection::Push => {
                if self.schedule.is_some() {
                    return bad("schedule", "only for direction = \"pull\"");
                }
                if !self.repositories.is_empty() {
                    return bad("repositories", "only for direction = \"pull\"");
                }
            }
            ReplicationDirection::Pull => {
                match self.schedule {
                    None => {
                        return bad(
                            "schedule",
                            "required for direction = \"pull\" (e.g. \"15m\")",
                        )
                    }
                    Some(s) if s < PULL_SCHEDULE_MIN => return bad("schedule", "at least 1s"),
                    Some(_) => {}
                }
                if self.mode == ReplicationMode::Sync {
                    return bad(
                        "mode",
                        "a pull target has no mode (it runs on its schedule)",
                    );
                }
                if self.events.contains(&ReplicationEvent::Delete) {
                    return bad(
                        "events",
                        "a pull target does not apply deletions made upstream",
                    );
                }
                if self.repositories.len() > PULL_REPOSITORIES_LISTED_MAX {
                    return bad(
                        "repositories",
                        &format!("at most {PULL_REPOSITORIES_LISTED_MAX}"),
                    );
                }
                for (i, r) in self.repositories.iter().enumerate() {
                    if crate::oci::RepoName::parse(r).is_err() {
                        return bad(&format!("repositories[{i}]"), "not a repository name");
                    }
                }
            }
        }
        Ok(())
    }
}
