//! Registry events (pushes, pulls, deletions) and the webhooks they are sent to.
//!
//! `webhooks.rs` compiles `[event_webhook.*]` into targets (reloaded with SIGHUP),
//! `delivery.rs` signs and sends one event with retries, and `queue.rs` holds the bounded
//! queue of `async` deliveries and its sender threads. Knows nothing of the API: callers
//! describe an event with [`Event`] and an [`Actor`].

pub mod delivery;
pub mod queue;
pub mod webhooks;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub use queue::Queue;
pub use webhooks::Webhooks;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ManifestPush,
    ManifestPull,
    ManifestDelete,
    BlobPush,
    BlobPull,
    TagCreate,
    TagDelete,
    QuotaWarning,
    ReplicationFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::ManifestPush,
        EventKind::ManifestPull,
        EventKind::ManifestDelete,
        EventKind::BlobPush,
        EventKind::BlobPull,
        EventKind::TagCreate,
        EventKind::TagDelete,
        EventKind::QuotaWarning,
        EventKind::ReplicationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ManifestPush => "manifest.push",
            EventKind::ManifestPull => "manifest.pull",
            EventKind::ManifestDelete => "manifest.delete",
            EventKind::BlobPush => "blob.push",
            EventKind::BlobPull => "blob.pull",
            EventKind::TagCreate => "tag.create",
            EventKind::TagDelete => "tag.delete",
            EventKind::QuotaWarning => "quota.warning",
            EventKind::ReplicationFailed => "replication.failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// One bit per kind, for a webhook's set of events.
    pub fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

/// Who caused an event: a client, or one of the registry's own processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Client {
        /// The `[identity.<id>]` key of verified credentials.
        id: Option<String>,
        username: Option<String>,
        ip: IpAddr,
    },
    Gc,
    Retention,
    Mirror,
    Replication,
}

#[derive(Serialize)]
struct ActorJson<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
}

/// One event, as sent.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub kind: EventKind,
    pub repository: &'a str,
    pub digest: &'a str,
    /// The tag, for tag events and pushes or pulls by tag.
    pub tag: Option<&'a str>,
    /// What the client named: the tag or the digest.
    pub reference: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub size: Option<u64>,
    pub actor: &'a Actor,
    /// For `quota.warning`: the namespace's usage and quota after the push.
    pub quota: Option<QuotaNote<'a>>,
    /// For `replication.failed`: the target and why its job gave up.
    pub replication: Option<ReplicationNote<'a>>,
}

/// What a `replication.failed` says of the job that moved to the failed state.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationNote<'a> {
    pub target: &'a str,
    /// `push` or `delete`.
    pub job: &'a str,
    pub attempts: u32,
    pub error: &'a str,
}

/// What a `quota.warning` says of the namespace whose usage crossed its warning ratio.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaNote<'a> {
    pub namespace: &'a str,
    pub usage_bytes: u64,
    pub usage_manifests: u64,
    pub quota_bytes: Option<u64>,
    pub quota_manifests: Option<u64>,
    pub warn_ratio: f64,
}

#[derive(Serialize)]
struct EventJson<'a> {
    id: String,
    timestamp: String,
    kind: &'static str,
    repository: &'a str,
    digest: &'a str,
    tag: Option<&'a str>,
    reference: Option<&'a str>,
    media_type: Option<&'a str>,
    size: Option<u64>,
    actor: ActorJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<&'a QuotaNote<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<&'a ReplicationNote<'a>>,
}

impl Event<'_> {
    /// The JSON payload with a fresh event id and the current time.
    pub fn to_json(&self) -> Vec<u8> {
        let id = event_id();
        let actor = match self.actor {
            Actor::Client { id, username, ip } => ActorJson {
                kind: "client",
                id: id.as_deref(),
                username: username.as_deref(),
                ip: Some(ip.to_string()),
            },
            other => ActorJson {
                kind: match other {
                    Actor::Gc => "gc",
                    Actor::Retention => "retention",
                    Actor::Replication => "replication",
                    _ => "mirror",
                },
                id: None,
                username: None,
                ip: None,
            },
        };
        let json = EventJson {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            timestamp: rfc3339(SystemTime::now()),
            kind: self.kind.as_str(),
            repository: self.repository,
            digest: self.digest,
            tag: self.tag,
            reference: self.reference,
            media_type: self.media_type,
            size: self.size,
            actor,
            quota: self.quota.as_ref(),
            replication: self.replication.as_ref(),
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&json).unwrap_or_default()
    }
}

/// Which deliveries of an event to make now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `required` webhooks, before the operation takes effect.
    Before,
    /// `optional` (awaited) and `async` (queued) webhooks, after it.
    After,
    /// Every webhook, after the fact (the registry's own processes: nobody to refuse).
    All,
}

/// Sends `event` to the webhooks that want it, for `phase`. The error is the first failed
/// `required` delivery.
pub async fn send(
    webhooks: &Webhooks,
    queue: &Queue,
    event: &Event<'_>,
    phase: Phase,
) -> Result<(), delivery::DeliveryError> {
    use crate::config::Delivery;
    let targets = webhooks.select(event.kind, event.repository);
    let mut body: Option<std::sync::Arc<[u8]>> = None;
    let mut result = Ok(());
    for t in targets {
        let wanted = match phase {
            Phase::Before => t.delivery == Delivery::Required,
            Phase::After => t.delivery != Delivery::Required,
            Phase::All => true,
        };
        if !wanted {
            continue;
        }
        // A full queue drops the event before it is even serialised.
        if t.delivery == Delivery::Async && queue.is_full() {
            queue.drop_one(&t.name, event.kind.as_str());
            continue;
        }
        let body = body.get_or_insert_with(|| event.to_json().into()).clone();
        match t.delivery {
            Delivery::Async => queue.push(t, event.kind.as_str(), body),
            Delivery::Optional => {
                let _ = delivery::deliver(&t, event.kind.as_str(), &body).await;
            }
            Delivery::Required => {
                let r = delivery::deliver(&t, event.kind.as_str(), &body).await;
                if result.is_ok() {
                    result = r;
                }
                if result.is_err() && phase == Phase::Before {
                    return result;
                }
            }
        }
    }
    result
}

/// A unique event id: 64 random bits drawn once per process, then a counter (no system call
/// per event on the request path).
fn event_id() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut r = [0u8; 8];
        // Uniqueness is what matters; without the OS RNG the start time stands in.
        if getrandom::getrandom(&mut r).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            r = nanos.to_le_bytes();
        }
        u64::from_le_bytes(r)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&prefix.to_be_bytes());
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

/// `2026-01-02T03:04:05.678Z` (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kinds_round_trip_and_have_distinct_bits() {
        let mut bits = 0u16;
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(bits & k.bit(), 0);
            bits |= k.bit();
        }
        assert_eq!(EventKind::parse("manifest.pushed"), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn payload_carries_the_event_and_its_actor() {
        let actor = Actor::Client {
            id: Some("ci".into()),
            username: Some("robot".into()),
            ip: "127.0.0.1".parse().unwrap(),
        };
        let e = Event {
            kind: EventKind::TagCreate,
            repository: "team/app",
            digest: "sha256:00",
            tag: Some("v1"),
            reference: Some("v1"),
            media_type: Some("application/vnd.oci.image.manifest.v1+json"),
            size: Some(12),
            actor: &actor,
            quota: None,
            replication: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        let again: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_ne!(v["id"], again["id"]);
        assert_eq!(v["kind"], "tag.create");
        assert_eq!(v["actor"]["username"], "robot");
        assert_eq!(v["actor"]["ip"], "127.0.0.1");
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        let gc = Event {
            actor: &Actor::Retention,
            ..e
        };
        let v: serde_json::Value = serde_json::from_slice(&gc.to_json()).unwrap();
        assert_eq!(v["actor"], serde_json::json!({"kind": "retention"}));
    }
}
