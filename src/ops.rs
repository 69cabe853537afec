//! Operational endpoints: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (storage usable). Served on the main listener and/or a separate one (`[metrics]`).

use crate::app::App;
use crate::http::{Body, Response};
use crate::metrics::METRICS;
use crate::storage::{PutCondition, Storage};

/// The answer for an ops path, or None when `path` is not one.
pub async fn respond(app: &App, path: &str, metrics_allowed: bool) -> Option<Response> {
    match path {
        "/healthz" => Some(text(200, "ok\n")),
        "/readyz" => Some(if storage_ready(app).await {
            text(200, "ready\n")
        } else {
            text(503, "storage unavailable\n")
        }),
        "/metrics" if metrics_allowed => Some(
            Response::new(200)
                .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Body::Bytes(METRICS.render().into_bytes())),
        ),
        _ => None,
    }
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Body::Bytes(body.as_bytes().to_vec()))
}

/// Storage is ready when a small object can be written and read back.
async fn storage_ready(app: &App) -> bool {
    let key = format!("health/probe-{:?}", std::thread::current().id())
        .replace(['(', ')'], "")
        .replace("ThreadId", "t");
    let store = &app.registry.store;
    let written = store
        .put(&key, b"ok".to_vec(), PutCondition::Always)
        .await
        .is_ok();
    written && matches!(store.get(&key).await, Ok(Some(o)) if o.bytes == b"ok")
}

/// The handler of the separate ops listener: only the ops endpoints.
pub struct OpsApp(pub std::rc::Rc<App>);

impl crate::http::Handler for OpsApp {
    async fn handle(&self, req: &mut crate::http::Request<'_>) -> Response {
        let path = req.head.path().to_string();
        match respond(&self.0, &path, true).await {
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
        self.0.shutdown.is_set()
    }
}
