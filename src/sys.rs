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

/// Space on a filesystem: bytes available to an unprivileged writer, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    pub available_bytes: u64,
    pub total_bytes: u64,
}

/// `statvfs(2)` of the filesystem holding `path`. A stat of the superblock: no disk I/O on
/// a local filesystem (microseconds), so it is called on the worker.
pub fn fs_space(path: &std::path::Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path; the kernel fills `st` on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    // The block counts are u32 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, bavail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    Ok(FsSpace {
        available_bytes: bavail.saturating_mul(frsize),
        total_bytes: blocks.saturating_mul(frsize),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Drops a file's pages from the page cache (they must be clean: written back).
    pub(crate) fn evict(file: &std::fs::File) {
        file.sync_all().unwrap();
        // SAFETY: fadvise on an open descriptor; it only drops clean cached pages.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }

    /// On both drivers: a path in the dentry cache opens on this thread, what the page cache
    /// holds reads on this thread, and pages dropped from the cache are declined (the caller
    /// reads them through the runtime). A missing file is an error or a ring open, never a
    /// file.
    #[test]
    fn here_calls_take_only_what_cannot_wait() {
        let rt = compio::runtime::Runtime::new().unwrap();
        assert!(rt.driver_type().is_iouring(), "this test needs io_uring");
        // The polling driver too: a cold read there goes to the runtime's thread pool, never
        // blocks the worker.
        for rt in [rt, crate::storage::tests::poll_runtime()] {
            here_calls_on(rt);
        }
    }

    fn here_calls_on(rt: compio::runtime::Runtime) {
        rt.block_on(async {
            let polling = polling_driver();
            let dir =
                std::env::temp_dir().join(format!("origin-here-{}-{polling}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("data");
            let data: Vec<u8> = (0..64 * 1024u32).map(|i| i as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let file = match open_here(&path).unwrap() {
                Opened::Here(f) => f,
                Opened::Ring => {
                    assert!(
                        NO_CACHED_OPEN.load(std::sync::atomic::Ordering::Relaxed),
                        "a cached path went to the ring"
                    );
                    std::fs::File::open(&path).unwrap()
                }
            };
            let fd = file.as_raw_fd();
            let mut buf = b"head".to_vec();
            assert_eq!(
                read_here_at(fd, &mut buf, 0, data.len()).unwrap(),
                Some(data.len())
            );
            assert_eq!(&buf[..4], b"head");
            assert!(buf[4..] == data[..]);
            assert_eq!(
                read_here_at(fd, &mut buf, data.len() as u64, 10).unwrap(),
                Some(0)
            );
            evict(&file);
            let mut cold = Vec::new();
            assert_eq!(read_here_at(fd, &mut cold, 0, data.len()).unwrap(), None);
            assert!(cold.is_empty());
            assert!(!matches!(
                open_here(&dir.join("missing")),
                Ok(Opened::Here(_))
            ));
            std::fs::remove_dir_all(&dir).unwrap();
        });
    }

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
    /// dominates small requests (see bench/results). Opens and reads are then made on the
    /// worker when they cannot wait for the disk, as with io_uring.
    static POLLING: bool = compio::runtime::Runtime::try_with_current(|rt| !rt.driver_type().is_iouring())
        .unwrap_or(false);
}

/// Whether this thread's runtime uses the polling driver.
#[cfg(test)]
pub fn polling_driver() -> bool {
    POLLING.with(|p| *p)
}

/// How `open_here` opened a file.
pub enum Opened {
    /// Opened on this thread.
    Here(std::fs::File),
    /// Opening could wait for the disk: open it through the ring instead.
    Ring,
}

/// Set once `openat2` with RESOLVE_CACHED turned out to be missing (kernel before 5.12, or
/// refused by a seccomp profile): later opens go straight to the ring.
static NO_CACHED_OPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens `path` read-only on this thread when that cannot wait for the disk: when every
/// component of the path is in the kernel's dentry cache (`openat2` with RESOLVE_CACHED,
/// Linux 5.12+), on either driver. A ring open costs a trip through the event loop, and the
/// polling driver's a round trip to its thread pool; this costs one syscall. `Ring`: open it
/// through the runtime (which never blocks the worker). Errors (an absent file included)
/// are the open's.
pub fn open_here(path: &std::path::Path) -> io::Result<Opened> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::Ordering;
    if NO_CACHED_OPEN.load(Ordering::Relaxed) {
        return Ok(Opened::Ring);
    }
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"));
    }
    let mut stack = [0u8; 512];
    let heap;
    let c_path: &[u8] = if bytes.len() < stack.len() {
        stack[..bytes.len()].copy_from_slice(bytes);
        &stack[..=bytes.len()]
    } else {
        heap = [bytes, b"\0"].concat();
        &heap
    };
    /// `struct open_how` of openat2(2) (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_CACHED,
    };
    // SAFETY: `c_path` is NUL-terminated and lives across the call; `how` is a live
    // open_how (three u64, as the kernel's) of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned; the File owns it from here.
        return Ok(Opened::Here(unsafe {
            std::fs::File::from_raw_fd(fd as RawFd)
        }));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Opened::Ring),
        // No openat2, or no RESOLVE_CACHED (EINVAL on 5.6-5.11), or a seccomp refusal.
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EPERM) => {
            NO_CACHED_OPEN.store(true, Ordering::Relaxed);
            Ok(Opened::Ring)
        }
        _ => Err(err),
    }
}

/// Reads up to `want` bytes at `offset` into the spare capacity of `buf`, on this thread,
/// when that cannot wait for the disk: only what the page cache holds (`preadv2` with
/// RWF_NOWAIT), on either driver. `Ok(None)`: the read would wait (or the filesystem cannot
/// say): read through the runtime (the ring, or the polling driver's thread pool).
/// `Ok(Some(0))` is the end of the file.
pub fn read_here_at(
    fd: RawFd,
    buf: &mut Vec<u8>,
    offset: u64,
    want: usize,
) -> io::Result<Option<usize>> {
    let flags = libc::RWF_NOWAIT;
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want.min(spare.len()),
    };
    loop {
        // SAFETY: `iov` points into `buf`'s spare capacity, which outlives the call; the
        // kernel writes at most `iov_len` bytes there.
        let n = unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, flags) };
        if n >= 0 {
            // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(None),
            _ => return Err(err),
        }
    }
}
