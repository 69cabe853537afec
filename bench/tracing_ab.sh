#!/usr/bin/env bash
# A/B of origin binaries' trace paths on the two small pulls of bench/tracing.sh (a 4 KiB blob
# GET, a manifest GET by tag; wrk -t1 -c16), with tracing off, or on at 0 % or 100 % sampling
# to the receiver of bench/tracing.sh (bench/otlp_sink.py). Configurations alternate within
# each round, each round starting one further on, each on a fresh server and storage root;
# a line per round and configuration gives the rate, the server's CPU per request (all
# its threads) and the exporter thread's (origin-traces), then a table of medians and
# ratios to the first configuration.
#
#   bench/tracing_ab.sh off=/path/origin:off new=/path/origin:100 old=/path/other:100
#   bench/tracing_ab.sh off=/path/origin:off zero=/path/origin:0
#
# With BENCH_PIN=1 the server runs on CPU 0 (taskset: one worker, the exporter thread on the
# same core) and wrk and the receiver on CPU 1: every µs the exporter spends then comes out
# of the worker's rate, and the rounds of one binary spread less than on both cores.
#
# Environment: BENCH_ROUNDS (default 6), BENCH_SECS (seconds per phase, default 5),
# BENCH_PIN (default 0).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT
need wrk python3 curl taskset
ROUNDS=${BENCH_ROUNDS:-6}
SECS=${BENCH_SECS:-5}
PIN=${BENCH_PIN:-0}
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 1; }
# The prefix that puts wrk and the receiver on CPU 1 when pinned (an array, so the receiver's
# PID is its own, not a subshell's).
ON_CPU1=()
[ "$PIN" = 1 ] && ON_CPU1=(taskset -c 1)

DATA=$WORK/data
mkdir -p "$DATA"
python3 "$BENCH_DIR/seed.py" --data "$DATA" --sizes 4k >/dev/null 2>&1
sink_port=$(free_port)
"${ON_CPU1[@]}" python3 "$BENCH_DIR/otlp_sink.py" --port "$sink_port" --stats "$WORK/sink.json" &
PIDS+=($!)
LINES=$WORK/lines.txt
: >"$LINES"

for round in $(seq 1 "$ROUNDS"); do
  # Each round starts one configuration further on (lib.sh, rotation).
  rotation "$round" "$@"
  for spec in "${ROTATED[@]}"; do
    label=${spec%%=*}
    IFS=: read -r bin mode <<<"${spec#*=}"
    extra=""
    case $mode in
      off) ;;
      0|100)
        ratio=0.0
        [ "$mode" = 100 ] && ratio=1.0
        extra="[tracing]
enabled = true
endpoint = \"http://127.0.0.1:$sink_port\"
sample_ratio = $ratio" ;;
      *) echo "mode must be off, 0 or 100: $spec" >&2; exit 1 ;;
    esac
    if [ "$PIN" = 1 ]; then
      printf '#!/bin/sh\nexec taskset -c 0 %s "$@"\n' "$bin" >"$WORK/pinned-$label.sh"
      chmod +x "$WORK/pinned-$label.sh"
      bin=$WORK/pinned-$label.sh
    fi
    port=$(free_port)
    ORIGIN_BIN=$bin ORIGIN_EXTRA_TOML=$extra start_origin "$port" "$WORK/root-$label-$round"
    url=http://127.0.0.1:$port
    python3 "$BENCH_DIR/seed.py" --url "$url" --data "$DATA" --sizes 4k --repo bench/app \
      --method monolithic --out "$WORK/seed.json" >/dev/null 2>&1
    blob=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"]["4k"]["digest"])' "$WORK/seed.json")
    line="$round $label"
    for phase in blob manifest; do
      case $phase in
        blob) target=$url/v2/bench/app/blobs/$blob ;;
        *) target=$url/v2/bench/app/manifests/4k ;;
      esac
      sleep 1
      c0=$(cpu_secs "$ORIGIN_PID")
      x0=$(thread_cpu_secs "$ORIGIN_PID" origin-traces)
      "${ON_CPU1[@]}" wrk -t1 -c16 -d"${SECS}s" -s "$BENCH_DIR/wrk/$phase.lua" "$target" >"$WORK/wrk.txt" 2>&1
      c1=$(cpu_secs "$ORIGIN_PID")
      x1=$(thread_cpu_secs "$ORIGIN_PID" origin-traces)
      rps=$(awk '/Requests\/sec/{print $2}' "$WORK/wrk.txt")
      us=$(python3 -c "print(f'{($c1-$c0)*1e6/($rps*$SECS):.1f}')")
      xus=$(python3 -c "print(f'{($x1-$x0)*1e6/($rps*$SECS):.2f}')")
      line="$line $phase $rps $us $xus"
    done
    echo "$line" | tee -a "$LINES"
    stop_pid "$ORIGIN_PID"
    rm -rf "$WORK/root-$label-$round"
  done
done

python3 - "$LINES" <<'EOF'
import collections, statistics as st, sys
runs = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    f = line.split()
    if f[1] not in order:
        order.append(f[1])
    for i in (2, 6):
        runs[(f[1], f[i])].append((float(f[i + 1]), float(f[i + 2]), float(f[i + 3])))
print("\n| phase | config | rate (median) | vs first | CPU µs per request | vs first "
      "| of which the exporter | rounds (k req/s) |")
print("|---|---|---|---|---|---|---|---|")
for phase in ("blob", "manifest"):
    base = runs[(order[0], phase)]
    r0, c0 = st.median(x[0] for x in base), st.median(x[1] for x in base)
    for label in order:
        v = runs[(label, phase)]
        r, c = st.median(x[0] for x in v), st.median(x[1] for x in v)
        exporter = st.median(x[2] for x in v)
        rounds = " ".join(f"{x[0] / 1000:.0f}" for x in v)
        print(f"| {phase} | {label} | {r:.0f} | {r / r0:.3f} | {c:.1f} | {c / c0:.3f} "
              f"| {exporter:.2f} | {rounds} |")
EOF
