//! `origin serve`: bind, start one worker per core, handle signals, drain on shutdown.

use tracing::Instrument;

use crate::trace;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::app::App;
use crate::config::{Config, Overrides, Source};
use crate::error::StartError;
use crate::http::conn::ConnLimits;
use crate::http::head::Limits;
use crate::registry::cache::ManifestCache;
use crate::registry::Registry;
use crate::reload::{Live, LiveCell, LocalLive};
use crate::server::{self, Shutdown, WorkerSpec};
use crate::service::maintenance::Pass;
use crate::service::{Parts, Service};
use crate::storage::Backend;

/// Runs the registry until SIGTERM/SIGINT; returns the exit code.
pub fn run(config: Config, source: Source, overrides: Overrides) -> i32 {
    crate::log::init(&config.log);
    match start(config, source, overrides) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", crate::error::Chain(&e));
            1
        }
    }
}

fn limits(config: &Config) -> ConnLimits {
    let s = &config.server;
    ConnLimits {
        head: Limits {
            request_line_bytes_max: s.request_line_bytes_max,
            header_bytes_max: s.header_bytes_max,
            header_count_max: s.header_count_max,
        },
        head_read_timeout: s.head_read_timeout,
        keep_alive_timeout: s.keep_alive_timeout,
        body_idle_timeout: s.body_idle_timeout,
        query_timeout: s.query_timeout,
    }
}

/// Raises the soft open-file limit to the hard one: each connection is a file descriptor,
/// and the default soft limit (often 1024) would cap connections far below the configured
/// `connections_per_worker_max`.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn start(config: Config, source: Source, overrides: Overrides) -> Result<i32, StartError> {
    // First, before any thread exists (the argon2 pool starts below), so every thread
    // inherits the mask and only the signal thread sees these signals.
    let signals = block_signals();
    raise_file_limit();
    if config.server.tls.is_none() {
        tracing::warn!("no [server.tls] configured: serving plain HTTP");
    }
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let first = Live::build(&config)?;
    crate::trace::apply(first.tracing.clone(), config.server.io_driver);
    for m in &first.mirrors.namespaces {
        let urls: Vec<String> = m.upstreams.iter().map(|u| u.url.authority()).collect();
        tracing::info!(namespace = %m.namespace, registry = %m.registry, upstreams = ?urls, "mirroring");
    }
    let live = Arc::new(LiveCell::new(first));
    let clock = crate::clock::Clock::from_env();
    let mirrors = Arc::new(crate::mirror::Mirrors::with_clock(clock.clone()));
    let manifests = Arc::new(
        ManifestCache::new(
            config.server.manifest_cache_bytes,
            config.server.manifest_cache_ttl,
        )
        .with_clock(clock.clone()),
    );
    let session_cap = Arc::new(crate::registry::session_cap::SessionCap::default());
    let events = crate::events::Queue::start(config.server.io_driver)?;
    let audit = crate::audit::Log::start()?;
    let pulls = Arc::new(crate::registry::retention::PullTimes::default());
    let space = Arc::new(crate::service::space::SpaceGuard::default());
    let ui_logouts = Arc::new(crate::ui::Logouts::default());
    let store = {
        let rt = server::build_runtime(config.server.io_driver)
            .map_err(|e| StartError::io("cannot start the I/O driver", e))?;
        // The server group-commits its writes through the root's journal (and is the
        // only process that may: a second server on the same root stops here).
        let store = crate::maintenance::open_storage(&config, &rt)?
            .with_write_journal()
            .map_err(|e| StartError::io("storage.fs write journal", e))?;
        // Owning the root, the server inherits the replication claims of the one before it.
        crate::replication::job::own_storage(&store);
        store
    };
    let config = Arc::new(config);
    let workers = config.workers();
    let addr = SocketAddr::new(config.server.bind_address, config.server.port);
    let listeners = server::bind_listeners(addr, workers)
        .map_err(|e| StartError::io(format!("cannot listen on {addr}"), e))?;
    let local = listeners[0]
        .local_addr()
        .map_err(|e| StartError::io("listener address", e))?;
    // One more shutdown slot than workers: the ops listener's accept loop.
    let shutdown = Arc::new(Shutdown::new(workers + 1));
    let mut ops_listener = match config.metrics.listen {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| StartError::io(format!("metrics.listen {addr}"), e))?,
        ),
        None => None,
    };
    if let Some(l) = &ops_listener {
        if let Ok(a) = l.local_addr() {
            tracing::info!("ops endpoints listening on {a}");
        }
    }
    let replication = {
        let (store, settings) = (store.clone(), crate::maintenance::settings(&config));
        let (manifests, clock) = (manifests.clone(), clock.clone());
        let stop = shutdown.clone();
        crate::replication::worker::start(
            config.server.io_driver,
            move || Registry::new(store, settings, manifests).with_clock(clock),
            live.clone(),
            events.clone(),
            move || stop.is_set(),
        )
        .map_err(|e| StartError::io("cannot start the replication worker", e))?
    };
    let pull = {
        let (store, settings) = (store.clone(), crate::maintenance::settings(&config));
        let (manifests, clock) = (manifests.clone(), clock.clone());
        let (live, events, audit) = (live.clone(), events.clone(), audit.clone());
        let (mirrors, pulls, space) = (mirrors.clone(), pulls.clone(), space.clone());
        let (session_cap, limits) = (session_cap.clone(), crate::service::Limits::of(&config));
        let stop = shutdown.clone();
        let parts = move || crate::service::Parts {
            registry: Registry::new(store, settings, manifests)
                .with_session_cap(session_cap)
                .with_clock(clock),
            live: LocalLive::new(live),
            events,
            audit,
            mirrors,
            pulls,
            space,
            limits,
        };
        crate::service::pull::start(config.server.io_driver, parts, move || stop.is_set())
            .map_err(|e| StartError::io("cannot start the pull replication thread", e))?
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, StartError>>();
    let mut handles = Vec::with_capacity(workers);
    for (index, listener) in listeners.into_iter().enumerate() {
        let spec = WorkerSpec {
            index,
            listener,
            limits: limits(&config),
            connections_max: config.server.connections_per_worker_max,
            shutdown: shutdown.clone(),
        };
        let (config, shutdown, ready) = (config.clone(), shutdown.clone(), ready_tx.clone());
        let shared = Shared {
            store: store.clone(),
            manifests: manifests.clone(),
            session_cap: session_cap.clone(),
            live: live.clone(),
            mirrors: mirrors.clone(),
            events: events.clone(),
            audit: audit.clone(),
            pulls: pulls.clone(),
            space: space.clone(),
            ui_logouts: ui_logouts.clone(),
            clock: clock.clone(),
            ops_listener: if index == 0 {
                ops_listener.take()
            } else {
                None
            },
            ops_slot: workers,
        };
        let handle = std::thread::Builder::new()
            .name(format!("origin-worker-{index}"))
            .spawn(move || worker_main(spec, config, shared, shutdown, ready))
            .map_err(|e| StartError::io("cannot start worker thread", e))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut driver = "";
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err(e)) => {
                shutdown.trigger();
                return Err(e);
            }
            Err(_) => return Err(StartError::WorkerExited),
        }
    }
    tracing::info!(
        addr = %local,
        workers,
        io_driver = driver,
        config = %source,
        "origin listening on {local}"
    );
    crate::notify::notify("READY=1");
    let grace = config.server.query_timeout_grace_period;
    let sig_shutdown = shutdown.clone();
    let reloader = Reloader {
        source,
        overrides,
        running: config.clone(),
        live,
    };
    std::thread::Builder::new()
        .name("origin-signals".into())
        .spawn(move || signal_loop(signals, sig_shutdown, grace, reloader))
        .map_err(|e| StartError::io("cannot start signal thread", e))?;
    let mut failed = false;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("worker failed: {e}");
                failed = true;
                shutdown.trigger();
            }
            Err(_) => {
                tracing::error!("worker panicked");
                failed = true;
                shutdown.trigger();
            }
        }
    }
    // Requests are done: what they queued goes out within what is left of the grace period
    // (the signal thread exits the process when it ends).
    events.drain(config.server.query_timeout_grace_period);
    // Jobs in flight keep their claims in storage: another node, or this one after a
    // restart, takes them over when the lease expires.
    drop(replication);
    drop(pull);
    audit.drain(config.server.query_timeout_grace_period);
    tracing::info!("shutdown complete");
    Ok(if failed { 1 } else { 0 })
}

/// What every worker shares.
struct Shared {
    store: Backend,
    manifests: Arc<ManifestCache>,
    session_cap: Arc<crate::registry::session_cap::SessionCap>,
    live: Arc<LiveCell>,
    mirrors: Arc<crate::mirror::Mirrors>,
    events: Arc<crate::events::Queue>,
    audit: Arc<crate::audit::Log>,
    pulls: Arc<crate::registry::retention::PullTimes>,
    space: Arc<crate::service::space::SpaceGuard>,
    /// The web UI's logouts as last read, shared by the workers.
    ui_logouts: Arc<crate::ui::Logouts>,
    clock: crate::clock::Clock,
    /// The separate ops listener, given to worker 0 only.
    ops_listener: Option<std::net::TcpListener>,
    ops_slot: usize,
}

fn worker_main(
    spec: WorkerSpec,
    config: Arc<Config>,
    shared: Shared,
    shutdown: Arc<Shutdown>,
    ready: mpsc::Sender<Result<&'static str, StartError>>,
) -> Result<(), StartError> {
    let rt = match server::build_runtime(config.server.io_driver) {
        Ok(rt) => rt,
        Err(e) => {
            let what = format!("cannot start the {} I/O driver", config.server.io_driver);
            let _ = ready.send(Err(StartError::io(what, e)));
            return Err(StartError::WorkerExited);
        }
    };
    let _ = ready.send(Ok(server::driver_name(rt.driver_type())));
    drop(ready);
    let index = spec.index;
    rt.block_on(async move {
        let settings = crate::maintenance::settings(&config);
        let tls = config.server.tls.as_ref().map(|_| {
            let view = LocalLive::new(shared.live.clone());
            let source: server::TlsSource = Rc::new(move || view.get().tls.clone());
            source
        });
        let svc = Service::new(Parts {
            registry: Registry::new(shared.store, settings, shared.manifests)
                .with_session_cap(shared.session_cap)
                .with_clock(shared.clock),
            live: LocalLive::new(shared.live),
            events: shared.events,
            audit: shared.audit,
            mirrors: shared.mirrors,
            pulls: shared.pulls,
            space: shared.space,
            limits: crate::service::Limits::of(&config),
        });
        let app = Rc::new(App {
            config,
            shutdown,
            svc,
            ui: crate::ui::Sessions::new(shared.ui_logouts),
            ui_files: Default::default(),
        });
        if let Some(listener) = shared.ops_listener {
            let ops = WorkerSpec {
                index: shared.ops_slot,
                listener,
                limits: spec.limits,
                connections_max: 64,
                shutdown: app.shutdown.clone(),
            };
            let handler = Rc::new(crate::ops::OpsApp {
                svc: app.svc.clone(),
                shutdown: app.shutdown.clone(),
            });
            compio::runtime::spawn(async move {
                if let Err(e) = server::run_worker(ops, handler, None).await {
                    tracing::error!(error = %e, "ops listener failed");
                }
            })
            .detach();
        }
        if index == 0 {
            compio::runtime::spawn(housekeeping(app.clone())).detach();
            if app.config.gc.enabled {
                compio::runtime::spawn(collect_garbage(app.clone())).detach();
            }
        }
        let result = server::run_worker(spec, app, tls).await;
        // Pooled upstream connections belong to this runtime: closed while it still runs.
        crate::http::client::close_idle();
        result
    })
    .map_err(StartError::Worker)
}

/// Worker 0 looks for expired upload sessions and stale temp files every quarter of the
/// upload expiry, within these bounds.
const HOUSEKEEPING_INTERVAL_MIN: Duration = Duration::from_secs(1);
const HOUSEKEEPING_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// Temp files younger than this may belong to a write in flight (of this node or of a
/// maintenance command); older ones are a crash's leftovers.
const TEMP_FILES_AGE_MIN: Duration = Duration::from_secs(3600);

/// The sweep for crash leftovers walks the whole tree (a directory read per directory: some
/// 8 million entries at a million blobs), so it runs once after start-up, which is when a
/// crash's leftovers appear, and then this often for those of failed best-effort removals;
/// more often would find nothing new, as a leftover waits out [`TEMP_FILES_AGE_MIN`] anyway.
const TEMP_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// Periodic maintenance on worker 0: upload expiry and crash leftovers.
async fn housekeeping(app: Rc<App>) {
    let mut swept: Option<std::time::Instant> = None;
    let interval = (app.config.uploads.idle_expiry / 4)
        .clamp(HOUSEKEEPING_INTERVAL_MIN, HOUSEKEEPING_INTERVAL_MAX);
    // In the background: upload expiry does not wait for it.
    let counting = app.svc.clone();
    compio::runtime::spawn(async move {
        if let Err(e) = counting.registry.count_for_metrics().await {
            e.log_cause();
            tracing::warn!(error = %e.client_message(), "counting stored bytes failed");
        }
    })
    .detach();
    loop {
        let svc = &app.svc;
        match svc
            .registry
            .expire_uploads()
            .instrument(trace::pass_span("upload_expiry"))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "expired idle upload sessions"),
            Err(e) => {
                e.log_cause();
                tracing::warn!(error = %e.client_message(), "upload expiry failed")
            }
        }
        let live = svc.live.get();
        let pass = Pass {
            registry: &svc.registry,
            live: &live,
            queue: &svc.events,
            audit: &svc.audit,
        };
        match crate::service::maintenance::evict(&pass, false)
            .instrument(trace::pass_span("mirror_eviction"))
            .await
        {
            Ok(evicted) if evicted.is_empty() => {}
            Ok(evicted) => {
                tracing::info!(
                    manifests = evicted.len(),
                    "evicted mirrored manifests not pulled recently"
                );
            }
            Err(e) => {
                e.log_cause();
                tracing::warn!(error = %e.client_message(), "mirror eviction failed")
            }
        }
        drop(live);
        if swept.is_none_or(|at| at.elapsed() >= TEMP_SWEEP_INTERVAL) {
            swept = Some(std::time::Instant::now());
            if let Err(e) = svc.registry.store.cleanup_temp(TEMP_FILES_AGE_MIN).await {
                tracing::warn!(error = %e, "temp file cleanup failed");
            }
        }
        if app.shutdown.is_set() {
            return;
        }
        compio::time::sleep(interval).await;
    }
}

/// Background GC on worker 0: a pass every `gc.interval`, logged and counted.
async fn collect_garbage(app: Rc<App>) {
    let interval = crate::maintenance::gc_interval(&app.config);
    loop {
        compio::time::sleep(interval).await;
        if app.shutdown.is_set() {
            return;
        }
        let svc = &app.svc;
        let live = svc.live.get();
        let pass = Pass {
            registry: &svc.registry,
            live: &live,
            queue: &svc.events,
            audit: &svc.audit,
        };
        if app.config.gc.retention {
            let retention = crate::service::maintenance::retention(&pass, false);
            if let Err(e) = retention.instrument(trace::pass_span("retention")).await {
                e.log_cause();
                tracing::warn!(error = %e.client_message(), "retention pass failed");
            }
        }
        let grace = app.config.gc.grace_period;
        let gc = crate::service::maintenance::gc(&pass, grace, false);
        match gc.instrument(trace::pass_span("gc")).await {
            Ok(r) => {
                tracing::info!(
                    blobs = r.blobs_removed,
                    bytes = r.bytes_removed,
                    examined = r.examined,
                    manifests = r.manifests_removed,
                    duration_ms = r.duration.as_millis() as u64,
                    "gc pass"
                );
            }
            Err(e) => {
                e.log_cause();
                tracing::warn!(error = %e.client_message(), "gc pass failed")
            }
        }
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts afterwards,
/// so only the signal thread receives them (through sigwait).
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls only read/write it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// What SIGHUP needs: where the configuration came from, what is running, where to publish.
struct Reloader {
    source: Source,
    overrides: Overrides,
    running: Arc<Config>,
    live: Arc<LiveCell>,
}

impl Reloader {
    fn reload(&self) {
        match &self.source {
            Source::File(path) => {
                crate::notify::notify("RELOADING=1");
                crate::reload::reload(path, &self.overrides, &self.running, &self.live);
                crate::notify::notify("READY=1");
            }
            Source::Embedded => {
                tracing::warn!(
                    "SIGHUP: running on the embedded default configuration; nothing to reload"
                )
            }
        }
    }
}

fn signal_loop(set: libc::sigset_t, shutdown: Arc<Shutdown>, grace: Duration, reloader: Reloader) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` was filled by block_signals; sigwait writes the signal number.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            libc::SIGHUP => reloader.reload(),
            _ if shutdown.is_set() => {
                tracing::warn!("second signal: exiting now");
                std::process::exit(1);
            }
            _ => {
                tracing::info!(
                    grace_secs = grace.as_secs_f64(),
                    "signal {sig}: draining, no new connections"
                );
                crate::notify::notify("STOPPING=1");
                shutdown.trigger();
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    tracing::warn!(
                        "query_timeout_grace_period over: exiting with requests in flight"
                    );
                    std::process::exit(0);
                });
            }
        }
    }
}
