//! Test support: a real `moto_server` (started by `moto_launch`), stopped by PID on drop;
//! buckets made and listed through signed plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config::s3::S3Config;

pub const ACCESS_KEY: &str = "origin-test";
pub const SECRET_KEY: &str = "origin-test-secret";

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto, or `None` (with a SKIP line naming `test`) when it is not installed.
    pub fn start(test: &str) -> Option<Moto> {
        let (child, port) = super::moto_launch::spawn(test)?;
        Some(Moto { child, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A backend config for `bucket` on this server.
    pub fn config(&self, bucket: &str) -> S3Config {
        let text = format!(
            "bucket = \"{bucket}\"\nendpoint = \"{}\"\npath_style = true\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
             multipart_part_size = {}\nrequest_timeout = \"10s\"\n",
            self.endpoint(),
            crate::config::s3::PART_BYTES_MIN,
        );
        toml::from_str(&text).expect("test config")
    }

    fn bucket(&self, name: &str) -> Bucket {
        let endpoint = self.endpoint().parse().expect("endpoint URL");
        Bucket::new(endpoint, UrlStyle::Path, name.to_string(), "us-east-1").expect("bucket")
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) {
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let bucket = self.bucket(name);
        let url = bucket.create_bucket(&creds).sign(Duration::from_secs(600));
        let (status, body) = self.http("PUT", url.as_str());
        assert_eq!(status, 200, "create bucket {name}: {body}");
    }

    /// Everything the bucket holds below the trait: every object key and every multipart
    /// upload in progress (as `multipart:<key>`), sorted.
    pub fn raw_listing(&self, name: &str) -> Vec<String> {
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let bucket = self.bucket(name);
        let mut out = Vec::new();
        let mut action = bucket.list_objects_v2(Some(&creds));
        action.with_max_keys(1000);
        let (status, body) = self.http("GET", action.sign(Duration::from_secs(600)).as_str());
        assert_eq!(status, 200, "list {name}: {body}");
        let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&body).expect("list XML");
        assert!(
            parsed.next_continuation_token.is_none(),
            "raw listing is one page"
        );
        out.extend(parsed.contents.into_iter().map(|c| c.key));
        let mut uploads = bucket.list_objects_v2(Some(&creds));
        uploads.query_mut().insert("uploads", "");
        let url = uploads.sign(Duration::from_secs(600));
        let url = url.as_str().replace("list-type=2&", "");
        let (status, body) = self.http("GET", &url);
        assert_eq!(status, 200, "list multipart uploads of {name}: {body}");
        for part in body.split("<Upload>").skip(1) {
            if let Some(key) = super::xml::field(part, "Key") {
                out.push(format!("multipart:{key}"));
            }
        }
        out.sort();
        out
    }

    /// One request on a fresh connection: (status, body).
    fn http(&self, method: &str, url: &str) -> (u16, String) {
        let path = url
            .split_once("://")
            .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n",
            self.port
        )
        .expect("send to moto");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read from moto");
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        // Chunked bodies keep their size lines; callers only search them.
        (status, body)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // By PID: the child we started, nothing else.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
