#!/usr/bin/env bash
# Origin on S3 against CNCF distribution 2.8.2 with its `s3` driver, on the same moto server
# (separate buckets), each behind its own counting proxy (bench/s3count.py). Pushes the same
# image shape to each (three 2 MiB random layers + config + manifest; per blob POST, PATCH,
# PUT as docker does), pulls it back without redirects, and prints the S3 requests of the push
# and of the pull by operation, push/pull MiB/s and Origin's ratio to distribution. Then the
# cost of a blob commit on Origin: time and S3 requests of the final PUT ?digest= for a
# 2 MiB and a 64 MiB blob, after a PATCH (staged data: server-side copy at commit) or with
# the blob in its body (below the part size: one PUT at the content key, no copy), with the
# default 8 MiB part size and with 128 MiB. With skopeo installed, the same image shape is
# also pushed and pulled by skopeo (copy between an OCI layout and the registry: it HEADs
# each blob before uploading it, and pulls through its own client), counted the same way.
#
#   bench/s3.sh
#
# Environment (all optional):
#   BENCH_LAYERS / BENCH_LAYER_MIB   image shape (default 3 layers of 2 MiB)
#   BENCH_COMMIT_MIB                 blob sizes of the commit measurement (default "2 64")
#   BENCH_SKIP_BUILD=1               use the existing release binary
#   BENCH_SKIP_COMMIT=1              stop after the push/pull table (no commit measurement)
#   MOTO_SERVER                      moto_server (default /opt/origin-moto/bin/moto_server;
#                                    scripts/moto.sh installs it)
#   DISTRIBUTION_BIN                 default docker-registry (Debian package)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# Stop every server even when one of them exits non-zero on SIGTERM (errexit would end the
# cleanup at the first).
trap 'set +e; cleanup' EXIT

no_args "$@"
LAYERS=${BENCH_LAYERS:-3}
LAYER_MIB=${BENCH_LAYER_MIB:-2}
COMMIT_MIB=${BENCH_COMMIT_MIB:-"2 64"}
MOTO=${MOTO_SERVER:-/opt/origin-moto/bin/moto_server}
DIST=${DISTRIBUTION_BIN:-docker-registry}
need python3 curl "$DIST"
[ -x "$MOTO" ] || { echo "no moto_server at $MOTO (run scripts/moto.sh)" >&2; exit 1; }
build_origin
LOGS=$WORK/logs
mkdir -p "$LOGS"

# moto, by PID, on a free port.
MOTO_PORT=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$MOTO_PORT/"
for b in origin origin-part8 origin-part128 distribution; do
  curl -fsS -X PUT "http://127.0.0.1:$MOTO_PORT/$b" >/dev/null
done

# start_proxy NAME: a counting proxy to moto; sets PROXY_PORT; requests go to $LOGS/NAME.s3.
start_proxy() {
  PROXY_PORT=$(free_port)
  : >"$LOGS/$1.s3"
  python3 "$BENCH_DIR/s3count.py" --listen "$PROXY_PORT" --upstream "127.0.0.1:$MOTO_PORT" \
    --log "$LOGS/$1.s3" 2>>"$LOGS/$1.proxy.log" &
  PIDS+=("$!")
  wait_http "http://127.0.0.1:$PROXY_PORT/"
}

# start_origin_s3 NAME BUCKET PART_BYTES: origin on S3 through a proxy; sets PORT.
start_origin_s3() {
  start_proxy "$1"
  PORT=$(free_port)
  cat >"$WORK/$1.toml" <<TOML
[server]
bind_address = "127.0.0.1"
port = $PORT
[log]
filter = "${BENCH_ORIGIN_LOG:-warn}"
[storage.s3]
bucket = "$2"
endpoint = "http://127.0.0.1:$PROXY_PORT"
path_style = true
access_key_id = "bench"
secret_access_key = "bench-secret"
multipart_part_size = $3
[gc]
interval = "6h"
[[repository]]
namespace = ""
policy_default_allow = true
TOML
  "$ORIGIN_BIN" serve -c "$WORK/$1.toml" 2>>"$LOGS/$1.log" &
  PIDS+=("$!")
  wait_http "http://127.0.0.1:$PORT/v2/"
}

start_distribution_s3() {
  start_proxy distribution
  PORT=$(free_port)
  cat >"$WORK/distribution.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: bench
    secretkey: bench-secret
    region: us-east-1
    regionendpoint: http://127.0.0.1:$PROXY_PORT
    forcepathstyle: true
    bucket: distribution
    secure: false
    v4auth: true
    rootdirectory: /
  redirect:
    disable: true
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: bench-shared-secret
YAML
  # Its S3 driver panics with AWS_CA_BUNDLE set.
  env -u AWS_CA_BUNDLE "$DIST" serve "$WORK/distribution.yml" >>"$LOGS/distribution.log" 2>&1 &
  PIDS+=("$!")
  wait_http "http://127.0.0.1:$PORT/v2/"
}

lines() { wc -l <"$LOGS/$1.s3"; }
# settle NAME: waits (at most 15 s) until the proxy has logged nothing for a second, so the
# start-up requests (probe, expiry and metrics listings) are not counted with the push.
settle() {
  local before after
  for _ in $(seq 1 15); do
    before=$(lines "$1"); sleep 1; after=$(lines "$1")
    [ "$before" = "$after" ] && return 0
  done
}
# count NAME FROM TO: "total<TAB>op=n ..." of the requests logged in (FROM, TO].
count() { python3 "$BENCH_DIR/s3count.py" --summary "$LOGS/$1.s3" --from $(($2 + 1)) --to "$3"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# skopeo: the image as an OCI layout, and a policy that accepts anything (no signatures).
SKOPEO=
if command -v skopeo >/dev/null; then
  SKOPEO=skopeo
  python3 "$BENCH_DIR/s3image.py" oci --layers "$LAYERS" --mib "$LAYER_MIB" --state "$WORK/layout"
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/policy.json"
fi
# skopeo_counts SERVER: skopeo push, then pull, of the layout; sets SK_PUSH and SK_PULL to
# "total<TAB>op=n ...".
skopeo_counts() {
  local l0 l1 l2
  settle "$1"
  l0=$(lines "$1")
  "$SKOPEO" --policy "$WORK/policy.json" copy -q --dest-tls-verify=false \
    "oci:$WORK/layout:v1" "docker://127.0.0.1:$PORT/bench/skopeo:v1"
  sleep 0.3
  l1=$(lines "$1")
  "$SKOPEO" --policy "$WORK/policy.json" copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$PORT/bench/skopeo:v1" "oci:$WORK/pulled-$1:v1"
  sleep 0.3
  l2=$(lines "$1")
  SK_PUSH=$(count "$1" "$l0" "$l1")
  SK_PULL=$(count "$1" "$l1" "$l2")
}

declare -A PUSH_N PULL_N PUSH_RATE PULL_RATE SK_PUSH_N SK_PULL_N
for server in origin distribution; do
  if [ "$server" = origin ]; then
    start_origin_s3 origin origin $((8 << 20))
  else
    start_distribution_s3
  fi
  settle "$server"
  l0=$(lines "$server")
  push=$(python3 "$BENCH_DIR/s3image.py" push --url "http://127.0.0.1:$PORT" \
    --layers "$LAYERS" --mib "$LAYER_MIB" --state "$WORK/$server.img")
  sleep 0.3
  l1=$(lines "$server")
  pull=$(python3 "$BENCH_DIR/s3image.py" pull --url "http://127.0.0.1:$PORT" \
    --state "$WORK/$server.img")
  sleep 0.3
  l2=$(lines "$server")
  c_push=$(count "$server" "$l0" "$l1")
  c_pull=$(count "$server" "$l1" "$l2")
  PUSH_N[$server]=${c_push%%$'\t'*}
  PULL_N[$server]=${c_pull%%$'\t'*}
  PUSH_RATE[$server]=$(field "$push" mib_per_sec)
  PULL_RATE[$server]=$(field "$pull" mib_per_sec)
  echo "$server push: ${c_push%%$'\t'*} S3 requests (${c_push#*$'\t'}), $(field "$push" mib_per_sec) MiB/s"
  echo "$server pull: ${c_pull%%$'\t'*} S3 requests (${c_pull#*$'\t'}), $(field "$pull" mib_per_sec) MiB/s"
  if [ -n "$SKOPEO" ]; then
    skopeo_counts "$server"
    SK_PUSH_N[$server]=${SK_PUSH%%$'\t'*}
    SK_PULL_N[$server]=${SK_PULL%%$'\t'*}
    echo "$server skopeo push: ${SK_PUSH%%$'\t'*} S3 requests (${SK_PUSH#*$'\t'})"
    echo "$server skopeo pull: ${SK_PULL%%$'\t'*} S3 requests (${SK_PULL#*$'\t'})"
  fi
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "-"; else printf "%.2f", a / b }'; }
echo
echo "| image ($LAYERS x $LAYER_MIB MiB + config) | origin | distribution | origin/distribution |"
echo "|---|---|---|---|"
echo "| S3 requests, push | ${PUSH_N[origin]} | ${PUSH_N[distribution]} | $(ratio "${PUSH_N[origin]}" "${PUSH_N[distribution]}") |"
echo "| S3 requests, pull | ${PULL_N[origin]} | ${PULL_N[distribution]} | $(ratio "${PULL_N[origin]}" "${PULL_N[distribution]}") |"
if [ -n "$SKOPEO" ]; then
  echo "| S3 requests, skopeo push | ${SK_PUSH_N[origin]} | ${SK_PUSH_N[distribution]} | $(ratio "${SK_PUSH_N[origin]}" "${SK_PUSH_N[distribution]}") |"
  echo "| S3 requests, skopeo pull | ${SK_PULL_N[origin]} | ${SK_PULL_N[distribution]} | $(ratio "${SK_PULL_N[origin]}" "${SK_PULL_N[distribution]}") |"
fi
echo "| push MiB/s | ${PUSH_RATE[origin]} | ${PUSH_RATE[distribution]} | $(ratio "${PUSH_RATE[origin]}" "${PUSH_RATE[distribution]}") |"
echo "| pull MiB/s | ${PULL_RATE[origin]} | ${PULL_RATE[distribution]} | $(ratio "${PULL_RATE[origin]}" "${PULL_RATE[distribution]}") |"

# The commit: the last request of a blob upload, timed and counted alone. "patch": PATCH with
# the whole blob, then PUT ?digest= (staged data, copied inside the bucket at commit);
# "mono": PUT ?digest= with the whole blob (below the part size: one PUT, no copy).
[ "${BENCH_SKIP_COMMIT:-0}" = 1 ] && exit 0
echo
echo "| origin blob commit | part size | upload | PATCH s | final PUT s | S3 requests of the final PUT |"
echo "|---|---|---|---|---|---|"
for part_mib in 8 128; do
  start_origin_s3 "origin-part$part_mib" "origin-part$part_mib" $((part_mib << 20))
  for mib in $COMMIT_MIB; do
    for mode in patch mono; do
      out=$(python3 "$BENCH_DIR/s3image.py" commit --url "http://127.0.0.1:$PORT" --mib "$mib" \
        --mode "$mode" --state "$WORK/commit.json" --count-log "$LOGS/origin-part$part_mib.s3")
      echo "| $mib MiB | $part_mib MiB | $mode | $(field "$out" patch_secs) | $(field "$out" secs) | $(field "$out" requests) ($(field "$out" ops)) |"
    done
  done
done
