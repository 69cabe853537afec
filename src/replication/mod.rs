//! Replication: other registries kept in step with what is pushed here.
//!
//! - `[replication.<name>]` compiles into a [`Target`] (this file), rebuilt on reload with
//!   the rest of the live set; `[[repository]] replications = [...]` says which namespaces
//!   go where.
//! - `remote.rs` talks to a target (the project's HTTP client and the pull-through cache's
//!   authentication, Docker token challenges included); `copy.rs` copies a manifest with
//!   everything it names (index children, blobs, referrers) or replays a deletion;
//!   `resume.rs` records how far a blob's upload got, so a later attempt continues it;
//!   `limit.rs` paces blob bodies under a target's `max_bytes_per_second`.
//! - `job.rs` and `queue.rs` keep the work in storage: a job is written before an `async`
//!   push is acknowledged, claimed by one node with a conditional write and a lease, retried
//!   with backoff and jitter, and after `max_retries` kept as failed. `worker.rs` runs the
//!   jobs on a thread of its own; `status.rs` summarises the queue for operators.
//! - `lease.rs`: a record one node at a time holds (claim, renew, release), which the pull
//!   runs and the reconcile passes are scheduled by.
//! - `reconcile.rs` compares a target with this registry (tags and digests) once per
//!   `reconcile_interval` across every node, and queues the jobs that repair the drift.
//! - Nothing here knows the API: the service layer (`service::replication`) calls
//!   [`Targets::select`] and the queue after each push and delete.

pub mod copy;
pub mod job;
pub mod lease;
pub mod limit;
pub mod metrics;
pub mod pull;
pub mod queue;
pub mod reconcile;
pub mod remote;
pub mod resume;
pub mod status;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use crate::config::{Config, ConfigError, ReplicationDirection, ReplicationEvent, ReplicationMode};

/// Targets one process may define.
pub const TARGETS_MAX: usize = 64;
/// Filters (repository or tag) per target.
const FILTERS_MAX: usize = 64;

/// One target registry, ready to send to.
pub struct Target {
    pub name: String,
    pub remote: remote::Remote,
    repository_filter: Vec<Regex>,
    tag_filter: Vec<Regex>,
    /// Prepended (with a `/`) to repository names at the target.
    prefix: Option<String>,
    pub push: bool,
    pub delete: bool,
    pub mode: ReplicationMode,
    pub concurrency: usize,
    pub max_retries: u32,
    pub backoff_max: Duration,
    /// Between two reconcile passes; zero: none.
    pub reconcile_interval: Duration,
}

impl Target {
    /// Whether a push under `tag` (None: by digest) is replicated here.
    pub fn wants_tag(&self, tag: Option<&str>) -> bool {
        match tag {
            None => true,
            Some(t) => self.tag_filter.is_empty() || self.tag_filter.iter().any(|r| r.is_match(t)),
        }
    }

    /// The repository's name at the target.
    pub fn target_name(&self, repository: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{repository}"),
            None => repository.to_string(),
        }
    }
}

/// Every target and the `[[repository]]` entries that use them.
#[derive(Default)]
pub struct Targets {
    targets: Vec<Arc<Target>>,
    /// Longest namespace first: the first match is the entry that applies.
    entries: crate::config::NamespaceTable,
    /// `direction = "pull"` targets (never in `targets`: nothing is pushed to them).
    pulls: Vec<Arc<pull::Source>>,
}

/// Checks what needs no I/O: URLs and filters, the limits on counts.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.replication.len() > TARGETS_MAX {
        return Err(ConfigError::new(format!(
            "replication: at most {TARGETS_MAX} targets"
        )));
    }
    for (name, r) in &config.replication {
        let key = |k: &str| format!("replication.{name}.{k}");
        crate::http::client::UpstreamUrl::parse(&r.url)
            .map_err(|e| ConfigError::caused(key("url"), e))?;
        for (what, list) in [
            ("repository_filter", &r.repository_filter),
            ("tag_filter", &r.tag_filter),
        ] {
            if list.len() > FILTERS_MAX {
                return Err(ConfigError::new(format!(
                    "{}: at most {FILTERS_MAX}",
                    key(what)
                )));
            }
            for (i, f) in list.iter().enumerate() {
                crate::events::webhooks::filter(f)
                    .map_err(|e| ConfigError::new(format!("{}[{i}]: {e}", key(what))))?;
            }
        }
    }
    Ok(())
}

impl Targets {
    /// Builds every target (TLS roots included); the error names the key.
    pub fn compile(config: &Config) -> Result<Targets, ConfigError> {
        validate(config)?;
        let mut targets = Vec::new();
        let mut names = Vec::new();
        let mut pulls = Vec::new();
        for (name, r) in &config.replication {
            if r.direction == ReplicationDirection::Pull {
                pulls.push(Arc::new(pull::Source::compile(name, r)?));
                continue;
            }
            let filters = |list: &[String]| -> Result<Vec<Regex>, ConfigError> {
                list.iter()
                    .map(|f| crate::events::webhooks::filter(f))
                    .collect()
            };
            let what = format!("replication.{name}.ca_bundle");
            let tls = crate::tls::client_config(&what, r.ca_bundle.as_deref()).map_err(|e| e.0)?;
            let remote = remote::Remote::new(
                &r.url,
                tls,
                r.timeout,
                &r.username,
                &r.password,
                &r.token,
                r.max_bytes_per_second,
            )
            .map_err(|e| ConfigError::caused(format!("replication.{name}.url"), e))?;
            targets.push(Arc::new(Target {
                name: name.clone(),
                remote,
                repository_filter: filters(&r.repository_filter)?,
                tag_filter: filters(&r.tag_filter)?,
                prefix: r
                    .target_prefix
                    .as_deref()
                    .map(|p| p.trim_matches('/').to_string()),
                push: r.events.contains(&ReplicationEvent::Push),
                delete: r.events.contains(&ReplicationEvent::Delete),
                mode: r.mode,
                concurrency: r.concurrency,
                max_retries: r.max_retries,
                backoff_max: r.retry_backoff_max,
                reconcile_interval: r.reconcile_interval,
            }));
            names.push(name.clone());
        }
        let entries =
            crate::config::NamespaceTable::build(&config.repository, &names, |r| &r.replications);
        Ok(Targets {
            targets,
            entries,
            pulls,
        })
    }

    /// True when no target is configured: callers skip everything else.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The pull targets.
    pub fn pulls(&self) -> &[Arc<pull::Source>] {
        &self.pulls
    }

    pub fn all(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// Whether `repository` is replicated to the target named `name`.
    pub fn covers(&self, name: &str, repository: &str) -> bool {
        self.select(repository).iter().any(|t| t.name == name)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The targets of the entry `repository` falls under whose repository filter it passes.
    pub fn select(&self, repository: &str) -> Vec<Arc<Target>> {
        self.entries
            .lookup(repository)
            .iter()
            .filter_map(|i| self.targets.get(*i))
            .filter(|t| {
                t.repository_filter.is_empty()
                    || t.repository_filter.iter().any(|r| r.is_match(repository))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
