#!/usr/bin/env bash
# Before/after of two origin binaries over compare.sh's origin phases (pulls: manifest GET,
# HEAD, 4 KiB and large blob GETs; pushes; manifest PUTs and small pushes), rounds
# alternating the binaries in one session so drift of the machine hits both alike. Prints
# the median of each phase per binary and after/before.
#
#   BENCH_SKIP_BUILD=1 bench/ab_compare.sh before=/path/to/origin after=/path/to/other
#
# Environment: AB_ROUNDS (default 2), AB_DIR (where the runs and their storage go, default
# /tmp; /dev/shm takes the disk out of write phases to compare the code path), and compare.sh's (BENCH_SECS, BENCH_PHASES, ...);
# each run is `compare.sh --quick` with BENCH_SERVERS=origin unless BENCH_QUICK=0.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,10p' "$0"; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${AB_ROUNDS:-2}
OUT=$(mktemp -d "${AB_DIR:-/tmp}/origin-ab.XXXXXX")
DATA=${BENCH_DATA:-$OUT/seed}
quick=--quick
[ "${BENCH_QUICK:-1}" = 0 ] && quick=
labels=()
for round in $(seq 1 "$ROUNDS"); do
  for entry in "$@"; do
    label=${entry%%=*}
    bin=${entry#*=}
    [ "$round" = 1 ] && labels+=("$label")
    work="$OUT/$label-$round"
    mkdir -p "$work"
    echo "== round $round: $label ($bin)" >&2
    BENCH_SKIP_BUILD=1 ORIGIN_BIN="$bin" BENCH_SERVERS=origin BENCH_WORK="$work" \
      BENCH_DATA="$DATA" "$HERE/compare.sh" $quick > "$work/stdout" 2> "$work/stderr" \
      || { echo "run failed: $work/stderr" >&2; exit 1; }
  done
done
python3 - "$OUT" "${labels[@]}" <<'PY'
import csv, statistics, sys, pathlib
out, labels = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = {}   # (order, phase, conns, tool, unit) -> label -> [values]
cpu = {}
for d in sorted(out.iterdir()):
    if not d.is_dir() or d.name == "seed":
        continue
    label = d.name.rsplit("-", 1)[0]
    for r in csv.reader(open(d / "results.tsv"), delimiter="\t"):
        if r[0] != "origin" or r[5] in ("", "-"):
            continue
        key = (int(r[1]), r[2], r[3], r[4], r[6])
        try:
            v = float(r[5])
        except ValueError:
            continue
        rows.setdefault(key, {}).setdefault(label, []).append(v)
        work, cpu_s = r[7], r[8]
        try:
            w, c = float(work), float(cpu_s)
            if w > 0:
                per = c / w * (1e6 if r[6] == "req/s" else 2**30)
                cpu.setdefault(key, {}).setdefault(label, []).append(per)
        except ValueError:
            pass
a, b = labels[0], labels[-1]
print(f"| phase | conns | tool | unit | {a} | {b} | {b}/{a} | CPU {a} | CPU {b} | CPU unit |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows):
    order, phase, conns, tool, unit = key
    va, vb = rows[key].get(a), rows[key].get(b)
    if not va or not vb:
        continue
    ma, mb = statistics.median(va), statistics.median(vb)
    c = cpu.get(key, {})
    ca = f"{statistics.median(c[a]):,.1f}" if c.get(a) else "-"
    cb = f"{statistics.median(c[b]):,.1f}" if c.get(b) else "-"
    cu = "µs/req" if unit == "req/s" else "s/GiB"
    fmt = lambda v: f"{v:,.0f}" if v >= 100 else f"{v:,.2f}"
    print(f"| {phase} | {conns} | {tool} | {unit} | {fmt(ma)} | {fmt(mb)} | {mb/ma:.2f} | {ca} | {cb} | {cu} |")
print(f"\nmedians of {len(next(iter(rows.values())).get(a, []))} runs per binary; raw: {out}")
PY
