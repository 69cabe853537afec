//! Logging through `tracing`: text or JSON, with a RUST_LOG-style filter.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. RUST_LOG, when set, overrides `log.filter`.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&config.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = with_audit(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_thread_names(false)
        .with_ansi(false);
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The audit trail on stderr (`[audit]` without a `file`) is not subject to the log level: its
/// target is on unless the filter names it itself. Nothing is logged there with the trail off.
fn with_audit(filter: EnvFilter) -> EnvFilter {
    if filter.to_string().contains(AUDIT_TARGET) {
        return filter;
    }
    match format!("{AUDIT_TARGET}=info").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// The tracing target of audit records written to stderr.
pub const AUDIT_TARGET: &str = "origin::audit";
