//! Live reload: what SIGHUP can change without a restart (identities, policies, TLS
//! certificate, key and client CA), built and validated off the request path, then published
//! to every worker. Workers notice through a generation counter and pick the new set up at
//! their next request; open connections and in-flight uploads are not touched.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{AuthLimits, Authenticator};
use crate::config::Config;
use crate::policy::PolicySet;

/// The reloadable part of the running configuration.
pub struct Live {
    pub policies: PolicySet,
    pub auth: Authenticator,
    /// Basic auth is off when no identity is configured.
    pub has_identities: bool,
    pub tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
}

impl Live {
    /// Builds and validates everything; any error leaves the caller's current set in place.
    pub fn build(config: &Config) -> Result<Live, String> {
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
            tls,
        })
    }
}

/// The published set, shared by all workers.
pub struct LiveCell {
    generation: AtomicU64,
    current: Mutex<Arc<Live>>,
}

impl LiveCell {
    pub fn new(live: Live) -> Self {
        LiveCell {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(live)),
        }
    }

    fn load(&self) -> (u64, Arc<Live>) {
        let current = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        (self.generation.load(Ordering::Acquire), current)
    }

    pub fn publish(&self, live: Live) {
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(live);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A worker's view: the shared cell plus a cached copy, refreshed when the generation moves,
/// so the request path takes no lock.
pub struct LocalLive {
    cell: Arc<LiveCell>,
    cached: RefCell<(u64, Arc<Live>)>,
}

impl LocalLive {
    pub fn new(cell: Arc<LiveCell>) -> Self {
        let cached = RefCell::new(cell.load());
        LocalLive { cell, cached }
    }

    pub fn get(&self) -> Arc<Live> {
        let generation = self.cell.generation.load(Ordering::Acquire);
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = self.cell.load();
        }
        cached.1.clone()
    }
}

/// Settings that only a restart can change, compared between the running and the new file.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
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
            format!("{:?}", old.storage) != format!("{:?}", new.storage),
        ),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
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
            keys.push(key);
        }
    }
    keys
}

/// Re-reads `path` and publishes what can change live. Returns false when rejected.
pub fn reload(path: &Path, running: &Config, cell: &LiveCell) -> bool {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload rejected: cannot read {}: {e}", path.display());
            return false;
        }
    };
    let new = match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload rejected, running configuration kept: {e}");
            return false;
        }
    };
    let live = match Live::build(&new) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("reload rejected, running configuration kept: {e}");
            return false;
        }
    };
    for key in restart_needed(running, &new) {
        tracing::warn!("reload: {key} changed; it takes effect only after a restart");
    }
    cell.publish(live);
    tracing::info!(
        "configuration reloaded: identities, policies and TLS certificates are now in effect"
    );
    true
}
