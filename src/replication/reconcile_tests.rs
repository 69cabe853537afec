//! The reconcile record's schedule and claim on the fs backend.

use super::*;
use crate::storage::FsStorage;

#[test]
fn a_pass_is_due_an_interval_after_its_sweep_at_once_after_a_limit_and_one_node_wins() {
    let hour = Duration::from_secs(3600);
    let mut r = Record::default();
    assert_eq!(r.due_ms(hour, 2_000), 0, "never run");
    r.sweep_started_ms = 1_000;
    r.last = Some(Summary {
        started_ms: 1_000,
        finished_ms: 1_500,
        outcome: RunOutcome::Ok,
        repositories: 0,
        tags: 0,
        missing: 0,
        moved: 0,
        deleted: 0,
        error: None,
    });
    assert_eq!(r.due_ms(hour, 2_000), 3_601_000);
    r.cursor = Some(Cursor {
        repository: "a".into(),
        at_target: false,
        after: None,
    });
    assert_eq!(r.due_ms(hour, 2_000), 0, "a partial sweep goes on at once");
    r.last = Some(Summary {
        started_ms: 5_000,
        finished_ms: 6_000,
        outcome: RunOutcome::Error,
        repositories: 0,
        tags: 0,
        missing: 0,
        moved: 0,
        deleted: 0,
        error: Some("down".into()),
    });
    assert_eq!(
        r.due_ms(hour, 7_000),
        3_605_000,
        "after an error, an interval"
    );
    r.claim = Some(Claim {
        node: "n".into(),
        until_ms: 9_000,
    });
    assert_eq!(r.due_ms(hour, 8_000), 9_000, "held by a node");

    let dir = std::env::temp_dir().join(format!(
        "origin-reconcile-{}-{:x}",
        std::process::id(),
        crate::replication::job::random_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s: Backend = FsStorage::new(dir.clone()).unwrap().into();
        let Turn::Run(a) = claim(&s, "dr", hour, "a", 10_000).await.unwrap() else {
            panic!("the first claim should win");
        };
        assert!(matches!(
            claim(&s, "dr", hour, "b", 10_001).await.unwrap(),
            Turn::Wait(..)
        ));
        let summary = Summary {
            started_ms: 10_000,
            finished_ms: 10_500,
            outcome: RunOutcome::Ok,
            repositories: 1,
            tags: 2,
            missing: 1,
            moved: 0,
            deleted: 0,
            error: None,
        };
        a.finish(&s, summary.clone(), None).await.unwrap();
        let Turn::Wait(due, last) = claim(&s, "dr", hour, "b", 11_000).await.unwrap() else {
            panic!("not due for an hour");
        };
        assert_eq!((due, last), (3_610_000, Some(summary)));
        assert!(matches!(
            claim(&s, "dr", hour, "b", 3_610_000).await.unwrap(),
            Turn::Run(_)
        ));
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
