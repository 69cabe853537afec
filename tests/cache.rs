//! The manifest cache stays coherent with writes on every core: a GET right after a PUT or a
//! DELETE, on another connection (so often another worker), never sees the old value.

mod common;

use common::*;

#[test]
fn get_after_put_or_delete_never_sees_the_old_value() {
    let srv = Server::start();
    let cfg = srv.push_blob("coh/app", b"{}");
    // Readers keep the cache warm on several connections while one writer retags.
    let mut readers: Vec<_> = (0..4).map(|_| srv.connect()).collect();
    let mut writer = srv.connect();
    for i in 0..60 {
        let layer = srv.push_blob("coh/app", format!("layer {i}").as_bytes());
        let m = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer}\",\"size\":1}}]}}"
        );
        let want = digest(m.as_bytes());
        // Warm the cache with the current value on every reader first.
        for r in readers.iter_mut() {
            send(r, "GET", "/v2/coh/app/manifests/latest", &[], b"");
            read_response(r, false).unwrap();
        }
        send(
            &mut writer,
            "PUT",
            "/v2/coh/app/manifests/latest",
            &[("Content-Type", OCI_MANIFEST)],
            m.as_bytes(),
        );
        assert_eq!(read_response(&mut writer, false).unwrap().status, 201);
        for r in readers.iter_mut() {
            send(r, "GET", "/v2/coh/app/manifests/latest", &[], b"");
            let got = read_response(r, false).unwrap();
            assert_eq!(
                got.header("docker-content-digest"),
                Some(want.as_str()),
                "stale tag after PUT {i}"
            );
            send(
                r,
                "HEAD",
                &format!("/v2/coh/app/manifests/{want}"),
                &[],
                b"",
            );
            assert_eq!(read_response(r, true).unwrap().status, 200);
        }
        if i % 10 == 9 {
            send(
                &mut writer,
                "DELETE",
                &format!("/v2/coh/app/manifests/{want}"),
                &[],
                b"",
            );
            assert_eq!(read_response(&mut writer, false).unwrap().status, 202);
            for r in readers.iter_mut() {
                send(r, "GET", "/v2/coh/app/manifests/latest", &[], b"");
                assert_eq!(
                    read_response(r, false).unwrap().status,
                    404,
                    "tag survived DELETE {i}"
                );
                send(r, "GET", &format!("/v2/coh/app/manifests/{want}"), &[], b"");
                assert_eq!(
                    read_response(r, false).unwrap().status,
                    404,
                    "manifest survived DELETE {i}"
                );
            }
        }
    }
}
