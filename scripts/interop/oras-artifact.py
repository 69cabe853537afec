#!/usr/bin/env python3
"""Push and pull an OCI artifact with oras-py (PyPI package `oras`), for scripts/interop.sh.

    oras-artifact.py push REGISTRY REPO TAG FILE --artifact-type T [--subject DIGEST]
                          [--chunk-size N] [--insecure | --ca CA.crt] [--user U --password P]
    oras-artifact.py pull REGISTRY REPO REF OUTDIR [--insecure | --ca CA.crt] [--user U ...]

REGISTRY is host:port. `push` uploads FILE as one layer (oras-py's default title
annotation, text/plain), an empty config ("{}", application/vnd.oci.empty.v1+json) and a
manifest with `artifactType` and, with --subject, a `subject` descriptor built from the
registry's own bytes of that manifest; it prints one JSON line {"status", "digest"}
(the registry's Docker-Content-Digest). --chunk-size uploads the layer in PATCH chunks of
that many bytes (POST, PATCH..., PUT) instead of oras-py's default POST + PUT. `pull`
writes the layers into OUTDIR and prints one JSON line {"files": [...]}.

oras-py 0.2 has no artifactType parameter (its push() builds the manifest itself), so a
subclass adds it in upload_manifest(); it has no referrers call either (the script checks
GET /v2/<name>/referrers/<digest> with curl). Basic auth uses oras-py's "basic" backend:
every request goes out anonymous first and is retried with credentials on a 401 (its
default "token" backend cannot answer a Basic challenge). No login() call: that writes
~/.docker/config.json.
"""
import argparse
import hashlib
import json
import os
import sys

import oras.defaults
import oras.oci
import oras.provider
import oras.version

EMPTY_MT = "application/vnd.oci.empty.v1+json"


class Client(oras.provider.Registry):
    artifact_type = None

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        print("manifest: " + json.dumps(manifest, sort_keys=True), file=sys.stderr)
        return super().upload_manifest(manifest, container)


def client_for(args):
    tls_verify = args.ca if args.ca else True
    c = Client(
        hostname=args.registry,
        insecure=args.insecure,
        tls_verify=tls_verify,
        auth_backend="basic" if args.user else "token",
    )
    if args.user:
        c.auth.set_basic_auth(args.user, args.password)
    return c


def subject_of(c, args):
    """A subject descriptor from the registry's bytes of REPO@DIGEST."""
    url = f"{c.prefix}://{args.registry}/v2/{args.repo}/manifests/{args.subject}"
    accept = ", ".join(oras.defaults.default_manifest_accepted_media_types)
    r = c.do_request(url, "GET", headers={"Accept": accept})
    if r.status_code != 200:
        sys.exit(f"GET subject {args.subject}: {r.status_code} {r.text[:300]}")
    digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
    if digest != args.subject:
        sys.exit(f"subject bytes hash to {digest}, not {args.subject}")
    media_type = json.loads(r.content).get("mediaType") or r.headers.get("Content-Type")
    return oras.oci.Subject(mediaType=media_type, digest=digest, size=len(r.content))


def cmd_push(args):
    c = client_for(args)
    c.artifact_type = args.artifact_type
    subject = subject_of(c, args) if args.subject else None
    # oras-py requires the files to be under the working directory.
    os.chdir(os.path.dirname(os.path.abspath(args.file)))
    target = f"{args.registry}/{args.repo}:{args.tag}"
    # A config path that does not exist: oras-py then uploads "{}" under the given type.
    config = f"{os.path.abspath(args.file)}.no-config:{EMPTY_MT}"
    kw = {}
    if args.chunk_size:
        kw = {"do_chunked": True, "chunk_size": args.chunk_size}
    r = c.push(
        target=target,
        files=[os.path.basename(args.file) + ":text/plain"],
        manifest_config=config,
        manifest_annotations={"org.example.interop": "oras-py"},
        subject=subject,
        quiet=True,
        **kw,
    )
    print(json.dumps({"status": r.status_code, "digest": r.headers.get("Docker-Content-Digest")}))


def cmd_pull(args):
    c = client_for(args)
    files = c.pull(target=f"{args.registry}/{args.repo}:{args.ref}" if not args.ref.startswith("sha256:")
                   else f"{args.registry}/{args.repo}@{args.ref}", outdir=args.outdir)
    print(json.dumps({"files": files}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("push", "pull"):
        s = sub.add_parser(name)
        s.add_argument("registry")
        s.add_argument("repo")
        s.add_argument("tag" if name == "push" else "ref")
        s.add_argument("file" if name == "push" else "outdir")
        s.add_argument("--insecure", action="store_true", help="plain HTTP")
        s.add_argument("--ca", help="CA bundle to verify the server with")
        s.add_argument("--user")
        s.add_argument("--password")
        if name == "push":
            s.add_argument("--artifact-type", required=True)
            s.add_argument("--subject")
            s.add_argument("--chunk-size", type=int, default=0)
    args = p.parse_args()
    print(f"oras-py {oras.version.__version__}", file=sys.stderr)
    {"push": cmd_push, "pull": cmd_pull}[args.cmd](args)


if __name__ == "__main__":
    main()
