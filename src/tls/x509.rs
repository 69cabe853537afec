//! The subject's common names and organizations from a DER certificate, by a small walk
//! over the few fields before it. Bounded and total: malformed input gives empty lists.
//!
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
//!     serialNumber INTEGER, signature SEQUENCE, issuer Name, validity SEQUENCE,
//!     subject Name, ... }, ... }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value DirectoryString }

/// id-at-commonName (2.5.4.3) and id-at-organizationName (2.5.4.10), as DER contents.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// Values kept per attribute; real certificates carry one or two.
const VALUES_PER_ATTRIBUTE_MAX: usize = 16;
/// Longest value kept, in bytes (the X.520 upper bound for both is 64 characters).
const VALUE_BYTES_MAX: usize = 1024;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// (common names, organizations) of the certificate's subject, in certificate order.
pub fn identity_from_certificate(der: &[u8]) -> (Vec<String>, Vec<String>) {
    subject(der).unwrap_or_default()
}

fn subject(der: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = expect(rest, VERSION)?.1;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.1; // serial, signature, issuer, validity
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    let (mut common_names, mut organizations) = (Vec::new(), Vec::new());
    while !rdns.is_empty() {
        let (mut set, next) = expect(rdns, SET)?;
        rdns = next;
        while !set.is_empty() {
            let (attribute, next) = expect(set, SEQUENCE)?;
            set = next;
            let (oid, value) = expect(attribute, OID)?;
            let (tag, value, _) = tlv(value)?;
            let list = match oid {
                OID_COMMON_NAME => &mut common_names,
                OID_ORGANIZATION => &mut organizations,
                _ => continue,
            };
            if list.len() < VALUES_PER_ATTRIBUTE_MAX && value.len() <= VALUE_BYTES_MAX {
                list.extend(directory_string(tag, value));
            }
        }
    }
    Some((common_names, organizations))
}

/// One element with the given tag: (contents, what follows).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

/// Splits one DER element: (tag, contents, rest). Only single-byte tags and definite
/// lengths of up to 4 bytes, which is all a certificate's outer structure uses.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The text of a DirectoryString (and IA5String); None for other types or bad encodings.
fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0c => String::from_utf8(value.to_vec()).ok(), // UTF8String
        0x13 | 0x16 => value
            .is_ascii()
            .then(|| String::from_utf8_lossy(value).into_owned()), // Printable, IA5
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()), // Teletex, read as Latin-1
        0x1e => {
            // BMPString: UTF-16BE
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        0x1c => {
            // UniversalString: UTF-32BE
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal certificate around `subject` (the fields before it are placeholders).
    fn cert_with_subject(subject: &[u8]) -> Vec<u8> {
        let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02]; // version v3
        tbs.extend([0x02, 0x01, 0x01]); // serial
        tbs.extend([0x30, 0x00, 0x30, 0x00, 0x30, 0x00]); // signature, issuer, validity
        tbs.extend(subject);
        let tbs = wrap(SEQUENCE, &tbs);
        wrap(SEQUENCE, &tbs)
    }

    fn wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend(contents);
        out
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut a = wrap(OID, oid);
        a.extend(wrap(tag, value));
        wrap(SET, &wrap(SEQUENCE, &a))
    }

    /// Every string type decodes; other attributes are skipped; order is kept.
    #[test]
    fn reads_string_types_in_order() {
        let mut rdns = attribute(&[0x55, 0x04, 0x06], 0x13, b"DE"); // country: skipped
        rdns.extend(attribute(OID_ORGANIZATION, 0x0c, "Ünïcode Org".as_bytes()));
        rdns.extend(attribute(OID_ORGANIZATION, 0x13, b"Printable"));
        rdns.extend(attribute(OID_COMMON_NAME, 0x16, b"ia5.example"));
        rdns.extend(attribute(OID_COMMON_NAME, 0x14, &[b'c', 0xe9]));
        rdns.extend(attribute(OID_COMMON_NAME, 0x1e, &[0x00, b'b', 0x00, b'm']));
        rdns.extend(attribute(OID_COMMON_NAME, 0x1c, &[0, 0, 0, b'u']));
        rdns.extend(attribute(OID_COMMON_NAME, 0x13, "ä".as_bytes())); // not Printable: dropped
        let der = cert_with_subject(&wrap(SEQUENCE, &rdns));
        let (cn, o) = identity_from_certificate(&der);
        assert_eq!(cn, ["ia5.example", "cé", "bm", "u"]);
        assert_eq!(o, ["Ünïcode Org", "Printable"]);
    }

    /// An empty subject and a certificate without the version field both work.
    #[test]
    fn empty_subject_and_v1() {
        let der = cert_with_subject(&[0x30, 0x00]);
        assert_eq!(identity_from_certificate(&der), (vec![], vec![]));
        let rdns = attribute(OID_COMMON_NAME, 0x0c, b"v1");
        let mut tbs = vec![0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00];
        tbs.extend(wrap(SEQUENCE, &rdns));
        let der = wrap(SEQUENCE, &wrap(SEQUENCE, &tbs));
        assert_eq!(identity_from_certificate(&der).0, ["v1"]);
    }

    /// Values are bounded in count and size.
    #[test]
    fn values_are_bounded() {
        let mut rdns = Vec::new();
        for _ in 0..40 {
            rdns.extend(attribute(OID_COMMON_NAME, 0x0c, b"x"));
        }
        rdns.extend(attribute(
            OID_ORGANIZATION,
            0x0c,
            &[b'o'; VALUE_BYTES_MAX + 1],
        ));
        let der = cert_with_subject(&wrap(SEQUENCE, &rdns));
        let (cn, o) = identity_from_certificate(&der);
        assert_eq!(cn.len(), VALUES_PER_ATTRIBUTE_MAX);
        assert!(o.is_empty());
    }

    /// Random bytes, truncations and bit flips of a valid certificate never panic.
    #[test]
    fn garbage_never_panics() {
        let mut rdns = attribute(OID_COMMON_NAME, 0x0c, b"alice");
        rdns.extend(attribute(OID_ORGANIZATION, 0x0c, b"ops"));
        let valid = cert_with_subject(&wrap(SEQUENCE, &rdns));
        assert_eq!(
            identity_from_certificate(&valid),
            (vec!["alice".into()], vec!["ops".into()])
        );
        // xorshift: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in 0..valid.len() {
            identity_from_certificate(&valid[..len]);
        }
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            identity_from_certificate(&bytes);
            let len = (next() % 300) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            identity_from_certificate(&random);
        }
        // Lengths that claim more than there is, in every form.
        for prefix in [
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x80],
            &[0x1f, 0x01],
        ] {
            assert_eq!(identity_from_certificate(prefix), (vec![], vec![]));
        }
    }
}
