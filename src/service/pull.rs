//! Pull replication as an operation of the registry: every `schedule`, each pull target's
//! repositories and tags (past its filters) are made here what they are upstream. Runs on a
//! thread of its own with its own runtime, never on the request path.
//!
//! A tag that already names the upstream's digest costs a HEAD (and a referrers listing,
//! so signatures added later arrive); otherwise the manifest is fetched, then what it names
//! that is missing here (index children, config and layers, streamed into storage by the
//! pull-through cache's verifying write path), and the manifest is stored with
//! [`super::manifests::put`], as a client's push is: events, quotas, immutability and push
//! replication apply. Referrers follow their subject (the referrers API, or the tag schema
//! `<alg>-<hex>` of registries without it). Deletions upstream are not applied.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{Caller, Parts, Service};
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::conn::RequestClock;
use crate::oci::manifest::Manifest;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::replication::job::{millis, node_id};
use crate::replication::pull::{self as record, PullMetrics, Run, RunOutcome, Source};

/// How often the thread looks whether a pull target's run is due (one storage read per
/// target, skipped while this node knows the next run is later).
pub const TICK: Duration = Duration::from_secs(1);
/// How often a pausing thread checks whether the process is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// A stored manifest's write holds this deadline off (the pull has no client's deadline:
/// each exchange with the upstream has the target's `timeout`).
const WRITE_WINDOW: Duration = Duration::from_secs(3600);

/// Starts the pull thread; it ends when `stopped` returns true. A run in flight then keeps
/// its claim in storage until the lease expires, and another node (or this one restarted)
/// runs the target again.
pub fn start(
    io_driver: crate::config::IoDriver,
    parts: impl FnOnce() -> Parts + Send + 'static,
    stopped: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("origin-pull".into())
        .spawn(move || {
            let rt = match crate::server::build_runtime(io_driver) {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "pull replication: cannot start a runtime");
                    return;
                }
            };
            let svc = Service::new(parts());
            rt.block_on(schedule(svc, stopped));
        })
}

/// The loop: claims each due target's run (one node wins it) and runs it as a task.
async fn schedule(svc: Rc<Service>, stopped: impl Fn() -> bool) {
    let running: Rc<RefCell<HashSet<String>>> = Rc::default();
    // Target -> not before (ms), as last read from its record by this node.
    let mut not_before: HashMap<String, u64> = HashMap::new();
    while !stopped() {
        let live = svc.live.get();
        for source in live.replication.pulls() {
            let now = millis(svc.registry.clock.now());
            // A due time beyond one schedule is from a longer one (before a reload).
            let latest = now.saturating_add(source.schedule.as_millis() as u64);
            if running.borrow().contains(&source.name)
                || not_before
                    .get(&source.name)
                    .is_some_and(|t| *t > now && *t <= latest)
            {
                continue;
            }
            let store = &svc.registry.store;
            match record::claim(store, &source.name, source.schedule, node_id(), now).await {
                Ok(record::Attempt::Claimed(run)) => {
                    not_before.remove(&source.name);
                    running.borrow_mut().insert(source.name.clone());
                    let (svc, source, running) = (svc.clone(), source.clone(), running.clone());
                    compio::runtime::spawn(async move {
                        execute(&svc, &source, *run).await;
                        running.borrow_mut().remove(&source.name);
                    })
                    .detach();
                }
                Ok(record::Attempt::NotYet(t)) => {
                    not_before.insert(source.name.clone(), t);
                }
                Ok(record::Attempt::Taken) => {}
                Err(e) => {
                    e.log_cause();
                    tracing::warn!(target = %source.name, error = %e.client_message(),
                        "pull replication: cannot read the target's record");
                }
            }
        }
        let until = std::time::Instant::now() + TICK;
        while std::time::Instant::now() < until && !stopped() {
            compio::time::sleep(STOP_CHECK).await;
        }
    }
    crate::http::client::close_idle();
}

/// Runs one claimed run and records its outcome.
async fn execute(svc: &Service, source: &Source, run: Run) {
    let m = record::metrics(&source.name);
    let started_ms = millis(svc.registry.clock.now());
    let identity = Identity {
        id: Some(format!("replication:{}", source.name)),
        username: Some(format!("replication:{}", source.name)),
        ..Identity::default()
    };
    let clock = RequestClock::new(WRITE_WINDOW);
    let pull = Pull {
        svc,
        source,
        run: &run,
        caller: Caller {
            identity: &identity,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            clock: &clock,
        },
        outcome: RefCell::new(RunOutcome {
            started_ms,
            ..RunOutcome::default()
        }),
        metrics: m.clone(),
        failed_tags: Cell::new(0),
    };
    let result = pull.all().await;
    let mut outcome = pull.outcome.into_inner();
    outcome.finished_ms = millis(svc.registry.clock.now());
    outcome.error = result.err();
    match &outcome.error {
        None => {
            record::add(&m.runs_succeeded, 1);
            m.last_success_seconds.store(
                outcome.finished_ms / 1000,
                std::sync::atomic::Ordering::Relaxed,
            );
            tracing::info!(target = %source.name, images = outcome.images,
                manifests = outcome.manifests, blobs = outcome.blobs, bytes = outcome.bytes,
                unchanged = outcome.unchanged, "pull replication run done");
        }
        Some(e) => {
            record::add(&m.runs_failed, 1);
            tracing::warn!(target = %source.name, error = %e, images = outcome.images,
                "pull replication run failed; retried with backoff");
        }
    }
    if let Err(e) = run
        .finish(&svc.registry.store, outcome, source.schedule)
        .await
    {
        e.log_cause();
        tracing::warn!(target = %source.name, error = %e.client_message(),
            "could not record a pull run's outcome (its lease will expire)");
    }
}

type Step<'f> = Pin<Box<dyn Future<Output = Result<()>> + 'f>>;

struct Pull<'a> {
    svc: &'a Service,
    source: &'a Source,
    run: &'a Run,
    caller: Caller<'a>,
    outcome: RefCell<RunOutcome>,
    metrics: Arc<PullMetrics>,
    failed_tags: Cell<u64>,
}

fn upstream(message: impl std::fmt::Display) -> Error {
    Error::Upstream(message.to_string())
}

impl Pull<'_> {
    /// Every repository and tag of the target. A tag that fails does not stop the others;
    /// the run then fails with the first error (and is retried).
    async fn all(&self) -> std::result::Result<(), String> {
        let source = self.source;
        let repositories = if source.repositories.is_empty() {
            let keep = |n: &str| source.wants_repository(n);
            crate::mirror::upstream_catalog(&source.ns, record::REPOSITORIES_PER_RUN_MAX, &keep)
                .await
                .map_err(|e| e.client_message().to_string())?
        } else {
            let wanted = source.repositories.iter();
            let wanted = wanted.filter(|n| source.wants_repository(n));
            wanted
                .take(record::REPOSITORIES_PER_RUN_MAX)
                .cloned()
                .collect()
        };
        let mut budget = record::TAGS_PER_RUN_MAX;
        let mut first: Option<String> = None;
        for repo in &repositories {
            if budget == 0 {
                tracing::warn!(target = %source.name, "pull run reached {} tags; the rest wait for the next run",
                    record::TAGS_PER_RUN_MAX);
                break;
            }
            if let Err(e) = self.repository(repo, &mut budget, &mut first).await {
                let message = format!("{repo}: {}", e.client_message());
                e.log_cause();
                first.get_or_insert(message);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(match self.failed_tags.get() {
                0 | 1 => e,
                n => format!("{n} tags failed; the first: {e}"),
            }),
        }
    }

    async fn repository(
        &self,
        upstream_name: &str,
        budget: &mut usize,
        first: &mut Option<String>,
    ) -> Result<()> {
        let local = RepoName::parse(&self.source.local_name(upstream_name))
            .map_err(|e| Error::NameInvalid(e.to_string()))?;
        let tags = crate::mirror::upstream_tags(&self.source.ns, &local)
            .await?
            .ok_or_else(|| Error::NameUnknown("repository unknown upstream".into()))?;
        for t in tags.iter().filter(|t| self.source.wants_tag(t)) {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let Ok(tag) = Tag::parse(t) else { continue };
            if let Err(e) = self.tag(&local, &tag).await {
                self.failed_tags.set(self.failed_tags.get() + 1);
                e.log_cause();
                tracing::warn!(target = %self.source.name, repository = %local, tag = %tag,
                    error = %e.client_message(), "pull replication of a tag failed");
                first.get_or_insert_with(|| format!("{local}:{tag}: {}", e.client_message()));
            }
            self.keep().await?;
        }
        Ok(())
    }

    /// Renews the run's lease; an error when another node took the run over.
    async fn keep(&self) -> Result<()> {
        let now = millis(self.svc.registry.clock.now());
        match self.run.keep(&self.svc.registry.store, now).await? {
            true => Ok(()),
            false => Err(upstream(
                "the run was taken over by another node (lease expired)",
            )),
        }
    }

    fn upstream_name<'n>(&self, local: &'n RepoName) -> &'n str {
        self.source.ns.upstream_name(local.as_str())
    }

    /// Makes `tag` here what it is upstream.
    async fn tag(&self, local: &RepoName, tag: &Tag) -> Result<()> {
        let ns = &self.source.ns;
        let Some(digest) =
            crate::mirror::upstream_digest(ns, self.upstream_name(local), tag.as_str()).await?
        else {
            return Ok(()); // Deleted upstream since it was listed.
        };
        let here = self.svc.registry.resolve_tag(local, tag).await?;
        if here.as_ref() == Some(&digest) {
            self.outcome.borrow_mut().unchanged += 1;
            record::add(&self.metrics.unchanged, 1);
        } else {
            self.manifest(local, &digest, Some(tag), 0).await?;
            self.outcome.borrow_mut().images += 1;
        }
        self.referrers(local, &digest, 0).await
    }

    /// Stores the manifest `digest` (under `tag` if given) with everything it names.
    fn manifest<'f>(
        &'f self,
        local: &'f RepoName,
        digest: &'f Digest,
        tag: Option<&'f Tag>,
        depth: usize,
    ) -> Step<'f> {
        Box::pin(async move {
            let reg = &self.svc.registry;
            let stored = reg.manifest_stored(local, digest).await?;
            if stored && tag.is_none() {
                // Stored only once everything it names was here.
                return Ok(());
            }
            if depth > record::REFERRER_DEPTH_MAX + 1 {
                return Err(upstream(format!("{digest}: nested too deep")));
            }
            let ns = &self.source.ns;
            let (media_type, body, _) =
                crate::mirror::fetch_manifest(ns, self.upstream_name(local), digest.as_str())
                    .await?;
            let actual = Digest::of(digest.algorithm(), &body);
            if &actual != digest {
                return Err(upstream(format!(
                    "manifest {digest} arrived with digest {actual}"
                )));
            }
            if !stored {
                let parsed = Manifest::parse(media_type.as_deref(), &body)
                    .map_err(|e| upstream(format!("manifest {digest}: {e}")))?;
                if parsed.manifests().len() > record::INDEX_CHILDREN_MAX {
                    return Err(upstream(format!(
                        "index {digest} names more than {} manifests",
                        record::INDEX_CHILDREN_MAX
                    )));
                }
                for child in parsed.manifests() {
                    self.manifest(local, &child.digest, None, depth + 1).await?;
                }
                for d in parsed.config().into_iter().chain(parsed.layers()) {
                    self.blob(local, &d.digest).await?;
                }
            }
            let reference = match tag {
                Some(t) => Reference::Tag(t.clone()),
                None => Reference::Digest(digest.clone()),
            };
            let svc = self.svc;
            super::manifests::put(
                svc,
                &self.caller,
                local,
                &reference,
                media_type.as_deref(),
                body,
            )
            .await?;
            self.outcome.borrow_mut().manifests += 1;
            record::add(&self.metrics.manifests, 1);
            Ok(())
        })
    }

    /// Fetches a blob `local` does not have yet (linked only, when stored for another).
    async fn blob(&self, local: &RepoName, digest: &Digest) -> Result<()> {
        if self
            .svc
            .registry
            .repo_blob_size(local, digest)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let fetched = crate::mirror::fetch_stored(self.svc, &self.source.ns, local, digest).await?;
        if fetched > 0 {
            let mut o = self.outcome.borrow_mut();
            o.blobs += 1;
            o.bytes += fetched;
            record::add(&self.metrics.blobs, 1);
            record::add(&self.metrics.bytes, fetched);
        }
        self.keep().await
    }

    /// Copies the referrers of `subject` that are not here yet, and theirs.
    fn referrers<'f>(&'f self, local: &'f RepoName, subject: &'f Digest, depth: usize) -> Step<'f> {
        Box::pin(async move {
            if depth >= record::REFERRER_DEPTH_MAX {
                return Ok(());
            }
            let ns = &self.source.ns;
            let listed = match crate::mirror::upstream_referrers(ns, local, subject).await? {
                Some(list) => list.into_iter().map(|d| d.digest).collect(),
                None => self.referrers_by_tag(local, subject).await?,
            };
            for d in listed.iter().take(record::REFERRERS_PER_MANIFEST_MAX) {
                if self.svc.registry.manifest_stored(local, d).await? {
                    continue;
                }
                self.manifest(local, d, None, depth + 1).await?;
                self.referrers(local, d, depth + 1).await?;
            }
            Ok(())
        })
    }

    /// The referrers an upstream without the referrers API lists under the tag schema's
    /// `<alg>-<hex>` tag (an index of them), if it has that tag.
    async fn referrers_by_tag(&self, local: &RepoName, subject: &Digest) -> Result<Vec<Digest>> {
        let ns = &self.source.ns;
        let fallback = subject.as_str().replacen(':', "-", 1);
        let upstream_name = self.upstream_name(local);
        if crate::mirror::upstream_digest(ns, upstream_name, &fallback)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        let (media_type, body, _) =
            crate::mirror::fetch_manifest(ns, upstream_name, &fallback).await?;
        let parsed = Manifest::parse(media_type.as_deref(), &body)
            .map_err(|e| upstream(format!("referrers tag {fallback}: {e}")))?;
        Ok(parsed
            .manifests()
            .iter()
            .map(|d| d.digest.clone())
            .collect())
    }
}
