//! Logging through `tracing`: text or JSON, with a RUST_LOG-style filter.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
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
    let filter = with_audit(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_thread_names(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry();
    // Spans are the trace's (crate::trace::spans::Spans); the log formats events.
    use crate::trace::spans::Spans;
    let text = format().with_ansi(false).with_thread_names(false);
    let _ = match config.format {
        LogFormat::Text => {
            let fmt = fmt.event_format(TraceId(text));
            Spans(registry.with(fmt.with_filter(filter))).try_init()
        }
        LogFormat::Json => {
            let json = text.json().flatten_event(true);
            let fmt = fmt.json().event_format(TraceId(json));
            Spans(registry.with(fmt.with_filter(filter))).try_init()
        }
    };
}

/// A log line written for a recorded request names its trace (`crate::trace::InTrace`):
/// `request{trace_id=...}: ` before the target in text, a `trace_id` member in JSON.
struct TraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for TraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(trace_id) = crate::trace::logged_trace_id() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let target = format!("{}: ", event.metadata().target());
        if line.starts_with('{') {
            line.insert_str(1, &format!("\"trace_id\":\"{trace_id}\","));
        } else if let Some(at) = line.find(&target) {
            line.insert_str(at, &format!("request{{trace_id={trace_id}}}: "));
        } else {
            let end = line.trim_end_matches('\n').len();
            line.insert_str(end, &format!(" trace_id={trace_id}"));
        }
        writer.write_str(&line)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs, through the event format `init` installs.
    fn logged(json: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let fmt = tracing_subscriber::fmt::layer().with_writer(move || w.clone());
        let text = format().with_ansi(false).with_thread_names(false);
        if json {
            let fmt = fmt
                .json()
                .event_format(TraceId(text.json().flatten_event(true)));
            tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt), f);
        } else {
            let fmt = fmt.event_format(TraceId(text));
            tracing::subscriber::with_default(tracing_subscriber::registry().with(fmt), f);
        }
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const ID: &str = "0af7651916cd43dd8448eb211c80319c";

    fn id() -> opentelemetry::trace::TraceId {
        opentelemetry::trace::TraceId::from_hex(ID).unwrap()
    }

    #[test]
    fn a_recorded_requests_text_line_names_its_trace_before_the_target() {
        let line = logged(false, || {
            crate::trace::with_trace_id(
                id(),
                || tracing::info!(target: "origin::access", status = 200, "done"),
            )
        });
        let want = format!(" INFO request{{trace_id={ID}}}: origin::access: done status=200\n");
        assert!(line.ends_with(&want), "{line:?}");
        // Outside a recorded request: the line as the plain format writes it.
        let line = logged(false, || tracing::info!(target: "origin::access", "done"));
        assert!(line.ends_with(" INFO origin::access: done\n"), "{line:?}");
    }

    #[test]
    fn a_recorded_requests_json_line_has_a_trace_id_member() {
        let line = logged(true, || {
            crate::trace::with_trace_id(
                id(),
                || tracing::info!(target: "origin::access", status = 200, "done"),
            )
        });
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["trace_id"], ID, "{line}");
        assert_eq!(v["target"], "origin::access", "{line}");
        assert_eq!(v["status"], 200, "{line}");
        assert_eq!(v["message"], "done", "{line}");
        let line = logged(true, || tracing::info!(target: "origin::access", "done"));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert!(v.get("trace_id").is_none(), "{line}");
    }
}
