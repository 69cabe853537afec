#!/usr/bin/env bash
# The registry's maintenance at scale (issue #27 point 5), on the fs backend. Per size
# (manifests / blobs / repositories / GC garbage), seeds the layout directly
# (bench/seed_layout.py: a registry as pushes leave it, plus unreferenced blobs that GC may
# collect), then measures with the release binary:
#   - `origin gc --dry-run` and a real `origin gc` (collects the garbage): wall time and peak
#     RSS (/usr/bin/time);
#   - `origin scrub` (checks every blob's content, every revision's edges, every edge);
#   - `origin scrub --retention --dry-run` with the rule `top_pushed(10)`;
#   - `origin serve` start-up: time to the first 200 from /readyz, RSS then, and the time the
#     background count of stored bytes takes (`origin_storage_blob_bytes_counted`) with the
#     peak RSS up to then;
#   - latency of tag listings and manifest PUTs (bench/maint_load.py, paced) in a running
#     server: once with GC off, once while its first GC pass collects new garbage.
#
#   bench/maintenance-scale.sh
#
# Environment (all optional):
#   BENCH_SIZES     "MANIFESTS:BLOBS:REPOS:GARBAGE ..." (default
#                   "10000:100000:100:10000 100000:1000000:1000:100000")
#   BENCH_DATA      where the layouts go (default /work/scale-data; removed at the end)
#   BENCH_RATE      requests a second of each load client (default 50)
#   BENCH_LOAD_SECS seconds of the load without GC (default 20)
#   BENCH_OUT       also write the table there
#   BENCH_REUSE=1   reuse a layout seeded before under BENCH_DATA (with its `seeded` file)
#   BENCH_KEEP=1    keep the layouts at the end
#   BENCH_SCRUB_TIMEOUT  stop scrub after this many seconds (the cell says so, with the
#                   peak RSS until then)
#   BENCH_SKIP      offline steps not run (cells `-`): any of "gc scrub retention"
#   BENCH_COUNT_WAIT  seconds to wait at most for the start-up byte count before the load
#                   (default 3600; the cell then says it was still running)
#   BENCH_SKIP_BUILD=1, ORIGIN_BIN as in bench/lib.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT

no_args "$@"
SIZES=${BENCH_SIZES:-"10000:100000:100:10000 100000:1000000:1000:100000"}
DATA=${BENCH_DATA:-/work/scale-data}
RATE=${BENCH_RATE:-50}
LOAD_SECS=${BENCH_LOAD_SECS:-20}
SEED="python3 $BENCH_DIR/seed_layout.py"
LOAD="python3 $BENCH_DIR/maint_load.py"
need python3 curl /usr/bin/time
build_origin
ROWS=$WORK/rows.md
: >"$ROWS"
row() { echo "| $* |" | tee -a "$ROWS"; }

# config FILE ROOT PORT GC_ENABLED: one registry config; retention keeps the 10 latest per
# repository (a dry run judges every manifest).
config() {
  cat >"$1" <<TOML
[server]
bind_address = "127.0.0.1"
port = $3
[log]
filter = "warn,origin::serve=info"
[storage.fs]
root_dir = "$2"
[gc]
enabled = $4
interval = "2s"
grace_period = "1h"
[[repository]]
namespace = ""
policy_default_allow = true
retention = ["top_pushed(10)"]
TOML
}

# timed NAME CMD...: runs CMD under /usr/bin/time; sets T_SECS and T_KIB, keeps its output.
timed() {
  local name=$1; shift
  local stopped=0
  /usr/bin/time -f "%e %M" -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || {
    local rc=$?
    # scrub exits 3 when it has findings, `timeout` 124 when it stopped it; anything else
    # is a failure.
    case $rc in
      3) ;;
      124) stopped=1 ;;
      *) echo "$name failed ($rc):" >&2; tail "$WORK/$name.err" >&2; exit 1 ;;
    esac
  }
  read -r T_SECS T_KIB < <(grep -v '^Command' "$WORK/$name.time")
  [ "$stopped" = 0 ] || T_SECS="stopped at $T_SECS"
  echo "  $name: ${T_SECS}s ${T_KIB} KiB; $(tail -1 "$WORK/$name.out")" >&2
}

# serve CFG: starts origin; sets SRV_PID and READY_MS (exec to the first 200 from /readyz).
serve() {
  local port t0
  port=$(sed -n 's/^port = //p' "$1")
  t0=$(date +%s%N)
  "$ORIGIN_BIN" serve -c "$1" 2>>"$WORK/serve.log" &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  for _ in $(seq 1 6000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    sleep 0.01
  done
  READY_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
  URL=http://127.0.0.1:$port
}

stop() { kill "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true; }

skip() { case " ${BENCH_SKIP:-} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

metric() { curl -s "$URL/metrics" | awk -v n="$1" '$1 == n {print $2}'; }

row "manifests / blobs (repositories) | seed s | gc --dry-run s / peak KiB | gc (collects N) s / peak KiB | scrub s / peak KiB | retention --dry-run s / peak KiB (would delete) | start-up to /readyz ms / KiB | bytes count s / peak KiB | listing p50/p99/max ms, no GC | listing during GC | PUT p50/p99/max ms, no GC | PUT during GC | GC pass in server s / peak KiB"
row "---|---|---|---|---|---|---|---|---|---|---|---|---"
for size in $SIZES; do
  IFS=: read -r MANIFESTS BLOBS REPOS GARBAGE <<<"$size"
  dir=$DATA/$MANIFESTS-$BLOBS
  root=$dir/root
  echo "== $MANIFESTS manifests, $BLOBS blobs, $REPOS repositories (df: $(df -h --output=avail "$DATA" | tail -1))" >&2
  if [ "${BENCH_REUSE:-0}" = 1 ] && [ -f "$dir/seeded" ]; then
    seed_s=$(cat "$dir/seeded") # a layout seeded before (by this script or by hand)
  else
    rm -rf "$dir"
    mkdir -p "$root"
    seed_s=$($SEED registry "$root" "$MANIFESTS" "$BLOBS" "$REPOS")
    echo "$seed_s" >"$dir/seeded"
  fi
  skip gc || $SEED garbage "$root" "$GARBAGE" a >/dev/null
  cfg=$WORK/origin-$MANIFESTS.toml
  config "$cfg" "$root" "$(free_port)" false

  gcd=- gcr=- scrub=- ret=-
  if ! skip gc; then
    timed gc-dry "$ORIGIN_BIN" gc --dry-run -c "$cfg"; gcd="$T_SECS / $T_KIB"
    timed gc "$ORIGIN_BIN" gc -c "$cfg"; gcr="$T_SECS / $T_KIB ($GARBAGE)"
  fi
  if ! skip scrub; then
    timed scrub ${BENCH_SCRUB_TIMEOUT:+timeout "$BENCH_SCRUB_TIMEOUT"} "$ORIGIN_BIN" scrub -c "$cfg"
    scrub="$T_SECS / $T_KIB"
  fi
  if ! skip retention; then
    timed retention "$ORIGIN_BIN" scrub --retention --dry-run -c "$cfg"
    would=$(tail -1 "$WORK/retention.out" | awk '{print $4}')
    ret="$T_SECS / $T_KIB ($would)"
  fi

  # Start-up, then the load with GC off.
  repo=scale/r0001
  serve "$cfg"
  ready="$READY_MS / $(rss_kib "$SRV_PID")"
  t0=$(date +%s)
  until [ "$(metric origin_storage_blob_bytes_counted)" = 1 ]; do
    [ $(( $(date +%s) - t0 )) -lt "${BENCH_COUNT_WAIT:-3600}" ] || break
    sleep 0.2
  done
  count="$(( $(date +%s) - t0 )) / $(hwm_kib "$SRV_PID")"
  [ "$(metric origin_storage_blob_bytes_counted)" = 1 ] || count="still counting at $count"
  read -r l50 l99 lmax _ p50 p99 pmax _ _ < <($LOAD fixed "$URL" "$root" "$repo" "$LOAD_SECS" "$RATE")
  stop

  # The same load while the server's first pass collects fresh garbage.
  $SEED garbage "$root" "$GARBAGE" b >/dev/null
  config "$cfg" "$root" "$(free_port)" true
  serve "$cfg"
  clear_hwm "$SRV_PID"
  read -r gl50 gl99 glmax _ gp50 gp99 gpmax _ win < <($LOAD until-gc "$URL" "$root" "$repo" 3600 "$RATE")
  inpass="$win / $(hwm_kib "$SRV_PID")"
  stop
  grep '"gc pass"\|gc pass' "$WORK/serve.log" | tail -1 >&2 || true

  row "$MANIFESTS / $BLOBS ($REPOS) | $seed_s | $gcd | $gcr | $scrub | $ret | $ready | $count | $l50/$l99/$lmax | $gl50/$gl99/$glmax | $p50/$p99/$pmax | $gp50/$gp99/$gpmax | $inpass"
  [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
done
[ -n "${BENCH_OUT:-}" ] && cp "$ROWS" "$BENCH_OUT"
echo "work directory: $WORK" >&2
