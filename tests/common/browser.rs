//! A browser for the web UI's tests: a cookie jar of one cookie (`origin_session`) and the
//! CSRF token the page was given, sending what the page's scripts send.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::{read_response, send, Resp, Server};

/// The `Origin` the tests' pages send (the servers compare it with their `Host`).
pub const ORIGIN: &str = "http://test";

pub struct Browser {
    /// The node the next request goes to ([`Browser::on`] moves it).
    pub addr: SocketAddr,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Browser {
    /// Opens the UI: `GET session` sets the anonymous cookie and gives the CSRF token.
    pub fn open(srv: &Server) -> Browser {
        let mut b = Browser {
            addr: srv.addr,
            cookie: None,
            csrf: String::new(),
        };
        let s = b.get("/ui/api/session");
        assert_eq!(s.status, 200);
        b.csrf = s.json()["csrf"].as_str().unwrap().to_string();
        b
    }

    /// The same browser, its next requests to `srv` (another node behind a balancer).
    pub fn on(&mut self, srv: &Server) -> &mut Browser {
        self.addr = srv.addr;
        self
    }

    pub fn req(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Resp {
        let cookie = self.cookie.clone().map(|c| format!("origin_session={c}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &cookie {
            h.push(("Cookie", c));
        }
        h.extend_from_slice(extra);
        let mut conn = TcpStream::connect(self.addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        send(&mut conn, method, path, &h, body);
        let r = read_response(&mut conn, method == "HEAD").expect("response");
        self.keep(&r);
        r
    }

    /// Takes the cookie a response sets (an empty value clears it).
    pub fn keep(&mut self, r: &Resp) {
        if let Some(set) = r.header("set-cookie") {
            let value = set.split(';').next().unwrap().trim();
            let value = value.strip_prefix("origin_session=").unwrap();
            self.cookie = (!value.is_empty()).then(|| value.to_string());
        }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.req("GET", path, &[], b"")
    }

    /// A POST as the page sends it: same origin, CSRF token, JSON body.
    pub fn post(&mut self, call: &str, body: Value) -> Resp {
        let csrf = self.csrf.clone();
        let headers = [
            ("Origin", ORIGIN),
            ("Sec-Fetch-Site", "same-origin"),
            ("X-CSRF-Token", csrf.as_str()),
            ("Content-Type", "application/json"),
        ];
        let r = self.req(
            "POST",
            &format!("/ui/api/{call}"),
            &headers,
            body.to_string().as_bytes(),
        );
        if r.status == 200 {
            if let Some(t) = r.json()["csrf"].as_str() {
                self.csrf = t.to_string();
            }
        }
        r
    }

    pub fn login(&mut self, user: &str, pass: &str) -> Resp {
        self.post(
            "login",
            serde_json::json!({ "username": user, "password": pass }),
        )
    }
}
