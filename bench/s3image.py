#!/usr/bin/env python3
"""Pushes one image (N random layers + config + manifest) the way docker does (per blob:
POST, PATCH with the whole blob, PUT ?digest=), or pulls it back (manifest, config, layers;
redirects are not followed: the registry must serve the bytes). One keep-alive connection.
Prints one JSON line: bytes moved, seconds, MiB/s. Python 3 stdlib only.

  bench/s3image.py push --url http://127.0.0.1:5000 --repo bench/img --layers 3 --mib 2 \
      --state /tmp/img.json
  bench/s3image.py pull --url http://127.0.0.1:5000 --state /tmp/img.json
  bench/s3image.py commit --url http://127.0.0.1:5000 --mib 64 --state /tmp/c.json \
      --count-log /tmp/s3.log
  bench/s3image.py oci --layers 3 --mib 2 --state /tmp/layout   # an OCI layout (tag v1)
                                                                # for skopeo copy oci:...
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class Conn:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)

    def call(self, method, path, body=None, headers=None, want=(200, 201, 202, 204)):
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in want:
            raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
        return resp, data


def location_path(loc):
    u = urllib.parse.urlsplit(loc)
    return u.path + ("?" + u.query if u.query else "")


def push_blob(c, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp, _ = c.call("POST", f"/v2/{repo}/blobs/uploads/", body=b"", want=(202,))
    loc = location_path(resp.getheader("Location"))
    resp, _ = c.call("PATCH", loc, body=data, want=(202,), headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"0-{len(data) - 1}",
    })
    loc = location_path(resp.getheader("Location"))
    sep = "&" if "?" in loc else "?"
    c.call("PUT", f"{loc}{sep}digest={digest}", body=b"", want=(201,))
    return digest


def push(a):
    c = Conn(a.url)
    layers = [os.urandom(a.mib << 20) for _ in range(a.layers)]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    start = time.monotonic()
    descs = []
    for layer in layers:
        d = push_blob(c, a.repo, layer)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": d, "size": len(layer)})
    cd = push_blob(c, a.repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": len(config)},
                           "layers": descs}).encode()
    c.call("PUT", f"/v2/{a.repo}/manifests/{a.tag}", body=manifest,
           headers={"Content-Type": MANIFEST_TYPE}, want=(201,))
    secs = time.monotonic() - start
    moved = sum(map(len, layers)) + len(config) + len(manifest)
    with open(a.state, "w") as f:
        json.dump({"repo": a.repo, "tag": a.tag}, f)
    report(moved, secs)


def pull(a):
    with open(a.state) as f:
        st = json.load(f)
    c = Conn(a.url)
    start = time.monotonic()
    _, body = c.call("GET", f"/v2/{st['repo']}/manifests/{st['tag']}",
                     headers={"Accept": MANIFEST_TYPE}, want=(200,))
    m = json.loads(body)
    moved = len(body)
    for desc in [m["config"]] + m["layers"]:
        _, data = c.call("GET", f"/v2/{st['repo']}/blobs/{desc['digest']}", want=(200,))
        if "sha256:" + hashlib.sha256(data).hexdigest() != desc["digest"]:
            raise SystemExit(f"blob {desc['digest']}: wrong content")
        moved += len(data)
    report(moved, time.monotonic() - start)


def commit(a):
    """One blob, then its last request (the one that commits) timed and counted alone: the S3
    requests are the lines the counting proxy logged meanwhile. --mode patch: POST, PATCH
    with the whole blob, then PUT ?digest= with no body (the commit copies staged data inside
    the bucket). --mode mono: POST, then PUT ?digest= with the whole blob (a blob below the
    part size is one PUT at its content key)."""
    c = Conn(a.url)
    data = os.urandom(a.mib << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp, _ = c.call("POST", f"/v2/{a.repo}/blobs/uploads/", body=b"", want=(202,))
    loc = location_path(resp.getheader("Location"))
    body = data
    patch_secs = 0.0
    if a.mode == "patch":
        t = time.monotonic()
        resp, _ = c.call("PATCH", loc, body=data, want=(202,), headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"0-{len(data) - 1}",
        })
        patch_secs = time.monotonic() - t
        loc = location_path(resp.getheader("Location"))
        body = b""
    sep = "&" if "?" in loc else "?"
    time.sleep(0.2)
    with open(a.count_log) as f:
        before = f.read().splitlines()
    start = time.monotonic()
    c.call("PUT", f"{loc}{sep}digest={digest}", body=body, want=(201,),
           headers={"Content-Type": "application/octet-stream"})
    secs = time.monotonic() - start
    time.sleep(0.2)
    with open(a.count_log) as f:
        after = f.read().splitlines()[len(before):]
    ops = {}
    for line in after:
        op = line.split()[0]
        ops[op] = ops.get(op, 0) + 1
    print(json.dumps({"requests": len(after), "secs": round(secs, 4),
                      "patch_secs": round(patch_secs, 4),
                      "ops": " ".join(f"{k}={v}" for k, v in sorted(ops.items()))}))


def oci(a):
    """Writes the same image shape as an OCI image layout at --state (tag --tag), for a
    real client (skopeo copy oci:DIR:TAG docker://...)."""
    blobs = os.path.join(a.state, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return "sha256:" + d

    descs = []
    for _ in range(a.layers):
        layer = os.urandom(a.mib << 20)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": put(layer), "size": len(layer)})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": descs}).encode()
    md = put(manifest)
    with open(os.path.join(a.state, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(a.state, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST_TYPE, "digest": md, "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": a.tag}}]}, f)


def report(moved, secs):
    print(json.dumps({"bytes": moved, "secs": round(secs, 4),
                      "mib_per_sec": round(moved / (1 << 20) / secs, 2)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["push", "pull", "commit", "oci"])
    p.add_argument("--url", help="the registry (all but oci)")
    p.add_argument("--repo", default="bench/img")
    p.add_argument("--tag", default="v1")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--mib", type=int, default=2)
    p.add_argument("--state", required=True)
    p.add_argument("--count-log", help="commit: the counting proxy's log")
    p.add_argument("--mode", choices=["patch", "mono"], default="patch", help="commit: how")
    a = p.parse_args()
    {"push": push, "pull": pull, "commit": commit, "oci": oci}[a.action](a)


if __name__ == "__main__":
    main()
