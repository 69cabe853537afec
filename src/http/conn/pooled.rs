//! The handler's future on the heap, in a block reused from one request to the next.
//!
//! The handler's state is large (routes, storage calls): inline it would make every
//! connection's task that large even while the connection idles, so it lives on the heap for
//! the length of a request. A fresh allocation of that size per request is one of the larger
//! costs of a small request (glibc consolidates its fast bins on every allocation that
//! large), so each worker keeps a few freed blocks and hands them out again.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Freed blocks a worker keeps, in bytes: enough for the requests a core has in flight at
/// once in the common case; past it blocks go back to the allocator.
const POOL_BYTES_MAX: usize = 256 * 1024;

struct Pool {
    blocks: Vec<(NonNull<u8>, Layout)>,
    bytes: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (ptr, layout) in self.blocks.drain(..) {
            // SAFETY: every block in the pool was allocated with its layout and is unused.
            unsafe { dealloc(ptr.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            blocks: Vec::new(),
            bytes: 0,
        })
    };
}

fn take(layout: Layout) -> NonNull<u8> {
    let reused = POOL
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let i = p.blocks.iter().rposition(|(_, l)| *l == layout)?;
            let (ptr, _) = p.blocks.swap_remove(i);
            p.bytes -= layout.size();
            Some(ptr)
        })
        .ok()
        .flatten();
    if let Some(ptr) = reused {
        return ptr;
    }
    // SAFETY: the layout has a non-zero size (checked by the caller).
    let ptr = unsafe { alloc(layout) };
    NonNull::new(ptr).unwrap_or_else(|| handle_alloc_error(layout))
}

fn give_back(ptr: NonNull<u8>, layout: Layout) {
    let kept = POOL
        .try_with(|p| {
            let mut p = p.borrow_mut();
            if p.bytes + layout.size() > POOL_BYTES_MAX {
                return false;
            }
            p.blocks.push((ptr, layout));
            p.bytes += layout.size();
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: allocated with this layout by `take`, and no longer in use.
        unsafe { dealloc(ptr.as_ptr(), layout) };
    }
}

/// A future in a pooled heap block; dropping it drops the future and frees the block.
pub(super) struct Pooled<F: Future> {
    ptr: NonNull<F>,
}

impl<F: Future> Pooled<F> {
    pub(super) fn new(future: F) -> Self {
        let layout = Layout::new::<F>();
        if layout.size() == 0 {
            let ptr = NonNull::<F>::dangling();
            // SAFETY: writing a zero-sized value through a dangling, aligned pointer is valid.
            unsafe { ptr.as_ptr().write(future) };
            return Pooled { ptr };
        }
        let ptr = take(layout).cast::<F>();
        // SAFETY: the block is fresh or unused, sized and aligned for `F`.
        unsafe { ptr.as_ptr().write(future) };
        Pooled { ptr }
    }
}

impl<F: Future> Future for Pooled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays at this heap address until `drop` and is never moved out,
        // which is the pinning guarantee.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for Pooled<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the value was written in `new` and is dropped exactly once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        if layout.size() != 0 {
            give_back(self.ptr.cast(), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::task::Waker;

    /// Every call returns the same future type (so the same layout), of about 4 KiB.
    async fn job(held: Rc<()>, n: u8) -> u64 {
        let _held = held;
        let pad = [n; 4096];
        std::future::ready(()).await;
        pad.iter().map(|&b| u64::from(b)).sum()
    }

    fn run<F: Future>(mut f: Pooled<F>) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the test futures complete at once"),
        }
    }

    #[test]
    fn runs_drops_its_state_once_and_reuses_the_block() {
        let held = Rc::new(());
        let first = Pooled::new(job(held.clone(), 1));
        let block = first.ptr.as_ptr() as usize;
        assert_eq!(run(first), 4096);
        assert_eq!(
            Rc::strong_count(&held),
            1,
            "the future's captures were dropped"
        );
        let second = Pooled::new(job(held.clone(), 2));
        assert_eq!(
            second.ptr.as_ptr() as usize,
            block,
            "the freed block is reused"
        );
        // While the second holds the block, a third gets another.
        let third = Pooled::new(job(held.clone(), 3));
        assert_ne!(third.ptr.as_ptr() as usize, block);
        assert_eq!(run(third), 3 * 4096);
        assert_eq!(run(second), 2 * 4096);
        assert_eq!(Rc::strong_count(&held), 1);
    }

    #[test]
    fn a_future_dropped_before_completion_drops_its_state() {
        let held = Rc::new(());
        let captured = held.clone();
        let fut = async move {
            let _held = captured;
            std::future::pending::<()>().await;
        };
        let mut f = Pooled::new(fut);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut f).poll(&mut cx).is_pending());
        drop(f);
        assert_eq!(Rc::strong_count(&held), 1);
    }

    #[test]
    fn the_pool_is_bounded() {
        let held = Rc::new(());
        let many: Vec<_> = (0..(POOL_BYTES_MAX / 4096 + 8))
            .map(|_| Pooled::new(job(held.clone(), 0)))
            .collect();
        drop(many);
        POOL.with(|p| assert!(p.borrow().bytes <= POOL_BYTES_MAX));
    }
}
