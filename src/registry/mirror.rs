//! What the pull-through cache needs of the registry: pull records for eviction, and
//! reading an upload's data while it is written.

use std::time::Duration;

use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName, UploadId};
use crate::storage::{PutCondition, Storage};

/// The pull-through cache streams a blob to waiting clients from the file being written,
/// where the backend has one (`blob_reads_can_follow_a_growing_file`); on object storage
/// clients wait for the commit instead.
fn no_file_on_s3() -> Error {
    Error::internal("object storage has no file to follow")
}

/// Pull records looked at per eviction pass.
const EVICTION_BATCH_MAX: usize = 100_000;

impl Registry {
    /// Opens an upload session's data as a file for reading (readers follow the writer).
    /// Only where blob reads can follow a growing file: object storage cannot read a session
    /// before it is committed.
    pub async fn upload_data_file(
        &self,
        name: &RepoName,
        id: &UploadId,
    ) -> Result<Option<compio::fs::File>> {
        self.followable_file(&layout::upload_data(name, id))
            .await
            .map(|f| f.map(|(file, _)| file))
    }

    /// A stored blob wherever it is linked (the mirror links it where it was asked for), as
    /// a file with its size. Only where blob reads can follow a growing file, as above.
    pub async fn open_stored_blob(&self, d: &Digest) -> Result<Option<(compio::fs::File, u64)>> {
        self.followable_file(&layout::blob_data(d)).await
    }

    async fn followable_file(&self, key: &str) -> Result<Option<(compio::fs::File, u64)>> {
        if !self.store.blob_reads_can_follow_a_growing_file() {
            return Err(no_file_on_s3());
        }
        Ok(self.store.open_file(key).await?)
    }

    /// Records that a mirrored manifest was pulled now.
    pub async fn note_pulled(&self, name: &RepoName, d: &Digest) -> Result<()> {
        self.store
            .put(
                &layout::mirror_pulled(name, d),
                Vec::new(),
                PutCondition::Always,
            )
            .await?;
        Ok(())
    }

    /// Deletes manifests under `namespace` whose last pull is older than `max_age` (with
    /// their tags; GC then removes the blobs nothing else holds). Returns them.
    pub async fn evict_unpulled(
        &self,
        namespace: &str,
        max_age: Duration,
        dry_run: bool,
    ) -> Result<Vec<(RepoName, Digest)>> {
        let keys = self
            .store
            .list(layout::MIRROR_PULLED_PREFIX, None, EVICTION_BATCH_MAX)
            .await?;
        let mut evicted = Vec::new();
        for key in keys {
            let Some((name, d)) = key
                .strip_prefix(layout::MIRROR_PULLED_PREFIX)
                .and_then(layout::parse_untagged)
            else {
                continue;
            };
            let inside = name
                .as_str()
                .strip_prefix(namespace)
                .is_some_and(|rest| rest.starts_with('/'));
            if !inside {
                continue;
            }
            let Some(meta) = self.store.head(&key).await? else {
                continue;
            };
            let age = self.clock.age(meta.modified);
            if age < max_age {
                continue;
            }
            if dry_run {
                evicted.push((name, d));
                continue;
            }
            match self.delete_manifest(&name, &d).await {
                Ok(()) => {}
                Err(Error::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
            self.store.delete(&key).await?;
            crate::metrics::METRICS
                .mirror_evicted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(repository = %name, digest = %d, "evicted mirrored manifest not pulled for {}s", age.as_secs());
            evicted.push((name, d));
        }
        Ok(evicted)
    }
}
