//! An *upstream* registry for pull-through-cache tests: the CNCF distribution registry
//! (`docker-registry`, 2.8.x) on 127.0.0.1, with no auth, htpasswd (Basic) auth, or token auth
//! backed by a small in-process token issuer (ES256 JWTs, like Docker Hub's auth service).
//!
//! The registry logs to a file in its temp dir; `count_requests` counts its access-log lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::{digest, Resp, TempDir};

/// The `service` (JWT `aud`) the upstream expects in token mode.
pub const SERVICE: &str = "origin-test-upstream";
/// The JWT `iss` the upstream trusts in token mode.
pub const ISSUER: &str = "origin-test-issuer";
/// The htpasswd realm in Basic mode.
pub const BASIC_REALM: &str = "test-realm";

const READY_WITHIN: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// No authentication at all.
    None,
    /// htpasswd (bcrypt) Basic authentication on the registry itself.
    Basic { user: String, password: String },
    /// Bearer tokens from the in-process issuer, which hands them out to anyone (anonymous).
    Token,
    /// Bearer tokens from the in-process issuer, which answers 401 unless the token request
    /// carries these Basic credentials.
    TokenWithBasic { user: String, password: String },
}

impl UpstreamAuth {
    pub fn basic(user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn token_with_basic(user: &str, password: &str) -> UpstreamAuth {
        UpstreamAuth::TokenWithBasic {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The username and password a client needs, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match self {
            UpstreamAuth::Basic { user, password }
            | UpstreamAuth::TokenWithBasic { user, password } => {
                Some((user.as_str(), password.as_str()))
            }
            UpstreamAuth::None | UpstreamAuth::Token => None,
        }
    }

    pub fn is_token(&self) -> bool {
        matches!(
            self,
            UpstreamAuth::Token | UpstreamAuth::TokenWithBasic { .. }
        )
    }
}

/// A running (or stopped) distribution registry.
pub struct Upstream {
    addr: SocketAddr,
    child: Option<Child>,
    bin: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    auth: UpstreamAuth,
    issuer: Option<TokenIssuer>,
    // Last, so the process is stopped (Drop) before its directory goes.
    pub dir: TempDir,
}

/// `/usr/bin/docker-registry`, or `docker-registry` on PATH.
fn find_registry() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/docker-registry");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker-registry"))
        .find(|p| p.is_file())
}

impl Upstream {
    /// Starts the registry; `None` (the test should return) if `docker-registry` is not
    /// installed, unless ORIGIN_REQUIRE_UPSTREAM is set, in which case this panics.
    pub fn start(auth: UpstreamAuth) -> Option<Upstream> {
        let Some(bin) = find_registry() else {
            if std::env::var_os("ORIGIN_REQUIRE_UPSTREAM").is_some() {
                panic!("docker-registry not installed and ORIGIN_REQUIRE_UPSTREAM is set");
            }
            eprintln!("skipping: docker-registry not installed");
            return None;
        };
        let dir = TempDir::new("upstream");
        let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        let mut issuer = None;
        let auth_section = match &auth {
            UpstreamAuth::None => String::new(),
            UpstreamAuth::Basic { user, password } => {
                let line = htpasswd_line(user, password);
                let path = dir.0.join("htpasswd");
                std::fs::write(&path, format!("{line}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: {BASIC_REALM}\n    path: \"{}\"\n",
                    path.display()
                )
            }
            UpstreamAuth::Token | UpstreamAuth::TokenWithBasic { .. } => {
                let creds = auth
                    .credentials()
                    .map(|(u, p)| (u.to_string(), p.to_string()));
                let iss = TokenIssuer::start(creds);
                let bundle = dir.0.join("token-root.pem");
                std::fs::write(&bundle, &iss.shared.cert_pem).unwrap();
                let section = format!(
                    "auth:\n  token:\n    realm: \"http://{}/token\"\n    service: {SERVICE}\n    \
                     issuer: {ISSUER}\n    rootcertbundle: \"{}\"\n",
                    iss.addr,
                    bundle.display()
                );
                issuer = Some(iss);
                section
            }
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: \"{}\"\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: origin-test-upstream-secret\n\
             {auth_section}",
            dir.0.join("data").display()
        );
        let config_path = dir.0.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.0.join("registry.log");
        let mut up = Upstream {
            addr,
            child: None,
            bin,
            config_path,
            log_path,
            auth,
            issuer,
            dir,
        };
        up.spawn();
        Some(up)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "upstream already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").arg(&self.config_path);
        // distribution overrides its config from REGISTRY_* variables: keep the file's word.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start docker-registry"));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                panic!(
                    "docker-registry exited ({st}) before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            if let Some(r) = try_http(self.addr, "GET", "/v2/", &[], b"") {
                if r.status == 200 || r.status == 401 {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "docker-registry not ready within {READY_WITHIN:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Kills the registry process (by its PID) and reaps it; the token issuer keeps running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the registry again: same port, storage and config (stops it first if running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn auth(&self) -> &UpstreamAuth {
        &self.auth
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The token endpoint ("http://127.0.0.1:PORT/token") in token modes.
    pub fn token_realm(&self) -> Option<String> {
        self.issuer
            .as_ref()
            .map(|i| format!("http://{}/token", i.addr))
    }

    /// How many HTTP requests the token issuer has received (any outcome).
    pub fn token_requests(&self) -> usize {
        self.issuer
            .as_ref()
            .map_or(0, |i| i.shared.requests.load(Ordering::SeqCst))
    }

    /// The request targets ("/token?service=...") the token issuer has received, in order.
    pub fn token_request_log(&self) -> Vec<String> {
        self.issuer
            .as_ref()
            .map_or_else(Vec::new, |i| i.shared.log.lock().unwrap().clone())
    }

    /// Everything the registry has written to stdout and stderr (across restarts).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many requests with this method and a URI containing `path_contains` the registry
    /// has served, from its combined access log (one line per request, whatever the status:
    /// `127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 ...`). The line is written when the
    /// handler returns, so a keep-alive client can see the response a moment before the line
    /// exists: see `wait_requests`. The readiness probe of each start/restart is a logged
    /// `GET /v2/` too.
    pub fn count_requests(&self, method: &str, path_contains: &str) -> usize {
        self.log_text()
            .lines()
            .filter_map(access_log_request)
            .filter(|(m, uri)| *m == method && uri.contains(path_contains))
            .count()
    }

    /// Polls `count_requests` until it reaches `at_least` (or `within` passes); returns it.
    pub fn wait_requests(
        &self,
        method: &str,
        path_contains: &str,
        at_least: usize,
        within: Duration,
    ) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let n = self.count_requests(method, path_contains);
            if n >= at_least || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A token from the issuer's key for these scopes ("repository:NAME:pull,push"), signed
    /// in-process (not counted in `token_requests`); `None` when not in a token mode.
    pub fn mint_token(&self, scopes: &[&str]) -> Option<String> {
        let iss = self.issuer.as_ref()?;
        let sub = self.auth.credentials().map_or("anonymous", |(u, _)| u);
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        Some(iss.shared.mint(sub, SERVICE, &scopes))
    }

    /// The Authorization header value that lets a client pull, push and delete in `repo`.
    pub fn auth_header(&self, repo: &str) -> Option<String> {
        match &self.auth {
            UpstreamAuth::None => None,
            UpstreamAuth::Basic { user, password } => Some(basic_header(user, password)),
            UpstreamAuth::Token | UpstreamAuth::TokenWithBasic { .. } => {
                let scope = format!("repository:{repo}:pull,push,delete");
                self.mint_token(&[scope.as_str()])
                    .map(|t| format!("Bearer {t}"))
            }
        }
    }

    /// One request on a fresh connection (Connection: close), without credentials.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        try_http(self.addr, method, path, headers, body)
            .unwrap_or_else(|| panic!("no response from upstream to {method} {path}"))
    }

    /// One request with the credentials for `repo` (see `auth_header`).
    pub fn request_as(
        &self,
        repo: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let auth = self.auth_header(repo);
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.request(method, path, &h, body)
    }

    /// Authenticated GET of `path` (a path in `repo`).
    pub fn get(&self, repo: &str, path: &str) -> Resp {
        self.request_as(repo, "GET", path, &[], b"")
    }

    /// Pushes a blob (POST, then PUT ?digest= with the whole body); returns "sha256:<hex>".
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self.request_as(
            repo,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        );
        assert_eq!(
            r.status,
            202,
            "upstream blob upload start: {}",
            String::from_utf8_lossy(&r.body)
        );
        let location = r.header("location").expect("upload Location").to_string();
        // Location is absolute ("http://127.0.0.1:PORT/v2/...?_state=...").
        let mut path = match location.strip_prefix("http://") {
            Some(rest) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
            None => location,
        };
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("digest={d}"));
        let r = self.request_as(
            repo,
            "PUT",
            &path,
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(
            r.status,
            201,
            "upstream blob upload: {}",
            String::from_utf8_lossy(&r.body)
        );
        d
    }

    /// PUTs a manifest; returns its digest (checked against Docker-Content-Digest).
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let r = self.request_as(
            repo,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            body,
        );
        assert_eq!(
            r.status,
            201,
            "upstream manifest push: {}",
            String::from_utf8_lossy(&r.body)
        );
        let d = digest(body);
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        d
    }

    /// Pushes a one-layer OCI image (uncompressed tar layer media type) tagged `tag`;
    /// returns (manifest digest, config digest, layer digest). `image_manifest` rebuilds the
    /// exact manifest bytes.
    pub fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (String, String, String) {
        let layer_digest = self.push_blob(repo, layer);
        let config = image_config(&layer_digest);
        let config_digest = self.push_blob(repo, &config);
        let manifest = image_manifest(&config_digest, config.len(), &layer_digest, layer.len());
        let manifest_digest = self.push_manifest(repo, tag, super::OCI_MANIFEST, &manifest);
        (manifest_digest, config_digest, layer_digest)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The image config `push_image` pushes for a layer.
pub fn image_config(layer_digest: &str) -> Vec<u8> {
    format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{}},\
         \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{layer_digest}\"]}}}}"
    )
    .into_bytes()
}

/// The OCI image manifest `push_image` pushes.
pub fn image_manifest(
    config_digest: &str,
    config_len: usize,
    layer_digest: &str,
    layer_len: usize,
) -> Vec<u8> {
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\
         \"digest\":\"{config_digest}\",\"size\":{config_len}}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\
         \"digest\":\"{layer_digest}\",\"size\":{layer_len}}}]}}",
        super::OCI_MANIFEST
    )
    .into_bytes()
}

/// (method, URI) of a gorilla combined-log line: `host - user [date] "GET /uri HTTP/1.1" ...`.
/// logrus lines (`time="..." level=...`) are not counted.
fn access_log_request(line: &str) -> Option<(&str, &str)> {
    if line.starts_with("time=") {
        return None;
    }
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    let req = &rest[..rest.find('"')?];
    let mut parts = req.split(' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    parts.next()?.starts_with("HTTP/").then_some((method, uri))
}

// ---- HTTP client (one request per connection, read to EOF) --------------------------------

fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.set_nodelay(true).ok()?;
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    h.push(("Connection", "close"));
    super::send(&mut s, method, path, &h, body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    parse_response(&raw, method == "HEAD")
}

/// Parses a whole response (the last non-1xx one) read up to EOF; handles chunked bodies.
fn parse_response(mut raw: &[u8], head_only: bool) -> Option<Resp> {
    loop {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let text = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw = &raw[end + 4..];
        let mut lines = text.split("\r\n");
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = std::collections::HashMap::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (k, v) = l.split_once(':')?;
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if head_only || status == 204 || status == 304 {
            Vec::new()
        } else if headers
            .get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            dechunk(raw)?
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len.parse().ok()?;
            raw.get(..len)?.to_vec()
        } else {
            raw.to_vec()
        };
        return Some(Resp {
            status,
            headers,
            body,
        });
    }
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

// ---- htpasswd ----------------------------------------------------------------------------

/// "user:$2y$..." — distribution's htpasswd only accepts bcrypt. Made by `htpasswd -nbB`
/// (apache2-utils) if installed, else perl's crypt() (libxcrypt does bcrypt: Debian's perl),
/// else python3's bcrypt module.
pub fn htpasswd_line(user: &str, password: &str) -> String {
    if let Ok(out) = Command::new("htpasswd")
        .args(["-nbB", "-C", "5", user, password])
        .stderr(Stdio::null())
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && text.starts_with(&format!("{user}:$2")) {
            return text;
        }
    }
    let hash = bcrypt_with_perl(password)
        .or_else(|| bcrypt_with_python(password))
        .expect(
            "no bcrypt tool for the upstream htpasswd file: install apache2-utils (htpasswd), \
             or perl with a libcrypt that does bcrypt, or python3-bcrypt",
        );
    format!("{user}:{hash}")
}

fn is_bcrypt(h: &str) -> bool {
    h.len() == 60 && (h.starts_with("$2b$") || h.starts_with("$2y$") || h.starts_with("$2a$"))
}

fn bcrypt_with_perl(password: &str) -> Option<String> {
    const B64: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let r = random_bytes(22);
    let mut salt: String = r.iter().map(|b| B64[(*b & 63) as usize] as char).collect();
    // 22 characters carry 132 bits for a 128-bit salt: the last one must have its low 4 bits 0.
    salt.pop();
    salt.push(['.', 'O', 'e', 'u'][(r[21] & 3) as usize]);
    let out = Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])"])
        .arg(password)
        .arg(format!("$2b$05${salt}"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && is_bcrypt(&h)).then_some(h)
}

fn bcrypt_with_python(password: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(5)).decode())",
        ])
        .arg(password)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && is_bcrypt(&h)).then_some(h)
}

// ---- token issuer ------------------------------------------------------------------------

struct TokenIssuer {
    addr: SocketAddr,
    shared: Arc<IssuerShared>,
    thread: Option<JoinHandle<()>>,
}

struct IssuerShared {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// base64 (standard) DER of the self-signed signing certificate, for the `x5c` header.
    cert_b64: String,
    cert_pem: String,
    /// Required Basic credentials (TokenWithBasic).
    creds: Option<(String, String)>,
    requests: AtomicUsize,
    log: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl TokenIssuer {
    fn start(creds: Option<(String, String)>) -> TokenIssuer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ISSUER);
        let cert = params.self_signed(&key).unwrap();
        let rng = SystemRandom::new();
        let signing =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .unwrap();
        let shared = Arc::new(IssuerShared {
            key: signing,
            rng,
            cert_b64: base64_std(cert.der()),
            cert_pem: cert.pem(),
            creds,
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::spawn(move || {
                    let _ = sh.serve(conn);
                });
            }
        });
        TokenIssuer {
            addr,
            shared,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl IssuerShared {
    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        if self.stop.load(Ordering::SeqCst) || request_line.is_empty() {
            return Ok(());
        }
        let mut authorization = None;
        let mut content_length = 0usize;
        loop {
            let mut l = String::new();
            if reader.read_line(&mut l)? == 0 {
                break;
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "authorization" {
                    authorization = Some(v);
                } else if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut params = parse_query(query);
        if method == "POST" {
            // OAuth2 form (grant_type=password&username=...&password=...&scope=...).
            let mut body = vec![0; content_length.min(1 << 20)];
            reader.read_exact(&mut body)?;
            params.extend(parse_query(&String::from_utf8_lossy(&body)));
        }
        let mut conn = conn;
        if path != "/token" || !(method == "GET" || method == "POST") {
            return respond(
                &mut conn,
                "404 Not Found",
                &[],
                b"{\"details\":\"not found\"}",
            );
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(target.clone());

        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // Who is asking: Basic header, or the POST form's username/password.
        let presented: Option<(String, String)> = authorization
            .as_deref()
            .and_then(parse_basic)
            .or_else(|| Some((param("username")?, param("password")?)));
        let sub = match (&self.creds, &presented) {
            (Some(want), Some(got)) if want == got => want.0.clone(),
            (Some(_), _) => {
                return respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", &format!("Basic realm=\"{ISSUER}\""))],
                    b"{\"details\":\"incorrect username or password\"}",
                );
            }
            (None, Some((user, _))) => user.clone(),
            (None, None) => "anonymous".to_string(),
        };
        let service = param("service").unwrap_or_else(|| SERVICE.to_string());
        let scopes: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let token = self.mint(&sub, &service, &scopes);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
            "issued_at": rfc3339(unix_now()),
        })
        .to_string();
        respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    }

    /// An ES256 JWT granting exactly the requested actions on each scope.
    fn mint(&self, sub: &str, aud: &str, scopes: &[String]) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // type:name:actions; the name may itself contain ':' (registry host:port).
                let (typ, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
                Some(serde_json::json!({"type": typ, "name": name, "actions": actions}))
            })
            .collect();
        let now = unix_now();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_b64]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": sub,
            "aud": aud,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": super::hex(&random_bytes(16)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            base64_url(header.to_string().as_bytes()),
            base64_url(claims.to_string().as_bytes())
        );
        // FIXED signing: the 64-byte R||S form JWS wants.
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("sign token");
        format!("{signing_input}.{}", base64_url(sig.as_ref()))
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        out.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    conn.write_all(&bytes)?;
    conn.flush()
}

fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, b64) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64_decode(b64.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

pub fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_std(format!("{user}:{password}").as_bytes())
    )
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hexval = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- small encoders ----------------------------------------------------------------------

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_with(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64_std(data: &[u8]) -> String {
    base64_with(data, B64_STD, true)
}

/// base64url without padding (JWS).
pub fn base64_url(data: &[u8]) -> String {
    base64_with(data, B64_URL, false)
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut r = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .unwrap();
    r
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// "YYYY-MM-DDTHH:MM:SSZ" for unix seconds (UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
