# shellcheck shell=bash
# Shared helpers for the bench scripts: start/stop servers by PID, measure CPU and RSS,
# run wrk and oha. Source it; every server started here is stopped by its PID on exit.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK=${BENCH_WORK:-$(mktemp -d /tmp/origin-bench.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
# The binary under test: target/release/origin, or under $CARGO_TARGET_DIR when set.
ORIGIN_BIN=${ORIGIN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/origin}

cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  rmdir "$WORK" 2>/dev/null || true # only when nothing was written (--help, early errors)
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# no_args "$@": a script that takes no argument prints its header comment for -h/--help
# and refuses anything else.
no_args() {
  case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
}

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (see bench/README.md)" >&2; exit 1; }
  done
}

# build_origin: cargo build --release, unless BENCH_SKIP_BUILD=1 (then the existing binary).
build_origin() {
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -q)
  fi
  [ -x "$ORIGIN_BIN" ] || { echo "no $ORIGIN_BIN" >&2; exit 1; }
}

# free_port: asks the kernel for an unused loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL [curl args...]: waits until the URL answers with any HTTP status (a 401 from a
# server with auth counts: it is up).
wait_http() {
  local url=$1; shift
  for _ in $(seq 1 150); do
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null || true)
    [ -n "$code" ] && [ "$code" != 000 ] && return 0
    sleep 0.1
  done
  echo "not answering: $url" >&2; return 1
}

# cpu_secs PID: user+system CPU seconds consumed so far by the process (all threads).
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); print ($12+$13)/hz}' "/proc/$1/stat"
}

# thread_cpu_secs PID NAME: user+system CPU seconds consumed so far by the process's threads
# named NAME (0 when there is none), e.g. origin-traces, the trace exporter.
thread_cpu_secs() {
  local hz
  hz=$(getconf CLK_TCK)
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then
      sed 's/^.*) //' "$t/stat" 2>/dev/null || true
    fi
  done | awk -v hz="$hz" '{s += $12 + $13} END {print s / hz + 0}'
}

# rss_kib PID / hwm_kib PID: current and peak resident memory.
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
# clear_hwm PID: resets VmHWM to the current RSS (Linux >= 4.0), so the next reading is the
# peak of what ran in between.
clear_hwm() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true; }

# Sums over a process and its children (nginx master + workers).
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
tree_cpu() {
  local t=0 p
  for p in $(tree_pids "$1"); do t=$(awk -v a="$t" -v b="$(cpu_secs "$p")" 'BEGIN{print a+b}'); done
  echo "$t"
}
tree_hwm() { local t=0 p; for p in $(tree_pids "$1"); do t=$((t + $(hwm_kib "$p"))); done; echo "$t"; }
tree_rss() { local t=0 p; for p in $(tree_pids "$1"); do t=$((t + $(rss_kib "$p"))); done; echo "$t"; }
tree_clear_hwm() { local p; for p in $(tree_pids "$1"); do clear_hwm "$p"; done; }

# phase_begin PID / phase_end PID: server CPU seconds and peak RSS of one phase.
# phase_end sets PHASE_CPU (seconds, all processes of the tree) and PHASE_HWM (KiB, summed).
phase_begin() { tree_clear_hwm "$1"; PHASE_CPU0=$(tree_cpu "$1"); }
phase_end() {
  PHASE_CPU=$(awk -v a="$(tree_cpu "$1")" -v b="$PHASE_CPU0" 'BEGIN{printf "%.3f", a-b}')
  PHASE_HWM=$(tree_hwm "$1")
}

# start_origin PORT ROOT_DIR [DRIVER]: anonymous origin, plain HTTP. Optional variables:
#   ORIGIN_REPOS_TOML  replaces the default [[repository]] entry (allow everything)
#   ORIGIN_EXTRA_TOML  appended as is ([server.tls], [identity.x], ...)
#   ORIGIN_WAIT_ARGS   extra curl arguments for the readiness probe (e.g. https + --cacert)
start_origin() {
  local port=$1 root=$2 driver=${3:-auto}
  local scheme=http
  case "${ORIGIN_EXTRA_TOML:-}" in *"[server.tls]"*) scheme=https ;; esac
  local repos=${ORIGIN_REPOS_TOML:-'[[repository]]
namespace = ""
policy_default_allow = true'}
  cat > "$WORK/origin-$port.toml" <<TOML
[server]
bind_address = "127.0.0.1"
port = $port
io_driver = "$driver"
[log]
filter = "warn"
[storage.fs]
root_dir = "$root"
[gc]
interval = "6h"
$repos
${ORIGIN_EXTRA_TOML:-}
TOML
  "$ORIGIN_BIN" serve -c "$WORK/origin-$port.toml" 2>>"$WORK/origin-$port.log" &
  ORIGIN_PID=$!
  PIDS+=("$ORIGIN_PID")
  # shellcheck disable=SC2086
  wait_http "$scheme://127.0.0.1:$port/v2/" ${ORIGIN_WAIT_ARGS:-}
}

# start_distribution PORT ROOT_DIR: CNCF distribution (docker-registry) with filesystem storage.
start_distribution() {
  local port=$1 root=$2
  cat > "$WORK/distribution-$port.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $root
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
YAML
  "${DISTRIBUTION_BIN:-docker-registry}" serve "$WORK/distribution-$port.yml" \
    >>"$WORK/distribution-$port.log" 2>&1 &
  DIST_PID=$!
  PIDS+=("$DIST_PID")
  wait_http "http://127.0.0.1:$port/v2/"
}

# start_nginx PORT DOCROOT: static files, 2 workers, sendfile. With NGINX_TLS_CERT and
# NGINX_TLS_KEY set it speaks TLS instead. Files under */manifests/* get the OCI manifest type.
start_nginx() {
  local port=$1 docroot=$2
  local listen="listen 127.0.0.1:$port reuseport;" tls=""
  if [ -n "${NGINX_TLS_CERT:-}" ]; then
    listen="listen 127.0.0.1:$port ssl reuseport;"
    tls="ssl_certificate $NGINX_TLS_CERT; ssl_certificate_key $NGINX_TLS_KEY; ssl_protocols TLSv1.3;"
  fi
  local dir="$WORK/nginx-$port"
  mkdir -p "$dir"
  # nginx's workers run as an unprivileged user: they must be able to walk into the work
  # directory (mktemp makes it 0700) to reach the docroot.
  chmod o+x "$WORK"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  types { application/json json; application/octet-stream bin; }
  default_type application/octet-stream;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    $listen
    $tls
    root $docroot;
    location ~ /manifests/ { default_type application/vnd.oci.image.manifest.v1+json; }
  }
}
CONF
  nginx -c "$dir/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  for _ in $(seq 1 50); do
    [ "$(pgrep -c -P "$NGINX_PID" || true)" -ge 2 ] && break
    sleep 0.1
  done
  sleep 0.2
}

# stop_pid PID: SIGTERM, wait, and forget it (so cleanup never signals a recycled PID).
stop_pid() {
  kill "$1" 2>/dev/null || true # may be gone already (and reaped)
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p"); done
  PIDS=("${keep[@]:-}")
}

# wrk_run OUT URL CONNS SECS [LUA] [wrk args...]: runs wrk (2 threads), keeps its output in
# OUT, prints "req_per_sec requests errors" (errors: non-2xx/3xx plus socket errors).
wrk_run() {
  local out=$1 url=$2 conns=$3 secs=$4 lua=${5:-}; shift 5 || shift $#
  local args=(-t2 -c"$conns" -d"${secs}s" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  wrk "${args[@]}" "$@" "$url" > "$out" 2>&1 || true
  awk '
    /requests in/ {req=$1}
    /Requests\/sec/ {rps=$2}
    /Non-2xx or 3xx responses/ {err+=$NF}
    /Socket errors/ {gsub(/,/,""); err+=$4+$6+$8+$10}
    END {printf "%s %s %d\n", (rps==""?0:rps), (req==""?0:req), err}' "$out"
}

# oha_run OUT URL CONNS SECS [oha args...]: like wrk_run, with oha (JSON output kept in OUT).
oha_run() {
  local out=$1 url=$2 conns=$3 secs=$4; shift 4
  oha --no-tui -c "$conns" -z "${secs}s" --output-format json "$@" "$url" > "$out" 2>&1 || true
  python3 - "$out" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print("0 0 1"); sys.exit()
codes = d.get("statusCodeDistribution", {}) or {}
ok = sum(v for k, v in codes.items() if str(k).startswith(("2", "3")))
bad = sum(v for k, v in codes.items() if not str(k).startswith(("2", "3")))
errs = sum((d.get("errorDistribution", {}) or {}).values())
# oha counts requests cut by the deadline as errors ("aborted due to deadline"): not failures.
cut = sum(v for k, v in (d.get("errorDistribution", {}) or {}).items() if "deadline" in k)
print(f'{d["summary"]["requestsPerSec"]:.1f} {ok} {bad + errs - cut}')
PY
}

# Old single-number helpers, kept for base.sh.
wrk_rps() {
  local out; out=$(mktemp "$WORK/wrk.XXXXXX")
  wrk_run "$out" "$1" "$2" "$3" "${4:-}" | awk '{print $1}'
}
oha_rps() {
  local url=$1 conns=$2 secs=$3; shift 3
  local out; out=$(mktemp "$WORK/oha.XXXXXX")
  oha_run "$out" "$url" "$conns" "$secs" "$@" | awk '{print $1}'
}

# rotation ROUND ITEM...: sets ROTATED to the items, starting ROUND-1 further on (wrapping).
# Over as many rounds as there are items, each runs once in every place of a round: with a
# fixed order, whatever a place brought (a slower spell of the machine at a round's end, say)
# went to the same item every round. Each still follows the same one (its predecessor).
ROTATED=()
rotation() {
  local round=$1
  shift
  local turn=$(((round - 1) % $#))
  ROTATED=("${@:turn+1}" "${@:1:turn}")
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

# ---------------------------------------------------------------- phase runners
# Used by compare.sh and auth_tls.sh. They read these globals: RESULTS (TSV to append to),
# LOGS (directory for raw tool output), SEED_JSON (seed.py --out of the blob files), REPO,
# ACCEPT, TOOLS, CONNS, SECS, LARGE_CONNS, LARGE_SECS, PY.
EXTRA_HEADERS=()
OHA_EXTRA=()
GETBLOB_EXTRA=()
PY=${PY:-python3}
digest_of() { jq -r --arg s "$1" '.blobs[$s].digest' "$SEED_JSON"; }
size_of() { jq -r --arg s "$1" '.blobs[$s].size' "$SEED_JSON"; }

# record SERVER ORDER PHASE CONNS TOOL VALUE UNIT WORK CPU_S HWM_KIB ERRORS NOTE
record() {
  local IFS=$'\t'
  echo "$*" >> "$RESULTS"
  shift
  printf '  %-34s %4s %-7s %12s %-6s cpu %6ss  peak %7s KiB  errors %s %s\n' \
    "$2" "$3" "$4" "$5" "$6" "$8" "$9" "${10}" "${11:-}" >&2
}

# settle: flush dirty pages of earlier phases so they are not charged to the next one.
settle() { sync; sleep 0.5; }

# small_phase SERVER PID ORDER LABEL URL LUA: wrk (with bench/wrk/LUA.lua) and oha at
# CONNS for SECS each. Extra request headers: EXTRA_HEADERS (array); extra oha arguments:
# OHA_EXTRA (array, e.g. --cacert). LUA "head" runs oha only (wrk 4.x cannot do HEAD).
small_phase() {
  local server=$1 pid=$2 order=$3 label=$4 url=$5 lua=$6
  local tool res h
  for tool in $TOOLS; do
    if [ "$tool" = wrk ] && [ "$lua" = head ]; then
      continue # wrk 4.x waits for a body after HEAD (see README): oha only
    fi
    settle
    phase_begin "$pid"
    local out="$LOGS/$server-$order-$tool.txt"
    if [ "$tool" = wrk ]; then
      local wargs=()
      for h in "${EXTRA_HEADERS[@]}"; do wargs+=(-H "$h"); done
      res=$(wrk_run "$out" "$url" "$CONNS" "$SECS" "$BENCH_DIR/wrk/$lua.lua" "${wargs[@]}")
    else
      local oargs=("${OHA_EXTRA[@]}")
      for h in "${EXTRA_HEADERS[@]}"; do oargs+=(-H "$h"); done
      [ "$lua" = head ] && oargs+=(-m HEAD)
      [ "$lua" = manifest ] && oargs+=(-H "Accept: $ACCEPT")
      res=$(oha_run "$out" "$url" "$CONNS" "$SECS" "${oargs[@]}")
    fi
    phase_end "$pid"
    read -r rps reqs errs <<<"$res"
    local note=""; [ "$errs" != 0 ] && note="see $out"
    record "$server" "$order" "$label" "$CONNS" "$tool" "$rps" req/s "$reqs" \
      "$PHASE_CPU" "$PHASE_HWM" "$errs" "$note"
  done
}

# large_phase SERVER PID ORDER SIZE_LABEL BASE_URL: getblob.py at each of LARGE_CONNS for
# LARGE_SECS. Extra getblob.py arguments: GETBLOB_EXTRA (array: --cacert, --auth).
large_phase() {
  local server=$1 pid=$2 order=$3 size=$4 base=$5 c
  local url
  url="$base/v2/$REPO/blobs/$(digest_of "$size")"
  for c in $LARGE_CONNS; do
    settle
    phase_begin "$pid"
    local out="$LOGS/$server-$order-getblob-$c.json"
    "$PY" "$BENCH_DIR/getblob.py" --url "$url" -c "$c" -d "$LARGE_SECS" \
      --size "$(size_of "$size")" "${GETBLOB_EXTRA[@]}" > "$out" || true
    phase_end "$pid"
    local mibs bytes errs
    mibs=$(jq -r '.mib_s // 0' "$out" 2>/dev/null || echo 0)
    bytes=$(jq -r '.bytes // 0' "$out" 2>/dev/null || echo 0)
    errs=$(jq -r '.errors // 1' "$out" 2>/dev/null || echo 1)
    local note=""; [ "$errs" != 0 ] && note="$(jq -r '.first_error' "$out" 2>/dev/null)"
    record "$server" "$order" "GET $size blob" "$c" getblob.py "$mibs" MiB/s "$bytes" \
      "$PHASE_CPU" "$PHASE_HWM" "$errs" "$note"
  done
}


# origin_description: the binary measured: version, build time, and how it relates to HEAD.
origin_description() {
  local bin="$ORIGIN_BIN" rev built commit_t bin_t note=""
  rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  bin_t=$(stat -c %Y "$bin")
  built=$(date -u -d "@$bin_t" +%H:%M:%SZ)
  commit_t=$(cd "$ROOT" && git log -1 --format=%ct -- src Cargo.toml Cargo.lock 2>/dev/null || echo 0)
  [ "$bin_t" -lt "$commit_t" ] && note=", binary OLDER than the last src commit"
  local dirty; dirty=$(cd "$ROOT" && git status --porcelain -- src Cargo.toml 2>/dev/null | wc -l)
  [ "$dirty" != 0 ] && note="$note, $dirty uncommitted src changes in the tree"
  echo "$("$bin" --version 2>/dev/null | head -1) (HEAD $rev, binary built $built$note)"
}

machine_description() {
  echo "$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
}
