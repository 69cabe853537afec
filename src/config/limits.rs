//! `[[rate_limit]]`: request rates per action group and pull bandwidth, per identity, on
//! this node. Compiled and checked by `crate::limits` (at load, reload and check-config).

use serde::Deserialize;

/// One `[[rate_limit]]` entry: whom it covers, and its limits. An entry covers a request
/// when every selector it sets matches (none set: every request).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Repositories covered: this namespace and below, on `/` boundaries ("": all; the
    /// catalog counts as "").
    #[serde(default)]
    pub namespace: String,
    /// Only callers with one of these usernames (Basic identities, or an OIDC token's
    /// username claim).
    #[serde(default)]
    pub usernames: Vec<String>,
    /// Only callers whose client certificate names one of these organizations.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Only anonymous callers (each peer address then has its own limits).
    #[serde(default)]
    pub anonymous: bool,
    /// Only requests for which this CEL expression is true (`identity.*`, `request.*`,
    /// as in policies: e.g. an OIDC claim).
    #[serde(default, rename = "match")]
    pub expression: Option<String>,
    /// Pulls: get-blob, get-manifest, get-referrers (GET and HEAD).
    #[serde(default)]
    pub pull: Option<RateConfig>,
    /// Pushes and deletes: put-blob (every upload request), put-manifest, delete-blob,
    /// delete-manifest.
    #[serde(default)]
    pub push: Option<RateConfig>,
    /// Listings: list-catalog, list-tags.
    #[serde(default)]
    pub list: Option<RateConfig>,
    /// Blob bytes sent per second to each identity, over all its pulls at once: the
    /// stream is slowed, never refused.
    #[serde(default)]
    pub pull_bytes_per_second: Option<u64>,
}

/// A token bucket: `requests_per_second` sustained, `burst` at once after a pause.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub requests_per_second: f64,
    /// Requests admitted at once from a full bucket; default: one second's worth (at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
}
