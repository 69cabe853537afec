#!/usr/bin/env python3
"""Latency of tag listings and manifest PUTs, with or without a GC pass running
(the client side of bench/maintenance-scale.sh; Python 3 stdlib only).

  maint_load.py fixed URL ROOT REPO SECONDS RATE     load for SECONDS
  maint_load.py until-gc URL ROOT REPO SECONDS RATE  load until the server's first GC pass
                                                     ends (at most SECONDS); only requests
                                                     started during the pass are counted

Two clients on their own keep-alive connections, each paced at RATE requests a second (not
flat out: the point is what a pass does to requests, not the machine's throughput):
  - `GET /v2/REPO/tags/list?n=100`;
  - `PUT /v2/REPO/manifests/bench-<i % 50>` of the manifest tagged `v0` in REPO (read from
    the fs layout under ROOT), so each PUT goes through the hold, edge and tombstone checks
    and the publishing batch.
The pass's window is read from `/metrics` (`origin_gc_passes_total`, then the last pass's
duration). Prints one line: `list p50 p99 max n put p50 p99 max n window_s` (ms).
"""

import http.client
import statistics
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True


def manifest(root, repo):
    with open(f"{root}/repositories/{repo}/_manifests/tags/v0") as f:
        digest = f.read().strip()
    hexd = digest.split(":")[1]
    with open(f"{root}/blobs/sha256/{hexd[:2]}/{hexd}/data", "rb") as f:
        return f.read()


def client(url, make, rate, stop, out):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    period = 1.0 / rate
    i = 0
    nxt = time.monotonic()
    while not stop.is_set():
        method, path, body, headers = make(i)
        t0 = time.monotonic()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        t1 = time.monotonic()
        if resp.status >= 300:
            print(f"{method} {path}: {resp.status}", file=sys.stderr)
        out.append((t0, (t1 - t0) * 1000))
        i += 1
        nxt += period
        time.sleep(max(0.0, nxt - time.monotonic()))


def metric(url, name):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def stats(samples):
    lat = sorted(ms for _, ms in samples)
    if not lat:
        return "- - - 0"
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return f"{statistics.median(lat):.2f} {p99:.2f} {lat[-1]:.2f} {len(lat)}"


def main():
    mode, url, root, repo, secs, rate = sys.argv[1:7]
    secs, rate = float(secs), float(rate)
    body = manifest(root, repo)
    mt = "application/vnd.oci.image.manifest.v1+json"
    lists, puts = [], []
    stop = threading.Event()
    listing = lambda i: ("GET", f"/v2/{repo}/tags/list?n=100", None, {})
    pushing = lambda i: ("PUT", f"/v2/{repo}/manifests/bench-{i % 50}", body, {"Content-Type": mt})
    threads = [
        threading.Thread(target=client, args=(url, listing, rate, stop, lists)),
        threading.Thread(target=client, args=(url, pushing, rate, stop, puts)),
    ]
    for t in threads:
        t.start()
    started = time.monotonic()
    window = (started, started + secs)
    if mode == "until-gc":
        while time.monotonic() - started < secs:
            if metric(url, "origin_gc_passes_total") >= 1:
                end = time.monotonic()
                dur = metric(url, "origin_gc_last_pass_duration_seconds")
                window = (end - dur, end)
                break
            time.sleep(0.1)
        else:
            print("no GC pass ended in time", file=sys.stderr)
    else:
        time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    inside = lambda s: [x for x in s if window[0] <= x[0] <= window[1]]
    print(f"{stats(inside(lists))} {stats(inside(puts))} {window[1] - window[0]:.1f}")


if __name__ == "__main__":
    main()
