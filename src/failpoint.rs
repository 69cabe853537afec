//! Crash points for the crash tests. `ORIGIN_FAILPOINT=<name>` (or `<name>@<n>` for the n-th
//! time) kills the process with SIGKILL when it reaches that step, as a power cut or the OOM
//! killer would, so every ordering the crash-safety argument relies on can be tested at the
//! exact step instead of by a lucky kill. `<name>~<ms>` (or `<name>@<n>~<ms>`) makes a
//! [`pause`] point wait that long instead, so a race test can put another request exactly
//! between two steps, and a [`hit`] point stall its thread that long (a slow disk). Unset (always, in production), a check is one load of an initialised
//! `OnceLock` and a branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The armed point: its name, which hit acts, and for a pause how long.
struct Armed {
    name: String,
    nth: u64,
    pause_ms: Option<u64>,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// A pause longer than this is cut to it (a test's typo must not hang a request for good).
const PAUSE_MS_MAX: u64 = 30_000;

fn armed() -> &'static Option<Armed> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("ORIGIN_FAILPOINT").ok()?;
        let (spec, pause_ms) = match spec.split_once('~') {
            Some((s, ms)) => (
                s.to_string(),
                Some(ms.parse().unwrap_or(0).min(PAUSE_MS_MAX)),
            ),
            None => (spec, None),
        };
        let (name, nth) = match spec.split_once('@') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some(Armed {
            name,
            nth: nth.max(1),
            pause_ms,
        })
    })
}

/// Whether this hit of `name` is the armed one (counted only for the armed name).
fn due(a: &Armed, name: &str) -> bool {
    a.name == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == a.nth
}

/// Marks a step; the process dies here if this point is armed and its count is reached.
pub fn hit(name: &str) {
    let Some(a) = armed() else {
        return;
    };
    if !due(a, name) {
        return;
    }
    if let Some(ms) = a.pause_ms {
        // A plain step armed as a pause stalls the thread, as a slow disk would.
        eprintln!("failpoint {name}: stalling {ms} ms");
        std::thread::sleep(Duration::from_millis(ms));
        return;
    }
    eprintln!("failpoint {name}: killing the process");
    // SAFETY: raising a signal on our own process.
    unsafe { libc::raise(libc::SIGKILL) };
}

/// Marks a step a race test may stretch: waits here if this point is armed as a pause and
/// its count is reached.
pub async fn pause(name: &str) {
    let Some(a) = armed() else {
        return;
    };
    if let Some(ms) = a.pause_ms {
        if due(a, name) {
            eprintln!("failpoint {name}: pausing {ms} ms");
            compio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}
