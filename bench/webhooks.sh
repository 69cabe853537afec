#!/usr/bin/env bash
# What an event webhook costs a pull: manifest GET by tag (64 connections, wrk) on Origin
# with no webhook, then with an `async` manifest.pull webhook to a local receiver. One origin
# at a time on the same storage. Prints both rates, their ratio, and the webhook counters
# (deliveries, failures, drops: the queue is bounded, so a receiver slower than the pull
# rate loses events, counted, instead of slowing pulls). See bench/README.md.
#
#   bench/webhooks.sh [seconds per run]     (default 10)
#   ORIGIN_IO_DRIVER=poll bench/webhooks.sh
#   CARGO_TARGET_DIR=/path bench/webhooks.sh  (the binary is taken from there)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
CONNS=${BENCH_CONNS:-64}
DRIVER=${ORIGIN_IO_DRIVER:-auto}
need wrk curl python3
build_origin
DATA=$WORK/data
mkdir -p "$DATA"
REPO=bench/app

seed() {
  local base=$1 cfg='{}' cd manifest
  cd="sha256:$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)"
  curl -sf -X POST --data-binary "$cfg" -H 'Content-Type: application/octet-stream' \
    "$base/v2/$REPO/blobs/uploads/?digest=$cd" -o /dev/null
  manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cd\",\"size\":2},\"layers\":[]}"
  curl -sf -X PUT --data-binary "$manifest" \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    "$base/v2/$REPO/manifests/v1" -o /dev/null
}

metric() { curl -sf "$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

# Without a webhook.
P=$(free_port); start_origin "$P" "$DATA" "$DRIVER"
seed "http://127.0.0.1:$P"
URL="http://127.0.0.1:$P/v2/$REPO/manifests/v1"
wrk_rps "$URL" "$CONNS" 2 "$BENCH_DIR/wrk/manifest.lua" >/dev/null # warm-up
plain=$(wrk_rps "$URL" "$CONNS" "$SECS" "$BENCH_DIR/wrk/manifest.lua")
stop_pid "$ORIGIN_PID"

# With an async manifest.pull webhook.
RP=$(free_port)
HP=$(free_port)
python3 "$BENCH_DIR/webhook_receiver.py" "$RP" "$WORK/received" &
RECV_PID=$!
PIDS+=("$RECV_PID")
wait_http "http://127.0.0.1:$RP/" # answers 501 to GET: up
ORIGIN_REPOS_TOML='[[repository]]
namespace = ""
policy_default_allow = true
event_webhooks = ["pulls"]' \
ORIGIN_EXTRA_TOML="[event_webhook.pulls]
url = \"http://127.0.0.1:$RP/hook\"
events = [\"manifest.pull\"]
delivery = \"async\"
max_retries = 0" \
  start_origin "$HP" "$DATA" "$DRIVER"
BASE=$HP
URL="http://127.0.0.1:$BASE/v2/$REPO/manifests/v1"
wrk_rps "$URL" "$CONNS" 2 "$BENCH_DIR/wrk/manifest.lua" >/dev/null # warm-up
hooked=$(wrk_rps "$URL" "$CONNS" "$SECS" "$BENCH_DIR/wrk/manifest.lua")
sleep 1
delivered=$(metric "http://127.0.0.1:$BASE" origin_webhook_deliveries_total)
failed=$(metric "http://127.0.0.1:$BASE" origin_webhook_failures_total)
dropped=$(metric "http://127.0.0.1:$BASE" origin_webhook_dropped_total)
stop_pid "$ORIGIN_PID"
stop_pid "$RECV_PID"

printf '\nmanifest GET by tag, %s connections, %ss each, io_driver=%s, %s cores\n' \
  "$CONNS" "$SECS" "$DRIVER" "$(nproc)"
printf '%-28s %12s\n' configuration req/s
printf '%-28s %12s\n' "no webhook" "$plain"
printf '%-28s %12s\n' "async manifest.pull webhook" "$hooked"
printf 'ratio (with / without): %s\n' "$(ratio "$hooked" "$plain")"
printf 'webhook: %s delivered, %s failed, %s dropped (queue full), receiver counted %s\n' \
  "${delivered:-?}" "${failed:-?}" "${dropped:-?}" "$(cat "$WORK/received" 2>/dev/null || echo '?')"
