use super::files::hex;
use super::locks::key_locks;
use super::*;

/// The lock admits one holder per key at a time, and different keys do not interfere.
#[test]
fn key_lock_excludes_per_key() {
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let a = PathBuf::from("/nonexistent/key-lock-test/a");
        let b = PathBuf::from("/nonexistent/key-lock-test/b");
        let held = lock_key(a.clone()).await;
        let _other = lock_key(b).await;
        let waiter = compio::runtime::spawn(lock_key(a.clone()));
        compio::runtime::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "second holder admitted");
        drop(held);
        let again = waiter.await.unwrap();
        drop(again);
        assert!(!key_locks().contains_key(&a), "lock entry leaked");
    });
}

/// One `FsStorage` can be shared by all cores.
#[test]
fn storage_is_send_sync() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<FsStorage>();
}

/// Create-if-absent placement by link(2) lets exactly one of several racing creators
/// win even without the key lock (which normally serialises them first), on both drivers,
/// and leaves no temp file behind.
#[test]
fn link_placement_has_one_winner() {
    let poll = {
        let mut proactor = compio::driver::ProactorBuilder::new();
        proactor.driver_type(compio::driver::DriverType::Poll);
        compio::runtime::RuntimeBuilder::new()
            .with_proactor(proactor)
            .build()
            .unwrap()
    };
    for rt in [compio::runtime::Runtime::new().unwrap(), poll] {
        let dir = crate::storage::tests::TempDir::new();
        let s = FsStorage::new(dir.path().join("s")).unwrap();
        rt.block_on(async {
            const RACERS: u8 = 8;
            let path = s.path("k/x");
            let mut temps = Vec::new();
            for i in 0..RACERS {
                temps.push((i, s.write_temp(&path, vec![i], true).await.unwrap()));
            }
            let tasks: Vec<_> = temps
                .into_iter()
                .map(|(i, temp)| {
                    let (s, path) = (s.clone(), path.clone());
                    compio::runtime::spawn(async move {
                        (i, s.place(&temp, &path, false, true).await.unwrap())
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for task in tasks {
                let (i, won) = task.await.unwrap();
                if won {
                    winners.push(i);
                }
            }
            assert_eq!(winners.len(), 1, "{winners:?}");
            assert_eq!(std::fs::read(&path).unwrap(), [winners[0]]);
            let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["x"]);
        });
    }
}

/// Hex encoding matches the usual lower-case form.
#[test]
fn hex_encodes() {
    assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
}
