//! Crash points for the crash tests. `ORIGIN_FAILPOINT=<name>` (or `<name>@<n>` for the n-th
//! time) kills the process with SIGKILL when it reaches that step, as a power cut or the OOM
//! killer would, so every ordering the crash-safety argument relies on can be tested at the
//! exact step instead of by a lucky kill. `<name>~<millis>` instead stalls the thread there
//! every time, as a slow disk would (the deadline tests). Unset (always, in production), a
//! check is one load of an initialised `OnceLock` and a branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// What an armed point does.
enum Effect {
    /// SIGKILL at the n-th hit.
    Kill(u64),
    /// Block the thread this long at every hit.
    Stall(std::time::Duration),
}

/// The armed point, read once, and what it does.
static ARMED: OnceLock<Option<(String, Effect)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, Effect)> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("ORIGIN_FAILPOINT").ok()?;
        if let Some((name, ms)) = spec.split_once('~') {
            let ms = ms.parse().unwrap_or(1000);
            let stall = std::time::Duration::from_millis(ms);
            return Some((name.to_string(), Effect::Stall(stall)));
        }
        let (name, nth) = match spec.split_once('@') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some((name, Effect::Kill(nth.max(1))))
    })
}

/// Marks a step; the process dies here if this point is armed and its count is reached.
pub fn hit(name: &str) {
    let Some((armed, effect)) = armed() else {
        return;
    };
    if armed != name {
        return;
    }
    let nth = match effect {
        Effect::Kill(nth) => nth,
        Effect::Stall(d) => return std::thread::sleep(*d),
    };
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        eprintln!("failpoint {name}: killing the process");
        // SAFETY: raising a signal on our own process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
