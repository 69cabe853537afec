#!/usr/bin/env python3
"""Seeds origin's fs layout directly (src/registry/layout.rs), for bench/maintenance-scale.sh.

  seed_layout.py registry ROOT MANIFESTS BLOBS REPOS   a registry as pushes leave it
  seed_layout.py garbage ROOT COUNT TAG                unreferenced blobs GC may collect now

`registry`: MANIFESTS image manifests spread over REPOS repositories (`scale/r0000`...), each
naming a config and (BLOBS / MANIFESTS - 2) layers of its own, so BLOBS blobs in all with the
manifests themselves; one tag per manifest (`v<n>`), one day apart in push time. Every key a
push writes is written: the blob data, the repository's layer links and their `linked/`
index entries, the reference edges (`refs/`), the revision link, the tag, the catalog entry.
No GC candidates: a registry whose passes have caught up (`garbage` adds what a pass finds).

`garbage`: COUNT small blobs with no reference, each a GC candidate and data dated two days
back, so a pass with any grace period under that collects them. TAG makes the contents
differ between runs.

Files are written with plain open/write/close, no fsync: the bench measures what runs over
the layout, not how it was made. Blob contents hash to their digests, so `origin scrub`
finds nothing (checked by the bench at the smallest size).
"""

import hashlib
import json
import os
import sys
import time

sys.dont_write_bytecode = True

OLD = time.time() - 2 * 86400
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"

made_dirs = set()


def write(path, body=b"", mtime=None):
    d = os.path.dirname(path)
    if d not in made_dirs:
        os.makedirs(d, exist_ok=True)
        made_dirs.add(d)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    if body:
        os.write(fd, body)
    os.close(fd)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def blob(root, content, mtime=None):
    hexd = hashlib.sha256(content).hexdigest()
    write(f"{root}/blobs/sha256/{hexd[:2]}/{hexd}/data", content, mtime)
    return hexd


def seed_registry(root, manifests, blobs, repos):
    per = max(blobs // manifests - 2, 0)  # layers per manifest, besides config and manifest
    t0 = time.time()
    files = 0
    for m in range(manifests):
        repo = f"scale/r{m % repos:04d}"
        flat = repo.replace("/", "+")
        rdir = f"{root}/repositories/{repo}"
        descs = []
        for i in range(per + 1):
            content = f"{'config' if i == 0 else 'layer'} {m} {i}\n".encode()
            hexd = blob(root, content)
            write(f"{root}/linked/sha256/{hexd}/{flat}")
            write(f"{rdir}/_layers/sha256/{hexd}", f"sha256:{hexd}".encode())
            descs.append((hexd, len(content)))
        config, layers = descs[0], descs[1:]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": {"mediaType": MT_CONFIG, "digest": f"sha256:{config[0]}", "size": config[1]},
                "layers": [
                    {"mediaType": MT_LAYER, "digest": f"sha256:{h}", "size": s} for h, s in layers
                ],
            },
            separators=(",", ":"),
        ).encode()
        mhex = blob(root, manifest)
        for hexd, _ in descs:
            write(f"{root}/refs/sha256/{hexd}/{flat}/sha256-{mhex}")
        write(f"{root}/refs/sha256/{mhex}/{flat}/_revision")
        link = json.dumps({"mediaType": MT_MANIFEST, "size": len(manifest)}).encode()
        pushed = OLD - (manifests - m) * 86400.0 / max(manifests // repos, 1)
        write(f"{rdir}/_manifests/revisions/sha256/{mhex}", link, pushed)
        write(f"{rdir}/_manifests/tags/v{m // repos}", f"sha256:{mhex}".encode())
        if m < repos:
            write(f"{root}/catalog/{repo}/_repository", repo.encode())
        files += 3 * len(descs) + len(descs) + 5
        if m % 10000 == 9999:
            print(f"  {m + 1} manifests, {files} files, {time.time() - t0:.0f} s", file=sys.stderr)
    return time.time() - t0


def seed_garbage(root, count, tag):
    t0 = time.time()
    stamp = int(OLD)
    for i in range(count):
        hexd = blob(root, f"garbage {tag} {i}\n".encode(), OLD)
        write(f"{root}/gc/candidates/sha256-{hexd}", f"{stamp} {i:016x}".encode())
    return time.time() - t0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "registry":
        secs = seed_registry(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "garbage":
        secs = seed_garbage(args[0], int(args[1]), args[2])
    else:
        sys.exit(__doc__)
    print(f"{secs:.1f}")


if __name__ == "__main__":
    main()
