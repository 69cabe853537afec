#!/usr/bin/env python3
"""Assembles Origin's OCI image from files, with no base image and no container engine.

One layer per architecture: the origin binary (stripped), the shared libraries it needs when
it is not static (the ELF interpreter and what ldd names), CA certificates, and the files of
deploy/image/rootfs (passwd, group, nsswitch.conf, /etc/origin/config.toml). Writes an OCI
image layout directory and an OCI archive (a tar of that layout, what `skopeo copy
oci-archive:...` reads).

Reproducible: entries sorted, every mtime SOURCE_DATE_EPOCH, owners numeric, no user or
group names, gzip without name or time, JSON with sorted keys. Two runs over the same inputs
give the same bytes, so the same layer, config and manifest digests.

Multi-arch: give --binary once per architecture (read from each ELF header); with more than
one, the layout's tag names an image index of one manifest per platform.

Usage: oci_image.py --binary PATH [--binary PATH ...] --version V --revision R
                    --out DIR --archive FILE [--source URL] [--rootfs DIR]
                    [--ca-bundle FILE]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

UID = GID = 65532
BIN_PATH = "usr/local/bin/origin"
CONFIG_PATH = "/etc/origin/config.toml"
VOLUME = "/var/lib/origin"
PORT = "5000/tcp"

# ELF e_machine values and the OCI architecture names.
ARCHES = {62: "amd64", 183: "arm64"}


def elf_info(path):
    """(architecture, is_static) from the ELF header and program headers."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            sys.exit(f"{path}: not a 64-bit little-endian ELF file")
        machine = struct.unpack_from("<H", head, 18)[0]
        phoff = struct.unpack_from("<Q", head, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        interp = False
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP
                interp = True
    if machine not in ARCHES:
        sys.exit(f"{path}: unsupported ELF machine {machine}")
    return ARCHES[machine], not interp


def shared_libraries(path):
    """Absolute paths of the libraries a dynamic binary loads (native architecture only)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the interpreter
    return sorted(set(libs))


class Layer:
    """A deterministic tar: entries added in any order, written sorted by path."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}  # path -> (TarInfo, bytes or None)

    def _info(self, path, kind, mode, uid=0, gid=0):
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
        info.mtime, info.uname, info.gname = self.mtime, "", ""
        return info

    def dir(self, path, mode=0o755, uid=0, gid=0):
        self.entries[path] = (self._info(path, tarfile.DIRTYPE, mode, uid, gid), None)

    def file(self, path, data, mode=0o644):
        self._parents(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[path] = (info, data)

    def symlink(self, path, target):
        self._parents(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path] = (info, None)

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self.entries:
                self.dir(p)

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(self.entries):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # No file name and mtime 0 in the gzip header: the bytes depend on the content only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def stripped(binary, workdir):
    """A copy of the binary without symbols or debug info (deterministic), or the original
    when this machine's strip does not know the architecture."""
    out = os.path.join(workdir, "origin-" + hashlib.sha256(binary.encode()).hexdigest()[:8])
    shutil.copyfile(binary, out)
    r = subprocess.run(["strip", "--strip-all", out], capture_output=True)
    if r.returncode != 0:
        print(f"oci_image: strip failed, keeping symbols: {r.stderr.decode().strip()}",
              file=sys.stderr)
        shutil.copyfile(binary, out)
    with open(out, "rb") as f:
        return f.read()


def rootfs_layer(args, binary, arch, static, workdir):
    layer = Layer(args.epoch)
    layer.file(BIN_PATH, stripped(binary, workdir), 0o755)
    if not static:
        host = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
        if arch != host:
            sys.exit(f"{binary}: a dynamic {arch} binary: link it statically (crt-static) to "
                     f"put it in an image built on {host}")
        for lib in shared_libraries(binary):
            with open(lib, "rb") as f:
                # Stored under the name the loader asks for, with the bytes of its target.
                layer.file(lib.lstrip("/"), f.read(), 0o755)
    with open(args.ca_bundle, "rb") as f:
        layer.file("etc/ssl/certs/ca-certificates.crt", f.read())
    for top, dirs, files in os.walk(args.rootfs):
        dirs.sort()
        for name in sorted(files):
            src = os.path.join(top, name)
            rel = os.path.relpath(src, args.rootfs)
            with open(src, "rb") as f:
                layer.file(rel, f.read(), 0o644)
    layer.dir("tmp", 0o1777)
    layer.dir("var")
    layer.dir("var/lib")
    layer.dir(VOLUME.lstrip("/"), 0o750, UID, GID)
    return layer.tar_bytes()


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image_config(args, arch, diff_id, created):
    labels = {
        "org.opencontainers.image.title": "origin",
        "org.opencontainers.image.description": "Origin: a fast OCI container registry",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    return {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "author": "Origin",
        "config": {
            "User": f"{UID}:{GID}",
            "ExposedPorts": {PORT: {}},
            "Env": [
                "PATH=/usr/local/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            "Entrypoint": ["/" + BIN_PATH],
            "Cmd": ["serve", "-c", CONFIG_PATH],
            "Volumes": {VOLUME: {}},
            "WorkingDir": VOLUME,
            "Labels": labels,
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "scripts/image.sh"}],
    }


def build(args):
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(args.epoch))
    layout = args.out
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    annotations = {
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.created": created,
    }
    manifests = []
    report = []
    with tempfile.TemporaryDirectory() as workdir:
        for binary in args.binary:
            arch, static = elf_info(binary)
            tar = rootfs_layer(args, binary, arch, static, workdir)
            diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
            layer = dict(mediaType=MEDIA_LAYER, **blob(layout, gzip_bytes(tar)))
            config = dict(mediaType=MEDIA_CONFIG,
                          **blob(layout, canonical(image_config(args, arch, diff_id, created))))
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config,
                "layers": [layer],
                "annotations": annotations,
            }
            desc = dict(mediaType=MEDIA_MANIFEST, **blob(layout, canonical(manifest)))
            desc["platform"] = {"architecture": arch, "os": "linux"}
            manifests.append(desc)
            report.append((arch, static, layer, len(tar), desc["digest"]))
    if len(manifests) == 1:
        top = dict(manifests[0])
    else:
        index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests,
                 "annotations": annotations}
        top = dict(mediaType=MEDIA_INDEX, **blob(layout, canonical(index)))
    top["annotations"] = {"org.opencontainers.image.ref.name": args.version}
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top]}))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical({"imageLayoutVersion": "1.0.0"}))
    write_archive(layout, args.archive, args.epoch)
    for arch, static, layer, tar_size, digest in report:
        print(f"{arch}: manifest {digest} layer {layer['digest']} "
              f"{layer['size']} bytes compressed, {tar_size} uncompressed "
              f"({'static' if static else 'dynamic, with its shared libraries'})")
    print(f"tag {args.version}: {top['digest']}")
    print(f"layout {layout}, archive {args.archive}")


def write_archive(layout, archive, epoch):
    """The OCI archive: the layout's files in a tar, sorted, with fixed times and owners."""
    layer = Layer(epoch)
    for top, dirs, files in os.walk(layout):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                layer.file(os.path.relpath(path, layout), f.read())
    tmp = archive + ".tmp"
    with open(tmp, "wb") as f:
        f.write(layer.tar_bytes())
    os.replace(tmp, archive)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", action="append", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--source", default="unknown", help="where the source is (a git URL)")
    p.add_argument("--out", required=True)
    p.add_argument("--archive", required=True)
    p.add_argument("--rootfs", default=os.path.join(here, "..", "deploy", "image", "rootfs"))
    p.add_argument("--ca-bundle", default="/etc/ssl/certs/ca-certificates.crt")
    args = p.parse_args()
    args.epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    build(args)


if __name__ == "__main__":
    main()
