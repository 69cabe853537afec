//! Manifests, tags and referrers.

use serde::{Deserialize, Serialize};

use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::{Algorithm, Digest, Manifest, ManifestKind, Reference, RepoName, Tag};
use crate::storage::{PutCondition, Storage};

/// What a revision link records, so a GET needs no parse of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RevisionLink {
    #[serde(rename = "mediaType")]
    pub(super) media_type: String,
    pub(super) size: u64,
    /// Set (to a token unique to that DELETE) by a DELETE that checks for immutable tags
    /// before removing the revision (`manifest_delete.rs`); a push that creates such a tag
    /// writes the link again without it. Readers ignore it: the manifest is there until the
    /// link is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deleting: Option<String>,
}

/// A stored manifest as served.
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The result of a manifest PUT.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// Times a manifest PUT writes its edges again when a GC pass removed them meanwhile (each
/// pass removes a crashed PUT's edges at most once, so a second attempt normally holds).
const EDGE_ATTEMPTS_MAX: usize = 3;

/// The edge keys a manifest holds: one per blob it names, and its own revision.
pub(super) fn edge_keys(name: &RepoName, digest: &Digest, m: &Manifest) -> Vec<String> {
    let holder = layout::Holder::Manifest(digest);
    let mut keys: Vec<String> = m
        .references()
        .chain(m.subject().map(|s| &s.digest))
        .map(|d| layout::ref_edge(d, name, &holder))
        .collect();
    keys.push(layout::ref_edge(digest, name, &layout::Holder::Revision));
    keys.sort();
    keys.dedup();
    keys
}

pub(super) fn manifest_unknown() -> Error {
    Error::ManifestUnknown("manifest unknown".into())
}

/// The answer to moving or deleting an immutable tag: a conflict naming the tag.
pub fn immutable_conflict(name: &RepoName, tag: &str, what: &str) -> Error {
    Error::Conflict(format!("tag {tag} of {name} is immutable: {what}"))
}

/// Whether a manifest PUT by tag may move the tag (`Mutable`) or only create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagRule {
    Mutable,
    /// Created once with a conditional write; a PUT of the same digest again succeeds.
    Immutable,
}

impl Registry {
    /// Validates and stores a manifest under its digest, and under a tag if given.
    #[cfg(test)]
    pub async fn put_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
        rule: TagRule,
    ) -> Result<PutManifest> {
        self.put_manifest_gated(name, reference, content_type, body, rule, async |_, _| {
            Ok(())
        })
        .await
    }

    /// [`Registry::put_manifest`] with `gate` asked, with the manifest's digest and size,
    /// once it is parsed and held against GC and before anything is stored (the quota):
    /// nothing is stored when it refuses.
    pub async fn put_manifest_gated(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
        rule: TagRule,
        gate: impl AsyncFnOnce(&Digest, u64) -> Result<()>,
    ) -> Result<PutManifest> {
        let body = (content_type, body);
        self.put_manifest_checked(name, reference, body, true, rule, gate)
            .await
    }

    /// Stores a manifest fetched from an upstream: the blobs it names need not be here yet
    /// (they are fetched when pulled), but its reference edges are recorded as for a push.
    pub async fn put_manifest_mirrored(
        &self,
        name: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<PutManifest> {
        self.put_manifest_checked(
            name,
            reference,
            (content_type, body),
            false,
            TagRule::Mutable,
            async |_, _| Ok(()),
        )
        .await
    }

    /// The store of a manifest (`body`: its content type and bytes), with the blobs it names
    /// checked when `check_references`.
    async fn put_manifest_checked(
        &self,
        name: &RepoName,
        reference: &Reference,
        (content_type, body): (Option<&str>, Vec<u8>),
        check_references: bool,
        rule: TagRule,
        gate: impl AsyncFnOnce(&Digest, u64) -> Result<()>,
    ) -> Result<PutManifest> {
        let manifest = Manifest::parse(content_type, &body)
            .map_err(|e| Error::ManifestInvalid(e.to_string()))?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), &body);
                if &actual != d {
                    return Err(Error::DigestInvalid(format!(
                        "manifest digest is {actual}, not {d}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        // An immutable tag that already names another manifest: refused before anything is
        // written (the conditional write below decides the races this read cannot see).
        if let (Reference::Tag(tag), TagRule::Immutable) = (reference, rule) {
            if let Some(current) = self.resolve_tag(name, tag).await? {
                if current != digest {
                    return Err(immutable_conflict(
                        name,
                        tag.as_str(),
                        &format!("it names {current}"),
                    ));
                }
            }
        }
        // The manifest's own digest becomes a GC candidate before anything is written, and
        // its content is stored before its edges: a PUT cut short by a crash leaves edges
        // that GC finds through the candidate and can undo from the content (see gc.rs).
        //
        // Durability (see storage/fs/journal/mod.rs): the hold, the content and the edges are
        // pending writes, visible at once for the GC checks; the publishing batch below is
        // the one durable step, and it makes them durable with it (the log is a prefix).
        self.hold_blob(&digest).await?;
        let size = body.len() as u64;
        gate(&digest, size).await?;
        if self
            .store_content(&layout::blob_data(&digest), &digest, body)
            .await?
        {
            crate::metrics::METRICS
                .stored_bytes
                .fetch_add(size as i64, std::sync::atomic::Ordering::Relaxed);
        }
        crate::failpoint::hit("manifest-after-content");
        // Edges first, then the tombstone and existence checks (see gc.rs for why).
        let edges = edge_keys(name, &digest, &manifest);
        self.hold_edges(name, &digest, &manifest, &edges, check_references)
            .await?;
        crate::failpoint::hit("manifest-after-edges");
        let link = RevisionLink {
            media_type: manifest.media_type().to_string(),
            size,
            deleting: None,
        };
        let link = serde_json::to_vec(&link).map_err(Error::internal)?;
        let link_again = (rule == TagRule::Immutable).then(|| link.clone());
        // Publish in one durable step, visible only once durable: the revision link, the
        // referrers entry, the catalog entry if missing, and the tag.
        let mut batch = vec![(
            layout::manifest_link(name, &digest),
            link,
            PutCondition::Always,
        )];
        let subject = manifest.subject().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let entry = manifest.referrer_descriptor(digest.clone(), size);
            let entry = serde_json::to_vec(&entry).map_err(Error::internal)?;
            let key = layout::referrer_entry(name, subject, &digest);
            batch.push((key, entry, PutCondition::Always));
        }
        batch.extend(self.catalog_item(name));
        // The tag's old manifest matters only to untagged-manifest collection (nothing else
        // needs it: the events name the new digest): no read otherwise.
        let previous = match reference {
            Reference::Tag(tag) if rule == TagRule::Mutable && self.settings.gc_remove_untagged => {
                self.resolve_tag(name, tag).await?
            }
            _ => None,
        };
        if let Reference::Tag(tag) = reference {
            let cond = match rule {
                // Of several concurrent PUTs, on any number of nodes, one creates it.
                TagRule::Immutable => PutCondition::IfAbsent,
                TagRule::Mutable => PutCondition::Always,
            };
            batch.push((
                layout::tag_link(name, tag),
                digest.as_str().as_bytes().to_vec(),
                cond,
            ));
        }
        let outcomes = self.store.put_batch(batch).await?;
        // Looked at again now that the link is visible (see `ensure_repository`).
        self.ensure_repository(name).await?;
        match reference {
            Reference::Tag(tag) => {
                self.manifests.invalidate(name.as_str(), &[tag.as_str()]);
                let tag_written = matches!(
                    outcomes.last(),
                    Some(crate::storage::PutOutcome::Written(_))
                );
                if rule == TagRule::Immutable && !tag_written {
                    self.immutable_tag_taken(name, tag, &digest).await?;
                }
                if let Some(link) = link_again {
                    self.keep_revision(name, &digest, &manifest, &edges, link)
                        .await?;
                }
                if let Some(old) = previous.filter(|old| old != &digest) {
                    self.note_untagged(name, &old).await?;
                }
            }
            Reference::Digest(_) => self.note_untagged(name, &digest).await?,
        }
        Ok(PutManifest { digest, subject })
    }

    /// An immutable tag's conditional create found the tag there: fine if it names
    /// `digest` already, else a conflict (the revision stays, untagged).
    async fn immutable_tag_taken(&self, name: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        match self.resolve_tag(name, tag).await? {
            Some(current) if &current == digest => Ok(()),
            current => {
                // The revision stays, untagged, for `gc.remove_untagged` or a DELETE.
                self.note_untagged(name, digest).await?;
                let what = match current {
                    Some(c) => format!("it names {c}"),
                    None => "it changed during the push".to_string(),
                };
                Err(immutable_conflict(name, tag.as_str(), &what))
            }
        }
    }

    /// After an immutable tag was created (or found naming `digest`): the revision must not
    /// be on its way out. A DELETE that looks for immutable tags marks the link first and
    /// removes it only if the mark is still there (`manifest_delete.rs`), so a link marked
    /// or gone here may be removed without the DELETE having seen this tag: the link is
    /// written again (the DELETE's conditional removal then fails, and when it starts over
    /// it finds the tag), with the edges held again first if it was removed meanwhile.
    async fn keep_revision(
        &self,
        name: &RepoName,
        digest: &Digest,
        manifest: &Manifest,
        edges: &[String],
        link: Vec<u8>,
    ) -> Result<()> {
        let revision_edge = layout::ref_edge(digest, name, &layout::Holder::Revision);
        for _ in 0..EDGE_ATTEMPTS_MAX {
            match self.manifest_link(name, digest).await? {
                Some(l) if l.deleting.is_none() => {
                    // A DELETE that finished meanwhile may have removed this push's edges
                    // (see `manifest_delete.rs`, after `remove_edges`).
                    if self.store.head(&revision_edge).await?.is_none() {
                        self.hold_edges(name, digest, manifest, edges, true).await?;
                    }
                    return Ok(());
                }
                Some(_) => {}
                None => self.hold_edges(name, digest, manifest, edges, true).await?,
            }
            self.store
                .put(
                    &layout::manifest_link(name, digest),
                    link.clone(),
                    PutCondition::Always,
                )
                .await?;
            self.manifests.invalidate(name.as_str(), &[digest.as_str()]);
        }
        Err(Error::Unavailable {
            message: "the manifest was being deleted during the push; try again".into(),
            retry_after: super::RACE_RETRY_AFTER,
        })
    }

    /// The first tag pointing to `digest` for which `immutable` is true (a DELETE of the
    /// manifest is then refused).
    pub async fn immutable_tag_of(
        &self,
        name: &RepoName,
        digest: &Digest,
        immutable: impl Fn(&str) -> bool,
    ) -> Result<Option<String>> {
        let mut pages = self.tag_pages(name, None);
        while let Some(page) = pages.next(&self.store).await? {
            for tag in page {
                if !immutable(&tag) {
                    continue;
                }
                let Ok(t) = Tag::parse(&tag) else { continue };
                if self.resolve_tag(name, &t).await?.as_ref() == Some(digest) {
                    return Ok(Some(tag));
                }
            }
        }
        Ok(None)
    }

    /// Writes a manifest's edges and checks that they hold: nothing named is being deleted,
    /// every blob is in the repository, and the edges are still there (a GC pass may have
    /// removed an older, crashed PUT's copies of them just before this one wrote its own:
    /// the revision edge goes last there, so its presence here means the set is whole).
    async fn hold_edges(
        &self,
        name: &RepoName,
        digest: &Digest,
        manifest: &Manifest,
        edges: &[String],
        check_references: bool,
    ) -> Result<()> {
        let revision_edge = layout::ref_edge(digest, name, &layout::Holder::Revision);
        for _ in 0..EDGE_ATTEMPTS_MAX {
            let created = self.add_edges(edges).await?;
            if let Err(e) = self
                .check_held(name, digest, manifest, check_references)
                .await
            {
                self.remove_edges(&created).await?;
                return Err(e);
            }
            if self.store.head(&revision_edge).await?.is_some() {
                return Ok(());
            }
        }
        Err(Error::Unavailable {
            message: "the manifest's references were being collected; try again".into(),
            retry_after: super::RACE_RETRY_AFTER,
        })
    }

    /// After the edges are written: nothing named may be mid-deletion, and every blob must
    /// be in the repository.
    async fn check_held(
        &self,
        name: &RepoName,
        digest: &Digest,
        m: &Manifest,
        check_references: bool,
    ) -> Result<()> {
        let named = m.references().chain(m.subject().map(|s| &s.digest));
        if let Some(d) = self
            .first_tombstoned(named.chain(std::iter::once(digest)))
            .await?
        {
            return Err(Error::ManifestBlobUnknown(format!(
                "blob {d} is being garbage-collected; push it again"
            )));
        }
        if !check_references {
            return Ok(());
        }
        self.check_references(name, m).await
    }

    /// Every blob and child a manifest names must be in the repository (a subject need not).
    ///
    /// The repository's link is enough, with no HEAD of the blob: a link is written only for
    /// a stored blob, and GC removes a blob's links before its data, under its tombstone.
    /// `check_held` found no tombstone after this PUT's edges were written, so either the
    /// pass that deleted the blob had finished, and its links are gone, or a pass that starts
    /// now sees the edge and keeps the blob (gc.rs module docs).
    async fn check_references(&self, name: &RepoName, m: &Manifest) -> Result<()> {
        let blobs = m.config().into_iter().chain(m.layers().iter());
        for d in blobs {
            if !self.is_linked(name, &d.digest).await? {
                return Err(Error::ManifestBlobUnknown(format!(
                    "blob {} is not in this repository",
                    d.digest
                )));
            }
        }
        if m.kind() == ManifestKind::Index && !self.settings.allow_missing_index_children {
            for child in m.manifests() {
                if self.manifest_link(name, &child.digest).await?.is_none() {
                    return Err(Error::ManifestBlobUnknown(format!(
                        "manifest {} is not in this repository",
                        child.digest
                    )));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn manifest_link(
        &self,
        name: &RepoName,
        d: &Digest,
    ) -> Result<Option<RevisionLink>> {
        let Some(obj) = self.store.get(&layout::manifest_link(name, d)).await? else {
            return Ok(None);
        };
        let link = serde_json::from_slice(&obj.bytes)
            .map_err(|e| Error::internal(format!("revision link {name}@{d}: {e}")))?;
        Ok(Some(link))
    }

    /// Whether the repository has the manifest, read from storage rather than the cache: for
    /// decisions that must see a deletion by another process at once (replication).
    pub async fn manifest_stored(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let link = layout::manifest_link(name, d);
        Ok(self.store.head(&link).await?.is_some())
    }

    /// The digest a tag points to.
    pub async fn resolve_tag(&self, name: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let Some(obj) = self.store.get(&layout::tag_link(name, tag)).await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&obj.bytes).map_err(Error::internal)?;
        Ok(Some(Digest::parse(text.trim()).map_err(Error::internal)?))
    }

    async fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Option<Digest>> {
        match reference {
            Reference::Digest(d) => Ok(Some(d.clone())),
            Reference::Tag(t) => self.resolve_tag(name, t).await,
        }
    }

    /// Whether `reference` may be served from this process's cache. Digests always (their
    /// content is immutable; a deletion elsewhere is seen within the cache's TTL); tags only
    /// on the fs backend, where this process makes every write but the out-of-process
    /// `origin gc` and `origin scrub --retention` (seen within the TTL too): on shared
    /// object storage another node may move a tag at any moment, and its next read must see
    /// that.
    fn cacheable(&self, reference: &Reference) -> bool {
        matches!(reference, Reference::Digest(_)) || !self.store.shared_with_other_nodes()
    }

    fn cached(&self, name: &RepoName, reference: &Reference) -> Option<super::cache::Cached> {
        if !self.cacheable(reference) {
            return None;
        }
        self.manifests.get(name.as_str(), reference.as_str())
    }

    /// Digest, media type and size (HEAD): from the cache, or the links alone.
    pub async fn manifest_meta(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String, u64)> {
        if let Some(hit) = self.cached(name, reference) {
            return Ok((
                hit.digest,
                hit.media_type.to_string(),
                hit.bytes.len() as u64,
            ));
        }
        self.manifest_meta_uncached(name, reference).await
    }

    async fn manifest_meta_uncached(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String, u64)> {
        let digest = self
            .resolve(name, reference)
            .await?
            .ok_or_else(manifest_unknown)?;
        let link = self
            .manifest_link(name, &digest)
            .await?
            .ok_or_else(manifest_unknown)?;
        Ok((digest, link.media_type, link.size))
    }

    /// A manifest by tag or digest, from the shared cache when it has it.
    pub async fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        if let Some(hit) = self.cached(name, reference) {
            return Ok(StoredManifest {
                digest: hit.digest,
                media_type: hit.media_type.to_string(),
                bytes: hit.bytes.to_vec(),
            });
        }
        let generation = self.manifests.generation();
        let (digest, media_type, _) = self.manifest_meta_uncached(name, reference).await?;
        let obj = self
            .store
            .get(&layout::blob_data(&digest))
            .await?
            .ok_or_else(|| Error::internal(format!("manifest {digest} linked but not stored")))?;
        if self.cacheable(reference) {
            self.manifests.insert(
                generation,
                name.as_str(),
                reference.as_str(),
                &digest,
                &media_type,
                &obj.bytes,
            );
        }
        Ok(StoredManifest {
            digest,
            media_type,
            bytes: obj.bytes,
        })
    }

    pub async fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<()> {
        let digest = self.resolve_tag(name, tag).await?;
        let deleted = self.store.delete(&layout::tag_link(name, tag)).await?;
        self.manifests.invalidate(name.as_str(), &[tag.as_str()]);
        if !deleted {
            return Err(manifest_unknown());
        }
        if let Some(d) = digest {
            self.note_untagged(name, &d).await?;
        }
        Ok(())
    }

    /// True when no tag of the repository points to the manifest.
    pub async fn is_untagged(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let mut pages = self.tag_pages(name, None);
        while let Some(page) = pages.next(&self.store).await? {
            for tag in page {
                let Ok(t) = Tag::parse(&tag) else { continue };
                if self.resolve_tag(name, &t).await?.as_ref() == Some(digest) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
