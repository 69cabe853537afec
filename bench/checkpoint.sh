#!/usr/bin/env bash
# Manifest PUT latency while another process writes 2 GiB to the same filesystem: the write
# journal's checkpoint runs syncfs(2), which waits for that writeback too. Runs two origin
# binaries one after the other in one session (BEFORE_BIN, then ORIGIN_BIN), each first on a
# quiet filesystem and then with `dd` writing beside it, and prints p50/p99 of writes.py.
#
#   BEFORE_BIN=/path/to/old/origin bench/checkpoint.sh [secs]
#
# Without BEFORE_BIN only ORIGIN_BIN (target/release/origin) is measured.
#
# BENCH_LOOPFS=ext4 (or ext4-nojournal, or xfs) runs on a fresh filesystem made in an image
# file and mounted through a loop device (root only), instead of wherever /tmp is: the
# checkpoint's mode depends on the filesystem (src/storage/fs/journal/durable.rs), and a
# VM's root filesystem may have no journal. BENCH_LOOPFS_GIB sets the image size (12).
set -euo pipefail
if [ -n "${BENCH_LOOPFS:-}" ]; then
  case $BENCH_LOOPFS in
    ext4) mkfs=(mkfs.ext4 -q -F -O has_journal) ;;
    ext4-nojournal) mkfs=(mkfs.ext4 -q -F -O ^has_journal) ;;
    xfs) mkfs=(mkfs.xfs -q -f) ;;
    *) echo "BENCH_LOOPFS: ext4, ext4-nojournal or xfs" >&2; exit 2 ;;
  esac
  LOOP_DIR=$(mktemp -d /tmp/origin-loopfs.XXXXXX)
  # The whole image allocated, so the loop device's direct I/O allocates nothing beneath.
  fallocate -l "${BENCH_LOOPFS_GIB:-12}G" "$LOOP_DIR/image"
  "${mkfs[@]}" "$LOOP_DIR/image"
  LOOP_DEV=$(losetup -f --show --direct-io=on "$LOOP_DIR/image")
  mkdir "$LOOP_DIR/mnt"
  mount "$LOOP_DEV" "$LOOP_DIR/mnt"
  export BENCH_WORK=$LOOP_DIR/mnt/work
fi
source "$(dirname "$0")/lib.sh"
if [ -n "${BENCH_LOOPFS:-}" ]; then
  unmount_loopfs() {
    cleanup
    umount "$LOOP_DIR/mnt" && losetup -d "$LOOP_DEV" && rm -rf "$LOOP_DIR"
  }
  trap unmount_loopfs EXIT
fi
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
