#!/usr/bin/env bash
# Replication against `skopeo sync` (issue #29, point 6), in one run: N images in their own
# repositories on shared base layers (as CI makes them) are copied from an Origin to a fresh
# CNCF distribution 2.8.2 twice, once by `skopeo sync` and once by Origin's replication
# (jobs recorded while the target was down, run when Origin starts again). Reports per
# copier the time, the blob uploads the target completed, blobs uploaded twice, mounts,
# blob bytes uploaded and requests (from the target's access log). bench/replication.py
# does the work.
#
#   bench/replication.sh
#
# Environment (all optional):
#   BENCH_IMAGES     images (default 20)
#   BENCH_ROUNDS     rounds, each on fresh targets (default 3; the median time is reported)
#   BENCH_BASE_MIB   sizes of the shared base layers in MiB (default "32,16")
#   BENCH_REPL_CONCURRENCY  Origin's replication concurrency (default 4)
#   BENCH_OUT        also write the table there
#   BENCH_SKIP_BUILD=1, ORIGIN_BIN as in bench/lib.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT
no_args "$@"
need python3 skopeo docker-registry
build_origin
out=$(python3 "$BENCH_DIR/replication.py" --origin "$ORIGIN_BIN" \
  --images "${BENCH_IMAGES:-20}" --rounds "${BENCH_ROUNDS:-3}" \
  --base-mib "${BENCH_BASE_MIB:-32,16}" --concurrency "${BENCH_REPL_CONCURRENCY:-4}")
echo "$out"
if [ -n "${BENCH_OUT:-}" ]; then
  { echo "# Replication against skopeo sync ($(date -u +%F), $(nproc) cores)"; echo;
    echo "\`bench/replication.sh\` at $(git -C "$ROOT" rev-parse --short HEAD)"; echo;
    echo "$out"; } > "$BENCH_OUT"
fi
