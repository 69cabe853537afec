//! Small combinators for the thread-per-core runtime (no futures crate needed).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

/// A future of a cold path (an upstream fetch, a webhook delivery, an S3 call), on the heap.
///
/// An `async fn`'s future is as large as the largest future it may await, and it is moved
/// whole (a `memcpy` of all of it) when a caller starts it: an HTTP exchange laid out inline
/// made every request's handler future some 40 KiB, copied per request, on the path of a
/// 4 KiB blob GET that never makes one. Boxed, the cold path costs its own callers one
/// allocation and the hot path nothing.
pub fn cold<F: Future>(f: F) -> std::pin::Pin<Box<F>> {
    Box::pin(f)
}

/// Polls both futures; `Some` with the first one's output, or `None` if `stop` finished first
/// (`work` is then dropped, which cancels its I/O).
pub async fn race<A: Future, B: Future>(work: A, stop: B) -> Option<A::Output> {
    let mut work = pin!(work);
    let mut stop = pin!(stop);
    poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Runs both futures concurrently and returns both outputs.
pub async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}
