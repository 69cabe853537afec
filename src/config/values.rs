//! Default values and durations.

use std::time::Duration;

use super::ConfigError;

use serde::{Deserialize, Deserializer};

/// Default values, one function each so serde can name them.
pub(super) mod d {
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::IoDriver;
    pub fn bind_address() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }
    pub fn port() -> u16 {
        5000
    }
    pub fn root_dir() -> PathBuf {
        PathBuf::from("./data")
    }
    pub fn io_driver() -> IoDriver {
        IoDriver::Auto
    }
    pub fn query_timeout() -> Duration {
        Duration::from_secs(900)
    }
    pub fn grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn tls_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn head_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn keep_alive_timeout() -> Duration {
        Duration::from_secs(75)
    }
    pub fn body_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn connections_per_worker_max() -> usize {
        16_384
    }
    pub fn request_line_bytes_max() -> usize {
        8 * 1024
    }
    pub fn header_bytes_max() -> usize {
        64 * 1024
    }
    pub fn header_count_max() -> usize {
        100
    }
    pub fn manifest_bytes_max() -> u64 {
        4 * 1024 * 1024
    }
    pub fn blob_bytes_max() -> u64 {
        64 * 1024 * 1024 * 1024
    }
    pub fn manifest_cache_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn manifest_cache_ttl() -> Duration {
        Duration::from_secs(2)
    }
    pub fn other_body_bytes_max() -> u64 {
        64 * 1024
    }
    pub fn log_filter() -> String {
        "info".to_string()
    }
    pub fn upload_idle_expiry() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn upload_sessions_max() -> usize {
        1024
    }
    pub fn delivery() -> crate::config::Delivery {
        crate::config::Delivery::Async
    }
    pub fn webhook_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn webhook_max_retries() -> u32 {
        3
    }
    pub fn ui_path() -> String {
        "/ui/".into()
    }
    pub fn ui_title() -> String {
        "Origin".into()
    }
    pub fn ui_session_ttl() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn gc_interval() -> Duration {
        Duration::from_secs(600)
    }
    pub fn gc_grace() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn gc_debris_after() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn tag_freshness() -> Duration {
        Duration::from_secs(300)
    }
    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn username_claim() -> String {
        "sub".to_string()
    }
    pub fn oidc_leeway() -> Duration {
        Duration::from_secs(60)
    }
    pub fn oidc_keys_cache() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn oidc_keys_refresh_min() -> Duration {
        Duration::from_secs(10)
    }
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

/// A duration as whole seconds (`30`) or a number with a unit (`250ms`, `30s`, `5m`, `2h`).
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(de)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 5m, 250ms"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(ConfigError::new(format!(
                "invalid duration unit {other:?} in {text:?}"
            )))
        }
    };
    Ok(d)
}
