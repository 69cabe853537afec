#!/usr/bin/env bash
# Origin against CNCF distribution 2.8.2 and nginx serving the same files statically, one
# server after the other in one run, same data, same clients. Prints one table: each
# figure, origin's ratio to each peer, server CPU per unit of work, peak RSS per phase, idle
# RSS after start. See bench/README.md.
#
#   bench/compare.sh            # ~7-8 minutes: 10 s per phase, blobs up to 512 MiB
#   bench/compare.sh --quick    # ~2-3 minutes: 3 s per phase, no 512 MiB blob
#   ORIGIN_IO_DRIVER=poll bench/compare.sh     # the same with origin's polling driver
#
# Environment (all optional):
#   BENCH_SECS          seconds per measured phase (default 10, --quick 3)
#   BENCH_LARGE_SECS    ... for large-blob GET phases (default BENCH_SECS)
#   BENCH_PUSH_SECS     ... for push phases (default BENCH_SECS)
#   BENCH_CONNS         connections for manifest/HEAD/4 KiB phases (default 64)
#   BENCH_LARGE_CONNS   connection counts for large-blob GETs (default "1 8")
#   BENCH_PUSH_STREAMS  stream counts for pushes (default "1 8")
#   BENCH_WRITE_STREAMS stream counts for manifest PUTs and 4 KiB pushes (default "1 8")
#   BENCH_PHASES        subset of "get push writes" to run (default all three)
#   BENCH_DD_MIB        size of the disk's own durable write (dd conv=fsync; default 512)
#   BENCH_PUSH_MIB      size of each pushed blob (default 64)
#   BENCH_CHUNK_MIB     PATCH size for chunked pushes (default 16)
#   BENCH_SERVERS       subset/order of "origin distribution nginx"
#   BENCH_TOOLS         subset of "wrk oha" for the small-request phases
#   BENCH_WORK          work directory (default: a new /tmp/origin-bench.*; storage of each
#                       server is deleted when it stops, the blob files are kept)
#   BENCH_DATA          where the generated blob files live (default $BENCH_WORK/seed; set it
#                       to reuse them across runs)
#   BENCH_OUT           also write the table (Markdown) to this file
#   BENCH_SKIP_BUILD=1  use the existing target/release/origin
#   ORIGIN_IO_DRIVER    auto (io_uring when allowed) or poll
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # TOOLS, EXTRA_HEADERS, ...: read by lib.sh's phase runners

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  SECS=${BENCH_SECS:-3}; SIZES=4k,1m,64m; LARGE="64m"
else
  SECS=${BENCH_SECS:-10}; SIZES=4k,1m,64m,512m; LARGE="64m 512m"
fi
LARGE_SECS=${BENCH_LARGE_SECS:-$SECS}
PUSH_SECS=${BENCH_PUSH_SECS:-$SECS}
CONNS=${BENCH_CONNS:-64}
LARGE_CONNS=${BENCH_LARGE_CONNS:-"1 8"}
PUSH_STREAMS=${BENCH_PUSH_STREAMS:-"1 8"}
WRITE_STREAMS=${BENCH_WRITE_STREAMS:-"1 8"}
DD_MIB=${BENCH_DD_MIB:-512}
PHASES=${BENCH_PHASES:-"get push writes"}
phase_on() { case " $PHASES " in *" $1 "*) return 0 ;; esac; return 1; }
PUSH_MIB=${BENCH_PUSH_MIB:-64}
CHUNK_MIB=${BENCH_CHUNK_MIB:-16}
SERVERS=${BENCH_SERVERS:-"origin distribution nginx"}
TOOLS=${BENCH_TOOLS:-"wrk oha"}
DRIVER=${ORIGIN_IO_DRIVER:-auto}
DATA=${BENCH_DATA:-$WORK/seed}
REPO=bench/app
RESULTS=$WORK/results.tsv
LOGS=$WORK/logs
mkdir -p "$LOGS"
: > "$RESULTS"

# shellcheck disable=SC2086  # TOOLS is a word list
# Only the peers this run starts need to be installed.
peers=()
case " $SERVERS " in *" nginx "*) peers+=(nginx) ;; esac
case " $SERVERS " in *" distribution "*) peers+=("${DISTRIBUTION_BIN:-docker-registry}") ;; esac
need $TOOLS curl python3 jq "${peers[@]}"
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "work dir: $WORK" >&2
build_origin

# The blob files, once; the push content is the smallest seeded blob of at least PUSH_MIB.
"$PY" "$BENCH_DIR/seed.py" --data "$DATA" --sizes "$SIZES" --repo "$REPO" \
  --layout "$WORK/www" --out "$WORK/seed-files.json" >/dev/null
PUSH_FILE=""
for s in 1m 64m 512m; do
  f=$(jq -r --arg s "$s" '.blobs[$s].path // empty' "$WORK/seed-files.json")
  sz=$(jq -r --arg s "$s" '.blobs[$s].size // 0' "$WORK/seed-files.json")
  if [ -n "$f" ] && [ "$sz" -ge $((PUSH_MIB << 20)) ]; then PUSH_FILE=$f; break; fi
done
[ -n "$PUSH_FILE" ] || { echo "no seeded blob is >= $PUSH_MIB MiB (BENCH_PUSH_MIB)" >&2; exit 1; }

SEED_JSON=$WORK/seed-files.json
ACCEPT=$(jq -r .accept "$SEED_JSON")

# push_phase SERVER PID ORDER MODE BASE_URL
push_phase() {
  local server=$1 pid=$2 order=$3 mode=$4 base=$5 s
  for s in $PUSH_STREAMS; do
    local free_gib
    free_gib=$(df -Pk "$WORK" | awk 'NR==2{print int($4/1048576)}')
    if [ "$free_gib" -lt 20 ]; then
      echo "  skipping $mode push at $s streams: only $free_gib GiB free in $WORK" >&2
      continue
    fi
    settle
    phase_begin "$pid"
    local out="$LOGS/$server-$order-push-$s.json"
    "$PY" "$BENCH_DIR/push.py" --url "$base" --repo bench/push --file "$PUSH_FILE" \
      --size-mib "$PUSH_MIB" -s "$s" -d "$PUSH_SECS" --mode "$mode" \
      --chunk-mib "$CHUNK_MIB" --run-id "$server-$mode-$s" > "$out" || true
    phase_end "$pid"
    local mibs bytes errs note
    mibs=$(jq -r '.mib_s // 0' "$out" 2>/dev/null || echo 0)
    bytes=$(jq -r '.bytes // 0' "$out" 2>/dev/null || echo 0)
    errs=$(jq -r '.errors // 1' "$out" 2>/dev/null || echo 1)
    if [ "$errs" != 0 ]; then
      note=$(jq -r '.first_error' "$out" 2>/dev/null || echo "see $out")
    else
      note=$(jq -r '"\(.pushes) pushes, \(.flavour), p50 \(.push_secs_p50)s"' "$out")
    fi
    local label="push $PUSH_MIB MiB $mode"
    [ "$mode" = chunked ] && label="push $PUSH_MIB MiB chunked ($CHUNK_MIB MiB PATCH)"
    record "$server" "$order" "$label" "$s" push.py "$mibs" MiB/s "$bytes" \
      "$PHASE_CPU" "$PHASE_HWM" "$errs" "$note"
  done
}

# writes_phase SERVER PID ORDER MODE BASE_URL: writes.py (manifest PUTs under new tags, or
# 4 KiB monolithic pushes) at each of WRITE_STREAMS for PUSH_SECS.
writes_phase() {
  local server=$1 pid=$2 order=$3 mode=$4 base=$5 s label
  case $mode in
    manifest) label="manifest PUT (new tag each)" ;;
    blob) label="push 4 KiB blob (monolithic)" ;;
  esac
  for s in $WRITE_STREAMS; do
    settle
    phase_begin "$pid"
    local out="$LOGS/$server-$order-writes-$s.json"
    "$PY" "$BENCH_DIR/writes.py" --url "$base" --mode "$mode" --size-kib 4 -s "$s" \
      -d "$PUSH_SECS" --run-id "$server-$mode-$s" > "$out" || true
    phase_end "$pid"
    local rate ops errs note
    rate=$(jq -r '.ops_s // 0' "$out" 2>/dev/null || echo 0)
    ops=$(jq -r '.ops // 0' "$out" 2>/dev/null || echo 0)
    errs=$(jq -r '.errors // 1' "$out" 2>/dev/null || echo 1)
    if [ "$errs" != 0 ]; then
      note=$(jq -r '.first_error' "$out" 2>/dev/null || echo "see $out")
    else
      note=$(jq -r '"p50 \(.p50_ms) ms, p99 \(.p99_ms) ms"' "$out")
    fi
    record "$server" "$order" "$label" "$s" writes.py "$rate" req/s "$ops" \
      "$PHASE_CPU" "$PHASE_HWM" "$errs" "$note"
  done
}

# The disk's own durable write rate, in the work directory's file system: the physical
# limit for a large push (which must be durable before it is acknowledged).
disk_phase() {
  settle
  local out="$LOGS/dd.txt" t0 t1 mibs
  t0=$(date +%s.%N)
  dd if=/dev/zero of="$WORK/dd.bin" bs=4M count=$((DD_MIB / 4)) conv=fsync 2>"$out"
  t1=$(date +%s.%N)
  rm -f "$WORK/dd.bin"
  mibs=$(awk -v m="$DD_MIB" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", m/(b-a)}')
  record disk 0 "disk: dd bs=4M conv=fsync ($DD_MIB MiB)" 1 dd "$mibs" MiB/s 0 - - 0 ""
  # Beside the 1-stream monolithic push too, so that row shows origin/disk.
  record disk 30 "push $PUSH_MIB MiB monolithic" 1 push.py "$mibs" MiB/s 0 - - 0 \
    "the disk's own rate (dd conv=fsync)"
}

run_server() {
  local server=$1 port pid store=""
  port=$(free_port)
  echo "== $server on 127.0.0.1:$port" >&2
  case $server in
    origin)
      store=$WORK/origin-data
      start_origin "$port" "$store" "$DRIVER"; pid=$ORIGIN_PID ;;
    distribution)
      store=$WORK/distribution-data
      start_distribution "$port" "$store"; pid=$DIST_PID ;;
    nginx)
      start_nginx "$port" "$WORK/www"; pid=$NGINX_PID ;;
    *) echo "unknown server $server" >&2; exit 2 ;;
  esac
  local base="http://127.0.0.1:$port"
  sleep 1
  local idle; idle=$(tree_rss "$pid")
  record "$server" 0 "idle RSS after start (MiB)" - - "$(awk -v k="$idle" 'BEGIN{printf "%.1f", k/1024}')" \
    MiB - - "$idle" 0 ""

  if [ "$server" != nginx ]; then
    phase_begin "$pid"
    local t0 t1
    t0=$(date +%s.%N)
    "$PY" "$BENCH_DIR/seed.py" --url "$base" --data "$DATA" --sizes "$SIZES" --repo "$REPO" \
      --chunk-mib "$CHUNK_MIB" --out "$WORK/seed-$server.json" >/dev/null 2>"$LOGS/seed-$server.txt" \
      || { cat "$LOGS/seed-$server.txt" >&2; echo "seeding $server failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    phase_end "$pid"
    local total secs
    total=$(jq '[.blobs[].size] | add' "$WORK/seed-$server.json")
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
    record "$server" 1 "seed: blobs $SIZES + manifests, 1 stream" 1 seed.py \
      "$(awk -v t="$total" -v s="$secs" 'BEGIN{printf "%.1f", t/s/1048576}')" MiB/s "$total" \
      "$PHASE_CPU" "$PHASE_HWM" 0 \
      "$(jq -r '[.blobs | to_entries[] | "\(.key) \(.value.method)"] | join(", ")' "$WORK/seed-$server.json")"
  fi

  # Every URL must answer 200 before it is measured.
  local manifest_url="$base/v2/$REPO/manifests/latest"
  local small_url
  small_url="$base/v2/$REPO/blobs/$(digest_of 4k)"
  local code
  for u in "$manifest_url" "$small_url"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT" "$u")
    [ "$code" = 200 ] || { echo "$server: $u answers $code" >&2; exit 1; }
  done
  wrk -t2 -c"$CONNS" -d1s -s "$BENCH_DIR/wrk/manifest.lua" "$manifest_url" >/dev/null 2>&1 || true

  if phase_on get; then
    small_phase "$server" "$pid" 10 "manifest GET by tag" "$manifest_url" manifest
    small_phase "$server" "$pid" 11 "HEAD blob (4 KiB)" "$small_url" head
    small_phase "$server" "$pid" 12 "GET 4 KiB blob" "$small_url" blob
    local order=20 size
    for size in $LARGE; do
      large_phase "$server" "$pid" "$order" "$size" "$base"
      order=$((order + 1))
    done
  fi
  if [ "$server" != nginx ] && phase_on push; then
    push_phase "$server" "$pid" 30 monolithic "$base"
    push_phase "$server" "$pid" 31 chunked "$base"
  fi
  if [ "$server" != nginx ] && phase_on writes; then
    writes_phase "$server" "$pid" 32 manifest "$base"
    writes_phase "$server" "$pid" 33 blob "$base"
  fi
  local end_rss; end_rss=$(tree_rss "$pid")
  record "$server" 90 "RSS at the end of the run (MiB)" - - \
    "$(awk -v k="$end_rss" 'BEGIN{printf "%.1f", k/1024}')" MiB - - "$end_rss" 0 ""
  if [ "$server" = origin ]; then
    local logged
    logged=$(grep -v 'no \[server.tls\] configured' "$WORK/origin-$port.log" || true)
    if [ -n "$logged" ]; then
      echo "  origin logged $(echo "$logged" | wc -l) warning/error lines, last ones:" >&2
      echo "$logged" | tail -n 5 >&2
    fi
  fi
  stop_pid "$pid"
  [ -n "$store" ] && rm -rf "$store"
  sync
}

if phase_on push; then disk_phase; fi
for server in $SERVERS; do
  run_server "$server"
done

T_END=$(date +%s)
cat > "$WORK/meta.json" <<JSON
{
  "title": "Origin vs nginx vs distribution ($( [ "$QUICK" = 1 ] && echo quick || echo full ) run)",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "origin": "$(origin_description), io_driver=$DRIVER",
  "distribution": "$("${DISTRIBUTION_BIN:-docker-registry}" --version 2>/dev/null | awk '{print $NF}')",
  "nginx": "$(nginx -v 2>&1 | sed 's/.*\///' || true), 2 workers, sendfile",
  "machine": "$(machine_description); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)",
  "phases": "${SECS}s small requests at $CONNS connections (wrk -t2, oha), ${LARGE_SECS}s large GETs at $LARGE_CONNS connections (getblob.py), ${PUSH_SECS}s pushes of $PUSH_MIB MiB blobs at $PUSH_STREAMS streams (push.py)",
  "wall time": "$((T_END - T_START)) s",
  "raw results": "$RESULTS, logs in $LOGS"
}
JSON
"$PY" "$BENCH_DIR/report.py" "$RESULTS" "$WORK/meta.json" | tee "$WORK/table.md"
if [ -n "${BENCH_OUT:-}" ]; then cp "$WORK/table.md" "$BENCH_OUT"; fi
