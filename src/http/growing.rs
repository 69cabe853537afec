//! A body served from a file that another task, possibly on another core, is still writing:
//! the pull-through cache streams a blob to every waiting client while it arrives.
//!
//! The writer publishes how many bytes are in the file and, at the end, whether the content
//! was good. Readers never get the file's last byte before the writer says it is good, so a
//! client of a blob that fails verification sees a failed transfer, never a complete body.

use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Tasks that may wait on one `Progress` at once (callers refuse more before waiting).
pub const WAITERS_MAX: usize = 4096;

/// Why the writer stopped (what readers that sent nothing yet answer with), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// What kind of failure stopped the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The source does not have the content.
    NotFound,
    /// The source failed or sent something wrong.
    Source,
    /// This process failed.
    Internal,
}

#[derive(Default)]
struct State {
    /// Set once the size is known and readers may start.
    total: Option<u64>,
    written: u64,
    end: Option<Result<(), Failure>>,
    wakers: Vec<Waker>,
}

/// Shared between the writer and every reader of one growing file.
#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(mut s: MutexGuard<'_, State>) {
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        for w in wakers {
            w.wake();
        }
    }

    /// The total size is known: readers may start.
    pub fn start(&self, total: u64) {
        let mut s = self.lock();
        s.total = Some(total);
        Self::wake(s);
    }

    /// `written` bytes are now in the file.
    pub fn advance(&self, written: u64) {
        let mut s = self.lock();
        s.written = written;
        Self::wake(s);
    }

    /// The writer is done: `Ok` once the content is verified and committed.
    pub fn finish(&self, result: Result<(), Failure>) {
        let mut s = self.lock();
        s.end = Some(result);
        Self::wake(s);
    }

    /// Waits until the size is known (or the writer failed first).
    pub async fn wait_start(&self) -> Result<u64, Failure> {
        poll_fn(|cx| {
            let mut s = self.lock();
            if let Some(Err(f)) = &s.end {
                return Poll::Ready(Err(f.clone()));
            }
            if let Some(total) = s.total {
                return Poll::Ready(Ok(total));
            }
            Self::register(&mut s, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until bytes past `pos` may be read, and returns how far: everything written,
    /// except the last byte of the file until the writer has finished well.
    pub async fn wait_beyond(&self, pos: u64) -> Result<u64, Failure> {
        poll_fn(|cx| {
            let mut s = self.lock();
            let total = s.total.unwrap_or(0);
            match &s.end {
                Some(Err(f)) => return Poll::Ready(Err(f.clone())),
                Some(Ok(())) => return Poll::Ready(Ok(total)),
                None => {}
            }
            let readable = s.written.min(total.saturating_sub(1));
            if readable > pos {
                return Poll::Ready(Ok(readable));
            }
            Self::register(&mut s, cx.waker());
            Poll::Pending
        })
        .await
    }

    fn register(s: &mut State, waker: &Waker) {
        if !s.wakers.iter().any(|w| w.will_wake(waker)) && s.wakers.len() < WAITERS_MAX {
            s.wakers.push(waker.clone());
        }
    }
}

/// The body: a region of the growing file.
pub struct GrowingBody {
    pub file: compio::fs::File,
    pub progress: std::sync::Arc<Progress>,
    pub offset: u64,
    pub len: u64,
}
