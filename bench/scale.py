#!/usr/bin/env python3
"""Listings at scale, the client side of bench/scale.sh (Python 3 stdlib only).

  scale.py seed-origin-fs ROOT REPO TAGS REPOS DIGEST     tag links and catalog entries as files
  scale.py seed-dist-fs ROOT REPO TAGS REPOS DIGEST       distribution's layout, as files
  scale.py seed-s3 ENDPOINT BUCKET REPO TAGS REPOS DIGEST  origin's keys in a bucket (unsigned)
  scale.py push-seed URL REPO                             a small image tagged `seed`; its digest
  scale.py push-tags URL REPO COUNT                       COUNT tag PUTs of one manifest; tags/s
  scale.py page URL PATH [REPEAT]                         median ms of REPEAT GETs (keep-alive)
  scale.py walk URL PATH FIELD                            follows Link; prints items pages ms

Generated names: tags `t000000`..., repositories `r/000000`..., in shuffled order so that
no listing gets its order from the creation order. Every tag points to DIGEST, a manifest
pushed through the API beforehand.
"""

import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True

PRIME = 7919  # coprime with every size used: a cheap shuffle


def tags(n):
    return [f"t{(i * PRIME) % n:06d}" for i in range(n)]


def repos(n):
    return [f"r/{(i * PRIME) % n:06d}" for i in range(n)]


def write(path, body):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)


def seed_origin_fs(root, repo, ntags, nrepos, digest):
    t0 = time.time()
    for t in tags(ntags):
        write(f"{root}/repositories/{repo}/_manifests/tags/{t}", digest.encode())
    for r in repos(nrepos):
        write(f"{root}/catalog/{r}/_repository", r.encode())
    return time.time() - t0


def seed_dist_fs(root, repo, ntags, nrepos, digest):
    t0 = time.time()
    base = f"{root}/docker/registry/v2/repositories"
    alg, hexd = digest.split(":")
    for t in tags(ntags):
        d = f"{base}/{repo}/_manifests/tags/{t}"
        write(f"{d}/current/link", digest.encode())
        write(f"{d}/index/{alg}/{hexd}/link", digest.encode())
    for r in repos(nrepos):
        # distribution 2.8 lists a repository by its `_layers` directory.
        write(f"{base}/{r}/_layers/{alg}/{hexd}/link", digest.encode())
        write(f"{base}/{r}/_manifests/tags/latest/current/link", digest.encode())
    return time.time() - t0


def seed_s3(endpoint, bucket, repo, ntags, nrepos, digest):
    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    t0 = time.time()

    def put(key, body):
        conn.request("PUT", f"/{bucket}/{key}", body=body)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"PUT {key}: {r.status}")

    for t in tags(ntags):
        put(f"repositories/{repo}/_manifests/tags/{t}", digest.encode())
    for r in repos(nrepos):
        put(f"catalog/{r}/_repository", r.encode())
    return time.time() - t0


def connect(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def push_blob(conn, repo, data):
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"")
    r = conn.getresponse()
    r.read()
    loc = r.getheader("Location")
    if r.status != 202 or not loc:
        sys.exit(f"POST upload: {r.status}")
    loc = urllib.parse.urlparse(loc)
    sep = "&" if loc.query else "?"
    path = f"{loc.path}{'?' + loc.query if loc.query else ''}{sep}digest={digest}"
    conn.request("PUT", path, body=data, headers={"Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"PUT blob: {r.status}")
    return digest


def push_seed(url, repo):
    import hashlib
    conn = connect(url)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = os.urandom(1024)
    cfg = push_blob(conn, repo, config)
    lay = push_blob(conn, repo, layer)
    mtype = "application/vnd.docker.distribution.manifest.v2+json"
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": mtype,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": cfg},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": lay}],
    }).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/seed", body=manifest,
                 headers={"Content-Type": mtype})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"PUT manifest: {r.status}")
    print("sha256:" + hashlib.sha256(manifest).hexdigest())


def push_tags(url, repo, count):
    """COUNT manifest PUTs of the manifest tagged `seed`, under new tags; prints tags/s."""
    conn = connect(url)
    accept = ", ".join([
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ])
    conn.request("GET", f"/v2/{repo}/manifests/seed", headers={"Accept": accept})
    r = conn.getresponse()
    body = r.read()
    ctype = r.getheader("Content-Type")
    if r.status != 200:
        sys.exit(f"GET seed manifest: {r.status}")
    t0 = time.time()
    for i in range(count):
        conn.request("PUT", f"/v2/{repo}/manifests/api{i:06d}", body=body,
                     headers={"Content-Type": ctype})
        r = conn.getresponse()
        r.read()
        if r.status != 201:
            sys.exit(f"PUT tag: {r.status}")
    print(f"{count / (time.time() - t0):.0f}")


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
    return r, body


def page(url, path, repeat):
    conn = connect(url)
    get(conn, path)  # warm: connection, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        get(conn, path)
        times.append((time.perf_counter() - t0) * 1000)
    print(f"{statistics.median(times):.2f}")


def walk(url, path, field):
    conn = connect(url)
    items, pages, seen = 0, 0, set()
    t0 = time.perf_counter()
    while path:
        r, body = get(conn, path)
        got = json.loads(body).get(field) or []
        items += len(got)
        pages += 1
        path = None
        link = r.getheader("Link")
        if link:
            path = link.split(">")[0].lstrip("<")
            if path in seen:
                sys.exit(f"Link loops at {path}")
            seen.add(path)
    print(f"{items} {pages} {(time.perf_counter() - t0) * 1000:.0f}")


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd = a[0]
    if cmd == "seed-origin-fs":
        print(f"{seed_origin_fs(a[1], a[2], int(a[3]), int(a[4]), a[5]):.1f}")
    elif cmd == "seed-dist-fs":
        print(f"{seed_dist_fs(a[1], a[2], int(a[3]), int(a[4]), a[5]):.1f}")
    elif cmd == "seed-s3":
        print(f"{seed_s3(a[1], a[2], a[3], int(a[4]), int(a[5]), a[6]):.1f}")
    elif cmd == "push-seed":
        push_seed(a[1], a[2])
    elif cmd == "push-tags":
        push_tags(a[1], a[2], int(a[3]))
    elif cmd == "page":
        page(a[1], a[2], int(a[3]) if len(a) > 3 else 21)
    elif cmd == "walk":
        walk(a[1], a[2], a[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
