//! The application behind the HTTP layer: one per worker, built on the worker's thread: the
//! distribution API over the service layer.

use std::rc::Rc;
use std::sync::Arc;

use crate::config::Config;
use crate::http::conn::{AccessRecord, Handler, Request};
use crate::http::Response;
use crate::metrics::METRICS;
use crate::server::Shutdown;
use crate::service::Service;

/// Sent on every response: Docker clients check it on `/v2/`, and it costs nothing to repeat.
const EXTRA_HEADERS: &[u8] = b"Docker-Distribution-API-Version: registry/2.0\r\n";

pub struct App {
    pub config: Arc<Config>,
    pub shutdown: Arc<Shutdown>,
    /// The operations, and what they share on this worker.
    pub svc: Rc<Service>,
    /// The web UI's session key and logout cache, this worker's.
    pub ui: crate::ui::Sessions,
    /// Layer file lists already made, by digest (this worker's).
    pub ui_files: crate::ui::FilesCache,
}

impl Handler for App {
    async fn handle(&self, req: &mut Request<'_>) -> Response {
        // Counted until dropped: a request cut at its deadline is dropped mid-await.
        let _in_flight = crate::metrics::InFlight::start();
        match crate::api::dispatch(self, req).await {
            Ok(resp) => resp,
            Err(e) => crate::api::error::response(&e),
        }
    }

    fn protocol_error(&self, status: u16, message: &str) -> Response {
        crate::api::error::protocol_response(status, message)
    }

    fn extra_headers(&self) -> &[u8] {
        EXTRA_HEADERS
    }

    fn completed(&self, r: &AccessRecord<'_>) {
        let path = r.target.split('?').next().unwrap_or("");
        METRICS.request(
            crate::api::route::group(path),
            r.status,
            r.duration,
            r.bytes_in,
            r.bytes_out,
        );
        tracing::info!(
            target: "origin::access",
            method = r.method.as_str(),
            path = r.target,
            status = r.status,
            bytes_in = r.bytes_in,
            bytes_out = r.bytes_out,
            duration_us = r.duration.as_micros() as u64,
            peer = %r.peer,
        );
    }

    fn draining(&self) -> bool {
        self.shutdown.is_set()
    }
}
