//! Upload sessions that carry the caller's state (`UploadWriter::set_meta`) and commits from
//! the open writer, against a real moto server.

use compio::runtime::Runtime;
use compio::BufResult;

use super::fault::FaultProxy;
use super::moto::Moto;
use super::*;
use crate::storage::{StorageError, UploadWriter};

fn fixture(moto: &Moto, bucket: &str) -> S3Storage {
    moto.create_bucket(bucket);
    S3Storage::new(&moto.config(bucket)).unwrap()
}

async fn append(up: &mut S3Upload, bytes: &[u8]) {
    let at = up.size().await.unwrap();
    let BufResult(r, _) = up.write_all_at(bytes.to_vec(), at).await;
    r.unwrap();
}

/// The state created with the session is what the next node opens; a save replaces data
/// and state together; a writer that opened the old state loses (`Conflict`) and neither
/// its data nor its state shows; nothing is left after a commit.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_session_carries_state() {
    let Some(moto) = Moto::start("s3_session_carries_state") else {
        return;
    };
    let (a, b) = (
        fixture(&moto, "meta"),
        S3Storage::new(&moto.config("meta")).unwrap(),
    );
    Runtime::new().unwrap().block_on(async {
        let created = a
            .upload_create_with_meta("u/1/data", "s0".into())
            .await
            .unwrap();
        assert_eq!(created.meta(), Some("s0"));
        let mut on_b = b.open_upload("u/1/data").await.unwrap().unwrap();
        let mut stale = a.open_upload("u/1/data").await.unwrap().unwrap();
        assert_eq!(on_b.meta(), Some("s0"));
        append(&mut on_b, b"hello").await;
        on_b.set_meta("s1".into());
        on_b.sync().await.unwrap();
        append(&mut stale, b"other").await;
        stale.set_meta("lost".into());
        assert!(matches!(
            stale.sync().await,
            Err(StorageError::Conflict { .. })
        ));
        let again = a.open_upload("u/1/data").await.unwrap().unwrap();
        assert_eq!(again.meta(), Some("s1"));
        assert_eq!(again.size().await.unwrap(), 5);
        let out = a.commit_writer(again, "blobs/h").await.unwrap();
        assert_eq!(out, CommitOutcome::Committed);
        assert_eq!(a.get("blobs/h").await.unwrap().unwrap().bytes, b"hello");
    });
    assert_eq!(moto.raw_listing("meta"), vec!["blobs/h".to_string()]);
}

/// A blob that is all in the writer's memory commits with one PUT at its destination and no
/// staged part or copy (2 requests in all, with the session's removal: one DELETE, no
/// listing); the same content committed again finds it there. A blob that was saved first
/// (a PATCH) is staged and copied instead: one conditional CopyObject (no HEAD of the
/// destination) and one DeleteObjects for the part and the session (no listing), also onto
/// a stored blob (moto ignores the copy's If-None-Match and copies the same bytes again).
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_commit_from_memory_is_one_put() {
    let Some(moto) = Moto::start("s3_commit_from_memory_is_one_put") else {
        return;
    };
    moto.create_bucket("direct");
    let proxy = FaultProxy::new(moto.port);
    let mut c = moto.config("direct");
    c.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    let s = S3Storage::new(&c).unwrap();
    Runtime::new().unwrap().block_on(async {
        for (i, want) in [CommitOutcome::Committed, CommitOutcome::AlreadyExisted]
            .into_iter()
            .enumerate()
        {
            let key = format!("u/{i}/data");
            let mut up = s.upload_create_with_meta(&key, "m".into()).await.unwrap();
            append(&mut up, &[7u8; 100_000]).await;
            let seen = proxy.seen();
            assert_eq!(s.commit_writer(up, "blobs/d").await.unwrap(), want);
            assert_eq!(proxy.seen() - seen, 2, "PUT, DELETE");
        }
        assert_eq!(
            s.get("blobs/d").await.unwrap().unwrap().bytes,
            vec![7u8; 100_000]
        );
        for i in 0..2 {
            let key = format!("u/2{i}/data");
            let mut up = s.upload_create_with_meta(&key, "m".into()).await.unwrap();
            append(&mut up, &[8u8; 1000]).await;
            up.sync().await.unwrap();
            let seen = proxy.seen();
            s.commit_writer(up, "blobs/e").await.unwrap();
            // CopyObject (If-None-Match), DeleteObjects of the part and the session.
            assert_eq!(proxy.seen() - seen, 2);
        }
        assert_eq!(
            s.get("blobs/e").await.unwrap().unwrap().bytes,
            vec![8u8; 1000]
        );
    });
    assert_eq!(
        moto.raw_listing("direct"),
        vec!["blobs/d".to_string(), "blobs/e".to_string()]
    );
}

/// A session this process wrote last opens from its cache with no request, and its save is
/// conditional on the cached ETag: when another node continued the session meanwhile, the
/// save fails (`Conflict`) without touching the other node's state, the entry is dropped,
/// and the next open reads the session as stored.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_cached_session_is_checked_by_its_save() {
    let Some(moto) = Moto::start("s3_cached_session_is_checked_by_its_save") else {
        return;
    };
    moto.create_bucket("cached");
    let proxy = FaultProxy::new(moto.port);
    let mut c = moto.config("cached");
    c.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    let (a, b) = (S3Storage::new(&c).unwrap(), S3Storage::new(&c).unwrap());
    Runtime::new().unwrap().block_on(async {
        drop(a.upload_create_with_meta("u/1", "s0".into()).await.unwrap());
        let seen = proxy.seen();
        let mut up = a.open_upload("u/1").await.unwrap().unwrap();
        assert_eq!(proxy.seen(), seen, "opened from the cache");
        assert!(up.is_unverified());
        append(&mut up, b"one").await;
        up.set_meta("s1".into());
        up.sync().await.unwrap();
        assert!(!up.is_unverified(), "confirmed by its conditional save");
        assert_eq!(proxy.seen() - seen, 2, "part PUT, session PUT; no GET");
        drop(up);
        // Another node continues the session.
        let mut other = b.open_upload("u/1").await.unwrap().unwrap();
        assert!(!other.is_unverified(), "b never saw it: read");
        append(&mut other, b"two").await;
        other.set_meta("s2".into());
        other.sync().await.unwrap();
        // a's cache is stale now: its save loses, and b's state is intact.
        let mut stale = a.open_upload("u/1").await.unwrap().unwrap();
        assert!(stale.is_unverified());
        assert_eq!(stale.meta(), Some("s1"));
        stale.set_meta("lost".into());
        assert!(matches!(
            stale.sync().await,
            Err(StorageError::Conflict { .. })
        ));
        let fresh = a.open_upload("u/1").await.unwrap().unwrap();
        assert!(!fresh.is_unverified(), "the stale entry was dropped");
        assert_eq!(fresh.meta(), Some("s2"));
        assert_eq!(fresh.size().await.unwrap(), 6);
        // A commit from the cache removes the session and forgets it.
        let out = a.commit_writer(fresh, "blobs/x").await.unwrap();
        assert_eq!(out, CommitOutcome::Committed);
        assert!(a.open_upload("u/1").await.unwrap().is_none());
        assert_eq!(a.get("blobs/x").await.unwrap().unwrap().bytes, b"onetwo");
    });
    assert_eq!(moto.raw_listing("cached"), vec!["blobs/x".to_string()]);
}

/// Two writers open a session whose last part is a short staged tail; the first appends
/// (the tail is read back, combined into a part of its own) and saves, which removes the old
/// tail. The second's append then finds the tail gone: a `Conflict` (the session moved on
/// under it), not an I/O failure, and the session holds the first writer's bytes.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_append_after_the_tail_was_taken_is_a_conflict() {
    let Some(moto) = Moto::start("s3_append_after_the_tail_was_taken") else {
        return;
    };
    let a = fixture(&moto, "tail");
    let (x, y) = (
        S3Storage::new(&moto.config("tail")).unwrap(),
        S3Storage::new(&moto.config("tail")).unwrap(),
    );
    Runtime::new().unwrap().block_on(async {
        let mut up = a
            .upload_create_with_meta("u/1/data", "s0".into())
            .await
            .unwrap();
        append(&mut up, b"tail").await;
        up.sync().await.unwrap();
        let mut first = x.open_upload("u/1/data").await.unwrap().unwrap();
        let mut second = y.open_upload("u/1/data").await.unwrap().unwrap();
        append(&mut first, b"-first").await;
        first.sync().await.unwrap();
        let at = second.size().await.unwrap();
        let BufResult(r, _) = second.write_all_at(b"-second".to_vec(), at).await;
        let e = StorageError::from_write(r.unwrap_err());
        assert!(matches!(e, StorageError::Conflict { .. }), "{e}");
        // A node that has not seen the session (`a` remembers its own, older state).
        let fresh = S3Storage::new(&moto.config("tail")).unwrap();
        let stored = fresh.open_upload("u/1/data").await.unwrap().unwrap();
        assert_eq!(stored.size().await.unwrap(), 10);
        let out = fresh.commit_writer(stored, "blobs/t").await.unwrap();
        assert_eq!(out, CommitOutcome::Committed);
        assert_eq!(
            a.get("blobs/t").await.unwrap().unwrap().bytes,
            b"tail-first"
        );
    });
}
