#!/usr/bin/env python3
"""Small-write load: N streams (one process and keep-alive connection each) for a fixed
time, each operation a new object, so nothing is deduplicated. Python 3 stdlib only.

  manifest: setup pushes one config and one layer; then every operation PUTs a distinct
            image manifest (an annotation names run, stream and count) under a new tag,
            the way a CI pipeline pushes.
  blob:     every operation pushes a distinct --size-kib blob monolithically (POST ?digest=
            with the body where the server takes it, else POST then PUT, as push.py).

An operation that started before the deadline is finished and counted. Prints one JSON line:
ops, ops/s, p50, p99, p99.9 and max latency, errors.

  bench/writes.py --url http://127.0.0.1:5000 --mode manifest -s 8 -d 10
"""

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed  # noqa: E402  (same directory: the HTTP helpers)

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def setup_manifest_parts(reg, repo, run_id):
    """Pushes one config and one layer; returns their descriptors."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "origin-bench": run_id}).encode()
    layer = hashlib.sha256(run_id.encode()).digest() * 128  # 4 KiB, unique per run
    descs = []
    for data, media in ((config, "application/vnd.oci.image.config.v1+json"),
                        (layer, "application/vnd.oci.image.layer.v1.tar")):
        digest = seed.push_bytes(reg, repo, data)
        descs.append({"mediaType": media, "digest": digest, "size": len(data)})
    return descs[0], descs[1:]


def one_manifest(reg, repo, config, layers, label):
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config,
                       "layers": layers, "annotations": {"origin-bench": label}},
                      separators=(",", ":")).encode()
    tag = label.replace("/", "-")
    st, h, d = reg.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body,
                           headers={"Content-Type": MANIFEST_TYPE})
    seed.expect(st, h, d, (201,), "manifest PUT")


def one_blob(reg, repo, size, label):
    data = label.encode().ljust(size, b".")[:size]
    seed.push_bytes(reg, repo, data)


def worker(args, stream, start_at, parts, out):
    reg = seed.Registry(args.url, cafile=args.cacert, user=args.user)
    n = errors = 0
    first_error = ""
    latencies = []
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    deadline = start_at + args.secs
    end = time.time()
    try:
        if args.mode == "blob":
            seed.monolithic_flavour(reg, args.repo)
        while time.time() < deadline:
            label = f"{args.run_id}/{stream}/{n}"
            t = time.time()
            if args.mode == "manifest":
                one_manifest(reg, args.repo, parts[0], parts[1], label)
            else:
                one_blob(reg, args.repo, args.size_kib << 10, label)
            end = time.time()
            latencies.append(end - t)
            n += 1
    except Exception as e:  # counted and reported, never silent
        errors += 1
        first_error = f"{type(e).__name__}: {e}"
        end = time.time()
    reg.close()
    out.put((n, errors, first_error, end, latencies))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="registry base URL")
    ap.add_argument("--repo", default="bench/writes")
    ap.add_argument("--mode", choices=["manifest", "blob"], default="manifest")
    ap.add_argument("--size-kib", type=int, default=4, help="blob size (default 4)")
    ap.add_argument("-s", "--streams", type=int, default=1)
    ap.add_argument("-d", "--secs", type=float, default=10)
    ap.add_argument("--cacert")
    ap.add_argument("--user", help="user:password")
    ap.add_argument("--run-id", default=f"{os.getpid()}-{int(time.time())}")
    args = ap.parse_args()

    parts = None
    if args.mode == "manifest":
        reg = seed.Registry(args.url, cafile=args.cacert, user=args.user)
        parts = setup_manifest_parts(reg, args.repo, args.run_id)
        reg.close()
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.3
    procs = [ctx.Process(target=worker, args=(args, i, start_at, parts, out))
             for i in range(args.streams)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.secs + 600) for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    secs = max(1e-6, max(r[3] for r in results) - start_at)
    lat = sorted(x for r in results for x in r[4])
    pct = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3, 2) if lat else None
    report = {
        "ops": n, "secs": round(secs, 3), "ops_s": round(n / secs, 1),
        "streams": args.streams, "mode": args.mode,
        "p50_ms": pct(0.5), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
        "max_ms": round(lat[-1] * 1e3, 2) if lat else None,
        "errors": errors, "first_error": next((r[2] for r in results if r[2]), ""),
    }
    print(json.dumps(report))
    if errors:
        print(f"writes: {errors} error(s): {report['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
