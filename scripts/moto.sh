#!/usr/bin/env bash
# Installs moto[server] (PyPI), the local S3 server of the S3 backend's tests, into a
# virtualenv at $ORIGIN_MOTO_VENV (default /opt/origin-moto). Idempotent: does nothing when
# moto_server is already there. Tests find it at /opt/origin-moto/bin/moto_server, at
# $ORIGIN_MOTO_SERVER, or on PATH.
set -euo pipefail
venv="${ORIGIN_MOTO_VENV:-/opt/origin-moto}"
# Pinned: moto 5.2 answers a CreateMultipartUpload presigned with `?uploads=1` with a 500 (its
# new response serialiser finds no operation for it) and a quiet DeleteObjects with no body.
# Real S3 and moto 5.1 accept both.
pin="5.1.22"
if [ -x "$venv/bin/moto_server" ] \
  && [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$pin" ]; then
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$pin"
"$venv/bin/moto_server" --help >/dev/null
echo "moto installed in $venv"
