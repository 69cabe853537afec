#!/usr/bin/env bash
# What [[rate_limit]] costs on the pull path: the same binary, in one session, serving
# manifest GETs and small blob GETs with no [[rate_limit]] entry ("none") and with an entry
# that covers every pull and never triggers ("never": each request takes a token from a
# bucket). Every wrk connection comes from 127.0.0.1 anonymously, so all of them share one
# bucket: the worst case for the bucket's lock. Rounds alternate none/never; prints req/s
# per phase and the ratio never/none.
#
#   bench/limits.sh [secs] [conns]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need curl wrk python3
SECS=${1:-10}
CONNS=${2:-32}
ROUNDS=${BENCH_ROUNDS:-2}
build_origin

root="$WORK/root"
NEVER='[[rate_limit]]
pull = { requests_per_second = 1000000, burst = 1000000 }
list = { requests_per_second = 1000000, burst = 1000000 }'

# One image: a 4 KiB layer, a config and a manifest tagged "v1".
seed() {
  local base=$1
  head -c 4096 /dev/urandom > "$WORK/layer"
  printf '{"architecture":"amd64","os":"linux"}' > "$WORK/config"
  local d
  for f in layer config; do
    d=sha256:$(sha256sum "$WORK/$f" | cut -d' ' -f1)
    curl -sSf -o /dev/null -X POST --data-binary @"$WORK/$f" \
      -H 'Content-Type: application/octet-stream' "$base/v2/bench/app/blobs/uploads/?digest=$d"
    eval "${f}_digest=$d"
  done
  # shellcheck disable=SC2154
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
    "$config_digest" "$(stat -c %s "$WORK/config")" "$layer_digest" > "$WORK/manifest"
  curl -sSf -o /dev/null -X PUT --data-binary @"$WORK/manifest" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "$base/v2/bench/app/manifests/v1"
  LAYER=$layer_digest
}

port=$(free_port)
start_origin "$port" "$root"
seed "http://127.0.0.1:$port"
stop_pid "$ORIGIN_PID"

declare -A RPS
printf '| round | limits | manifest GET req/s | blob GET (4 KiB) req/s | errors |\n|---|---|---|---|---|\n'
for round in $(seq 1 "$ROUNDS"); do
  for variant in none never; do
    port=$(free_port)
    if [ "$variant" = never ]; then ORIGIN_EXTRA_TOML=$NEVER; else ORIGIN_EXTRA_TOML=; fi
    start_origin "$port" "$root"
    base="http://127.0.0.1:$port/v2/bench/app"
    wrk_run "$WORK/warm" "$base/manifests/v1" "$CONNS" 2 "$BENCH_DIR/wrk/manifest.lua" >/dev/null
    read -r m_rps _ m_err < <(wrk_run "$WORK/m-$variant-$round" "$base/manifests/v1" "$CONNS" "$SECS" "$BENCH_DIR/wrk/manifest.lua")
    read -r b_rps _ b_err < <(wrk_run "$WORK/b-$variant-$round" "$base/blobs/$LAYER" "$CONNS" "$SECS" "$BENCH_DIR/wrk/blob.lua")
    stop_pid "$ORIGIN_PID"
    RPS[$variant-m]="${RPS[$variant-m]:-} $m_rps"
    RPS[$variant-b]="${RPS[$variant-b]:-} $b_rps"
    printf '| %s | %s | %s | %s | %s |\n' "$round" "$variant" "$m_rps" "$b_rps" "$((m_err + b_err))"
  done
done
mean() { python3 -c 'import sys; v=[float(x) for x in sys.argv[1:]]; print(f"{sum(v)/len(v):.0f}")' "$@"; }
# shellcheck disable=SC2086
{
  m_none=$(mean ${RPS[none-m]}); m_never=$(mean ${RPS[never-m]})
  b_none=$(mean ${RPS[none-b]}); b_never=$(mean ${RPS[never-b]})
}
printf '\nmean manifest GET: none %s, never %s, ratio never/none %s\n' "$m_none" "$m_never" "$(ratio "$m_never" "$m_none")"
printf 'mean blob GET:     none %s, never %s, ratio never/none %s\n' "$b_none" "$b_never" "$(ratio "$b_never" "$b_none")"
