//! Open files: blob readers and upload writers, and the file-level helpers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;

use compio::buf::{IntoInner, IoBuf, IoBufMut};
use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAtExt};
use compio::BufResult;
use sha2::{Digest, Sha256};

use super::super::{BlobReader, Etag, Result, UploadWriter, TEMP_PREFIX};
use super::HASH_INLINE_BYTES_MAX;

/// An object opened for serving. Exposes its fd for `sendfile(2)`.
#[derive(Debug, Clone)]
pub struct FsReader {
    pub(super) file: File,
    pub(super) size: u64,
}

impl FsReader {
    /// The open file, for serving it (read_at or sendfile) from the HTTP layer.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl BlobReader for FsReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> BufResult<usize, B> {
        self.file.read_at(buf, offset).await
    }

    #[cfg(test)]
    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

impl AsRawFd for FsReader {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for FsReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Upload data open for writing.
#[derive(Debug)]
pub struct FsUpload {
    pub(super) file: File,
}

impl UploadWriter for FsUpload {
    async fn write_all_at<B: IoBuf>(&mut self, buf: B, offset: u64) -> BufResult<(), B> {
        let len = buf.buf_len() as u64;
        let res = self.file.write_all_at(buf, offset).await;
        if res.0.is_ok() {
            start_writeback(&self.file, offset, len);
        }
        res
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        Ok(self.file.set_len(len).await?)
    }

    async fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_data().await?)
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.file.metadata().await?.len())
    }
}

/// Upload data is handed to the disk in windows of this size as it arrives, so the fsync at
/// commit finds little left to write (the disk works while the rest is still received).
pub(super) const WRITEBACK_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// When a write completes a writeback window, starts writing that window out (not waiting
/// for it: `SYNC_FILE_RANGE_WRITE` only queues the I/O).
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (before, after) = (
        offset / WRITEBACK_WINDOW_BYTES,
        (offset + len) / WRITEBACK_WINDOW_BYTES,
    );
    if after > before {
        let start = (after - 1) * WRITEBACK_WINDOW_BYTES;
        // SAFETY: plain syscall on an open descriptor; failure only loses the head start.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start as libc::off64_t,
                WRITEBACK_WINDOW_BYTES as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

/// Opens a regular file: `None` if it (or a parent) is missing or it is a directory.
pub(super) async fn open_file(path: &Path, options: &OpenOptions) -> Result<Option<(File, u64)>> {
    let file = match options.open(path).await {
        Ok(file) => file,
        Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((file, meta.len())))
}

/// `open_file` for reading, on this thread when that cannot wait for the disk (see
/// `sys::open_here`: always with the polling driver, from the dentry cache with io_uring),
/// with an fstat on the open file; otherwise through the ring.
pub(super) async fn open_for_read(path: &Path) -> Result<Option<(File, u64)>> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let file = match crate::sys::open_here(path) {
        Ok(crate::sys::Opened::Here(f)) => f,
        Ok(crate::sys::Opened::Ring) => {
            return open_file(path, OpenOptions::new().read(true)).await
        }
        Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    // SAFETY: the descriptor was just opened and its ownership moves to the compio File.
    let file = unsafe { File::from_raw_fd(file.into_raw_fd()) };
    Ok(Some((file, meta.len())))
}

/// Reads `size` bytes from the start of `file`: on this thread what can be read without
/// waiting for the disk (`sys::read_here_at`), the rest through the ring. Stops short at
/// the end of the file.
pub(super) async fn read_whole(file: &File, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    while buf.len() < size {
        let pos = buf.len();
        match crate::sys::read_here_at(file.as_raw_fd(), &mut buf, pos as u64, size - pos)? {
            Some(0) => break,
            Some(_) => continue,
            None => {}
        }
        let BufResult(res, slice) = file.read_at(buf.slice(pos..), pos as u64).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

pub(super) async fn is_file(path: &Path) -> io::Result<bool> {
    match compio::fs::metadata(path).await {
        Ok(m) => Ok(m.is_file()),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Missing file, or a parent that is a file rather than a directory: no such key.
pub(super) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

pub(super) fn parent_of(path: &Path) -> io::Result<&Path> {
    // Every path here is the root joined with a validated, non-empty key, so it has a parent.
    path.parent()
        .ok_or_else(|| io::Error::other("storage path without parent"))
}

/// Makes `dir`'s entries (a rename, link, unlink or mkdir in it) durable.
/// Makes a directory's entries durable. A directory that is gone was pruned by a concurrent
/// delete, which only removes empty directories: whatever we changed in it is already gone
/// too, so there is nothing left to make durable.
pub(super) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .await;
    match opened {
        Ok(dir) => dir.sync_all().await,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) async fn remove_quietly(path: &Path) {
    // Best effort on an error path: a temp file left behind is never listed, and
    // `cleanup_temp` removes it at the next start.
    let _ = compio::fs::remove_file(path).await;
}

pub(super) fn temp_name() -> io::Result<String> {
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(io::Error::other)?;
    Ok(format!("{TEMP_PREFIX}-{}", hex(&random)))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The content's etag; hashes large objects off the core.
pub(super) async fn etag_of(bytes: Vec<u8>) -> io::Result<(Vec<u8>, Etag)> {
    let hash = |bytes: &[u8]| Etag::new(hex(&Sha256::digest(bytes)));
    if bytes.len() <= HASH_INLINE_BYTES_MAX {
        let etag = hash(&bytes);
        return Ok((bytes, etag));
    }
    blocking(move || {
        let etag = hash(&bytes);
        (bytes, etag)
    })
    .await
}

/// Runs `f` on compio's blocking pool (directory walks, large hashes).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    compio::runtime::spawn_blocking(f)
        .await
        .map_err(io::Error::from)
}
