//! Upload sessions continued across nodes: a node's cached session state made stale by
//! another node, racing PATCHes, and a cross-node chunked push leaving nothing behind.

use super::*;

/// A node keeps the state of the sessions it wrote last and does not read them back; when
/// another node continued the session meanwhile, the node's cached state is stale and the
/// node finds out and goes on from what is stored: a PATCH without Content-Range is appended
/// after the other node's (its save fails, the session is read and the chunk appended
/// again), a PATCH whose Content-Range disagrees with the cache is checked against storage
/// instead of refused, and the final PUT commits what was stored, not the stale state.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn cached_session_state_moved_by_another_node() {
    let Some(moto) = Moto::start("cached_session_state") else {
        return;
    };
    let nodes = three(&moto, "cached", ALLOW_ALL);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let chunks: Vec<Vec<u8>> = (0..5)
        .map(|i| bytes(40 + i, 1000 + 37 * i as usize))
        .collect();
    let all: Vec<u8> = chunks.concat();
    let mut loc = a.start_upload("cached/app");
    let mut offset = 0;
    // (node, send Content-Range): A and B take turns, so each finds its cache stale: A's
    // first save fails its condition (A's state is the POST's), B's first append finds the
    // staged tail it remembers gone, and the ranged ones disagree with the cached offset.
    for (i, (n, ranged)) in [(b, false), (a, false), (b, false), (a, true), (b, true)]
        .into_iter()
        .enumerate()
    {
        let range = format!("{offset}-{}", offset + chunks[i].len() - 1);
        let headers: Vec<(&str, &str)> = if ranged {
            vec![("Content-Range", range.as_str())]
        } else {
            Vec::new()
        };
        let r = n.request("PATCH", &loc, &headers, &chunks[i]);
        assert_eq!(
            r.status,
            202,
            "chunk {i}: {}",
            String::from_utf8_lossy(&r.body)
        );
        offset += chunks[i].len();
        assert_eq!(
            r.header("range"),
            Some(format!("0-{}", offset - 1).as_str()),
            "chunk {i}"
        );
        loc = r.header("location").unwrap().to_string();
    }
    // A's cache is stale (B wrote last): the commit is judged against what is stored.
    let d = digest(&all);
    let r = a.request("PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(c.get(&format!("/v2/cached/app/blobs/{d}")).body == all);
    // The session is gone for every node, cached or not.
    for n in &nodes {
        let r = n.request("GET", &loc, &[], b"");
        assert_eq!(r.status, 404);
        assert_eq!(r.error_code(), "BLOB_UPLOAD_UNKNOWN");
    }
    assert!(moto.list("cached", "uploads/").is_empty());
}

/// Two nodes race a PATCH at the same offset of one session, one of them with a stale
/// cached state: exactly one wins, the other is refused, and the session holds the winner's
/// bytes after the earlier ones.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn racing_patches_with_a_stale_cache_one_wins() {
    let Some(moto) = Moto::start("racing_patches_stale") else {
        return;
    };
    let nodes = three(&moto, "racing", ALLOW_ALL);
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..4u64 {
        let first = bytes(60 + round, 700);
        let loc = a.start_upload("race/app");
        // B writes the first chunk: A's cached state (from the POST) is stale.
        let r = b.request("PATCH", &loc, &[("Content-Range", "0-699")], &first);
        assert_eq!(r.status, 202);
        let loc = r.header("location").unwrap().to_string();
        let mine = [bytes(80 + round, 300), bytes(90 + round, 300)];
        let threads: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .zip(mine.clone())
            .map(|(addr, body)| {
                let loc = loc.clone();
                std::thread::spawn(move || {
                    Remote(addr)
                        .try_req_with("PATCH", &loc, &[("Content-Range", "700-999")], &body)
                        .expect("response")
                })
            })
            .collect();
        let answers: Vec<u16> = threads
            .into_iter()
            .map(|t| t.join().unwrap().status)
            .collect();
        let won: Vec<usize> = (0..2).filter(|&i| answers[i] == 202).collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        let loser = answers[1 - won[0]];
        assert!(loser == 400 || loser == 416, "round {round}: {answers:?}");
        let status = a.request("GET", &loc, &[], b"");
        assert_eq!(status.header("range"), Some("0-999"), "round {round}");
        let content = [first.clone(), mine[won[0]].clone()].concat();
        let d = digest(&content);
        let r = a.request("PUT", &format!("{loc}?digest={d}"), &[], b"");
        assert_eq!(
            r.status,
            201,
            "round {round}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(b.get(&format!("/v2/race/app/blobs/{d}")).body == content);
    }
}

/// POST on A, a 3 MiB PATCH on B (staged as a short part), a 3 MiB PATCH on C (combined with
/// B's part into a 6 MiB one, still short of the 8 MiB part size), the closing PUT with the
/// rest on A (its cached state is stale: it reads the session, takes C's part back into
/// memory and, the blob being below the part size, puts it at once). The
/// blob commits and serves, and nothing of the session is left under `uploads/`: the staged
/// part another node wrote goes with the session object.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn a_cross_node_chunked_push_leaves_no_staged_part() {
    const MIB: usize = 1024 * 1024;
    let Some(moto) = Moto::start("cross_node_push_leaves_nothing") else {
        return;
    };
    // The default part size (8 MiB), so that C's 6 MiB part is short and read back.
    moto.create_bucket("leftovers");
    let nodes: Vec<Server> = (0..3)
        .map(|_| node_with_parts(&moto, "leftovers", ALLOW_ALL, Some(8 * MIB)))
        .collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let data = bytes(7, 7 * MIB + 321);
    let d = digest(&data);
    let mut loc = a.start_upload("left/app");
    for (n, range) in [(b, 0..3 * MIB), (c, 3 * MIB..6 * MIB)] {
        let cr = format!("{}-{}", range.start, range.end - 1);
        let r = n.request(
            "PATCH",
            &loc,
            &[("Content-Range", cr.as_str())],
            &data[range],
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        loc = r.header("location").unwrap().to_string();
    }
    let r = a.request("PUT", &format!("{loc}?digest={d}"), &[], &data[6 * MIB..]);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for n in &nodes {
        assert!(n.get(&format!("/v2/left/app/blobs/{d}")).body == data);
    }
    let left = moto.list("leftovers", "uploads/");
    assert!(left.is_empty(), "left in the bucket: {left:?}");
}
