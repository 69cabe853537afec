//! A client for use from other threads (stress tests): errors come back instead of panics
//! where a race or a kill may cause them.

use std::time::Duration;

use super::*;

/// A client for use from other threads; errors come back instead of panics where a race or
/// a kill may cause them.
pub struct Remote(pub std::net::SocketAddr);

impl Remote {
    pub fn try_req_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<Resp> {
        let mut s = std::net::TcpStream::connect(self.0).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        send(&mut s, method, path, headers, body);
        read_response(&mut s, method == "HEAD")
    }

    pub fn try_req(&self, method: &str, path: &str) -> Option<Resp> {
        self.try_req_with(method, path, &[], b"")
    }

    pub fn req(&self, method: &str, path: &str) -> Resp {
        self.try_req(method, path).expect("response")
    }

    pub fn blob(&self, repo: &str, data: &[u8]) -> Result<String, String> {
        let d = digest(data);
        let r = self
            .try_req_with(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data,
            )
            .ok_or("no response")?;
        if r.status == 201 {
            Ok(d)
        } else {
            Err(format!("blob push {}", r.status))
        }
    }

    /// Pushes config, layers and manifest; Err carries the OCI error code of the manifest PUT.
    pub fn push_image(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> Result<String, String> {
        let cfg = self.blob(repo, b"{\"os\":\"linux\"}")?;
        let mut descs = Vec::new();
        for l in layers {
            let d = self.blob(repo, l)?;
            descs.push(format!("{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{}}}", l.len()));
        }
        let m = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":15}},\"layers\":[{}]}}",
            descs.join(",")
        );
        let r = self
            .try_req_with(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", OCI_MANIFEST)],
                m.as_bytes(),
            )
            .ok_or("no response")?;
        if r.status == 201 {
            Ok(digest(m.as_bytes()))
        } else {
            Err(r.error_code())
        }
    }

    /// Pulls a tag and checks the manifest and every blob against their digests.
    pub fn pull_verified(&self, repo: &str, tag: &str) {
        let m = self.req("GET", &format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(m.status, 200, "{repo}:{tag} listed but not pullable");
        assert_eq!(
            m.header("docker-content-digest"),
            Some(digest(&m.body).as_str())
        );
        let v = m.json();
        let mut blobs = vec![v["config"]["digest"].as_str().unwrap().to_string()];
        for l in v["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in blobs {
            let b = self.req("GET", &format!("/v2/{repo}/blobs/{d}"));
            assert_eq!(b.status, 200, "{repo}:{tag} lost blob {d}");
            assert_eq!(digest(&b.body), d);
        }
    }
}
