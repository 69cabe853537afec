//! Names that arrive in request paths: repository names, tags, references and
//! upload session ids.
//!
//! Each type can only be built by parsing, and every grammar here excludes
//! `/`-prefixed strings, `..`, and bytes outside a small ASCII set. These
//! values end up as storage keys, so that guarantee is what keeps a request
//! from escaping its repository.

use std::fmt;
use std::io;
use std::str::FromStr;

use super::digest::{push_hex, Digest, DigestError};

/// Longest repository name accepted, in bytes (distribution spec limit).
pub const REPO_NAME_LEN_MAX: usize = 255;

/// Longest tag accepted, in bytes (distribution spec limit).
pub const TAG_LEN_MAX: usize = 128;

/// Implements what all the name types share: string views, `Display`,
/// `FromStr` via `parse`, and `std::error::Error` for their error type.
macro_rules! string_newtype {
    ($name:ident, $error:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = $error;

            fn from_str(s: &str) -> Result<$name, $error> {
                $name::parse(s)
            }
        }

        impl std::error::Error for $error {}
    };
}

/// Why a string is not a valid repository name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepoNameError {
    Empty,
    TooLong(usize),
    /// The 1-based path component that breaks the grammar.
    InvalidComponent(usize),
}

impl fmt::Display for RepoNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoNameError::Empty => f.write_str("repository name is empty"),
            RepoNameError::TooLong(len) => write!(
                f,
                "repository name is {len} bytes, longer than {REPO_NAME_LEN_MAX}"
            ),
            RepoNameError::InvalidComponent(n) => write!(
                f,
                "repository name component {n} must match \
                 [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*"
            ),
        }
    }
}

/// A repository name such as `library/alpine`.
///
/// Grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most [`REPO_NAME_LEN_MAX`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

string_newtype!(RepoName, RepoNameError);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, RepoNameError> {
        if s.is_empty() {
            return Err(RepoNameError::Empty);
        }
        if s.len() > REPO_NAME_LEN_MAX {
            return Err(RepoNameError::TooLong(s.len()));
        }
        for (index, component) in s.split('/').enumerate() {
            if !is_path_component(component.as_bytes()) {
                return Err(RepoNameError::InvalidComponent(index + 1));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The `/`-separated components; each is non-empty and matches the
    /// component grammar.
    #[cfg(test)]
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, written as a scan over alternating
/// alphanumeric runs and separators.
fn is_path_component(component: &[u8]) -> bool {
    let mut rest = component;
    loop {
        let run = rest.iter().take_while(|&&c| is_lower_alnum(c)).count();
        if run == 0 {
            return false;
        }
        rest = &rest[run..];
        match skip_separator(rest) {
            None => return rest.is_empty(),
            Some(after) => rest = after,
        }
    }
}

/// Consumes one separator (`.`, `_`, `__` or `-+`) from the front of `s`.
fn skip_separator(s: &[u8]) -> Option<&[u8]> {
    match s {
        [b'_', b'_', rest @ ..] | [b'_', rest @ ..] | [b'.', rest @ ..] => Some(rest),
        [b'-', ..] => Some(&s[s.iter().take_while(|&&c| c == b'-').count()..]),
        _ => None,
    }
}

/// Why a string is not a valid tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagError {
    Empty,
    TooLong(usize),
    /// The tag breaks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` or contains `..`.
    Invalid,
}

impl fmt::Display for TagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagError::Empty => f.write_str("tag is empty"),
            TagError::TooLong(len) => {
                write!(f, "tag is {len} bytes, longer than {TAG_LEN_MAX}")
            }
            TagError::Invalid => f.write_str(
                "tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127} and not contain \"..\"",
            ),
        }
    }
}

/// A tag such as `latest` or `v1.2.3`.
///
/// Grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Tags containing `..` are
/// also rejected (stricter than the spec) so no storage key ever holds one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

string_newtype!(Tag, TagError);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, TagError> {
        let bytes = s.as_bytes();
        let (&first, rest) = bytes.split_first().ok_or(TagError::Empty)?;
        if bytes.len() > TAG_LEN_MAX {
            return Err(TagError::TooLong(bytes.len()));
        }
        let first_ok = first.is_ascii_alphanumeric() || first == b'_';
        let rest_ok = rest
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !first_ok || !rest_ok || s.contains("..") {
            return Err(TagError::Invalid);
        }
        Ok(Tag(s.to_owned()))
    }
}

/// Why a manifest reference is neither a valid tag nor a valid digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    Tag(TagError),
    Digest(DigestError),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceError::Tag(e) => e.fmt(f),
            ReferenceError::Digest(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReferenceError {}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// Tags cannot contain `:`, so its presence means a digest was meant.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            Digest::parse(s)
                .map(Reference::Digest)
                .map_err(ReferenceError::Digest)
        } else {
            Tag::parse(s)
                .map(Reference::Tag)
                .map_err(ReferenceError::Tag)
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(tag) => tag.as_str(),
            Reference::Digest(digest) => digest.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

impl From<Tag> for Reference {
    fn from(tag: Tag) -> Reference {
        Reference::Tag(tag)
    }
}

impl From<Digest> for Reference {
    fn from(digest: Digest) -> Reference {
        Reference::Digest(digest)
    }
}

/// Length of an upload id: 128 random bits as lowercase hex.
pub const UPLOAD_ID_LEN: usize = 32;

/// Why a string is not an upload id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UploadIdError {
    /// Not exactly [`UPLOAD_ID_LEN`] lowercase hex characters.
    Invalid,
}

impl fmt::Display for UploadIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "upload id must be {UPLOAD_ID_LEN} lowercase hex characters"
        )
    }
}

/// Identifies a blob upload session. Random so that ids cannot be guessed
/// by other clients, and hex so it is safe as a storage key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

string_newtype!(UploadId, UploadIdError);

impl UploadId {
    /// A fresh id from the OS random source; fails rather than falling back
    /// to a weak source.
    pub fn generate() -> io::Result<UploadId> {
        let mut raw = [0u8; UPLOAD_ID_LEN / 2];
        getrandom::getrandom(&mut raw)
            .map_err(|e| io::Error::other(format!("random source failed: {e}")))?;
        let mut text = String::with_capacity(UPLOAD_ID_LEN);
        push_hex(&mut text, &raw);
        Ok(UploadId(text))
    }

    pub fn parse(s: &str) -> Result<UploadId, UploadIdError> {
        let hex_ok = s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if s.len() != UPLOAD_ID_LEN || !hex_ok {
            return Err(UploadIdError::Invalid);
        }
        Ok(UploadId(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names_accepted() {
        let long = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        let cases = [
            "a",
            "alpine",
            "library/alpine",
            "a/b/c/d",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0",
            "a.b_c__d-e---f/g9",
            long.as_str(),
        ];
        for case in cases {
            let name = RepoName::parse(case).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert_eq!(name.as_str(), case);
        }
    }

    #[test]
    fn repo_names_rejected() {
        let cases = [
            "",
            "/",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".",
            "a..b",
            "a___b",
            "a_.b",
            "a._b",
            "a-.b",
            "a.-b",
            "-a",
            "a-",
            "_a",
            "a_",
            ".a",
            "a.",
            "A",
            "library/Alpine",
            "a b",
            "a\0b",
            "a\\b",
            "a:b",
            "a%2fb",
            "é",
        ];
        for case in cases {
            assert!(RepoName::parse(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn repo_name_length_limit() {
        let max = format!("{}/{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(max.len(), REPO_NAME_LEN_MAX);
        assert!(RepoName::parse(&max).is_ok());
        let over = format!("{max}c");
        assert_eq!(
            RepoName::parse(&over),
            Err(RepoNameError::TooLong(REPO_NAME_LEN_MAX + 1))
        );
    }

    #[test]
    fn repo_name_components() {
        let name = RepoName::parse("a/b-c/d").unwrap();
        assert_eq!(name.components().collect::<Vec<_>>(), ["a", "b-c", "d"]);
        assert_eq!(
            RepoName::parse("a/B"),
            Err(RepoNameError::InvalidComponent(2))
        );
    }

    #[test]
    fn tags() {
        let max = "a".repeat(TAG_LEN_MAX);
        for case in ["latest", "v1.2.3", "_x", "A-b_c.d", "1", max.as_str()] {
            assert_eq!(Tag::parse(case).unwrap().as_str(), case);
        }
        let over = "a".repeat(TAG_LEN_MAX + 1);
        let bad = [
            "",
            ".a",
            "-a",
            "a/b",
            "a:b",
            "a..b",
            "..",
            "a b",
            "a\n",
            "é",
            over.as_str(),
        ];
        for case in bad {
            assert!(Tag::parse(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("latest").unwrap(),
            Reference::Tag(Tag::parse("latest").unwrap())
        );
        let text = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let reference = Reference::parse(text).unwrap();
        assert!(matches!(reference, Reference::Digest(_)));
        assert_eq!(reference.to_string(), text);
        assert!(matches!(
            Reference::parse("sha256:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("../x"),
            Err(ReferenceError::Tag(_))
        ));
    }

    #[test]
    fn upload_ids() {
        let a = UploadId::generate().unwrap();
        let b = UploadId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), UPLOAD_ID_LEN);
        assert_eq!(UploadId::parse(a.as_str()), Ok(a.clone()));
        let upper = a.as_str().to_ascii_uppercase();
        let bad = [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
            "../456789abcdef0123456789abcdef",
        ];
        for case in bad {
            assert!(UploadId::parse(case).is_err(), "{case:?}");
        }
        if upper != a.as_str() {
            assert!(UploadId::parse(&upper).is_err());
        }
    }
}
