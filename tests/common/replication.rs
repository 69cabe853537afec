//! What the replication suites share: a source registry replicating to targets, waiting
//! with a deadline, the manifest types they accept, a layer descriptor.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use super::Server;

/// Every manifest type the suites push, for GETs and HEADs at a target.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Polls `done` every 100 ms; fails the test naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A source registry whose catch-all namespace replicates to `targets` (TOML sections).
pub fn source(names: &[&str], targets: &str) -> Server {
    Server::start_with("", &source_config(names, targets))
}

/// `source` on the filesystem whatever storage the suite runs on (`ORIGIN_TEST_STORAGE`):
/// for what only a server that owns its storage does.
pub fn fs_source(names: &[&str], targets: &str) -> Server {
    let dir = super::TempDir::new("repl-src");
    let text = super::config_text(&dir.0, "", &source_config(names, targets));
    Server::start_config(dir, &text, &[])
}

fn source_config(names: &[&str], targets: &str) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [{}]\n{targets}",
        list.join(", ")
    )
}

/// An uncompressed layer's descriptor.
pub fn layer_desc(d: &str, len: usize) -> String {
    format!("{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{len}}}")
}
