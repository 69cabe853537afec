//! The audit trail's bounded queue and the thread that writes it: a file rotated by size, or
//! the tracing target `origin::audit` (stderr).
//!
//! Each queued line carries the `[audit]` settings of the moment it was emitted (from the
//! reloadable set), so a reload that changes the file or its limits takes effect at the next
//! record, with no message of its own.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Record;
use crate::config::AuditConfig;
use crate::metrics::{Metrics, METRICS};

/// Records waiting to be written at most: at a few hundred bytes each a few MiB, enough for
/// a burst of thousands of writes per second while the disk stalls for a second.
pub const AUDIT_QUEUE_RECORDS_MAX: usize = 16_384;
/// After the file cannot be opened, records are dropped (and counted) for this long before
/// the next attempt, instead of trying once per record.
const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

struct Job {
    settings: Arc<AuditConfig>,
    line: String,
}

/// The queue every worker emits into; one per process.
pub struct Log {
    tx: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Log {
    /// The queue and its writer thread (idle until the first record).
    pub fn start() -> Result<Arc<Log>, crate::error::StartError> {
        let (tx, rx) = mpsc::sync_channel::<Job>(AUDIT_QUEUE_RECORDS_MAX);
        let thread = std::thread::Builder::new()
            .name("origin-audit".into())
            .spawn(move || write_loop(rx))
            .map_err(|e| crate::error::StartError::io("cannot start the audit writer", e))?;
        Ok(Arc::new(Log {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Encodes and queues a record under `settings` (which the caller found enabled); drops
    /// it, counted, when the queue is full or closed.
    pub fn emit(&self, settings: &Arc<AuditConfig>, record: &Record<'_>) {
        let line = super::encode(record, &super::now());
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            Metrics::add(&METRICS.audit_dropped, 1);
            return;
        };
        let job = Job {
            settings: settings.clone(),
            line,
        };
        match tx.try_send(job) {
            Ok(()) => {}
            // Counted, not logged: a full queue would flood the log.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                Metrics::add(&METRICS.audit_dropped, 1)
            }
        }
    }

    /// Closes the queue and waits until what was queued is written, or `within` passes.
    pub fn drain(&self, within: Duration) {
        lock(&self.tx).take();
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        let deadline = Instant::now() + within;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!("audit trail not written out within the grace period");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = thread.join();
    }
}

/// Where lines go under one set of settings.
enum Sink {
    Stderr,
    File(FileSink),
    /// The file could not be opened: lines are dropped until `retry_at`.
    Broken {
        retry_at: Instant,
    },
}

struct Current {
    settings: Arc<AuditConfig>,
    sink: Sink,
}

fn write_loop(rx: Receiver<Job>) {
    let mut current: Option<Current> = None;
    while let Ok(first) = rx.recv() {
        let mut job = Some(first);
        // Everything waiting is written, then flushed once.
        while let Some(j) = job.take() {
            write_one(&mut current, j);
            job = rx.try_recv().ok();
        }
        if let Some(Current {
            sink: Sink::File(f),
            ..
        }) = &mut current
        {
            if let Err(e) = f.out.flush() {
                tracing::warn!(error = %e, file = %f.path.display(), "audit trail: write failed");
            }
        }
    }
    if let Some(Current {
        sink: Sink::File(mut f),
        ..
    }) = current
    {
        let _ = f.out.flush();
    }
}

fn write_one(current: &mut Option<Current>, job: Job) {
    let stale = match current {
        Some(c) => *c.settings != *job.settings,
        None => true,
    };
    if stale {
        if let Some(Current {
            sink: Sink::File(f),
            ..
        }) = current
        {
            let _ = f.out.flush();
        }
        *current = Some(Current {
            sink: open(&job.settings),
            settings: job.settings.clone(),
        });
    }
    let Some(c) = current else { return };
    if let Sink::Broken { retry_at } = c.sink {
        if Instant::now() < retry_at {
            Metrics::add(&METRICS.audit_dropped, 1);
            return;
        }
        c.sink = open(&c.settings);
    }
    let written = match &mut c.sink {
        Sink::Stderr => {
            tracing::info!(target: crate::log::AUDIT_TARGET, "{}", job.line.trim_end());
            true
        }
        Sink::File(f) => match f.append(job.line.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, file = %f.path.display(), "audit trail: write failed");
                c.sink = Sink::Broken {
                    retry_at: Instant::now() + REOPEN_BACKOFF,
                };
                false
            }
        },
        Sink::Broken { .. } => false,
    };
    let counter = match written {
        true => &METRICS.audit_records,
        false => &METRICS.audit_dropped,
    };
    Metrics::add(counter, 1);
}

fn open(settings: &AuditConfig) -> Sink {
    let Some(path) = &settings.file else {
        return Sink::Stderr;
    };
    match FileSink::open(path, settings.max_file_bytes, settings.keep_files) {
        Ok(f) => Sink::File(f),
        Err(e) => {
            tracing::error!(error = %e, file = %path.display(), "audit trail: cannot open the file; records are dropped");
            Sink::Broken {
                retry_at: Instant::now() + REOPEN_BACKOFF,
            }
        }
    }
}

/// The file, appended to, rotated before a line would take it past `max_bytes`.
struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            size,
            max_bytes,
            keep,
        })
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `<file>` becomes `<file>.1`, `<file>.1` becomes `<file>.2` ... up to `keep`; the
    /// oldest goes. With `keep` 0 the file just starts over.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let numbered = |i: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{i}"));
            PathBuf::from(name)
        };
        if self.keep == 0 {
            ignore_missing(std::fs::remove_file(&self.path))?;
        } else {
            ignore_missing(std::fs::remove_file(numbered(self.keep)))?;
            for i in (1..self.keep).rev() {
                ignore_missing(std::fs::rename(numbered(i), numbered(i + 1)))?;
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Outcome};
    use std::sync::atomic::Ordering::Relaxed;

    /// A full queue drops the record at once and counts it: `emit` never waits for the
    /// writer (here there is none, and the queue holds two).
    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (tx, rx) = mpsc::sync_channel::<Job>(2);
        let log = Log {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(None),
        };
        let settings = Arc::new(AuditConfig {
            enabled: true,
            ..AuditConfig::default()
        });
        let record = Record::new("blob.delete", Outcome::Allowed, Actor::System("gc"));
        let before = METRICS.audit_dropped.load(Relaxed);
        let started = Instant::now();
        for _ in 0..5 {
            log.emit(&settings, &record);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        let dropped = METRICS.audit_dropped.load(Relaxed) - before;
        assert!(dropped >= 3, "{dropped}");
        assert_eq!(rx.try_iter().count(), 2);
        log.drain(Duration::from_millis(10));
        log.emit(&settings, &record);
        assert!(METRICS.audit_dropped.load(Relaxed) - before >= 4);
    }

    /// A file rotates before a line would pass the limit, keeps `keep` old files (the
    /// newest as `.1`) and drops older ones; every line stays whole in one file.
    #[test]
    fn rotation_keeps_whole_lines_and_the_newest_files() {
        let dir = std::env::temp_dir().join(format!("origin-audit-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let mut sink = FileSink::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            sink.append(format!("{i:039}\n").as_bytes()).unwrap();
        }
        sink.out.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // 40-byte lines, at most 100 bytes a file: two lines each; lines 8-9 current.
        assert_eq!(read(&path), format!("{:039}\n{:039}\n", 8, 9));
        assert_eq!(
            read(&dir.join("audit.log.1")),
            format!("{:039}\n{:039}\n", 6, 7)
        );
        assert_eq!(
            read(&dir.join("audit.log.2")),
            format!("{:039}\n{:039}\n", 4, 5)
        );
        assert!(!dir.join("audit.log.3").exists());
        // Reopened, the size already there counts.
        let mut again = FileSink::open(&path, 100, 0).unwrap();
        assert_eq!(again.size, 80);
        again.append(&[b'x'; 40]).unwrap();
        again.out.flush().unwrap();
        assert_eq!(read(&path).len(), 40, "keep_files = 0 starts the file over");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
