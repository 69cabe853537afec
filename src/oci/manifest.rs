//! Parsing and validation of pushed manifests (OCI image manifest and index,
//! Docker schema 2 manifest and manifest list).
//!
//! The registry stores manifests byte for byte, so this only extracts what it
//! needs (kind, referenced blobs, subject, artifact type) and rejects
//! documents that clients could interpret inconsistently.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// Media types the registry knows by name.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// The `{}` blob used as config of artifacts that have none.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
}

/// Manifest media types accepted on push, with the kind each one implies.
const SUPPORTED: [(&str, ManifestKind); 4] = [
    (media_type::OCI_MANIFEST, ManifestKind::Image),
    (media_type::OCI_INDEX, ManifestKind::Index),
    (media_type::DOCKER_MANIFEST, ManifestKind::Image),
    (media_type::DOCKER_MANIFEST_LIST, ManifestKind::Index),
];

/// Longest piece of client input echoed back in an error message.
const ERROR_ECHO_LEN_MAX: usize = 128;

/// A reference to content by media type, digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Kept opaque: the registry only passes it through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Base64 embedded content; not checked against the digest here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// Whether a manifest describes one image/artifact or a list of manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    Image,
    Index,
}

/// Why a pushed manifest was rejected (sent back as `MANIFEST_INVALID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestError {
    NotAnObject,
    /// Syntax error, wrong field type, or an invalid descriptor (such as a
    /// bad digest); holds serde_json's message.
    Json(String),
    /// `schemaVersion` missing (`None`) or not 2.
    SchemaVersion(Option<u64>),
    /// Neither the body nor the Content-Type names a media type.
    MissingMediaType,
    MediaTypeMismatch {
        body: String,
        content_type: String,
    },
    UnsupportedMediaType(String),
    /// A field required for this kind of manifest is absent.
    MissingField(&'static str),
    /// A field of the other kind is present, which would let clients read
    /// the document as either kind (CVE-2021-41190).
    AmbiguousField(&'static str),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::NotAnObject => f.write_str("manifest must be a JSON object"),
            ManifestError::Json(msg) => write!(f, "manifest is not valid: {msg}"),
            ManifestError::SchemaVersion(None) => f.write_str("manifest has no schemaVersion"),
            ManifestError::SchemaVersion(Some(v)) => write!(
                f,
                "schemaVersion {v} is not supported; only schemaVersion 2 manifests are accepted"
            ),
            ManifestError::MissingMediaType => f.write_str(
                "manifest media type unknown: set mediaType in the body or the Content-Type header",
            ),
            ManifestError::MediaTypeMismatch { body, content_type } => write!(
                f,
                "manifest mediaType {body:?} does not match Content-Type {content_type:?}"
            ),
            ManifestError::UnsupportedMediaType(mt) => write!(
                f,
                "manifest media type {mt:?} is not supported; expected an OCI image manifest \
                 or index, or a Docker schema 2 manifest or manifest list"
            ),
            ManifestError::MissingField(field) => write!(f, "manifest is missing {field:?}"),
            ManifestError::AmbiguousField(field) => write!(
                f,
                "manifest must not contain {field:?} for its media type (ambiguous document)"
            ),
        }
    }
}

impl std::error::Error for ManifestError {}

/// The fields read from a manifest body, before checking they fit together.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A validated image manifest or index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    kind: ManifestKind,
    media_type: String,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
    manifests: Vec<Descriptor>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// Parses and validates a manifest body pushed with the given
    /// Content-Type header value (parameters such as `charset` are ignored).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
        if first_non_whitespace(body) != Some(b'{') {
            return Err(ManifestError::NotAnObject);
        }
        let raw: RawManifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        match raw.schema_version {
            Some(2) => {}
            other => return Err(ManifestError::SchemaVersion(other)),
        }
        let (media_type, kind) = resolve_media_type(raw.media_type.as_deref(), content_type)?;
        check_fields(kind, &raw)?;
        Ok(Manifest {
            kind,
            media_type: media_type.to_owned(),
            artifact_type: raw.artifact_type,
            config: raw.config,
            layers: raw.layers.unwrap_or_default(),
            manifests: raw.manifests.unwrap_or_default(),
            subject: raw.subject,
            annotations: raw.annotations,
        })
    }

    pub fn kind(&self) -> ManifestKind {
        self.kind
    }

    /// One of the supported manifest media types.
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// The artifact type reported in referrers responses: the manifest's
    /// `artifactType`, else (image manifests only) the config's media type.
    pub fn artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Present exactly for image manifests.
    pub fn config(&self) -> Option<&Descriptor> {
        self.config.as_ref()
    }

    /// Empty for indexes (and for artifacts without layers).
    pub fn layers(&self) -> &[Descriptor] {
        &self.layers
    }

    /// Child manifests of an index; empty for image manifests.
    pub fn manifests(&self) -> &[Descriptor] {
        &self.manifests
    }

    /// The manifest this one refers to (signatures, SBOMs, ...).
    pub fn subject(&self) -> Option<&Descriptor> {
        self.subject.as_ref()
    }

    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.annotations.as_ref()
    }

    /// Content that must exist before this manifest may be stored: config,
    /// layers and child manifests. The subject is excluded because the spec
    /// allows pushing a referrer before its subject.
    pub fn references(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(&self.layers)
            .chain(&self.manifests)
            .map(|d| &d.digest)
    }

    /// The descriptor listing this manifest (stored as `digest`, `size`
    /// bytes) in its subject's referrers index.
    pub fn referrer_descriptor(&self, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest,
            size,
            artifact_type: self.artifact_type().map(str::to_owned),
            annotations: self.annotations.clone(),
            platform: None,
            urls: None,
            data: None,
        }
    }
}

fn first_non_whitespace(body: &[u8]) -> Option<u8> {
    body.iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Picks the media type from the body, falling back to the Content-Type,
/// and maps it to a kind.
fn resolve_media_type<'a>(
    body: Option<&'a str>,
    header: Option<&'a str>,
) -> Result<(&'a str, ManifestKind), ManifestError> {
    let header = header.map(strip_parameters).filter(|h| !h.is_empty());
    let media_type = match (body, header) {
        (Some(body), Some(header)) if !body.eq_ignore_ascii_case(header) => {
            return Err(ManifestError::MediaTypeMismatch {
                body: echo(body),
                content_type: echo(header),
            })
        }
        (Some(body), _) => body,
        (None, Some(header)) => header,
        (None, None) => return Err(ManifestError::MissingMediaType),
    };
    SUPPORTED
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(media_type))
        .map(|&(known, kind)| (known, kind))
        .ok_or_else(|| ManifestError::UnsupportedMediaType(echo(media_type)))
}

/// `type/subtype; param=value` → `type/subtype`.
fn strip_parameters(content_type: &str) -> &str {
    content_type
        .split_once(';')
        .map_or(content_type, |(essence, _)| essence)
        .trim()
}

/// Truncates client input before it goes into an error message.
fn echo(s: &str) -> String {
    s.chars().take(ERROR_ECHO_LEN_MAX).collect()
}

/// Checks the fields required by, and forbidden for, `kind`.
fn check_fields(kind: ManifestKind, raw: &RawManifest) -> Result<(), ManifestError> {
    match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::AmbiguousField("manifests"));
            }
            if raw.config.is_none() {
                return Err(ManifestError::MissingField("config"));
            }
            if raw.layers.is_none() {
                return Err(ManifestError::MissingField("layers"));
            }
        }
        ManifestKind::Index => {
            if raw.config.is_some() {
                return Err(ManifestError::AmbiguousField("config"));
            }
            if raw.layers.is_some() {
                return Err(ManifestError::AmbiguousField("layers"));
            }
            if raw.manifests.is_none() {
                return Err(ManifestError::MissingField("manifests"));
            }
        }
    }
    Ok(())
}

/// The fields of a referrers index entry, in spec order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerEntry<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<ReferrerEntry<'a>>,
}

/// Serialises the OCI image index returned by the referrers API.
pub fn referrers_index(descriptors: &[Descriptor]) -> Vec<u8> {
    let index = ReferrersIndex {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: descriptors
            .iter()
            .map(|d| ReferrerEntry {
                media_type: &d.media_type,
                digest: &d.digest,
                size: d.size,
                artifact_type: d.artifact_type.as_deref(),
                annotations: d.annotations.as_ref(),
            })
            .collect(),
    };
    // Strings, integers and string-keyed maps always serialise; the
    // fallback only exists to avoid a panic path.
    serde_json::to_vec(&index).unwrap_or_else(|_| EMPTY_REFERRERS_INDEX.to_vec())
}

const EMPTY_REFERRERS_INDEX: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Algorithm;

    const CONFIG: &str = "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7";
    const LAYER: &str = "sha256:2408cc74d12b6cd092bb8b516ba7d5e290f485d3eb9672efc00f0583730179e8";
    const CHILD_AMD64: &str =
        "sha256:6457d53fb065d6f250e1504b9bc42d5b6c65941d57532c072d929dd0628977d0";
    const CHILD_ARM64: &str =
        "sha256:c5c5fda71656f28e49ac9c5416b3643eaa6a108a8093151d6d1afc39463be04c";

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
        assert_eq!(m.annotations().map(BTreeMap::len), Some(1));
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
        let image_with_manifests =
            oci_image().replace("\"annotations\"", "\"manifests\": [], \"x\"");
        assert_eq!(
            Manifest::parse(None, image_with_manifests.as_bytes()),
            Err(ManifestError::AmbiguousField("manifests"))
        );
        let index_with_layers =
            oci_index().replace("\"manifests\"", "\"layers\": [], \"manifests\"");
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
}
