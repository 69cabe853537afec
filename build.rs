//! Tells the tests which external tools this machine lacks, so a test that needs one is
//! reported as ignored (with the reason) in `cargo test`'s summary instead of passing
//! without having run. CI sets ORIGIN_REQUIRE_UPSTREAM and ORIGIN_REQUIRE_S3, so there
//! nothing is ignored and a missing tool fails the test.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(origin_no_upstream)");
    println!("cargo::rustc-check-cfg=cfg(origin_no_moto)");
    println!("cargo::rustc-check-cfg=cfg(origin_no_skopeo)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=ORIGIN_REQUIRE_UPSTREAM");
    println!("cargo::rerun-if-env-changed=ORIGIN_REQUIRE_S3");
    // A directory's mtime changes when a package adds a program to it.
    for dir in ["/usr/bin", "/usr/local/bin", "/opt", "/opt/origin-moto/bin"] {
        if Path::new(dir).is_dir() {
            println!("cargo::rerun-if-changed={dir}");
        }
    }
    // Where tests/common/upstream.rs looks for CNCF distribution (Debian's docker-registry).
    let registry = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !registry && std::env::var_os("ORIGIN_REQUIRE_UPSTREAM").is_none() {
        println!("cargo::rustc-cfg=origin_no_upstream");
    }
    // The real client of the webhook test.
    let skopeo = ["/usr/bin/skopeo", "/usr/local/bin/skopeo"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !skopeo && std::env::var_os("ORIGIN_REQUIRE_UPSTREAM").is_none() {
        println!("cargo::rustc-cfg=origin_no_skopeo");
    }
    // Where the S3 tests look for moto (PyPI moto[server], installed by scripts/moto.sh).
    let moto = [
        "/opt/origin-moto/bin/moto_server",
        "/usr/local/bin/moto_server",
        "/usr/bin/moto_server",
    ]
    .iter()
    .any(|p| Path::new(p).is_file());
    if !moto && std::env::var("ORIGIN_REQUIRE_S3").as_deref() != Ok("1") {
        println!("cargo::rustc-cfg=origin_no_moto");
    }
}
