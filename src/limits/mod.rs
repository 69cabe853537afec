//! `[[rate_limit]]`: requests per second per action group (pull, push, list) and pull
//! bandwidth, per caller, on this node.
//!
//! # Semantics
//! - An entry covers a request when every selector it sets matches: `namespace` (the
//!   repository is the namespace or below it, on `/` boundaries; "" covers all, and is the
//!   only one that covers the catalog), `usernames`, `organizations` (of the client
//!   certificate), `anonymous` (unauthenticated callers only), `match` (a CEL expression over
//!   `identity.*` and `request.*`, as in policies; one that fails at run time counts as
//!   matching, so a broken expression limits rather than frees).
//! - For each action group, the first entry in file order that covers the request *and sets
//!   a limit for that group* applies; likewise for `pull_bytes_per_second`. So a specific
//!   entry placed before a general one overrides it group by group.
//! - Limits are per caller: a verified identity (its id, or its certificate's subject), else
//!   the peer address. Each (entry, group, caller) has its own token bucket.
//! - `get-api-version` (`/v2/`) is in no group and never limited.
//! - Over a limit: 429 TOOMANYREQUESTS with Retry-After (whole seconds, at least 1). A
//!   refused request takes no token.
//! - Bandwidth: the blob bodies of an identity's pulls share one byte bucket; the body is sent
//!   in chunks of a tenth of a second's worth, each after the wait the bucket asks for.
//! - Per node: N nodes behind a load balancer admit up to N times the rates.
//! - Buckets live in a bounded map (`buckets::KEYS_MAX`); a reload that leaves the entries
//!   unchanged keeps them, one that changes them starts afresh.

mod buckets;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Identity;
use crate::config::{ConfigError, RateConfig, RateLimitConfig};
use crate::policy::condition::Condition;
use crate::policy::{AccessRequest, Action};

/// Entries accepted: each one is matched, in order, on every request of its groups.
pub const RATE_LIMIT_ENTRIES_MAX: usize = 256;

/// Highest rate and burst accepted: beyond them a limit limits nothing a node can serve.
pub const REQUESTS_PER_SECOND_MAX: f64 = 1_000_000.0;
/// Lowest rate accepted: one request per 1,000 s (below it, use a policy to forbid).
pub const REQUESTS_PER_SECOND_MIN: f64 = 0.001;
pub const BURST_MAX: u32 = 1_000_000;

/// Lowest `pull_bytes_per_second`: below it a chunk per tenth of a second is under a
/// packet, and a blob of any size takes hours.
pub const PULL_BYTES_PER_SECOND_MIN: u64 = 1024;

/// A paced body is sent in chunks of this share of a second's worth of bytes...
const PACE_CHUNKS_PER_SECOND: u64 = 10;
/// ...within these bounds (a small chunk costs a wait per packet, a large one bursts).
const PACE_CHUNK_BYTES_MIN: u64 = 1024;
const PACE_CHUNK_BYTES_MAX: u64 = 1024 * 1024;

/// The action groups limited by `pull`, `push` and `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Pull,
    Push,
    List,
}

impl Group {
    pub fn of(action: Action) -> Option<Group> {
        match action {
            Action::GetBlob | Action::GetManifest | Action::GetReferrers => Some(Group::Pull),
            Action::PutBlob | Action::PutManifest | Action::DeleteBlob | Action::DeleteManifest => {
                Some(Group::Push)
            }
            Action::ListCatalog | Action::ListTags => Some(Group::List),
            Action::GetApiVersion => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Pull => "pull",
            Group::Push => "push",
            Group::List => "list",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

#[derive(Debug)]
struct Entry {
    namespace: String,
    usernames: Vec<String>,
    organizations: Vec<String>,
    anonymous: bool,
    condition: Option<Condition>,
    /// By `Group as usize`.
    rates: [Option<Rate>; 3],
    pull_bytes_per_second: Option<u64>,
}

/// A request refused for its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub group: Group,
    /// The `[[rate_limit]]` entry, by its position in the file.
    pub entry: usize,
    /// When the caller may try again (whole seconds, at least one).
    pub retry_after: Duration,
}

/// The compiled `[[rate_limit]]` entries and this node's buckets (carried over a reload
/// that leaves the entries unchanged).
pub struct RateLimits {
    entries: Vec<Entry>,
    configs: Vec<RateLimitConfig>,
    buckets: Arc<buckets::Buckets>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn rate(key: &str, r: &RateConfig) -> Result<Rate, ConfigError> {
    let per_second = r.requests_per_second;
    if !(REQUESTS_PER_SECOND_MIN..=REQUESTS_PER_SECOND_MAX).contains(&per_second) {
        return Err(ConfigError::new(format!(
            "{key}.requests_per_second: must be {REQUESTS_PER_SECOND_MIN} to \
             {REQUESTS_PER_SECOND_MAX} (to forbid an action, use a policy)"
        )));
    }
    let burst = match r.burst {
        Some(b) if b == 0 || b > BURST_MAX => {
            return Err(ConfigError::new(format!(
                "{key}.burst: must be 1..={BURST_MAX}"
            )))
        }
        Some(b) => f64::from(b),
        None => per_second.ceil().max(1.0),
    };
    Ok(Rate { per_second, burst })
}

fn entry(i: usize, c: &RateLimitConfig) -> Result<Entry, ConfigError> {
    let key = |k: &str| format!("rate_limit[{i}].{k}");
    if c.anonymous && (!c.usernames.is_empty() || !c.organizations.is_empty()) {
        return Err(ConfigError::new(format!(
            "{}: anonymous callers have no username or organization",
            key("anonymous")
        )));
    }
    let mut rates = [None; 3];
    for (group, r) in [
        (Group::Pull, &c.pull),
        (Group::Push, &c.push),
        (Group::List, &c.list),
    ] {
        if let Some(r) = r {
            rates[group as usize] = Some(rate(&key(group.as_str()), r)?);
        }
    }
    if let Some(b) = c.pull_bytes_per_second {
        if b < PULL_BYTES_PER_SECOND_MIN {
            return Err(ConfigError::new(format!(
                "{}: must be at least {PULL_BYTES_PER_SECOND_MIN}",
                key("pull_bytes_per_second")
            )));
        }
    }
    if rates.iter().all(Option::is_none) && c.pull_bytes_per_second.is_none() {
        return Err(ConfigError::new(format!(
            "rate_limit[{i}]: sets no limit (pull, push, list or pull_bytes_per_second)"
        )));
    }
    let condition = match &c.expression {
        Some(source) => Some(Condition::compile(source).map_err(|e| e.within(key("match")))?),
        None => None,
    };
    Ok(Entry {
        namespace: c.namespace.trim_end_matches('/').to_string(),
        usernames: c.usernames.clone(),
        organizations: c.organizations.clone(),
        anonymous: c.anonymous,
        condition,
        rates,
        pull_bytes_per_second: c.pull_bytes_per_second,
    })
}

impl Entry {
    fn covers(&self, identity: &Identity, req: &AccessRequest<'_>) -> bool {
        crate::config::namespace_covers(&self.namespace, req.namespace)
            && (!self.anonymous || !identity.is_authenticated())
            && (self.usernames.is_empty()
                || identity
                    .username
                    .as_ref()
                    .is_some_and(|u| self.usernames.contains(u)))
            && (self.organizations.is_empty()
                || identity
                    .organizations
                    .iter()
                    .any(|o| self.organizations.contains(o)))
            && self
                .condition
                .as_ref()
                .is_none_or(|c| c.eval(identity, req).unwrap_or(true))
    }
}

/// Who a bucket belongs to: a verified identity, else the peer address.
#[derive(Hash)]
enum Caller<'a> {
    Id(&'a str),
    Certificate(&'a [String], &'a [String]),
    Peer(IpAddr),
}

fn caller<'a>(identity: &'a Identity, peer: IpAddr) -> Caller<'a> {
    match &identity.id {
        Some(id) => Caller::Id(id),
        None if identity.is_authenticated() => {
            Caller::Certificate(&identity.common_names, &identity.organizations)
        }
        None => Caller::Peer(peer),
    }
}

impl RateLimits {
    pub fn compile(configs: &[RateLimitConfig]) -> Result<RateLimits, ConfigError> {
        if configs.len() > RATE_LIMIT_ENTRIES_MAX {
            return Err(ConfigError::new(format!(
                "rate_limit: {} entries, at most {RATE_LIMIT_ENTRIES_MAX}",
                configs.len()
            )));
        }
        let entries = configs
            .iter()
            .enumerate()
            .map(|(i, c)| entry(i, c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RateLimits {
            entries,
            configs: configs.to_vec(),
            buckets: Arc::default(),
        })
    }

    /// No entry: the request path does nothing more than ask this.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps the buckets of `previous` when the entries are the same (a reload of another
    /// section must not hand every caller a fresh burst).
    pub fn carry_over(&mut self, previous: &RateLimits) {
        if self.configs == previous.configs {
            self.buckets = previous.buckets.clone();
        }
    }

    /// Admits one request of `identity` from `peer`, or refuses it for its rate. An admitted
    /// blob pull under `pull_bytes_per_second` comes with the pacer of its body.
    pub fn admit(
        &self,
        identity: &Identity,
        peer: IpAddr,
        req: &AccessRequest<'_>,
    ) -> Result<Option<Pacer>, Refusal> {
        let Some(group) = Group::of(req.action) else {
            return Ok(None);
        };
        let mut rate_pending = true;
        let mut bytes_pending = req.action == Action::GetBlob;
        let mut pacer = None;
        let who = caller(identity, peer);
        for (index, e) in self.entries.iter().enumerate() {
            let rate = e.rates[group as usize].filter(|_| rate_pending);
            let bytes = e.pull_bytes_per_second.filter(|_| bytes_pending);
            if rate.is_none() && bytes.is_none() {
                continue;
            }
            if !e.covers(identity, req) {
                continue;
            }
            if let Some(r) = rate {
                rate_pending = false;
                let key = self.buckets.key((index, group, &who));
                if let Err(wait) = self.buckets.take(key, r.per_second, r.burst) {
                    return Err(Refusal {
                        group,
                        entry: index,
                        retry_after: Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64),
                    });
                }
            }
            if let Some(per_second) = bytes {
                bytes_pending = false;
                let chunk = (per_second / PACE_CHUNKS_PER_SECOND)
                    .clamp(PACE_CHUNK_BYTES_MIN, PACE_CHUNK_BYTES_MAX);
                pacer = Some(Pacer {
                    buckets: self.buckets.clone(),
                    key: self.buckets.key((index, "bytes", &who)),
                    per_second: per_second as f64,
                    chunk,
                });
            }
            if !rate_pending && !bytes_pending {
                break;
            }
        }
        Ok(pacer)
    }
}

/// Paces one response body against its identity's byte bucket (shared by all its pulls).
#[derive(Debug)]
pub struct Pacer {
    buckets: Arc<buckets::Buckets>,
    key: u64,
    per_second: f64,
    chunk: u64,
}

impl crate::http::Pacer for Pacer {
    fn reserve(&self, bytes: u64) -> Duration {
        // The bucket holds one chunk when full: a pull after a pause starts at the rate
        // instead of with a second's worth at once.
        let burst = self.chunk as f64;
        let wait = self
            .buckets
            .reserve(self.key, self.per_second, burst, bytes as f64);
        if !wait.is_zero() {
            crate::metrics::Metrics::add(
                &crate::metrics::METRICS.pull_paced_micros,
                wait.as_micros() as u64,
            );
        }
        wait
    }

    fn chunk_bytes(&self) -> u64 {
        self.chunk
    }
}

#[cfg(test)]
mod tests;
