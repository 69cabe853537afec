//! One timer per connection instead of one per wait.
//!
//! A connection waits under a deadline twice per request: for the next head (keep-alive) and
//! for the request to finish (query_timeout). A runtime timer for each costs an insertion and
//! a removal in the runtime's timer tree per request. Here the connection keeps one armed
//! timer and only moves the deadline it checks: when the timer fires before the current
//! deadline it is armed again for that deadline, and it is replaced at once only when a new
//! deadline is earlier than the armed one (a head started: head_read_timeout). With the
//! defaults (keep-alive 75 s, query 15 min) a busy connection re-arms about once per 75 s.
//! Between arming and firing, a wait looks at a flag the timer's waker sets, not at the
//! runtime's timer tree.
//!
//! The timer may fire while nothing waits on it (the connection is writing, or parked on
//! another wait): that wakes the connection's task once, which then finds nothing to do.

use std::cell::Cell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// How often an expired request deadline looks again while a storage write holds it off
/// (see [`RequestClock::hold`]): such writes take milliseconds, and each storage call has a
/// deadline of its own.
const HOLD_RECHECK: Duration = Duration::from_millis(50);

/// The deadline of one request, shared by the connection (which enforces it) and the handler
/// (which moves it or holds it off). `server.query_timeout` bounds the work of a request, not
/// the transfer of its body: a blob body that keeps moving pushes the deadline out by one
/// `query_timeout` from its latest bytes (each pause is bounded by `body_idle_timeout`), and a
/// response body is bounded by its pauses only. Small operations (a manifest PUT, a listing,
/// a commit once its body is in) keep the hard deadline.
///
/// A storage write in progress is never cut by the deadline: it runs under
/// [`RequestClock::hold`], and the request ends after it, when the write is complete
/// (each storage call is bounded by a deadline of its own).
pub struct RequestClock {
    until: Cell<Instant>,
    holds: Cell<u32>,
    window: Duration,
}

/// Holds a request's deadline off while alive (a storage write that must not be cut).
pub struct Hold<'a>(&'a RequestClock);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.holds.set(self.0.holds.get().saturating_sub(1));
    }
}

impl RequestClock {
    pub fn new(window: Duration) -> RequestClock {
        RequestClock {
            until: Cell::new(Instant::now() + window),
            holds: Cell::new(0),
            window,
        }
    }

    /// Starts a request's clock: its deadline is one window from now.
    pub(super) fn restart(&self, now: Instant) {
        self.until.set(now + self.window);
        self.holds.set(0);
    }

    /// Body bytes moved: the deadline is at least one window from now.
    pub fn moved(&self) {
        let at = Instant::now() + self.window;
        if at > self.until.get() {
            self.until.set(at);
        }
    }

    /// The rest of the request is bounded by its pauses only (a response body being sent:
    /// every write has the idle deadline).
    pub(super) fn lift(&self) {
        self.until.set(self.until.get().max(Instant::now() + FAR));
    }

    /// While the returned guard lives, an expired deadline waits for it to drop.
    pub fn hold(&self) -> Hold<'_> {
        self.holds.set(self.holds.get() + 1);
        Hold(self)
    }

    pub fn until(&self) -> Instant {
        self.until.get()
    }
}

/// "No deadline" for [`RequestClock::lift`]: far enough, short enough not to overflow.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The deadline passed before the work finished.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

pub struct Deadline {
    at: Instant,
    /// The runtime timer, armed for an instant never after `at` while a wait runs (`set`
    /// disarms a later one).
    armed: Option<Armed>,
}

struct Armed {
    at: Instant,
    timer: Pin<Box<dyn Future<Output = ()>>>,
    /// The timer is polled with this waker, which records that it fired: between arming and
    /// firing, a wait checks a flag instead of polling the runtime's timer tree.
    fired: Arc<Fired>,
    waker: Waker,
}

struct Fired {
    flag: AtomicBool,
    task: Waker,
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Relaxed);
        self.task.wake_by_ref();
    }
}

impl Deadline {
    pub fn new() -> Deadline {
        Deadline {
            at: Instant::now(),
            armed: None,
        }
    }

    /// Runs `work` until it finishes or `at` passes.
    pub async fn within<F: Future>(&mut self, at: Instant, work: F) -> Result<F::Output, Expired> {
        self.set(at);
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            self.poll_expired(cx).map(|()| Err(Expired))
        })
        .await
    }

    /// Runs `work` until it finishes or the request's deadline passes with no hold on it. The
    /// deadline is read again whenever the timer fires, so it may move while `work` runs.
    pub async fn within_request<F: Future>(
        &mut self,
        clock: &RequestClock,
        work: F,
    ) -> Result<F::Output, Expired> {
        self.set(clock.until());
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            loop {
                // Only later: a moved deadline re-arms when the early timer fires.
                self.at = self.at.max(clock.until());
                if self.poll_expired(cx).is_pending() {
                    return Poll::Pending;
                }
                if Instant::now() < clock.until() {
                    continue;
                }
                if clock.holds.get() == 0 {
                    return Poll::Ready(Err(Expired));
                }
                // A write in progress: look again shortly (its own deadlines bound it).
                self.at = Instant::now() + HOLD_RECHECK;
            }
        })
        .await
    }

    fn set(&mut self, at: Instant) {
        self.at = at;
        if self.armed.as_ref().is_some_and(|a| a.at > at) {
            self.armed = None;
        }
    }

    /// Ready once the deadline has passed; re-arms a timer that fired early.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let armed = match &mut self.armed {
                // Armed for this task and not fired: nothing to look at. (The task is
                // compared by its data pointer: `will_wake` also compares vtable addresses,
                // and the executor's vtable constant may have several.)
                Some(a) if a.fired.task.data() == cx.waker().data() => {
                    if !a.fired.flag.swap(false, Ordering::Relaxed) {
                        return Poll::Pending;
                    }
                    a
                }
                _ => {
                    let fired = Arc::new(Fired {
                        flag: AtomicBool::new(false),
                        task: cx.waker().clone(),
                    });
                    self.armed.insert(Armed {
                        at: self.at,
                        timer: Box::pin(compio::time::sleep_until(self.at)),
                        waker: Waker::from(fired.clone()),
                        fired,
                    })
                }
            };
            let mut timer_cx = Context::from_waker(&armed.waker);
            if armed.timer.as_mut().poll(&mut timer_cx).is_pending() {
                return Poll::Pending;
            }
            self.armed = None;
            if Instant::now() >= self.at {
                return Poll::Ready(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run<F: Future>(f: F) -> F::Output {
        compio::runtime::Runtime::new().unwrap().block_on(f)
    }

    #[test]
    fn work_that_finishes_in_time_returns_its_output() {
        run(async {
            let mut d = Deadline::new();
            let at = Instant::now() + Duration::from_secs(5);
            assert_eq!(d.within(at, async { 7 }).await, Ok(7));
            let slow = compio::time::sleep(Duration::from_millis(20));
            assert_eq!(d.within(at, slow).await, Ok(()));
        });
    }

    #[test]
    fn work_past_its_deadline_expires_on_time() {
        run(async {
            let mut d = Deadline::new();
            let start = Instant::now();
            let never = std::future::pending::<()>();
            let at = start + Duration::from_millis(50);
            assert_eq!(d.within(at, never).await, Err(Expired));
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(50), "{took:?}");
        });
    }

    /// A timer armed for a late deadline does not delay an earlier one set after it, and a
    /// timer armed early (for a deadline since moved later) does not expire the later one.
    #[test]
    fn deadlines_moved_earlier_and_later_are_both_kept() {
        run(async {
            let mut d = Deadline::new();
            let start = Instant::now();
            // Arms a timer for 10 s (the work waits once): the work finishes first, the
            // timer stays armed.
            let late = start + Duration::from_secs(10);
            let brief = compio::time::sleep(Duration::from_millis(1));
            assert_eq!(d.within(late, brief).await, Ok(()));
            assert!(d.armed.is_some());
            // An earlier deadline replaces it.
            let early = start + Duration::from_millis(40);
            let never = std::future::pending::<()>();
            assert_eq!(d.within(early, never).await, Err(Expired));
            assert!(start.elapsed() < Duration::from_secs(5));
            // Armed for 30 ms from now, then the deadline moves to 150 ms: the early fire
            // re-arms, and the work (100 ms) finishes in time.
            let now = Instant::now();
            let brief = compio::time::sleep(Duration::from_millis(1));
            assert_eq!(
                d.within(now + Duration::from_millis(30), brief).await,
                Ok(())
            );
            assert!(d.armed.is_some());
            let work = compio::time::sleep(Duration::from_millis(100));
            assert_eq!(
                d.within(now + Duration::from_millis(150), work).await,
                Ok(())
            );
        });
    }
}
