#!/usr/bin/env python3
"""A counting HTTP proxy in front of an S3 server (moto): forwards every request as it is and
appends one line per request to a log: `OPERATION STATUS BYTES_IN BYTES_OUT MILLIS PATH`. The
operation is the S3 API name, read from the method, the query and `x-amz-copy-source`.
Python 3 stdlib only; one thread per client connection, one keep-alive upstream connection
per thread.

  bench/s3count.py --listen 18001 --upstream 127.0.0.1:18000 --log /tmp/s3.log
  bench/s3count.py --summary /tmp/s3.log [--from LINE] [--to LINE]   # counts by operation
"""

import argparse
import http.client
import http.server
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True

# Largest body forwarded (the bench's blobs are a few MiB; parts at most 64 MiB).
BODY_BYTES_MAX = 600 << 20
# Headers that describe this hop only.
HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


def operation(method, query, headers):
    """The S3 API operation of a request."""
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    copy = any(k.lower() == "x-amz-copy-source" for k in headers)
    if method == "GET":
        if "list-type" in q:
            return "ListObjectsV2"
        if "uploads" in q:
            return "ListMultipartUploads"
        if "uploadId" in q:
            return "ListParts"
        return "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in q:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        if "delete" in q:
            return "DeleteObjects"
        return "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    return method


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None
    log_file = None
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > BODY_BYTES_MAX:
                    raise ValueError("body too large")
        n = int(self.headers.get("Content-Length") or 0)
        if n > BODY_BYTES_MAX:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def forward(self):
        start = time.monotonic()
        body = self.body()
        path, _, query = self.path.partition("?")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            conn = getattr(self.server.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self.upstream, timeout=120)
                self.server.local.conn = conn
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.server.local.conn = None
                if attempt == 1:
                    raise
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        millis = (time.monotonic() - start) * 1000
        op = operation(self.command, query, self.headers.keys())
        with self.lock:
            self.log_file.write(
                f"{op} {resp.status} {len(body)} {len(data)} {millis:.1f} {path}\n")
            self.log_file.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *a):
        super().__init__(*a)
        self.local = threading.local()


def summary(path, first, last):
    """Counts by operation (and status class) of log lines first..last (1-based, inclusive)."""
    with open(path) as f:
        lines = f.read().splitlines()
    lines = lines[first - 1:last] if last else lines[first - 1:]
    ops = {}
    for line in lines:
        op, status = line.split()[:2]
        key = op if status.startswith("2") else f"{op}:{status}"
        ops[key] = ops.get(key, 0) + 1
    total = sum(ops.values())
    detail = " ".join(f"{k}={v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
    print(f"{total}\t{detail}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=int)
    p.add_argument("--upstream")
    p.add_argument("--log")
    p.add_argument("--summary")
    p.add_argument("--from", dest="first", type=int, default=1)
    p.add_argument("--to", dest="last", type=int, default=0)
    a = p.parse_args()
    if a.summary:
        summary(a.summary, a.first, a.last)
        return
    Handler.upstream = a.upstream
    Handler.log_file = open(a.log, "a")
    Server(("127.0.0.1", a.listen), Handler).serve_forever()


if __name__ == "__main__":
    main()
