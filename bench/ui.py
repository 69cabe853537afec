#!/usr/bin/env python3
"""The client side of bench/ui.sh (Python 3 stdlib only).

  ui.py push-image URL REPO TAG FILES   an image whose layer is a tar.gz of FILES small files,
                                        with labels and history in its config, and an SBOM
                                        referrer; prints "<manifest digest> <layer digest>"

Anonymous pushes (the bench's origin allows everything).
"""

import gzip
import hashlib
import http.client
import io
import json
import sys
import tarfile
import urllib.parse

sys.dont_write_bytecode = True


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def connect(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=600)


def push_blob(conn, repo, data):
    d = sha(data)
    conn.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data,
                 headers={"Content-Type": "application/octet-stream"})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"POST blob: {r.status}")
    return {"digest": d, "size": len(data)}


def put_manifest(conn, repo, ref, manifest):
    """PUT under the tag `ref`, or by digest when `ref` is None."""
    body = json.dumps(manifest).encode()
    ref = ref or sha(body)
    conn.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                 headers={"Content-Type": manifest["mediaType"]})
    r = conn.getresponse()
    r.read()
    if r.status != 201:
        sys.exit(f"PUT manifest {ref}: {r.status}")
    return {"digest": sha(body), "size": len(body)}


def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(files):
            body = f"file {i}\n".encode() * 8
            info = tarfile.TarInfo(f"usr/share/bench/{i // 100:03d}/f{i:05d}.txt")
            info.size = len(body)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_image(url, repo, tag, files):
    conn = connect(url)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-12-05T00:00:00Z",
        "config": {"Entrypoint": ["/bin/app"], "Env": ["PATH=/usr/bin"],
                   "Labels": {f"org.example.label{i}": f"value {i}" for i in range(20)}},
        "history": [{"created_by": f"RUN step {i}"} for i in range(10)],
        "rootfs": {"type": "layers", "diff_ids": []},
    }).encode()
    cfg = push_blob(conn, repo, config)
    lay = push_blob(conn, repo, layer(files))
    image = put_manifest(conn, repo, tag, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **lay}],
        "annotations": {"org.opencontainers.image.source": "https://example.com/app"},
    })
    empty = push_blob(conn, repo, b"{}")
    sbom = push_blob(conn, repo, b'{"spdxVersion":"SPDX-2.3"}')
    put_manifest(conn, repo, None, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": "application/spdx+json", **sbom}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", **image},
    })
    print(image["digest"], lay["digest"])


def main():
    a = sys.argv[1:]
    if len(a) == 5 and a[0] == "push-image":
        push_image(a[1], a[2], a[3], int(a[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
