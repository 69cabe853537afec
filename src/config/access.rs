//! Who may do what: `[identity.*]`, `[oidc.*]`, `[[repository]]` with its policies and its
//! pull-through cache (`[repository.mirror]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{d, duration, opt_duration};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub username: String,
    /// An argon2 PHC string, as printed by `origin hash-password`.
    #[serde(default)]
    pub password: String,
    /// The PHC string read from a file instead (a Kubernetes secret, systemd credentials).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The PHC string read from this environment variable instead.
    #[serde(default)]
    pub password_env: Option<String>,
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

#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Tags of this namespace, once pushed, always name the same manifest: a push of another
    /// manifest to them, and their deletion, are refused with 409.
    #[serde(default)]
    pub immutable_tags: bool,
    /// Regular expressions matched against the whole tag: matching tags stay mutable.
    #[serde(default)]
    pub immutable_tags_exclusions: Vec<String>,
    /// CEL expressions saying which manifests to keep; a manifest no rule keeps is deleted
    /// by the retention pass. Absent or empty: everything is kept.
    #[serde(default)]
    pub retention: Vec<String>,
    /// The `[event_webhook.<name>]`s that get this namespace's events.
    #[serde(default)]
    pub event_webhooks: Vec<String>,
    /// The `[replication.<name>]` targets that get this namespace's pushes (and deletes).
    #[serde(default)]
    pub replications: Vec<String>,
    /// Bytes the namespace may hold: the distinct blobs and manifests of its repositories,
    /// each counted once (`registry/quota/`). None: no byte quota.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Distinct manifests the namespace may hold. None: no count quota.
    #[serde(default)]
    pub quota_manifests: Option<u64>,
    /// Share of a quota past which a `quota.warning` event is sent, once per crossing
    /// (0.8 when absent).
    #[serde(default)]
    pub quota_warn_ratio: Option<f64>,
}

/// Whether a `[[repository]]` namespace (without a trailing `/`) covers a repository name:
/// `""` covers every name, otherwise the name itself and the names below it on a `/`
/// boundary (`team` covers `team` and `team/app`, not `teammate`).
pub fn namespace_covers(namespace: &str, repository: &str) -> bool {
    namespace.is_empty()
        || repository == namespace
        || (repository.starts_with(namespace)
            && repository.as_bytes().get(namespace.len()) == Some(&b'/'))
}

/// Which of a set of named things (webhooks, replication targets) each `[[repository]]`
/// entry uses, by index into the caller's list, longest namespace first: the first entry
/// that covers a repository is the one that applies to it.
#[derive(Debug, Default)]
pub struct NamespaceTable {
    entries: Vec<(String, Vec<usize>)>,
}

impl NamespaceTable {
    /// `uses` gives an entry's list of names; a name not in `names` is left out (validation
    /// reports it).
    pub fn build(
        repositories: &[RepositoryConfig],
        names: &[String],
        uses: impl Fn(&RepositoryConfig) -> &[String],
    ) -> NamespaceTable {
        let mut entries: Vec<(String, Vec<usize>)> = repositories
            .iter()
            .map(|r| {
                let used = uses(r)
                    .iter()
                    .filter_map(|n| names.iter().position(|x| x == n))
                    .collect();
                (r.namespace.trim_end_matches('/').to_string(), used)
            })
            .collect();
        entries.sort_by_key(|(ns, _)| std::cmp::Reverse(ns.len()));
        NamespaceTable { entries }
    }

    /// The indexes the entry `repository` falls under uses (none without an entry).
    pub fn lookup(&self, repository: &str) -> &[usize] {
        self.entries
            .iter()
            .find(|(ns, _)| namespace_covers(ns, repository))
            .map_or(&[], |(_, used)| used.as_slice())
    }
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

#[cfg(test)]
mod namespace_tests {
    use super::{namespace_covers, NamespaceTable};

    #[test]
    fn a_namespace_covers_itself_and_what_is_below_it_on_a_slash() {
        assert!(namespace_covers("", "anything/at/all"));
        assert!(namespace_covers("team", "team"));
        assert!(namespace_covers("team", "team/app"));
        assert!(namespace_covers("team/app", "team/app/api"));
        assert!(!namespace_covers("team", "teammate"));
        assert!(!namespace_covers("team", "tea"));
        assert!(!namespace_covers("team/app", "team"));
    }

    /// The longest namespace that covers a repository decides; names not in the list are
    /// left out; a repository no entry covers uses nothing.
    #[test]
    fn the_longest_covering_entry_applies() {
        let config: crate::config::Config = toml::from_str(
            "[[repository]]\nnamespace = \"team\"\nevent_webhooks = [\"a\", \"gone\"]\n\
             [[repository]]\nnamespace = \"team/app/\"\nevent_webhooks = [\"b\"]\n\
             [[repository]]\nnamespace = \"solo\"\n",
        )
        .unwrap();
        let names = ["a".to_string(), "b".to_string()];
        let table = NamespaceTable::build(&config.repository, &names, |r| &r.event_webhooks);
        assert_eq!(table.lookup("team/other"), &[0]);
        assert_eq!(table.lookup("team/app/api"), &[1]);
        assert_eq!(table.lookup("solo/x"), &[] as &[usize]);
        assert_eq!(table.lookup("elsewhere"), &[] as &[usize]);
    }
}
