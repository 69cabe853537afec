//! Test support: a real `origin` process on 127.0.0.1 (port 0) and a small raw HTTP client.
#![allow(dead_code)]

pub mod browser;
/// The fault-injecting proxy of the S3 backend's own tests, between a node and moto.
#[path = "../../src/storage/s3/fault.rs"]
pub mod fault;
pub mod otlp;
pub mod pki;
pub mod receiver;
pub mod remote;
pub mod replication;
pub mod s3;
pub mod upstream;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The I/O driver the suite runs with: ORIGIN_TEST_IO_DRIVER=poll runs it on the fallback.
pub fn io_driver() -> String {
    std::env::var("ORIGIN_TEST_IO_DRIVER").unwrap_or_else(|_| "auto".into())
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut r = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut r))
            .unwrap();
        let name = format!("origin-test-{tag}-{}", hex(&r));
        let p = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use s3::launch::free_port;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    pub dir: TempDir,
    pub config_path: PathBuf,
    logs: mpsc::Receiver<String>,
    /// Log lines seen so far (filled by `logs_until` and `collect_logs`).
    pub seen: Vec<String>,
    /// The S3 server under this node when the suite runs on S3 (`ORIGIN_TEST_STORAGE=s3`);
    /// dropped after the node is stopped.
    pub moto: Option<s3::Moto>,
}

/// Whether `Server::start`/`start_with` put nodes on S3 (a moto server each) instead of a
/// directory: `ORIGIN_TEST_STORAGE=s3` runs the HTTP suites against the S3 backend.
pub fn storage_on_s3() -> bool {
    std::env::var("ORIGIN_TEST_STORAGE").as_deref() == Ok("s3")
}

/// A configuration for tests: port 0, storage in `dir`, the suite's I/O driver, and `extra`
/// appended (TOML sections or `[server]` keys via `server_extra`).
pub fn config_text(dir: &Path, server_extra: &str, extra: &str) -> String {
    format!(
        "[server]\nbind_address = \"127.0.0.1\"\nport = 0\nworkers = 2\nio_driver = \"{}\"\n{server_extra}\n\
         [log]\nfilter = \"info\"\n\n{}\n{extra}\n",
        io_driver(),
        fs_section(dir)
    )
}

/// The storage section `config_text` writes for `dir`: the filesystem under `dir/data`.
pub fn fs_section(dir: &Path) -> String {
    format!(
        "[storage.fs]\nroot_dir = \"{}\"\n",
        dir.join("data").display()
    )
}

/// `text` (from `config_text` for `dir`) with its storage section replaced by `storage`
/// (an S3 section, say).
pub fn with_storage(text: &str, dir: &Path, storage: &str) -> String {
    let fs = fs_section(dir);
    assert!(
        text.contains(&fs),
        "no storage section to replace in:\n{text}"
    );
    text.replace(&fs, storage)
}

/// The registry's test clock hook (`origin::clock::TEST_CLOCK_FILE_ENV`): every server the
/// harness starts reads its clock's offset from a file in its directory.
pub const CLOCK_FILE_ENV: &str = "ORIGIN_TEST_CLOCK_FILE";

/// The clock file of the server (and its `origin` commands) whose directory is `dir`.
pub fn clock_file(dir: &Path) -> PathBuf {
    dir.join("clock-offset-secs")
}

/// Moves the clock of the server in `dir` forward by `by` (whole seconds). The file is
/// replaced by a rename, so a reader never sees it half written.
pub fn advance_clock(dir: &Path, by: Duration) {
    let path = clock_file(dir);
    let now: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let tmp = dir.join("clock-offset-secs.tmp");
    std::fs::write(&tmp, format!("{}\n", now + by.as_secs())).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

pub const ALLOW_ALL: &str =
    "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\npolicies = []\n";

impl Server {
    pub fn start() -> Server {
        Server::start_with("", ALLOW_ALL)
    }

    pub fn start_with(server_extra: &str, extra: &str) -> Server {
        let dir = TempDir::new("srv");
        let text = config_text(&dir.0, server_extra, extra);
        if !storage_on_s3() {
            return Server::start_config(dir, &text, &[]);
        }
        let moto =
            s3::Moto::start("Server::start_with").expect("ORIGIN_TEST_STORAGE=s3 needs moto");
        moto.create_bucket("registry");
        let text = with_storage(&text, &dir.0, &moto.storage_section("registry"));
        let mut srv = Server::start_config(dir, &text, &[]);
        srv.moto = Some(moto);
        srv
    }

    /// A server with the tests' config and `extra`, on `moto`'s `bucket` (its directory
    /// named after `label`): one of the nodes sharing a bucket.
    pub fn start_on_bucket(label: &str, moto: &s3::Moto, bucket: &str, extra: &str) -> Server {
        let dir = TempDir::new(label);
        let text = config_text(&dir.0, "", extra);
        let text = with_storage(&text, &dir.0, &moto.storage_section(bucket));
        Server::start_config(dir, &text, &[])
    }

    /// Starts `origin serve -c <config>` (optionally under a launcher such as nouring).
    pub fn start_config(dir: TempDir, config: &str, launcher: &[&str]) -> Server {
        let config_path = dir.0.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let bin = env!("CARGO_BIN_EXE_origin");
        let mut cmd = match launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve").arg("-c").arg(&config_path);
        Server::spawn(cmd, dir, config_path)
    }

    /// Starts `origin serve -c <config>` with extra environment variables.
    pub fn start_config_env(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Server {
        let config_path = dir.0.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_origin"));
        cmd.arg("serve").arg("-c").arg(&config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn(cmd, dir, config_path)
    }

    /// Runs `origin <args> -c <this server's config>` on the server's clock; returns (exit
    /// code, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_origin"))
            .env(CLOCK_FILE_ENV, clock_file(&self.dir.0))
            .args(args)
            .arg("-c")
            .arg(&self.config_path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    pub fn spawn(mut cmd: Command, dir: TempDir, config_path: PathBuf) -> Server {
        cmd.env(CLOCK_FILE_ENV, clock_file(&dir.0));
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start origin");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var("ORIGIN_TEST_ECHO").is_ok() {
                    eprintln!("[origin] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            child,
            dir,
            config_path,
            logs: rx,
            seen: Vec::new(),
            moto: None,
        };
        let line = server
            .logs_until("origin listening on ", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("server did not start; log: {:#?}", server.seen));
        let addr = if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            v["addr"].as_str().unwrap().to_string()
        } else {
            let after = line.split("origin listening on ").nth(1).unwrap();
            after.split_whitespace().next().unwrap().to_string()
        };
        server.addr = addr.parse().unwrap();
        server
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn logs_until(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line.clone());
                    if hit {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits until `n` log lines in all contain `needle` (each reload logs its own line).
    #[allow(dead_code)]
    pub fn logs_count_until(&mut self, needle: &str, n: usize, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        let mut count = self.seen.iter().filter(|l| l.contains(needle)).count();
        while count < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => {
                    count += usize::from(line.contains(needle));
                    self.seen.push(line);
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Moves this server's clock (and that of the `origin` commands run with [`Server::cli`])
    /// forward by `by`, in whole seconds: what GC, upload expiry, retention and mirror
    /// eviction see as the time. HTTP deadlines are not affected.
    pub fn advance_clock(&self, by: Duration) {
        advance_clock(&self.dir.0, by);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut s = self.connect();
        send(&mut s, method, path, headers, body);
        read_response(&mut s, method == "HEAD").expect("response")
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], b"")
    }

    /// Kills the process (SIGKILL) and starts a new one on the same storage and config.
    pub fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        let moto = self.moto.take();
        drop(self);
        let mut srv = Server::start_config(dir, &text, &[]);
        srv.moto = moto;
        srv
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn send<W: Write>(s: &mut W, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        has_len |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // The server may answer (413, 401...) and close before reading everything.
    let _ = s.write_all(&bytes);
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first OCI error code in the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// Reads one response (skipping 1xx), with its body by Content-Length.
pub fn read_response<R: Read>(s: &mut R, head_only: bool) -> Option<Resp> {
    loop {
        let head = read_head(s)?;
        let text = String::from_utf8_lossy(&head).to_string();
        let mut lines = text.split("\r\n");
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = HashMap::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if (100..200).contains(&status) {
            continue;
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; if head_only { 0 } else { len }];
        s.read_exact(&mut body).ok()?;
        return Some(Resp {
            status,
            headers,
            body,
        });
    }
}

fn read_head<R: Read>(s: &mut R) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// True if the peer has closed the connection (read returns EOF or reset).
pub fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

// ---- registry helpers -------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(data))
}

pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Server {
    /// Pushes a blob with one monolithic POST; returns its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(
            r.status,
            201,
            "push blob: {}",
            String::from_utf8_lossy(&r.body)
        );
        d
    }

    /// Starts an upload session; returns its Location path.
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        r.header("location").unwrap().to_string()
    }

    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        )
    }

    /// Pushes a config and `layers`, then an OCI image manifest tagged `tag`; returns the
    /// manifest bytes and digest.
    pub fn push_image(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> (Vec<u8>, String) {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{}}}",
            layers.len()
        );
        let config_digest = self.push_blob(repo, config.as_bytes());
        let layer_descs: Vec<String> = layers
            .iter()
            .map(|l| {
                let d = self.push_blob(repo, l);
                format!(
                    "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{}}}",
                    l.len()
                )
            })
            .collect();
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":{}}},\
             \"layers\":[{}]}}",
            config.len(),
            layer_descs.join(",")
        );
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes());
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let d = digest(manifest.as_bytes());
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        (manifest.into_bytes(), d)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `origin hash-password` for a password: the PHC string for `[identity.*] password`.
pub fn hash_password(pass: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pass}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    phc
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Checks that every stored blob under a `blobs/` directory matches its digest (no partial
/// or corrupt content); returns how many there are. Temp files (`.tmp*`, a write a kill cut
/// short) are not blobs: the store never lists or serves them and removes them at a start
/// an hour later, so they are skipped.
pub fn assert_blobs_intact(blobs_dir: &Path) -> usize {
    let files: Vec<PathBuf> = files_under(blobs_dir)
        .into_iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    for f in &files {
        let name = f
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let content = std::fs::read(f).unwrap();
        assert_eq!(
            sha256_hex(&content),
            name,
            "partial or corrupt blob at {}",
            f.display()
        );
    }
    files.len()
}
