//! The service layer: one function per operation of the registry, owning the operation and
//! every side effect it has: webhook events, audit records, pull records for retention, tag
//! immutability, the pull-through cache's refresh and fill, the request's write hold. `api/` (and any
//! later surface beside it) parses a request, calls one function here and encodes what it
//! returns; nothing here knows a status code or a header.
//!
//! A hook that every write needs (a quota check, replication, a tracing span) has exactly
//! one call site per operation: the function of that operation in this module's children
//! (docs/ARCHITECTURE.md, "The service layer").

pub mod audit;
pub mod blobs;
pub mod browse;
pub mod events;
pub mod layer_files;
pub mod listing;
pub mod maintenance;
pub mod manifests;
pub mod pull;
pub mod quota;
pub mod replication;
pub mod space;
pub mod uploads;

use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Identity;
use crate::error::Result;
use crate::http::buffers::Buffers;
use crate::http::conn::RequestClock;
use crate::oci::{Reference, RepoName};
use crate::registry::manifests::PutManifest;
use crate::registry::Registry;
use crate::reload::LocalLive;

/// The limits on what a client sends that the operations enforce.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub manifest_bytes_max: u64,
    pub blob_bytes_max: u64,
    /// Longest pause in a body, or in an upstream fetch a client waits on.
    pub body_idle_timeout: Duration,
}

impl Limits {
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            manifest_bytes_max: config.server.manifest_bytes_max,
            blob_bytes_max: config.server.blob_bytes_max,
            body_idle_timeout: config.server.body_idle_timeout,
        }
    }
}

/// What the operations of one worker share: built on the worker's thread.
pub struct Service {
    /// This service itself, for work that outlives a request (mirror fetches).
    this: Weak<Service>,
    pub registry: Registry,
    /// Identities, policies, webhooks, retention and immutability rules: replaced on reload.
    pub live: LocalLive,
    /// The bounded queue of `async` event deliveries, shared by every worker.
    pub events: Arc<crate::events::Queue>,
    /// The audit trail's bounded queue, shared by every worker.
    pub audit: Arc<crate::audit::Log>,
    /// Pull-through cache namespaces, shared by every worker.
    pub mirrors: Arc<crate::mirror::Mirrors>,
    /// When this node last recorded a pull of each manifest (retention), shared by workers.
    pub pulls: Arc<crate::registry::retention::PullTimes>,
    /// The free-space guard's last sample, shared by workers.
    pub space: Arc<space::SpaceGuard>,
    pub buffers: Buffers,
    pub limits: Limits,
}

/// The parts a service is built from.
pub struct Parts {
    pub registry: Registry,
    pub live: LocalLive,
    pub events: Arc<crate::events::Queue>,
    pub audit: Arc<crate::audit::Log>,
    pub mirrors: Arc<crate::mirror::Mirrors>,
    pub pulls: Arc<crate::registry::retention::PullTimes>,
    pub space: Arc<space::SpaceGuard>,
    pub limits: Limits,
}

impl Service {
    pub fn new(parts: Parts) -> Rc<Service> {
        Rc::new_cyclic(|this| Service {
            this: this.clone(),
            registry: parts.registry,
            live: parts.live,
            events: parts.events,
            audit: parts.audit,
            mirrors: parts.mirrors,
            pulls: parts.pulls,
            space: parts.space,
            buffers: Buffers::default(),
            limits: parts.limits,
        })
    }
}

/// Who asks for an operation, and the deadline of the request it came in: writes hold the
/// deadline (`RequestClock::hold`) so a timeout never cuts one half-way.
pub struct Caller<'a> {
    pub identity: &'a Identity,
    pub ip: IpAddr,
    pub clock: &'a RequestClock,
}

impl crate::mirror::Host for Service {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn mirrors(&self) -> &crate::mirror::Mirrors {
        &self.mirrors
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn body_idle_timeout(&self) -> Duration {
        self.limits.body_idle_timeout
    }

    fn is_immutable(&self, name: &RepoName, tag: &str) -> bool {
        self.live
            .peek(|l| l.immutable.is_immutable(name.as_str(), tag))
    }

    fn handle(&self) -> Option<Rc<Self>> {
        self.this.upgrade()
    }

    async fn fill_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        media_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<PutManifest> {
        manifests::fill(self, name, reference, media_type, body).await
    }
}
