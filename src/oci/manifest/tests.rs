use super::*;
use crate::oci::digest::Algorithm;

const CONFIG: &str = "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7";
const LAYER: &str = "sha256:2408cc74d12b6cd092bb8b516ba7d5e290f485d3eb9672efc00f0583730179e8";
const CHILD_AMD64: &str = "sha256:6457d53fb065d6f250e1504b9bc42d5b6c65941d57532c072d929dd0628977d0";
const CHILD_ARM64: &str = "sha256:c5c5fda71656f28e49ac9c5416b3643eaa6a108a8093151d6d1afc39463be04c";

fn oci_image() -> String {
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {{
"mediaType": "application/vnd.oci.image.config.v1+json",
"digest": "{CONFIG}",
"size": 581
  }},
  "layers": [
{{
  "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
  "digest": "{LAYER}",
  "size": 3623807
}}
  ],
  "annotations": {{ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }}
}}"#
    )
}

fn oci_index() -> String {
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
{{
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "digest": "{CHILD_AMD64}",
  "size": 1022,
  "platform": {{ "architecture": "amd64", "os": "linux" }}
}},
{{
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "digest": "{CHILD_ARM64}",
  "size": 1022,
  "platform": {{ "architecture": "arm64", "os": "linux", "variant": "v8" }}
}}
  ]
}}"#
    )
}

fn docker_manifest() -> String {
    format!(
        r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
  "mediaType": "application/vnd.docker.container.image.v1+json",
  "size": 1472,
  "digest": "{CONFIG}"
   }},
   "layers": [
  {{
     "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
     "size": 3408729,
     "digest": "{LAYER}"
  }}
   ]
}}"#
    )
}

fn docker_list() -> String {
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
{{
  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
  "size": 528,
  "digest": "{CHILD_AMD64}",
  "platform": {{ "architecture": "amd64", "os": "linux" }}
}}
  ]
}}"#
    )
}

fn artifact() -> String {
    let empty = Digest::of(Algorithm::Sha256, b"{}");
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.example.sbom.v1",
  "config": {{
"mediaType": "application/vnd.oci.empty.v1+json",
"digest": "{empty}",
"size": 2,
"data": "e30="
  }},
  "layers": [
{{
  "mediaType": "application/spdx+json",
  "digest": "{LAYER}",
  "size": 1234
}}
  ],
  "subject": {{
"mediaType": "application/vnd.oci.image.manifest.v1+json",
"digest": "{CHILD_AMD64}",
"size": 1022
  }},
  "annotations": {{ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }}
}}"#
    )
}

fn digests(manifest: &Manifest) -> Vec<&str> {
    manifest.references().map(Digest::as_str).collect()
}

#[test]
fn oci_image_manifest() {
    let m = Manifest::parse(Some(media_type::OCI_MANIFEST), oci_image().as_bytes()).unwrap();
    assert_eq!(m.kind(), ManifestKind::Image);
    assert_eq!(m.media_type(), media_type::OCI_MANIFEST);
    assert_eq!(digests(&m), [CONFIG, LAYER]);
    assert_eq!(m.layers()[0].size, 3623807);
    assert_eq!(
        m.artifact_type(),
        Some("application/vnd.oci.image.config.v1+json")
    );
    assert!(m.subject().is_none());
    assert_eq!(m.annotations.as_ref().map(BTreeMap::len), Some(1));
}

#[test]
fn oci_index_manifest() {
    let m = Manifest::parse(None, oci_index().as_bytes()).unwrap();
    assert_eq!(m.kind(), ManifestKind::Index);
    assert_eq!(digests(&m), [CHILD_AMD64, CHILD_ARM64]);
    assert!(m.config().is_none());
    assert_eq!(m.artifact_type(), None);
    assert_eq!(m.manifests()[1].platform.as_ref().unwrap()["variant"], "v8");
}

#[test]
fn docker_schema2_manifest() {
    let m = Manifest::parse(
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        docker_manifest().as_bytes(),
    )
    .unwrap();
    assert_eq!(m.kind(), ManifestKind::Image);
    assert_eq!(m.media_type(), media_type::DOCKER_MANIFEST);
    assert_eq!(digests(&m), [CONFIG, LAYER]);
}

#[test]
fn docker_manifest_list() {
    let m = Manifest::parse(
        Some(media_type::DOCKER_MANIFEST_LIST),
        docker_list().as_bytes(),
    )
    .unwrap();
    assert_eq!(m.kind(), ManifestKind::Index);
    assert_eq!(digests(&m), [CHILD_AMD64]);
}

#[test]
fn artifact_with_subject() {
    let m = Manifest::parse(Some(media_type::OCI_MANIFEST), artifact().as_bytes()).unwrap();
    assert_eq!(m.artifact_type(), Some("application/vnd.example.sbom.v1"));
    assert_eq!(m.subject().map(|s| s.digest.as_str()), Some(CHILD_AMD64));
    assert_eq!(m.config().unwrap().media_type, media_type::OCI_EMPTY);
    assert!(
        !digests(&m).contains(&CHILD_AMD64),
        "subject is not a reference"
    );
    assert_eq!(digests(&m).len(), 2);
}

#[test]
fn artifact_without_layers() {
    let mut value: serde_json::Value = serde_json::from_str(&artifact()).unwrap();
    value["layers"] = serde_json::json!([]);
    let body = serde_json::to_vec(&value).unwrap();
    let m = Manifest::parse(None, &body).unwrap();
    assert!(m.layers().is_empty());
    assert_eq!(digests(&m).len(), 1);
}

#[test]
fn media_type_from_content_type_only() {
    let body = oci_image().replace(
        "\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",",
        "",
    );
    assert!(Manifest::parse(None, body.as_bytes()).is_err());
    let m = Manifest::parse(Some(media_type::OCI_MANIFEST), body.as_bytes()).unwrap();
    assert_eq!(m.media_type(), media_type::OCI_MANIFEST);
    assert_eq!(
        Manifest::parse(None, body.as_bytes()),
        Err(ManifestError::MissingMediaType)
    );
}

#[test]
fn mismatched_media_type() {
    let err = Manifest::parse(Some(media_type::OCI_INDEX), oci_image().as_bytes()).unwrap_err();
    assert!(
        matches!(err, ManifestError::MediaTypeMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"));
}

#[test]
fn unsupported_media_type() {
    let body = oci_image().replace(media_type::OCI_MANIFEST, "application/vnd.example+json");
    let err = Manifest::parse(None, body.as_bytes()).unwrap_err();
    assert!(
        matches!(err, ManifestError::UnsupportedMediaType(_)),
        "{err}"
    );
    assert!(err.to_string().contains("application/vnd.example+json"));
}

#[test]
fn bad_digest_in_descriptor() {
    let body = oci_image().replace(LAYER, "sha256:1234");
    let err = Manifest::parse(None, body.as_bytes()).unwrap_err();
    assert!(matches!(err, ManifestError::Json(_)), "{err}");
    assert!(err.to_string().contains("digest"), "{err}");
    let body = oci_image().replace(CONFIG, "md5:d41d8cd98f00b204e9800998ecf8427e");
    assert!(Manifest::parse(None, body.as_bytes()).is_err());
}

#[test]
fn not_an_object() {
    for body in ["", "[]", "null", "2", "\"x\"", " [{}]"] {
        assert_eq!(
            Manifest::parse(Some(media_type::OCI_MANIFEST), body.as_bytes()),
            Err(ManifestError::NotAnObject),
            "{body:?}"
        );
    }
    assert!(matches!(
        Manifest::parse(None, b"{\"schemaVersion\": 2,"),
        Err(ManifestError::Json(_))
    ));
}

#[test]
fn schema_version() {
    let v1 = r#"{"schemaVersion": 1, "name": "library/alpine", "tag": "latest",
                 "architecture": "amd64", "fsLayers": [], "history": []}"#;
    assert_eq!(
        Manifest::parse(None, v1.as_bytes()),
        Err(ManifestError::SchemaVersion(Some(1)))
    );
    let missing = oci_image().replace("\"schemaVersion\": 2,", "");
    assert_eq!(
        Manifest::parse(None, missing.as_bytes()),
        Err(ManifestError::SchemaVersion(None))
    );
    let string = oci_image().replace("\"schemaVersion\": 2", "\"schemaVersion\": \"2\"");
    assert!(Manifest::parse(None, string.as_bytes()).is_err());
}

#[test]
fn missing_and_ambiguous_fields() {
    let no_config = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
    assert_eq!(
        Manifest::parse(None, no_config.as_bytes()),
        Err(ManifestError::MissingField("config"))
    );
    let no_layers = oci_image().replace("\"layers\"", "\"notlayers\"");
    assert_eq!(
        Manifest::parse(None, no_layers.as_bytes()),
        Err(ManifestError::MissingField("layers"))
    );
    let no_manifests =
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
    assert_eq!(
        Manifest::parse(None, no_manifests.as_bytes()),
        Err(ManifestError::MissingField("manifests"))
    );
    let image_with_manifests = oci_image().replace("\"annotations\"", "\"manifests\": [], \"x\"");
    assert_eq!(
        Manifest::parse(None, image_with_manifests.as_bytes()),
        Err(ManifestError::AmbiguousField("manifests"))
    );
    let index_with_layers = oci_index().replace("\"manifests\"", "\"layers\": [], \"manifests\"");
    assert_eq!(
        Manifest::parse(None, index_with_layers.as_bytes()),
        Err(ManifestError::AmbiguousField("layers"))
    );
}

#[test]
fn negative_size_rejected() {
    let body = oci_image().replace("3623807", "-1");
    assert!(matches!(
        Manifest::parse(None, body.as_bytes()),
        Err(ManifestError::Json(_))
    ));
}

#[test]
fn referrers_index_output() {
    let subject = Manifest::parse(None, artifact().as_bytes()).unwrap();
    let digest = Digest::of(Algorithm::Sha256, artifact().as_bytes());
    let entry = subject.referrer_descriptor(digest.clone(), artifact().len() as u64);
    let bytes = referrers_index(&[entry]);
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["schemaVersion"], 2);
    assert_eq!(value["mediaType"], media_type::OCI_INDEX);
    let first = &value["manifests"][0];
    assert_eq!(first["mediaType"], media_type::OCI_MANIFEST);
    assert_eq!(first["digest"], digest.as_str());
    assert_eq!(first["size"], artifact().len());
    assert_eq!(first["artifactType"], "application/vnd.example.sbom.v1");
    assert_eq!(
        first["annotations"]["org.opencontainers.image.created"],
        "2024-01-01T00:00:00Z"
    );
    let index = Manifest::parse(None, &bytes).unwrap();
    assert_eq!(index.manifests().len(), 1);

    let empty = referrers_index(&[]);
    assert_eq!(empty, EMPTY_REFERRERS_INDEX);
}
