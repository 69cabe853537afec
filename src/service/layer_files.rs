//! The files in a layer, for the web UI: a tar, tar+gzip or tar+zstd blob read from storage in chunks
//! and listed as it streams (nothing is unpacked to disk, nothing is kept but the list), at
//! a bounded cost: at most [`ENTRIES_MAX`] entries, [`READ_BYTES_MAX`] bytes read and
//! [`UNPACKED_BYTES_MAX`] bytes inflated; a list cut short says why. Not a pull: no event,
//! no pull record.

use std::io::Write;

use compio::buf::BufResult;

use super::Service;
use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName};
use crate::storage::BlobReader;

/// Entries listed at most: enough for a base image's layer (Debian's has ~9,000 files).
pub const ENTRIES_MAX: usize = 20_000;
/// Bytes of the stored blob read at most for one listing.
pub const READ_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Bytes of tar inflated from gzip or zstd at most (a compression bomb stops here).
pub const UNPACKED_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Largest zstd window accepted (2^23 = 8 MiB: zstd's levels 1-19 stay within it; a
/// `--long` or `--ultra` frame asks for more memory than a listing may take, and is not
/// listed).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// One storage read.
const CHUNK_BYTES: usize = 256 * 1024;
/// Longest path, link target or extended header kept.
const NAME_BYTES_MAX: usize = 64 * 1024;
const BLOCK: usize = 512;

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub path: String,
    /// `file`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits, octal as `ls` shows them (`0755`).
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What a listing found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    /// `tar`, `tar+gzip` or `tar+zstd`.
    pub format: &'static str,
    pub entries: Vec<Entry>,
    /// Why the list stops before the end of the archive, when it does.
    pub cut: Option<String>,
    #[serde(rename = "bytesRead")]
    pub bytes_read: u64,
}

/// The files of blob `digest` of repository `name`; `None` when the repository has no such
/// blob.
pub async fn list(svc: &Service, name: &RepoName, digest: &Digest) -> Result<Option<Listing>> {
    let Some((format, lister, cut, bytes_read)) =
        scan(svc, name, digest, TarLister::default()).await?
    else {
        return Ok(None);
    };
    Ok(Some(Listing {
        format,
        entries: lister.entries,
        cut,
        bytes_read,
    }))
}

/// Largest file of a layer that can be downloaded on its own.
pub const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// One regular file of a layer, looked for as the layer streams.
pub enum File {
    Bytes(Vec<u8>),
    /// It is there, and larger than [`FILE_BYTES_MAX`].
    TooLarge(u64),
    /// Not a regular file of the layer (within the listing's caps).
    Absent,
}

/// The content of regular file `path` of layer `digest`; `None` when the repository has no
/// such blob.
pub async fn file(
    svc: &Service,
    name: &RepoName,
    digest: &Digest,
    path: &str,
) -> Result<Option<File>> {
    let lister = TarLister {
        want: Some(path.to_string()),
        ..TarLister::default()
    };
    let Some((_, lister, _, _)) = scan(svc, name, digest, lister).await? else {
        return Ok(None);
    };
    Ok(Some(match (lister.captured, lister.too_large) {
        (Some(bytes), _) if lister.done => File::Bytes(bytes),
        (_, Some(size)) => File::TooLarge(size),
        _ => File::Absent,
    }))
}

/// Streams the blob through `lister` (and gzip first when it is gzip) until the lister is
/// done or a cap is reached: the format, the lister, why it stopped early, bytes read.
async fn scan(
    svc: &Service,
    name: &RepoName,
    digest: &Digest,
    lister: TarLister,
) -> Result<Option<(&'static str, TarLister, Option<String>, u64)>> {
    let Some(reader) = svc.registry.open_blob(name, digest).await? else {
        return Ok(None);
    };
    let size = reader.size();
    let mut offset = 0u64;
    let mut lister = Some(lister);
    let mut sink: Option<Sink> = None;
    let mut cut = None;
    while offset < size {
        if offset >= READ_BYTES_MAX {
            cut = Some(format!("only the first {READ_BYTES_MAX} bytes are read"));
            break;
        }
        let want = CHUNK_BYTES.min((size - offset) as usize);
        let BufResult(n, buf) = reader.read_at(Vec::with_capacity(want), offset).await;
        let n = n.map_err(|e| Error::internal(format!("reading a layer: {e}")))?;
        if n == 0 {
            break;
        }
        offset += n as u64;
        let s = sink
            .get_or_insert_with(|| Sink::for_start(&buf[..n], lister.take().unwrap_or_default()));
        if let Err(why) = s.feed(&buf[..n]) {
            cut = Some(why.to_string());
            break;
        }
        if s.lister().done {
            break;
        }
    }
    let Some(sink) = sink else {
        let cut = Some("the layer is empty".to_string());
        return Ok(Some(("tar", lister.unwrap_or_default(), cut, 0)));
    };
    let format = sink.format();
    let mut lister = sink.into_lister();
    if cut.is_none() {
        cut = lister.cut.take();
    }
    if cut.is_none() && !lister.done && !lister.entries.is_empty() {
        cut = Some("the archive ends early".into());
    }
    Ok(Some((format, lister, cut, offset)))
}

/// Why a layer's files are not listed (to its end), as the page says it.
enum Unlisted {
    /// A compression or format the lister does not read.
    Format(&'static str),
    DamagedGzip(std::io::Error),
    DamagedZstd(std::io::Error),
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlisted::Format(format) => write!(f, "{format} layers are not listed"),
            Unlisted::DamagedGzip(e) => write!(f, "the gzip stream is damaged: {e}"),
            Unlisted::DamagedZstd(e) => write!(f, "the zstd stream cannot be read: {e}"),
        }
    }
}

/// Where blob bytes go: straight to the tar lister, or through gzip or zstd first.
enum Sink {
    Tar(TarLister),
    Gzip(Box<flate2::write::MultiGzDecoder<TarLister>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, TarLister>>),
    /// Anything that is not a tar: nothing to list.
    Other(TarLister, &'static str),
}

impl Sink {
    fn for_start(first: &[u8], lister: TarLister) -> Sink {
        match first {
            [0x1f, 0x8b, ..] => Sink::Gzip(Box::new(flate2::write::MultiGzDecoder::new(lister))),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Self::zstd(lister),
            _ => Sink::Tar(lister),
        }
    }

    fn zstd(lister: TarLister) -> Sink {
        // The decoder's only failure is an allocation libzstd could not make.
        match zstd::stream::write::Decoder::new(lister) {
            Ok(mut d) => match d.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                Ok(()) => Sink::Zstd(Box::new(d)),
                Err(_) => Sink::Other(d.into_inner(), "zstd"),
            },
            Err(_) => Sink::Other(TarLister::default(), "zstd"),
        }
    }

    fn format(&self) -> &'static str {
        match self {
            Sink::Tar(_) => "tar",
            Sink::Gzip(_) => "tar+gzip",
            Sink::Zstd(_) => "tar+zstd",
            Sink::Other(_, f) => f,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> std::result::Result<(), Unlisted> {
        match self {
            Sink::Tar(t) => {
                t.feed(bytes);
                Ok(())
            }
            Sink::Gzip(g) => {
                if g.get_ref().done {
                    return Ok(());
                }
                g.write_all(bytes).map_err(Unlisted::DamagedGzip)
            }
            Sink::Zstd(z) => {
                if z.get_ref().done {
                    return Ok(());
                }
                z.write_all(bytes).map_err(Unlisted::DamagedZstd)
            }
            Sink::Other(_, f) => Err(Unlisted::Format(f)),
        }
    }

    fn lister(&self) -> &TarLister {
        match self {
            Sink::Tar(t) | Sink::Other(t, _) => t,
            Sink::Gzip(g) => g.get_ref(),
            Sink::Zstd(z) => z.get_ref(),
        }
    }

    fn into_lister(self) -> TarLister {
        match self {
            Sink::Tar(t) | Sink::Other(t, _) => t,
            Sink::Gzip(g) => {
                let mut g = *g;
                // What is still buffered in the decoder goes through first.
                let _ = g.try_finish();
                match g.finish() {
                    Ok(t) => t,
                    Err(_) => TarLister {
                        cut: Some("the gzip stream is damaged".into()),
                        ..TarLister::default()
                    },
                }
            }
            Sink::Zstd(z) => {
                let mut z = *z;
                // What is still buffered in the decoder goes through first.
                let _ = z.flush();
                z.into_inner()
            }
        }
    }
}

/// What the lister is in the middle of.
#[derive(Default)]
enum State {
    /// Collecting a 512-byte header.
    #[default]
    Header,
    /// Skipping this many bytes (an entry's data and padding).
    Skip(u64),
    /// Collecting an extended header's data (`L`, `K` or `x`), then skipping `pad`.
    Collect { kind: u8, left: u64, pad: u64 },
    /// Keeping the content of the file looked for.
    Capture { left: u64 },
}

/// A tar parser fed in pieces of any size: keeps one header at a time and the entries.
#[derive(Default)]
pub struct TarLister {
    state: State,
    block: Vec<u8>,
    data: Vec<u8>,
    long_name: Option<String>,
    long_link: Option<String>,
    pax_path: Option<String>,
    pax_link: Option<String>,
    pax_size: Option<u64>,
    pub entries: Vec<Entry>,
    /// The end of the archive (or a reason to stop) was reached.
    pub done: bool,
    pub cut: Option<String>,
    unpacked: u64,
    /// The path of the regular file to keep, when one is looked for.
    want: Option<String>,
    captured: Option<Vec<u8>>,
    too_large: Option<u64>,
}

impl Write for TarLister {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TarLister {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        self.unpacked += bytes.len() as u64;
        if self.unpacked > UNPACKED_BYTES_MAX && !self.done {
            self.stop(format!(
                "only the first {UNPACKED_BYTES_MAX} bytes of tar are read"
            ));
        }
        while !bytes.is_empty() && !self.done {
            match &mut self.state {
                State::Skip(n) => {
                    let k = (*n).min(bytes.len() as u64) as usize;
                    *n -= k as u64;
                    bytes = &bytes[k..];
                    if *n == 0 {
                        self.state = State::Header;
                    }
                }
                State::Collect { kind, left, pad } => {
                    let k = (*left).min(bytes.len() as u64) as usize;
                    if self.data.len() + k <= NAME_BYTES_MAX {
                        self.data.extend_from_slice(&bytes[..k]);
                    }
                    *left -= k as u64;
                    bytes = &bytes[k..];
                    if *left == 0 {
                        let (kind, pad) = (*kind, *pad);
                        self.extended(kind);
                        self.state = State::Skip(pad);
                        if pad == 0 {
                            self.state = State::Header;
                        }
                    }
                }
                State::Capture { left } => {
                    let k = (*left).min(bytes.len() as u64) as usize;
                    *left -= k as u64;
                    let done = *left == 0;
                    if let Some(c) = &mut self.captured {
                        c.extend_from_slice(&bytes[..k]);
                    }
                    bytes = &bytes[k..];
                    self.done = done;
                }
                State::Header => {
                    let k = (BLOCK - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..k]);
                    bytes = &bytes[k..];
                    if self.block.len() == BLOCK {
                        let block = std::mem::take(&mut self.block);
                        self.header(&block);
                    }
                }
            }
        }
    }

    fn stop(&mut self, why: String) {
        self.cut = Some(why);
        self.done = true;
    }

    fn header(&mut self, h: &[u8]) {
        if h.iter().all(|&b| b == 0) {
            self.done = true;
            return;
        }
        let stored: u64 = octal(&h[148..156]);
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        if stored != sum {
            return self.stop("not a tar archive (or damaged here)".into());
        }
        let size = self.pax_size.take().unwrap_or_else(|| number(&h[124..136]));
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        let kind = h[156];
        if matches!(kind, b'L' | b'K' | b'x') {
            self.data.clear();
            self.state = match size {
                0 => State::Header,
                _ => State::Collect {
                    kind,
                    left: size,
                    pad: padded - size,
                },
            };
            return;
        }
        if kind == b'g' {
            self.state = State::Skip(padded);
            return;
        }
        let mut path = text(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = text(&h[345..500]);
            if !prefix.is_empty() {
                path = format!("{prefix}/{path}");
            }
        }
        let path = self
            .pax_path
            .take()
            .or(self.long_name.take())
            .unwrap_or(path);
        let link = self
            .pax_link
            .take()
            .or(self.long_link.take())
            .unwrap_or_else(|| text(&h[157..257]));
        let kind = match kind {
            b'0' | 0 | b'7' => "file",
            b'1' => "hardlink",
            b'2' => "symlink",
            b'3' => "char",
            b'4' => "block",
            b'5' => "dir",
            b'6' => "fifo",
            _ => "other",
        };
        if kind == "file" && self.want.as_deref() == Some(path.as_str()) {
            if size > FILE_BYTES_MAX {
                self.too_large = Some(size);
                self.done = true;
                return;
            }
            self.captured = Some(Vec::with_capacity(size as usize));
            self.done = size == 0;
            self.state = State::Capture { left: size };
            return;
        }
        if self.entries.len() >= ENTRIES_MAX {
            return self.stop(format!("only the first {ENTRIES_MAX} entries are listed"));
        }
        self.entries.push(Entry {
            path,
            kind,
            size: if kind == "file" { size } else { 0 },
            mode: format!("{:04o}", octal(&h[100..108]) & 0o7777),
            link: matches!(kind, "symlink" | "hardlink").then_some(link),
        });
        // Hard links and other non-files carry no data whatever their size field says
        // (POSIX), except the data a `size` says is there for files.
        let skip = if kind == "file" { padded } else { 0 };
        self.state = match skip {
            0 => State::Header,
            n => State::Skip(n),
        };
    }

    /// The data of a GNU long name (`L`), long link (`K`) or PAX header (`x`).
    fn extended(&mut self, kind: u8) {
        let data = std::mem::take(&mut self.data);
        match kind {
            b'L' => self.long_name = Some(text(&data)),
            b'K' => self.long_link = Some(text(&data)),
            _ => {
                // Records: "<len> <key>=<value>\n".
                let mut rest = &data[..];
                while let Some(sp) = rest.iter().position(|&b| b == b' ') {
                    let len: usize = match std::str::from_utf8(&rest[..sp])
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        Some(l) if l > sp && l <= rest.len() => l,
                        _ => break,
                    };
                    let record = &rest[sp + 1..len];
                    let record = record.strip_suffix(b"\n").unwrap_or(record);
                    if let Some(eq) = record.iter().position(|&b| b == b'=') {
                        let (key, value) = (&record[..eq], &record[eq + 1..]);
                        match key {
                            b"path" => self.pax_path = Some(text(value)),
                            b"linkpath" => self.pax_link = Some(text(value)),
                            b"size" => {
                                self.pax_size =
                                    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok())
                            }
                            _ => {}
                        }
                    }
                    rest = &rest[len..];
                }
            }
        }
    }
}

/// A NUL-terminated field as text (lossy: names are bytes in tar).
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal field (spaces and NULs around it ignored).
fn octal(field: &[u8]) -> u64 {
    field
        .iter()
        .skip_while(|b| **b == b' ' || **b == 0)
        .take_while(|b| (b'0'..=b'7').contains(*b))
        .fold(0u64, |n, b| {
            n.saturating_mul(8).saturating_add((b - b'0') as u64)
        })
}

/// A size field: octal, or GNU base-256 when its first byte has the high bit set.
fn number(field: &[u8]) -> u64 {
    match field.first() {
        Some(b) if b & 0x80 != 0 => field[1..].iter().fold((*b & 0x7f) as u64, |n, &b| {
            n.saturating_mul(256).saturating_add(b as u64)
        }),
        _ => octal(field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: u8, size: u64, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000755");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    /// Files, directories, links and a GNU long name, fed one byte at a time, are listed
    /// with their sizes, modes and targets; bytes that are not tar stop the list with why.
    #[test]
    fn lists_a_tar_fed_in_any_pieces() {
        let long = "d/".repeat(80) + "f";
        let mut tar = header("etc/", b'5', 0, "");
        tar.extend(header("etc/hosts", b'0', 5, ""));
        tar.extend(b"abcde".iter().copied().chain([0u8; BLOCK - 5]));
        tar.extend(header("bin/sh", b'2', 0, "busybox"));
        tar.extend(header("././@LongLink", b'L', long.len() as u64 + 1, ""));
        let mut data = long.clone().into_bytes();
        data.push(0);
        data.resize(BLOCK, 0);
        tar.extend(data);
        tar.extend(header("trunc", b'0', 0, ""));
        tar.extend([0u8; 2 * BLOCK]);
        let mut t = TarLister::default();
        for b in &tar {
            t.feed(std::slice::from_ref(b));
        }
        assert!(t.done && t.cut.is_none());
        let got: Vec<_> = t
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind, e.size, e.link.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("etc/", "dir", 0, None),
                ("etc/hosts", "file", 5, None),
                ("bin/sh", "symlink", 0, Some("busybox")),
                (long.as_str(), "file", 0, None),
            ]
        );
        assert_eq!(t.entries[0].mode, "0755");
        let mut junk = TarLister::default();
        junk.feed(&[7u8; 2048]);
        assert!(junk.done && junk.entries.is_empty() && junk.cut.is_some());
    }
}
