//! The per-repository cap on open upload sessions, without a listing per POST.
//!
//! Counting a repository's sessions is a listing (one S3 request). Instead each process
//! keeps, per repository, an estimate: the count its last listing found plus the sessions it
//! admitted since. A POST lists only when the estimate has reached the cap (or the process
//! has none yet); the listing then decides, and resets the estimate. Sessions that end are
//! not subtracted, so the estimate never falls below what this process knows is open: with
//! one process the cap holds as before (up to one extra session per worker racing the same
//! listing); with N processes on one bucket each admits at most the cap between listings,
//! so a repository holds at most N x cap open sessions (each bounded in size and expired
//! after `uploads.idle_expiry`). The steady cost is one listing per cap POSTs.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::{RepoName, UploadId};
use crate::storage::Storage;

/// Repositories whose estimate a process keeps. Past it the table is emptied, which only
/// means the next POST of each repository lists again (about 100 bytes per entry: 1 MiB).
const REPOSITORIES_TRACKED_MAX: usize = 10_000;

#[derive(Default)]
pub struct SessionCap {
    estimates: Mutex<HashMap<String, usize>>,
}

impl SessionCap {
    /// Admits one more session of `repo` on the estimate alone (counting it) when that stays
    /// below `max`; false when a listing must decide.
    pub fn admit(&self, repo: &str, max: usize) -> bool {
        let Ok(mut m) = self.estimates.lock() else {
            return false; // a poisoned table: list, as with no estimate
        };
        match m.get_mut(repo) {
            Some(n) if *n < max => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// Records what a listing found (`open`, including a session about to start).
    pub fn listed(&self, repo: &str, open: usize) {
        let Ok(mut m) = self.estimates.lock() else {
            return;
        };
        if m.len() >= REPOSITORIES_TRACKED_MAX && !m.contains_key(repo) {
            m.clear();
        }
        m.insert(repo.to_string(), open);
    }
}

impl Registry {
    /// Refuses a new session past the per-repository cap (TOOMANYREQUESTS). Lists the
    /// repository's sessions only when this process's estimate says the cap may be reached
    /// (see `session_cap.rs` for what that bounds).
    pub(super) async fn check_session_cap(&self, name: &RepoName) -> Result<()> {
        let max = self.settings.upload_sessions_per_repository_max;
        if self.session_cap.admit(name.as_str(), max) {
            return Ok(());
        }
        let open = if self.store.upload_meta_inline() {
            let dir = layout::upload_sessions_dir(name);
            let listed = self.store.list_dir(&dir).await?;
            listed.iter().filter(|n| UploadId::parse(n).is_ok()).count()
        } else {
            self.store.list_dir(&layout::uploads_dir(name)).await?.len()
        };
        self.session_cap.listed(name.as_str(), open + 1);
        if open >= max {
            return Err(Error::TooManyRequests(
                "too many open upload sessions for this repository".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_first_then_at_the_cap() {
        let cap = SessionCap::default();
        assert!(!cap.admit("r", 3), "no estimate yet: list");
        cap.listed("r", 1);
        assert!(cap.admit("r", 3));
        assert!(cap.admit("r", 3));
        assert!(!cap.admit("r", 3), "estimate at the cap: list again");
        cap.listed("r", 2);
        assert!(cap.admit("r", 3));
        assert!(!cap.admit("other", 3));
    }

    #[test]
    fn table_is_bounded() {
        let cap = SessionCap::default();
        for i in 0..=REPOSITORIES_TRACKED_MAX {
            cap.listed(&format!("r{i}"), 0);
        }
        let len = cap.estimates.lock().unwrap().len();
        assert!(len <= REPOSITORIES_TRACKED_MAX, "{len}");
    }
}
