#!/usr/bin/env python3
"""Checks the events webhook-receiver.py recorded: a manifest.push of REPO:TAG with DIGEST,
signed (X-Registry-Signature-256 = HMAC-SHA256 of the body keyed by TOKEN, Bearer TOKEN).
Exit 0 when found and every recorded event's signature is right.

    webhook-check.py FILE TOKEN REPO TAG DIGEST
"""
import hashlib
import hmac
import json
import sys

path, token, repo, tag, digest = sys.argv[1:6]
found = False
for line in open(path):
    req = json.loads(line)
    body, headers = req["body"].encode(), req["headers"]
    want = "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    if headers.get("x-registry-signature-256") != want:
        sys.exit(f"bad signature on {req['body']}")
    if headers.get("authorization") != f"Bearer {token}":
        sys.exit("missing bearer token")
    ev = json.loads(body)
    if (ev["kind"], ev["repository"], ev.get("tag"), ev["digest"]) == ("manifest.push", repo, tag, digest):
        found = True
sys.exit(0 if found else f"no manifest.push of {repo}:{tag} {digest} in {path}")
