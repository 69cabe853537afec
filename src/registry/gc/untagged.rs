//! Untagged manifests (with `gc.remove_untagged`): a manifest that may have lost its last
//! tag is noted under `gc/untagged/`; a pass deletes it after the grace period if it still
//! has no tag, no other manifest of its repository names it and it refers to no subject.

use super::super::listing::KeyPages;
use super::super::{layout, Registry};
use super::CANDIDATES_PER_PASS_MAX;
use crate::error::Result;
use crate::oci::{Digest, Manifest, Reference, RepoName};
use crate::storage::{PutCondition, Storage};

impl Registry {
    /// Records that a manifest may have lost its last tag, when untagged manifests are
    /// collected; a pass decides after the grace period.
    pub async fn note_untagged(&self, name: &RepoName, d: &Digest) -> Result<()> {
        if !self.settings.gc_remove_untagged {
            return Ok(());
        }
        let stamp = self.now_secs().to_string().into_bytes();
        // A hint for a later pass: durable with the next flush, nothing waits for it.
        self.store
            .put_pending(&layout::gc_untagged(name, d), stamp, PutCondition::Always)
            .await?;
        Ok(())
    }

    /// Deletes manifests noted as untagged that still are, after the grace period, unless
    /// another manifest of the repository holds them (an index) or they refer to a subject.
    pub(super) async fn remove_untagged(
        &self,
        grace_secs: u64,
        dry_run: bool,
        removed_list: &mut Vec<(RepoName, Digest)>,
    ) -> Result<usize> {
        let mut pages = KeyPages::new(layout::GC_UNTAGGED_PREFIX.to_owned(), None);
        let (mut removed, mut examined) = (0, 0);
        while let Some(keys) = pages.next(&self.store).await? {
            if examined >= CANDIDATES_PER_PASS_MAX {
                break;
            }
            examined += keys.len();
            for key in keys {
                removed += self
                    .judge_untagged(&key, grace_secs, dry_run, removed_list)
                    .await?;
            }
        }
        Ok(removed)
    }

    /// Deletes the manifest of one `gc/untagged/` entry if it still qualifies (1), and the
    /// entry, unless `dry_run` (then 1 says it would be deleted).
    async fn judge_untagged(
        &self,
        key: &str,
        grace_secs: u64,
        dry_run: bool,
        removed_list: &mut Vec<(RepoName, Digest)>,
    ) -> Result<usize> {
        let mut removed = 0;
        let Some((name, d)) = key
            .strip_prefix(layout::GC_UNTAGGED_PREFIX)
            .and_then(layout::parse_untagged)
        else {
            return Ok(0);
        };
        let Some(meta) = self.store.head(key).await? else {
            return Ok(0);
        };
        if self.age_secs(meta.modified) < grace_secs {
            return Ok(0);
        }
        if self.is_untagged(&name, &d).await? && !self.held_in_repo(&name, &d).await? {
            let stored = self
                .get_manifest(&name, &Reference::Digest(d.clone()))
                .await;
            let referrer = match &stored {
                Ok(m) => Manifest::parse(Some(&m.media_type), &m.bytes)
                    .map(|m| m.subject().is_some())
                    .unwrap_or(false),
                Err(_) => true, // gone already: nothing to do
            };
            if !referrer {
                if dry_run {
                    return Ok(1);
                }
                self.delete_manifest(&name, &d).await?;
                removed += 1;
                removed_list.push((name.clone(), d.clone()));
            }
        }
        if !dry_run {
            self.store.remove(key).await?;
        }
        Ok(removed)
    }

    /// True when another manifest of the same repository names `d` (an index child).
    async fn held_in_repo(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let repo = layout::flat_name(name);
        let edges = self
            .store
            .list(&format!("{}{repo}/", layout::refs_prefix(d)), None, 2)
            .await?;
        Ok(edges
            .iter()
            .filter_map(|k| layout::edge_holder(d, k))
            .any(|(_, holder)| holder != "_revision"))
    }
}
