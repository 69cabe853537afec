//! Kept-alive connections: a small pool per worker thread.

use std::io;

use compio::buf::{BufResult, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use crate::tls::TlsStream;

use super::{IDLE_CONNECTIONS_MAX, IDLE_KEEP};

pub(super) enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<rustls::ClientConnection>>),
}

/// Which connections may serve a request: same scheme, host and port, and the same TLS
/// settings (upstreams may trust different CAs).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct PoolKey {
    pub(super) https: bool,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: usize,
}

pub(super) struct Idle {
    pub(super) key: PoolKey,
    pub(super) conn: Conn,
    pub(super) since: std::time::Instant,
}

thread_local! {
    static IDLE: std::cell::RefCell<Vec<Idle>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most recently idled live connection for `key`, if any. Expired ones are closed.
pub(super) fn take_idle(key: &PoolKey) -> Option<Conn> {
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|i| i.since.elapsed() < IDLE_KEEP);
        while let Some(at) = idle.iter().rposition(|i| &i.key == key) {
            let i = idle.remove(at);
            if i.conn.quiet() {
                return Some(i.conn);
            }
        }
        None
    })
    .ok()
    .flatten()
}

/// Closes this thread's idle upstream connections (before its runtime stops).
pub fn close_idle() {
    let _ = IDLE.try_with(|idle| idle.borrow_mut().clear());
}

pub(super) fn put_idle(key: PoolKey, conn: Conn) {
    // Not during thread teardown (the pool is gone, and so may be the runtime).
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() >= IDLE_CONNECTIONS_MAX {
            idle.remove(0);
        }
        idle.push(Idle {
            key,
            conn,
            since: std::time::Instant::now(),
        });
    });
}

impl Conn {
    /// An idle connection is usable when the upstream has sent nothing since the last
    /// response: no end of stream, no error, no stray bytes (a TLS close_notify included).
    pub(super) fn quiet(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Tls(s) => s.tcp().as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a live local; the descriptor is open (owned by self).
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    pub(super) async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    pub(super) async fn write_all<B: IoBuf>(&mut self, buf: B) -> BufResult<(), B> {
        match self {
            Conn::Tcp(s) => s.write_all(buf).await,
            Conn::Tls(s) => s.write_all(buf).await,
        }
    }
}
