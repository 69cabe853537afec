//! Tells the tests which external tools this machine lacks, so a test that needs one is
//! reported as ignored (with the reason) in `cargo test`'s summary instead of passing
//! without having run. CI sets ORIGIN_REQUIRE_UPSTREAM and ORIGIN_REQUIRE_S3, so there
//! nothing is ignored and a missing tool fails the test.
//!
//! Also stamps the build (`origin --version`, `origin_build_info`): ORIGIN_GIT_REVISION and
//! ORIGIN_BUILD_DATE, from the environment when set (a source tarball, a container build
//! without .git), else from git. The date is the commit's (or SOURCE_DATE_EPOCH), never the
//! clock, so two builds of one commit are the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    build_stamp();
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

/// Sets ORIGIN_GIT_REVISION and ORIGIN_BUILD_DATE for the crate; "unknown" when neither the
/// environment nor git tells.
fn build_stamp() {
    println!("cargo::rerun-if-env-changed=ORIGIN_GIT_REVISION");
    println!("cargo::rerun-if-env-changed=ORIGIN_BUILD_DATE");
    println!("cargo::rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Not rerun on every commit: that would rebuild the whole crate after each one. A
    // developer's build keeps the revision of the build script's last run; scripts/image.sh
    // and scripts/release.sh set ORIGIN_GIT_REVISION, so what they build is stamped exactly
    // (and a fresh clone, as in CI, stamps its own commit).
    let revision = std::env::var("ORIGIN_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = std::env::var("ORIGIN_BUILD_DATE")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .or_else(|| git(&["log", "-1", "--format=%ct", "HEAD"]))
                .and_then(|s| s.trim().parse::<i64>().ok())
                .map(utc_date)
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo::rustc-env=ORIGIN_GIT_REVISION={revision}");
    println!("cargo::rustc-env=ORIGIN_BUILD_DATE={date}");
}

/// The trimmed output of a git command in the crate's directory, or None.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env_dir())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn env_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()))
}

/// Seconds since the epoch as an RFC 3339 UTC time ("2026-01-31T12:00:00Z"), by the civil
/// proleptic Gregorian calendar (days since 1970-01-01 to year, month, day).
fn utc_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}
