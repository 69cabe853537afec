//! `[event_webhook.*]` compiled: targets with their HTTP client, event set, repository filter
//! and signing key, and which `[[repository]]` entry uses which. Rebuilt on reload.

use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::EventKind;
use crate::config::{Config, ConfigError, Delivery, WebhookConfig};
use crate::http::client::{Client, Target as HttpTarget};

/// Webhooks one process may define: each is checked for every event of its namespaces.
pub const WEBHOOKS_MAX: usize = 64;
/// Retries of one delivery: with exponential backoff more would outlast any useful window.
pub const RETRIES_MAX: u32 = 10;
/// Repository filters per webhook.
const FILTERS_MAX: usize = 64;
/// Compiled size limit of one filter (the regex crate's budget).
const FILTER_COMPILED_BYTES_MAX: usize = 256 * 1024;

/// One webhook, ready to send to.
pub struct Target {
    pub name: String,
    pub target: HttpTarget,
    pub client: Client,
    events: u16,
    filter: Vec<Regex>,
    pub token: Option<String>,
    pub key: Option<ring::hmac::Key>,
    pub delivery: Delivery,
    pub timeout: Duration,
    pub max_retries: u32,
}

impl Target {
    pub fn wants(&self, kind: EventKind, repository: &str) -> bool {
        self.events & kind.bit() != 0
            && (self.filter.is_empty() || self.filter.iter().any(|r| r.is_match(repository)))
    }
}

/// Every webhook and the entries that use them.
#[derive(Default)]
pub struct Webhooks {
    targets: Vec<Arc<Target>>,
    /// Longest namespace first: the first match is the entry that applies.
    entries: crate::config::NamespaceTable,
}

pub fn filter(pattern: &str) -> Result<Regex, ConfigError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(FILTER_COMPILED_BYTES_MAX)
        .build()
        .map_err(|e| ConfigError::new(e.to_string()))
}

/// Checks what needs no I/O, naming the key: URLs, event names, filters, limits, and that
/// every webhook is used by an entry and every entry names existing webhooks.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.event_webhook.len() > WEBHOOKS_MAX {
        return Err(ConfigError::new(format!(
            "event_webhook: at most {WEBHOOKS_MAX} webhooks"
        )));
    }
    for (name, w) in &config.event_webhook {
        check_one(name, w)?;
        if !config
            .repository
            .iter()
            .any(|r| r.event_webhooks.contains(name))
        {
            return Err(ConfigError::new(format!(
                "event_webhook.{name}: no [[repository]] entry names it in event_webhooks"
            )));
        }
    }
    for (i, r) in config.repository.iter().enumerate() {
        for (j, name) in r.event_webhooks.iter().enumerate() {
            if !config.event_webhook.contains_key(name) {
                return Err(ConfigError::new(format!(
                    "repository[{i}].event_webhooks[{j}]: no [event_webhook.{name}] is defined"
                )));
            }
        }
    }
    Ok(())
}

fn check_one(name: &str, w: &WebhookConfig) -> Result<(), ConfigError> {
    let key = |k: &str| format!("event_webhook.{name}.{k}");
    HttpTarget::absolute(&w.url).map_err(|e| ConfigError::caused(key("url"), e))?;
    if w.events.is_empty() {
        return Err(ConfigError::new(format!(
            "{}: list at least one event",
            key("events")
        )));
    }
    for (i, e) in w.events.iter().enumerate() {
        if EventKind::parse(e).is_none() {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ConfigError::new(format!(
                "{}[{i}]: unknown event {e:?} (known: {})",
                key("events"),
                known.join(", ")
            )));
        }
    }
    if w.repository_filter.len() > FILTERS_MAX {
        return Err(ConfigError::new(format!(
            "{}: at most {FILTERS_MAX}",
            key("repository_filter")
        )));
    }
    for (i, f) in w.repository_filter.iter().enumerate() {
        filter(f).map_err(|e| format!("{}[{i}]: {e}", key("repository_filter")))?;
    }
    if w.timeout.is_zero() {
        return Err(ConfigError::new(format!(
            "{}: must be greater than zero",
            key("timeout")
        )));
    }
    if w.max_retries > RETRIES_MAX {
        return Err(ConfigError::new(format!(
            "{}: at most {RETRIES_MAX}",
            key("max_retries")
        )));
    }
    Ok(())
}

impl Webhooks {
    /// Builds every target (TLS roots included); the error names the key.
    pub fn compile(config: &Config) -> Result<Webhooks, ConfigError> {
        validate(config)?;
        let mut targets = Vec::new();
        let mut names = Vec::new();
        for (name, w) in &config.event_webhook {
            let what = format!("event_webhook.{name}.ca_bundle");
            let tls = crate::tls::client_config(&what, w.ca_bundle.as_deref()).map_err(|e| e.0)?;
            let target =
                HttpTarget::absolute(&w.url).map_err(|e| ConfigError::caused(name.as_str(), e))?;
            let mut filters = Vec::new();
            for f in &w.repository_filter {
                filters.push(filter(f)?);
            }
            let events = w
                .events
                .iter()
                .filter_map(|e| EventKind::parse(e))
                .fold(0u16, |acc, k| acc | k.bit());
            targets.push(Arc::new(Target {
                name: name.clone(),
                target,
                client: Client {
                    tls,
                    timeout: w.timeout,
                },
                events,
                filter: filters,
                token: w.token.clone(),
                key: w
                    .token
                    .as_ref()
                    .map(|t| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, t.as_bytes())),
                delivery: w.delivery,
                timeout: w.timeout,
                max_retries: w.max_retries,
            }));
            names.push(name.clone());
        }
        let entries =
            crate::config::NamespaceTable::build(&config.repository, &names, |r| &r.event_webhooks);
        Ok(Webhooks { targets, entries })
    }

    /// True when no webhook is configured: callers skip everything else.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The webhooks that want this event of this repository.
    pub fn select(&self, kind: EventKind, repository: &str) -> Vec<Arc<Target>> {
        self.entries
            .lookup(repository)
            .iter()
            .filter_map(|i| self.targets.get(*i))
            .filter(|t| t.wants(kind, repository))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[repository]]\nnamespace = \"\"\nevent_webhooks = [\"ci\"]\n\
        [[repository]]\nnamespace = \"quiet\"\n\
        [event_webhook.ci]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"manifest.push\", \"tag.delete\"]\n\
        repository_filter = [\"team/.*\"]\n";

    fn err(text: &str) -> String {
        crate::config::Config::parse(text)
            .and_then(|c| validate(&c).and_then(|()| Webhooks::compile(&c).map(drop)))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn selection_follows_entry_events_and_filter() {
        let c = crate::config::Config::parse(BASE).unwrap();
        let w = Webhooks::compile(&c).unwrap();
        assert_eq!(w.select(EventKind::ManifestPush, "team/app").len(), 1);
        assert_eq!(w.select(EventKind::TagDelete, "team/app").len(), 1);
        assert!(w.select(EventKind::ManifestPull, "team/app").is_empty());
        assert!(w.select(EventKind::ManifestPush, "teamx").is_empty());
        assert!(w
            .select(EventKind::ManifestPush, "quiet/team/app")
            .is_empty());
        assert!(!w.is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = err(&BASE.replace("\"tag.delete\"", "\"tag.deleted\""));
        assert!(e.contains("event_webhook.ci.events[1]"), "{e}");
        let e = err(&BASE.replace("team/.*", "team/("));
        assert!(e.contains("event_webhook.ci.repository_filter[0]"), "{e}");
        let e = err(&BASE.replace("event_webhooks = [\"ci\"]", "event_webhooks = []"));
        assert!(
            e.contains("event_webhook.ci: no [[repository]] entry"),
            "{e}"
        );
        let e = err(&BASE.replace(
            "event_webhooks = [\"ci\"]",
            "event_webhooks = [\"ci\", \"cd\"]",
        ));
        assert!(e.contains("repository[0].event_webhooks[1]"), "{e}");
        let e = err(&BASE.replace("http://127.0.0.1:9/hook", "ftp://x"));
        assert!(e.contains("event_webhook.ci.url"), "{e}");
        let e = err(&format!("{BASE}max_retries = 99\n"));
        assert!(e.contains("event_webhook.ci.max_retries"), "{e}");
        let e = err(&format!("{BASE}token = \"a\"\ntoken_env = \"B\"\n"));
        assert!(e.contains("event_webhook.ci.token"), "{e}");
    }
}
