use super::*;

fn group(records: &[Record<'_>]) -> Vec<u8> {
    let mut payload = Vec::new();
    for r in records {
        r.encode(&mut payload);
    }
    let mut out = Vec::new();
    out.extend_from_slice(GROUP_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload)[..8]);
    out.extend_from_slice(&payload);
    out
}

fn log_with(root: &Path, groups: &[Vec<u8>]) {
    let dir = root.join(JOURNAL_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = FILE_MAGIC.to_vec();
    bytes.extend_from_slice(&7u64.to_le_bytes());
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
    assert_eq!(log.len() as u64, HEADER_BYTES, "the log was not emptied");
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
