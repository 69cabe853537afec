//! `origin gc` and `origin scrub`: one pass from the command line, against the storage of a
//! stopped or running registry (GC's protocol is in storage, not in memory), through the
//! same service-layer passes as the running server.

use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::error::StartError;
use crate::registry::{Registry, Settings};
use crate::service::maintenance::{self, Pass};
use crate::storage::{Backend, FsStorage, S3Storage};

pub fn settings(config: &Config) -> Settings {
    Settings {
        allow_missing_index_children: config.uploads.allow_missing_index_children,
        upload_sessions_per_repository_max: config.uploads.sessions_per_repository_max,
        upload_idle_expiry: config.uploads.idle_expiry,
        gc_remove_untagged: config.gc.remove_untagged,
        debris_after: config.gc.debris_after,
    }
}

/// Opens the configured backend. On S3 it first runs the start-up probe on `rt` (bucket,
/// credentials, conditional writes), so a misconfigured node refuses to start.
pub fn open_storage(config: &Config, rt: &compio::runtime::Runtime) -> Result<Backend, StartError> {
    match (&config.storage.fs, &config.storage.s3) {
        (Some(fs), _) => {
            let root = &fs.root_dir;
            let store = FsStorage::new(root.clone()).map_err(|e| {
                StartError::io(format!("storage.fs.root_dir {}", root.display()), e)
            })?;
            store
                .replay_journal_if_unowned()
                .map_err(|e| StartError::io("storage.fs write journal", e))?;
            Ok(store.into())
        }
        (None, Some(s3)) => {
            let store = S3Storage::new(s3)?;
            let probed = rt.block_on(store.probe());
            // The probe's pooled connections belong to this runtime: close them with it.
            crate::http::client::close_idle();
            probed?;
            Ok(store.into())
        }
        (None, None) => Err(ConfigError::new("no [storage.fs] or [storage.s3] configured").into()),
    }
}

fn with_registry<T>(config: &Config, f: impl AsyncFnOnce(&Registry) -> T) -> Result<T, StartError> {
    let rt = crate::server::build_runtime(config.server.io_driver)
        .map_err(|e| StartError::io("cannot start the I/O driver", e))?;
    let store = open_storage(config, &rt)?;
    // No cache: one pass, and the running server's cache is not this process's anyway.
    let cache = std::sync::Arc::new(crate::registry::cache::ManifestCache::new(
        0,
        config.server.manifest_cache_ttl,
    ));
    let registry =
        Registry::new(store, settings(config), cache).with_clock(crate::clock::Clock::from_env());
    Ok(rt.block_on(f(&registry)))
}

/// The rules, webhooks and event queue of a one-shot command: its deletions send the same
/// events and audit records as the running server's (actors `gc`, `mirror`, `retention`).
/// Queued (`async`) deliveries and records go out before the command ends.
fn with_pass<T>(
    config: &Config,
    f: impl AsyncFnOnce(&Pass<'_>) -> Result<T, crate::error::Error>,
) -> Result<T, StartError> {
    let live = crate::reload::Live::build(config)?;
    let queue = crate::events::Queue::start(config.server.io_driver)?;
    let audit = crate::audit::Log::start()?;
    let result = with_registry(config, async |reg: &Registry| {
        let pass = Pass {
            registry: reg,
            live: &live,
            queue: &queue,
            audit: &audit,
        };
        f(&pass).await
    })
    .and_then(|r| r.map_err(StartError::Registry));
    queue.drain(config.server.query_timeout_grace_period);
    audit.drain(config.server.query_timeout_grace_period);
    result
}

/// `origin replication status`: per target, the jobs waiting, running and retrying, the
/// oldest one's age and the jobs that failed for good, read from storage (every node's).
pub fn replication_status(config: &Config, json: bool) -> i32 {
    let pull = |r: &crate::config::ReplicationConfig| {
        r.direction == crate::config::ReplicationDirection::Pull
    };
    let names = |want: bool| -> Vec<String> {
        let targets = config.replication.iter();
        targets
            .filter(|(_, r)| pull(r) == want)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (configured, pulls) = (names(false), names(true));
    let result = with_registry(config, async |reg: &Registry| {
        let now = crate::replication::job::millis(reg.clock.now());
        let report = crate::replication::status::read(&reg.store, &configured, &pulls, now).await?;
        Ok(match json {
            true => {
                String::from_utf8_lossy(&crate::replication::status::to_json(&report, now))
                    .into_owned()
                    + "\n"
            }
            false => crate::replication::status::render(&report, now),
        })
    });
    match result.and_then(|r| r.map_err(StartError::Registry)) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("origin replication status: {e}");
            1
        }
    }
}

/// Runs one GC pass; prints each blob removed (or that would be) and the totals.
pub fn gc(config: &Config, dry_run: bool) -> i32 {
    let grace = config.gc.grace_period;
    let result = with_pass(config, async |pass: &Pass<'_>| {
        let evicted = maintenance::evict(pass, dry_run).await?.len();
        if evicted > 0 {
            let verb = if dry_run { "would evict" } else { "evicted" };
            println!("gc: {verb} {evicted} mirrored manifests not pulled recently");
        }
        maintenance::gc(pass, grace, dry_run).await
    });
    match result {
        Ok(report) => {
            let verb = if dry_run { "would remove" } else { "removed" };
            for (d, size) in &report.removed {
                println!("{verb} {d} {size} bytes");
            }
            println!(
                "gc: {verb} {} untagged manifests, {} blobs, {} bytes; {} candidates examined in {} ms",
                report.manifests_removed,
                report.blobs_removed,
                report.bytes_removed,
                report.examined,
                report.duration.as_millis()
            );
            0
        }
        Err(e) => {
            eprintln!("origin gc: {e}");
            1
        }
    }
}

/// Runs scrub; prints each finding. Exit 0 when clean (or all repaired), 3 when findings
/// remain unrepaired.
pub fn scrub(config: &Config, repair: bool) -> i32 {
    let quotas = match crate::registry::quota::Quotas::compile(&config.repository) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("origin scrub: {e}");
            return 1;
        }
    };
    let result = with_registry(config, async |reg: &Registry| {
        let report = reg.scrub(repair).await?;
        let drifts = reg.quota_scrub(&quotas, repair).await?;
        Ok((report, drifts))
    })
    .and_then(|r| r.map_err(StartError::Registry));
    match result {
        Ok((report, drifts)) => {
            for f in &report.findings {
                let class = if f.is_broken() { "broken" } else { "leftover" };
                println!("{class}: {f}");
            }
            let mut unrepaired_drift = false;
            for d in drifts.iter().filter(|d| d.is_drift()) {
                let ns = if d.namespace.is_empty() {
                    "\"\""
                } else {
                    &d.namespace
                };
                println!(
                    "quota drift: namespace {ns}: recorded {} bytes {} manifests, counted from \
                     storage {} bytes {} manifests; {} markers missing, {} stray{}",
                    d.recorded_bytes,
                    d.recorded_manifests,
                    d.actual_bytes,
                    d.actual_manifests,
                    d.missing_markers,
                    d.stray_markers,
                    if d.repaired { " (repaired)" } else { "" }
                );
                unrepaired_drift |= !d.repaired;
            }
            if unrepaired_drift {
                println!("scrub: quota usage drifted; `origin scrub --repair` recomputes it");
            }
            println!(
                "scrub: {} blobs and {} manifests checked, {} findings, {} repaired",
                report.blobs_checked,
                report.manifests_checked,
                report.findings.len(),
                report.repaired
            );
            if report.findings.len() > report.repaired || unrepaired_drift {
                3
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("origin scrub: {e}");
            1
        }
    }
}

/// `origin usage`: each namespace's usage as stored, against its quota, one line each
/// (tab-separated, with a header): the configured quotas, then namespaces with a usage
/// record and no quota now (`-` for a limit not set).
pub fn usage(config: &Config) -> i32 {
    let quotas = match crate::registry::quota::Quotas::compile(&config.repository) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("origin usage: {e}");
            return 1;
        }
    };
    let result = with_registry(config, async |reg: &Registry| {
        reg.quota_report(&quotas).await
    })
    .and_then(|r| r.map_err(StartError::Registry));
    match result {
        Ok(rows) => {
            let limit = |l: Option<u64>| l.map_or("-".to_string(), |l| l.to_string());
            println!("NAMESPACE\tBYTES\tQUOTA_BYTES\tMANIFESTS\tQUOTA_MANIFESTS\tRESERVED_BYTES\tIN_FLIGHT");
            for r in &rows {
                let ns = if r.namespace.is_empty() {
                    "\"\""
                } else {
                    &r.namespace
                };
                let (with_pending, _) = r.usage.with_pending();
                println!(
                    "{ns}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.usage.bytes,
                    limit(r.quota_bytes),
                    r.usage.manifests,
                    limit(r.quota_manifests),
                    with_pending - r.usage.bytes,
                    r.usage.pending.len()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("origin usage: {e}");
            1
        }
    }
}

/// How long the background GC sleeps between passes; at least a second.
pub fn gc_interval(config: &Config) -> Duration {
    config.gc.interval.max(Duration::from_secs(1))
}

/// `origin scrub --retention`: one retention pass; prints each manifest deleted (or that
/// would be) with its repository, digest and tags.
pub fn retention_cli(config: &Config, dry_run: bool) -> i32 {
    let result = with_pass(config, async |pass: &Pass<'_>| {
        maintenance::retention(pass, dry_run).await
    });
    match result {
        Ok(deleted) => {
            let verb = if dry_run { "would delete" } else { "deleted" };
            for d in &deleted {
                let tags = if d.tags.is_empty() {
                    "(untagged)".to_string()
                } else {
                    d.tags.join(",")
                };
                println!("{verb} {}@{} tags {tags}", d.repository, d.digest);
            }
            println!("retention: {verb} {} manifests", deleted.len());
            0
        }
        Err(e) => {
            eprintln!("origin scrub --retention: {e}");
            1
        }
    }
}
