//! Thin, commented wrappers over the few syscalls std and compio do not expose.

use std::io;
use std::os::fd::RawFd;

/// `cachestat(2)` (Linux 6.5+): how many pages of a file range are in the page cache.
/// None when the kernel does not have the syscall (or it fails).
pub fn cached_fraction(fd: RawFd, offset: u64, len: u64) -> Option<f64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    const PAGE: u64 = 4096;
    if len == 0 {
        return Some(1.0);
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: both pointers refer to live, correctly laid out structs for the duration of
    // the call; the kernel writes only `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if rc != 0 {
        return None;
    }
    let pages = (offset + len).div_ceil(PAGE) - offset / PAGE;
    Some(stat.nr_cache as f64 / pages as f64)
}

/// Sets O_NONBLOCK on a descriptor for as long as the guard lives, then restores the flags
/// it found (compio's polling driver already uses non-blocking sockets; io_uring's does not).
pub struct NonBlocking {
    fd: RawFd,
    saved: libc::c_int,
}

impl NonBlocking {
    pub fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a descriptor the caller keeps open for the guard's lifetime.
        let saved = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        if saved & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, saved | libc::O_NONBLOCK) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(NonBlocking { fd, saved })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if self.saved & libc::O_NONBLOCK == 0 {
            // SAFETY: restores the flags read in `set` on the same, still open descriptor.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.saved) };
        }
    }
}

/// One `sendfile(2)` call: file `from` at `*offset` to socket `to`, at most `count` bytes.
/// Advances `offset` by what was sent.
pub fn sendfile(to: RawFd, from: RawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = *offset as libc::off_t;
    // SAFETY: plain syscall on descriptors the caller keeps open; `off` is a local.
    let n = unsafe { libc::sendfile(to, from, &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn cachestat_sees_a_freshly_written_file() {
        let path = std::env::temp_dir().join(format!("origin-cachestat-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 64 * 1024]).unwrap();
        let frac = cached_fraction(f.as_raw_fd(), 0, 64 * 1024);
        std::fs::remove_file(&path).unwrap();
        // Kernels without cachestat answer None; where it exists the pages are cached.
        if let Some(frac) = frac {
            assert!(frac > 0.99, "{frac}");
        }
    }
}

thread_local! {
    /// True on a thread whose compio runtime uses the polling driver. There, compio runs file
    /// operations on a thread pool: a round trip of two context switches per call, which
    /// dominates small requests (see bench/results). Callers then do page-cache-hot file
    /// calls (stat, open, small reads) directly, as nginx does.
    static POLLING: bool = compio::runtime::Runtime::try_with_current(|rt| !rt.driver_type().is_iouring())
        .unwrap_or(false);
}

/// Whether file calls should be made directly on this thread (polling driver).
pub fn direct_file_calls() -> bool {
    POLLING.with(|p| *p)
}

/// Reads exactly `buf.len()` bytes at `offset` (pread, retried on short reads).
pub fn read_exact_at(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    // SAFETY: the descriptor stays open for the call (the caller holds its file); the
    // ManuallyDrop keeps this borrowed File from closing it.
    let file = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    file.read_exact_at(buf, offset)
}
