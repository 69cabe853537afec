//! Any bytes as a chunked body, fed in two pieces: decoding never panics, never produces
//! more data than input, and the split point does not change the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origin::http::chunked::Decoder;

fn decode(pieces: &[&[u8]]) -> Option<(Vec<u8>, bool)> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in pieces {
        let mut buf = p.to_vec();
        let r = d.decode(&mut buf).ok()?;
        assert!(r.data <= r.consumed && r.consumed <= buf.len());
        out.extend_from_slice(&buf[..r.data]);
        if d.is_done() {
            break;
        }
    }
    Some((out, d.is_done()))
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let body = &data[1..];
    let cut = cut.min(body.len());
    let whole = decode(&[body]);
    let split = decode(&[&body[..cut], &body[cut..]]);
    if let (Some(a), Some(b)) = (&whole, &split) {
        assert_eq!(a, b);
    }
});
