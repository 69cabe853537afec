#!/usr/bin/env python3
"""One GET of a URL, timed: reads the body with recv_into a 4 MiB buffer and prints one JSON
line {"bytes", "secs", "mib_s", "status", "cpu_s"} (cpu_s: this process's user+system CPU
for the transfer). Exits 1 when the body is shorter than declared.

With --verify the body is hashed with SHA-256 as it arrives (OpenSSL, like the digest check
every OCI client makes while it pulls) and compared with the digest at the end of the URL;
a mismatch exits 1.

  bench/fetch.py --url http://127.0.0.1:5000/v2/library/app/blobs/sha256:... [--verify]
"""

import argparse
import hashlib
import json
import resource
import socket
import sys
import time
import urllib.parse

BUF = 4 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    hasher = hashlib.sha256() if args.verify else None
    u = urllib.parse.urlsplit(args.url)
    path = u.path + (f"?{u.query}" if u.query else "")
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
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
    if hasher:
        hasher.update(rest)
    while length is None or got < length:
        n = s.recv_into(view)
        if n == 0:
            break
        got += n
        if hasher:
            hasher.update(view[:n])
    secs = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"bytes": got, "secs": round(secs, 4),
                      "mib_s": round(got / secs / (1 << 20), 1), "status": status,
                      "cpu_s": round(cpu, 3)}))
    if length is not None and got < length:
        sys.exit(1)
    if hasher and "sha256:" + hasher.hexdigest() != path.rsplit("/", 1)[-1].split("?")[0]:
        sys.exit("digest mismatch")


if __name__ == "__main__":
    main()
