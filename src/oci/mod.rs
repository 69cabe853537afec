//! OCI data types: digests, names, resumable hashing and manifests.
//!
//! Everything here is pure (no I/O, no async) so the HTTP and storage layers
//! can rely on these types being valid by construction.

pub mod digest;
pub mod hasher;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError};
pub use hasher::Hasher;
pub use manifest::{media_type, referrers_index, Descriptor, Manifest, ManifestKind};
pub use name::{Reference, RepoName, Tag, UploadId};
