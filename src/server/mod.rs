//! Per-core workers: one thread, one compio runtime and one SO_REUSEPORT listener each.
//!
//! Knows nothing of OCI: it accepts connections, caps them, and hands each one to the
//! HTTP layer with the application's handler. Shutdown: stop accepting, wake idle
//! connections so they close, let in-flight requests finish.

pub mod shutdown;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use compio::driver::{DriverType, ProactorBuilder};
use compio::net::TcpListener;
use compio::runtime::{Runtime, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::IoDriver;
use crate::http::conn::{serve_connection, ConnLimits, Handler, Peer, Stream};
pub use shutdown::Shutdown;

/// Pending connections the kernel queues per listener before refusing.
const LISTEN_BACKLOG: i32 = 4096;
/// How often a worker at its connection cap looks again for a free slot.
const ACCEPT_PAUSE: Duration = Duration::from_millis(5);

/// Creates `count` listeners on the same address with SO_REUSEPORT. With port 0 the first
/// one picks the port and the rest join it.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<StdListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener: StdListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Builds a runtime with the requested I/O driver.
///
/// An io_uring ring is set up for one thread: the kernel runs its completion work when the
/// worker enters the ring (DEFER_TASKRUN, single issuer) and does not interrupt the worker
/// to announce it (COOP_TASKRUN), which saves the reschedule interrupts a busy worker
/// otherwise takes from every completion. Kernels before 6.1 refuse these flags; the ring
/// is then set up without them.
pub fn build_runtime(driver: IoDriver) -> io::Result<Runtime> {
    let mut proactor = ProactorBuilder::new();
    match driver {
        IoDriver::Auto => {}
        IoDriver::IoUring => {
            proactor.driver_type(DriverType::IoUring);
        }
        IoDriver::Poll => {
            proactor.driver_type(DriverType::Poll);
            return RuntimeBuilder::new().with_proactor(proactor).build();
        }
    }
    let plain = proactor.clone();
    proactor
        .single_issuer(true)
        .defer_taskrun(true)
        .coop_taskrun(true)
        .taskrun_flag(true);
    match RuntimeBuilder::new().with_proactor(proactor).build() {
        // (With `auto`, a refused flag shows as the polling driver: compio falls back.)
        Ok(rt) if rt.driver_type().is_iouring() => Ok(rt),
        _ => RuntimeBuilder::new().with_proactor(plain).build(),
    }
}

pub fn driver_name(t: DriverType) -> &'static str {
    match t {
        DriverType::IoUring => "io_uring",
        DriverType::Poll => "poll",
        DriverType::IOCP => "iocp",
    }
}

/// Where a worker gets the TLS configuration for each new connection.
pub type TlsSource = Rc<dyn Fn() -> Option<(Arc<rustls::ServerConfig>, Duration)>>;

/// What a worker needs; the handler is built on the worker's own thread by `make_handler`.
pub struct WorkerSpec {
    pub index: usize,
    pub listener: StdListener,
    pub limits: ConnLimits,
    pub connections_max: usize,
    pub shutdown: Arc<Shutdown>,
}

/// A live connection's fd and whether it is idle between requests.
type ConnEntry = (RawFd, Rc<Cell<bool>>);

/// Connections of one worker that wait between requests, so shutdown can wake them.
#[derive(Default)]
struct Tracker {
    active: Cell<usize>,
    next_id: Cell<u64>,
    /// Each connection's fd and whether it is idle between requests.
    conns: RefCell<HashMap<u64, ConnEntry>>,
}

/// Runs a worker until shutdown: accept, serve, drain.
/// `tls`, when set, gives the TLS configuration for each new connection (the current one:
/// it may change on reload) and its handshake deadline.
pub async fn run_worker<H: Handler + 'static>(
    spec: WorkerSpec,
    handler: Rc<H>,
    tls: Option<TlsSource>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(spec.listener)?;
    let tracker = Rc::new(Tracker::default());
    let limits = Rc::new(spec.limits);
    loop {
        while tracker.active.get() >= spec.connections_max && !spec.shutdown.is_set() {
            compio::time::sleep(ACCEPT_PAUSE).await;
        }
        let accepted = crate::future::race(listener.accept(), spec.shutdown.wait(spec.index)).await;
        let (stream, peer) = match accepted {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                compio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = tracker.next_id.get();
        tracker.next_id.set(id + 1);
        tracker.active.set(tracker.active.get() + 1);
        let idle = Rc::new(Cell::new(false));
        tracker
            .conns
            .borrow_mut()
            .insert(id, (stream.as_raw_fd(), idle.clone()));
        let (tracker, handler, limits) = (tracker.clone(), handler.clone(), limits.clone());
        let tls = tls.as_ref().and_then(|source| source());
        compio::runtime::spawn(async move {
            let transport = match tls {
                None => Some((Stream::Tcp(stream), None)),
                Some((config, deadline)) => match crate::tls::accept(&config, stream, deadline)
                    .await
                {
                    Ok((s, identity)) => Some((Stream::Tls(Box::new(s)), Some(Rc::new(identity)))),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        None
                    }
                },
            };
            if let Some((stream, certificate)) = transport {
                let peer = Peer {
                    addr: peer,
                    certificate,
                };
                serve_connection(&*handler, stream, peer, &limits, &idle).await;
            }
            tracker.conns.borrow_mut().remove(&id);
            tracker.active.set(tracker.active.get() - 1);
        })
        .detach();
    }
    drop(listener);
    // Idle keep-alive connections sit in a read: shutting down their read side makes that
    // read return 0 so they close now; busy ones see `draining()` after their response.
    for (fd, idle) in tracker.conns.borrow().values() {
        if idle.get() {
            // SAFETY: the fd is still open and still this connection's. A connection task
            // drops its stream (closing the fd) when `serve_connection` or the TLS accept
            // returns, and removes its entry right after with no await in between: on this
            // thread nothing runs between the two, so the map never holds a closed fd (nor
            // one reused by another open). shutdown(2) does not invalidate the fd.
            unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
        }
    }
    while tracker.active.get() > 0 {
        compio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
