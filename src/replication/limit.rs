//! `max_bytes_per_second` of a target: one token bucket per target and per node, shared by
//! every copy to that target this process runs (the worker's jobs and `sync` copies in
//! requests, on any thread). Blob bodies are sent in chunks of [`Bandwidth::chunk_bytes`],
//! each after the wait its reservation sets (`http::client::Client::send_body_paced`).
//!
//! A reservation runs into debt: the lock is held only to refill the bucket and subtract
//! (no sleep under it), and the copies that reserve after it wait behind that debt, so the
//! rate holds whatever the number of copies. After an idle period the bucket is full: at
//! most [`BURST`] worth of the rate (and at least one chunk) goes out above the rate.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a full bucket holds, as time at the rate: what the copies may send at once after a
/// pause. Over a transfer of `t` seconds it lets the average exceed the rate by `BURST / t`
/// at most (1.25 % over 20 s).
pub const BURST: Duration = Duration::from_millis(250);
/// A paced body is written in chunks of this share of a second's worth of bytes...
const CHUNKS_PER_SECOND: u64 = 10;
/// ...within these bounds (a small chunk costs a wait per packet, a large one bursts).
const CHUNK_BYTES_MIN: u64 = 1024;
const CHUNK_BYTES_MAX: u64 = 256 * 1024;

/// The bucket of one target.
#[derive(Debug)]
pub struct Bandwidth {
    per_second: f64,
    burst: f64,
    chunk: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Bytes that may be sent now; negative: reserved ahead of the rate (the debt the
    /// next reservation waits behind).
    tokens: f64,
    at: Instant,
}

impl Bandwidth {
    pub fn new(bytes_per_second: u64) -> Bandwidth {
        let chunk = (bytes_per_second / CHUNKS_PER_SECOND).clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX);
        let per_second = bytes_per_second as f64;
        let burst = (per_second * BURST.as_secs_f64()).max(chunk as f64);
        Bandwidth {
            per_second,
            burst,
            chunk,
            state: Mutex::new(State {
                tokens: burst,
                at: Instant::now(),
            }),
        }
    }

    /// Reserves `bytes` at `now`: how long to wait before sending them.
    fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(s.at).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_second).min(self.burst);
        s.at = s.at.max(now);
        s.tokens -= bytes as f64;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / self.per_second)
        }
    }
}

impl crate::http::Pacer for Bandwidth {
    fn reserve(&self, bytes: u64) -> Duration {
        self.reserve_at(bytes, Instant::now())
    }

    fn chunk_bytes(&self) -> u64 {
        self.chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full bucket lets its burst through at once; beyond it every reservation waits for
    /// the rate, and concurrent reservations queue behind each other's debt.
    #[test]
    fn the_rate_holds_past_the_burst_and_debts_add_up() {
        let b = Bandwidth::new(1024 * 1024);
        let t0 = Instant::now();
        let burst = b.burst as u64;
        assert_eq!(burst, 256 * 1024);
        assert_eq!(b.reserve_at(burst, t0), Duration::ZERO);
        // Two copies reserving a chunk each at the same instant: the second waits for both.
        let first = b.reserve_at(b.chunk, t0);
        let second = b.reserve_at(b.chunk, t0);
        let chunk_time = b.chunk as f64 / b.per_second;
        assert!((first.as_secs_f64() - chunk_time).abs() < 1e-6, "{first:?}");
        assert!(
            (second.as_secs_f64() - 2.0 * chunk_time).abs() < 1e-6,
            "{second:?}"
        );
        // Ten seconds of reservations made over ten seconds never run ahead of the rate.
        let mut sent = 0u64;
        let mut latest = t0;
        for i in 0..100 {
            let now = t0 + Duration::from_millis(100 * i);
            let wait = b.reserve_at(b.chunk, now);
            sent += b.chunk;
            latest = latest.max(now + wait);
        }
        let elapsed = latest.duration_since(t0).as_secs_f64();
        let rate = (sent + 2 * b.chunk) as f64 / elapsed;
        assert!(
            rate <= b.per_second * 1.0001,
            "{rate} over {}",
            b.per_second
        );
    }

    /// An idle bucket fills to its burst, never more: a pause does not bank a long burst.
    #[test]
    fn an_idle_bucket_holds_one_burst() {
        let b = Bandwidth::new(64 * 1024);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.reserve_at(b.burst as u64, later), Duration::ZERO);
        assert!(b.reserve_at(b.chunk, later) > Duration::ZERO);
        assert_eq!(b.chunk, 6553);
    }
}
