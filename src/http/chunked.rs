//! Incremental decoder for the chunked transfer coding (RFC 9112 section 7.1).
//!
//! It decodes in place: framing is removed and the data bytes are moved to the front of the
//! same buffer, so a body goes from the socket to the hasher and the file without another copy.
//! All state lives in the decoder, so input may be split anywhere. No I/O here.

use std::fmt;

/// A chunk-size line's extensions may not exceed this: nobody needs them, attackers use them.
pub const CHUNK_EXT_BYTES_MAX: usize = 4096;
/// Total trailer section size; trailers are read and discarded.
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;
/// Hex digits in a chunk size: 16 fills a u64, more would overflow.
const SIZE_DIGITS_MAX: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
    digits: u32,
    ext_bytes: usize,
    trailer_bytes: usize,
    remaining: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call to [`Decoder::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Data bytes now at the front of the buffer.
    pub data: usize,
    /// Input bytes consumed; bytes after this belong to whatever follows the body.
    pub consumed: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::Size,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            remaining: 0,
        }
    }

    /// True once the last chunk and the trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `buf` in place. Stops at the end of the body; the rest is left unconsumed.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Progress, ChunkError> {
        let mut i = 0;
        let mut out = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                let take =
                    (buf.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                buf.copy_within(i..i + take, out);
                i += take;
                out += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(buf[i])?;
            i += 1;
        }
        Ok(Progress {
            data: out,
            consumed: i,
        })
    }

    /// Advances the framing state machine by one byte (every state but Data).
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if self.digits == SIZE_DIGITS_MAX {
                        return Err(ChunkError("chunk size too large"));
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = (self.size << 4) | v;
                    self.digits += 1;
                    State::Size
                }
                b';' | b' ' | b'\t' if self.digits > 0 => {
                    self.ext_bytes = 0;
                    State::Ext
                }
                b'\r' if self.digits > 0 => State::SizeLf,
                _ => return Err(ChunkError("bad chunk size")),
            },
            State::Ext => match b {
                b'\r' => State::SizeLf,
                b'\n' | 0 => return Err(ChunkError("bad chunk extension")),
                _ => {
                    self.ext_bytes += 1;
                    if self.ext_bytes > CHUNK_EXT_BYTES_MAX {
                        return Err(ChunkError("chunk extension too long"));
                    }
                    State::Ext
                }
            },
            State::SizeLf => {
                expect(b, b'\n')?;
                let size = std::mem::take(&mut self.size);
                self.digits = 0;
                if size == 0 {
                    State::TrailerStart
                } else {
                    self.remaining = size;
                    State::Data
                }
            }
            State::DataCr => {
                expect(b, b'\r')?;
                State::DataLf
            }
            State::DataLf => {
                expect(b, b'\n')?;
                State::Size
            }
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                _ => self.trailer_byte()?,
            },
            State::Trailer => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(ChunkError("bare LF in trailer")),
                _ => self.trailer_byte()?,
            },
            State::TrailerLf => {
                expect(b, b'\n')?;
                State::TrailerStart
            }
            State::FinalLf => {
                expect(b, b'\n')?;
                State::Done
            }
            State::Data | State::Done => self.state,
        };
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<State, ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > TRAILER_BYTES_MAX {
            return Err(ChunkError("trailer section too large"));
        }
        Ok(State::Trailer)
    }
}

fn expect(b: u8, want: u8) -> Result<(), ChunkError> {
    if b == want {
        Ok(())
    } else {
        Err(ChunkError("missing CRLF"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of the given sizes; returns the body and the unconsumed rest.
    fn feed(input: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut k = 0;
        while pos < input.len() && !d.is_done() {
            let n = pieces[k % pieces.len()].max(1).min(input.len() - pos);
            k += 1;
            let mut piece = input[pos..pos + n].to_vec();
            let p = d.decode(&mut piece)?;
            body.extend_from_slice(&piece[..p.data]);
            pos += p.consumed;
            if p.consumed < n {
                assert!(d.is_done());
            }
        }
        assert!(d.is_done(), "body not finished");
        Ok((body, input[pos..].to_vec()))
    }

    const BODY: &[u8] = b"5;name=value;x\r\nhello\r\n1\r\n \r\nB\r\nworld, here\r\n0\r\nX-Trailer: 1\r\nX-Two: 2\r\n\r\nGET /next";

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let (body, rest) = feed(BODY, &[usize::MAX]).unwrap();
        assert_eq!(body, b"hello world, here");
        assert_eq!(rest, b"GET /next");
    }

    /// The same body split at every byte boundary decodes the same.
    #[test]
    fn every_split_point_gives_the_same_body() {
        for cut in 1..BODY.len() {
            let (body, rest) = feed(BODY, &[cut, usize::MAX]).unwrap();
            assert_eq!(body, b"hello world, here", "cut at {cut}");
            assert_eq!(rest, b"GET /next", "cut at {cut}");
        }
        let (body, _) = feed(BODY, &[1]).unwrap();
        assert_eq!(body, b"hello world, here");
    }

    #[test]
    fn invalid_sizes_and_framing_are_errors() {
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b"0x5\r\n",
            b";ext\r\n",
        ] {
            let mut d = Decoder::new();
            let mut v = bad.to_vec();
            assert!(
                d.decode(&mut v).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn large_sizes_up_to_u64_are_accepted() {
        let mut d = Decoder::new();
        let mut v = b"ffffffffffffffff\r\nabc".to_vec();
        let p = d.decode(&mut v).unwrap();
        assert_eq!((p.data, p.consumed), (3, 21));
        assert_eq!(&v[..3], b"abc");
    }

    #[test]
    fn oversized_extensions_and_trailers_are_refused() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', CHUNK_EXT_BYTES_MAX + 1));
        assert!(Decoder::new().decode(&mut long_ext).is_err());
        let mut long_trailer = b"0\r\n".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', TRAILER_BYTES_MAX + 1));
        assert!(Decoder::new().decode(&mut long_trailer).is_err());
    }

    #[test]
    fn random_bodies_round_trip_under_random_splits() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..300 {
            let mut plain = Vec::new();
            let mut wire = Vec::new();
            for _ in 0..(next() % 6) {
                let len = (next() % 300 + 1) as usize;
                let chunk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                wire.extend_from_slice(format!("{len:x}\r\n").as_bytes());
                wire.extend_from_slice(&chunk);
                wire.extend_from_slice(b"\r\n");
                plain.extend_from_slice(&chunk);
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let pieces = [(next() % 50 + 1) as usize, (next() % 7 + 1) as usize];
            let (body, rest) = feed(&wire, &pieces).unwrap();
            assert_eq!(body, plain);
            assert!(rest.is_empty());
        }
    }
}
