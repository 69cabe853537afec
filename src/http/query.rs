//! The query string of a request target: decoding and lookup, for every surface that reads
//! one (the API, the mirror), and the encoding of the values Origin sends (token requests,
//! replication).

/// Percent-encodes a query parameter value (RFC 3986: unreserved characters stay).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes in a query component; None if an escape is malformed.
/// A `+` stays a `+`: media types in `artifactType` contain it, and no OCI value has spaces.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The first value of a query parameter, decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::{escape, percent_decode};

    #[test]
    fn escaped_values_decode_back() {
        for v in [
            "repository:team/app:pull,push",
            "sha256:ab",
            "a b+c&d=e",
            "ü~._-",
        ] {
            assert_eq!(percent_decode(&escape(v)).as_deref(), Some(v));
        }
        assert_eq!(escape("a/b:c"), "a%2Fb%3Ac");
    }
}
