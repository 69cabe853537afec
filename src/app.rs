//! The application behind the HTTP layer: one per worker, built on the worker's thread.

use std::sync::Arc;

use crate::config::Config;
use crate::http::conn::{AccessRecord, Handler, Request};
use crate::http::Response;
use crate::server::Shutdown;

/// Sent on every response: Docker clients check it on `/v2/`, and it costs nothing to repeat.
const EXTRA_HEADERS: &[u8] = b"Docker-Distribution-API-Version: registry/2.0\r\n";

pub struct App {
    pub config: Arc<Config>,
    pub shutdown: Arc<Shutdown>,
}

impl App {
    pub fn new(config: Arc<Config>, shutdown: Arc<Shutdown>) -> Self {
        App { config, shutdown }
    }
}

impl Handler for App {
    async fn handle(&self, req: &mut Request<'_>) -> Response {
        match crate::api::dispatch(req).await {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    fn protocol_error(&self, status: u16, message: &str) -> Response {
        let code = match status {
            413 => crate::error::Code::SizeInvalid,
            _ => crate::error::Code::Unknown,
        };
        crate::error::Error::new(code, message)
            .with_status(status)
            .to_response()
    }

    fn extra_headers(&self) -> &[u8] {
        EXTRA_HEADERS
    }

    fn completed(&self, r: &AccessRecord<'_>) {
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
