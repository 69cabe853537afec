//! `[event_webhook.<name>]`: where events are sent, which ones, and how hard to try.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{d, duration};

/// How the operation that caused an event waits for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Delivered before the operation takes effect (for `blob.push`: before the client is
    /// answered); the operation fails when delivery fails.
    Required,
    /// Delivered after the operation, which waits for it; a failure is logged.
    Optional,
    /// Queued (bounded) after the operation and sent in the background.
    Async,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://host/path` or `http://host:port/path`.
    pub url: String,
    /// Event kinds sent: `manifest.push`, `manifest.pull`, `manifest.delete`, `blob.push`,
    /// `blob.pull`, `tag.create`, `tag.delete`.
    pub events: Vec<String>,
    /// Regular expressions matched against the whole repository name; empty: every one.
    #[serde(default)]
    pub repository_filter: Vec<String>,
    /// Sent as a Bearer token and used as the HMAC-SHA256 key of `X-Registry-Signature-256`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "d::delivery")]
    pub delivery: Delivery,
    /// Deadline of one attempt; for `required` and `optional` also of the whole delivery.
    #[serde(default = "d::webhook_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts after the first, with exponential backoff.
    #[serde(default = "d::webhook_max_retries")]
    pub max_retries: u32,
    /// PEM roots to trust for an https URL instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
}
