#!/usr/bin/env bash
# A/B of origin binaries on one small request, alternating binaries round by round in one
# session, so drift of the machine hits both alike. Each round starts a fresh server (fs,
# anonymous), pushes one blob, runs oha for SECS and reads the server's CPU per request.
#
#   bench/ab.sh name=/path/to/origin name2=/path/to/other [...]
#
# Environment: AB_METHOD (HEAD or GET, default HEAD), AB_BYTES (blob size, default 4096),
# AB_ROUNDS (default 3), AB_SECS (default 8), AB_CONNS (default 32).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need curl oha python3 sha256sum
METHOD=${AB_METHOD:-HEAD}
BYTES=${AB_BYTES:-4096}
ROUNDS=${AB_ROUNDS:-3}
SECS=${AB_SECS:-8}
CONNS=${AB_CONNS:-32}
[ $# -ge 1 ] || { sed -n '2,10p' "$0"; exit 1; }

blob="$WORK/blob"
head -c "$BYTES" /dev/urandom > "$blob"
digest="sha256:$(sha256sum "$blob" | cut -d' ' -f1)"
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

printf '| round | binary | %s req/s | µs CPU / request |\n|---|---|---|---|\n' "$METHOD"
for round in $(seq 1 "$ROUNDS"); do
  for entry in "$@"; do
    label=${entry%%=*}
    ORIGIN_BIN=${entry#*=}
    port=$(free_port)
    root="$WORK/root-$label"
    start_origin "$port" "$root"
    url="http://127.0.0.1:$port/v2/ab/test/blobs/$digest"
    curl -sf -X POST --data-binary @"$blob" -H 'Content-Type: application/octet-stream' \
      "http://127.0.0.1:$port/v2/ab/test/blobs/uploads/?digest=$digest" -o /dev/null
    out="$WORK/oha-$label-$round.json"
    before=$(cpu_ticks "$ORIGIN_PID")
    read -r rps ok bad < <(oha_run "$out" "$url" "$CONNS" "$SECS" -m "$METHOD")
    after=$(cpu_ticks "$ORIGIN_PID")
    stop_pid "$ORIGIN_PID"
    rm -rf "$root"
    python3 - "$round" "$label" "$rps" "$ok" "$bad" "$before" "$after" "$ticks" <<'PY'
import sys
r, label, rps, ok, bad, b, a, hz = sys.argv[1:]
ok, bad = int(ok), int(bad)
us = (int(a) - int(b)) / int(hz) * 1e6 / ok if ok else float("nan")
flag = f" ({bad} failed)" if bad else ""
print(f"| {r} | {label} | {float(rps):,.0f}{flag} | {us:.2f} |")
PY
  done
done
