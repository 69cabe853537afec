//! What differs between the backends, as questions the layers above ask of a `Backend`, so
//! that nothing above `storage/` names a backend. Each answer is fixed for a backend (and its
//! configuration) for the life of the process; the ones that shape what is stored
//! (`one_object_per_link`, `upload_meta_inline`) never change for a backend at all.

use std::io;
use std::time::{Duration, SystemTime};

use super::{Backend, Result, Storage};

impl Backend {
    /// Whether a lookup (`head`, `get`) is a local stat or read rather than a request over
    /// the network. A caller may then check before it writes (a stat costs less than a
    /// durable write it saves); when it is not, a check costs as much as the conditional
    /// write it would save, and callers order their lookups so that the common miss is one
    /// request.
    pub fn lookups_are_local(&self) -> bool {
        matches!(self, Backend::Fs(_))
    }

    /// Whether `put_batch` is one durable step however many items it holds (the fs journal),
    /// so an item added to a batch that is written anyway costs nothing. On object storage
    /// every item is a request of its own.
    pub fn batch_items_are_free(&self) -> bool {
        matches!(self, Backend::Fs(_))
    }

    /// Whether a repository's link to a blob is stored as one object, the blob's index
    /// entry, rather than as a link under the repository plus an index entry under the blob,
    /// written in one batch. One object where every object is a request (object storage);
    /// two where a batch is one durable step (fs). This decides the stored layout, so the
    /// answer never changes for a backend.
    pub fn one_object_per_link(&self) -> bool {
        matches!(self, Backend::S3(_))
    }

    /// Whether other nodes may write this storage while this process runs (shared object
    /// storage): then an object that can change (a tag) may be changed by another node at
    /// any moment, and must not be served from this process's memory. On the fs backend this
    /// process (the journal's owner) makes every write but those of the offline commands.
    pub fn shared_with_other_nodes(&self) -> bool {
        matches!(self, Backend::S3(_))
    }

    /// Whether this process alone may write the storage for as long as it runs: the fs
    /// server, which holds the root's journal (one process per root). Then whatever another
    /// process left claimed in it was left by a process that is gone.
    pub fn owned_by_this_process(&self) -> bool {
        matches!(self, Backend::Fs(s) if s.has_journal())
    }

    /// Whether a stored object is a local file that a reader may follow while an upload
    /// session appends to it (`open_file`), so that clients are served a blob while it is
    /// still being written (the pull-through cache). On object storage a session's bytes
    /// cannot be read before its commit: clients wait for the commit instead.
    pub fn blob_reads_can_follow_a_growing_file(&self) -> bool {
        matches!(self, Backend::Fs(_))
    }

    /// Whether every open upload writer holds up to one part in memory (S3 multipart parts,
    /// `storage.s3.multipart_part_size`), so that callers keeping many writers open at once
    /// must bound them more tightly. The fs backend writes straight to the file.
    pub fn upload_writers_hold_a_part_in_memory(&self) -> bool {
        matches!(self, Backend::S3(_))
    }

    /// Whether reads of large objects are answered with a redirect to a presigned URL of the
    /// object (`storage.s3.redirect`), so that the bytes go from the store to the client.
    pub fn reads_redirect_to_the_store(&self) -> bool {
        matches!(self, Backend::S3(s) if s.redirect())
    }

    /// A presigned URL to read `key` from, when reads are redirected
    /// (`reads_redirect_to_the_store`); `None` otherwise.
    pub fn redirect_url(&self, key: &str) -> Result<Option<String>> {
        match self {
            Backend::S3(s) if s.redirect() => Ok(Some(s.presigned_get(key)?)),
            _ => Ok(None),
        }
    }

    /// Opens `key` as a local file, with its size when opened, for a reader that follows a
    /// writer appending to it; `None` if absent. Only where
    /// `blob_reads_can_follow_a_growing_file`: object storage has no file (`Unsupported`).
    pub async fn open_file(&self, key: &str) -> Result<Option<(compio::fs::File, u64)>> {
        match self {
            Backend::Fs(s) => Ok(s.open_read(key).await?.map(|r| {
                let size = super::BlobReader::size(&r);
                (r.into_file(), size)
            })),
            Backend::S3(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "object storage has no file to follow",
            )
            .into()),
        }
    }

    /// Keys under `prefix` with their modification times, at most `limit`: S3 takes them from
    /// the listing (no HEAD per key), the fs backend from a stat per key.
    pub async fn list_modified(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, SystemTime)>> {
        match self {
            Backend::S3(s) => s.list_modified(prefix, limit).await,
            Backend::Fs(s) => {
                let mut out = Vec::new();
                for key in s.list(prefix, None, limit).await? {
                    if let Some(meta) = s.head(&key).await? {
                        out.push((key, meta.modified));
                    }
                }
                Ok(out)
            }
        }
    }

    /// Takes the write journal that group-commits a server's writes, where the backend has
    /// one (fs: `FsStorage::with_journal`, one process per root); other backends are returned
    /// as they are. Blocking: call at startup.
    pub fn with_write_journal(self) -> io::Result<Self> {
        match self {
            Backend::Fs(s) => Ok(Backend::Fs(s.with_journal()?)),
            other => Ok(other),
        }
    }

    /// Free space of the filesystem under the store, where the store is one (fs); `None`
    /// for object storage, whose space is the provider's to manage.
    pub fn free_space(&self) -> Option<io::Result<crate::sys::FsSpace>> {
        match self {
            Backend::Fs(s) => Some(crate::sys::fs_space(s.root())),
            Backend::S3(_) => None,
        }
    }

    /// Removes what crashed writes left behind (the fs backend's temp files) at least
    /// `age_min` old; returns how many. Object storage writes leave no such debris: 0.
    pub async fn cleanup_temp(&self, age_min: Duration) -> Result<u64> {
        match self {
            Backend::Fs(s) => s.cleanup_temp(age_min).await,
            Backend::S3(_) => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use compio::runtime::Runtime;

    use super::super::tests::TempDir;
    use super::super::{FsStorage, PutCondition, S3Storage};
    use super::*;

    fn fs_backend(dir: &TempDir) -> Backend {
        FsStorage::new(dir.path().join("store")).unwrap().into()
    }

    /// An S3 backend that is never sent a request: capabilities are answered from its
    /// configuration alone.
    fn s3_backend(redirect: bool) -> Backend {
        let text = format!(
            "bucket = \"caps\"\nendpoint = \"http://127.0.0.1:9\"\npath_style = true\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\nredirect = {redirect}\n"
        );
        let config = toml::from_str(&text).unwrap();
        S3Storage::new(&config).unwrap().into()
    }

    /// Each capability answers as documented for the fs backend and for S3 (with and without
    /// redirects), and the per-backend answers differ where the backends do.
    #[test]
    fn capabilities_per_backend() {
        let dir = TempDir::new();
        let fs = fs_backend(&dir);
        for s3 in [s3_backend(false), s3_backend(true)] {
            for (b, is_fs) in [(&fs, true), (&s3, false)] {
                assert_eq!(b.lookups_are_local(), is_fs);
                assert_eq!(b.batch_items_are_free(), is_fs);
                assert_eq!(b.one_object_per_link(), !is_fs);
                assert_eq!(b.shared_with_other_nodes(), !is_fs);
                assert_eq!(b.blob_reads_can_follow_a_growing_file(), is_fs);
                assert_eq!(b.upload_writers_hold_a_part_in_memory(), !is_fs);
                assert_eq!(b.upload_meta_inline(), !is_fs);
            }
        }
        let space = fs.free_space().unwrap().unwrap();
        assert!(space.total_bytes > 0 && space.available_bytes <= space.total_bytes);
        assert!(s3_backend(false).free_space().is_none());
        assert!(!fs.reads_redirect_to_the_store());
        assert_eq!(fs.redirect_url("blobs/x").unwrap(), None);
        assert!(!s3_backend(false).reads_redirect_to_the_store());
        assert_eq!(s3_backend(false).redirect_url("blobs/x").unwrap(), None);
        let s3 = s3_backend(true);
        assert!(s3.reads_redirect_to_the_store());
        let url = s3.redirect_url("blobs/x").unwrap().unwrap();
        assert!(url.starts_with("http://127.0.0.1:9/caps/blobs/x?"), "{url}");
    }

    /// The fs backend opens a file to follow and lists modification times by stat; S3
    /// refuses the file without a request.
    #[test]
    fn fs_files_and_modified_times() {
        Runtime::new().unwrap().block_on(async {
            let dir = TempDir::new();
            let fs = fs_backend(&dir);
            fs.put("d/a", vec![1, 2, 3], PutCondition::Always)
                .await
                .unwrap();
            fs.put("d/b", vec![4], PutCondition::Always).await.unwrap();
            let (_file, size) = fs.open_file("d/a").await.unwrap().unwrap();
            assert_eq!(size, 3);
            assert!(fs.open_file("d/none").await.unwrap().is_none());
            let listed = fs.list_modified("d/", 10).await.unwrap();
            let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, ["d/a", "d/b"]);
            let head = fs.head("d/a").await.unwrap().unwrap();
            assert_eq!(listed[0].1, head.modified);
            assert_eq!(fs.cleanup_temp(Duration::ZERO).await.unwrap(), 0);
            let s3 = s3_backend(false);
            assert!(s3.open_file("d/a").await.is_err());
            assert_eq!(s3.cleanup_temp(Duration::ZERO).await.unwrap(), 0);
        });
    }
}
