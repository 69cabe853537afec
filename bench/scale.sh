#!/usr/bin/env bash
# Listings at scale: one repository with many tags and a catalog of many repositories, on
# origin's fs backend, origin on S3 (moto, behind the counting proxy bench/s3count.py) and
# CNCF distribution 2.8.2 (filesystem) at the sizes it reaches. Per size and server:
#   - seeding: tag PUTs per second through the API (BENCH_API_TAGS manifest PUTs under new
#     tags), then the bulk of the tags and repositories written below the API (files, or
#     unsigned PUTs to moto), with that rate;
#   - a deep page: `tags/list?n=100&last=<middle tag>` and `_catalog?n=100&last=<middle
#     repository>`, median of 21 on one keep-alive connection (ms);
#   - the full walk: every tag and every repository, following Link with n=1000 (ms, pages);
#   - the server's peak RSS over the listing phase (KiB) and, on S3, the S3 requests of one
#     deep tag page and one deep catalog page.
#
#   bench/scale.sh
#
# Environment (all optional):
#   BENCH_SIZES      "TAGS:REPOS ..." for the fs runs (default "1000:1000 10000:10000
#                    20000:4000 100000:100000")
#   BENCH_S3_SIZES   the same for S3 (default "1000:1000 10000:10000": moto lists by
#                    scanning every key and writes slowly; its times say little, the request
#                    counts are the point)
#   BENCH_DIST_MAX   largest tag count distribution is run at (default 20000)
#   BENCH_API_TAGS   tags pushed through the API per run (default 300)
#   BENCH_OUT        also write the table there
#   BENCH_SKIP_BUILD=1, MOTO_SERVER, DISTRIBUTION_BIN as in bench/s3.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT

no_args "$@"
SIZES=${BENCH_SIZES:-"1000:1000 10000:10000 20000:4000 100000:100000"}
S3_SIZES=${BENCH_S3_SIZES:-"1000:1000 10000:10000"}
DIST_MAX=${BENCH_DIST_MAX:-20000}
API_TAGS=${BENCH_API_TAGS:-300}
MOTO=${MOTO_SERVER:-/opt/origin-moto/bin/moto_server}
DIST=${DISTRIBUTION_BIN:-docker-registry}
SCALE="python3 $BENCH_DIR/scale.py"
REPO=scale/app
need python3 curl
build_origin
LOGS=$WORK/logs
mkdir -p "$LOGS"
ROWS=$WORK/rows.md
: >"$ROWS"

row() { echo "| $* |" | tee -a "$ROWS"; }

# measure SERVER SIZE URL PID TAGS REPOS SEED_SECS API_RATE [S3LOG]: one table row.
measure() {
  local server=$1 size=$2 url=$3 pid=$4 tags=$5 repos=$6 seed=$7 api=$8 s3log=${9:-}
  local midtag midrepo tagms catms s3tag=- s3cat=- n0
  midtag=$(python3 -c "print(f't{$tags // 2:06d}')")
  midrepo=$(python3 -c "print(f'r/{$repos // 2:06d}')")
  phase_begin "$pid"
  tagms=$($SCALE page "$url" "/v2/$REPO/tags/list?n=100&last=$midtag")
  catms=$($SCALE page "$url" "/v2/_catalog?n=100&last=$midrepo")
  if [ -n "$s3log" ]; then
    n0=$(wc -l <"$s3log")
    $SCALE page "$url" "/v2/$REPO/tags/list?n=100&last=$midtag" 1 >/dev/null
    s3tag=$(( ($(wc -l <"$s3log") - n0) / 2 )) # the warm-up GET and the timed one
    n0=$(wc -l <"$s3log")
    $SCALE page "$url" "/v2/_catalog?n=100&last=$midrepo" 1 >/dev/null
    s3cat=$(( ($(wc -l <"$s3log") - n0) / 2 ))
  fi
  read -r titems tpages tms < <($SCALE walk "$url" "/v2/$REPO/tags/list?n=1000" tags)
  read -r citems cpages cms < <($SCALE walk "$url" "/v2/_catalog?n=1000" repositories)
  local hwm
  hwm=$(hwm_kib "$pid")
  local rate
  rate=$(python3 -c "print(f'{($tags + $repos) / max($seed, 0.001):.0f}')")
  row "$server | $size | $api | $rate | $tagms | $catms | $titems in $tpages pages, $tms ms | $citems in $cpages pages, $cms ms | $hwm | $s3tag | $s3cat"
}

header() {
  row "server | tags / repositories | API tag PUT/s | bulk seed keys/s | deep tag page ms | deep catalog page ms | tag walk (n=1000) | catalog walk (n=1000) | peak RSS KiB | S3 req / tag page | S3 req / catalog page"
  row "---|---|---|---|---|---|---|---|---|---|---"
}
header

for size in $SIZES; do
  tags=${size%%:*} repos=${size##*:}
  # origin, fs
  root=$WORK/origin-fs-$tags
  port=$(free_port)
  start_origin "$port" "$root"
  url=http://127.0.0.1:$port
  digest=$($SCALE push-seed "$url" "$REPO")
  api=$($SCALE push-tags "$url" "$REPO" "$API_TAGS")
  seed=$($SCALE seed-origin-fs "$root" "$REPO" "$tags" "$repos" "$digest")
  measure "origin fs" "$tags / $repos" "$url" "$ORIGIN_PID" \
    "$((tags + API_TAGS + 1))" "$((repos + 1))" "$seed" "$api"
  stop_pid "$ORIGIN_PID"
  rm -rf "$root"
  # distribution, fs
  if [ "$tags" -le "$DIST_MAX" ] && command -v "$DIST" >/dev/null; then
    root=$WORK/dist-fs-$tags
    port=$(free_port)
    start_distribution "$port" "$root"
    url=http://127.0.0.1:$port
    digest=$($SCALE push-seed "$url" "$REPO")
    api=$($SCALE push-tags "$url" "$REPO" "$API_TAGS")
    seed=$($SCALE seed-dist-fs "$root" "$REPO" "$tags" "$repos" "$digest")
    measure "distribution fs" "$tags / $repos" "$url" "$DIST_PID" \
      "$((tags + API_TAGS + 1))" "$((repos + 1))" "$seed" "$api"
    stop_pid "$DIST_PID"
    rm -rf "$root"
  fi
done

if [ -x "$MOTO" ]; then
  MOTO_PORT=$(free_port)
  "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
  MOTO_PID=$!
  PIDS+=("$MOTO_PID")
  wait_http "http://127.0.0.1:$MOTO_PORT/"
  for size in $S3_SIZES; do
    tags=${size%%:*} repos=${size##*:}
    bucket=scale-$tags
    curl -fsS -X PUT "http://127.0.0.1:$MOTO_PORT/$bucket" >/dev/null
    PROXY_PORT=$(free_port)
    s3log=$LOGS/$bucket.s3
    : >"$s3log"
    python3 "$BENCH_DIR/s3count.py" --listen "$PROXY_PORT" --upstream "127.0.0.1:$MOTO_PORT" \
      --log "$s3log" 2>>"$LOGS/proxy.log" &
    proxy=$!
    PIDS+=("$proxy")
    wait_http "http://127.0.0.1:$PROXY_PORT/"
    port=$(free_port)
    cat >"$WORK/origin-s3-$tags.toml" <<TOML
[server]
bind_address = "127.0.0.1"
port = $port
[log]
filter = "warn"
[storage.s3]
bucket = "$bucket"
endpoint = "http://127.0.0.1:$PROXY_PORT"
path_style = true
access_key_id = "bench"
secret_access_key = "bench-secret"
[gc]
interval = "6h"
[[repository]]
namespace = ""
policy_default_allow = true
TOML
    "$ORIGIN_BIN" serve -c "$WORK/origin-s3-$tags.toml" 2>>"$LOGS/origin-s3.log" &
    pid=$!
    PIDS+=("$pid")
    url=http://127.0.0.1:$port
    wait_http "$url/v2/"
    digest=$($SCALE push-seed "$url" "$REPO")
    api=$($SCALE push-tags "$url" "$REPO" "$API_TAGS")
    seed=$($SCALE seed-s3 "http://127.0.0.1:$MOTO_PORT" "$bucket" "$REPO" "$tags" "$repos" "$digest")
    measure "origin S3 (moto)" "$tags / $repos" "$url" "$pid" \
      "$((tags + API_TAGS + 1))" "$((repos + 1))" "$seed" "$api" "$s3log"
    stop_pid "$pid"
    stop_pid "$proxy"
  done
else
  echo "no moto_server at $MOTO (scripts/moto.sh): S3 rows skipped" >&2
fi

if [ -n "${BENCH_OUT:-}" ]; then cp "$ROWS" "$BENCH_OUT"; fi
