//! Test support shared with the integration tests (`tests/common/s3.rs`): starting a real
//! `moto_server` (PyPI `moto[server]`) on 127.0.0.1, through `scripts/moto_serial.py`, which
//! makes moto apply conditional writes atomically as S3 does.
//!
//! Where moto is missing, `spawn` prints a SKIP line and returns `None`, unless
//! `ORIGIN_REQUIRE_S3=1` (CI), where it panics. `scripts/moto.sh` installs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer (it imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports to try when moto exits at start because its port was taken.
const START_ATTEMPTS: usize = 5;
/// Where `scripts/moto.sh` installs moto.
const VENV_SERVER: &str = "/opt/origin-moto/bin/moto_server";
/// The shim run by moto's own interpreter in place of `moto_server`.
const SERIAL_SHIM: &str = include_str!("../../../scripts/moto_serial.py");

fn server_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ORIGIN_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    if Path::new(VENV_SERVER).exists() {
        return Some(PathBuf::from(VENV_SERVER));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    })
}

/// The interpreter line of the `moto_server` script (pip writes one), as program and
/// arguments: the Python that can import moto.
fn interpreter(server: &Path) -> Option<Vec<String>> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(server).ok()?.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    let line = text.lines().next()?.strip_prefix("#!")?;
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    (!words.is_empty()).then_some(words)
}

/// A free port below the kernel's ephemeral range: a child process (moto, distribution)
/// binds it after this returns, and a port from the ephemeral range could meanwhile go to
/// another test's server started on port 0, whose answer a readiness check would then take
/// for the child's.
pub fn free_port() -> u16 {
    let mut seed = [0u8; 2];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    let start = u16::from_le_bytes(seed) % 10_000;
    for i in 0..10_000u16 {
        let port = 20_000 + (start + i) % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..30000");
}

/// Whether moto (not some other listener on `port`) answers a ListBuckets.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut out = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut out).is_ok()
        && out.contains("ListAllMyBucketsResult")
}

/// Starts moto and waits until it answers: the child (stop it by PID) and its port; `None`
/// with a SKIP line naming `test` when moto is not installed.
pub fn spawn(test: &str) -> Option<(Child, u16)> {
    let Some(path) = server_path() else {
        if std::env::var("ORIGIN_REQUIRE_S3").as_deref() == Ok("1") {
            panic!("{test}: moto_server not found and ORIGIN_REQUIRE_S3=1 (run scripts/moto.sh)");
        }
        eprintln!("SKIP {test}: moto_server not found (run scripts/moto.sh to install it)");
        return None;
    };
    let python = interpreter(&path)
        .unwrap_or_else(|| panic!("{test}: no interpreter line in {}", path.display()));
    // A start counts only when moto itself answers, and a moto that exited (its port was
    // taken before it bound) is started again on another port.
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let mut child = Command::new(&python[0])
            .args(&python[1..])
            .args([
                "-c",
                SERIAL_SHIM,
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start {}: {e}", python[0]));
        let start = Instant::now();
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if answers(port) {
                return Some((child, port));
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{test}: moto did not answer on {port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("{test}: moto exited {START_ATTEMPTS} times at start (ports taken?)");
}
