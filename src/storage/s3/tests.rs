//! The S3 backend against a real moto server: the shared storage suite, moto's own
//! conditional-write atomicity, multipart sessions across instances (nodes), racing writers,
//! and the start-up probe.

use std::cell::Cell;
use std::rc::Rc;

use compio::runtime::Runtime;
use compio::BufResult;

use super::fault::{Fault, FaultProxy};
use super::moto::Moto;
use super::*;
use crate::storage::tests::{
    list_large_directory, pattern, poll_runtime, run_suite, written, Fixture,
};
use crate::storage::{BlobReader, UploadWriter};

/// A fixture factory: a fresh bucket per case on one moto server.
fn fixtures(moto: Rc<Moto>) -> impl Fn() -> Fixture<S3Storage> {
    let n = Cell::new(0u32);
    move || {
        n.set(n.get() + 1);
        let bucket = format!("suite-{}", n.get());
        moto.create_bucket(&bucket);
        let storage = S3Storage::new(&moto.config(&bucket)).unwrap();
        let m = moto.clone();
        Fixture {
            storage,
            raw_listing: Box::new(move || m.raw_listing(&bucket)),
            _guard: Box::new(()),
        }
    }
}

fn s3_fixture(moto: &Moto, bucket: &str) -> S3Storage {
    moto.create_bucket(bucket);
    S3Storage::new(&moto.config(bucket)).unwrap()
}

/// The shared storage suite passes on S3 (moto), default driver.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_suite_default_driver() {
    let Some(moto) = Moto::start("s3_suite_default_driver") else {
        return;
    };
    let make = fixtures(Rc::new(moto));
    Runtime::new().unwrap().block_on(run_suite(&make));
}

/// The shared storage suite passes on S3 (moto), polling driver.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_suite_poll_driver() {
    let Some(moto) = Moto::start("s3_suite_poll_driver") else {
        return;
    };
    let make = fixtures(Rc::new(moto));
    poll_runtime().block_on(run_suite(&make));
}

/// A directory of more keys than one ListObjectsV2 page lists in pages from any position;
/// changes show in the next listing.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_large_directory() {
    let Some(moto) = Moto::start("s3_large_directory") else {
        return;
    };
    let make = fixtures(Rc::new(moto));
    Runtime::new()
        .unwrap()
        .block_on(async { list_large_directory(make(), 1_100).await });
}

/// moto (like S3) applies If-None-Match: * and If-Match atomically: of many writers racing on
/// one key, exactly one wins, for every key.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_conditional_writes_are_atomic() {
    const KEYS: usize = 12;
    const RACERS: usize = 12;
    let Some(moto) = Moto::start("s3_conditional_writes_are_atomic") else {
        return;
    };
    let s = s3_fixture(&moto, "atomic");
    Runtime::new().unwrap().block_on(async {
        for round in ["create", "replace"] {
            let mut etags = Vec::new();
            for k in 0..KEYS {
                let key = format!("k/{k}");
                let cond = if round == "create" {
                    PutCondition::IfAbsent
                } else {
                    let current = s.get(&key).await.unwrap().unwrap();
                    PutCondition::IfMatch(current.etag)
                };
                etags.push((key, cond));
            }
            let mut tasks = Vec::new();
            for (key, cond) in &etags {
                for r in 0..RACERS {
                    let (s, key, cond) = (s.clone(), key.clone(), cond.clone());
                    let body = format!("{round}-{r}").into_bytes();
                    tasks.push(compio::runtime::spawn(async move {
                        (key.clone(), r, s.put(&key, body, cond).await.unwrap())
                    }));
                }
            }
            let mut winners = std::collections::BTreeMap::<String, Vec<usize>>::new();
            for t in tasks {
                let (key, r, out) = t.await.unwrap();
                if let PutOutcome::Written(_) = out {
                    winners.entry(key).or_default().push(r);
                }
            }
            for (key, _) in &etags {
                let w = winners.get(key).cloned().unwrap_or_default();
                assert_eq!(w.len(), 1, "{round} {key}: winners {w:?}");
                let got = s.get(key).await.unwrap().unwrap();
                assert_eq!(got.bytes, format!("{round}-{}", w[0]).into_bytes());
            }
        }
    });
}

async fn append(up: &mut S3Upload, bytes: &[u8]) {
    let at = up.size().await.unwrap();
    let BufResult(r, _) = up.write_all_at(bytes.to_vec(), at).await;
    r.unwrap();
}

async fn read_all<S: Storage>(s: &S, key: &str) -> Vec<u8> {
    let r = s.open_read(key).await.unwrap().unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < r.size() {
        let BufResult(n, buf) = r
            .read_at(Vec::with_capacity(1 << 20), out.len() as u64)
            .await;
        assert!(n.unwrap() > 0);
        out.extend_from_slice(&buf);
    }
    out
}

/// A session written in chunks below and above the part size, continued by a second backend
/// instance (another node), truncated back once, commits to exactly its bytes with a
/// multipart upload and leaves nothing behind; committing onto an existing blob keeps it.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_multipart_session_across_nodes() {
    let Some(moto) = Moto::start("s3_multipart_session_across_nodes") else {
        return;
    };
    let a = s3_fixture(&moto, "multipart");
    let b = S3Storage::new(&moto.config("multipart")).unwrap();
    let part = a.part_bytes() as usize;
    let data = pattern(2 * part + part / 2 + 123, 5);
    Runtime::new().unwrap().block_on(async {
        // Node A: a small chunk (staged as a short tail), then a chunk past the part size.
        let mut up = a.upload_create("u/1/data").await.unwrap();
        append(&mut up, &data[..1000]).await;
        up.sync().await.unwrap();
        append(&mut up, &data[1000..part + 5000]).await;
        up.sync().await.unwrap();
        drop(up);
        assert_eq!(
            b.upload_size("u/1/data").await.unwrap(),
            Some(part as u64 + 5000)
        );
        // Node B continues; a crashed request's leftover is cut back first.
        let mut up = b.open_upload("u/1/data").await.unwrap().unwrap();
        append(&mut up, &[0xee; 777]).await;
        up.sync().await.unwrap();
        up.truncate(part as u64 + 5000).await.unwrap();
        append(&mut up, &data[part + 5000..]).await;
        up.sync().await.unwrap();
        // Appends only at the end.
        let BufResult(r, _) = up.write_all_at(vec![1], 3).await;
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        drop(up);
        assert_eq!(
            a.upload_size("u/1/data").await.unwrap(),
            Some(data.len() as u64)
        );
        // The session reads back as its parts in order (for a rehash before the commit).
        assert!(
            read_all(&b, "u/1/data").await == data,
            "session bytes differ"
        );
        let out = a.upload_commit("u/1/data", "blobs/one").await.unwrap();
        assert_eq!(out, Some(CommitOutcome::Committed));
        assert_eq!(
            a.head("blobs/one").await.unwrap().unwrap().size,
            data.len() as u64
        );
        assert!(
            read_all(&b, "blobs/one").await == data,
            "committed bytes differ"
        );
        // The same content again: the blob is kept, the session removed.
        let mut up = b.upload_create("u/2/data").await.unwrap();
        append(&mut up, b"other").await;
        up.sync().await.unwrap();
        drop(up);
        let out = b.upload_commit("u/2/data", "blobs/one").await.unwrap();
        assert_eq!(out, Some(CommitOutcome::AlreadyExisted));
        assert!(read_all(&a, "blobs/one").await == data);
        // A session deleted midway takes its staged parts with it.
        let mut up = a.upload_create("u/3/data").await.unwrap();
        append(&mut up, &data[..part + 1]).await;
        up.sync().await.unwrap();
        drop(up);
        assert!(a.delete("u/3/data").await.unwrap());
        // An interrupted commit's multipart upload is visible to the teardown, and aborts.
        let id = a.create_multipart("dangling").await.unwrap();
        assert!(moto
            .raw_listing("multipart")
            .contains(&"multipart:dangling".to_string()));
        a.abort_multipart("dangling", &id).await;
    });
    assert_eq!(moto.raw_listing("multipart"), ["blobs/one"]);
}

/// Two writers (two nodes) open one session and both append: exactly one sync wins, the loser
/// gets Conflict and its staged bytes are removed, and the commit holds the winner's bytes.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_upload_racing_writers() {
    let Some(moto) = Moto::start("s3_upload_racing_writers") else {
        return;
    };
    let a = s3_fixture(&moto, "race");
    let b = S3Storage::new(&moto.config("race")).unwrap();
    let part = a.part_bytes() as usize;
    Runtime::new().unwrap().block_on(async {
        let mut up = a.upload_create("u/data").await.unwrap();
        append(&mut up, b"head-").await;
        up.sync().await.unwrap();
        drop(up);
        let mut one = a.open_upload("u/data").await.unwrap().unwrap();
        let mut two = b.open_upload("u/data").await.unwrap().unwrap();
        let (x, y) = (pattern(part + 10, 1), pattern(part + 20, 2));
        append(&mut one, &x).await;
        append(&mut two, &y).await;
        let (r1, r2) = crate::future::join(one.sync(), two.sync()).await;
        let won_one = match (r1, r2) {
            (Ok(()), Err(StorageError::Conflict { .. })) => true,
            (Err(StorageError::Conflict { .. }), Ok(())) => false,
            other => panic!("exactly one writer must win: {other:?}"),
        };
        drop((one, two));
        let winner = if won_one { x } else { y };
        let mut want = b"head-".to_vec();
        want.extend_from_slice(&winner);
        assert_eq!(
            a.upload_size("u/data").await.unwrap(),
            Some(want.len() as u64)
        );
        a.upload_commit("u/data", "blob").await.unwrap().unwrap();
        assert!(
            read_all(&b, "blob").await == want,
            "the winner's bytes are committed"
        );
    });
    assert_eq!(moto.raw_listing("race"), ["blob"]);
}

/// The start-up probe passes on a good bucket and names the problem otherwise: a missing
/// bucket, an unreachable endpoint; and it leaves no probe object behind.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_probe() {
    let Some(moto) = Moto::start("s3_probe") else {
        return;
    };
    let good = s3_fixture(&moto, "probed");
    Runtime::new().unwrap().block_on(async {
        good.probe().await.unwrap();
        let missing = S3Storage::new(&moto.config("nosuchbucket")).unwrap();
        let e = missing.probe().await.unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let mut c = moto.config("probed");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        c.endpoint = Some(format!("http://127.0.0.1:{port}"));
        c.attempts_max = 2;
        let e = S3Storage::new(&c).unwrap().probe().await.unwrap_err();
        assert!(e.to_string().contains("cannot reach"), "{e}");
    });
    assert!(moto.raw_listing("probed").is_empty());
}

/// A service refusing the credentials (403, as AWS answers an unknown key) makes the probe
/// fail naming them, at once (a 403 is not retried). moto itself cannot refuse them: with its
/// IAM checks on it answers presigned requests with 500, so the refusal is injected.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_probe_wrong_credentials() {
    let Some(moto) = Moto::start("s3_probe_wrong_credentials") else {
        return;
    };
    let (s, proxy) = through_proxy(&moto, "creds", 3);
    proxy.plan(&[Fault::Forbidden]);
    let e = Runtime::new().unwrap().block_on(s.probe()).unwrap_err();
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert_eq!(proxy.seen(), 1);
}

/// A backend on `bucket` reached through a fault-injecting proxy.
fn through_proxy(moto: &Moto, bucket: &str, attempts: u32) -> (S3Storage, FaultProxy) {
    moto.create_bucket(bucket);
    let proxy = FaultProxy::new(moto.port);
    let mut c = moto.config(bucket);
    c.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    c.attempts_max = attempts;
    // Long enough for moto on a loaded 2-core machine (500 ms was not, in CI), short
    // enough that the stalled-service case below stays quick.
    c.request_timeout = std::time::Duration::from_millis(1500);
    (S3Storage::new(&c).unwrap(), proxy)
}

/// SlowDown and 500 answers are retried within the budget; past it the error names the
/// operation and the last cause, after exactly `attempts_max` requests.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_retries_transient_errors_within_budget() {
    let Some(moto) = Moto::start("s3_retries_transient_errors_within_budget") else {
        return;
    };
    let (s, proxy) = through_proxy(&moto, "retries", 3);
    Runtime::new().unwrap().block_on(async {
        proxy.plan(&[Fault::SlowDown, Fault::Internal]);
        written(
            s.put("k", b"v".to_vec(), PutCondition::Always)
                .await
                .unwrap(),
        );
        assert_eq!(proxy.seen(), 3);
        proxy.plan(&[Fault::SlowDown]);
        assert_eq!(s.get("k").await.unwrap().unwrap().bytes, b"v");
        assert_eq!(proxy.seen(), 5);
        proxy.plan(&[Fault::SlowDown, Fault::SlowDown, Fault::SlowDown]);
        let e = s.get("k").await.unwrap_err().to_string();
        assert!(e.contains("GetObject") && e.contains("SlowDown"), "{e}");
        assert_eq!(proxy.seen(), 8);
        // A stalled service: each attempt times out, then the operation fails (no hang).
        proxy.plan(&[Fault::Stall(std::time::Duration::from_secs(4)); 3]);
        let e = s.get("k").await.unwrap_err();
        assert!(e.to_string().contains("gave up"), "{e}");
        // The registry takes it as transient (the API answers 503 with Retry-After).
        let e = crate::error::Error::from(e);
        assert!(
            matches!(e, crate::error::Error::StorageUnavailable(_)),
            "{e:?}"
        );
    });
}

/// A conditional PUT whose response is lost after it took effect is retried; the retry's
/// 412 is resolved by the write token as the success it was. A real conflict stays a 412.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_conditional_put_with_lost_response() {
    let Some(moto) = Moto::start("s3_conditional_put_with_lost_response") else {
        return;
    };
    let (s, proxy) = through_proxy(&moto, "lost", 3);
    Runtime::new().unwrap().block_on(async {
        proxy.plan(&[Fault::LoseResponse]);
        let e1 = written(
            s.put("k", b"one".to_vec(), PutCondition::IfAbsent)
                .await
                .unwrap(),
        );
        assert_eq!(
            proxy.seen(),
            3,
            "the lost PUT, its retry (412), the HEAD of the token"
        );
        let got = s.get("k").await.unwrap().unwrap();
        assert_eq!((got.bytes.as_slice(), &got.etag), (&b"one"[..], &e1));
        proxy.plan(&[Fault::LoseResponse]);
        let e2 = written(
            s.put("k", b"two".to_vec(), PutCondition::IfMatch(e1.clone()))
                .await
                .unwrap(),
        );
        assert_eq!(s.get("k").await.unwrap().unwrap().etag, e2);
        // Someone else's write is not mistaken for ours.
        let stale = s
            .put("k", b"three".to_vec(), PutCondition::IfMatch(e1))
            .await;
        assert_eq!(stale.unwrap(), PutOutcome::PreconditionFailed);
        let again = s.put("k", b"x".to_vec(), PutCondition::IfAbsent).await;
        assert_eq!(again.unwrap(), PutOutcome::PreconditionFailed);
    });
}
