//! Registry semantics over the storage trait: repositories, blobs, manifests, tags,
//! referrers and upload sessions. Knows nothing of HTTP; knows keys only through `layout`.

pub mod browse;
pub mod cache;
pub mod gc;
pub mod immutable;
pub mod layout;
pub mod listing;
pub mod manifest_delete;
pub mod manifests;
pub mod mirror;
pub mod quota;
pub mod retention;
pub mod scrub;
pub mod session_cap;
pub mod sizes;
pub mod upload_expiry;
pub mod uploads;

use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName};
use crate::storage::{Backend, BackendReader, PutCondition, Storage};

/// How long a client that lost a race with another writer or with GC (the manifest pushed
/// or deleted meanwhile) waits before trying again.
const RACE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Settings the registry layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub allow_missing_index_children: bool,
    pub upload_sessions_per_repository_max: usize,
    pub upload_idle_expiry: std::time::Duration,
    /// Delete manifests that lost their last tag (after the GC grace period).
    pub gc_remove_untagged: bool,
    /// `gc.debris_after`: GC judges a manifest PUT's edges crash debris only once no PUT
    /// that started before can still be running (validated against `server.query_timeout`).
    pub debris_after: std::time::Duration,
}

pub struct Registry {
    pub store: Backend,
    pub settings: Settings,
    /// Shared by every worker of the process.
    pub manifests: std::sync::Arc<cache::ManifestCache>,
    /// Estimates of open upload sessions per repository; shared by the workers of a process
    /// when built with [`Registry::with_session_cap`].
    pub session_cap: std::sync::Arc<session_cap::SessionCap>,
    /// Sizes of linked blobs; this worker's.
    sizes: sizes::BlobSizes,
    /// What GC, upload expiry, scrub and mirror eviction read the time from.
    pub clock: crate::clock::Clock,
}

impl Registry {
    pub fn new(
        store: Backend,
        settings: Settings,
        manifests: std::sync::Arc<cache::ManifestCache>,
    ) -> Self {
        Registry {
            store,
            settings,
            manifests,
            session_cap: Default::default(),
            sizes: sizes::BlobSizes::default(),
            clock: crate::clock::Clock::system(),
        }
    }

    /// Reads the time from `clock` (the system clock unless a test moves it).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Shares the session-cap estimates with the other workers of the process.
    pub fn with_session_cap(mut self, cap: std::sync::Arc<session_cap::SessionCap>) -> Self {
        self.session_cap = cap;
        self
    }

    /// Records that a repository exists (for the catalog). Called *after* the content it
    /// records is written: GC drops the entry of an emptied repository and then looks for
    /// content again, so either GC sees the new content or this sees the entry gone (no
    /// in-memory shortcut: the entry may have been dropped by another worker or process).
    ///
    /// A repository enters the catalog with its first manifest (its content: blobs alone,
    /// or open uploads, do not list it), so only a manifest PUT calls this. On object
    /// storage it is one conditional create (`If-None-Match: *`; a 412 means it is there),
    /// not a HEAD and then a create; on the fs backend a stat is cheaper than a write.
    pub async fn ensure_repository(&self, name: &RepoName) -> Result<()> {
        let key = layout::catalog_entry(name);
        if self.store.lookups_are_local() && self.store.head(&key).await?.is_some() {
            return Ok(());
        }
        self.store
            .put(
                &key,
                name.as_str().as_bytes().to_vec(),
                PutCondition::IfAbsent,
            )
            .await?;
        Ok(())
    }

    /// The catalog entry as an item of a publishing batch, on the fs backend, where the
    /// batch decides it with a stat and no extra flush. On object storage it would be one
    /// more request per push: `ensure_repository` after the batch does the job there.
    fn catalog_item(&self, name: &RepoName) -> Option<(String, Vec<u8>, PutCondition)> {
        self.store.batch_items_are_free().then(|| {
            (
                layout::catalog_entry(name),
                name.as_str().as_bytes().to_vec(),
                PutCondition::IfAbsent,
            )
        })
    }

    pub async fn repository_exists(&self, name: &RepoName) -> Result<bool> {
        Ok(self
            .store
            .head(&layout::catalog_entry(name))
            .await?
            .is_some())
    }

    /// Size of a stored blob, wherever it is linked.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self
            .store
            .head(&layout::blob_data(digest))
            .await?
            .map(|m| m.size))
    }

    /// Size of a blob the repository may see: linked as a layer or as a manifest.
    ///
    /// On object storage, when this node does not know the blob's size, the blob itself is
    /// asked first: a client HEADs every blob before pushing it, and a blob stored nowhere
    /// is then one request (its HEAD) instead of two (the link and the manifest revision).
    /// A blob that is there costs what it did (its HEAD, then the link). Every answer still
    /// comes from storage: the cached size only chooses the order.
    pub async fn repo_blob_size(&self, name: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        if !self.store.lookups_are_local() && self.sizes.get(digest).is_none() {
            let seen = self.sizes.seen();
            let Some(size) = self.blob_size(digest).await? else {
                return Ok(None);
            };
            // Stored when its HEAD answered, and GC removes a blob's links before its data:
            // a link found now is of a blob that was there.
            if !self.is_linked(name, digest).await? {
                return Ok(None);
            }
            self.sizes.insert(seen, digest, size);
            return Ok(Some(size));
        }
        if !self.is_linked(name, digest).await? {
            return Ok(None);
        }
        // Linked, so stored (see sizes.rs): its size may come from memory.
        if let Some(size) = self.sizes.get(digest) {
            return Ok(Some(size));
        }
        let seen = self.sizes.seen();
        let size = self.blob_size(digest).await?;
        if let Some(size) = size {
            self.sizes.insert(seen, digest, size);
        }
        Ok(size)
    }

    /// Where the repository's layer link to a blob is. On the fs backend the link lives
    /// under the repository and GC finds it through an index entry under the blob
    /// (`linked/`); on object storage the index entry *is* the link, one object instead of
    /// two per blob linked (GC lists the same prefix either way).
    pub(crate) fn layer_link_key(&self, name: &RepoName, digest: &Digest) -> String {
        if self.store.one_object_per_link() {
            layout::link_index(digest, name)
        } else {
            layout::layer_link(name, digest)
        }
    }

    pub(crate) async fn is_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        if self
            .store
            .head(&self.layer_link_key(name, digest))
            .await?
            .is_some()
        {
            return Ok(true);
        }
        Ok(self
            .store
            .head(&layout::manifest_link(name, digest))
            .await?
            .is_some())
    }

    pub async fn open_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BackendReader>> {
        if !self.store.lookups_are_local() {
            // The blob first, as `repo_blob_size` does, with its GET rather than a HEAD (the
            // body is what a GET serves next): a blob stored nowhere is one request, one
            // that is there its GET and the link's HEAD.
            let key = layout::blob_data(digest);
            let Some(reader) = self.store.open_read_started(&key).await? else {
                return Ok(None);
            };
            return Ok(self.is_linked(name, digest).await?.then_some(reader));
        }
        if !self.is_linked(name, digest).await? {
            return Ok(None);
        }
        Ok(self.store.open_read(&layout::blob_data(digest)).await?)
    }

    /// A small blob of repository `name` whole (an image config), with its size: `None` when
    /// the repository has no such blob, no bytes when it is larger than `bytes_max`.
    pub async fn small_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        bytes_max: u64,
    ) -> Result<Option<(u64, Option<Vec<u8>>)>> {
        let Some(size) = self.repo_blob_size(name, digest).await? else {
            return Ok(None);
        };
        if size > bytes_max {
            return Ok(Some((size, None)));
        }
        let obj = self.store.get(&layout::blob_data(digest)).await?;
        Ok(obj.map(|o| (size, Some(o.bytes))))
    }

    /// Whether blob GETs answer with a redirect to the bucket (`storage.s3.redirect`).
    pub fn redirects_blobs(&self) -> bool {
        self.store.reads_redirect_to_the_store()
    }

    /// A presigned URL of a stored blob, when blobs are served by redirect. The caller has
    /// done the checks of a streamed GET (policy, [`Registry::repo_blob_size`]).
    pub fn blob_redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.store.redirect_url(&layout::blob_data(digest))?)
    }

    /// Lets the repository see a stored blob. The caller holds the blob against GC first
    /// ([`Registry::hold_blob`]) and has stored it: a link is only ever written for a blob
    /// that is there (GC removes the links before the blob, see gc.rs). The index entry goes
    /// first, so every link can be found from its blob. No catalog entry: a repository is
    /// listed from its first manifest (see `ensure_repository`).
    pub async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        if self.store.one_object_per_link() {
            // Object storage: the index entry is the link (`layer_link_key`), one PUT.
            self.store
                .put(
                    &self.layer_link_key(name, digest),
                    digest.as_str().as_bytes().to_vec(),
                    PutCondition::Always,
                )
                .await?;
            return Ok(());
        }
        // One durable step: the index entry (so GC can find the link) before the link.
        let batch = vec![
            (
                layout::link_index(digest, name),
                Vec::new(),
                PutCondition::Always,
            ),
            (
                layout::layer_link(name, digest),
                digest.as_str().as_bytes().to_vec(),
                PutCondition::Always,
            ),
        ];
        self.store.put_batch(batch).await?;
        Ok(())
    }

    /// Stores content-addressed bytes under `key` unless they are there already, and says
    /// whether it wrote them. Pending (`Storage::put_pending`): the request's publishing
    /// write makes them durable. Bytes found in place are checked against `digest` first,
    /// since a power loss may have left a file a pending write never made durable; wrong
    /// bytes are replaced.
    pub async fn store_content(&self, key: &str, digest: &Digest, body: Vec<u8>) -> Result<bool> {
        let outcome = self
            .store
            .put_pending(key, body.clone(), PutCondition::IfAbsent)
            .await?;
        if matches!(outcome, crate::storage::PutOutcome::Written(_)) {
            return Ok(true);
        }
        let intact = match self.store.get(key).await? {
            Some(obj) => crate::oci::Digest::of(digest.algorithm(), &obj.bytes) == *digest,
            None => false,
        };
        if intact {
            return Ok(false);
        }
        tracing::warn!(%key, "stored content did not match its digest; replaced");
        self.store
            .put_pending(key, body, PutCondition::Always)
            .await?;
        Ok(true)
    }

    /// A whole small blob in one request (a monolithic push): held, stored and linked with
    /// a single durable step, no upload session. `body` must hash to `digest` (checked);
    /// then, once held, `gate` is asked with its size (a `required` webhook, the quota), and
    /// nothing is stored when it refuses.
    pub async fn put_small_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        body: Vec<u8>,
        gate: impl AsyncFnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let actual = Digest::of(digest.algorithm(), &body);
        if &actual != digest {
            return Err(Error::DigestInvalid(format!(
                "content digest is {actual}, not {digest}"
            )));
        }
        let size = body.len() as u64;
        // Held first, as in `upload_finish_gated`.
        self.hold_blob(digest).await?;
        gate(size).await?;
        if self
            .store_content(&layout::blob_data(digest), digest, body)
            .await?
        {
            crate::metrics::METRICS
                .stored_bytes
                .fetch_add(size as i64, std::sync::atomic::Ordering::Relaxed);
        }
        crate::failpoint::hit("small-blob-after-content");
        self.link_blob(name, digest).await
    }

    /// Removes the repository's link to a blob; the data stays for other repositories (and
    /// for garbage collection to decide).
    pub async fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        let had = self
            .store
            .delete(&self.layer_link_key(name, digest))
            .await?;
        if had {
            self.gc_touch(digest).await?;
        }
        Ok(had)
    }

    /// Mounts a blob into `name`: from `from` when it has it, or from anywhere when `from`
    /// is not given and the blob is stored. Returns false when there is nothing to mount.
    pub async fn mount_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        let mounted = self
            .mount_blob_gated(name, digest, from, async |_| Ok(()))
            .await?;
        Ok(mounted.is_some())
    }

    /// [`Registry::mount_blob`] with `gate` asked, with the blob's size, before the link is
    /// written (a `required` webhook); nothing is linked when it refuses. Returns the size
    /// of the blob mounted, or None when there is nothing to mount.
    pub async fn mount_blob_gated(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        gate: impl AsyncFnOnce(u64) -> Result<()>,
    ) -> Result<Option<u64>> {
        // Held first: once held, a blob found stored stays until the grace period ends.
        self.hold_blob(digest).await?;
        let available = match from {
            Some(src) => self.repo_blob_size(src, digest).await?,
            None => self.blob_size(digest).await?,
        };
        if let Some(size) = available {
            gate(size).await?;
            self.link_blob(name, digest).await?;
        }
        Ok(available)
    }
}
