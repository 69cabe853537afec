//! Upload expiry: sessions idle for longer than `uploads.idle_expiry` are removed with their
//! data, found through the index on the fs backend and by listing the sessions themselves
//! on object storage (see `uploads.rs`).

use std::time::SystemTime;

use super::uploads::StateFile;
use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{RepoName, UploadId};
use crate::storage::Storage;

/// Expiry passes look at this many sessions at most per call, so one pass stays short.
const EXPIRY_BATCH_MAX: usize = 10_000;

impl Registry {
    /// Removes sessions idle for longer than the configured expiry. Returns how many.
    pub async fn expire_uploads(&self) -> Result<usize> {
        if self.store.upload_meta_inline() {
            return self.expire_listed_sessions().await;
        }
        let keys = self
            .store
            .list(layout::UPLOAD_INDEX_PREFIX, None, EXPIRY_BATCH_MAX)
            .await?;
        let now = self.clock.unix_secs();
        let expiry = self.settings.upload_idle_expiry.as_secs();
        let mut removed = 0;
        for key in keys {
            let Some(id) = key
                .strip_prefix(layout::UPLOAD_INDEX_PREFIX)
                .and_then(|s| UploadId::parse(s).ok())
            else {
                continue;
            };
            let Some(index) = self.store.get(&key).await? else {
                continue;
            };
            let Some(name) = std::str::from_utf8(&index.bytes)
                .ok()
                .and_then(|s| RepoName::parse(s).ok())
            else {
                self.store.delete(&key).await?;
                continue;
            };
            // Without a readable state (a session being created, or one a crash cut short),
            // the index's own age decides.
            let state = self.read_state(&name, &id).await?;
            let updated =
                match state.and_then(|bytes| serde_json::from_slice::<StateFile>(&bytes).ok()) {
                    Some(state) => state.updated,
                    None => match self.store.head(&key).await? {
                        Some(meta) => meta
                            .modified
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        None => continue,
                    },
                };
            if now.saturating_sub(updated) >= expiry {
                self.upload_cancel(&name, &id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Expiry on object storage, with no index: one listing of every session with its
    /// LastModified (the session object is rewritten by every save, so that is when it was
    /// last used). A staged part whose session is not listed (a commit removes the parts its
    /// state names; a crashed or losing writer's unrecorded part stays) goes once it is as
    /// old as the expiry: a part sorts right after its session, so the listing shows both.
    async fn expire_listed_sessions(&self) -> Result<usize> {
        let listed = self
            .store
            .list_modified(layout::UPLOAD_INDEX_PREFIX, EXPIRY_BATCH_MAX)
            .await?;
        let expiry = self.settings.upload_idle_expiry;
        let now = self.clock.now();
        let old = |t: SystemTime| now.duration_since(t).unwrap_or_default() >= expiry;
        let mut sessions = std::collections::HashSet::new();
        let mut removed = 0;
        for (key, modified) in listed {
            let Some(rest) = key.strip_prefix(layout::UPLOAD_INDEX_PREFIX) else {
                continue;
            };
            if let Some((session, _)) = rest.split_once(".part-") {
                if !sessions.contains(session) && old(modified) {
                    self.store.remove(&key).await?;
                }
                continue;
            }
            let Some((name, id)) = layout::parse_upload_session(rest) else {
                continue;
            };
            sessions.insert(rest.to_string());
            if old(modified) && self.upload_cancel(&name, &id).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A session's stored state (fs: its own object).
    async fn read_state(&self, name: &RepoName, id: &UploadId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .store
            .get(&layout::upload_state(name, id))
            .await?
            .map(|o| o.bytes))
    }
}
