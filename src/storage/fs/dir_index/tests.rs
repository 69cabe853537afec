use super::*;
use crate::storage::tests::TempDir;

/// Every key under `prefix` after `start_after`, by brute force.
fn expected(all: &[String], prefix: &str, start_after: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = all
        .iter()
        .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
        .cloned()
        .collect();
    out.sort();
    out
}

/// The walk agrees with a brute-force listing for every prefix, position and limit,
/// whether directories are read whole and indexed or streamed through small windows.
#[test]
fn walk_matches_brute_force_with_windows() {
    let dir = TempDir::new();
    let root = dir.path();
    let mut all = Vec::new();
    for a in ["a", "a-b", "a.c", "a0", "b", "bb"] {
        for i in 0..7 {
            all.push(format!("{a}/f{i}"));
        }
        all.push(format!("{a}/sub/x"));
        all.push(format!("{a}/sub-y"));
        all.push(format!("{a}/sub/deeper/z"));
    }
    all.extend(["a1".to_string(), "c".to_string()]);
    for k in &all {
        let path = root.join(k);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"x").unwrap();
    }
    // A temp file is never listed.
    std::fs::write(root.join("a/.tmp-x"), b"x").unwrap();
    let mut probes: Vec<Option<String>> = vec![None, Some(String::new()), Some("a/".into())];
    probes.extend(
        ["a/sub", "a/sub/", "a/sub/deeper/", "b/f3", "bz", "zz", "0"].map(|p| Some(p.into())),
    );
    probes.extend(all.iter().step_by(3).map(|k| Some(k.clone())));
    for whole_max in [1, 2, 5, 1 << 20] {
        let limits = Limits {
            dir_entries_whole_max: whole_max,
            window_names: whole_max.min(3),
        };
        for prefix in ["", "a", "a/", "a/sub", "a/sub/", "b", "bb/", "nope/", "a/f"] {
            for start_after in &probes {
                let want = expected(&all, prefix, start_after.as_deref());
                for limit in [1, 3, 1000] {
                    let got =
                        list_sorted(root, prefix, start_after.as_deref(), limit, limits).unwrap();
                    assert_eq!(
                        got,
                        want[..want.len().min(limit)],
                        "prefix {prefix:?} after {start_after:?} limit {limit} whole {whole_max}"
                    );
                }
            }
        }
    }
}

/// A directory past the whole-read limit is streamed: every name is still listed, in
/// order, page by page, with only a window held.
#[test]
fn huge_directory_is_streamed_completely() {
    let dir = TempDir::new();
    let root = dir.path();
    std::fs::create_dir(root.join("t")).unwrap();
    let n = 2_000;
    let mut want: Vec<String> = (0..n).map(|i| format!("t/{:04}", (i * 7) % n)).collect();
    for k in &want {
        std::fs::write(root.join(k), b"x").unwrap();
    }
    want.sort();
    let limits = Limits {
        dir_entries_whole_max: 100,
        window_names: 1,
    };
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list_sorted(root, "t/", after.as_deref(), 333, limits).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        got.extend(page);
    }
    assert_eq!(got, want);
}

/// Pages of a walk over a directory too large to index come from a window kept between
/// them while the directory is unchanged: the directory is streamed once per window of
/// names, not once per page (which would read n * n / page entries in all).
#[test]
fn pages_of_a_huge_directory_come_from_a_kept_window() {
    let dir = TempDir::new();
    let root = dir.path();
    std::fs::create_dir(root.join("t")).unwrap();
    let n = 1_000;
    let mut want: Vec<String> = (0..n).map(|i| format!("t/{:04}", (i * 7) % n)).collect();
    for k in &want {
        std::fs::write(root.join(k), b"x").unwrap();
    }
    want.sort();
    // Settled: a window read while the directory's last change is younger is not kept.
    std::thread::sleep(RACY_MARGIN + Duration::from_millis(50));
    let limits = Limits {
        dir_entries_whole_max: 100,
        window_names: 250,
    };
    let streams = || STREAMS.with(|s| s.get());
    let before = streams();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = list_sorted(root, "t/", after.as_deref(), 10, limits).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        got.extend(page);
        pages += 1;
    }
    assert_eq!(got, want);
    let streamed = streams() - before;
    assert!(pages >= 100, "{pages} pages");
    assert!(
        streamed <= n / 250 + 1,
        "{streamed} streams of the directory for {pages} pages"
    );
    // A change to the directory is seen by the next page: the window is dropped.
    std::fs::write(root.join("t/0000a"), b"x").unwrap();
    let page = list_sorted(root, "t/", Some("t/0000"), 1, limits).unwrap();
    assert_eq!(page, ["t/0000a"]);
}
