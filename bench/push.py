#!/usr/bin/env python3
"""Push load: N streams (one process and keep-alive connection each) pushing distinct blobs
for a fixed time, monolithic or chunked, streaming from a pregenerated file with sendfile
(plain HTTP) or 4 MiB sendall writes (TLS). Python 3 stdlib only.

Every blob is the file's first SIZE-32 bytes plus a 32-byte suffix naming the run, stream and
push, so each push is a new blob (nothing is deduplicated) while its digest costs nothing: the
hash state of the common prefix is computed once and copied.

  monolithic: POST ?digest= with the body (201); on a server that answers 202 to that
              (distribution 2.x), an empty POST then PUT ?digest= with the body (--mono).
  chunked:    POST, then PATCH with Content-Range per --chunk-mib, then PUT ?digest=.

A push that started before the deadline is finished and counted; the rate is bytes of
completed pushes over the time until the last one ended. Prints one JSON line.

  bench/push.py --url http://127.0.0.1:5000 --file /tmp/seed/blob-64m.bin -s 8 -d 10 \
      --mode chunked
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

SUFFIX = 32


def worker(args, prefix_hash, stream, start_at, out):
    reg = seed.Registry(args.url, cafile=args.cacert, user=args.user)
    size = args.size_mib << 20
    chunk = max(1, int(args.chunk_mib * (1 << 20)))
    pushed = n = errors = 0
    first_error = ""
    latencies = []
    digests = []
    flavour = args.mono
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    deadline = start_at + args.secs
    end = time.time()
    try:
        if args.mode == "monolithic" and flavour == "auto":
            flavour = seed.monolithic_flavour(reg, args.repo)
        while time.time() < deadline:
            suffix = f"{args.run_id}/{stream}/{n}".encode().ljust(SUFFIX, b".")[:SUFFIX]
            h = prefix_hash.copy()
            h.update(suffix)
            digest = "sha256:" + h.hexdigest()
            t = time.time()
            if args.mode == "monolithic":
                seed.upload_monolithic(reg, args.repo, digest, args.file, size - SUFFIX,
                                       suffix=suffix, mode=flavour)
            else:
                seed.upload_chunked(reg, args.repo, digest, args.file, size - SUFFIX, chunk,
                                    suffix=suffix)
            end = time.time()
            latencies.append(end - t)
            digests.append(digest)
            pushed += size
            n += 1
    except Exception as e:  # counted and reported, never silent
        errors += 1
        first_error = f"{type(e).__name__}: {e}"
        end = time.time()
    reg.close()
    out.put((pushed, n, errors, first_error, end, latencies, digests, flavour))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="registry base URL")
    ap.add_argument("--repo", default="bench/push")
    ap.add_argument("--file", required=True, help="pregenerated content (>= size)")
    ap.add_argument("--size-mib", type=int, default=64, help="blob size (default 64)")
    ap.add_argument("-s", "--streams", type=int, default=1)
    ap.add_argument("-d", "--secs", type=float, default=10)
    ap.add_argument("--mode", choices=["monolithic", "chunked"], default="monolithic")
    ap.add_argument("--mono", choices=["auto", "post", "put"], default="auto")
    ap.add_argument("--chunk-mib", type=float, default=16, help="PATCH size (default 16)")
    ap.add_argument("--cacert")
    ap.add_argument("--user", help="user:password")
    ap.add_argument("--run-id", default=f"{os.getpid()}-{int(time.time())}")
    ap.add_argument("--digests-out", help="file to list the pushed digests in")
    args = ap.parse_args()

    size = args.size_mib << 20
    if os.path.getsize(args.file) < size - SUFFIX:
        ap.error(f"{args.file} is smaller than {args.size_mib} MiB")
    prefix_hash = seed.file_sha256(args.file, size - SUFFIX)

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.3
    procs = [ctx.Process(target=worker, args=(args, prefix_hash, i, start_at, out))
             for i in range(args.streams)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.secs + 600) for _ in procs]
    for p in procs:
        p.join()
    pushed = sum(r[0] for r in results)
    n = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    secs = max(1e-6, max(r[4] for r in results) - start_at)
    lat = sorted(x for r in results for x in r[5])
    report = {
        "bytes": pushed, "secs": round(secs, 3), "mib_s": round(pushed / secs / (1 << 20), 1),
        "pushes": n, "streams": args.streams, "mode": args.mode,
        "flavour": results[0][7] if args.mode == "monolithic" else f"{args.chunk_mib:g}MiB",
        "push_secs_p50": round(lat[len(lat) // 2], 3) if lat else None,
        "push_secs_max": round(lat[-1], 3) if lat else None,
        "errors": errors, "first_error": next((r[3] for r in results if r[3]), ""),
    }
    if args.digests_out:
        with open(args.digests_out, "w") as f:
            for r in results:
                for d in r[6]:
                    f.write(d + "\n")
    print(json.dumps(report))
    if errors:
        print(f"push: {errors} error(s): {report['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
