//! A bound on the UI's JSON reads on each worker. A UI call reads far more than a pull (a
//! page of tags is a few hundred small reads, the repository tree policy-filters 500 names),
//! so without a bound a browser, or a script, asking as fast as it is answered takes a
//! worker's time from the pulls beside it. Two rules, per worker:
//! - one UI call runs at a time; the others wait their turn, FIFO (a bounded queue with a
//!   deadline, then 503);
//! - a call that kept the worker busy for `t` (the time spent inside its polls, measured
//!   around each one: CPU work, not the waits for storage) holds its turn for
//!   [`UI_COOL_DOWN_FACTOR`]` * t` more before the next UI call starts.
//!
//! So UI calls take at most 1 / (1 + [`UI_COOL_DOWN_FACTOR`]) of a worker's time, whatever
//! the backend and however fast they are asked for: a UI flood slows the UI, not the pulls.
//! A person browsing does not notice (a page of tags is about 1 ms of work, so the next
//! call waits 3 ms more).
//!
//! The gate is per worker (a thread-local): workers share nothing, and a connection's
//! requests all run on its worker.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// UI calls running at once on one worker.
pub const UI_CALLS_IN_FLIGHT_PER_WORKER: usize = 1;
/// UI calls waiting for their turn on one worker; one more is answered 503 (busy).
pub const UI_CALLS_WAITING_PER_WORKER: usize = 64;
/// Longest wait for a turn; then 503 (busy) rather than an answer too late to be useful.
pub const UI_CALL_WAIT_MAX: Duration = Duration::from_secs(10);
/// A call's turn is held this many times its busy time after it ends (3: the UI gets at
/// most a quarter of a worker).
pub const UI_COOL_DOWN_FACTOR: u32 = 3;
/// Longest hold after one call.
pub const UI_COOL_DOWN_MAX: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Turn {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Default)]
struct Gate {
    in_flight: Cell<usize>,
    waiting: RefCell<VecDeque<Rc<Turn>>>,
}

thread_local! {
    static GATE: Gate = Gate::default();
}

impl Gate {
    /// Hands a finished call's place to the first waiter, or frees it.
    fn release(&self) {
        let next = self.waiting.borrow_mut().pop_front();
        match next {
            Some(turn) => {
                turn.granted.set(true);
                if let Some(w) = turn.waker.borrow_mut().take() {
                    w.wake();
                }
            }
            None => self.in_flight.set(self.in_flight.get().saturating_sub(1)),
        }
    }
}

/// A place among the calls in flight; given back when dropped, after the cool-down its
/// call's busy time earned.
pub struct Permit {
    busy: Rc<Cell<Duration>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let hold = self
            .busy
            .get()
            .saturating_mul(UI_COOL_DOWN_FACTOR)
            .min(UI_COOL_DOWN_MAX);
        if hold.is_zero() {
            GATE.with(Gate::release);
            return;
        }
        compio::runtime::spawn(async move {
            compio::time::sleep(hold).await;
            GATE.with(Gate::release);
        })
        .detach();
    }
}

/// Runs `call` in its turn among this worker's UI calls (see the module's note).
pub async fn run<F: Future>(call: F) -> Result<F::Output> {
    let permit = enter().await?;
    let metered = Metered {
        inner: Box::pin(call),
        busy: permit.busy.clone(),
    };
    let out = metered.await;
    drop(permit);
    Ok(out)
}

/// Adds the time spent inside each poll of `inner` to `busy`.
struct Metered<F> {
    inner: Pin<Box<F>>,
    busy: Rc<Cell<Duration>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        let out = self.inner.as_mut().poll(cx);
        self.busy.set(self.busy.get() + start.elapsed());
        out
    }
}

fn permit() -> Permit {
    Permit {
        busy: Rc::new(Cell::new(Duration::ZERO)),
    }
}

/// Waits (at most [`UI_CALL_WAIT_MAX`]) for a place among this worker's UI calls in flight.
async fn enter() -> Result<Permit> {
    let busy = || Error::Busy("too many web UI requests on this node; try again".into());
    let turn = GATE.with(|g| {
        if g.in_flight.get() < UI_CALLS_IN_FLIGHT_PER_WORKER && g.waiting.borrow().is_empty() {
            g.in_flight.set(g.in_flight.get() + 1);
            return Ok(None);
        }
        let mut waiting = g.waiting.borrow_mut();
        if waiting.len() >= UI_CALLS_WAITING_PER_WORKER {
            return Err(busy());
        }
        let turn = Rc::new(Turn::default());
        waiting.push_back(turn.clone());
        Ok(Some(turn))
    })?;
    let Some(turn) = turn else {
        return Ok(permit());
    };
    let wait = Wait { turn: Some(turn) };
    match compio::time::timeout(UI_CALL_WAIT_MAX, wait).await {
        Ok(permit) => Ok(permit),
        Err(_) => Err(busy()),
    }
}

/// A waiter's future: ready once [`Gate::release`] granted its turn. Dropped before that
/// (deadline, closed connection), it leaves the queue; dropped after, it passes the turn on.
struct Wait {
    turn: Option<Rc<Turn>>,
}

impl Future for Wait {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let Some(turn) = self.turn.as_ref() else {
            return Poll::Pending;
        };
        if turn.granted.get() {
            self.turn = None;
            return Poll::Ready(permit());
        }
        *turn.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if turn.granted.get() {
            GATE.with(Gate::release);
        } else {
            GATE.with(|g| g.waiting.borrow_mut().retain(|t| !Rc::ptr_eq(t, &turn)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (usize, usize) {
        GATE.with(|g| (g.in_flight.get(), g.waiting.borrow().len()))
    }

    /// Spins on the worker (no await) for `d`: a call's own work.
    fn busy_for(d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn calls_beyond_the_bound_wait_in_order_and_leave_cleanly() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let first = enter().await.unwrap();
            assert_eq!(state(), (1, 0));
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut waiters = Vec::new();
            for n in 0..3 {
                let order = order.clone();
                waiters.push(compio::runtime::spawn(async move {
                    let p = enter().await.unwrap();
                    order.borrow_mut().push(n);
                    compio::time::sleep(Duration::from_millis(5)).await;
                    drop(p);
                }));
            }
            compio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(state(), (1, 3), "three wait behind the one in flight");
            assert!(order.borrow().is_empty());
            drop(first);
            for w in waiters {
                w.await.unwrap();
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2], "FIFO");
            assert_eq!(state(), (0, 0));

            // A waiter that gives up (its connection closed) leaves the queue.
            let held = enter().await.unwrap();
            let gave_up = compio::time::timeout(Duration::from_millis(10), enter()).await;
            assert!(gave_up.is_err());
            assert_eq!(state(), (1, 0));
            drop(held);
            assert_eq!(state(), (0, 0));

            // Past the queue's bound: busy at once.
            let held = enter().await.unwrap();
            let mut queued = Vec::new();
            for _ in 0..UI_CALLS_WAITING_PER_WORKER {
                queued.push(compio::runtime::spawn(async { enter().await.map(drop) }));
            }
            compio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(state(), (1, UI_CALLS_WAITING_PER_WORKER));
            assert!(matches!(enter().await, Err(Error::Busy(_))));
            drop(held);
            for q in queued {
                q.await.unwrap().unwrap();
            }
            assert_eq!(state(), (0, 0));
        });
    }

    /// A call's turn is held for three times the work it did inside its polls (not its
    /// waits), then given to the next.
    #[test]
    fn a_call_holds_its_turn_for_three_times_its_work() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let work = Duration::from_millis(40);
            run(async {
                busy_for(work / 2);
                // Waiting is not work: this sleep earns no cool-down.
                compio::time::sleep(Duration::from_millis(200)).await;
                busy_for(work / 2);
            })
            .await
            .unwrap();
            assert_eq!(state(), (1, 0), "the turn is held after the call");
            let ended = Instant::now();
            run(async {}).await.unwrap();
            let held = ended.elapsed();
            assert!(
                held >= work * UI_COOL_DOWN_FACTOR,
                "the next call started after {held:?}"
            );
            assert!(
                held < work * UI_COOL_DOWN_FACTOR + Duration::from_millis(400),
                "the wait was not counted as work: {held:?}"
            );
            // A call with (almost) no work frees its turn at once.
            compio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(state(), (0, 0));
        });
    }
}
