#!/usr/bin/env bash
# The cost of traces (issue #26, point 3), in one run, the same binary three ways:
#   off      no [tracing] section (and, with BENCH_BASE_BIN, that binary too, labelled main:
#            today's code without any trace support, the reference for "off")
#   on-0     [tracing] on, sample_ratio = 0.0 (nothing recorded, the decision still made)
#   on-100   [tracing] on, sample_ratio = 1.0, exported to a real receiver on 127.0.0.1
#            (bench/otlp_sink.py: OTLP/HTTP, answers 200, counts)
# Phases per configuration: wrk GETs of a 4 KiB blob, then of a manifest by tag
# (BENCH_CONNS connections, BENCH_SECS each), then pushes of 1 MiB blobs (bench/push.py,
# monolithic, BENCH_PUSH_STREAMS streams, BENCH_SECS). Rounds alternate the configurations,
# each round starting one further on, so drift of the machine hits all alike; the table
# shows the median of the rounds and the ratio to off, with the server's CPU per request
# (all its threads, the exporter's included; not wrk's nor the receiver's, which share the
# machine) and, of it, the exporter thread's (origin-traces). Each configuration gets a
# fresh server and storage root, seeded by bench/seed.py through the API.
#
#   bench/tracing.sh
#
# Environment (all optional):
#   BENCH_SECS          seconds per phase (default 8)
#   BENCH_CONNS         pull connections (default 16)
#   BENCH_PUSH_STREAMS  push streams (default 4)
#   BENCH_ROUNDS        rounds (default 3)
#   BENCH_BASE_BIN      another origin binary run as "main" (without trace support)
#   BENCH_BEFORE_BIN    another origin binary with trace support, run at 100 % as
#                       "before-100" (a before/after of a change to the trace path)
#   BENCH_OUT           also write the table there
#   BENCH_SKIP_BUILD=1, ORIGIN_BIN as in bench/lib.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT

no_args "$@"
SECS=${BENCH_SECS:-8}
CONNS=${BENCH_CONNS:-16}
STREAMS=${BENCH_PUSH_STREAMS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
BASE_BIN=${BENCH_BASE_BIN:-}
BEFORE_BIN=${BENCH_BEFORE_BIN:-}
REPO=bench/app
need wrk python3 curl
build_origin
LOGS=$WORK/logs
DATA=$WORK/data
mkdir -p "$LOGS" "$DATA"
RESULTS=$WORK/results.tsv
: >"$RESULTS"
python3 "$BENCH_DIR/seed.py" --data "$DATA" --sizes 4k,1m >/dev/null 2>&1

sink_port=$(free_port)
python3 "$BENCH_DIR/otlp_sink.py" --port "$sink_port" --stats "$WORK/sink.json" &
SINK_PID=$!
PIDS+=("$SINK_PID")

# wrk_stats OUT: "req/s p50_ms p99_ms errors" of a wrk --latency output.
wrk_stats() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 }
      return v + 0
    }
    /^ +50%/ {p50 = ms($2)}
    /^ +99%/ {p99 = ms($2)}
    /Requests\/sec/ {rps = $2}
    /Non-2xx or 3xx responses/ {err += $NF}
    /Socket errors/ {gsub(/,/, ""); err += $4 + $6 + $8 + $10}
    END {printf "%.0f %.3f %.3f %d\n", rps, p50, p99, err}' "$1"
}

# metric URL NAME: a counter's value from /metrics.
metric() { curl -s "$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }

configs=(off on-0 on-100)
[ -n "$BASE_BIN" ] && configs=(main "${configs[@]}")
[ -n "$BEFORE_BIN" ] && configs+=(before-100)
for round in $(seq 1 "$ROUNDS"); do
  # Each round starts one configuration further on (lib.sh, rotation).
  rotation "$round" "${configs[@]}"
  for config in "${ROTATED[@]}"; do
    bin=$ORIGIN_BIN
    extra=""
    case $config in
      main) bin=$BASE_BIN ;;
      on-0|on-100|before-100)
        ratio=0.0
        [ "$config" != on-0 ] && ratio=1.0
        [ "$config" = before-100 ] && bin=$BEFORE_BIN
        extra="[tracing]
enabled = true
endpoint = \"http://127.0.0.1:$sink_port\"
sample_ratio = $ratio" ;;
    esac
    port=$(free_port)
    ORIGIN_BIN=$bin ORIGIN_EXTRA_TOML=$extra start_origin "$port" "$WORK/root-$config-$round"
    url=http://127.0.0.1:$port
    seed=$WORK/seed-$config-$round.json
    python3 "$BENCH_DIR/seed.py" --url "$url" --data "$DATA" --sizes 4k,1m --repo "$REPO" \
      --method monolithic --out "$seed" >/dev/null 2>&1
    blob=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"]["4k"]["digest"])' "$seed")
    big=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["blobs"]["1m"]["path"])' "$seed")
    echo "== round $round: $config" >&2
    for phase in blob manifest; do
      case $phase in
        blob) target="$url/v2/$REPO/blobs/$blob" ;;
        *) target="$url/v2/$REPO/manifests/4k" ;;
      esac
      settle
      o=$LOGS/$round-$config-$phase.txt
      phase_begin "$ORIGIN_PID"
      x0=$(thread_cpu_secs "$ORIGIN_PID" origin-traces)
      wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s --latency -s "$BENCH_DIR/wrk/$phase.lua" \
        "$target" >"$o" 2>&1 || true
      phase_end "$ORIGIN_PID"
      x1=$(thread_cpu_secs "$ORIGIN_PID" origin-traces)
      read -r rps p50 p99 errs < <(wrk_stats "$o")
      cpu=$(python3 -c "print(f'{$PHASE_CPU * 1e6 / max($rps * $SECS, 1):.1f}')")
      exp=$(python3 -c "print(f'{($x1 - $x0) * 1e6 / max($rps * $SECS, 1):.2f}')")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$config" "$phase" "$rps" "$p50" "$p99" "$errs" "$cpu" "$exp" >>"$RESULTS"
    done
    settle
    o=$LOGS/$round-$config-push.json
    phase_begin "$ORIGIN_PID"
    python3 "$BENCH_DIR/push.py" --url "$url" --repo "$REPO" --file "$big" --size-mib 1 \
      -s "$STREAMS" -d "$SECS" --mode monolithic --run-id "$config-$round" >"$o" || true
    phase_end "$ORIGIN_PID"
    read -r pushes_s p50 errs < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("%.0f %.3f %d" % (r["pushes"] / r["secs"], (r["push_secs_p50"] or 0) * 1000, r["errors"]))' "$o")
    cpu=$(python3 -c "print(f'{$PHASE_CPU * 1e6 / max($pushes_s * $SECS, 1):.1f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$round" "$config" "push 1 MiB" "$pushes_s" "$p50" "-" "$errs" "$cpu" >>"$RESULTS"
    if [ "$config" != off ] && [ "$config" != main ]; then
      sleep 3 # the exporter's batch delay (2 s), so what was recorded is counted
      spans="exported $(metric "$url" origin_trace_spans_exported_total), dropped $(metric "$url" origin_trace_spans_dropped_total), failed $(metric "$url" origin_trace_spans_failed_total)"
      echo "$round $config: spans $spans" >>"$WORK/spans.txt"
    fi
    stop_pid "$ORIGIN_PID"
    rm -rf "$WORK/root-$config-$round" # the pushes' GBs: the disk must not fill up
  done
done
stop_pid "$SINK_PID"

TABLE=$WORK/tracing.md
{
  echo "# bench/tracing.sh"
  echo
  echo "- command: \`BENCH_SECS=$SECS BENCH_CONNS=$CONNS BENCH_PUSH_STREAMS=$STREAMS BENCH_ROUNDS=$ROUNDS${BASE_BIN:+ BENCH_BASE_BIN=$BASE_BIN}${BEFORE_BIN:+ BENCH_BEFORE_BIN=$BEFORE_BIN} bench/tracing.sh\`"
  echo "- origin: $(origin_description)"
  echo "- machine: $(machine_description); load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- wrk, one thread, $CONNS connections; server: one worker per core, anonymous, fs; receiver: bench/otlp_sink.py ($(cat "$WORK/sink.json"))"
  echo
  python3 - "$RESULTS" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    rnd, config, phase, rate, p50, p99, errs, cpu, exp = line.rstrip("\n").split("\t")
    if (config, phase) not in rows:
        order.append((config, phase))
    rows[(config, phase)].append((float(rate), p50, p99, int(errs), float(cpu), exp))
print("| phase | config | rate (median) | rounds | p50 ms (median) | errors | vs off "
      "| server CPU µs per request (median) | CPU vs off | of which the exporter |")
print("|---|---|---|---|---|---|---|---|---|---|")
phases = []
for _, p in order:
    if p not in phases:
        phases.append(p)
for phase in phases:
    off = statistics.median(r[0] for r in rows[("off", phase)])
    off_cpu = statistics.median(r[4] for r in rows[("off", phase)])
    for config, p in order:
        if p != phase:
            continue
        rs = rows[(config, p)]
        med = statistics.median(r[0] for r in rs)
        p50 = statistics.median(float(r[1]) for r in rs)
        unit = "pushes/s" if phase.startswith("push") else "req/s"
        cpu = statistics.median(r[4] for r in rs)
        exps = [float(r[5]) for r in rs if r[5] != "-"]
        exp = f"{statistics.median(exps):.2f}" if exps and config not in ("off", "main") else "-"
        print(f"| {phase} | {config} | {med:.0f} {unit} | {' '.join(f'{r[0]:.0f}' for r in rs)} "
              f"| {p50:.3f} | {sum(r[3] for r in rs)} | {med / off:.3f} | {cpu:.1f} "
              f"| {cpu / off_cpu:.3f} | {exp} |")
PY
  echo
  echo "Spans per on-configuration server (its /metrics after the phases):"
  echo
  sed 's/^/- /' "$WORK/spans.txt"
} >"$TABLE"
cat "$TABLE"
if [ -n "${BENCH_OUT:-}" ]; then cp "$TABLE" "$BENCH_OUT"; fi
