//! The queue's claims and retries on the fs backend, and target selection.

use std::time::Duration;

use super::job::{backoff, Job, Kind};
use super::queue::{self, Attempt, LEASE};
use super::Targets;
use crate::storage::{Backend, FsStorage, Storage};

fn store(dir: &std::path::Path) -> Backend {
    FsStorage::new(dir.to_path_buf()).unwrap().into()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "origin-repl-{tag}-{}-{:x}",
        std::process::id(),
        super::job::random_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn job() -> Job {
    Job::new(Kind::Push, "team/app", Some("v1"), "sha256:00", 1_000)
}

#[test]
fn one_claim_wins_and_an_expired_lease_is_taken_over() {
    let dir = temp_dir("claim");
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = store(&dir);
        let key = queue::enqueue(&s, "dr", &job()).await.unwrap();
        assert_eq!(queue::parse_key(&key).unwrap().0, "dr");
        let now = 10_000;
        let Attempt::Claimed(a) = queue::claim(&s, &key, "node-a", now).await.unwrap() else {
            panic!("the first claim should win");
        };
        // Another node sees it held while the lease runs...
        assert!(matches!(
            queue::claim(&s, &key, "node-b", now + 1).await.unwrap(),
            Attempt::Taken
        ));
        // ...and takes it over once the lease expired (node-a died).
        let later = now + LEASE.as_millis() as u64 + 1;
        let Attempt::Claimed(b) = queue::claim(&s, &key, "node-b", later).await.unwrap() else {
            panic!("an expired lease should be taken over");
        };
        // The stale holder cannot remove what the new holder wrote.
        a.done(&s).await.unwrap();
        assert!(
            s.get(&key).await.unwrap().is_some(),
            "stale done removed the job"
        );
        b.done(&s).await.unwrap();
        assert!(s.get(&key).await.unwrap().is_none());
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failures_back_off_then_become_failed_records() {
    let dir = temp_dir("retry");
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = store(&dir);
        let key = queue::enqueue(&s, "dr", &job()).await.unwrap();
        let mut now = 10_000;
        for attempt in 1..=3u32 {
            let Attempt::Claimed(c) = queue::claim(&s, &key, "n", now).await.unwrap() else {
                panic!("attempt {attempt}: not claimable");
            };
            let gone = c
                .failed(&s, "target down", 2, Duration::from_secs(4), now)
                .await
                .unwrap();
            assert_eq!(gone, attempt == 3, "attempt {attempt}");
            if attempt < 3 {
                let Attempt::NotYet(due) = queue::claim(&s, &key, "n", now).await.unwrap() else {
                    panic!("a job in backoff is not due");
                };
                assert!(due > now && due <= now + 4_000, "due {due} now {now}");
                now = due;
            }
        }
        assert!(s.get(&key).await.unwrap().is_none());
        let failed = s.list("replication/failed/dr/", None, 10).await.unwrap();
        assert_eq!(failed.len(), 1);
        let rec = Job::parse(&s.get(&failed[0]).await.unwrap().unwrap().bytes).unwrap();
        assert_eq!(rec.attempts, 3);
        assert_eq!(rec.last_error.as_deref(), Some("target down"));
        let report = super::status::read(&s, &["dr".to_string()], &[], now)
            .await
            .unwrap();
        assert_eq!(report.targets["dr"].failed, 1);
        assert_eq!(report.targets["dr"].pending, 0);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backoff_doubles_within_its_bounds() {
    for attempts in 1..30 {
        let max = Duration::from_secs(60);
        let full = (Duration::from_secs(1) * (1 << (attempts - 1).min(20))).min(max);
        let d = backoff(attempts, max);
        assert!(d >= full / 2 && d <= full, "attempt {attempts}: {d:?}");
    }
}

const BASE: &str = "[[repository]]\nnamespace = \"\"\nreplications = [\"dr\"]\n\
    [[repository]]\nnamespace = \"local\"\n\
    [replication.dr]\nurl = \"http://127.0.0.1:9\"\nrepository_filter = [\"team/.*\"]\n\
    tag_filter = [\"v.*\"]\ntarget_prefix = \"mirror\"\n";

fn err(text: &str) -> String {
    crate::config::Config::parse(text)
        .and_then(|c| Targets::compile(&c).map(drop))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn targets_follow_entries_filters_and_prefix() {
    let c = crate::config::Config::parse(BASE).unwrap();
    let t = Targets::compile(&c).unwrap();
    let sel = t.select("team/app");
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].target_name("team/app"), "mirror/team/app");
    assert!(sel[0].wants_tag(Some("v1.2")));
    assert!(!sel[0].wants_tag(Some("latest")));
    assert!(sel[0].wants_tag(None));
    assert!(sel[0].push && !sel[0].delete);
    assert!(t.select("other/app").is_empty());
    assert!(t.select("local/team/app").is_empty());
}

#[test]
fn config_errors_name_the_key() {
    let e = err(&BASE.replace("team/.*", "team/("));
    assert!(e.contains("replication.dr.repository_filter[0]"), "{e}");
    let e = err(&BASE.replace("replications = [\"dr\"]", "replications = []"));
    assert!(e.contains("replication.dr: no [[repository]]"), "{e}");
    let e = err(&BASE.replace("replications = [\"dr\"]", "replications = [\"dr\", \"x\"]"));
    assert!(e.contains("repository[0].replications[1]"), "{e}");
    let e = err(&BASE.replace("http://127.0.0.1:9", "ftp://x"));
    assert!(e.contains("replication.dr.url"), "{e}");
    let e = err(&format!("{BASE}concurrency = 0\n"));
    assert!(e.contains("replication.dr.concurrency"), "{e}");
    let e = err(&format!("{BASE}events = [\"push\", \"pull\"]\n"));
    assert!(e.contains("pull"), "{e}");
    let e = err(&format!("{BASE}username = \"u\"\n"));
    assert!(e.contains("replication.dr.username"), "{e}");
    let e = err(&format!("{BASE}token = \"a\"\ntoken_env = \"B\"\n"));
    assert!(e.contains("replication.dr.token"), "{e}");
    let e = err(&format!("{BASE}mode = \"eventually\"\n"));
    assert!(e.contains("eventually"), "{e}");
    let e = err(&BASE.replace("mirror", "Bad Prefix"));
    assert!(e.contains("replication.dr.target_prefix"), "{e}");
}
