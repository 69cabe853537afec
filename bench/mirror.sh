#!/usr/bin/env bash
# The pull-through cache against its upstream (CNCF distribution 2.8.2 on loopback):
#   cold pull   one GET of a large blob through a fresh origin mirror (fetched, verified,
#               stored and streamed at once), against the same GET straight from the upstream;
#               on loopback with a plain and with a verifying client, and over a limited link;
#               with the CPU seconds per GiB of upstream, origin and client;
#   warm pull   the cached blob through the mirror namespace, against origin's normal pull
#               path (the same blob pushed to a local repository), 1 and 8 connections.
# Prints one table with both ratios. See bench/README.md.
#
#   bench/mirror.sh              # 512 MiB blob, 5 cold runs, 10 s warm phases
#   bench/mirror.sh --quick      # 64 MiB blob, 3 cold runs, 4 s warm phases
#
# Environment: BENCH_MIRROR_BLOB (64m or 512m), BENCH_RUNS, BENCH_SECS, BENCH_LINK_MIBS
# (the limited link's rate, default 200, via bench/throttle.py), BENCH_WORK,
# BENCH_DATA, BENCH_OUT (a Markdown file for the table), BENCH_SKIP_BUILD, ORIGIN_IO_DRIVER.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=0
for arg in "$@"; do
  case $arg in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  BLOB=${BENCH_MIRROR_BLOB:-64m}; RUNS=${BENCH_RUNS:-3}; SECS=${BENCH_SECS:-4}
else
  BLOB=${BENCH_MIRROR_BLOB:-512m}; RUNS=${BENCH_RUNS:-5}; SECS=${BENCH_SECS:-10}
fi
DRIVER=${ORIGIN_IO_DRIVER:-auto}
DATA=${BENCH_DATA:-$WORK/seed}
need curl python3 jq docker-registry
echo "work dir: $WORK" >&2
build_origin

UP_PORT=$(free_port)
start_distribution "$UP_PORT" "$WORK/upstream"
"$PY" "$BENCH_DIR/seed.py" --url "http://127.0.0.1:$UP_PORT" --data "$DATA" --sizes "$BLOB" \
  --repo library/bench --method monolithic --out "$WORK/upstream.json" >/dev/null
DIGEST=$(jq -r ".blobs[\"$BLOB\"].digest" "$WORK/upstream.json")
SIZE=$(jq -r ".blobs[\"$BLOB\"].size" "$WORK/upstream.json")

MIRROR_TOML="[[repository]]
namespace = \"\"
policy_default_allow = true
[[repository]]
namespace = \"local\"
policy_default_allow = true
[[repository]]
namespace = \"docker.io\"
policy_default_allow = true
[repository.mirror]
default = true
[[repository.mirror.upstream]]
url = \"http://127.0.0.1:$UP_PORT\""

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# cold_runs LABEL UPSTREAM_PORT TOML KEEP_LAST [FETCH_ARGS]: RUNS times, a direct GET from
# UPSTREAM_PORT, then a fresh origin with TOML and a GET through it. Sets RUN_DIRECT and
# RUN_COLD (MiB/s per run) and, per run, the CPU seconds each process spent per GiB moved:
# RUN_D_UP/RUN_D_CLIENT (direct) and RUN_C_UP/RUN_C_ORIGIN/RUN_C_CLIENT (through origin;
# origin's share is read a second after the transfer, so it includes the commit). RUN_D_BUSY
# is the share of all cores the direct pull kept busy. With KEEP_LAST=1 the last origin keeps
# running (ORIGIN_PID, ORIGIN_PORT).
cold_runs() {
  local label=$1 up=$2 toml=$3 keep=$4 fetch_args=${5:-} run d c out u0 o0 gib
  gib=$(awk -v s="$SIZE" 'BEGIN{print s/1073741824}')
  RUN_DIRECT=() RUN_COLD=() RUN_D_UP=() RUN_D_CLIENT=() RUN_D_BUSY=() RUN_C_UP=() RUN_C_ORIGIN=() RUN_C_CLIENT=()
  for run in $(seq 1 "$RUNS"); do
    u0=$(cpu_secs "$DIST_PID")
    # shellcheck disable=SC2086
    out=$("$PY" "$BENCH_DIR/fetch.py" --url "http://127.0.0.1:$up/v2/library/bench/blobs/$DIGEST" $fetch_args)
    d=$(jq -r .mib_s <<<"$out")
    RUN_DIRECT+=("$d")
    RUN_D_UP+=("$(awk -v a="$(cpu_secs "$DIST_PID")" -v b="$u0" -v g="$gib" 'BEGIN{printf "%.3f", (a-b)/g}')")
    RUN_D_CLIENT+=("$(jq -r --arg g "$gib" '.cpu_s / ($g|tonumber) * 1000 | round / 1000' <<<"$out")")
    RUN_D_BUSY+=("$(awk -v u="${RUN_D_UP[-1]}" -v c="${RUN_D_CLIENT[-1]}" -v g="$gib" -v s="$(jq -r .secs <<<"$out")" -v n="$(nproc)" 'BEGIN{printf "%.2f", (u+c)*g/(s*n)}')")
    ORIGIN_PORT=$(free_port)
    rm -rf "$WORK/mirror"
    ORIGIN_REPOS_TOML=$toml start_origin "$ORIGIN_PORT" "$WORK/mirror" "$DRIVER"
    u0=$(cpu_secs "$DIST_PID") o0=$(cpu_secs "$ORIGIN_PID")
    # shellcheck disable=SC2086
    out=$("$PY" "$BENCH_DIR/fetch.py" --url "http://127.0.0.1:$ORIGIN_PORT/v2/library/bench/blobs/$DIGEST" $fetch_args)
    c=$(jq -r .mib_s <<<"$out")
    RUN_COLD+=("$c")
    sleep 1
    RUN_C_UP+=("$(awk -v a="$(cpu_secs "$DIST_PID")" -v b="$u0" -v g="$gib" 'BEGIN{printf "%.3f", (a-b)/g}')")
    RUN_C_ORIGIN+=("$(awk -v a="$(cpu_secs "$ORIGIN_PID")" -v b="$o0" -v g="$gib" 'BEGIN{printf "%.3f", (a-b)/g}')")
    RUN_C_CLIENT+=("$(jq -r --arg g "$gib" '.cpu_s / ($g|tonumber) * 1000 | round / 1000' <<<"$out")")
    echo "$label run $run: direct $d MiB/s, cold through origin $c MiB/s" >&2
    if [ "$keep" != 1 ] || [ "$run" != "$RUNS" ]; then stop_pid "$ORIGIN_PID"; fi
  done
}

# The same over a link to the upstream limited to BENCH_LINK_MIBS (a remote registry):
# direct through the limiting proxy against origin whose upstream is that proxy. First, so
# the last loopback origin can stay up for the warm phase.
LINK=${BENCH_LINK_MIBS:-200}
coproc THROTTLE { exec "$PY" "$BENCH_DIR/throttle.py" --to "127.0.0.1:$UP_PORT" --mib-s "$LINK"; }
PIDS+=("$THROTTLE_PID")
read -r LINK_PORT <&"${THROTTLE[0]}"
cold_runs link "$LINK_PORT" "${MIRROR_TOML//127.0.0.1:$UP_PORT/127.0.0.1:$LINK_PORT}" 0
stop_pid "$THROTTLE_PID"
ldirect=("${RUN_DIRECT[@]}") lcold=("${RUN_COLD[@]}")
LDIRECT=$(printf '%s\n' "${ldirect[@]}" | median)
LCOLD=$(printf '%s\n' "${lcold[@]}" | median)

# A client that verifies the digest as it reads (as docker, containerd and skopeo do).
cold_runs "loopback, verifying client" "$UP_PORT" "$MIRROR_TOML" 0 --verify
VDIRECT=$(printf '%s\n' "${RUN_DIRECT[@]}" | median)
VCOLD=$(printf '%s\n' "${RUN_COLD[@]}" | median)
vdirect=("${RUN_DIRECT[@]}") vcold=("${RUN_COLD[@]}")

cold_runs loopback "$UP_PORT" "$MIRROR_TOML" 1
direct=("${RUN_DIRECT[@]}") cold=("${RUN_COLD[@]}")
DIRECT=$(printf '%s\n' "${direct[@]}" | median)
COLD=$(printf '%s\n' "${cold[@]}" | median)
med() { printf '%s\n' "$@" | median; }
D_UP=$(med "${RUN_D_UP[@]}") D_CLIENT=$(med "${RUN_D_CLIENT[@]}") D_BUSY=$(med "${RUN_D_BUSY[@]}")
C_UP=$(med "${RUN_C_UP[@]}") C_ORIGIN=$(med "${RUN_C_ORIGIN[@]}") C_CLIENT=$(med "${RUN_C_CLIENT[@]}")
port=$ORIGIN_PORT
WARM_PID=$ORIGIN_PID

# Warm: the last (unlimited) mirror instance has the blob; push the same bytes to a local
# repository.
"$PY" "$BENCH_DIR/seed.py" --url "http://127.0.0.1:$port" --data "$DATA" --sizes "$BLOB" \
  --repo local/bench --method monolithic --out "$WORK/local.json" >/dev/null
warm_rows=""
for c in 1 8; do
  m=$("$PY" "$BENCH_DIR/getblob.py" --url "http://127.0.0.1:$port/v2/library/bench/blobs/$DIGEST" -c "$c" -d "$SECS" --size "$SIZE" | jq -r .mib_s)
  l=$("$PY" "$BENCH_DIR/getblob.py" --url "http://127.0.0.1:$port/v2/local/bench/blobs/$DIGEST" -c "$c" -d "$SECS" --size "$SIZE" | jq -r .mib_s)
  warm_rows+="| warm pull, $c conn | $m | $l (local repository) | $(awk -v a="$m" -v b="$l" 'BEGIN{printf "%.2f", a/b}') |
"
done
# distribution can sit in its connection drain for minutes after SIGTERM: it is only a peer
# here, so it is killed outright (by its PID).
kill -KILL "$DIST_PID" 2>/dev/null || true
stop_pid "$DIST_PID"
stop_pid "$WARM_PID"

table="Pull-through cache, $BLOB blob ($SIZE bytes), driver $DRIVER, $(date -u +%Y-%m-%dT%H:%MZ)
$(nproc) cores, $(uname -r)

| phase | through origin MiB/s | reference MiB/s | ratio |
|---|---|---|---|
| cold pull, loopback upstream (median of $RUNS; runs: ${cold[*]}) | $COLD | $DIRECT (upstream directly; runs: ${direct[*]}) | $(awk -v a="$COLD" -v b="$DIRECT" 'BEGIN{printf "%.2f", a/b}') |
| cold pull, loopback upstream, verifying client (runs: ${vcold[*]}) | $VCOLD | $VDIRECT (upstream directly, verifying; runs: ${vdirect[*]}) | $(awk -v a="$VCOLD" -v b="$VDIRECT" 'BEGIN{printf "%.2f", a/b}') |
| cold pull, upstream over a $LINK MiB/s link (runs: ${lcold[*]}) | $LCOLD | $LDIRECT (through the same link; runs: ${ldirect[*]}) | $(awk -v a="$LCOLD" -v b="$LDIRECT" 'BEGIN{printf "%.2f", a/b}') |
$warm_rows
CPU seconds per GiB moved, cold pull on loopback (medians of $RUNS; non-verifying client):

| pull | upstream | origin | client | total |
|---|---|---|---|---|
| direct (kept $D_BUSY of all $(nproc) cores busy) | $D_UP | - | $D_CLIENT | $(awk -v a="$D_UP" -v b="$D_CLIENT" 'BEGIN{printf "%.3f", a+b}') |
| through origin | $C_UP | $C_ORIGIN | $C_CLIENT | $(awk -v a="$C_UP" -v b="$C_ORIGIN" -v c="$C_CLIENT" 'BEGIN{printf "%.3f", a+b+c}') |

When the direct pull already keeps every core busy, the cold ratio cannot exceed direct
total / through-origin total = $(awk -v a="$D_UP" -v b="$D_CLIENT" -v x="$C_UP" -v y="$C_ORIGIN" -v z="$C_CLIENT" 'BEGIN{printf "%.2f", (a+b)/(x+y+z)}')."
echo "$table"
if [ -n "${BENCH_OUT:-}" ]; then echo "$table" > "$BENCH_OUT"; fi
