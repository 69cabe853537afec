//! The log file itself: group frames and their checksums, writing zeros ahead, checkpoints.

use super::*;

/// A checkpoint failure a test asked for; never in production.
pub(super) fn injected_failure(_shared: &Shared) -> io::Result<()> {
    #[cfg(test)]
    {
        let mut st = _shared.lock();
        if st.inject_checkpoint_failures > 0 {
            st.inject_checkpoint_failures -= 1;
            return Err(io::Error::other("injected checkpoint failure"));
        }
    }
    Ok(())
}

/// Groups written since start (all journals of the process), for tests.
pub(super) static GROUPS_WRITTEN: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A group's checksum: the first 8 bytes of SHA-256 over the epoch and the payload.
pub(super) fn group_sum(epoch: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(epoch.to_le_bytes());
    h.update(payload);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&h.finalize()[..8]);
    sum
}

pub(super) fn write_group(file: &File, at: u64, epoch: u64, payload: &[u8]) -> io::Result<()> {
    GROUPS_WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut frame = [0u8; FRAME_BYTES];
    frame[..4].copy_from_slice(GROUP_MAGIC);
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::other("journal group too large"))?;
    frame[4..8].copy_from_slice(&len.to_le_bytes());
    frame[8..16].copy_from_slice(&group_sum(epoch, payload));
    file.write_all_at(&frame, at)?;
    file.write_all_at(payload, at + FRAME_BYTES as u64)?;
    file.sync_data()
}

/// Writes zeros from `from` to `to` and makes the new length durable, so that later groups
/// overwrite allocated blocks (module docs). Returns the new zeroed length. Best effort: on a
/// full disk the file is cut back and the group is appended as it would be without this.
pub(super) fn preallocate(file: &File, from: u64, to: u64) -> u64 {
    let zeros = vec![0u8; LOG_PREALLOC_STEP as usize];
    let written = (|| {
        let mut at = from;
        while at < to {
            let n = zeros.len().min((to - at) as usize);
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_data()
    })();
    match written {
        Ok(()) => to,
        Err(e) => {
            tracing::warn!(error = %e, "could not write the journal's log ahead");
            let _ = file.set_len(from);
            from
        }
    }
}

/// Makes the whole tree durable (`syncfs` on the root's descriptor), then starts the log
/// again under `epoch`: the header is rewritten in place, and what follows it no longer
/// checksums. At start-up, after replay, and for the flusher's checkpoints in `Syncfs` mode
/// (`durable.rs`).
pub(super) fn checkpoint(root_dir: &File, file: &File, epoch: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    if unsafe { libc::syncfs(root_dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    write_header(file, epoch)
}

pub(super) fn write_header(file: &File, epoch: u64) -> io::Result<()> {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(FILE_MAGIC);
    header[8..].copy_from_slice(&epoch.to_le_bytes());
    file.write_all_at(&header, 0)?;
    file.sync_data()
}
