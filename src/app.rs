//! The application behind the HTTP layer: one per worker, built on the worker's thread.

use std::cell::RefCell;
use std::sync::Arc;

use crate::config::Config;
use crate::http::conn::{AccessRecord, Handler, Request};
use crate::http::Response;
use crate::metrics::METRICS;
use crate::registry::Registry;
use crate::server::Shutdown;

/// Sent on every response: Docker clients check it on `/v2/`, and it costs nothing to repeat.
const EXTRA_HEADERS: &[u8] = b"Docker-Distribution-API-Version: registry/2.0\r\n";

/// Size of the buffers request bodies are received into (hashed, then written from).
pub const BODY_BUFFER_BYTES: usize = 512 * 1024;
/// Idle body buffers kept per worker; more are freed.
const BODY_BUFFERS_POOLED_MAX: usize = 32;

/// A per-worker pool of body buffers, so pushes do not allocate per request.
#[derive(Default)]
pub struct Buffers(RefCell<Vec<Vec<u8>>>);

impl Buffers {
    pub fn take(&self) -> Vec<u8> {
        self.0
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BODY_BUFFER_BYTES))
    }

    pub fn give(&self, mut buf: Vec<u8>) {
        let mut pool = self.0.borrow_mut();
        if pool.len() < BODY_BUFFERS_POOLED_MAX && buf.capacity() == BODY_BUFFER_BYTES {
            buf.clear();
            pool.push(buf);
        }
    }
}

pub struct App {
    /// This application itself, for tasks that outlive a request (mirror fetches).
    pub this: std::rc::Weak<App>,
    pub config: Arc<Config>,
    /// Pull-through cache namespaces, shared by every worker.
    pub mirrors: Arc<crate::mirror::Mirrors>,
    /// Identities, policies and TLS: replaced on reload.
    pub live: crate::reload::LocalLive,
    pub shutdown: Arc<Shutdown>,
    pub registry: Registry,
    pub buffers: Buffers,
    /// The bounded queue of `async` event deliveries, shared by every worker.
    pub events: Arc<crate::events::Queue>,
    /// When this node last recorded a pull of each manifest (retention), shared by workers.
    pub pulls: Arc<crate::registry::retention::PullTimes>,
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
