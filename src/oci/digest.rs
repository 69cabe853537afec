//! Content digests (`algorithm ":" encoded`) as defined by the OCI image and
//! distribution specs.
//!
//! A [`Digest`] can only be obtained by parsing or by hashing, so holding one
//! proves that its text is `sha256:` or `sha512:` followed by the right number
//! of lowercase hex digits. That makes it safe to splice into storage keys and
//! URLs without further checks.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// Hash algorithms the registry accepts.
///
/// The spec's grammar admits any algorithm name; only the two registered
/// SHA-2 variants are accepted because content must be verifiable here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm component as it appears in a digest string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Number of hex characters in the encoded part of a digest.
    pub const fn hex_len(self) -> usize {
        self.output_len() * 2
    }

    /// Number of bytes the hash function outputs.
    pub const fn output_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an acceptable digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestError {
    /// The string does not follow the digest grammar, or the encoded part is
    /// wrong for a known algorithm.
    Invalid(&'static str),
    /// Grammatically valid, but the algorithm (held here, truncated) is not
    /// one this registry can verify.
    Unsupported(String),
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DigestError::Invalid(why) => write!(f, "invalid digest: {why}"),
            DigestError::Unsupported(algo) => write!(f, "unsupported digest algorithm {algo:?}"),
        }
    }
}

impl std::error::Error for DigestError {}

/// A validated content digest such as `sha256:e3b0c442...`.
///
/// Stores the full text so that [`Digest::as_str`] needs no allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: String,
}

/// Longest algorithm name echoed back in an error, so hostile input cannot
/// blow up error messages.
const ERROR_ALGORITHM_LEN_MAX: usize = 32;

impl Digest {
    /// Parses `algorithm ":" encoded`, accepting only sha256 and sha512 with
    /// lowercase hex of the exact length.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (name, encoded) = s
            .split_once(':')
            .ok_or(DigestError::Invalid("missing ':'"))?;
        if !is_algorithm_grammar(name.as_bytes()) {
            return Err(DigestError::Invalid("malformed algorithm"));
        }
        if !is_encoded_grammar(encoded.as_bytes()) {
            return Err(DigestError::Invalid("malformed encoded part"));
        }
        let algorithm = Algorithm::from_name(name).ok_or_else(|| unsupported(name))?;
        if encoded.len() != algorithm.hex_len() || !is_lower_hex(encoded.as_bytes()) {
            return Err(DigestError::Invalid("wrong length or not lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            text: s.to_owned(),
        })
    }

    /// Hashes `bytes` in one go.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        match algorithm {
            Algorithm::Sha256 => Digest::from_raw(algorithm, &sha2::Sha256::digest(bytes)),
            Algorithm::Sha512 => Digest::from_raw(algorithm, &sha2::Sha512::digest(bytes)),
        }
    }

    /// Builds a digest from raw hash output; `raw` must be
    /// `algorithm.output_len()` bytes, which only this module's callers
    /// (hash functions) produce.
    pub(crate) fn from_raw(algorithm: Algorithm, raw: &[u8]) -> Digest {
        debug_assert_eq!(raw.len(), algorithm.output_len());
        let mut text = String::with_capacity(algorithm.as_str().len() + 1 + raw.len() * 2);
        text.push_str(algorithm.as_str());
        text.push(':');
        push_hex(&mut text, raw);
        Digest { algorithm, text }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (lowercase hex) part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        self.text
            .get(self.algorithm.as_str().len() + 1..)
            .unwrap_or_default()
    }

    /// The whole digest, e.g. `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Appends `raw` to `out` as lowercase hex.
pub(crate) fn push_hex(out: &mut String, raw: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &byte in raw {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

fn unsupported(name: &str) -> DigestError {
    // The grammar check guarantees ASCII, so any byte index is a char boundary.
    let shown = name.get(..ERROR_ALGORITHM_LEN_MAX).unwrap_or(name);
    DigestError::Unsupported(shown.to_owned())
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`
fn is_algorithm_grammar(name: &[u8]) -> bool {
    let component = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let separator = |c: u8| matches!(c, b'+' | b'.' | b'_' | b'-');
    let mut previous_was_component = false;
    for &c in name {
        if component(c) {
            previous_was_component = true;
        } else if separator(c) && previous_was_component {
            previous_was_component = false;
        } else {
            return false;
        }
    }
    previous_was_component
}

/// `[a-zA-Z0-9=_-]+`
fn is_encoded_grammar(encoded: &[u8]) -> bool {
    !encoded.is_empty()
        && encoded
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'))
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|&c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        deserializer.deserialize_str(DigestVisitor)
    }
}

/// Parses straight from the borrowed JSON string, avoiding an intermediate
/// `String` when the input has no escapes.
struct DigestVisitor;

impl serde::de::Visitor<'_> for DigestVisitor {
    type Value = Digest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a digest string such as \"sha256:<64 hex digits>\"")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
        Digest::parse(s).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.as_str(), EMPTY_SHA256);
        assert_eq!(EMPTY_SHA256.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn parses_sha512() {
        let text = format!("sha512:{}", "ab".repeat(64));
        let d = Digest::parse(&text).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex(), "ab".repeat(64));
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "",
            ":",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../../../etc/passwd",
            "sha256 :abc",
            "sha-:abc",
            "-sha:abc",
            "sha..256:abc",
            "sha256:abc:def",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
        ];
        for case in cases {
            assert!(
                matches!(Digest::parse(case), Err(DigestError::Invalid(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn unknown_algorithm_is_unsupported() {
        for case in [
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            "sha384:abc",
        ] {
            assert!(
                matches!(Digest::parse(case), Err(DigestError::Unsupported(_))),
                "{case:?}"
            );
        }
        let long = format!("{}:abc", "a".repeat(1000));
        match Digest::parse(&long) {
            Err(DigestError::Unsupported(name)) => assert_eq!(name.len(), 32),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn of_matches_known_vectors() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").as_str(), EMPTY_SHA256);
        assert_eq!(
            Digest::of(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn orders_by_algorithm_then_text() {
        let a = Digest::of(Algorithm::Sha256, b"a");
        let b = Digest::of(Algorithm::Sha512, b"a");
        assert!(a < b);
    }
}
