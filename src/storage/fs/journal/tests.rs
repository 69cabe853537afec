use std::collections::HashSet;

use super::*;

mod loopfs;

/// The epoch of the logs these tests write.
const EPOCH: u64 = 7;

fn encode(records: &[Record<'_>]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in records {
        r.encode(&mut payload);
    }
    payload
}

fn frame(sum: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(GROUP_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&sum[..8]);
    out.extend_from_slice(payload);
    out
}

/// A group as the current format writes it in epoch `EPOCH`.
fn group(records: &[Record<'_>]) -> Vec<u8> {
    let payload = encode(records);
    frame(&group_sum(EPOCH, &payload), &payload)
}

fn log_with(root: &Path, groups: &[Vec<u8>]) {
    log_with_magic(root, FILE_MAGIC, groups)
}

fn log_with_magic(root: &Path, magic: &[u8; 8], groups: &[Vec<u8>]) {
    let dir = root.join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = magic.to_vec();
    bytes.extend_from_slice(&EPOCH.to_le_bytes());
    for g in groups {
        bytes.extend_from_slice(g);
    }
    std::fs::write(dir.join(JOURNAL_FILE), bytes).unwrap();
}

fn read(root: &Path, key: &str) -> Option<Vec<u8>> {
    std::fs::read(root.join(key)).ok()
}

/// Replay applies complete groups in order (a torn last group is ignored, as nothing in
/// it was acknowledged), overwrites a torn file, honours a direct marker over an older
/// logged delete, and leaves an empty log behind.
#[test]
fn replay_applies_complete_groups_in_order() {
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().to_path_buf();
    // A torn file left by a power loss: replay must replace it.
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/torn"), b"\0\0\0").unwrap();
    // A blob committed directly after a logged delete of it.
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join("blobs/x"), b"committed").unwrap();
    std::fs::write(root.join("a/gone"), b"old").unwrap();
    let g1 = group(&[
        Record::Put("a/one", b"1"),
        Record::Put("a/torn", b"whole"),
        Record::Delete("blobs/x"),
    ]);
    let g2 = group(&[
        Record::PutIfAbsent("a/two", b"2"),
        Record::Delete("a/gone"),
        Record::Direct("blobs/x"),
        Record::Put("a/one", b"1 again"),
    ]);
    let mut torn = group(&[Record::Put("a/never", b"lost")]);
    torn.truncate(torn.len() - 1);
    log_with(&root, &[g1, g2, torn]);
    let journal = Journal::open(&root).unwrap();
    assert_eq!(read(&root, "a/one").as_deref(), Some(&b"1 again"[..]));
    assert_eq!(read(&root, "a/torn").as_deref(), Some(&b"whole"[..]));
    assert_eq!(read(&root, "a/two").as_deref(), Some(&b"2"[..]));
    assert_eq!(read(&root, "a/gone"), None);
    assert_eq!(read(&root, "blobs/x").as_deref(), Some(&b"committed"[..]));
    assert_eq!(read(&root, "a/never"), None);
    drop(journal);
    let log = std::fs::read(root.join(JOURNAL_DIR).join(JOURNAL_FILE)).unwrap();
    let (epoch, groups) = replay::read_log(&log).unwrap();
    assert!(epoch > EPOCH, "no new epoch: {epoch}");
    assert!(groups.is_empty(), "the log was not started again");
    // Another open replays nothing more and changes nothing.
    drop(Journal::open(&root).unwrap());
    assert_eq!(read(&root, "a/one").as_deref(), Some(&b"1 again"[..]));
}

/// A second process (here: a second open) cannot take a root's journal.
#[test]
fn one_owner_per_root() {
    let tmp = crate::storage::tests::TempDir::new();
    let first = Journal::open(tmp.path()).unwrap();
    let err = Journal::open(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("another origin process"), "{err}");
    drop(first);
    drop(Journal::open(tmp.path()).unwrap());
}

/// A log that is not ours is refused rather than replayed.
#[test]
fn foreign_log_is_refused() {
    let tmp = crate::storage::tests::TempDir::new();
    let dir = tmp.path().join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(JOURNAL_FILE), b"not a journal at all").unwrap();
    assert!(Journal::open(tmp.path()).is_err());
}

/// Concurrent writers on several threads share flushes: every durable put comes back
/// applied, and the number of groups written is below the number of writes.
#[test]
fn concurrent_durable_puts_share_groups() {
    let tmp = crate::storage::tests::TempDir::new();
    let storage = crate::storage::FsStorage::new(tmp.path().join("s"))
        .unwrap()
        .with_journal()
        .unwrap();
    const THREADS: usize = 4;
    const PUTS: usize = 50;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = storage.clone();
            std::thread::spawn(move || {
                compio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        use crate::storage::Storage;
                        let tasks: Vec<_> = (0..PUTS)
                            .map(|i| {
                                let s = s.clone();
                                compio::runtime::spawn(async move {
                                    let key = format!("k/{t}/{i}");
                                    s.put(
                                        &key,
                                        key.clone().into_bytes(),
                                        crate::storage::PutCondition::Always,
                                    )
                                    .await
                                    .unwrap();
                                    // Visible on return.
                                    assert_eq!(
                                        s.get(&key).await.unwrap().unwrap().bytes,
                                        key.as_bytes()
                                    );
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.unwrap();
                        }
                    })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let groups = GROUPS_WRITTEN.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        groups > 0 && groups < (THREADS * PUTS) as u64,
        "{groups} groups"
    );
}

/// A log of the first format (groups checksummed without the epoch, as written before the
/// log was preallocated) is still replayed, so an upgrade loses no acknowledged write.
#[test]
fn a_log_of_the_first_format_is_replayed() {
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().to_path_buf();
    let payload = encode(&[Record::Put("a/old", b"kept")]);
    log_with_magic(
        &root,
        FILE_MAGIC_V1,
        &[frame(&Sha256::digest(&payload), &payload)],
    );
    drop(Journal::open(&root).unwrap());
    assert_eq!(read(&root, "a/old").as_deref(), Some(&b"kept"[..]));
}

/// Groups left behind from an earlier epoch (the log is overwritten in place, not
/// truncated) end the log: after a checkpoint, a restart does not replay them again.
#[test]
fn groups_of_an_earlier_epoch_are_not_replayed() {
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().to_path_buf();
    log_with(&root, &[group(&[Record::Put("a/k", b"logged")])]);
    drop(Journal::open(&root).unwrap());
    assert_eq!(read(&root, "a/k").as_deref(), Some(&b"logged"[..]));
    // Changed outside the journal (as a maintenance command would) after the checkpoint.
    std::fs::write(root.join("a/k"), b"later").unwrap();
    drop(Journal::open(&root).unwrap());
    assert_eq!(read(&root, "a/k").as_deref(), Some(&b"later"[..]));
}

fn storage_with_journal(root: &Path) -> crate::storage::FsStorage {
    crate::storage::FsStorage::new(root.to_path_buf())
        .unwrap()
        .with_journal()
        .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Failed checkpoints do not stop writes: they go on into the log, the checkpoint is tried
/// again until it succeeds, and everything written meanwhile survives a restart. In the mode
/// this filesystem gets (`syncfs` on the test VM's root).
#[test]
fn writes_go_on_while_checkpoints_fail_and_the_checkpoint_recovers() {
    checkpoints_fail_then_recover(false);
}

/// The same in `Commit` mode: the failure comes at the end of a checkpoint whose wait ran
/// beside the flusher, and the next one (whole, on the flusher) commits.
#[test]
fn writes_go_on_while_commit_checkpoints_fail_and_the_checkpoint_recovers() {
    checkpoints_fail_then_recover(true);
}

fn checkpoints_fail_then_recover(commit: bool) {
    use crate::storage::{PutCondition, Storage};
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().join("s");
    if commit {
        durable::FORCE_COMMIT.lock().unwrap().push(root.clone());
    }
    let storage = storage_with_journal(&root);
    let journal = storage.journal().unwrap().clone_shared();
    journal.lock().inject_checkpoint_failures = 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    block_on(async {
        loop {
            let key = format!("k/{i}");
            storage
                .put(&key, key.clone().into_bytes(), PutCondition::Always)
                .await
                .expect("a write while checkpoints fail");
            i += 1;
            let (done, failed) = {
                let st = journal.lock();
                (st.checkpoints, st.checkpoint_failures)
            };
            if failed == 2 && done >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint after {failed} failures"
            );
            compio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if commit {
        assert!(
            commit_epoch(&root).is_some_and(|e| e > 0),
            "the recovered checkpoint committed nothing"
        );
    }
    drop(storage);
    let storage = storage_with_journal(&root);
    block_on(async {
        for n in 0..i {
            let key = format!("k/{n}");
            let got = storage
                .get(&key)
                .await
                .unwrap()
                .expect("written while failing");
            assert_eq!(got.bytes, key.as_bytes());
        }
    });
}

/// The re-application after a failed checkpoint writes each key's logged state back (a
/// page lost by writeback comes back), but never over a newer state: a key whose record is
/// in the queue (a pending write already in the tree, or a durable one about to be applied,
/// which holds the key's lock) is left as it is, without waiting for its lock.
#[test]
fn reapply_restores_logged_state_and_leaves_newer_writes() {
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().to_path_buf();
    std::fs::create_dir_all(root.join("a")).unwrap();
    let log = root.join("log");
    let mut bytes = FILE_MAGIC.to_vec();
    bytes.extend_from_slice(&EPOCH.to_le_bytes());
    bytes.extend(group(&[
        Record::Put("a/lost", b"logged"),
        Record::Put("a/pending", b"old"),
        Record::Put("a/durable", b"old"),
        Record::Delete("a/deleted"),
    ]));
    std::fs::write(&log, &bytes).unwrap();
    let file = OpenOptions::new().read(true).open(&log).unwrap();
    // The tree: a page lost to writeback, a pending write newer than the log, a durable
    // write waiting in the queue (its lock held), and a deleted key that came back on disk.
    std::fs::write(root.join("a/lost"), b"\0\0").unwrap();
    std::fs::write(root.join("a/pending"), b"new").unwrap();
    std::fs::write(root.join("a/durable"), b"old").unwrap();
    std::fs::write(root.join("a/deleted"), b"stale").unwrap();
    let shared = Shared {
        root: root.clone(),
        state: Mutex::new(State::new()),
        wake_flusher: Condvar::new(),
    };
    let held = super::super::locks::try_lock_key(&root.join("a/durable")).unwrap();
    {
        let mut st = shared.lock();
        st.queued = encode(&[
            Record::Put("a/pending", b"new"),
            Record::Put("a/durable", b"newer"),
        ]);
    }
    let started = Instant::now();
    recover::reapply(&shared, &file, EPOCH, bytes.len() as u64).unwrap();
    assert!(
        started.elapsed() < recover::KEY_WAIT_MAX,
        "waited for a queued key's lock"
    );
    drop(held);
    assert_eq!(read(&root, "a/lost").as_deref(), Some(&b"logged"[..]));
    assert_eq!(read(&root, "a/pending").as_deref(), Some(&b"new"[..]));
    assert_eq!(read(&root, "a/durable").as_deref(), Some(&b"old"[..]));
    assert_eq!(read(&root, "a/deleted"), None);
}

/// The log is written ahead with zeros, so a group overwrites allocated blocks: after some
/// groups the file is longer than what they take, and groups beyond a checkpoint reuse it.
#[test]
fn the_log_is_zeroed_ahead_of_its_groups() {
    use crate::storage::{PutCondition, Storage};
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().join("s");
    let storage = storage_with_journal(&root);
    block_on(async {
        for i in 0..20 {
            let key = format!("k/{i}");
            storage
                .put(&key, vec![b'x'; 10_000], PutCondition::Always)
                .await
                .unwrap();
        }
    });
    let len = std::fs::metadata(root.join(JOURNAL_DIR).join(JOURNAL_FILE))
        .unwrap()
        .len();
    assert!(len >= LOG_PREALLOC_STEP, "log of {len} bytes");
    assert!(len < 2 * LOG_PREALLOC_STEP, "log of {len} bytes");
}

/// While checkpoints keep failing the log grows; past `LOG_BYTES_MAX` a write fails as
/// transient (the API answers 503) instead of growing it further, and once a checkpoint
/// succeeds writes are taken again.
#[test]
fn a_log_past_its_limit_refuses_writes_until_a_checkpoint_succeeds() {
    use crate::storage::{PutCondition, Storage, StorageError};
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().join("s");
    let storage = storage_with_journal(&root);
    let journal = storage.journal().unwrap().clone_shared();
    journal.lock().inject_checkpoint_failures = u32::MAX;
    let value = vec![b'v'; 64 * 1024];
    block_on(async {
        let mut written = 0u64;
        let refused = loop {
            let key = format!("k/{written}");
            match storage.put(&key, value.clone(), PutCondition::Always).await {
                Ok(_) => written += 1,
                Err(e) => break e,
            }
            assert!(
                written * (value.len() as u64) < 2 * LOG_BYTES_MAX,
                "no refusal after {written} writes"
            );
        };
        assert!(
            matches!(&refused, StorageError::Io(e) if e.kind() == io::ErrorKind::TimedOut),
            "{refused:?}"
        );
        assert!(written * (value.len() as u64) >= LOG_BYTES_MAX - CHECKPOINT_BYTES);
        journal.lock().inject_checkpoint_failures = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if storage
                .put("after", b"ok".to_vec(), PutCondition::Always)
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "writes stayed refused");
            compio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Waits until the journal has done a checkpoint more than `before`.
pub(super) fn wait_for_checkpoint(journal: &Shared, before: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal.lock().checkpoints <= before {
        assert!(Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The epoch a `Commit` checkpoint left in the log file's attribute (`durable.rs`).
pub(super) fn commit_epoch(root: &Path) -> Option<u64> {
    let log = File::open(root.join(JOURNAL_DIR).join(JOURNAL_FILE)).unwrap();
    let mut value = [0u8; 8];
    // SAFETY: plain syscall on an open descriptor, a NUL-terminated name and a live buffer.
    let n = unsafe {
        libc::fgetxattr(
            log.as_raw_fd(),
            c"user.origin.checkpoint".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n == 8).then(|| u64::from_le_bytes(value))
}

/// A `Commit` checkpoint waits for the data of each file the log wrote (durable and pending
/// writes), not for a deleted key, a direct write or a file written beside the journal, then
/// commits with the new epoch on the log's attribute; a restart reads everything back.
#[test]
fn a_commit_checkpoint_waits_for_the_written_files_then_commits() {
    use crate::storage::{PutCondition, Storage};
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().join("s");
    durable::FORCE_COMMIT.lock().unwrap().push(root.clone());
    let storage = storage_with_journal(&root);
    let journal = storage.journal().unwrap().clone_shared();
    std::fs::write(root.join("bystander"), b"not the journal's").unwrap();
    let before = journal.lock().checkpoints;
    let written = ["a/b/c/one", "a/two", "p/q/pending", "z"];
    block_on(async {
        for key in ["a/b/c/one", "a/two", "d/e/gone"] {
            storage
                .put(key, key.as_bytes().to_vec(), PutCondition::Always)
                .await
                .unwrap();
        }
        storage.delete("d/e/gone").await.unwrap();
        storage
            .put_pending("p/q/pending", b"p/q/pending".to_vec(), PutCondition::Always)
            .await
            .unwrap();
        storage
            .put("z", b"z".to_vec(), PutCondition::Always)
            .await
            .unwrap();
    });
    wait_for_checkpoint(&journal, before);
    let waited: HashSet<PathBuf> = durable::WAITED
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with(&root))
        .cloned()
        .collect();
    for key in written {
        assert!(waited.contains(&root.join(key)), "{key} not waited for");
    }
    assert!(!waited.contains(&root.join("bystander")));
    assert!(!waited.contains(&root.join("d/e/gone")), "a deleted key");
    assert!(
        commit_epoch(&root).is_some_and(|e| e > 0),
        "no commit marked on the log"
    );
    drop(storage);
    let storage = storage_with_journal(&root);
    block_on(async {
        for key in written {
            let got = storage.get(key).await.unwrap().expect(key);
            assert_eq!(got.bytes, key.as_bytes());
        }
        assert!(storage.get("d/e/gone").await.unwrap().is_none());
    });
}

/// A `Commit` checkpoint waits for its files beside the flusher (`durable::Presync`): while
/// that wait is held, durable writes still complete, and the checkpoint's end waits for what
/// they wrote before the log starts again, so a restart finds both.
#[test]
fn durable_writes_go_on_while_a_commit_checkpoint_waits() {
    use crate::storage::{PutCondition, Storage};
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = crate::storage::tests::TempDir::new();
    let root = tmp.path().join("s");
    durable::FORCE_COMMIT.lock().unwrap().push(root.clone());
    durable::HOLD_PRESYNC.lock().unwrap().push(root.clone());
    let release = || durable::HOLD_PRESYNC.lock().unwrap().retain(|r| r != &root);
    let storage = storage_with_journal(&root);
    let journal = storage.journal().unwrap().clone_shared();
    let checkpoints = journal.lock().checkpoints;
    let held = durable::PRESYNCS_HELD.load(SeqCst);
    let put = |key: &'static str| {
        block_on(storage.put(key, key.as_bytes().to_vec(), PutCondition::Always)).unwrap()
    };
    put("before/the/checkpoint");
    let deadline = Instant::now() + Duration::from_secs(20);
    while durable::PRESYNCS_HELD.load(SeqCst) == held {
        if Instant::now() > deadline {
            release();
            panic!("no checkpoint started");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::scope(|s| {
        let during = s.spawn(|| put("during/the/checkpoint"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !during.is_finished() {
            if Instant::now() > deadline {
                release();
                panic!("a durable write waited for the checkpoint's wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(
        journal.lock().checkpoints,
        checkpoints,
        "the checkpoint ended before its wait"
    );
    release();
    wait_for_checkpoint(&journal, checkpoints);
    let waited: HashSet<PathBuf> = durable::WAITED.lock().unwrap().iter().cloned().collect();
    for key in ["before/the/checkpoint", "during/the/checkpoint"] {
        assert!(waited.contains(&root.join(key)), "{key} not waited for");
    }
    drop(storage);
    let storage = storage_with_journal(&root);
    block_on(async {
        for key in ["before/the/checkpoint", "during/the/checkpoint"] {
            let got = storage.get(key).await.unwrap().expect(key);
            assert_eq!(got.bytes, key.as_bytes());
        }
    });
}
