//! Live reload: what SIGHUP can change without a restart (identities, OIDC providers, policies, TLS
//! certificate, key and client CA, mirrors, the audit trail), built and validated off the
//! request path, then published to every worker. Workers notice through a generation counter and pick the new set up at
//! their next request; open connections and in-flight uploads are not touched.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{AuthLimits, Authenticator};
use crate::config::{Config, ConfigError, Overrides};
use crate::policy::PolicySet;

/// The reloadable part of the running configuration.
pub struct Live {
    pub policies: PolicySet,
    pub auth: Authenticator,
    /// Basic auth is off when no identity is configured.
    pub has_identities: bool,
    /// `[oidc.*]` providers: tokens as Bearer or as Basic passwords.
    pub oidc: crate::auth::oidc::OidcVerifier,
    pub tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
    /// `immutable_tags` and their exclusions per `[[repository]]` entry.
    pub immutable: crate::registry::immutable::ImmutableTags,
    /// `[event_webhook.*]` and the entries that use them.
    pub webhooks: crate::events::Webhooks,
    /// `[replication.*]` targets and the entries that use them.
    pub replication: crate::replication::Targets,
    /// `retention` rules per `[[repository]]` entry.
    pub retention: crate::policy::retention::RetentionRules,
    /// `[repository.mirror]` tables: the pull-through cache's namespaces and upstreams.
    pub mirrors: crate::mirror::MirrorTable,
    /// `[audit]`: whether the trail is written and where (each record carries it to the
    /// writer thread, so a reload moves the trail at the next record).
    pub audit: Arc<crate::config::AuditConfig>,
    /// `storage.fs.min_free_bytes` and `min_free_ratio`: the free-space guard.
    pub space: crate::service::space::Thresholds,
    /// `[[rate_limit]]` entries and this node's buckets.
    pub rates: crate::limits::RateLimits,
    /// `quota_bytes`, `quota_manifests` and `quota_warn_ratio` per `[[repository]]` entry.
    pub quotas: crate::registry::quota::Quotas,
    /// `[tracing]`: the exporter's settings; None: off (applied by `crate::trace::apply`).
    pub tracing: Option<Arc<crate::trace::Settings>>,
}

impl Live {
    /// Builds and validates everything; any error leaves the caller's current set in place.
    pub fn build(config: &Config) -> Result<Live, ConfigError> {
        crate::auth::oidc::validate(&config.oidc)?;
        crate::events::webhooks::validate(config)?;
        config.audit.validate()?;
        let tls = match &config.server.tls {
            Some(t) => Some((
                crate::tls::server_config(t).map_err(|e| e.to_string())?,
                config.server.tls_handshake_timeout,
            )),
            None => None,
        };
        Ok(Live {
            policies: PolicySet::compile(&config.repository).map_err(|e| e.to_string())?,
            auth: Authenticator::new(&config.identity, AuthLimits::default())?,
            has_identities: !config.identity.is_empty(),
            oidc: crate::auth::oidc::OidcVerifier::new(&config.oidc)?,
            tls,
            immutable: crate::registry::immutable::ImmutableTags::compile(&config.repository)?,
            webhooks: crate::events::Webhooks::compile(config)?,
            replication: crate::replication::Targets::compile(config)?,
            retention: crate::policy::retention::RetentionRules::compile(&config.repository)?,
            mirrors: crate::mirror::MirrorTable::from_config(config)?,
            audit: Arc::new(config.audit.clone()),
            space: crate::service::space::Thresholds::of(config),
            rates: crate::limits::RateLimits::compile(&config.rate_limit)?,
            quotas: crate::registry::quota::Quotas::compile(&config.repository)?,
            tracing: crate::trace::Settings::build(&config.tracing)?.map(Arc::new),
        })
    }
}

/// Checks what the configuration's loader leaves to the features that own each section
/// (policies, TLS files, OIDC providers, immutable tags, webhooks, retention rules, mirrors,
/// the audit trail's file):
/// each compiles its own, as `Live::build` does, without starting anything.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    PolicySet::compile(&config.repository).map_err(|e| e.to_string())?;
    if let Some(tls) = &config.server.tls {
        crate::tls::server_config(tls).map_err(|e| e.to_string())?;
    }
    crate::auth::oidc::validate(&config.oidc)?;
    crate::auth::oidc::OidcVerifier::new(&config.oidc)?;
    crate::registry::immutable::ImmutableTags::compile(&config.repository)?;
    crate::events::webhooks::validate(config)?;
    crate::events::Webhooks::compile(config)?;
    crate::replication::Targets::compile(config)?;
    crate::policy::retention::RetentionRules::compile(&config.repository)?;
    crate::mirror::MirrorTable::from_config(config)?;
    config.audit.validate()?;
    crate::limits::RateLimits::compile(&config.rate_limit)?;
    crate::registry::quota::Quotas::compile(&config.repository)?;
    crate::trace::Settings::build(&config.tracing)?;
    Ok(())
}

impl Live {
    /// What a reload keeps from the running set: the OIDC signing keys of providers whose
    /// configuration did not change, and the rate limits' buckets if the entries did not.
    pub fn carry_over(&mut self, previous: &Live) {
        self.oidc.keep_keys_from(&previous.oidc);
        self.rates.carry_over(&previous.rates);
    }
}

/// The published set, shared by all workers.
///
/// The set and its generation change together, under the lock: a worker that sees a new
/// generation loads the pair, so it can never cache an old set under a new generation (and
/// keep a removed identity working until the next reload). The generation is also kept in an
/// atomic, read without the lock on every request; it is stored after the set is replaced, so
/// a worker that reads it finds the set it names (or a newer one) under the lock.
pub struct LiveCell<T = Live> {
    generation: AtomicU64,
    current: Mutex<(u64, Arc<T>)>,
}

impl<T> LiveCell<T> {
    pub fn new(live: T) -> Self {
        LiveCell {
            generation: AtomicU64::new(0),
            current: Mutex::new((0, Arc::new(live))),
        }
    }

    /// The current set with its generation, read together.
    fn load(&self) -> (u64, Arc<T>) {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (current.0, current.1.clone())
    }

    pub fn publish(&self, live: T) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let generation = current.0 + 1;
        *current = (generation, Arc::new(live));
        self.generation.store(generation, Ordering::Release);
    }
}

/// A worker's view: the shared cell plus a cached copy, refreshed when the generation moves,
/// so the request path takes no lock.
pub struct LocalLive<T = Live> {
    cell: Arc<LiveCell<T>>,
    cached: RefCell<(u64, Arc<T>)>,
}

impl LocalLive {
    /// True when webhooks are configured, without cloning the set (the request path asks
    /// this for every event it could emit).
    pub fn has_webhooks(&self) -> bool {
        self.peek(|live| !live.webhooks.is_empty())
    }
}

impl<T> LocalLive<T> {
    pub fn new(cell: Arc<LiveCell<T>>) -> Self {
        let cached = RefCell::new(cell.load());
        LocalLive { cell, cached }
    }

    /// Reads the current set without cloning it (no reference count touched).
    pub fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let generation = self.cell.generation.load(Ordering::Acquire);
        if self.cached.borrow().0 != generation {
            *self.cached.borrow_mut() = self.cell.load();
        }
        f(&self.cached.borrow().1)
    }

    pub fn get(&self) -> Arc<T> {
        let generation = self.cell.generation.load(Ordering::Acquire);
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = self.cell.load();
        }
        cached.1.clone()
    }
}

/// Settings that only a restart can change, compared between the running and the new file.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let (o, n) = (&old.server, &new.server);
    let checks = [
        ("server.bind_address", o.bind_address != n.bind_address),
        ("server.port", o.port != n.port),
        ("server.workers", o.workers != n.workers),
        ("server.io_driver", o.io_driver != n.io_driver),
        ("server.tls (on/off)", o.tls.is_some() != n.tls.is_some()),
        (
            "storage",
            storage_restart_only(&old.storage) != storage_restart_only(&new.storage),
        ),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
        ("ui", format!("{:?}", old.ui) != format!("{:?}", new.ui)),
        (
            "tracing.queue_spans_max",
            old.tracing.queue_spans_max != new.tracing.queue_spans_max,
        ),
        (
            "server limits and timeouts",
            format!("{o:?}").replace(&format!("{:?}", o.tls), "")
                != format!("{n:?}").replace(&format!("{:?}", n.tls), ""),
        ),
        (
            "uploads, gc, log",
            format!("{:?}{:?}{:?}", old.uploads, old.gc, old.log)
                != format!("{:?}{:?}{:?}", new.uploads, new.gc, new.log),
        ),
    ];
    for (key, changed) in checks {
        if changed {
            keys.push(key.to_string());
        }
    }
    keys
}

/// The storage settings only a restart applies: all but the free-space thresholds.
fn storage_restart_only(storage: &crate::config::StorageConfig) -> String {
    let mut s = storage.clone();
    if let Some(fs) = &mut s.fs {
        fs.min_free_bytes = 0;
        fs.min_free_ratio = 0.0;
    }
    format!("{s:?}")
}

/// What a reload cannot change, for `check-config` to say.
pub const RESTART_ONLY: &str = "server.bind_address, server.port, server.workers, \
server.io_driver, server.tls on/off, the server limits and timeouts, storage, metrics.listen, \
uploads, gc, log, ui (reload applies identities, OIDC providers, policies, TLS files, immutable \
tags, retention rules, event webhooks, [repository.mirror] settings, [audit], \
storage.fs.min_free_bytes and min_free_ratio, [[rate_limit]] and [tracing])";

/// Re-reads `path` and publishes what can change live. Returns false when rejected.
pub fn reload(path: &Path, overrides: &Overrides, running: &Config, cell: &LiveCell) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload rejected: cannot read {}: {e}", path.display());
            return false;
        }
    };
    let new = match Config::parse(&text) {
        Ok(mut c) => {
            overrides.apply(&mut c);
            c
        }
        Err(e) => {
            tracing::error!("reload rejected, running configuration kept: {e}");
            return false;
        }
    };
    let mut live = match Live::build(&new) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("reload rejected, running configuration kept: {e}");
            return false;
        }
    };
    for w in new.warnings() {
        tracing::warn!("reload: {w}");
    }
    live.carry_over(&cell.load().1);
    for key in restart_needed(running, &new) {
        tracing::warn!("reload: {key} changed; it takes effect only after a restart");
    }
    tracing::info!(file = %path.display(), "reload: read");
    crate::trace::apply(live.tracing.clone(), running.server.io_driver);
    cell.publish(live);
    tracing::info!(
        "configuration reloaded: identities, policies, TLS certificates, immutable tags, event webhooks, mirrors, the audit trail, rate limits, free-space thresholds and tracing are now in effect"
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker never caches a set under a generation that is not its own: with publishes
    /// racing reads on other threads, every set a reader sees is the one published with the
    /// generation it cached (here the set is its own generation number). Before the pair was
    /// read under one lock, a publish between the two reads paired an old set with the new
    /// generation, and that worker kept the old set until the next reload.
    #[test]
    fn a_reader_never_pairs_an_old_set_with_a_new_generation() {
        const PUBLISHES: u64 = 200_000;
        let cell = Arc::new(LiveCell::new(0u64));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || {
                    let local = LocalLive::new(cell.clone());
                    loop {
                        let seen = local.get();
                        let cached = local.cached.borrow().0;
                        assert_eq!(*seen, cached, "set {seen} cached as generation {cached}");
                        if *seen == PUBLISHES {
                            return;
                        }
                    }
                })
            })
            .collect();
        for generation in 1..=PUBLISHES {
            cell.publish(generation);
        }
        for r in readers {
            r.join().unwrap();
        }
    }

    /// Mirror settings reload: a change to any `[repository.mirror]` key, or a mirror added
    /// or removed, needs no restart; the other restart-only keys are still named.
    #[test]
    fn mirror_keys_need_no_restart() {
        let base = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
            [[repository]]\nnamespace = \"hub\"\npolicy_default_allow = true\n\
            [repository.mirror]\ntag_freshness = \"5m\"\n\
            [[repository.mirror.upstream]]\nurl = \"https://a.example\"\n";
        let old = Config::parse(base).unwrap();
        assert!(restart_needed(&old, &old).is_empty());
        let changed = base
            .replace("\"5m\"", "\"1m\"")
            .replace("https://a.example", "https://b.example");
        assert!(restart_needed(&old, &Config::parse(&changed).unwrap()).is_empty());
        let added = format!(
            "{base}[[repository]]\nnamespace = \"ghcr\"\n[repository.mirror]\n\
             [[repository.mirror.upstream]]\nurl = \"https://ghcr.example\"\n"
        );
        assert!(restart_needed(&old, &Config::parse(&added).unwrap()).is_empty());
        let port = format!("[server]\nport = 5001\n{base}");
        let keys = restart_needed(&old, &Config::parse(&port).unwrap());
        assert!(keys.iter().any(|k| k == "server.port"), "{keys:?}");
    }
}
