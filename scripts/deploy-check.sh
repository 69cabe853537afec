#!/usr/bin/env bash
# The deploy checks (tests/deploy, pytest): the container image (layout, reproducibility,
# running as PID 1 as uid 65532, pushing itself, io_uring blocked), the Kubernetes overlays
# (kubectl kustomize, kubernetes-validate, checkov, the rendered pods answering their
# probes), the compose files and the release script. Needs root (namespaces, chroot, mount).
#
#   scripts/deploy-check.sh                       image from the static release build
#   ORIGIN_BIN=target/debug/origin scripts/deploy-check.sh   image from a built binary
#
# Installs what it needs: kubectl (Debian) when missing, and a virtualenv at
# $ORIGIN_DEPLOY_VENV (default /opt/origin-deploy) with pytest, PyYAML, kubernetes-validate
# and checkov; moto (the stand-in for MinIO and S3) through scripts/moto.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ORIGIN_DEPLOY_VENV:-/opt/origin-deploy}

if ! command -v kubectl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl
fi
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'pytest==9.1.1' 'PyYAML==6.0.4' 'kubernetes-validate==1.37.0' 'checkov==3.3.30'
fi
scripts/moto.sh

exec "$venv/bin/pytest" -p no:cacheprovider -q -rA tests/deploy "$@"
