#!/usr/bin/env bash
# What security costs origin: authenticated manifest GET (Basic auth, 64 connections) against
# anonymous, and large-blob GET over TLS against plain HTTP (nginx plain/TLS alongside as the
# reference). One origin at a time on the same storage, restarted with each configuration.
# Prints one table with both ratios. See bench/README.md.
#
#   bench/auth_tls.sh            # ~2-3 minutes at 10 s per phase
#   bench/auth_tls.sh --quick    # 4 s per phase
#   ORIGIN_IO_DRIVER=poll bench/auth_tls.sh
#
# Environment: BENCH_SECS, BENCH_LARGE_SECS, BENCH_CONNS, BENCH_LARGE_CONNS, BENCH_TOOLS,
# BENCH_WORK, BENCH_DATA, BENCH_OUT, BENCH_SKIP_BUILD as for compare.sh, and
#   BENCH_TLS_BLOB    size label of the blob for the TLS phases (default 64m; 512m works)
#   BENCH_TLS_NGINX=0 skip the nginx plain/TLS reference rows
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # TOOLS, EXTRA_HEADERS, ...: read by lib.sh's phase runners

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then SECS=${BENCH_SECS:-4}; else SECS=${BENCH_SECS:-10}; fi
LARGE_SECS=${BENCH_LARGE_SECS:-$SECS}
CONNS=${BENCH_CONNS:-64}
LARGE_CONNS=${BENCH_LARGE_CONNS:-"1 8"}
TOOLS=${BENCH_TOOLS:-"wrk oha"}
DRIVER=${ORIGIN_IO_DRIVER:-auto}
BLOB=${BENCH_TLS_BLOB:-64m}
DATA=${BENCH_DATA:-$WORK/seed}
REPO=bench/app
RESULTS=$WORK/results.tsv
LOGS=$WORK/logs
SEED_JSON=$WORK/seed-files.json
mkdir -p "$LOGS"
: > "$RESULTS"
need wrk oha nginx openssl curl python3 jq
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "work dir: $WORK" >&2
build_origin
ORIGIN="$ROOT/target/release/origin"

sizes=4k
[ "$BLOB" != 4k ] && sizes="4k,$BLOB"
"$PY" "$BENCH_DIR/seed.py" --data "$DATA" --sizes "$sizes" --repo "$REPO" \
  --layout "$WORK/www" --out "$SEED_JSON" >/dev/null
ACCEPT=$(jq -r .accept "$SEED_JSON")

# A CA and a server certificate for 127.0.0.1 (subjectAltName IP), with the openssl CLI.
TLS=$WORK/tls
mkdir -p "$TLS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=origin bench CA" -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=127.0.0.1" -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
  > "$TLS/ext.cnf"
openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
  -CAcreateserial -days 2 -extfile "$TLS/ext.cnf" -out "$TLS/server.crt" 2>/dev/null
cat "$TLS/server.crt" "$TLS/ca.crt" > "$TLS/bundle.crt"

PASSWORD=pw
PHC=$(echo "$PASSWORD" | "$ORIGIN" hash-password)
BASIC="Basic $(printf 'bench:%s' "$PASSWORD" | base64)"
AUTH_IDENTITY="[identity.bench]
username = \"bench\"
password = \"$PHC\""
AUTH_REPOS="[[repository]]
namespace = \"\"
policy_default_allow = false
policies = ['identity.username == \"bench\"']"
TLS_TOML="[server.tls]
server_certificate_bundle = \"$TLS/bundle.crt\"
server_private_key = \"$TLS/server.key\""

STORE=$WORK/origin-data
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check() { # what expected got
  [ "$2" = "$3" ] || { echo "check failed: $1: expected $2, got $3" >&2; exit 1; }
}

# 1. Anonymous, plain HTTP: seed, then the baselines.
port=$(free_port); base="http://127.0.0.1:$port"
echo "== origin anonymous, plain HTTP on $port" >&2
start_origin "$port" "$STORE" "$DRIVER"
"$PY" "$BENCH_DIR/seed.py" --url "$base" --data "$DATA" --sizes "$sizes" --repo "$REPO" \
  --out "$WORK/seed-origin.json" >/dev/null 2>"$LOGS/seed.txt" \
  || { cat "$LOGS/seed.txt" >&2; exit 1; }
MANIFEST_PATH="/v2/$REPO/manifests/latest"
wrk -t2 -c"$CONNS" -d1s -s "$BENCH_DIR/wrk/manifest.lua" "$base$MANIFEST_PATH" >/dev/null 2>&1 || true
small_phase origin-anon "$ORIGIN_PID" 10 "manifest GET by tag" "$base$MANIFEST_PATH" manifest
large_phase origin-plain "$ORIGIN_PID" 20 "$BLOB" "$base"
stop_pid "$ORIGIN_PID"

# 2. Basic auth + policy, plain HTTP, same storage.
port=$(free_port); base="http://127.0.0.1:$port"
echo "== origin with Basic auth on $port" >&2
ORIGIN_REPOS_TOML=$AUTH_REPOS ORIGIN_EXTRA_TOML=$AUTH_IDENTITY start_origin "$port" "$STORE" "$DRIVER"
check "anonymous manifest GET" 401 "$(status -H "Accept: $ACCEPT" "$base$MANIFEST_PATH")"
check "wrong password" 401 "$(status -u bench:wrong -H "Accept: $ACCEPT" "$base$MANIFEST_PATH")"
check "right password" 200 "$(status -H "Authorization: $BASIC" -H "Accept: $ACCEPT" "$base$MANIFEST_PATH")"
EXTRA_HEADERS=("Authorization: $BASIC")
wrk -t2 -c"$CONNS" -d1s -s "$BENCH_DIR/wrk/manifest.lua" -H "Authorization: $BASIC" \
  "$base$MANIFEST_PATH" >/dev/null 2>&1 || true
small_phase origin-auth "$ORIGIN_PID" 10 "manifest GET by tag" "$base$MANIFEST_PATH" manifest
EXTRA_HEADERS=()
stop_pid "$ORIGIN_PID"

# 3. TLS, anonymous, same storage.
port=$(free_port); base="https://127.0.0.1:$port"
echo "== origin with TLS on $port" >&2
ORIGIN_EXTRA_TOML=$TLS_TOML ORIGIN_WAIT_ARGS="--cacert $TLS/ca.crt" \
  start_origin "$port" "$STORE" "$DRIVER"
check "GET /v2/ over TLS, verified against the CA" 200 "$(status --cacert "$TLS/ca.crt" "$base/v2/")"
GETBLOB_EXTRA=(--cacert "$TLS/ca.crt")
large_phase origin-tls "$ORIGIN_PID" 20 "$BLOB" "$base"
GETBLOB_EXTRA=()
stop_pid "$ORIGIN_PID"

# 4. nginx, plain and TLS, the same files: the reference for what TLS costs a static server.
if [ "${BENCH_TLS_NGINX:-1}" = 1 ]; then
  port=$(free_port)
  echo "== nginx plain on $port" >&2
  start_nginx "$port" "$WORK/www"
  large_phase nginx-plain "$NGINX_PID" 20 "$BLOB" "http://127.0.0.1:$port"
  stop_pid "$NGINX_PID"
  port=$(free_port)
  echo "== nginx TLS on $port" >&2
  NGINX_TLS_CERT=$TLS/bundle.crt NGINX_TLS_KEY=$TLS/server.key start_nginx "$port" "$WORK/www"
  check "nginx over TLS" 200 "$(status --cacert "$TLS/ca.crt" "https://127.0.0.1:$port/v2/index.json")"
  GETBLOB_EXTRA=(--cacert "$TLS/ca.crt")
  large_phase nginx-tls "$NGINX_PID" 20 "$BLOB" "https://127.0.0.1:$port"
  GETBLOB_EXTRA=()
  stop_pid "$NGINX_PID"
fi
rm -rf "$STORE"

T_END=$(date +%s)
PAIRS='[["Basic auth", "origin-auth", "origin-anon"], ["TLS", "origin-tls", "origin-plain"]'
if [ "${BENCH_TLS_NGINX:-1}" = 1 ]; then
  PAIRS+=', ["nginx TLS", "nginx-tls", "nginx-plain"], ["origin vs nginx, TLS", "origin-tls", "nginx-tls"], ["origin vs nginx, plain", "origin-plain", "nginx-plain"]'
fi
PAIRS+=']'
cat > "$WORK/meta.json" <<JSON
{
  "title": "Origin: cost of Basic auth and TLS ($( [ "$QUICK" = 1 ] && echo quick || echo full ) run)",
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "origin": "$(origin_description), io_driver=$DRIVER",
  "machine": "$(machine_description); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)",
  "phases": "${SECS}s manifest GET at $CONNS connections (wrk -t2, oha; auth: Authorization: Basic on every request, argon2id PHC in the config), ${LARGE_SECS}s GET of the $BLOB blob at $LARGE_CONNS connections (getblob.py; TLS: Python ssl with the bench CA, TLS 1.3)",
  "wall time": "$((T_END - T_START)) s",
  "raw results": "$RESULTS, logs in $LOGS",
  "pairs": $PAIRS
}
JSON
"$PY" "$BENCH_DIR/report.py" "$RESULTS" "$WORK/meta.json" | tee "$WORK/table.md"
if [ -n "${BENCH_OUT:-}" ]; then cp "$WORK/table.md" "$BENCH_OUT"; fi
