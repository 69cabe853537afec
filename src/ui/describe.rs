//! What the UI shows of stored content, as JSON: pure functions from manifests, configs
//! and descriptors to bounded values. Everything here was written by whoever pushed it, so
//! strings stay data (the browser sets them as text) and every string, list and nesting
//! level has a bound; a value cut short is marked (`"truncated": true`).

use serde_json::{json, Map, Value};

use crate::mirror::MirrorNs;
use crate::oci::{media_type as mt, Descriptor, Digest, RepoName};
use crate::registry::manifests::StoredManifest;
use crate::service::browse::{TagInfo, UntaggedInfo};

/// Longest string shown, in characters (a label, an env entry, a history command).
pub const STRING_CHARS_MAX: usize = 4096;
/// Most entries shown of one list or map (layers, platforms, env, labels, history).
pub const ENTRIES_MAX: usize = 1000;
/// Deepest nesting shown (annotations and labels are flat; anything deeper is cut).
const DEPTH_MAX: usize = 8;

/// Media types of image configs whose fields are shown (an artifact's config is not one).
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

pub fn tag(t: &TagInfo) -> Value {
    json!({
        "tag": t.tag,
        "digest": t.digest.to_string(),
        "mediaType": t.media_type,
        "size": t.size,
        "pushed": unix_secs(t.pushed),
        "pulled": unix_secs(t.pulled),
    })
}

/// A manifest no tag names.
pub fn untagged(u: &UntaggedInfo) -> Value {
    json!({
        "digest": u.digest.to_string(),
        "mediaType": u.media_type,
        "size": u.size,
        "pushed": unix_secs(u.pushed),
        "pulled": unix_secs(u.pulled),
    })
}

/// A time as Unix seconds, `null` when unknown.
fn unix_secs(t: Option<std::time::SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| d.as_secs().into())
}

/// What the page says of a mirrored namespace: of which registry, through which upstreams,
/// how long a cached tag is trusted and when unpulled content is evicted. An upstream's URL
/// never carries credentials (the configuration refuses them there; they are settings of
/// their own, never shown).
pub fn mirror(m: &MirrorNs) -> Value {
    let upstreams: Vec<String> = m
        .upstreams
        .iter()
        .map(|u| {
            let scheme = if u.url.https { "https" } else { "http" };
            format!("{scheme}://{}{}", u.url.authority(), u.url.path)
        })
        .collect();
    json!({
        "namespace": m.namespace,
        "registry": m.registry,
        "upstreams": upstreams,
        "writable": m.writable,
        "tagFreshnessSecs": m.tag_freshness.as_secs(),
        "evictAfterSecs": m.evict_after.map(|d| d.as_secs()),
    })
}

/// A manifest's details: kind, annotations, subject, and for an index its children with
/// their platforms, for an image its config descriptor and layers.
pub fn manifest(name: &RepoName, m: &StoredManifest) -> Value {
    let doc: Value = serde_json::from_slice(&m.bytes).unwrap_or(Value::Null);
    let is_index = matches!(
        m.media_type.as_str(),
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST
    ) || doc.get("manifests").is_some_and(Value::is_array);
    let kind = match (is_index, doc.get("config").is_some()) {
        (true, _) => "index",
        (false, true) => "image",
        _ => "other",
    };
    let descriptors = |key: &str| -> Vec<Value> {
        doc.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(descriptor).collect())
            .unwrap_or_default()
    };
    let mut out = json!({
        "name": name.as_str(),
        "digest": m.digest.to_string(),
        "mediaType": m.media_type,
        "size": m.bytes.len(),
        "kind": kind,
        "artifactType": doc.get("artifactType"),
        "annotations": doc.get("annotations"),
        "subject": doc.get("subject").map(descriptor),
        "manifests": descriptors("manifests"),
        "config": doc.get("config").map(descriptor),
        "layers": descriptors("layers"),
    });
    bound(&mut out);
    out
}

/// The fields of a descriptor the UI shows, platform included.
fn descriptor(d: &Value) -> Value {
    let p = d.get("platform");
    let field = |k: &str| p.and_then(|p| p.get(k)).cloned().unwrap_or(Value::Null);
    json!({
        "digest": d.get("digest"),
        "mediaType": d.get("mediaType"),
        "size": d.get("size"),
        "artifactType": d.get("artifactType"),
        "annotations": d.get("annotations"),
        "platform": p.map(|_| json!({
            "os": field("os"),
            "architecture": field("architecture"),
            "variant": field("variant"),
            "osVersion": field("os.version"),
        })),
    })
}

/// The config digest of an image whose config is an image config (not an artifact's).
pub fn image_config_digest(details: &Value) -> Option<Digest> {
    let config = details.get("config")?;
    let media_type = config.get("mediaType")?.as_str()?;
    if !IMAGE_CONFIG_TYPES.contains(&media_type) {
        return None;
    }
    Digest::parse(config.get("digest")?.as_str()?).ok()
}

/// An image config's fields: created, author, platform, entrypoint, command, env, working
/// directory, user, labels, exposed ports, history.
pub fn image_config(bytes: &[u8]) -> Value {
    let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
        return json!({ "unavailable": "not JSON" });
    };
    let c = doc.get("config").cloned().unwrap_or(Value::Null);
    let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let history: Vec<Value> = doc
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .map(|e| {
                    json!({
                        "created": field(e, "created"),
                        "createdBy": field(e, "created_by"),
                        "comment": field(e, "comment"),
                        "emptyLayer": field(e, "empty_layer"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = json!({
        "created": field(&doc, "created"),
        "author": field(&doc, "author"),
        "os": field(&doc, "os"),
        "architecture": field(&doc, "architecture"),
        "variant": field(&doc, "variant"),
        "entrypoint": field(&c, "Entrypoint"),
        "cmd": field(&c, "Cmd"),
        "env": field(&c, "Env"),
        "workingDir": field(&c, "WorkingDir"),
        "user": field(&c, "User"),
        "labels": field(&c, "Labels"),
        "exposedPorts": c.get("ExposedPorts").and_then(Value::as_object).map(|m| m.keys().cloned().collect::<Vec<_>>()),
        "history": history,
    });
    bound(&mut out);
    out
}

/// What kind of referrer an artifact type is: a badge's kind and label.
pub fn badge(artifact_type: &str) -> (&'static str, &'static str) {
    let t = artifact_type.to_ascii_lowercase();
    if t.starts_with("application/vnd.dev.cosign") {
        ("signature", "cosign")
    } else if t.starts_with("application/vnd.cncf.notary") {
        ("signature", "notation")
    } else if t.contains("spdx") {
        ("sbom", "SPDX")
    } else if t.contains("cyclonedx") {
        ("sbom", "CycloneDX")
    } else if t.contains("in-toto") {
        ("attestation", "in-toto")
    } else if t.starts_with("application/vnd.dev.sigstore.bundle") {
        ("attestation", "sigstore bundle")
    } else {
        ("other", "artifact")
    }
}

/// Referrers grouped by artifact type (in order of first appearance), each group with its
/// badge.
pub fn referrer_groups(list: &[Descriptor]) -> Value {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for d in list {
        let t = d.artifact_type.clone().unwrap_or_default();
        let item = json!({
            "digest": d.digest.to_string(),
            "mediaType": d.media_type,
            "size": d.size,
            "annotations": d.annotations,
        });
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, items)) => items.push(item),
            None => groups.push((t, vec![item])),
        }
    }
    let mut out: Value = groups
        .into_iter()
        .map(|(t, items)| {
            let (kind, label) = badge(&t);
            json!({ "artifactType": t, "badge": { "kind": kind, "label": label }, "items": items })
        })
        .collect();
    bound(&mut out);
    out
}

/// Cuts every string, list, map and nesting level of `v` to its bound, adding
/// `"truncated": true` at the top when anything was cut.
fn bound(v: &mut Value) {
    let mut cut = false;
    bound_at(v, 0, &mut cut);
    if let (true, Some(top)) = (cut, v.as_object_mut()) {
        top.insert("truncated".into(), Value::Bool(true));
    }
}

fn bound_at(v: &mut Value, depth: usize, cut: &mut bool) {
    if depth > DEPTH_MAX && (v.is_array() || v.is_object()) {
        *v = Value::Null;
        *cut = true;
        return;
    }
    match v {
        Value::String(s) if s.chars().count() > STRING_CHARS_MAX => {
            *s = s.chars().take(STRING_CHARS_MAX).collect::<String>() + "…";
            *cut = true;
        }
        Value::Array(a) => {
            if a.len() > ENTRIES_MAX {
                a.truncate(ENTRIES_MAX);
                *cut = true;
            }
            a.iter_mut().for_each(|e| bound_at(e, depth + 1, cut));
        }
        Value::Object(m) => {
            if m.len() > ENTRIES_MAX {
                let kept: Map<String, Value> =
                    std::mem::take(m).into_iter().take(ENTRIES_MAX).collect();
                *m = kept;
                *cut = true;
            }
            m.values_mut().for_each(|e| bound_at(e, depth + 1, cut));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_name_signatures_sboms_and_attestations() {
        assert_eq!(
            badge("application/vnd.dev.cosign.artifact.sig.v1+json"),
            ("signature", "cosign")
        );
        assert_eq!(
            badge("application/vnd.cncf.notary.signature"),
            ("signature", "notation")
        );
        assert_eq!(badge("application/spdx+json"), ("sbom", "SPDX"));
        assert_eq!(
            badge("application/vnd.cyclonedx+json"),
            ("sbom", "CycloneDX")
        );
        assert_eq!(
            badge("application/vnd.in-toto+json"),
            ("attestation", "in-toto")
        );
        assert_eq!(badge("application/x-thing"), ("other", "artifact"));
    }

    #[test]
    fn long_strings_and_lists_are_cut_and_marked() {
        let mut v =
            json!({ "a": "x".repeat(STRING_CHARS_MAX + 10), "b": vec![1; ENTRIES_MAX + 1] });
        bound(&mut v);
        assert_eq!(
            v["a"].as_str().unwrap().chars().count(),
            STRING_CHARS_MAX + 1
        );
        assert_eq!(v["b"].as_array().unwrap().len(), ENTRIES_MAX);
        assert_eq!(v["truncated"], true);
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!([deep]);
        }
        bound(&mut deep);
        assert!(deep.to_string().contains("null"));
    }

    #[test]
    fn an_image_config_shows_its_fields() {
        let cfg = br#"{"created":"2026-01-01T00:00:00Z","os":"linux","architecture":"arm64",
            "config":{"Entrypoint":["/bin/app"],"Env":["A=1"],"Labels":{"k":"<script>"},
            "ExposedPorts":{"80/tcp":{}}},"history":[{"created_by":"RUN x","empty_layer":true}]}"#;
        let v = image_config(cfg);
        assert_eq!(v["architecture"], "arm64");
        assert_eq!(v["entrypoint"][0], "/bin/app");
        assert_eq!(v["labels"]["k"], "<script>");
        assert_eq!(v["exposedPorts"][0], "80/tcp");
        assert_eq!(v["history"][0]["createdBy"], "RUN x");
        assert_eq!(image_config(b"not json")["unavailable"], "not JSON");
    }
}
