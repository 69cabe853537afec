//! A real `moto_server` (PyPI `moto[server]`) on 127.0.0.1 and a free port for tests of Origin
//! on S3, stopped by PID on drop. Missing moto: a SKIP line, unless `ORIGIN_REQUIRE_S3=1`
//! (CI), where the test fails. `scripts/moto.sh` installs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to start listening (it imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports to try when moto exits at start because its port was taken.
const START_ATTEMPTS: usize = 5;
const VENV_SERVER: &str = "/opt/origin-moto/bin/moto_server";

pub struct Moto {
    child: Child,
    pub port: u16,
}

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

impl Moto {
    /// Starts moto, or `None` with a SKIP line naming `test` when it is not installed.
    pub fn start(test: &str) -> Option<Moto> {
        let Some(path) = server_path() else {
            if std::env::var("ORIGIN_REQUIRE_S3").as_deref() == Ok("1") {
                panic!(
                    "{test}: moto_server not found and ORIGIN_REQUIRE_S3=1 (run scripts/moto.sh)"
                );
            }
            eprintln!("SKIP {test}: moto_server not found (run scripts/moto.sh to install it)");
            return None;
        };
        // The port is free when picked but not reserved: something can take it before moto
        // (slow to import) binds, and then moto exits and a bare connect would reach that
        // listener. So a start counts only when moto itself answers, and a moto that exited
        // is started again on another port.
        for _ in 0..START_ATTEMPTS {
            let port = super::free_port();
            let child = Command::new(&path)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{test}: cannot start {}: {e}", path.display()));
            let mut moto = Moto { child, port };
            let start = Instant::now();
            loop {
                if moto.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if moto.answers() {
                    return Some(moto);
                }
                assert!(
                    start.elapsed() < START_TIMEOUT,
                    "{test}: moto did not start"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("{test}: moto exited {START_ATTEMPTS} times at start (ports taken?)");
    }

    /// Whether moto (not some other listener on its port) answers a ListBuckets.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        let mut out = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut out).is_ok()
            && out.contains("ListAllMyBucketsResult")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts it unsigned).
    pub fn create_bucket(&self, name: &str) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{name} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
    }

    /// Writes an object (moto accepts it unsigned): debris a crash could leave.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{bucket}/{key} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
    }

    /// Keys in `bucket` under `prefix` (moto answers unsigned requests), at most 1,000.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET /{bucket}?list-type=2&max-keys=1000&prefix={prefix} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
            "{out}"
        );
        out.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// A `[storage.s3]` section for `bucket` on this server.
    pub fn storage_section(&self, bucket: &str) -> String {
        format!(
            "[storage.s3]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\n\
             access_key_id = \"origin-test\"\nsecret_access_key = \"origin-test-secret\"\n\
             multipart_part_size = {}\nrequest_timeout = \"10s\"\n",
            self.endpoint(),
            5 * 1024 * 1024
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
