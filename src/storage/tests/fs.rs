//! The shared storage suite on the filesystem backend (both I/O drivers, with and without
//! the write journal), and the cases only that backend has.

use super::*;

/// Every file and empty directory below `root`, relative, directories as `dir/`, sorted.
fn walk(root: &Path) -> Vec<String> {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut empty = true;
        for entry in std::fs::read_dir(dir).unwrap() {
            empty = false;
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        if empty && dir != root {
            out.push(format!(
                "{}/",
                dir.strip_prefix(root).unwrap().to_str().unwrap()
            ));
        }
    }
    let mut out = Vec::new();
    visit(root, root, &mut out);
    out.sort();
    out
}

fn fs_fixture() -> Fixture<FsStorage> {
    let dir = TempDir::new();
    let storage = FsStorage::new(dir.path().join("store")).unwrap();
    let root = storage.root().to_path_buf();
    Fixture {
        storage,
        raw_listing: Box::new(move || walk(&root)),
        _guard: Box::new(dir),
    }
}

/// The fs backend with its write journal (as the server runs it): group-committed writes
/// must keep every promise of the suite. The journal's own files are not keys.
fn fs_journal_fixture() -> Fixture<FsStorage> {
    let dir = TempDir::new();
    let storage = FsStorage::new(dir.path().join("store"))
        .unwrap()
        .with_journal()
        .unwrap();
    let root = storage.root().to_path_buf();
    Fixture {
        storage,
        raw_listing: Box::new(move || {
            walk(&root)
                .into_iter()
                .filter(|p| !p.starts_with(".tmp-journal"))
                .collect()
        }),
        _guard: Box::new(dir),
    }
}

/// A large directory lists in pages on the (journaled) fs backend, on both drivers.
#[test]
fn fs_large_directory() {
    Runtime::new()
        .unwrap()
        .block_on(async { list_large_directory(fs_journal_fixture(), 3_000).await });
    poll_runtime().block_on(async { list_large_directory(fs_journal_fixture(), 1_100).await });
}

/// The suite passes for the journaled fs backend on both drivers.
#[test]
fn fs_journal_suite() {
    Runtime::new()
        .unwrap()
        .block_on(run_suite(&fs_journal_fixture));
    poll_runtime().block_on(run_suite(&fs_journal_fixture));
}

/// The suite passes for the fs backend on the default driver (io_uring where available).
#[test]
fn fs_suite_default_driver() {
    let rt = Runtime::new().unwrap();
    eprintln!("fs suite on driver {:?}", rt.driver_type());
    rt.block_on(run_suite(&fs_fixture));
}

/// The suite passes for the fs backend on the polling fallback driver.
#[test]
fn fs_suite_poll_driver() {
    let rt = poll_runtime();
    assert_eq!(rt.driver_type(), DriverType::Poll);
    rt.block_on(run_suite(&fs_fixture));
}

/// Leftover temp files are never listed or readable, and cleanup_temp removes those old
/// enough, anywhere in the tree.
#[test]
fn fs_temp_leftovers_cleaned() {
    Runtime::new().unwrap().block_on(async {
        let f = fs_fixture();
        let s = &f.storage;
        s.put("a/b", vec![1], PutCondition::Always).await.unwrap();
        std::fs::write(s.root().join(".tmp-crash1"), b"x").unwrap();
        std::fs::write(s.root().join("a/.tmp-crash2"), b"x").unwrap();
        assert_eq!(s.list("", None, 10).await.unwrap(), ["a/b"]);
        assert_eq!(s.list_dir("").await.unwrap(), ["a"]);
        assert_eq!(s.list_dir("a").await.unwrap(), ["b"]);
        assert_eq!(s.cleanup_temp(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(s.cleanup_temp(Duration::ZERO).await.unwrap(), 2);
        f.finish("fs_temp_leftovers_cleaned", &["a/b"]).await;
    });
}

/// get refuses objects over the metadata limit; open_read still serves them.
#[test]
fn fs_get_limit() {
    Runtime::new().unwrap().block_on(async {
        let f = fs_fixture();
        let s = f.storage.clone().with_metadata_object_bytes_max(10);
        s.put("ten", vec![0; 10], PutCondition::Always)
            .await
            .unwrap();
        s.put("eleven", vec![0; 11], PutCondition::Always)
            .await
            .unwrap();
        assert_eq!(s.get("ten").await.unwrap().unwrap().bytes.len(), 10);
        match s.get("eleven").await {
            Err(StorageError::TooLarge {
                limit_bytes: 10, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let stale = PutCondition::IfMatch(Etag::new("x".into()));
        assert!(s.put("eleven", vec![], stale).await.is_err());
        assert_eq!(s.open_read("eleven").await.unwrap().unwrap().size(), 11);
        f.finish("fs_get_limit", &["eleven", "ten"]).await;
    });
}

/// Objects and blobs whose pages left the page cache read back whole (through the ring, as
/// the read on the worker's thread declines them), on both drivers.
#[test]
fn fs_reads_evicted_objects_back_whole() {
    for rt in [Runtime::new().unwrap(), poll_runtime()] {
        rt.block_on(async {
            let f = fs_fixture();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            f.storage
                .put("obj", data.clone(), PutCondition::Always)
                .await
                .unwrap();
            let on_disk = std::fs::File::open(f.storage.root().join("obj")).unwrap();
            crate::sys::tests::evict(&on_disk);
            let got = f.storage.get("obj").await.unwrap().unwrap();
            assert!(got.bytes == data, "object read back differs");
            crate::sys::tests::evict(&on_disk);
            let reader = f.storage.open_read("obj").await.unwrap().unwrap();
            assert_eq!(reader.size(), data.len() as u64);
            let BufResult(n, buf) = reader.read_at(Vec::with_capacity(1000), 5000).await;
            assert_eq!(n.unwrap(), 1000);
            assert!(buf[..] == data[5000..6000]);
            drop(reader);
            f.finish("fs_reads_evicted_objects_back_whole", &["obj"])
                .await;
        });
    }
}

/// The reader exposes a real fd for sendfile.
#[test]
fn fs_reader_exposes_fd() {
    use std::os::fd::AsRawFd;
    Runtime::new().unwrap().block_on(async {
        let f = fs_fixture();
        f.storage
            .put("blob", vec![5; 3], PutCondition::Always)
            .await
            .unwrap();
        let reader = f.storage.open_read("blob").await.unwrap().unwrap();
        let fd = reader.local_fd().unwrap().as_raw_fd();
        assert_eq!(fd, reader.as_raw_fd());
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on an fd the reader keeps open, into a stat it owns.
        assert_eq!(unsafe { libc::fstat(fd, &mut stat) }, 0);
        assert_eq!(stat.st_size, 3);
        drop(reader);
        f.finish("fs_reader_exposes_fd", &["blob"]).await;
    });
}

/// The per-key lock holds across cores: counters incremented from several threads, each with
/// its own runtime and its own FsStorage on the same directory, lose nothing.
#[test]
fn fs_if_match_across_threads() {
    const THREADS: u32 = 2;
    const INCREMENTS: u32 = 20;
    let f = fs_fixture();
    Runtime::new().unwrap().block_on(async {
        f.storage
            .put("n", b"0".to_vec(), PutCondition::Always)
            .await
            .unwrap();
    });
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let root = f.storage.root().to_path_buf();
            std::thread::spawn(move || {
                let rt = if i % 2 == 0 {
                    Runtime::new().unwrap()
                } else {
                    poll_runtime()
                };
                let s = FsStorage::new(root).unwrap();
                rt.block_on(increment(s, "n", INCREMENTS));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Runtime::new().unwrap().block_on(async {
        let got = f.storage.get("n").await.unwrap().unwrap();
        assert_eq!(got.bytes, (THREADS * INCREMENTS).to_string().into_bytes());
        f.finish("fs_if_match_across_threads", &["n"]).await;
    });
}
