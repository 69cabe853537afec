//! Per-key locks shared by every core of the process.

use std::collections::HashMap;
use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::task::{Poll, Waker};

/// Per-key locks shared by every `FsStorage` in the process, keyed by absolute path. A key
/// present in the map is held; its waiters are woken (all of them: contention on one key is
/// rare, and waking all makes a cancelled waiter harmless) when the holder drops its guard.
/// The waiter lists are bounded by the requests in flight, which the server caps.
pub(super) static KEY_LOCKS: LazyLock<Mutex<HashMap<PathBuf, Vec<Waker>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(super) fn key_locks() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Vec<Waker>>> {
    // No code panics while holding this mutex (map operations only), so a poisoned lock
    // still holds a consistent map.
    KEY_LOCKS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a key is being mutated; releases on drop.
pub(super) struct KeyLock {
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let waiters = key_locks().remove(&self.path).unwrap_or_default();
        for waker in waiters {
            waker.wake();
        }
    }
}

pub(super) async fn lock_key(path: PathBuf) -> KeyLock {
    poll_fn(|cx| {
        let mut locks = key_locks();
        match locks.get_mut(&path) {
            None => {
                locks.insert(path.clone(), Vec::new());
                Poll::Ready(())
            }
            Some(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    })
    .await;
    KeyLock { path }
}

/// Takes a key's lock if nobody holds it, without waiting (for the journal's flusher thread,
/// which cannot await).
pub(super) fn try_lock_key(path: &std::path::Path) -> Option<KeyLock> {
    let mut locks = key_locks();
    if locks.contains_key(path) {
        return None;
    }
    locks.insert(path.to_path_buf(), Vec::new());
    Some(KeyLock {
        path: path.to_path_buf(),
    })
}
