//! Crash points for the crash tests. `ORIGIN_FAILPOINT=<name>` (or `<name>@<n>` for the n-th
//! time) kills the process with SIGKILL when it reaches that step, as a power cut or the OOM
//! killer would, so every ordering the crash-safety argument relies on can be tested at the
//! exact step instead of by a lucky kill. Unset (always, in production), a check is one load
//! of an initialised `OnceLock` and a branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The armed point, read once, and how many hits kill.
static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("ORIGIN_FAILPOINT").ok()?;
        let (name, nth) = match spec.split_once('@') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some((name, nth.max(1)))
    })
}

/// Marks a step; the process dies here if this point is armed and its count is reached.
pub fn hit(name: &str) {
    let Some((armed, nth)) = armed() else {
        return;
    };
    if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        eprintln!("failpoint {name}: killing the process");
        // SAFETY: raising a signal on our own process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
