#!/usr/bin/env bash
# GET /v2/ on Origin against nginx serving a small static file, with wrk and oha at 64
# connections, one after the other in the same run. Prints req/s and the ratio.
#   bench/base.sh [seconds per run]   (default 10)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
need wrk oha nginx curl python3 bc
DRIVER=${ORIGIN_IO_DRIVER:-auto}

build_origin
mkdir -p "$WORK/www/v2" "$WORK/data"
printf '{}' > "$WORK/www/v2/index.json"

OP=$(free_port); start_origin "$OP" "$WORK/data" "$DRIVER"
NP=$(free_port); start_nginx "$NP" "$WORK/www"
O_URL="http://127.0.0.1:$OP/v2/"
N_URL="http://127.0.0.1:$NP/v2/index.json"

o_wrk=$(wrk_rps "$O_URL" 64 "$SECS"); n_wrk=$(wrk_rps "$N_URL" 64 "$SECS")
o_oha=$(oha_rps "$O_URL" 64 "$SECS"); n_oha=$(oha_rps "$N_URL" 64 "$SECS")
o_rss=$(hwm_kib "$ORIGIN_PID")

printf '\nGET /v2/, 64 connections, %ss each, io_driver=%s, %s cores\n' "$SECS" "$DRIVER" "$(nproc)"
printf '%-6s %14s %14s %8s\n' tool origin nginx ratio
printf '%-6s %14s %14s %8s\n' wrk "$o_wrk" "$n_wrk" "$(ratio "$o_wrk" "$n_wrk")"
printf '%-6s %14s %14s %8s\n' oha "$o_oha" "$n_oha" "$(ratio "$o_oha" "$n_oha")"
printf 'origin peak RSS: %s KiB\n' "$o_rss"
