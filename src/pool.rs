//! A few threads fed by a bounded queue, each answer handed back to the async side through
//! a one-shot slot: argon2 runs here, and so does the SHA-256 of pull-through fetches.
//!
//! compio's `spawn_blocking` is not used: its pool belongs to one runtime (one per core, so
//! the bound would multiply by the worker count), it has no queue (a full pool fails at once)
//! and it also carries the file operations of the polling driver, which this work must not
//! starve. argon2 is memory-hard (19 MiB per run by default), so the bound is global.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A job: runs on a pool thread, its result goes back through the slot.
type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    queue: SyncSender<Job>,
}

impl Pool {
    /// Starts `threads` threads (at least one) sharing a queue of `queue_max` waiting jobs.
    pub fn new(name: &str, threads: usize, queue_max: usize) -> std::io::Result<Pool> {
        let (queue, jobs) = sync_channel::<Job>(queue_max);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&jobs))?;
        }
        Ok(Pool { queue })
    }

    /// Queues `f`; None when the queue is full. The returned future yields None if the job
    /// never ran to completion (it panicked).
    pub fn submit<T, F>(&self, f: F) -> Option<Reply<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
            done: false,
        }));
        let sender = Sender(slot.clone());
        let job: Job = Box::new(move || sender.send(f()));
        match self.queue.try_send(job) {
            Ok(()) => Some(Reply(slot)),
            Err(TrySendError::Full(_)) => None,
            // Threads only exit when the queue is dropped, which is after this `Pool`.
            Err(TrySendError::Disconnected(_)) => None,
        }
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            // A panicking job drops its sender, which tells the waiter; the thread goes on.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    done: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks, but a poisoned slot is still usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);

impl<T> Sender<T> {
    fn send(self, value: T) {
        lock(&self.0).value = Some(value);
        // Drop marks the slot done and wakes the waiter.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = lock(&self.0);
            slot.done = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The answer of a submitted job.
pub struct Reply<T>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Reply<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = lock(&self.0);
        if slot.done {
            return Poll::Ready(slot.value.take());
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// Jobs run off the calling thread and their results come back to an async waiter.
    #[test]
    fn results_come_back() {
        let pool = Pool::new("test-pool", 2, 4).unwrap();
        let caller = std::thread::current().id();
        let rt = compio::runtime::Runtime::new().unwrap();
        let (a, b) = rt.block_on(async {
            let a = pool
                .submit(move || std::thread::current().id() != caller)
                .unwrap();
            let b = pool.submit(|| 40 + 2).unwrap();
            (a.await, b.await)
        });
        assert_eq!(a, Some(true));
        assert_eq!(b, Some(42));
    }

    /// With every thread busy and the queue full, submit refuses instead of waiting.
    #[test]
    fn full_queue_refuses() {
        let pool = Pool::new("test-pool", 1, 1).unwrap();
        let (release, gate) = channel::<()>();
        let (started_tx, started) = channel::<()>();
        let gate = Mutex::new(gate);
        let running = pool
            .submit(move || {
                started_tx.send(()).unwrap();
                gate.lock().unwrap().recv().unwrap();
            })
            .unwrap();
        started.recv_timeout(Duration::from_secs(5)).unwrap();
        let queued = pool.submit(|| ()).expect("one job fits in the queue");
        assert!(pool.submit(|| ()).is_none(), "queue is full");
        release.send(()).unwrap();
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            assert_eq!(running.await, Some(()));
            assert_eq!(queued.await, Some(()));
        });
    }

    /// A job that panics yields None to its waiter and leaves the thread working.
    #[test]
    fn panicking_job_yields_none() {
        let pool = Pool::new("test-pool", 1, 2).unwrap();
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let bad = pool.submit(|| -> u8 { panic!("boom") }).unwrap();
            assert_eq!(bad.await, None);
            assert_eq!(pool.submit(|| 7).unwrap().await, Some(7));
        });
    }
}
