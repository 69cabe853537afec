//! Which quota meters a repository: `quota_bytes`, `quota_manifests` and `quota_warn_ratio`
//! of each `[[repository]]` entry, compiled and checked at load and at reload.

use std::sync::Arc;

use crate::config::{namespace_covers as covers, ConfigError, RepositoryConfig};

/// The default `quota_warn_ratio`.
pub const WARN_RATIO_DEFAULT: f64 = 0.8;

/// One namespace's quota, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// `""` for every repository.
    pub namespace: String,
    pub bytes: Option<u64>,
    pub manifests: Option<u64>,
    pub warn_ratio: f64,
}

impl Quota {
    /// The namespace as people read it.
    pub fn label(&self) -> &str {
        match self.namespace.as_str() {
            "" => "(all repositories)",
            ns => ns,
        }
    }
}

struct Entry {
    namespace: String,
    mirror: bool,
    quota: Option<Arc<Quota>>,
}

/// The quotas of every `[[repository]]` entry, compiled at load and at reload.
#[derive(Default)]
pub struct Quotas {
    /// Longest namespace first, so the first entry that covers a name is the innermost.
    entries: Vec<Entry>,
}

impl Quotas {
    /// Compiles and checks the quota keys of every entry; the error names the key.
    pub fn compile(repositories: &[RepositoryConfig]) -> std::result::Result<Quotas, ConfigError> {
        let mut entries = Vec::new();
        for (i, repo) in repositories.iter().enumerate() {
            let namespace = repo.namespace.trim_end_matches('/').to_string();
            let key = |k: &str| format!("repository[{i}].{k}");
            let has_quota = repo.quota_bytes.is_some() || repo.quota_manifests.is_some();
            if let Some(r) = repo.quota_warn_ratio {
                if !(r > 0.0 && r <= 1.0) {
                    return Err(ConfigError::new(format!(
                        "{}: must be greater than 0 and at most 1",
                        key("quota_warn_ratio")
                    )));
                }
                if !has_quota {
                    return Err(ConfigError::new(format!(
                        "{}: set without quota_bytes or quota_manifests",
                        key("quota_warn_ratio")
                    )));
                }
            }
            if has_quota && repo.mirror.is_some() {
                return Err(ConfigError::new(format!(
                    "{}: a mirror namespace has no quota (what it caches is bounded by \
                     evict_after)",
                    key("quota_bytes")
                )));
            }
            if has_quota
                && !namespace.is_empty()
                && crate::oci::RepoName::parse(&namespace).is_err()
            {
                return Err(ConfigError::new(format!(
                    "{}: a quota needs \"\" or a namespace that is a valid repository name",
                    key("namespace")
                )));
            }
            let quota = has_quota.then(|| {
                Arc::new(Quota {
                    namespace: namespace.clone(),
                    bytes: repo.quota_bytes,
                    manifests: repo.quota_manifests,
                    warn_ratio: repo.quota_warn_ratio.unwrap_or(WARN_RATIO_DEFAULT),
                })
            });
            entries.push(Entry {
                namespace,
                mirror: repo.mirror.is_some(),
                quota,
            });
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.namespace.len()));
        Ok(Quotas { entries })
    }

    /// The quota that meters repository `name`: the innermost entry with a quota that covers
    /// it, unless a mirror namespace inside that one covers it first (mirrors are not
    /// metered). None costs nothing: no storage request is made for the write.
    pub fn of(&self, name: &str) -> Option<&Arc<Quota>> {
        for e in &self.entries {
            if !covers(&e.namespace, name) {
                continue;
            }
            if e.mirror {
                return None;
            }
            if let Some(q) = &e.quota {
                return Some(q);
            }
        }
        None
    }

    /// Every configured quota, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Quota>> {
        self.entries.iter().filter_map(|e| e.quota.as_ref())
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(ns: &str, bytes: Option<u64>, mirror: bool) -> RepositoryConfig {
        let mut r = RepositoryConfig {
            namespace: ns.into(),
            quota_bytes: bytes,
            ..Default::default()
        };
        if mirror {
            r.mirror =
                Some(toml::from_str("upstream = [{ url = \"https://example.com\" }]").unwrap());
        }
        r
    }

    #[test]
    fn the_innermost_quota_meters_a_repository_and_mirrors_none() {
        let q = Quotas::compile(&[
            repo("", Some(100), false),
            repo("team", Some(10), false),
            repo("team/open", None, false),
            repo("hub", None, true),
        ])
        .unwrap();
        let ns = |name: &str| q.of(name).map(|q| q.namespace.clone());
        assert_eq!(ns("team/app"), Some("team".into()));
        assert_eq!(ns("team/open/app"), Some("team".into()));
        assert_eq!(ns("teams/app"), Some("".into()));
        assert_eq!(ns("hub/library/alpine"), None);
        assert_eq!(q.all().count(), 2);
        assert!(Quotas::compile(&[repo("", None, false)])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_quota_keys_are_named() {
        let err = |r: RepositoryConfig| Quotas::compile(&[r]).err().unwrap().to_string();
        assert!(err(repo("hub", Some(1), true)).contains("repository[0].quota_bytes"));
        assert!(err(repo("Bad Name", Some(1), false)).contains("repository[0].namespace"));
        let mut r = repo("team", Some(1), false);
        r.quota_warn_ratio = Some(1.5);
        assert!(err(r).contains("quota_warn_ratio"));
        let mut r = repo("team", None, false);
        r.quota_warn_ratio = Some(0.5);
        assert!(err(r).contains("quota_warn_ratio"));
    }
}
