//! A rustls connection (server side, or client side for upstream registries) over a compio `TcpStream`, with compio's owned-buffer
//! `AsyncRead`/`AsyncWrite`.
//!
//! Ciphertext moves through two buffers owned by the stream and lent to the socket for each
//! operation; plaintext is copied straight between rustls and the caller's buffer.
//!
//! Cancellation: a dropped read loses at most the ciphertext buffer it had lent out (the next
//! read allocates another); a dropped write may leave a TLS record half sent, after which the
//! connection is unusable and must be closed, as the server does on any timeout.

use std::io::{self, BufRead, Write};

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use std::ops::DerefMut;

use rustls::{ConnectionCommon, ServerConnection, SideData};

use super::PeerIdentity;

/// Bytes asked of the socket per read: one full TLS record (16 KiB of payload plus header,
/// padding and tag) so a record rarely needs two reads.
const CIPHERTEXT_READ_BYTES: usize = 16 * 1024 + 256;

pub struct TlsStream<C = ServerConnection> {
    tcp: TcpStream,
    conn: C,
    /// Ciphertext read from the socket; `rpos..` is not yet given to rustls.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Ciphertext waiting to go out; empty between operations.
    wbuf: Vec<u8>,
    /// The socket reached EOF; told to rustls once.
    eof: bool,
}

impl<C, S> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    pub(crate) fn new(tcp: TcpStream, conn: C) -> TlsStream<C> {
        TlsStream {
            tcp,
            conn,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            eof: false,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The subject of the verified client certificate; empty without one.
    pub fn peer_identity(&self) -> PeerIdentity {
        match self.conn.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => {
                let (common_names, organizations) = super::identity_from_certificate(leaf);
                PeerIdentity {
                    common_names,
                    organizations,
                }
            }
            None => PeerIdentity::default(),
        }
    }

    pub(crate) async fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            if self.conn.wants_write() {
                self.flush_tls().await?;
            } else if self.pull().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        // TLS 1.3 session tickets, or the server's last flight in TLS 1.2.
        self.flush_tls().await
    }

    /// Gives rustls more ciphertext, reading the socket if none is pending, and processes
    /// it. Returns 0 at the socket's EOF. A protocol error sends its alert, then fails.
    async fn pull(&mut self) -> io::Result<usize> {
        if self.rpos >= self.rbuf.len() && !self.eof {
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            buf.reserve(CIPHERTEXT_READ_BYTES);
            self.rpos = 0;
            let BufResult(res, buf) = self.tcp.read(buf).await;
            self.rbuf = buf;
            if res? == 0 {
                self.eof = true;
            }
        }
        let n = if self.eof && self.rpos >= self.rbuf.len() {
            // Tells rustls the peer is gone: reads then end, cleanly or with UnexpectedEof.
            self.conn.read_tls(&mut io::empty())?
        } else {
            let n = self.conn.read_tls(&mut &self.rbuf[self.rpos..])?;
            self.rpos += n;
            n
        };
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.flush_tls().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        // Post-handshake messages (key updates) may need an answer.
        if self.conn.wants_write() {
            self.flush_tls().await?;
        }
        Ok(n)
    }

    /// Sends everything rustls has queued.
    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut buf = std::mem::take(&mut self.wbuf);
            buf.clear();
            // Writing into a Vec cannot fail; it drains every queued record.
            self.conn.write_tls(&mut buf)?;
            let BufResult(res, buf) = self.tcp.write_all(buf).await;
            self.wbuf = buf;
            self.wbuf.clear();
            res?;
        }
        Ok(())
    }

    /// Copies plaintext into the spare capacity of `buf`; None when rustls has none yet.
    fn take_plaintext<B: IoBufMut>(&mut self, buf: &mut B) -> Option<io::Result<usize>> {
        let spare = <B as IoBufMut>::buf_capacity(buf) - <B as IoBuf>::buf_len(buf);
        let mut reader = self.conn.reader();
        match reader.fill_buf() {
            Ok(chunk) => {
                let n = chunk.len().min(spare);
                // Within the spare capacity, so no reallocation and no error.
                if let Err(e) = <B as IoBufMut>::extend_from_slice(buf, &chunk[..n]) {
                    return Some(Err(io::Error::other(e.to_string())));
                }
                reader.consume(n);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            // The peer closed TCP without close_notify: HTTP framing catches truncation.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<C, S> AsyncRead for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> BufResult<usize, B> {
        if buf.buf_capacity() == buf.buf_len() {
            return BufResult(Ok(0), buf);
        }
        loop {
            if let Some(res) = self.take_plaintext(&mut buf) {
                return BufResult(res, buf);
            }
            match self.pull().await {
                Ok(_) => {}
                Err(e) => return BufResult(Err(e), buf),
            }
        }
    }
}

impl<C, S> AsyncWrite for TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<S>>,
    S: SideData,
{
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        let n = match self.conn.writer().write(buf.as_init()) {
            Ok(n) => n,
            Err(e) => return BufResult(Err(e), buf),
        };
        match self.flush_tls().await {
            Ok(()) => BufResult(Ok(n), buf),
            Err(e) => BufResult(Err(e), buf),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().await
    }

    /// Sends close_notify, then shuts the socket's write side.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_tls().await?;
        self.tcp.shutdown().await
    }
}
