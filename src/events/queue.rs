//! The bounded queue of `async` deliveries and the threads that send them.
//!
//! Requests only `try_send` into it (a full queue drops the event and counts it), so a slow
//! or dead receiver never holds a client. Sender threads each run their own compio runtime
//! and the project's HTTP client; on shutdown the queue is closed and drained within the
//! grace period.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::webhooks::Target;
use crate::config::IoDriver;
use crate::metrics::{Metrics, METRICS};

/// Deliveries waiting at most: at a few KiB each, a bounded amount of memory, and enough to
/// ride out a receiver's restart at a few hundred events per second.
pub const QUEUE_EVENTS_MAX: usize = 10_000;
/// Threads sending queued deliveries: concurrency towards slow receivers.
const SENDER_THREADS: usize = 2;

struct Job {
    target: Arc<Target>,
    kind: &'static str,
    body: Arc<[u8]>,
    /// The span of the request that queued it: the delivery continues its trace.
    parent: Option<crate::trace::SpanIds>,
    /// Or the `traceparent` an unsampled request that queued it passes on: the delivery
    /// sends it, as that request's own outbound requests do.
    passed: Option<Box<str>>,
}

pub struct Queue {
    tx: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    /// A queue and its sender threads, each on a runtime with the configured I/O driver.
    pub fn start(io_driver: IoDriver) -> Result<Arc<Queue>, crate::error::StartError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_EVENTS_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..SENDER_THREADS {
            let rx = rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("origin-events-{i}"))
                .spawn(move || send_loop(io_driver, &rx))
                .map_err(|e| crate::error::StartError::io("cannot start event sender thread", e))?;
            threads.push(handle);
        }
        Ok(Arc::new(Queue {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        }))
    }

    /// True when a delivery queued now would be dropped (approximately: the depth gauge).
    pub fn is_full(&self) -> bool {
        METRICS.webhook_queued.load(Relaxed) >= QUEUE_EVENTS_MAX as i64
    }

    /// Counts (and logs, at debug level) a delivery dropped without being queued.
    pub fn drop_one(&self, webhook: &str, kind: &str) {
        Metrics::add(&METRICS.webhook_dropped, 1);
        tracing::debug!(webhook, event = kind, "event queue full: event dropped");
    }

    /// Queues one delivery; drops it (counted) when the queue is full or closed.
    pub fn push(&self, target: Arc<Target>, kind: &'static str, body: Arc<[u8]>) {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            Metrics::add(&METRICS.webhook_dropped, 1);
            return;
        };
        let parent = crate::trace::current();
        let passed = parent.is_none().then(crate::trace::passed).flatten();
        match tx.try_send(Job {
            target,
            kind,
            body,
            parent,
            passed,
        }) {
            Ok(()) => {
                METRICS.webhook_queued.fetch_add(1, Relaxed);
            }
            // Counted, not logged at warn level: a full queue would flood the log.
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                self.drop_one(&j.target.name, j.kind)
            }
        }
    }

    /// Closes the queue and waits until what was queued is sent, or `within` passes.
    pub fn drain(&self, within: Duration) {
        lock(&self.tx).take();
        let deadline = Instant::now() + within;
        let threads = std::mem::take(&mut *lock(&self.threads));
        while threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                tracing::warn!(
                    waiting = METRICS.webhook_queued.load(Relaxed),
                    "event queue not drained within the grace period"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

fn send_loop(io_driver: IoDriver, rx: &Mutex<Receiver<Job>>) {
    let rt = match crate::server::build_runtime(io_driver) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "event sender: cannot start a runtime; queued events are dropped");
            return;
        }
    };
    loop {
        // One thread waits on the channel at a time; the others wait for the lock.
        let job = lock(rx).recv();
        let Ok(job) = job else { break };
        METRICS.webhook_queued.fetch_sub(1, Relaxed);
        let span = crate::trace::linked_span("webhook.queued", job.parent);
        let delivery = async {
            let _ = super::delivery::deliver(&job.target, job.kind, &job.body).await;
        };
        match &job.passed {
            Some(tp) => rt.block_on(crate::trace::passing(delivery, std::rc::Rc::from(&**tp))),
            None => rt.block_on(tracing::Instrument::instrument(delivery, span)),
        }
    }
    rt.block_on(async { crate::http::client::close_idle() });
}
