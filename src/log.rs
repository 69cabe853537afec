//! Logging through `tracing`: text or JSON, with a RUST_LOG-style filter.

use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: the log (RUST_LOG, when set, overrides `log.filter`) and
/// the trace layer (`crate::trace`), each with its own filter.
pub fn init(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&config.filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = without_trace_spans(with_audit(filter));
    let spans = crate::trace::layer::SpanLayer.with_filter(crate::trace::layer::SpanFilter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(spans);
    // Behind the trace's gate, asked first (crate::trace::layer::Gated).
    use crate::trace::layer::Gated;
    let _ = match config.format {
        LogFormat::Text => Gated(registry.with(fmt.with_filter(filter))).try_init(),
        LogFormat::Json => {
            Gated(registry.with(fmt.json().flatten_event(true).with_filter(filter))).try_init()
        }
    };
}

/// The trace's spans are not the log's: a log line of a recorded request names its trace
/// through the one span of `trace::LOG_SPAN` (`request{trace_id=...}`), nothing more.
fn without_trace_spans(mut filter: EnvFilter) -> EnvFilter {
    for target in [crate::trace::SPAN, crate::trace::ROOT] {
        if let Ok(directive) = format!("{target}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
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
