//! The shutdown signal, shared by all workers: a flag plus one waker slot per worker.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

pub struct Shutdown {
    flag: AtomicBool,
    /// One slot per worker, so waiting never grows a list.
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl Shutdown {
    pub fn new(workers: usize) -> Self {
        Shutdown {
            flag: AtomicBool::new(false),
            wakers: Mutex::new(vec![None; workers]),
        }
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sets the flag and wakes every worker.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        let wakers = match self.wakers.lock() {
            Ok(mut w) => w.iter_mut().filter_map(Option::take).collect::<Vec<_>>(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter_mut()
                .filter_map(Option::take)
                .collect(),
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the flag is set; `worker` names this waiter's slot.
    pub async fn wait(&self, worker: usize) {
        poll_fn(|cx| {
            if self.is_set() {
                return Poll::Ready(());
            }
            if let Ok(mut w) = self.wakers.lock() {
                if let Some(slot) = w.get_mut(worker) {
                    *slot = Some(cx.waker().clone());
                }
            }
            // Re-check: trigger may have run between the first check and storing the waker.
            if self.is_set() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
