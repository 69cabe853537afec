//! The keys the log touched since the last checkpoint: what the next checkpoint must find
//! durable in the tree before the log may start again (`durable.rs`).

use std::collections::HashMap;

use super::replay::parse_records;
use super::*;

/// The keys of the records logged since the last checkpoint, each with its last operation.
#[derive(Default)]
pub(super) struct Touched {
    last: HashMap<String, u8>,
}

impl Touched {
    /// Notes the keys of records as the log holds them (a group's payload).
    pub(super) fn note(&mut self, records: &[u8]) -> io::Result<()> {
        let parsed = parse_records(records)
            .ok_or_else(|| io::Error::other("the journal's queued records do not parse"))?;
        for (op, key, _) in parsed {
            match self.last.get_mut(key) {
                Some(last) => *last = op,
                None => {
                    self.last.insert(key.to_owned(), op);
                }
            }
        }
        Ok(())
    }

    pub(super) fn clear(&mut self) {
        self.last.clear();
    }

    /// The files whose data the checkpoint must find written: each key whose last record
    /// wrote it. A deleted key has no data, and a *direct* marker's file was made durable by
    /// its writer; names (new files, renames, removals, directories) are filesystem metadata,
    /// which the checkpoint's commit covers (`durable.rs`).
    pub(super) fn written_files(&self, root: &Path) -> Vec<PathBuf> {
        self.last
            .iter()
            .filter(|(_, op)| **op != OP_DIRECT && **op != OP_DELETE)
            .map(|(key, _)| root.join(key))
            .collect()
    }
}
