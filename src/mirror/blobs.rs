//! Blobs through the cache: one fetch per digest, streamed to every waiting client while it
//! is verified and committed.

use super::*;

/// HEAD of a blob that is not stored: asks the upstream for its size.
pub async fn blob_size_upstream(ns: &MirrorNs, name: &RepoName, digest: &Digest) -> Result<u64> {
    let upstream_name = ns.upstream_name(name.as_str());
    let r = first_found(ns, "HEAD", upstream_name, &format!("blobs/{digest}"), &[])
        .await?
        .ok_or_else(|| Error::BlobUnknown("blob unknown to registry".into()))?;
    r.header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| upstream_error("blob HEAD without Content-Length"))
}

impl Mirrors {
    /// True while a fetch of `digest` for repository `name` runs (until it is linked).
    pub fn fetching_for(&self, name: &RepoName, digest: &Digest) -> bool {
        lock(&self.fetches)
            .get(digest)
            .is_some_and(|f| f.repo == *name)
    }
}

/// A blob arriving from upstream, served as it grows: the file the fetch writes, its
/// progress, and the blob's whole size.
pub struct Fetching {
    pub file: compio::fs::File,
    pub progress: Arc<Progress>,
    pub total: u64,
}

/// Serves a blob that is not stored yet: joins the fetch in flight or starts one, then
/// follows the file as it grows.
///
/// On object storage there is no file to follow: the fetch streams into a multipart upload
/// and this waits until the blob is committed and linked, then answers `None`: serve it as
/// any stored blob (streamed, or redirected to the bucket). The wait is bounded by pauses in
/// the fetch (`body_idle_timeout`), not by its length: `moving` is called as bytes arrive, so
/// the request's deadline lets a large layer that keeps coming finish.
pub async fn serve_blob<H: Host>(
    host: &H,
    ns: &Arc<MirrorNs>,
    name: &RepoName,
    digest: &Digest,
    moving: &dyn Fn(),
) -> Result<Option<Fetching>> {
    let mirrors = host.mirrors();
    let (fetch, confirm) = {
        let mut fetches = lock(&mirrors.fetches);
        match fetches.get(digest) {
            Some(f) => {
                if Arc::strong_count(&f.progress) > WAITERS_MAX {
                    return Err(busy("too many clients waiting for this blob"));
                }
                (f.clone(), f.repo != *name)
            }
            None => {
                let cap = if host.registry().store.upload_writers_hold_a_part_in_memory() {
                    FETCHES_MAX_S3
                } else {
                    FETCHES_MAX
                };
                if fetches.len() >= cap {
                    return Err(busy("too many upstream fetches in flight"));
                }
                let f = Arc::new(Fetch {
                    repo: name.clone(),
                    progress: Arc::default(),
                    file: std::sync::OnceLock::new(),
                });
                fetches.insert(digest.clone(), f.clone());
                let owner = host
                    .handle()
                    .ok_or_else(|| Error::internal("worker gone"))?;
                // The fetch keeps this request's settings to its end, whatever a reload
                // publishes meanwhile.
                // In the trace of the request that started it (it may end after that one).
                let fetch = run_fetch(owner, ns.clone(), name.clone(), digest.clone(), f.clone());
                let span =
                    crate::span!("mirror.fetch_blob", otel.kind = "client", digest = %digest);
                compio::runtime::spawn(tracing::Instrument::instrument(fetch, span)).detach();
                (f, false)
            }
        }
    };
    if confirm {
        // In flight for another repository: this one must have it upstream too.
        blob_size_upstream(ns, name, digest).await?;
    }
    let progress = fetch.progress.clone();
    let idle = host.body_idle_timeout();
    if !host.registry().store.blob_reads_can_follow_a_growing_file() {
        let total = match compio::time::timeout(idle, progress.wait_start()).await {
            Ok(Ok(total)) => total,
            Ok(Err(f)) => return Err(failure_error(f)),
            Err(_) => return Err(upstream_error("no answer in time")),
        };
        // Readable bytes stay below `total` until the fetch is committed (see `Progress`).
        let mut pos = 0;
        loop {
            pos = match compio::time::timeout(idle, progress.wait_beyond(pos)).await {
                Ok(Ok(n)) if n >= total => return Ok(None),
                Ok(Ok(n)) => n,
                Ok(Err(f)) => return Err(failure_error(f)),
                Err(_) => return Err(busy("the blob is still being fetched from upstream")),
            };
            moving();
        }
    }
    let total = match compio::time::timeout(idle, progress.wait_start()).await {
        Ok(Ok(total)) => total,
        Ok(Err(f)) => return Err(failure_error(f)),
        Err(_) => return Err(upstream_error("no answer in time")),
    };
    let file = fetch
        .file
        .get()
        .ok_or_else(|| Error::internal("fetch started without a file"))?
        .try_clone()
        .map_err(|e| Error::internal(e.to_string()))?;
    let file = {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor was just duplicated and is owned by nobody else.
        unsafe { compio::fs::File::from_raw_fd(file.into_raw_fd()) }
    };
    Ok(Some(Fetching {
        file,
        progress,
        total,
    }))
}

/// Fetches a blob into storage and links it to `name`, outside any client's request (a
/// replication pull): the same streaming, verifying write path as a cache fill, at the
/// memory of three pooled buffers. Returns the bytes fetched (0 when the blob was stored
/// already and only linked).
pub async fn fetch_stored<H: Host>(
    host: &H,
    ns: &MirrorNs,
    name: &RepoName,
    digest: &Digest,
) -> Result<u64> {
    let fetch = Fetch {
        repo: name.clone(),
        progress: Arc::default(),
        file: std::sync::OnceLock::new(),
    };
    // Nobody follows this fetch's progress: it is not in the table of fetches in flight.
    fetch_blob(host, ns, name, digest, &fetch)
        .await
        .map_err(failure_error)
}

fn busy(message: &str) -> Error {
    Error::Busy(message.into())
}

fn failure_error(f: Failure) -> Error {
    if f.kind == FailureKind::NotFound {
        Error::BlobUnknown("blob unknown to registry".into())
    } else {
        upstream_error(f.message)
    }
}

/// The fetch task: runs detached on the worker that started it, so it finishes for the
/// other clients even when the first one goes away.
async fn run_fetch<H: Host>(
    host: Rc<H>,
    ns: Arc<MirrorNs>,
    name: RepoName,
    digest: Digest,
    fetch: Arc<Fetch>,
) {
    let started = Instant::now();
    let result = fetch_blob(&*host, &ns, &name, &digest, &fetch).await;
    match &result {
        Ok(size) => {
            METRICS.mirror_blob_fetches.fetch_add(1, Relaxed);
            METRICS.mirror_bytes_fetched.fetch_add(*size, Relaxed);
            tracing::info!(repository = %name, digest = %digest, bytes = size,
                duration_ms = started.elapsed().as_millis() as u64, "blob fetched from upstream");
        }
        Err(f) => {
            METRICS.mirror_fetch_failures.fetch_add(1, Relaxed);
            tracing::warn!(repository = %name, digest = %digest, kind = ?f.kind, error = %f.message,
                "blob fetch from upstream failed");
        }
    }
    fetch.progress.finish(result.map(|_| ()));
    let mut fetches = lock(&host.mirrors().fetches);
    if fetches.get(&digest).is_some_and(|f| Arc::ptr_eq(f, &fetch)) {
        fetches.remove(&digest);
    }
}

fn dup_std(f: &compio::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(f.as_fd().try_clone_to_owned()?))
}

fn failed(kind: FailureKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// Streams the upstream body into an upload session and commits it once verified.
async fn fetch_blob<H: Host>(
    host: &H,
    ns: &MirrorNs,
    name: &RepoName,
    digest: &Digest,
    fetch: &Fetch,
) -> std::result::Result<u64, Failure> {
    let upstream_name = ns.upstream_name(name.as_str());
    let reg = host.registry();
    let internal = |e: Error| {
        e.log_cause();
        failed(FailureKind::Internal, e.client_message())
    };
    // Committed meanwhile (a request that looked just before another fetch finished)?
    // Linked here only if the upstream has it in this repository. Held first, so a blob
    // found stored stays stored (see registry/gc.rs).
    reg.hold_blob(digest).await.map_err(internal)?;
    // Clients follow the upload's file on the fs backend; on object storage they wait for
    // the commit (see `serve_blob`).
    let growing = reg.store.blob_reads_can_follow_a_growing_file();
    if let Some(size) = reg.blob_size(digest).await.map_err(internal)? {
        blob_size_upstream(ns, name, digest).await.map_err(|e| {
            e.log_cause();
            let kind = if e.is_not_found() {
                FailureKind::NotFound
            } else {
                FailureKind::Source
            };
            failed(kind, e.client_message())
        })?;
        let mut total = size;
        if growing {
            let (stored, size) = reg
                .open_stored_blob(digest)
                .await
                .map_err(internal)?
                .ok_or_else(|| failed(FailureKind::Internal, "stored blob vanished"))?;
            total = size;
            let file =
                dup_std(&stored).map_err(|e| failed(FailureKind::Internal, e.to_string()))?;
            let _ = fetch.file.set(file);
        }
        reg.link_blob(name, digest).await.map_err(internal)?;
        fetch.progress.start(total);
        fetch.progress.advance(total);
        return Ok(0);
    }
    let mut resp = None;
    let mut last = failed(FailureKind::NotFound, "blob unknown upstream");
    for up in &ns.upstreams {
        match up
            .request("GET", upstream_name, &format!("blobs/{digest}"), &[])
            .await
        {
            Ok(r) if r.status == 200 => {
                resp = Some(r);
                break;
            }
            Ok(r) if r.status == 404 => {}
            Ok(r) => {
                last = failed(
                    FailureKind::Source,
                    format!("{} answered {}", up.url.authority(), r.status),
                )
            }
            Err(e) => last = failed(FailureKind::Source, e.to_string()),
        }
    }
    let mut resp = resp.ok_or(last)?;
    let id = reg.upload_start(name).await.map_err(internal)?;
    let result = async {
        let mut session = reg
            .upload_open_or_unknown(name, &id)
            .await
            .map_err(internal)?;
        if growing {
            let data = reg
                .upload_data_file(name, &id)
                .await
                .map_err(internal)?
                .ok_or_else(|| failed(FailureKind::Internal, "upload data vanished"))?;
            let file = dup_std(&data).map_err(|e| failed(FailureKind::Internal, e.to_string()))?;
            let _ = fetch.file.set(file);
        }
        let declared = resp.content_length();
        if let Some(total) = declared {
            fetch.progress.start(total);
        }
        if session.hasher.algorithm() != digest.algorithm() {
            session.hasher = crate::oci::Hasher::new(digest.algorithm());
        }
        // Three buffers in a pipeline: while one is written to the file (by the kernel, off
        // this thread), the next is hashed here and the one after fills from the upstream.
        let mut hasher = Some(std::mem::replace(
            &mut session.hasher,
            crate::oci::Hasher::new(digest.algorithm()),
        ));
        let pool = host.mirrors().hash_pool();
        let mut free: Vec<Vec<u8>> = (0..3).map(|_| host.buffers().take()).collect();
        let mut to_hash: Option<Vec<u8>> = None;
        let mut to_write: Option<Vec<u8>> = None;
        let mut ended = false;
        let mut received = 0u64;
        let mut written = 0u64;
        while !(ended && to_hash.is_none() && to_write.is_none()) {
            let fill_buf = if ended { None } else { free.pop() };
            let write_buf = to_write.take();
            let writing = async {
                match write_buf {
                    Some(b) => {
                        let (r, b) = reg.upload_write(&mut session, b).await;
                        Some((r, b))
                    }
                    None => None,
                }
            };
            let filling = async {
                match fill_buf {
                    Some(b) => Some(fill(&mut resp, b).await),
                    None => None,
                }
            };
            let hashing = async {
                match (to_hash.take(), hasher.take()) {
                    (Some(b), Some(h)) => Some(hash_update(pool, h, b).await),
                    (_, h) => {
                        hasher = h;
                        None
                    }
                }
            };
            let ((wrote, filled), hashed) =
                crate::future::join(crate::future::join(writing, filling), hashing).await;
            if let Some((r, b)) = wrote {
                r.map_err(internal)?;
                written += b.len() as u64;
                fetch.progress.advance(written);
                free.push(b);
            }
            if let Some(done) = hashed {
                let (h, b) = done.ok_or_else(|| failed(FailureKind::Internal, "hashing failed"))?;
                hasher = Some(h);
                to_write = Some(b);
            }
            if let Some((r, end)) = filled {
                let b =
                    r.map_err(|e| failed(FailureKind::Source, format!("upstream body: {e}")))?;
                ended = end;
                received += b.len() as u64;
                if declared.is_some_and(|t| received > t) {
                    return Err(failed(
                        FailureKind::Source,
                        "upstream sent more than it declared",
                    ));
                }
                if b.is_empty() {
                    free.push(b);
                } else {
                    to_hash = Some(b);
                }
            }
        }
        for b in free {
            host.buffers().give(b);
        }
        // Read to its end: the connection can serve the next request during the commit.
        resp.release();
        session.hasher = hasher.ok_or_else(|| failed(FailureKind::Internal, "hashing failed"))?;
        if declared.is_some_and(|t| written != t) {
            return Err(failed(
                FailureKind::Source,
                "upstream body shorter than declared",
            ));
        }
        // Verified: clients may have the last byte now, while the commit makes it durable.
        let actual = session.hasher.clone().finalize();
        if &actual != digest {
            return Err(failed(
                FailureKind::Source,
                format!("upstream content has digest {actual}, not {digest}"),
            ));
        }
        if declared.is_none() {
            fetch.progress.start(written);
        }
        fetch.progress.advance(written);
        if growing {
            fetch.progress.finish(Ok(()));
        }
        reg.upload_finish(session, digest).await.map_err(|e| {
            e.log_cause();
            failed(
                FailureKind::Source,
                format!("upstream content rejected: {}", e.client_message()),
            )
        })?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = reg.upload_cancel(name, &id).await;
    }
    result
}

/// Hashing jobs queued at once: each fetch has at most one outstanding.
const HASH_QUEUE_MAX: usize = FETCHES_MAX;

impl Mirrors {
    /// The hashing threads, one per core: a fetch hashes one buffer there while the worker
    /// receives the next and writes the previous, so the hash does not hold up the sockets.
    /// None if the threads could not be started (fetches then hash on the worker).
    fn hash_pool(&self) -> Option<&crate::pool::Pool> {
        self.hash_pool
            .get_or_init(|| {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                match crate::pool::Pool::new("origin-hash", threads, HASH_QUEUE_MAX) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start hashing threads; hashing on the workers");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Feeds `buf` to `hasher` on the hashing threads (here when there are none or their queue
/// is full). None if the hashing job died.
async fn hash_update(
    pool: Option<&crate::pool::Pool>,
    mut hasher: crate::oci::Hasher,
    mut buf: Vec<u8>,
) -> Option<(crate::oci::Hasher, Vec<u8>)> {
    if let Some(pool) = pool {
        // The job owns its inputs through this slot, so a refused job leaves them here.
        let slot = Arc::new(Mutex::new(Some((hasher, buf))));
        let job_slot = slot.clone();
        if let Some(reply) = pool.submit(move || {
            let (mut h, b) = lock(&job_slot).take()?;
            h.update(&b);
            Some((h, b))
        }) {
            return reply.await.flatten();
        }
        (hasher, buf) = lock(&slot).take()?;
    }
    hasher.update(&buf);
    Some((hasher, buf))
}

/// Reads the upstream body into `buf` until it is full or the body ends. Returns the bytes
/// (empty at the end) and whether the body has ended.
async fn fill(resp: &mut client::Response, mut buf: Vec<u8>) -> (std::io::Result<Vec<u8>>, bool) {
    buf.clear();
    while buf.len() < buf.capacity() {
        let (r, b) = resp.read(buf).await;
        buf = b;
        match r {
            Ok(0) => return (Ok(buf), true),
            Ok(_) => {}
            Err(e) => return (Err(e), true),
        }
    }
    (Ok(buf), false)
}
