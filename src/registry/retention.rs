//! The retention pass: per repository whose `[[repository]]` entry has `retention` rules,
//! deletes the manifests no rule keeps, through [`Registry::delete_manifest`] (GC then
//! collects their blobs by the usual protocol). Rules are in `crate::policy::retention`.
//!
//! What is judged, and what is never deleted:
//! - Manifests that no index of the repository names and that have no subject (roots) are
//!   judged by the rules, once per tag (or once with `image.tag == null` when untagged).
//! - A manifest an immutable tag points to is kept.
//! - Index children are never deleted here while an index names them; once their index is
//!   gone they are roots, judged by the next pass.
//! - Referrers follow their subject (deleted with it). A referrer with a tag a rule keeps
//!   keeps its subject.
//! - `top_pushed(n)` and `top_pulled(n)` rank the roots of the repository.
//!
//! Pull times: the API records a pull of a manifest in a repository with rules at most once
//! per [`PULL_RECORD_INTERVAL`] per node (an in-memory map, bounded), as the modification
//! time of a small object, so pulls cost no storage write in between.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::listing::KeyPages;
use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};
use crate::policy::retention::{Image, RetentionRules};
use crate::registry::immutable::ImmutableTags;
use crate::storage::{PutCondition, Storage};

/// A node writes a manifest's pull record at most this often: rules judge in days and hours.
pub const PULL_RECORD_INTERVAL: Duration = Duration::from_secs(600);
/// Manifests whose last record time a node remembers; past this the map is cleared (the
/// cost is one early extra write per manifest).
const PULL_RECORDS_MAX: usize = 100_000;

/// When this node last recorded a pull of each manifest.
#[derive(Default)]
pub struct PullTimes {
    seen: Mutex<HashMap<(String, Digest), Instant>>,
}

impl PullTimes {
    /// Whether a pull should be written now (and notes that it is).
    pub fn due(&self, name: &RepoName, d: &Digest) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let key = (name.as_str().to_string(), d.clone());
        if seen
            .get(&key)
            .is_some_and(|t| t.elapsed() < PULL_RECORD_INTERVAL)
        {
            return false;
        }
        if seen.len() >= PULL_RECORDS_MAX {
            seen.clear();
        }
        seen.insert(key, Instant::now());
        true
    }
}

/// A manifest the pass deleted (or would delete).
#[derive(Debug, Clone)]
pub struct Deletion {
    pub repository: RepoName,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub media_type: String,
    pub size: u64,
}

struct Info {
    digest: Digest,
    media_type: String,
    size: u64,
    pushed_at: i64,
    pulled_at: Option<i64>,
    tags: Vec<String>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 1-based ranks by time, most recent first (ties by digest); `None` without a time.
fn ranks(infos: &[&Info], time: impl Fn(&Info) -> Option<i64>) -> HashMap<Digest, i64> {
    let mut timed: Vec<(i64, &Digest)> = infos
        .iter()
        .filter_map(|i| time(i).map(|t| (t, &i.digest)))
        .collect();
    timed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    timed
        .into_iter()
        .enumerate()
        .map(|(n, (_, d))| (d.clone(), n as i64 + 1))
        .collect()
}

impl Registry {
    /// Records a pull of a manifest now (callers coalesce with [`PullTimes`]).
    pub async fn record_pull(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.store
            .put(&layout::pulled(name, d), Vec::new(), PutCondition::Always)
            .await?;
        Ok(())
    }

    /// One retention pass over every repository with rules. `now` is Unix seconds.
    pub async fn retention_pass(
        &self,
        rules: &RetentionRules,
        immutable: &ImmutableTags,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Deletion>> {
        let mut out = Vec::new();
        if rules.is_empty() {
            return Ok(out);
        }
        // One page of repositories at a time; each repository's plan holds that repository.
        let mut repos = self.catalog_pages(None, None);
        while let Some(page) = repos.next(&self.store).await? {
            for repo in page {
                self.retain_repository(&repo, rules, immutable, now, dry_run, &mut out)
                    .await?;
            }
        }
        Ok(out)
    }

    async fn retain_repository(
        &self,
        repo: &str,
        rules: &RetentionRules,
        immutable: &ImmutableTags,
        now: i64,
        dry_run: bool,
        out: &mut Vec<Deletion>,
    ) -> Result<()> {
        if !rules.applies(repo) {
            return Ok(());
        }
        let Ok(name) = RepoName::parse(repo) else {
            return Ok(());
        };
        for del in self.retention_plan(&name, rules, immutable, now).await? {
            if dry_run {
                out.push(del);
                continue;
            }
            // A tag added since the plan was made: judged again by the next pass.
            if self.tags_of(&name, &del.digest).await? != del.tags {
                continue;
            }
            match self.delete_manifest(&name, &del.digest).await {
                Ok(()) => {}
                Err(Error::ManifestUnknown(_)) => continue,
                Err(e) => return Err(e),
            }
            self.store
                .delete(&layout::pulled(&name, &del.digest))
                .await?;
            crate::metrics::Metrics::add(&crate::metrics::METRICS.retention_deleted, 1);
            tracing::info!(repository = %name, digest = %del.digest, tags = ?del.tags, "retention: deleted manifest");
            out.push(del);
        }
        Ok(())
    }

    /// Tags of a repository that point to `d`, sorted.
    async fn tags_of(&self, name: &RepoName, d: &Digest) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self.tag_pages(name, None);
        while let Some(page) = pages.next(&self.store).await? {
            for tag in page {
                let Ok(t) = Tag::parse(&tag) else { continue };
                if self.resolve_tag(name, &t).await?.as_ref() == Some(d) {
                    out.push(tag);
                }
            }
        }
        Ok(out)
    }

    /// Every manifest revision of the repository (its plan ranks them all).
    async fn revisions(&self, name: &RepoName) -> Result<Vec<Digest>> {
        let dir = format!("{}/", layout::revisions_dir(name));
        let mut out = Vec::new();
        let mut pages = KeyPages::new(dir.clone(), None);
        while let Some(page) = pages.next(&self.store).await? {
            out.extend(page.iter().filter_map(|k| layout::revision_digest(&dir, k)));
        }
        Ok(out)
    }

    async fn manifest_info(
        &self,
        name: &RepoName,
        d: Digest,
        tags: Vec<String>,
    ) -> Result<Option<Info>> {
        let Some(meta) = self.store.head(&layout::manifest_link(name, &d)).await? else {
            return Ok(None);
        };
        let m = match self.get_manifest(name, &Reference::Digest(d.clone())).await {
            Ok(m) => m,
            Err(Error::ManifestUnknown(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let parsed = Manifest::parse(Some(&m.media_type), &m.bytes).ok();
        let pulled_at = self
            .store
            .head(&layout::pulled(name, &d))
            .await?
            .map(|m| secs(m.modified));
        Ok(Some(Info {
            children: parsed
                .as_ref()
                .map(|p| p.manifests().iter().map(|c| c.digest.clone()).collect())
                .unwrap_or_default(),
            subject: parsed
                .as_ref()
                .and_then(|p| p.subject().map(|s| s.digest.clone())),
            size: m.bytes.len() as u64,
            media_type: m.media_type,
            pushed_at: secs(meta.modified),
            pulled_at,
            tags,
            digest: d,
        }))
    }

    /// What the rules would delete in one repository.
    pub(super) async fn retention_plan(
        &self,
        name: &RepoName,
        rules: &RetentionRules,
        immutable: &ImmutableTags,
        now: i64,
    ) -> Result<Vec<Deletion>> {
        let mut tags: HashMap<Digest, Vec<String>> = HashMap::new();
        let mut pages = self.tag_pages(name, None);
        while let Some(page) = pages.next(&self.store).await? {
            for tag in page {
                let Ok(t) = Tag::parse(&tag) else { continue };
                if let Some(d) = self.resolve_tag(name, &t).await? {
                    tags.entry(d).or_default().push(tag);
                }
            }
        }
        let mut infos = Vec::new();
        for d in self.revisions(name).await? {
            let t = tags.remove(&d).unwrap_or_default();
            if let Some(info) = self.manifest_info(name, d, t).await? {
                infos.push(info);
            }
        }
        let children: HashSet<&Digest> = infos.iter().flat_map(|i| &i.children).collect();
        let roots: Vec<&Info> = infos
            .iter()
            .filter(|i| i.subject.is_none() && !children.contains(&i.digest))
            .collect();
        let push_ranks = ranks(&roots, |i| Some(i.pushed_at));
        let pull_ranks = ranks(&roots, |i| i.pulled_at);
        let judge = |i: &Info| -> bool {
            if i.tags
                .iter()
                .any(|t| immutable.is_immutable(name.as_str(), t))
            {
                return true;
            }
            let image = |tag| Image {
                repository: name.as_str(),
                tag,
                digest: i.digest.as_str(),
                media_type: &i.media_type,
                pushed_at: i.pushed_at,
                last_pulled_at: i.pulled_at,
                push_rank: push_ranks.get(&i.digest).copied().unwrap_or(i64::MAX),
                pull_rank: pull_ranks.get(&i.digest).copied(),
            };
            if i.tags.is_empty() {
                return rules.keeps(&image(None), now);
            }
            i.tags
                .iter()
                .any(|t| rules.keeps(&image(Some(t.as_str())), now))
        };
        // Subjects of tagged referrers that a rule keeps are kept.
        let kept_subjects: HashSet<&Digest> = infos
            .iter()
            .filter(|i| !i.tags.is_empty())
            .filter_map(|i| i.subject.as_ref().map(|s| (i, s)))
            .filter(|(i, _)| judge(i))
            .map(|(_, s)| s)
            .collect();
        let mut out = Vec::new();
        for i in roots {
            if kept_subjects.contains(&i.digest) || judge(i) {
                continue;
            }
            let mut tags = i.tags.clone();
            tags.sort();
            out.push(Deletion {
                repository: name.clone(),
                digest: i.digest.clone(),
                tags,
                media_type: i.media_type.clone(),
                size: i.size,
            });
        }
        Ok(out)
    }
}
