//! Manifest DELETE: the revision, the tags naming it, its referrer entry, the manifests that
//! refer to it, and what it held released for GC.
//!
//! Where tags may be immutable, the check that no immutable tag names the manifest and the
//! removal of its revision are one conditional step, so a push that creates such a tag
//! between them cannot lose it (on any number of nodes, with no lock):
//! 1. the revision link is replaced, `If-Match` what was read, by the same link marked
//!    `deleting` with a token unique to this DELETE (its new etag is this DELETE's alone);
//! 2. the tags are read: one that is immutable and names the manifest refuses the DELETE
//!    (`Error::Conflict`), and the mark is taken off again;
//! 3. the link is removed only if it still has the etag of step 1 (`delete_if_match`), else
//!    the DELETE starts over from step 1.
//!
//! A push of the manifest under an immutable tag writes the link (without a mark), then the
//! tag, then reads the link back and writes it again if it is marked or gone
//! (`manifests.rs`, `keep_revision`). Either the push's link write falls between steps 1
//! and 3 (step 3 fails, and the DELETE's next step 2 sees the tag), or before step 1 (then
//! the tag, written before the push's read, is seen by step 2 unless that read comes after
//! step 1 and finds the mark or no link, and writes the link again), or after step 3 (the
//! manifest is pushed again after a finished DELETE). Tags the DELETE removes afterwards
//! are those it may remove: an immutable one naming the manifest now came from such a push.

use super::layout;
use super::manifests::{edge_keys, immutable_conflict, manifest_unknown, RevisionLink};
use super::Registry;
use crate::error::{Error, Result};
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};
use crate::storage::{PutCondition, PutOutcome, Storage};

/// Referrers of referrers are deleted with their subject down to this depth.
const REFERRER_CASCADE_DEPTH_MAX: usize = 8;

/// Times a DELETE that checks immutable tags starts over because a push changed the
/// revision link between its mark and its removal (each time a push wrote it again).
const GUARDED_ATTEMPTS_MAX: usize = 4;

/// A DELETE that checks immutable tags: which tags of the repository are immutable.
type Immutable<'a> = &'a dyn Fn(&str) -> bool;

/// A token unique to one DELETE's mark (uniqueness, not secrecy).
fn mark_token() -> Result<String> {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).map_err(|e| Error::internal(format!("no randomness: {e}")))?;
    Ok(format!("{:016x}", u64::from_le_bytes(r)))
}

impl Registry {
    /// Deletes a manifest revision, the tags that point to it, its referrer entry, and the
    /// manifests that refer to it (their subject is gone); releases what it held.
    pub async fn delete_manifest(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.delete_manifest_at_depth(name, digest, 0, None).await?;
        self.drop_if_empty(name).await
    }

    /// `delete_manifest`, refused (a conflict naming the tag) if a tag for which `immutable` is
    /// true names the manifest, decided in one conditional step with the removal (module
    /// docs).
    pub async fn delete_manifest_unless_immutable(
        &self,
        name: &RepoName,
        digest: &Digest,
        immutable: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        self.delete_manifest_at_depth(name, digest, 0, Some(immutable))
            .await?;
        self.drop_if_empty(name).await
    }

    async fn delete_manifest_at_depth(
        &self,
        name: &RepoName,
        digest: &Digest,
        depth: usize,
        guard: Option<Immutable<'_>>,
    ) -> Result<()> {
        let stored = self
            .get_manifest(name, &Reference::Digest(digest.clone()))
            .await?;
        let parsed = Manifest::parse(Some(&stored.media_type), &stored.bytes).ok();
        // What it holds becomes a GC candidate first, then the revision goes, then its
        // edges (the revision edge last): a delete cut short by a crash leaves a revision
        // edge without its link under a candidate, which GC undoes (see gc.rs).
        let mut released = vec![digest.clone()];
        let edges = match &parsed {
            Some(m) => {
                released.extend(m.references().cloned());
                released.extend(m.subject().map(|s| s.digest.clone()));
                edge_keys(name, digest, m)
            }
            None => vec![layout::ref_edge(digest, name, &layout::Holder::Revision)],
        };
        match guard {
            None => {
                self.remove_referrer_entry(name, digest, parsed.as_ref())
                    .await?;
                self.remove_tags_naming(name, digest, None).await?;
                for d in &released {
                    self.gc_touch(d).await?;
                }
                self.store
                    .delete(&layout::manifest_link(name, digest))
                    .await?;
            }
            Some(immutable) => {
                // The revision first (module docs), then what named it: a crash between
                // leaves tags naming nothing, which scrub removes.
                for d in &released {
                    self.gc_touch(d).await?;
                }
                self.remove_revision_unless_immutable(name, digest, immutable)
                    .await?;
                self.remove_referrer_entry(name, digest, parsed.as_ref())
                    .await?;
                self.remove_tags_naming(name, digest, Some(immutable))
                    .await?;
            }
        }
        self.manifests.invalidate(name.as_str(), &[digest.as_str()]);
        crate::failpoint::hit("delete-after-link");
        self.remove_edges(&edges).await?;
        if guard.is_some()
            && self
                .store
                .head(&layout::manifest_link(name, digest))
                .await?
                .is_some()
        {
            // Pushed again under an immutable tag since the revision went: that push's
            // edges may be among those just removed (it checks for its revision edge after
            // writing the link, this looks for the link after removing the edges: one of
            // the two sees the other).
            self.add_edges(&edges).await?;
        }
        // And again now that they are released: a pass that saw the edges just before they
        // went may have dropped the candidates written above as "referenced".
        for d in &released {
            self.gc_touch(d).await?;
        }
        // Referrers of a deleted subject go with it (their own tags with them).
        if depth < REFERRER_CASCADE_DEPTH_MAX {
            let dir = format!("{}/", layout::referrers_dir(name, digest));
            let mut pages = self.referrer_key_pages(name, digest);
            while let Some(page) = pages.next(&self.store).await? {
                for key in page {
                    let Some(r) = key.strip_prefix(&dir).and_then(layout::unflat_digest) else {
                        continue;
                    };
                    self.store.delete(&key).await?;
                    let cascade = self.delete_manifest_at_depth(name, &r, depth + 1, None);
                    match Box::pin(cascade).await {
                        Ok(()) => {}
                        Err(Error::ManifestUnknown(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    async fn remove_referrer_entry(
        &self,
        name: &RepoName,
        digest: &Digest,
        parsed: Option<&Manifest>,
    ) -> Result<()> {
        if let Some(subject) = parsed.and_then(|m| m.subject()) {
            let key = layout::referrer_entry(name, &subject.digest, digest);
            self.store.delete(&key).await?;
        }
        Ok(())
    }

    /// Removes the tags that name `digest`, except those `keep` says are immutable.
    async fn remove_tags_naming(
        &self,
        name: &RepoName,
        digest: &Digest,
        keep: Option<Immutable<'_>>,
    ) -> Result<()> {
        let mut pages = self.tag_pages(name, None);
        while let Some(page) = pages.next(&self.store).await? {
            for tag in page {
                if keep.is_some_and(|immutable| immutable(&tag)) {
                    continue;
                }
                let Ok(tag) = Tag::parse(&tag) else { continue };
                if self.resolve_tag(name, &tag).await?.as_ref() == Some(digest) {
                    self.store.delete(&layout::tag_link(name, &tag)).await?;
                    self.manifests.invalidate(name.as_str(), &[tag.as_str()]);
                }
            }
        }
        Ok(())
    }

    /// Steps 1-3 of the module docs: the revision link is removed, or the DELETE refused
    /// because an immutable tag names the manifest.
    async fn remove_revision_unless_immutable(
        &self,
        name: &RepoName,
        digest: &Digest,
        immutable: Immutable<'_>,
    ) -> Result<()> {
        let key = layout::manifest_link(name, digest);
        for _ in 0..GUARDED_ATTEMPTS_MAX {
            let Some(obj) = self.store.get(&key).await? else {
                return Err(manifest_unknown());
            };
            let mut link: RevisionLink = serde_json::from_slice(&obj.bytes)
                .map_err(|e| Error::internal(format!("revision link {name}@{digest}: {e}")))?;
            link.deleting = Some(mark_token()?);
            let marked = serde_json::to_vec(&link).map_err(Error::internal)?;
            let mark = match self
                .store
                .put(&key, marked, PutCondition::IfMatch(obj.etag))
                .await?
            {
                PutOutcome::Written(etag) => etag,
                PutOutcome::PreconditionFailed => continue,
            };
            if let Some(tag) = self.immutable_tag_of(name, digest, immutable).await? {
                link.deleting = None;
                let plain = serde_json::to_vec(&link).map_err(Error::internal)?;
                // A push may have written it again meanwhile; then it is unmarked already.
                self.store
                    .put(&key, plain, PutCondition::IfMatch(mark))
                    .await?;
                return Err(immutable_conflict(
                    name,
                    &tag,
                    &format!("the manifest {digest} it names cannot be deleted"),
                ));
            }
            crate::failpoint::pause("immutable-delete-after-check").await;
            if self.store.delete_if_match(&key, &mark).await? {
                crate::failpoint::pause("immutable-delete-after-remove").await;
                return Ok(());
            }
        }
        Err(Error::Unavailable {
            message: "the manifest was pushed again during the delete; try again".into(),
            retry_after: super::RACE_RETRY_AFTER,
        })
    }
}
