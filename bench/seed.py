#!/usr/bin/env python3
"""Seed a registry for the benchmarks, through the registry API only (Python 3 stdlib).

Generates blob files once (4 KiB, 1 MiB, 64 MiB, 512 MiB by default) in --data, then pushes
them to --url (if given): monolithic uploads (POST ?digest= with the body; a server that
answers 202 to that, like distribution 2.x, gets the POST + PUT ?digest= monolithic flow
instead) and chunked uploads (POST, PATCH with Content-Range per chunk, PUT ?digest=), alternating by blob. Then
an image config, one OCI manifest per blob tagged with the size (4k, 1m, ...) and a manifest
with every layer tagged `latest`. Prints the digests and writes them as JSON (--out) for the
other scripts:

  {"url", "repo", "blobs": {"4k": {"digest", "size", "path", "method", "secs"}, ...},
   "config": {...}, "manifests": {"latest": {"digest", "path", "media_type", "size"}, ...}}

  bench/seed.py --url http://127.0.0.1:5000 --data /tmp/seed --out seed.json
  bench/seed.py --data /tmp/seed --layout /tmp/www     # no registry: files + nginx docroot

--layout lays the same files out as a static docroot whose paths are the registry URLs
(v2/<repo>/blobs/<digest>, v2/<repo>/manifests/<tag>), for nginx.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.parse

MIB = 1 << 20
SIZES = {"4k": 4 << 10, "1m": MIB, "64m": 64 * MIB, "512m": 512 * MIB}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
BLOCK = 4 * MIB


# ---------------------------------------------------------------- data files

def generate(path, size, label):
    """Random-looking content, fast: one 4 MiB urandom tile, each block stamped with the
    label and its index so no two blocks (nor two files) are alike."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    tile = bytearray(os.urandom(min(size, BLOCK)))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        done, i = 0, 0
        while done < size:
            n = min(BLOCK, size - done)
            stamp = hashlib.sha256(f"{label}:{i}".encode()).digest()
            k = min(len(stamp), n)
            tile[:k] = stamp[:k]
            f.write(memoryview(tile)[:n])
            done += n
            i += 1
    os.replace(tmp, path)


def file_sha256(path, length=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = os.path.getsize(path) if length is None else length
        buf = bytearray(BLOCK)
        while left:
            n = f.readinto(memoryview(buf)[: min(BLOCK, left)])
            if not n:
                raise IOError(f"{path}: short file")
            h.update(memoryview(buf)[:n])
            left -= n
    return h


def prepare(data_dir, labels):
    """Blob files and their digests (cached in data_dir/digests.json)."""
    os.makedirs(data_dir, exist_ok=True)
    cache_path = os.path.join(data_dir, "digests.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
    blobs = {}
    for label in labels:
        size = SIZES[label]
        path = os.path.join(data_dir, f"blob-{label}.bin")
        key = f"{label}:{size}"
        if key not in cache or not os.path.exists(path) or os.path.getsize(path) != size:
            generate(path, size, label)
            cache[key] = "sha256:" + file_sha256(path).hexdigest()
        blobs[label] = {"digest": cache[key], "size": size, "path": path}
    with open(cache_path, "w") as f:
        json.dump(cache, f, indent=1)
    return blobs


# ---------------------------------------------------------------- HTTP

class Registry:
    """One keep-alive connection to a registry, reopened when the server closes it."""

    def __init__(self, url, cafile=None, user=None, timeout=600):
        u = urllib.parse.urlsplit(url)
        self.https = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.https else 80)
        self.ctx = ssl.create_default_context(cafile=cafile) if self.https else None
        self.timeout = timeout
        self.auth = None
        if user:
            self.auth = "Basic " + base64.b64encode(user.encode()).decode()
        self.conn = None

    def _connect(self):
        if self.conn is None:
            if self.https:
                self.conn = http.client.HTTPSConnection(
                    self.host, self.port, context=self.ctx, timeout=self.timeout,
                    blocksize=BLOCK)
            else:
                self.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout, blocksize=BLOCK)
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds
            # the body until the server's delayed ACK (~40 ms), and small requests measure
            # that instead of the server.
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, file_part=None):
        """Sends one request. body: bytes; file_part: (path, offset, length, suffix) streamed
        from the file with large writes (sendfile on plain HTTP). Returns (status, headers
        dict with lower-case names, body bytes)."""
        headers = dict(headers or {})
        if self.auth:
            headers.setdefault("Authorization", self.auth)
        if file_part is not None:
            length = file_part[2] + len(file_part[3] or b"")
        else:
            length = len(body or b"")
        if method in ("POST", "PUT", "PATCH") or length:
            headers["Content-Length"] = str(length)
        for attempt in (0, 1):
            conn = self._connect()
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                if file_part is not None:
                    send_file(conn.sock, *file_part)
                elif body:
                    conn.sock.sendall(body)
                resp = conn.getresponse()
                data = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return resp.status, hdrs, data
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                # A kept-alive connection the server closed meanwhile: retry once, fresh.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


def send_file(sock, path, offset, length, suffix=None):
    with open(path, "rb") as f:
        if isinstance(sock, ssl.SSLSocket):
            buf = bytearray(BLOCK)
            f.seek(offset)
            left = length
            while left:
                n = f.readinto(memoryview(buf)[: min(BLOCK, left)])
                if not n:
                    raise IOError(f"{path}: short file")
                sock.sendall(memoryview(buf)[:n])
                left -= n
        else:
            sent = 0
            while sent < length:
                n = sock.sendfile(f, offset + sent, length - sent)
                if not n:
                    raise IOError(f"{path}: short file")
                sent += n
    if suffix:
        sock.sendall(suffix)


def with_query(location, **params):
    """Location of an upload (absolute or relative, maybe with a query) plus parameters."""
    u = urllib.parse.urlsplit(location)
    path = u.path
    q = u.query
    extra = urllib.parse.urlencode(params)
    q = f"{q}&{extra}" if q and extra else (q or extra)
    return f"{path}?{q}" if q else path


class HTTPFailure(Exception):
    pass


def expect(status, hdrs, data, want, what):
    if status not in want:
        raise HTTPFailure(f"{what}: HTTP {status} {data[:300]!r}")


def monolithic_flavour(reg, repo):
    """'post' when the server takes a blob in the POST ?digest= itself (201), else 'put'
    (distribution 2.x answers 202 and ignores the body). Probed once with a tiny blob."""
    if getattr(reg, "mono_flavour", None):
        return reg.mono_flavour
    data = b"origin-bench monolithic probe\n"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    st, h, d = reg.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body=data,
                           headers={"Content-Type": "application/octet-stream"})
    if st == 201:
        reg.mono_flavour = "post"
    elif st == 202:
        reg.mono_flavour = "put"
        reg.request("DELETE", with_query(h["location"]))
    else:
        raise HTTPFailure(f"monolithic probe: HTTP {st} {d[:300]!r}")
    return reg.mono_flavour


def upload_monolithic(reg, repo, digest, path, length, suffix=None, mode="auto"):
    """One monolithic upload. mode: 'post' (POST ?digest= with the body), 'put' (empty POST,
    then PUT ?digest= with the body) or 'auto' (post where the server supports it, see
    monolithic_flavour). Returns the flavour used."""
    if mode == "auto":
        mode = monolithic_flavour(reg, repo)
    part = (path, 0, length, suffix)
    if mode == "post":
        st, h, d = reg.request(
            "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}",
            headers={"Content-Type": "application/octet-stream"}, file_part=part)
        expect(st, h, d, (201,), "monolithic POST ?digest=")
        return "post"
    st, h, d = reg.request("POST", f"/v2/{repo}/blobs/uploads/")
    expect(st, h, d, (202,), "POST upload")
    st, h, d = reg.request(
        "PUT", with_query(h["location"], digest=digest),
        headers={"Content-Type": "application/octet-stream"}, file_part=part)
    expect(st, h, d, (201,), "monolithic PUT ?digest=")
    return "put"


def upload_chunked(reg, repo, digest, path, length, chunk, suffix=None):
    """POST, PATCH per chunk with Content-Range, PUT ?digest= with no body."""
    st, h, d = reg.request("POST", f"/v2/{repo}/blobs/uploads/")
    expect(st, h, d, (202,), "POST upload")
    loc = h["location"]
    total = length + len(suffix or b"")
    off = 0
    while off < total:
        n = min(chunk, total - off)
        # The chunk's bytes: from the file, then (last chunk) the suffix.
        from_file = max(0, min(n, length - off))
        tail = (suffix or b"")[max(0, off - length): max(0, off + n - length)] if suffix else None
        st, h, d = reg.request(
            "PATCH", with_query(loc),
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{off}-{off + n - 1}"},
            file_part=(path, off, from_file, tail))
        expect(st, h, d, (202,), f"PATCH {off}-{off + n - 1}")
        loc = h.get("location", loc)
        off += n
    st, h, d = reg.request("PUT", with_query(loc, digest=digest))
    expect(st, h, d, (201,), "PUT ?digest=")
    return "chunked"


def push_bytes(reg, repo, data):
    """A small blob from memory, monolithic."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    hdrs = {"Content-Type": "application/octet-stream"}
    if monolithic_flavour(reg, repo) == "post":
        st, h, d = reg.request("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}",
                               body=data, headers=hdrs)
    else:
        st, h, d = reg.request("POST", f"/v2/{repo}/blobs/uploads/")
        expect(st, h, d, (202,), "POST upload")
        st, h, d = reg.request("PUT", with_query(h["location"], digest=digest), body=data,
                               headers=hdrs)
    expect(st, h, d, (201,), "small blob")
    return digest


# ---------------------------------------------------------------- main

def build_manifests(data_dir, blobs, labels):
    """The image config and one OCI manifest per blob (tag = size label) plus `latest` with
    every layer, built locally (deterministic bytes) and written next to the blobs."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [blobs[x]["digest"] for x in labels]},
        "config": {},
    }, sort_keys=True, separators=(",", ":")).encode()
    cfg_path = os.path.join(data_dir, "config.json")
    with open(cfg_path, "wb") as f:
        f.write(config)
    cfg = {"digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config),
           "path": cfg_path, "media_type": OCI_CONFIG}

    def layer(label):
        return {"mediaType": OCI_LAYER, "digest": blobs[label]["digest"],
                "size": blobs[label]["size"]}

    manifests = {}
    for tag, layers in [(label, [label]) for label in labels] + [("latest", labels)]:
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": cfg["digest"],
                                      "size": cfg["size"]},
                           "layers": [layer(x) for x in layers]},
                          sort_keys=True, separators=(",", ":")).encode()
        path = os.path.join(data_dir, f"manifest-{tag}.json")
        with open(path, "wb") as f:
            f.write(body)
        manifests[tag] = {"digest": "sha256:" + hashlib.sha256(body).hexdigest(),
                          "path": path, "media_type": OCI_MANIFEST, "size": len(body)}
    return cfg, manifests


def push_all(args, blobs, labels, cfg, manifests):
    reg = Registry(args.url, cafile=args.cacert, user=args.user)
    repo = args.repo
    chunk = max(1, int(args.chunk_mib * MIB))
    st, h, d = reg.request("GET", "/v2/")
    expect(st, h, d, (200,), "GET /v2/")
    for i, label in enumerate(labels):
        b = blobs[label]
        method = args.method
        if method == "alternate":
            method = "monolithic" if i % 2 == 0 else "chunked"
        t = time.monotonic()
        if method == "monolithic":
            used = upload_monolithic(reg, repo, b["digest"], b["path"], b["size"], mode=args.mono)
            b["method"] = f"monolithic-{used}"
        else:
            upload_chunked(reg, repo, b["digest"], b["path"], b["size"], chunk)
            b["method"] = f"chunked-{args.chunk_mib:g}MiB"
        b["secs"] = round(time.monotonic() - t, 3)
        st, h, d = reg.request("HEAD", f"/v2/{repo}/blobs/{b['digest']}")
        expect(st, h, d, (200,), f"HEAD blob {label}")
        if int(h.get("content-length", -1)) != b["size"]:
            raise HTTPFailure(f"HEAD blob {label}: Content-Length {h.get('content-length')}")
        print(f"blob {label:>5} {b['digest']} {b['method']} "
              f"{b['size'] / MIB / max(b['secs'], 1e-6):.0f} MiB/s", file=sys.stderr)

    with open(cfg["path"], "rb") as f:
        if push_bytes(reg, repo, f.read()) != cfg["digest"]:
            raise HTTPFailure("config digest differs")
    for tag, m in manifests.items():
        with open(m["path"], "rb") as f:
            body = f.read()
        st, h, d = reg.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body,
                               headers={"Content-Type": m["media_type"]})
        expect(st, h, d, (201,), f"PUT manifest {tag}")
        if h.get("docker-content-digest", m["digest"]) != m["digest"]:
            raise HTTPFailure(f"manifest {tag}: server digest {h.get('docker-content-digest')}")
        st, h, d = reg.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        expect(st, h, d, (200,), f"GET manifest {tag}")
        if d != body:
            raise HTTPFailure(f"GET manifest {tag}: different bytes")
        print(f"manifest {tag:>6} {m['digest']}", file=sys.stderr)
    reg.close()


def layout(docroot, repo, blobs, cfg, manifests):
    """A static docroot whose paths are the registry's URLs: v2/<repo>/blobs/<digest> (hard
    links to the blob files, copies across file systems) and v2/<repo>/manifests/<tag> and
    /<digest>, so one URL works against a registry and a plain web server."""
    base = os.path.join(docroot, "v2", repo)
    os.makedirs(os.path.join(base, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(base, "manifests"), exist_ok=True)
    files = [(b["path"], os.path.join(base, "blobs", b["digest"])) for b in blobs.values()]
    files.append((cfg["path"], os.path.join(base, "blobs", cfg["digest"])))
    for tag, m in manifests.items():
        files.append((m["path"], os.path.join(base, "manifests", tag)))
        files.append((m["path"], os.path.join(base, "manifests", m["digest"])))
    for src, dst in files:
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    with open(os.path.join(docroot, "v2", "index.json"), "w") as f:
        f.write("{}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="registry base URL, e.g. http://127.0.0.1:5000")
    ap.add_argument("--repo", default="bench/app")
    ap.add_argument("--data", required=True, help="directory for the blob files (kept, reused)")
    ap.add_argument("--sizes", default="4k,1m,64m,512m",
                    help="comma-separated subset of " + ",".join(SIZES))
    ap.add_argument("--out", help="JSON file to write (default: stdout only)")
    ap.add_argument("--layout", metavar="DOCROOT",
                    help="also lay the files out as a static docroot mirroring the URLs")
    ap.add_argument("--method", choices=["alternate", "monolithic", "chunked"],
                    default="alternate", help="upload method per blob (default: alternate)")
    ap.add_argument("--mono", choices=["auto", "post", "put"], default="auto",
                    help="monolithic flavour (default auto: POST ?digest=, else POST+PUT)")
    ap.add_argument("--chunk-mib", type=float, default=16, help="PATCH size (default 16)")
    ap.add_argument("--cacert", help="CA bundle for https")
    ap.add_argument("--user", help="user:password for Basic auth")
    args = ap.parse_args()

    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for label in labels:
        if label not in SIZES:
            ap.error(f"unknown size {label}")
    t0 = time.monotonic()
    blobs = prepare(args.data, labels)
    cfg, manifests = build_manifests(args.data, blobs, labels)
    print(f"data ready in {time.monotonic() - t0:.1f}s: {args.data}", file=sys.stderr)
    if args.url:
        t0 = time.monotonic()
        push_all(args, blobs, labels, cfg, manifests)
        print(f"pushed in {time.monotonic() - t0:.1f}s to {args.url}", file=sys.stderr)
    if args.layout:
        layout(args.layout, args.repo, blobs, cfg, manifests)
    result = {"url": args.url, "repo": args.repo, "blobs": blobs, "config": cfg,
              "manifests": manifests, "accept": ACCEPT}
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    try:
        main()
    except HTTPFailure as e:
        print(f"seed: {e}", file=sys.stderr)
        sys.exit(1)
