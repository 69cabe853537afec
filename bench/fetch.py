#!/usr/bin/env python3
"""One GET of a URL, timed: reads the body with recv_into a 4 MiB buffer and prints one JSON
line {"bytes", "secs", "mib_s", "status"}. Exits 1 when the body is shorter than declared.

  bench/fetch.py --url http://127.0.0.1:5000/v2/library/app/blobs/sha256:...
"""

import argparse
import json
import socket
import sys
import time
import urllib.parse

BUF = 4 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    args = ap.parse_args()
    u = urllib.parse.urlsplit(args.url)
    path = u.path + (f"?{u.query}" if u.query else "")
    t0 = time.perf_counter()
    s = socket.create_connection((u.hostname, u.port or 80), timeout=120)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
    buf = bytearray(BUF)
    view = memoryview(buf)
    head = b""
    while b"\r\n\r\n" not in head:
        n = s.recv_into(view)
        if n == 0:
            sys.exit("connection closed before the head")
        head += bytes(view[:n])
    head, rest = head.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    got = len(rest)
    while length is None or got < length:
        n = s.recv_into(view)
        if n == 0:
            break
        got += n
    secs = time.perf_counter() - t0
    print(json.dumps({"bytes": got, "secs": round(secs, 4),
                      "mib_s": round(got / secs / (1 << 20), 1), "status": status}))
    if length is not None and got < length:
        sys.exit(1)


if __name__ == "__main__":
    main()
