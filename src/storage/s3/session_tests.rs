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
/// staged part or copy (3 requests in all, with the session's removal: a listing of stray
/// parts and one DELETE); the same content committed again finds it there. A blob that was
/// saved first (a PATCH) is staged and copied instead.
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
            assert_eq!(proxy.seen() - seen, 3, "PUT, LIST of stray parts, DELETE");
        }
        assert_eq!(
            s.get("blobs/d").await.unwrap().unwrap().bytes,
            vec![7u8; 100_000]
        );
        let mut up = s
            .upload_create_with_meta("u/2/data", "m".into())
            .await
            .unwrap();
        append(&mut up, &[8u8; 1000]).await;
        up.sync().await.unwrap();
        let seen = proxy.seen();
        assert_eq!(
            s.commit_writer(up, "blobs/e").await.unwrap(),
            CommitOutcome::Committed
        );
        // HEAD of the destination, CopyObject, LIST, DELETE of the part and of the session.
        assert_eq!(proxy.seen() - seen, 5);
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
