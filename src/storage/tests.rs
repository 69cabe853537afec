//! The storage conformance suite, a function of a backend constructor, plus its runs for the
//! fs backend under both compio drivers and the fs-only cases.

use std::any::Any;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use compio::buf::{IntoInner, IoBuf};
use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::{Runtime, RuntimeBuilder};
use compio::BufResult;

use super::*;

/// A backend instance for one case, with a view of everything it physically stores.
pub(crate) struct Fixture<S> {
    pub storage: S,
    /// Everything the backend holds, below the trait: every file (temp files included) and
    /// every empty directory as `dir/`, sorted.
    pub raw_listing: Box<dyn Fn() -> Vec<String>>,
    /// Keeps the backend's scratch space alive until the case ends.
    pub _guard: Box<dyn Any>,
}

impl<S: Storage> Fixture<S> {
    /// Teardown: fails if the backend holds anything but `expected` keys.
    pub(crate) async fn finish(self, case: &str, expected: &[&str]) {
        let mut want: Vec<String> = expected.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!((self.raw_listing)(), want, "{case}: leftovers on disk");
        let listed = self.storage.list("", None, LIST_KEYS_MAX).await.unwrap();
        assert_eq!(listed, want, "{case}: listing at teardown");
    }
}

/// Runs every case against fresh backends from `make`.
pub(crate) async fn run_suite<S: Storage + Clone + 'static>(make: &dyn Fn() -> Fixture<S>) {
    put_get_overwrite(make()).await;
    if_absent_race(make()).await;
    if_match(make()).await;
    if_match_counter(make()).await;
    list_order_and_paging(make()).await;
    list_dir_children(make()).await;
    delete_and_prune(make()).await;
    ranged_reads(make()).await;
    upload_commit_visibility(make()).await;
    upload_commit_onto_existing(make()).await;
    invalid_keys(make()).await;
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(crate) fn written(outcome: PutOutcome) -> Etag {
    match outcome {
        PutOutcome::Written(etag) => etag,
        PutOutcome::PreconditionFailed => panic!("precondition failed unexpectedly"),
    }
}

/// Put creates and replaces; get returns the last content with a matching etag; sizes up to
/// and past the inline-hash threshold round-trip, as does the empty object.
async fn put_get_overwrite<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    assert_eq!(s.get("a/b/obj").await.unwrap(), None);
    let e1 = written(
        s.put("a/b/obj", b"one".to_vec(), PutCondition::Always)
            .await
            .unwrap(),
    );
    let got = s.get("a/b/obj").await.unwrap().unwrap();
    assert_eq!((got.bytes.as_slice(), &got.etag), (&b"one"[..], &e1));
    let e2 = written(
        s.put("a/b/obj", b"two!".to_vec(), PutCondition::Always)
            .await
            .unwrap(),
    );
    assert_ne!(e1, e2);
    let got = s.get("a/b/obj").await.unwrap().unwrap();
    assert_eq!((got.bytes.as_slice(), &got.etag), (&b"two!"[..], &e2));
    assert_eq!(s.head("a/b/obj").await.unwrap().unwrap().size, 4);
    // Same content, same etag: etags name content, not writes.
    let e3 = written(
        s.put("a/b/obj", b"two!".to_vec(), PutCondition::Always)
            .await
            .unwrap(),
    );
    assert_eq!(e2, e3);
    for (key, len) in [("empty", 0), ("big", 300_000), ("mid", 16 * 1024 + 1)] {
        let data = pattern(len, 7);
        let etag = written(
            s.put(key, data.clone(), PutCondition::Always)
                .await
                .unwrap(),
        );
        let got = s.get(key).await.unwrap().unwrap();
        assert_eq!((got.bytes, got.etag), (data, etag), "round trip of {key}");
    }
    // A "directory" is not an object.
    assert_eq!(s.get("a/b").await.unwrap(), None);
    assert_eq!(s.head("a/b").await.unwrap(), None);
    assert_eq!(s.get("a/b/obj/deeper").await.unwrap(), None);
    f.finish("put_get_overwrite", &["a/b/obj", "big", "empty", "mid"])
        .await;
}

/// Of several concurrent create-if-absent puts of one key exactly one wins, and its content
/// is what is stored.
async fn if_absent_race<S: Storage + Clone + 'static>(f: Fixture<S>) {
    const RACERS: u8 = 8;
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let s = f.storage.clone();
        tasks.push(compio::runtime::spawn(async move {
            let out = s.put("race/key", vec![i; 10], PutCondition::IfAbsent).await;
            (i, out.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, out) = task.await.unwrap();
        if let PutOutcome::Written(etag) = out {
            winners.push((i, etag));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one creator wins: {winners:?}");
    let (i, etag) = &winners[0];
    let got = f.storage.get("race/key").await.unwrap().unwrap();
    assert_eq!((got.bytes, &got.etag), (vec![*i; 10], etag));
    let again = f
        .storage
        .put("race/key", vec![], PutCondition::IfAbsent)
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::PreconditionFailed);
    f.finish("if_absent_race", &["race/key"]).await;
}

/// Replace-if-unchanged succeeds with the current etag only, and never creates.
async fn if_match<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    let stale = Etag::new("0".repeat(64));
    let absent = s
        .put("m", b"x".to_vec(), PutCondition::IfMatch(stale))
        .await
        .unwrap();
    assert_eq!(absent, PutOutcome::PreconditionFailed);
    assert_eq!(s.get("m").await.unwrap(), None);
    let e1 = written(
        s.put("m", b"v1".to_vec(), PutCondition::Always)
            .await
            .unwrap(),
    );
    let e2 = written(
        s.put("m", b"v2".to_vec(), PutCondition::IfMatch(e1.clone()))
            .await
            .unwrap(),
    );
    let old = s
        .put("m", b"v3".to_vec(), PutCondition::IfMatch(e1))
        .await
        .unwrap();
    assert_eq!(old, PutOutcome::PreconditionFailed);
    let got = s.get("m").await.unwrap().unwrap();
    assert_eq!((got.bytes.as_slice(), got.etag), (&b"v2"[..], e2));
    f.finish("if_match", &["m"]).await;
}

/// Concurrent read-modify-write loops on one counter lose no increment.
async fn if_match_counter<S: Storage + Clone + 'static>(f: Fixture<S>) {
    const TASKS: u32 = 4;
    const INCREMENTS: u32 = 5;
    f.storage
        .put("counter", b"0".to_vec(), PutCondition::Always)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let s = f.storage.clone();
        tasks.push(compio::runtime::spawn(increment(s, "counter", INCREMENTS)));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = f.storage.get("counter").await.unwrap().unwrap();
    assert_eq!(got.bytes, (TASKS * INCREMENTS).to_string().into_bytes());
    f.finish("if_match_counter", &["counter"]).await;
}

pub(crate) async fn increment<S: Storage>(s: S, key: &str, times: u32) {
    for _ in 0..times {
        loop {
            let current = s.get(key).await.unwrap().unwrap();
            let n: u32 = std::str::from_utf8(&current.bytes)
                .unwrap()
                .parse()
                .unwrap();
            let next = (n + 1).to_string().into_bytes();
            let cond = PutCondition::IfMatch(current.etag);
            if let PutOutcome::Written(_) = s.put(key, next, cond).await.unwrap() {
                break;
            }
        }
    }
}

/// Listing is lexically sorted over whole keys (so `a.c` < `a/b` < `a0`), honours string
/// prefixes, start_after (members or not) and limit, and pages back to the full listing.
async fn list_order_and_paging<S: Storage>(f: Fixture<S>) {
    let keys = [
        "a-b", "a.c", "a/b.x", "a/b/c", "a/bc", "a0", "ab", "b/x/y/z", "b/x0", "c",
    ];
    for key in &keys {
        f.storage
            .put(key, key.as_bytes().to_vec(), PutCondition::Always)
            .await
            .unwrap();
    }
    let s = &f.storage;
    let all: BTreeSet<&str> = keys.iter().copied().collect();
    let mut probes: Vec<Option<&str>> = vec![None, Some(""), Some("a/"), Some("a/b"), Some("zz")];
    probes.extend(keys.iter().map(|k| Some(*k)));
    for prefix in ["", "a", "a/", "a/b", "a/b/", "b/x", "b/x/", "nope/", "c"] {
        for &start_after in &probes {
            let want: Vec<String> = all
                .iter()
                .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| **k > s))
                .map(|k| k.to_string())
                .collect();
            let got = s.list(prefix, start_after, LIST_KEYS_MAX).await.unwrap();
            assert_eq!(got, want, "list({prefix:?}, {start_after:?})");
            let first = s.list(prefix, start_after, 2).await.unwrap();
            assert_eq!(first, want[..want.len().min(2)], "limit 2");
        }
        // Paging one key at a time reproduces the full listing.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.list(prefix, after.as_deref(), 1).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            paged.extend(page);
        }
        assert_eq!(paged, s.list(prefix, None, LIST_KEYS_MAX).await.unwrap());
    }
    assert!(s.list("", None, 0).await.unwrap().is_empty());
    f.finish("list_order_and_paging", &keys).await;
}

/// A directory larger than a listing page, an S3 list page and the fs index threshold:
/// pages from any position list every key once, in order; a key put or deleted shows in the
/// very next listing, also once the listing is served from the fs backend's index.
pub(crate) async fn list_large_directory<S: Storage>(f: Fixture<S>, n: usize) {
    let s = &f.storage;
    let mut keys: Vec<String> = (0..n)
        .map(|i| format!("big/k{:05}", (i * 7919) % n))
        .collect();
    for chunk in keys.chunks(250) {
        let items = chunk
            .iter()
            .map(|k| (k.clone(), vec![1], PutCondition::Always))
            .collect();
        s.put_batch(items).await.unwrap();
    }
    s.put("big0", vec![2], PutCondition::Always).await.unwrap();
    s.put("bia", vec![2], PutCondition::Always).await.unwrap();
    keys.sort();
    let pages = |after: Option<String>, size: usize| async move {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let page = s.list("big/", after.as_deref(), size).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            out.extend(page);
        }
        out
    };
    for round in 0..2 {
        assert!(
            pages(None, 97).await == keys,
            "round {round}: paged listing"
        );
        let mid = keys[n / 2].clone();
        assert_eq!(
            s.list("big/", Some(&mid), 5).await.unwrap(),
            keys[n / 2 + 1..n / 2 + 6],
            "round {round}: from the middle"
        );
        assert_eq!(s.list("big/k0001", None, 3).await.unwrap(), keys[10..13]);
        // Settled, so the fs backend keeps an index for the next round.
        compio::runtime::time::sleep(Duration::from_millis(250)).await;
    }
    for i in 0..3 {
        let new = format!("big/k00100-{i}");
        s.put(&new, vec![3], PutCondition::Always).await.unwrap();
        let after = s.list("big/", Some("big/k00100"), 2).await.unwrap();
        assert_eq!(after[0], new, "a new key in the next listing");
        assert!(s.delete(&new).await.unwrap());
        let after = s.list("big/", Some("big/k00100"), 1).await.unwrap();
        assert_eq!(
            after,
            ["big/k00101"],
            "a deleted key gone from the next listing"
        );
        compio::runtime::time::sleep(Duration::from_millis(150)).await;
        s.list("big/", None, 1).await.unwrap(); // Indexed again (fs).
    }
    assert!(s.delete("big/k00007").await.unwrap());
    let listed = pages(Some("big/k00005".into()), 1000).await;
    assert_eq!(listed[..2], ["big/k00006", "big/k00008"]);
    assert_eq!(listed.len(), n - 7);
    assert_eq!(s.list("", Some("big/~"), 10).await.unwrap(), ["big0"]);
}

/// list_dir returns the sorted immediate children (objects and sub-prefixes) of a prefix.
async fn list_dir_children<S: Storage>(f: Fixture<S>) {
    let keys = [
        "r/library/alpine/_tags/latest",
        "r/library/alpine/_tags/3.19",
        "r/x",
        "top",
    ];
    for key in keys {
        f.storage
            .put(key, vec![1], PutCondition::Always)
            .await
            .unwrap();
    }
    let s = &f.storage;
    assert_eq!(s.list_dir("").await.unwrap(), ["r", "top"]);
    assert_eq!(s.list_dir("r").await.unwrap(), ["library", "x"]);
    assert_eq!(s.list_dir("r/").await.unwrap(), ["library", "x"]);
    assert_eq!(
        s.list_dir("r/library/alpine/_tags").await.unwrap(),
        ["3.19", "latest"]
    );
    assert!(s.list_dir("r/missing").await.unwrap().is_empty());
    assert!(s.list_dir("top").await.unwrap().is_empty());
    f.finish("list_dir_children", &keys).await;
}

/// Delete removes an object (true), reports absence (false), leaves no empty prefixes, and
/// leaves siblings alone.
async fn delete_and_prune<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    for key in ["d/e/f/g", "d/e/h", "d/i"] {
        s.put(key, vec![2], PutCondition::Always).await.unwrap();
    }
    assert!(s.delete("d/e/f/g").await.unwrap());
    assert!(!s.delete("d/e/f/g").await.unwrap());
    assert_eq!(s.get("d/e/f/g").await.unwrap(), None);
    assert!(!s.delete("d/e").await.unwrap(), "a prefix is not an object");
    assert!(!s.delete("never/was").await.unwrap());
    assert_eq!(s.list_dir("d/e").await.unwrap(), ["h"]);
    assert!(s.delete("d/e/h").await.unwrap());
    assert_eq!(s.list_dir("d").await.unwrap(), ["i"]);
    // Recreating under a pruned prefix works.
    s.put("d/e/f/g", vec![3], PutCondition::IfAbsent)
        .await
        .unwrap();
    assert!(s.delete("d/e/f/g").await.unwrap());
    f.finish("delete_and_prune", &["d/i"]).await;
}

/// open_read serves arbitrary ranges of an object and reports its size.
async fn ranged_reads<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    assert!(s.open_read("blob").await.unwrap().is_none());
    let data = pattern(100_000, 3);
    s.put("blob", data.clone(), PutCondition::Always)
        .await
        .unwrap();
    let reader = s.open_read("blob").await.unwrap().unwrap();
    assert_eq!(reader.size(), 100_000);
    for (offset, len) in [(0, 10), (99_990, 10), (12_345, 40_000), (0, 100_000)] {
        let mut got = Vec::new();
        while got.len() < len {
            let want = len - got.len();
            let pos = (offset + got.len()) as u64;
            let BufResult(n, buf) = reader.read_at(Vec::with_capacity(want), pos).await;
            assert!(n.unwrap() > 0, "short object");
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, data[offset..offset + len], "range {offset}+{len}");
    }
    let BufResult(n, _) = reader.read_at(Vec::with_capacity(10), 100_000).await;
    assert_eq!(n.unwrap(), 0, "read at the end");
    // Reading into a slice window keeps the bytes before it.
    let mut buf = Vec::with_capacity(10);
    buf.extend_from_slice(&[9, 9]);
    let BufResult(n, buf) = reader.read_at(buf.slice(2..), 5).await;
    assert_eq!(n.unwrap(), 8);
    let buf = buf.into_inner();
    assert_eq!((&buf[..2], &buf[2..]), (&[9u8, 9][..], &data[5..13]));
    f.finish("ranged_reads", &["blob"]).await;
}

/// Upload data appended (in pieces, truncated back, synced) is invisible at the destination
/// until commit, and the commit moves exactly that data.
async fn upload_commit_visibility<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    let data = pattern(50_000, 11);
    let mut up = s.upload_create("up/1/data").await.unwrap();
    let BufResult(res, _) = up.write_all_at(data[..20_000].to_vec(), 0).await;
    res.unwrap();
    let BufResult(res, _) = up.write_all_at(data[20_000..].to_vec(), 20_000).await;
    res.unwrap();
    let BufResult(res, _) = up.write_all_at(vec![0xff; 100], 50_000).await;
    res.unwrap();
    assert_eq!(up.size().await.unwrap(), 50_100);
    up.truncate(50_000).await.unwrap();
    up.sync().await.unwrap();
    assert_eq!(s.upload_size("up/1/data").await.unwrap(), Some(50_000));
    assert_eq!(s.head("blobs/x/data").await.unwrap(), None);
    assert!(s.open_read("blobs/x/data").await.unwrap().is_none());
    assert!(s.list("blobs", None, 10).await.unwrap().is_empty());
    match s.upload_create("up/1/data").await {
        Err(StorageError::AlreadyExists { .. }) => {}
        other => panic!("second create: {:?}", other.map(|_| ())),
    }
    drop(up);
    let mut again = s.open_upload("up/1/data").await.unwrap().unwrap();
    assert_eq!(again.size().await.unwrap(), 50_000);
    let BufResult(res, _) = again.write_all_at(Vec::new(), 50_000).await;
    res.unwrap();
    drop(again);
    let outcome = s.upload_commit("up/1/data", "blobs/x/data").await.unwrap();
    assert_eq!(outcome, Some(CommitOutcome::Committed));
    let reader = s.open_read("blobs/x/data").await.unwrap().unwrap();
    assert_eq!(reader.size(), 50_000);
    let BufResult(n, buf) = reader.read_at(Vec::with_capacity(50_000), 0).await;
    assert_eq!((n.unwrap(), buf == data), (50_000, true));
    assert_eq!(s.upload_size("up/1/data").await.unwrap(), None);
    assert!(s.open_upload("up/1/data").await.unwrap().is_none());
    assert_eq!(
        s.upload_commit("up/1/data", "blobs/x/data").await.unwrap(),
        None
    );
    f.finish("upload_commit_visibility", &["blobs/x/data"])
        .await;
}

/// Committing onto an existing destination keeps it and removes the upload data.
async fn upload_commit_onto_existing<S: Storage>(f: Fixture<S>) {
    let s = &f.storage;
    for (i, sibling) in [(1, true), (2, false)] {
        let key = format!("up/{i}/data");
        let mut up = s.upload_create(&key).await.unwrap();
        let BufResult(res, _) = up.write_all_at(b"same".to_vec(), 0).await;
        res.unwrap();
        up.sync().await.unwrap();
        drop(up);
        if sibling {
            // Session state next to the data must survive the commit.
            s.put("up/1/state", b"s".to_vec(), PutCondition::Always)
                .await
                .unwrap();
        }
        let want = if i == 1 {
            CommitOutcome::Committed
        } else {
            CommitOutcome::AlreadyExisted
        };
        assert_eq!(s.upload_commit(&key, "blobs/y").await.unwrap(), Some(want));
        assert_eq!(s.upload_size(&key).await.unwrap(), None);
    }
    assert_eq!(s.get("blobs/y").await.unwrap().unwrap().bytes, b"same");
    f.finish("upload_commit_onto_existing", &["blobs/y", "up/1/state"])
        .await;
}

/// Malformed keys and prefixes are rejected by every operation without touching storage.
async fn invalid_keys<S: Storage>(f: Fixture<S>) {
    let long_key = "k/".repeat(KEY_BYTES_MAX / 2) + "k";
    let long_component = "c".repeat(KEY_COMPONENT_BYTES_MAX + 1);
    let bad: Vec<&str> = vec![
        "",
        "/abs",
        "..",
        "a/../b",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "a\0b",
        "a\\b",
        ".tmp",
        "a/.tmp-123",
        long_key.as_str(),
        long_component.as_str(),
    ];
    let s = &f.storage;
    let check = |what: &str, key: &str, res: Result<()>| match res {
        Err(StorageError::InvalidKey { .. }) => {}
        other => panic!("{what}({key:?}) gave {other:?}"),
    };
    for key in bad {
        check("get", key, s.get(key).await.map(drop));
        check(
            "put",
            key,
            s.put(key, vec![1], PutCondition::Always).await.map(drop),
        );
        check("head", key, s.head(key).await.map(drop));
        check("delete", key, s.delete(key).await.map(drop));
        check("open_read", key, s.open_read(key).await.map(drop));
        check("upload_create", key, s.upload_create(key).await.map(drop));
        check("open_upload", key, s.open_upload(key).await.map(drop));
        check("upload_size", key, s.upload_size(key).await.map(drop));
        check(
            "commit from",
            key,
            s.upload_commit(key, "ok").await.map(drop),
        );
        check("commit to", key, s.upload_commit("ok", key).await.map(drop));
    }
    for prefix in ["/abs", "a//", "../x", "a/.tmp", "a/../"] {
        check("list", prefix, s.list(prefix, None, 10).await.map(drop));
        check("list_dir", prefix, s.list_dir(prefix).await.map(drop));
    }
    let error = s.get("a/../b").await.unwrap_err().to_string();
    assert!(error.contains("invalid storage key"), "{error}");
    f.finish("invalid_keys", &[]).await;
}

// ---- The fs backend ----

/// A scratch directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).unwrap();
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("origin-storage-test-{name}"));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn poll_runtime() -> Runtime {
    let mut proactor = ProactorBuilder::new();
    proactor.driver_type(DriverType::Poll);
    RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .unwrap()
}

// The suite run on the filesystem backend, and its fs-only cases.
mod fs;
