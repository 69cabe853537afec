//! The checkpoint's writeback, ahead of it and beside the group commits.
//!
//! A checkpoint's `syncfs` writes back everything dirty on the filesystem, another process's
//! too (a backup copying gigabytes beside the registry), and group commits wait for it on the
//! commit thread. So when a checkpoint falls due, the flusher first asks this thread to run a
//! `syncfs` of its own and goes on committing groups; once that returns, the checkpoint runs
//! as before, and its `syncfs` finds only what was dirtied meanwhile: commits pause for the
//! writeback of those moments, not of everything since the last checkpoint
//! (`bench/checkpoint.sh`).
//!
//! What makes a checkpoint safe is unchanged: it is still the commit thread's `syncfs`,
//! after every record it covers was applied. This one only gets ahead of it, and cannot hide
//! a writeback error from it: `syncfs` reports an error once per open file description, and
//! this thread syncs through a descriptor of its own. While it runs, the log may grow to
//! `PRESYNC_LOG_BYTES_MAX`; past that the checkpoint does not wait for it.

use super::*;

/// The log length past which a checkpoint no longer waits for its writeback ahead.
pub(super) const PRESYNC_LOG_BYTES_MAX: u64 = 2 * CHECKPOINT_BYTES;

/// Where the writeback ahead of the next checkpoint stands (in the journal's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Presync {
    /// None asked for since the last checkpoint.
    #[default]
    Idle,
    /// Asked for, or running.
    Running,
    /// Done: the checkpoint may run.
    Done,
}

/// Starts the thread (it ends at the journal's shutdown). Without it (no thread, or no
/// descriptor) checkpoints run their `syncfs` alone, as they always may.
pub(super) fn start(shared: &Arc<Shared>) -> Option<JoinHandle<()>> {
    let root = match File::open(&shared.root) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "journal: no writeback ahead of checkpoints");
            return None;
        }
    };
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("origin-presync".into())
        .spawn(move || run(&shared, &root));
    match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "journal: no writeback ahead of checkpoints");
            None
        }
    }
}

fn run(shared: &Shared, root: &File) {
    loop {
        {
            let mut st = shared.lock();
            while (st.presync != Presync::Running || held(&st)) && !st.shutdown {
                st = shared
                    .wake_presync
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if st.shutdown {
                return;
            }
        }
        // SAFETY: plain syscall on an open descriptor. Its error is the checkpoint's to see
        // (module docs): ignored here.
        let _ = unsafe { libc::syncfs(root.as_raw_fd()) };
        shared.lock().presync = Presync::Done;
        shared.wake_flusher.notify_one();
    }
}

/// A test holds the writeback (to see commits go on meanwhile); never in production.
fn held(_st: &State) -> bool {
    #[cfg(test)]
    return _st.hold_presync;
    #[cfg(not(test))]
    false
}
