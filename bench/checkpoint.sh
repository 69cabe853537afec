#!/usr/bin/env bash
# Manifest PUT latency while another process writes 2 GiB to the same filesystem: the write
# journal's checkpoint runs syncfs(2), which waits for that writeback too. Runs two origin
# binaries one after the other in one session (BEFORE_BIN, then ORIGIN_BIN), each first on a
# quiet filesystem and then with `dd` writing beside it, and prints p50/p99 of writes.py.
#
#   BEFORE_BIN=/path/to/old/origin bench/checkpoint.sh [secs]
#
# Without BEFORE_BIN only ORIGIN_BIN (target/release/origin) is measured.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need curl python3 dd
SECS=${1:-20}
STREAMS=${BENCH_STREAMS:-4}
DD_MIB=${BENCH_DD_MIB:-2048}
build_origin

bins=()
[ -n "${BEFORE_BIN:-}" ] && bins+=("before=$BEFORE_BIN")
bins+=("after=$ORIGIN_BIN")

printf '| binary | filesystem | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |\n|---|---|---|---|---|---|---|---|\n'
for entry in "${bins[@]}"; do
  label=${entry%%=*}
  ORIGIN_BIN=${entry#*=}
  for load in quiet dd; do
    root="$WORK/$label-$load"
    port=$(free_port)
    start_origin "$port" "$root"
    dd_pid=
    if [ "$load" = dd ]; then
      # Starts a little after the writers, and is still being written back when they end.
      (sleep 2 && dd if=/dev/zero of="$WORK/big-$label" bs=1M count="$DD_MIB" status=none) &
      dd_pid=$!
    fi
    out=$(python3 "$BENCH_DIR/writes.py" --url "http://127.0.0.1:$port" --mode manifest \
      -s "$STREAMS" -d "$SECS")
    [ -n "$dd_pid" ] && wait "$dd_pid"
    stop_pid "$ORIGIN_PID"
    rm -rf "$root" "$WORK/big-$label"
    sync
    python3 - "$label" "$load" "$out" <<'PY'
import json, sys
label, load, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
fs = "quiet" if load == "quiet" else "dd writing beside"
print(f"| {label} | {fs} | {out['ops_s']:.0f} | {out['p50_ms']:.1f} | {out['p99_ms']:.1f} | {out['p999_ms']:.1f} | {out['max_ms']:.1f} | {out['errors']} |")
PY
  done
done
