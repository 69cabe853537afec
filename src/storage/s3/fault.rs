//! Test support: a fault-injecting HTTP proxy between the backend and moto. Each request
//! takes the next planned fault (or is forwarded untouched): S3 error answers, a response
//! lost after the request took effect, a stall. An *outage* applies one fault to every
//! request until it is lifted. Integration tests include this file too (`tests/common`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request or response head the proxy reads.
const HEAD_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// 503 SlowDown, not forwarded.
    SlowDown,
    /// 500 InternalError, not forwarded.
    Internal,
    /// 403 InvalidAccessKeyId, not forwarded.
    Forbidden,
    /// Forwarded (so it takes effect), then the connection is closed without an answer.
    LoseResponse,
    /// Nothing forwarded and nothing answered for this long, then the connection closes.
    Stall(Duration),
}

pub struct FaultProxy {
    pub port: u16,
    plan: Arc<Mutex<VecDeque<Fault>>>,
    outage: Arc<Mutex<Option<(Fault, String)>>>,
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn new(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let plan = Arc::new(Mutex::new(VecDeque::new()));
        let outage = Arc::new(Mutex::new(None));
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, o, s, st) = (plan.clone(), outage.clone(), seen.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (p, o, s) = (p.clone(), o.clone(), s.clone());
                        std::thread::spawn(move || serve(c, upstream_port, &p, &o, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            port,
            plan,
            outage,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    pub fn plan(&self, faults: &[Fault]) {
        self.plan.lock().unwrap().extend(faults.iter().copied());
    }

    /// Every request gets `fault` (after the planned ones) until `outage(None)`.
    pub fn outage(&self, fault: Option<Fault>) {
        *self.outage.lock().unwrap() = fault.map(|f| (f, String::new()));
    }

    /// As `outage`, for requests whose head starts with `prefix` only (e.g. `"GET "`).
    pub fn outage_on(&self, prefix: &str, fault: Fault) {
        *self.outage.lock().unwrap() = Some((fault, prefix.to_string()));
    }

    /// Requests received so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads one message head and its Content-Length body; `None` at the end of the stream.
fn read_message(s: &mut TcpStream, head_only_body: bool) -> Option<(String, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if raw.len() > HEAD_BYTES_MAX || s.read(&mut byte).ok()? == 0 {
            return None;
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; if head_only_body { 0 } else { len }];
    s.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn answer(c: &mut TcpStream, status: &str, code: &str) {
    let body = format!(
        "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let _ = write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

fn serve(
    mut c: TcpStream,
    upstream: u16,
    plan: &Mutex<VecDeque<Fault>>,
    outage: &Mutex<Option<(Fault, String)>>,
    seen: &AtomicUsize,
) {
    while let Some((head, body)) = read_message(&mut c, false) {
        seen.fetch_add(1, Ordering::Relaxed);
        let planned = plan.lock().unwrap().pop_front();
        let fault = planned.or_else(|| match &*outage.lock().unwrap() {
            Some((f, prefix)) if head.starts_with(prefix.as_str()) => Some(*f),
            _ => None,
        });
        match fault {
            Some(Fault::SlowDown) => answer(&mut c, "503 Slow Down", "SlowDown"),
            Some(Fault::Internal) => answer(&mut c, "500 Internal Server Error", "InternalError"),
            Some(Fault::Forbidden) => answer(&mut c, "403 Forbidden", "InvalidAccessKeyId"),
            Some(Fault::Stall(d)) => {
                std::thread::sleep(d);
                return;
            }
            Some(Fault::LoseResponse) | None => {
                let head_req = head.starts_with("HEAD ");
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                if up.write_all(head.as_bytes()).is_err() || up.write_all(&body).is_err() {
                    return;
                }
                let Some((rhead, rbody)) = read_message(&mut up, head_req) else {
                    return;
                };
                if matches!(fault, Some(Fault::LoseResponse)) {
                    return;
                }
                if c.write_all(rhead.as_bytes()).is_err() || c.write_all(&rbody).is_err() {
                    return;
                }
            }
        }
    }
}
