//! After a failed checkpoint: the log's state written to the tree again, beside live writers.
//!
//! A failed checkpoint may have lost pages of any object applied since the last one, and the
//! kernel will not say so twice. The log still holds every one of those mutations, so the
//! flusher writes each key's last logged state to the tree again before the next checkpoint.
//!
//! Writers go on meanwhile, and a key's logged state may already be stale: a pending write
//! changes the tree first and queues its record after, and a durable write's record waits in
//! the queue to be applied. Both hold the key's lock from before they touch the tree until
//! their record is queued (a durable one until it is applied). So, for each key, with its lock
//! held: if the queue has a record for it, the tree already has (or is about to get) a newer
//! state, and the key is skipped; otherwise nobody is changing it, the tree's state is the
//! log's, and writing it again changes nothing a reader can see. A lock held by a record in the
//! queue is never released while the flusher is here, so a key whose lock stays taken is
//! checked against the queue again until its record shows up there.

use std::collections::HashSet;

use super::super::locks::try_lock_key;
use super::replay::{last_states, parse_groups, parse_records, read_log};
use super::*;

/// How long the flusher waits for one key's lock before it gives this attempt up (the
/// checkpoint is tried again after its backoff).
pub(super) const KEY_WAIT_MAX: Duration = Duration::from_secs(5);
const KEY_WAIT_STEP: Duration = Duration::from_millis(1);

pub(super) fn reapply(shared: &Shared, file: &File, epoch: u64, end: u64) -> io::Result<()> {
    let mut bytes = vec![0u8; end as usize];
    file.read_exact_at(&mut bytes, 0)?;
    let (read_epoch, groups) = read_log(&bytes)?;
    if read_epoch != epoch {
        return Err(io::Error::other(
            "the journal's header changed under the flusher",
        ));
    }
    let records = parse_groups(&groups)?;
    let mut queued = QueuedKeys::default();
    let mut written = 0usize;
    for (key, state) in last_states(&records) {
        let a = state.apply(&shared.root, key)?;
        let path = shared.root.join(key);
        let deadline = Instant::now() + KEY_WAIT_MAX;
        let guard = loop {
            if queued.contains(shared, key) {
                break None;
            }
            if let Some(guard) = try_lock_key(&path) {
                // Locked: no record for the key can be queued from now on, so one check of
                // the queue decides.
                if queued.contains(shared, key) {
                    break None;
                }
                break Some(guard);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("re-applying the journal: {key} stayed locked"),
                ));
            }
            std::thread::sleep(KEY_WAIT_STEP);
        };
        if let Some(_guard) = guard {
            apply(&shared.root, a)?;
            written += 1;
        }
    }
    tracing::info!(
        records = records.len(),
        written,
        "wrote the journal's state to the tree again after a failed checkpoint"
    );
    Ok(())
}

/// Keys of the records queued for the next group, read incrementally (records are only
/// appended to the queue while the flusher is here).
#[derive(Default)]
struct QueuedKeys {
    keys: HashSet<String>,
    scanned: usize,
}

impl QueuedKeys {
    fn contains(&mut self, shared: &Shared, key: &str) -> bool {
        let st = shared.lock();
        if let Some(new) = st.queued.get(self.scanned..) {
            if let Some(records) = parse_records(new) {
                self.keys
                    .extend(records.iter().map(|(_, k, _)| (*k).to_string()));
            }
            self.scanned = st.queued.len();
        }
        self.keys.contains(key)
    }
}
