//! A real `moto_server` (PyPI `moto[server]`, started by `launch`) for tests of Origin on S3,
//! stopped by PID on drop. Missing moto: a SKIP line, unless `ORIGIN_REQUIRE_S3=1` (CI), where
//! the test fails. `scripts/moto.sh` installs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;

/// Starting moto (through its serialising shim), shared with the backend's own tests.
#[path = "../../src/storage/s3/moto_launch.rs"]
pub mod launch;

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto, or `None` with a SKIP line naming `test` when it is not installed.
    pub fn start(test: &str) -> Option<Moto> {
        let (child, port) = launch::spawn(test)?;
        Some(Moto { child, port })
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
