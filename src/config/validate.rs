//! Checks that a parsed configuration makes sense, naming the bad key.

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        let bad = |key: &str, why: &str| Err(ConfigError::new(format!("{key}: {why}")));
        self.tracing.validate()?;
        for (name, r) in &self.replication {
            r.validate(name)?;
            let named = self
                .repository
                .iter()
                .any(|e| e.replications.contains(name));
            let pull = r.direction == super::ReplicationDirection::Pull;
            if !named && !pull {
                return bad(
                    &format!("replication.{name}"),
                    "no [[repository]] entry names it in replications",
                );
            }
            if named && pull {
                return bad(
                    &format!("replication.{name}"),
                    "a pull target copies into this registry on its schedule: \
                     [[repository]] replications names push targets only",
                );
            }
        }
        for (i, e) in self.repository.iter().enumerate() {
            for (j, name) in e.replications.iter().enumerate() {
                if !self.replication.contains_key(name) {
                    return bad(
                        &format!("repository[{i}].replications[{j}]"),
                        &format!("no [replication.{name}] is defined"),
                    );
                }
            }
        }
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
            ("server.manifest_cache_ttl", s.manifest_cache_ttl),
        ] {
            if v.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        // A manifest PUT runs at most query_timeout, plus the storage write it was in (which
        // a deadline never cuts); GC must not take its references for debris before then.
        if self.gc.debris_after < s.query_timeout + super::DEBRIS_MARGIN {
            return bad(
                "gc.debris_after",
                &format!(
                    "must be at least server.query_timeout ({}s) plus {}s",
                    s.query_timeout.as_secs(),
                    super::DEBRIS_MARGIN.as_secs()
                ),
            );
        }
        if s.manifest_bytes_max == 0 || s.manifest_bytes_max > 64 * 1024 * 1024 {
            return bad("server.manifest_bytes_max", "must be 1..=67108864");
        }
        match (&self.storage.fs, &self.storage.s3) {
            (Some(fs), None) if fs.root_dir.as_os_str().is_empty() => {
                return bad("storage.fs.root_dir", "must not be empty");
            }
            (Some(fs), None) if !(0.0..=1.0).contains(&fs.min_free_ratio) => {
                return bad("storage.fs.min_free_ratio", "must be between 0.0 and 1.0");
            }
            (Some(_), None) => {}
            (None, Some(s3)) => s3.validate()?,
            (Some(_), Some(_)) => {
                return bad("storage", "set [storage.fs] or [storage.s3], not both")
            }
            (None, None) => return bad("storage", "needs [storage.fs] or [storage.s3]"),
        }
        if let Some((key, why)) = self.ui.problem() {
            return bad(key, why);
        }
        for (id, ident) in &self.identity {
            // Token identities are `oidc:<provider>:<sub>`: no configured id may look like one.
            if id.starts_with("oidc:") {
                return bad(
                    &format!("identity.{id}"),
                    "ids starting with \"oidc:\" name token identities",
                );
            }
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
}
