#!/usr/bin/env python3
"""Large-blob GET load: N keep-alive connections (one process each) fetching one URL over
and over for a fixed time, reading with socket.recv_into into a 4 MiB bytearray (wrk tops
out near 2 GiB/s on large bodies; this client does not). Plain HTTP or TLS (--cacert).
Prints one JSON line: bytes received, seconds, MiB/s, completed responses, errors.

  bench/getblob.py --url http://127.0.0.1:5000/v2/bench/app/blobs/sha256:... -c 8 -d 10
"""

import argparse
import json
import multiprocessing as mp
import socket
import ssl
import sys
import time
import urllib.parse

BUF = 4 << 20


def connect(u, ctx):
    port = u.port or (443 if u.scheme == "https" else 80)
    s = socket.create_connection((u.hostname, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx is not None:
        s = ctx.wrap_socket(s, server_hostname=u.hostname)
    return s


def worker(url, cafile, auth, start_at, secs, expect_size, out):
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=cafile) if u.scheme == "https" else None
    path = u.path + (f"?{u.query}" if u.query else "")
    req = (f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUser-Agent: origin-bench\r\n"
           + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n").encode()
    buf = bytearray(BUF)
    view = memoryview(buf)
    got = done = errors = 0
    first_error = ""
    sock = None
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    deadline = start_at + secs
    try:
        sock = connect(u, ctx)
        while time.time() < deadline:
            sock.sendall(req)
            # Head: read until the blank line; what follows is body.
            head = b""
            while b"\r\n\r\n" not in head:
                n = sock.recv_into(view)
                if not n:
                    raise ConnectionError("closed before the response head")
                head += bytes(view[:n])
                if b"\r\n\r\n" not in head and len(head) > 65536:
                    raise ValueError("response head too large")
            head, _, extra = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            length = int(hdrs.get("content-length", "-1"))
            if status != 200 or length < 0:
                raise ValueError(f"HTTP {status}, Content-Length {length}")
            if expect_size is not None and length != expect_size:
                raise ValueError(f"Content-Length {length}, expected {expect_size}")
            left = length - len(extra)
            got += len(extra)
            cut = False
            while left > 0:
                n = sock.recv_into(view, min(BUF, left))
                if not n:
                    raise ConnectionError("closed in the body")
                left -= n
                got += n
                if time.time() >= deadline:
                    cut = True
                    break
            if cut:
                break
            done += 1
            if hdrs.get("connection", "").lower() == "close":
                sock.close()
                sock = connect(u, ctx)
    except Exception as e:  # counted and reported, never silent
        errors += 1
        first_error = f"{type(e).__name__}: {e}"
    finally:
        if sock is not None:
            sock.close()
    out.put((got, done, errors, first_error, time.time()))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("-c", "--conns", type=int, default=1)
    ap.add_argument("-d", "--secs", type=float, default=10)
    ap.add_argument("--cacert", help="CA bundle for https URLs")
    ap.add_argument("--auth", help="Authorization header value, e.g. 'Basic ...'")
    ap.add_argument("--size", type=int, help="expected Content-Length (checked)")
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.3
    procs = [ctx.Process(target=worker, args=(args.url, args.cacert, args.auth, start_at,
                                              args.secs, args.size, out))
             for _ in range(args.conns)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.secs + 120) for _ in procs]
    for p in procs:
        p.join()
    got = sum(r[0] for r in results)
    done = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    secs = args.secs  # every worker reads until the common deadline (or fails, reported)
    report = {"bytes": got, "secs": round(secs, 3), "mib_s": round(got / secs / (1 << 20), 1),
              "responses": done, "conns": args.conns, "errors": errors,
              "first_error": next((r[3] for r in results if r[3]), "")}
    print(json.dumps(report))
    if errors:
        print(f"getblob: {errors} error(s): {report['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
