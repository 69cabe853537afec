# Shared helpers for the bench scripts: start/stop servers by PID, measure CPU and RSS.
# Source it; every server started here is stopped by its PID on exit.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK=${BENCH_WORK:-$(mktemp -d /tmp/origin-bench.XXXXXX)}
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  return 0
}
trap cleanup EXIT

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (see bench/README.md)" >&2; exit 1; }
  done
}

# free_port: asks the kernel for an unused loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "not answering: $1" >&2; return 1
}

# cpu_secs PID: user+system CPU seconds consumed so far by the process (all threads).
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"
}

# rss_kib PID / hwm_kib PID: current and peak resident memory.
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }

# Sum over a process and its children (nginx workers).
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
tree_cpu() { local t=0; for p in $(tree_pids "$1"); do t=$(echo "$t + $(cpu_secs "$p")" | bc -l); done; echo "$t"; }
tree_hwm() { local t=0; for p in $(tree_pids "$1"); do t=$((t + $(hwm_kib "$p"))); done; echo "$t"; }

start_origin() { # port root_dir [driver]
  local port=$1 root=$2 driver=${3:-auto}
  cat > "$WORK/origin.toml" <<TOML
[server]
bind_address = "127.0.0.1"
port = $port
io_driver = "$driver"
[log]
filter = "warn"
[storage.fs]
root_dir = "$root"
[[repository]]
namespace = ""
policy_default_allow = true
TOML
  "$ROOT/target/release/origin" serve -c "$WORK/origin.toml" 2>"$WORK/origin.log" &
  ORIGIN_PID=$!
  PIDS+=("$ORIGIN_PID")
  wait_http "http://127.0.0.1:$port/v2/"
}

start_nginx() { # port docroot
  local port=$1 docroot=$2
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  types { application/json json; application/octet-stream bin; }
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$port reuseport;
    root $docroot;
  }
}
CONF
  nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  sleep 0.3
}

stop_pid() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null || true; }

# wrk_rps URL CONNS SECS [LUA]: requests per second reported by wrk.
wrk_rps() {
  local url=$1 conns=$2 secs=$3 lua=${4:-}
  local args=(-t2 -c"$conns" -d"${secs}s" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  wrk "${args[@]}" "$url" | awk '/Requests\/sec/{print $2}'
}

# oha_rps URL CONNS SECS [extra args]: requests per second reported by oha.
oha_rps() {
  local url=$1 conns=$2 secs=$3; shift 3
  oha --no-tui -c "$conns" -z "${secs}s" --output-format json "$@" "$url" \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["summary"]["requestsPerSec"],1))'
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
