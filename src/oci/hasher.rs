//! A SHA-256/SHA-512 hasher whose state can be saved and restored.
//!
//! Blob uploads arrive in chunks, possibly across restarts of the registry.
//! Rehashing everything at the end would read each blob twice, so the running
//! hash state is persisted with the upload instead. `sha2`'s hashers are
//! opaque, so this drives its raw compression functions (which pick SHA-NI or
//! other accelerated code at run time) and keeps the state itself.

use std::fmt;

use sha2::digest::generic_array::typenum::{Unsigned, U128, U64};
use sha2::digest::generic_array::{ArrayLength, GenericArray};

use super::digest::{Algorithm, Digest};

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Largest block size of the supported algorithms (SHA-512's).
const BLOCK_LEN_MAX: usize = 128;

/// First bytes of a serialised state; guards against feeding in unrelated
/// data.
const STATE_MAGIC: [u8; 3] = *b"OHS";

/// Format version of [`Hasher::to_state_bytes`]; bump on any layout change.
const STATE_VERSION: u8 = 1;

/// magic, version, algorithm, total length (u64).
const STATE_HEADER_LEN: usize = STATE_MAGIC.len() + 1 + 1 + 8;

/// The chaining value of one of the supported algorithms.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Sha256([u32; 8]),
    Sha512([u64; 8]),
}

impl State {
    fn new(algorithm: Algorithm) -> State {
        match algorithm {
            Algorithm::Sha256 => State::Sha256(SHA256_IV),
            Algorithm::Sha512 => State::Sha512(SHA512_IV),
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    fn block_len(&self) -> usize {
        match self {
            State::Sha256(_) => U64::USIZE,
            State::Sha512(_) => U128::USIZE,
        }
    }

    /// Size of the message-length field in the final padding block.
    fn length_field_len(&self) -> usize {
        self.block_len() / 8
    }

    /// Runs the compression function over `blocks`, whose length is a
    /// multiple of the block size (any trailing partial block is ignored).
    fn compress(&mut self, blocks: &[u8]) {
        match self {
            State::Sha256(words) => sha2::compress256(words, as_blocks::<U64>(blocks)),
            State::Sha512(words) => sha2::compress512(words, as_blocks::<U128>(blocks)),
        }
    }

    /// Appends the state words big-endian, which for SHA-2 is also the
    /// digest once the message has been padded.
    fn write_words(&self, out: &mut Vec<u8>) {
        match self {
            State::Sha256(words) => words.iter().for_each(|w| out.extend(w.to_be_bytes())),
            State::Sha512(words) => words.iter().for_each(|w| out.extend(w.to_be_bytes())),
        }
    }

    /// Reads big-endian state words for `algorithm` from
    /// `algorithm.output_len()` bytes.
    fn read_words(algorithm: Algorithm, bytes: &[u8]) -> State {
        let mut state = State::new(algorithm);
        match &mut state {
            State::Sha256(words) => {
                for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
                    let mut be = [0; 4];
                    be.copy_from_slice(chunk);
                    *word = u32::from_be_bytes(be);
                }
            }
            State::Sha512(words) => {
                for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut be = [0; 8];
                    be.copy_from_slice(chunk);
                    *word = u64::from_be_bytes(be);
                }
            }
        }
        state
    }
}

/// Views the whole `N`-byte blocks at the start of `bytes` as the block type
/// the `sha2` compression functions take, without copying.
fn as_blocks<N: ArrayLength<u8>>(bytes: &[u8]) -> &[GenericArray<u8, N>] {
    let count = bytes.len() / N::USIZE;
    // SAFETY: `GenericArray<u8, N>` is a `#[repr(transparent)]` wrapper around
    // a `#[repr(C)]` array of `N` bytes: size `N`, alignment 1, no padding and
    // no invalid bit patterns. `count * N <= bytes.len()`, so the new slice
    // covers only initialised bytes borrowed from `bytes` for the same
    // lifetime. `block-buffer` (used by `sha2` itself) does the same cast.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<GenericArray<u8, N>>(), count) }
}

/// Incremental SHA-256 or SHA-512 whose progress can be serialised with
/// [`Hasher::to_state_bytes`] and resumed with [`Hasher::from_state_bytes`].
#[derive(Clone, Debug)]
pub struct Hasher {
    state: State,
    /// Holds the tail of the input that does not yet fill a block.
    buffer: [u8; BLOCK_LEN_MAX],
    /// Bytes used in `buffer`; always less than the block size.
    buffered: usize,
    /// Bytes fed in so far, needed for the final length field.
    total: u64,
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        Hasher {
            state: State::new(algorithm),
            buffer: [0; BLOCK_LEN_MAX],
            buffered: 0,
            total: 0,
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.state.algorithm()
    }

    /// Bytes passed to [`Hasher::update`] so far, including restored state.
    pub fn bytes_hashed(&self) -> u64 {
        self.total
    }

    /// Feeds `data`. Whole blocks are compressed straight from `data`; only
    /// a leftover partial block is copied into the internal buffer.
    pub fn update(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        let rest = self.fill_buffer(data);
        let block_len = self.state.block_len();
        let whole = rest.len() - rest.len() % block_len;
        let (blocks, tail) = rest.split_at(whole);
        self.state.compress(blocks);
        if !tail.is_empty() {
            self.buffer[..tail.len()].copy_from_slice(tail);
            self.buffered = tail.len();
        }
    }

    /// Tops up a partly filled buffer from `data`, compressing it once full,
    /// and returns the part of `data` not consumed.
    fn fill_buffer<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.buffered == 0 {
            return data;
        }
        let block_len = self.state.block_len();
        let take = (block_len - self.buffered).min(data.len());
        let (head, rest) = data.split_at(take);
        self.buffer[self.buffered..self.buffered + take].copy_from_slice(head);
        self.buffered += take;
        if self.buffered == block_len {
            self.state.compress(&self.buffer[..block_len]);
            self.buffered = 0;
        }
        rest
    }

    /// Applies the standard SHA-2 padding (0x80, zeros, big-endian bit
    /// length) and returns the digest.
    pub fn finalize(mut self) -> Digest {
        let block_len = self.state.block_len();
        let field_len = self.state.length_field_len();
        let used = self.buffered;
        let mut last = [0u8; 2 * BLOCK_LEN_MAX];
        last[..used].copy_from_slice(&self.buffer[..used]);
        last[used] = 0x80;
        let end = if used + 1 + field_len <= block_len {
            block_len
        } else {
            2 * block_len
        };
        // SHA-256 carries the bit length modulo 2^64, SHA-512 modulo 2^128;
        // both are the low bytes of the 128-bit big-endian value.
        let bits = (u128::from(self.total) * 8).to_be_bytes();
        last[end - field_len..end].copy_from_slice(&bits[bits.len() - field_len..]);
        self.state.compress(&last[..end]);
        let mut raw = Vec::with_capacity(BLOCK_LEN_MAX / 2);
        self.state.write_words(&mut raw);
        Digest::from_raw(self.algorithm(), &raw)
    }

    /// Serialises the progress so far: magic `OHS`, version, algorithm
    /// (1 = sha256, 2 = sha512), total length as big-endian u64, the state
    /// words big-endian, then the buffered partial block (its length is
    /// `total % block size`).
    pub fn to_state_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATE_HEADER_LEN + 64 + self.buffered);
        out.extend(STATE_MAGIC);
        out.push(STATE_VERSION);
        out.push(algorithm_code(self.algorithm()));
        out.extend(self.total.to_be_bytes());
        self.state.write_words(&mut out);
        out.extend(&self.buffer[..self.buffered]);
        out
    }

    /// Restores a hasher saved by [`Hasher::to_state_bytes`]. Rejects
    /// anything that is not exactly such a serialisation.
    pub fn from_state_bytes(bytes: &[u8]) -> Result<Hasher, HashStateError> {
        let header = bytes
            .get(..STATE_HEADER_LEN)
            .ok_or(HashStateError::Length {
                expected: STATE_HEADER_LEN,
                actual: bytes.len(),
            })?;
        let (algorithm, total) = parse_header(header)?;
        let state = State::new(algorithm);
        // SHA-2 state words are exactly as long as the output.
        let words_len = algorithm.output_len();
        let buffered = (total % state.block_len() as u64) as usize;
        let expected = STATE_HEADER_LEN + words_len + buffered;
        if bytes.len() != expected {
            return Err(HashStateError::Length {
                expected,
                actual: bytes.len(),
            });
        }
        let (words, tail) = bytes[STATE_HEADER_LEN..].split_at(words_len);
        let mut hasher = Hasher {
            state: State::read_words(algorithm, words),
            buffered,
            total,
            ..Hasher::new(algorithm)
        };
        hasher.buffer[..buffered].copy_from_slice(tail);
        Ok(hasher)
    }
}

fn algorithm_code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::Sha256 => 1,
        Algorithm::Sha512 => 2,
    }
}

/// Checks magic and version and returns the algorithm and total length from
/// a `STATE_HEADER_LEN`-byte header.
fn parse_header(header: &[u8]) -> Result<(Algorithm, u64), HashStateError> {
    let (magic, rest) = header.split_at(STATE_MAGIC.len());
    if magic != STATE_MAGIC {
        return Err(HashStateError::BadMagic);
    }
    let [version, code, total @ ..] = rest else {
        return Err(HashStateError::Length {
            expected: STATE_HEADER_LEN,
            actual: header.len(),
        });
    };
    if *version != STATE_VERSION {
        return Err(HashStateError::UnsupportedVersion(*version));
    }
    let algorithm = match code {
        1 => Algorithm::Sha256,
        2 => Algorithm::Sha512,
        other => return Err(HashStateError::UnknownAlgorithm(*other)),
    };
    let mut be = [0; 8];
    be.copy_from_slice(total);
    Ok((algorithm, u64::from_be_bytes(be)))
}

/// Why saved hash state could not be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashStateError {
    BadMagic,
    UnsupportedVersion(u8),
    UnknownAlgorithm(u8),
    /// Truncated or trailing bytes.
    Length {
        expected: usize,
        actual: usize,
    },
}

impl fmt::Display for HashStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashStateError::BadMagic => f.write_str("hash state has a bad magic number"),
            HashStateError::UnsupportedVersion(v) => {
                write!(f, "hash state version {v} is not supported")
            }
            HashStateError::UnknownAlgorithm(code) => {
                write!(f, "hash state names unknown algorithm {code}")
            }
            HashStateError::Length { expected, actual } => {
                write!(f, "hash state is {actual} bytes, expected {expected}")
            }
        }
    }
}

impl std::error::Error for HashStateError {}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    /// splitmix64: deterministic test randomness without a `rand` dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    fn reference(algorithm: Algorithm, data: &[u8]) -> String {
        let raw = match algorithm {
            Algorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Algorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        };
        Digest::from_raw(algorithm, &raw).to_string()
    }

    fn one_shot(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finalize()
    }

    /// Hashes `data` in random pieces, round-tripping the state through
    /// bytes between pieces.
    fn pieces(algorithm: Algorithm, data: &[u8], rng: &mut Rng) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        let mut rest = data;
        for _ in 0..rng.below(6) {
            let (head, tail) = rest.split_at(rng.below(rest.len() + 1));
            hasher.update(head);
            let saved = hasher.to_state_bytes();
            hasher = Hasher::from_state_bytes(&saved).unwrap();
            assert_eq!(hasher.to_state_bytes(), saved);
            rest = tail;
        }
        hasher.update(rest);
        assert_eq!(hasher.bytes_hashed(), data.len() as u64);
        hasher.finalize()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            one_shot(Algorithm::Sha256, b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            one_shot(Algorithm::Sha256, b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            one_shot(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(
                one_shot(algorithm, b"").to_string(),
                reference(algorithm, b"")
            );
        }
    }

    #[test]
    fn matches_sha2_for_many_lengths_and_splits() {
        let mut rng = Rng(1);
        let data = rng.bytes(1 << 20 | 77);
        let mut lengths: Vec<usize> = (0..300).collect();
        lengths.extend([511, 512, 513, 1000, 4096, 65_537, 1 << 20, data.len()]);
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            for &len in &lengths {
                let input = &data[..len];
                let expected = reference(algorithm, input);
                assert_eq!(one_shot(algorithm, input).to_string(), expected);
                for _ in 0..3 {
                    let got = pieces(algorithm, input, &mut rng);
                    assert_eq!(got.to_string(), expected, "{algorithm} len {len}");
                }
            }
        }
    }

    #[test]
    fn byte_at_a_time() {
        let data = Rng(2).bytes(300);
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut hasher = Hasher::new(algorithm);
            data.iter()
                .for_each(|b| hasher.update(std::slice::from_ref(b)));
            assert_eq!(hasher.finalize().to_string(), reference(algorithm, &data));
        }
    }

    #[test]
    fn state_format_is_stable() {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(b"abc");
        let state = hasher.to_state_bytes();
        assert_eq!(&state[..5], b"OHS\x01\x01");
        assert_eq!(&state[5..13], &3u64.to_be_bytes());
        assert_eq!(&state[13..17], &SHA256_IV[0].to_be_bytes());
        assert_eq!(&state[45..], b"abc");
        assert_eq!(state.len(), 48);
    }

    #[test]
    fn rejects_malformed_state() {
        let mut hasher = Hasher::new(Algorithm::Sha512);
        hasher.update(b"hello");
        let good = hasher.to_state_bytes();
        let with = |i: usize, b: u8| {
            let mut s = good.clone();
            s[i] = b;
            Hasher::from_state_bytes(&s).map(|_| ())
        };
        assert_eq!(with(0, b'X'), Err(HashStateError::BadMagic));
        assert_eq!(with(3, 9), Err(HashStateError::UnsupportedVersion(9)));
        assert_eq!(with(4, 3), Err(HashStateError::UnknownAlgorithm(3)));
        assert!(with(12, 6).is_err(), "length disagrees with buffer");
        assert!(Hasher::from_state_bytes(&good[..good.len() - 1]).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(Hasher::from_state_bytes(&long).is_err());
        assert!(Hasher::from_state_bytes(&[]).is_err());
    }

    #[test]
    fn random_state_bytes_never_panic() {
        let mut rng = Rng(3);
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(&rng.bytes(100));
        let seeds = [
            hasher.to_state_bytes(),
            Hasher::new(Algorithm::Sha512).to_state_bytes(),
        ];
        for round in 0..20_000 {
            let mut input = if round % 2 == 0 {
                let len = rng.below(200);
                rng.bytes(len)
            } else {
                seeds[rng.below(2)].clone()
            };
            for _ in 0..rng.below(4) {
                if let Some(byte) = input.get_mut(rng.below(200)) {
                    *byte = rng.next() as u8;
                }
            }
            input.truncate(rng.below(250));
            if let Ok(mut restored) = Hasher::from_state_bytes(&input) {
                restored.update(b"more");
                let _ = restored.finalize();
            }
        }
    }

    /// Compares throughput with `sha2` (best of five runs each, since the
    /// build machine is shared); run with
    /// `cargo test --release --lib oci::hasher -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_against_sha2() {
        let data = Rng(4).bytes(32 << 20);
        let mib = (data.len() >> 20) as f64;
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            for chunk in [1000, 64 << 10, 1 << 20] {
                let (mut ours_best, mut theirs_best) = (f64::MAX, f64::MAX);
                for _ in 0..5 {
                    let start = std::time::Instant::now();
                    let mut ours = Hasher::new(algorithm);
                    data.chunks(chunk).for_each(|c| ours.update(c));
                    let ours = ours.finalize().to_string();
                    ours_best = ours_best.min(start.elapsed().as_secs_f64());

                    let start = std::time::Instant::now();
                    let theirs = match algorithm {
                        Algorithm::Sha256 => sha2_chunked::<sha2::Sha256>(&data, chunk),
                        Algorithm::Sha512 => sha2_chunked::<sha2::Sha512>(&data, chunk),
                    };
                    theirs_best = theirs_best.min(start.elapsed().as_secs_f64());
                    assert_eq!(ours, Digest::from_raw(algorithm, &theirs).to_string());
                }
                println!(
                    "{algorithm} chunk {chunk}: ours {:.0} MiB/s, sha2 {:.0} MiB/s",
                    mib / ours_best,
                    mib / theirs_best
                );
            }
        }
    }

    fn sha2_chunked<D: sha2::Digest>(data: &[u8], chunk: usize) -> Vec<u8> {
        let mut hasher = D::new();
        data.chunks(chunk).for_each(|c| hasher.update(c));
        hasher.finalize().to_vec()
    }
}
