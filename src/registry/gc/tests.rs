use std::sync::Arc;
use std::time::Duration;

use super::CANDIDATES_PAGE_KEYS;
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::registry::manifests::TagRule;
use crate::registry::{cache::ManifestCache, layout, Registry, Settings};
use crate::storage::backend::list_probe;
use crate::storage::tests::TempDir;
use crate::storage::{FsStorage, Storage};

const GRACE: Duration = Duration::from_secs(3600);

fn registry(dir: &TempDir) -> Registry {
    let store = FsStorage::new(dir.path().to_path_buf()).unwrap();
    let settings = Settings {
        allow_missing_index_children: false,
        upload_sessions_per_repository_max: 100,
        upload_idle_expiry: Duration::from_secs(3600),
        gc_remove_untagged: true,
        debris_after: Duration::from_secs(60),
    };
    let cache = Arc::new(ManifestCache::new(0, Duration::from_secs(1)));
    Registry::new(store.into(), settings, cache).with_clock(crate::clock::Clock::manual())
}

async fn small_blob(reg: &Registry, name: &RepoName, body: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, body);
    reg.put_small_blob(name, &d, body.to_vec(), async |_| Ok(()))
        .await
        .unwrap();
    d
}

/// A pass over more candidates than one listing page reads them a bounded page at a time
/// (every listing it makes asks for at most a page), and still decides every candidate:
/// the unreferenced blobs go, the blobs of a tagged manifest stay. With no quota marker in
/// storage, removals make no quota request.
#[test]
fn a_pass_pages_through_candidates_and_collects_them_all() {
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let dir = TempDir::new();
        let reg = registry(&dir);
        let name = RepoName::parse("scale/app").unwrap();
        let garbage_count = 3 * CANDIDATES_PAGE_KEYS + 1;
        let mut garbage = Vec::new();
        for i in 0..garbage_count {
            garbage.push(small_blob(&reg, &name, format!("garbage {i}").as_bytes()).await);
        }
        let config = small_blob(&reg, &name, b"{}").await;
        let layer = small_blob(&reg, &name, b"layer").await;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        );
        let tag = Reference::Tag(Tag::parse("v1").unwrap());
        let pushed = reg
            .put_manifest(&name, &tag, None, manifest.into_bytes(), TagRule::Mutable)
            .await
            .unwrap();
        // Unlinked from the repository: released, so GC may take them.
        for d in &garbage {
            assert!(reg.unlink_blob(&name, d).await.unwrap());
        }
        reg.clock.advance(GRACE + Duration::from_secs(1));

        list_probe::take();
        let report = reg.gc_pass(GRACE, false).await.unwrap();
        let calls = list_probe::take();

        let candidate_pages: Vec<usize> = calls
            .iter()
            .filter(|(prefix, _)| prefix == layout::GC_CANDIDATES_PREFIX)
            .map(|(_, limit)| *limit)
            .collect();
        assert!(
            candidate_pages.len() > 3,
            "candidates listed in pages: {candidate_pages:?}"
        );
        assert!(
            candidate_pages.iter().all(|&l| l <= CANDIDATES_PAGE_KEYS),
            "{candidate_pages:?}"
        );
        let largest = calls.iter().map(|(_, l)| *l).max().unwrap_or(0);
        assert!(largest <= 1000, "a listing of the pass asked for {largest} keys: {calls:?}");
        // No quota holds anything: one look at the quota markers for the pass, none per
        // removed blob.
        let quota_listings = calls
            .iter()
            .filter(|(prefix, _)| prefix.starts_with(layout::QUOTA_HELD_PREFIX))
            .count();
        assert_eq!(quota_listings, 1, "{quota_listings} listings of quota markers");

        assert_eq!(report.blobs_removed, garbage_count, "{report:?}");
        for d in &garbage {
            assert!(reg.store.head(&layout::blob_data(d)).await.unwrap().is_none());
        }
        for d in [&config, &layer, &pushed.digest] {
            assert!(reg.store.head(&layout::blob_data(d)).await.unwrap().is_some());
        }
        let left = reg
            .store
            .list(layout::GC_CANDIDATES_PREFIX, None, 100)
            .await
            .unwrap();
        assert!(left.is_empty(), "candidates left: {left:?}");
    });
}
