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
    #[cfg(test)]
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
mod tests;
