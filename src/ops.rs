//! Operational endpoints: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (storage usable; and whether the free-space guard refuses writes). Served on the main
//! listener and/or a separate one (`[metrics]`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::{Body, Response};
use crate::metrics::METRICS;
use crate::service::Service;
use crate::storage::{Backend, PutCondition, Storage};

/// The answer for an ops path, or None when `path` is not one.
pub async fn respond(svc: &Service, path: &str, metrics_allowed: bool) -> Option<Response> {
    match path {
        "/healthz" => Some(text(200, "ok\n")),
        "/readyz" => Some(readiness(svc).await),
        "/metrics" if metrics_allowed => Some(
            Response::new(200)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Body::Bytes(render_metrics(svc).into_bytes())),
        ),
        _ => None,
    }
}

/// Every metric, with the quotas of the live configuration (only configured namespaces).
fn render_metrics(svc: &Service) -> String {
    let mut out = METRICS.render();
    svc.live.peek(|l| {
        let quotas = l
            .quotas
            .all()
            .map(|q| (q.namespace.as_str(), q.bytes, q.manifests));
        crate::metrics::QUOTA_USAGE.render(&mut out, quotas);
    });
    out
}

/// Ready when storage is usable. Below the free-space thresholds the node stays ready (200:
/// pulls, deletes and GC work, and a node taken out of a load balancer could not serve the
/// pulls either) and says in the body that writes are refused.
async fn readiness(svc: &Service) -> Response {
    if !storage_ready(&svc.registry.store).await {
        return text(503, "storage unavailable\n");
    }
    match crate::service::space::readiness_note(svc) {
        None => text(200, "ready\n"),
        Some(why) => text(
            200,
            &format!("ready; writes that add data are refused: storage low on space ({why})\n"),
        ),
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Body::Bytes(body.as_bytes().to_vec()))
}

/// Storage is probed (one write and one read) at most this often per process; the probes of
/// `/readyz` in between, from anyone, get the last answer. On S3 a probe is a billed write:
/// a stranger polling `/readyz` must not turn into one per request.
const READY_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The last storage probe's answer, shared by the workers of the process.
struct ReadyProbe {
    /// When the last probe ended and what it found; `None` before the first.
    last: Option<(Instant, bool)>,
    /// A worker is probing: the others answer from `last` instead of probing too.
    probing: bool,
}

static READY: Mutex<ReadyProbe> = Mutex::new(ReadyProbe {
    last: None,
    probing: false,
});

/// Storage is ready when a small object can be written and read back, as found by the last
/// probe, made again when that one is older than [`READY_PROBE_INTERVAL`].
async fn storage_ready(store: &Backend) -> bool {
    let now = Instant::now();
    {
        let mut state = READY.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some((at, ready)) if now.duration_since(at) < READY_PROBE_INTERVAL => return ready,
            Some((_, ready)) if state.probing => return ready,
            None if state.probing => return false,
            _ => state.probing = true,
        }
    }
    // Cleared however the probe ends, a request cut at its deadline included.
    struct Probing;
    impl Drop for Probing {
        fn drop(&mut self) {
            READY.lock().unwrap_or_else(|p| p.into_inner()).probing = false;
        }
    }
    let probing = Probing;
    let ready = probe_storage(store).await;
    READY.lock().unwrap_or_else(|p| p.into_inner()).last = Some((Instant::now(), ready));
    METRICS
        .storage_ready
        .store(i64::from(ready), std::sync::atomic::Ordering::Relaxed);
    drop(probing);
    ready
}

async fn probe_storage(store: &Backend) -> bool {
    let key = "health/probe";
    let written = store
        .put(key, b"ok".to_vec(), PutCondition::Always)
        .await
        .is_ok();
    written && matches!(store.get(key).await, Ok(Some(o)) if o.bytes == b"ok")
}

/// The replication queue per target as JSON, on the ops listener only: it names
/// repositories and errors, so it is for operators, never on the main listener.
const ADMIN_REPLICATION: &str = "/admin/replication";

/// The report is read from storage (one read per job) at most this often per process.
const ADMIN_REPORT_TTL: Duration = Duration::from_secs(2);

static REPLICATION_REPORT: Mutex<Option<(Instant, std::sync::Arc<[u8]>)>> = Mutex::new(None);

async fn replication_status(svc: &crate::service::Service) -> Response {
    let fresh = |at: &Instant| at.elapsed() < ADMIN_REPORT_TTL;
    let cached = REPLICATION_REPORT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(at, _)| fresh(at))
        .map(|(_, body)| body.clone());
    let body = match cached {
        Some(body) => body,
        None => match crate::service::replication::status_json(svc).await {
            Ok(json) => {
                let body: std::sync::Arc<[u8]> = json.into();
                *REPLICATION_REPORT.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), body.clone()));
                body
            }
            Err(e) => {
                e.log_cause();
                return text(503, &format!("{}\n", e.client_message()));
            }
        },
    };
    Response::new(200)
        .header("Content-Type", "application/json")
        .body(Body::Bytes(body.to_vec()))
}

/// The handler of the separate ops listener: the ops endpoints and the admin report.
pub struct OpsApp {
    pub svc: std::rc::Rc<crate::service::Service>,
    pub shutdown: std::sync::Arc<crate::server::Shutdown>,
}

impl crate::http::Handler for OpsApp {
    async fn handle(&self, req: &mut crate::http::Request<'_>) -> Response {
        let path = req.head.path().to_string();
        if path == ADMIN_REPLICATION {
            return replication_status(&self.svc).await;
        }
        match respond(&self.svc, &path, true).await {
            Some(r) => r,
            None => text(404, "not found\n"),
        }
    }

    fn protocol_error(&self, status: u16, message: &str) -> Response {
        text(status, &format!("{message}\n"))
    }

    fn extra_headers(&self) -> &[u8] {
        b""
    }

    fn completed(&self, r: &crate::http::conn::AccessRecord<'_>) {
        tracing::debug!(target: "origin::access", path = r.target, status = r.status, "ops request");
    }

    fn draining(&self) -> bool {
        self.shutdown.is_set()
    }
}
