#!/usr/bin/env bash
# The web UI's cost (issue #24, point 4), on origin's fs backend, in one run:
#   (a) pulls with and without UI load: wrk GETs a blob (the image's layer) and then a
#       manifest by tag, each four ways, one after the other: alone; beside a second wrk
#       running the UI's JSON calls in a loop (repositories, a tags page, manifest details,
#       referrers; bench/wrk/ui.lua) as fast as it is answered, then paced (BENCH_UI_DELAY_MS);
#       and beside a second wrk, with as many connections, on `GET /v2/` (the control: what
#       any second client costs on this machine). Reports
#       pull req/s, p50/p99, and the ratios to alone and to the control. BENCH_ROUNDS rounds.
#   (b) each UI endpoint alone on a repository of BENCH_TAGS tags (and BENCH_REPOS
#       repositories in the catalog): req/s, p50/p99 latency, server CPU per request, with
#       `tags/list` of /v2/ as the reference; then a walk of every tag page of the UI.
# The tags and repositories are written below the API (bench/scale.py seed-origin-fs, as
# bench/scale.sh does), all naming one image pushed through the API (bench/ui.py: a tar.gz
# layer of 1,000 files, labels, history, an SBOM referrer). Anonymous, plain HTTP.
#
#   bench/ui.sh
#
# Environment (all optional):
#   BENCH_SECS       seconds per wrk run (default 10)
#   BENCH_CONNS      pull connections (default 16)
#   BENCH_UI_CONNS   connections of the second wrk, UI or control (default 4)
#   BENCH_ROUNDS     rounds of part (a) (default 2)
#   BENCH_UI_DELAY_MS  the paced UI client's wait before each request, per connection
#                    (default 40: about 100 UI calls per second with 4 connections)
#   BENCH_TAGS       tags in the repository (default 100000)
#   BENCH_REPOS      repositories in the catalog (default 10000)
#   BENCH_OUT        also write the tables there
#   BENCH_SKIP_BUILD=1, ORIGIN_BIN as in bench/lib.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'set +e; cleanup' EXIT

no_args "$@"
SECS=${BENCH_SECS:-10}
CONNS=${BENCH_CONNS:-16}
UI_CONNS=${BENCH_UI_CONNS:-4}
ROUNDS=${BENCH_ROUNDS:-2}
UI_DELAY_MS=${BENCH_UI_DELAY_MS:-40}
TAGS=${BENCH_TAGS:-100000}
REPOS=${BENCH_REPOS:-10000}
REPO=ui/app
need wrk python3 curl
build_origin
LOGS=$WORK/logs
mkdir -p "$LOGS"
TABLES=$WORK/ui.md
: >"$TABLES"
out() { echo "$*" | tee -a "$TABLES"; }

# wrk_stats OUT: "req/s p50_ms p99_ms requests errors" of a wrk --latency output.
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
    /requests in/ {req = $1}
    /Requests\/sec/ {rps = $2}
    /Non-2xx or 3xx responses/ {err += $NF}
    /Socket errors/ {gsub(/,/, ""); err += $4 + $6 + $8 + $10}
    END {printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, req, err}' "$1"
}

# wrk1 OUT CONNS URL [wrk args...]: one wrk thread for SECS, latency kept.
wrk1() {
  local o=$1 c=$2 u=$3; shift 3
  wrk -t1 -c"$c" -d"${SECS}s" --timeout 10s --latency "$@" "$u" >"$o" 2>&1 || true
}

port=$(free_port)
root=$WORK/root
start_origin "$port" "$root"
url=http://127.0.0.1:$port
read -r image layer < <(python3 "$BENCH_DIR/ui.py" push-image "$url" "$REPO" latest 1000)
seed=$(python3 "$BENCH_DIR/scale.py" seed-origin-fs "$root" "$REPO" "$TAGS" "$REPOS" "$image")
mid=$(python3 -c "print(f't{$TAGS // 2:06d}')")
midrepo=$(python3 -c "print(f'r/{$REPOS // 2:06d}')")
# What a person browsing does, page after page: the tree, a repository's first and a deep
# page of tags, an image's details, its referrers.
UI_PATHS=(
  "/ui/api/repositories"
  "/ui/api/tags?repo=$REPO"
  "/ui/api/tags?repo=$REPO&last=$mid"
  "/ui/api/manifest?repo=$REPO&ref=$mid"
  "/ui/api/referrers?repo=$REPO&digest=$image"
)
for p in "${UI_PATHS[@]}" "/v2/$REPO/blobs/$layer" "/v2/$REPO/manifests/latest"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url$p")
  [ "$code" = 200 ] || { echo "GET $p: $code" >&2; exit 1; }
done

out "# bench/ui.sh"
out ""
out "- command: \`BENCH_SECS=$SECS BENCH_CONNS=$CONNS BENCH_UI_CONNS=$UI_CONNS BENCH_UI_DELAY_MS=$UI_DELAY_MS BENCH_ROUNDS=$ROUNDS BENCH_TAGS=$TAGS BENCH_REPOS=$REPOS bench/ui.sh\`"
out "- origin: $(origin_description)"
out "- machine: $(machine_description); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
out "- wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), one thread per wrk; server: 2 workers (one per core), anonymous, fs"
out "- seeded: $TAGS tags and $REPOS repositories below the API in ${seed}s; blob pulled: the image's layer ($(curl -s -o /dev/null -w '%{size_download}' "$url/v2/$REPO/blobs/$layer") bytes)"
out ""
out "## (a) pulls alone, beside the UI, beside a control client ($SECS s each, $CONNS pull connections, $UI_CONNS on the second wrk)"
out ""
out "| round | pull | beside | pull req/s | p50 ms | p99 ms | errors | second wrk req/s | vs alone | vs control |"
out "|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for what in blob manifest; do
    case $what in
      blob) target="$url/v2/$REPO/blobs/$layer" ;;
      *) target="$url/v2/$REPO/manifests/latest" ;;
    esac
    alone=0 control=0
    for beside in none control ui ui-paced; do
      settle
      o=$LOGS/a-$round-$what-$beside.txt
      o2=$LOGS/a-$round-$what-$beside-second.txt
      second=""
      case $beside in
        control) wrk1 "$o2" "$UI_CONNS" "$url/v2/" & second=$! ;;
        ui|ui-paced)
          pace=0
          [ "$beside" = ui-paced ] && pace=$UI_DELAY_MS
          UI_DELAY_MS=$pace wrk -t1 -c"$UI_CONNS" -d"${SECS}s" --timeout 10s --latency \
            -s "$BENCH_DIR/wrk/ui.lua" "$url" -- "${UI_PATHS[@]}" >"$o2" 2>&1 &
          second=$! ;;
      esac
      wrk1 "$o" "$CONNS" "$target" -s "$BENCH_DIR/wrk/$what.lua"
      other=-
      if [ -n "$second" ]; then
        wait "$second"
        read -r other _ _ _ e2 < <(wrk_stats "$o2")
        [ "$other" != 0 ] || { echo "the second wrk made no request: $o2" >&2; exit 1; }
        [ "$e2" = 0 ] || other="$other ($e2 errors)"
      fi
      read -r rps p50 p99 _ errs < <(wrk_stats "$o")
      case $beside in
        none) alone=$rps; va=1.00; vc=- ;;
        control) control=$rps; va=$(ratio "$rps" "$alone"); vc=1.00 ;;
        *) va=$(ratio "$rps" "$alone"); vc=$(ratio "$rps" "$control") ;;
      esac
      out "| $round | $what | $beside | $rps | $p50 | $p99 | $errs | $other | $va | $vc |"
    done
  done
done

out ""
out "## (b) each endpoint alone: $TAGS tags in \`$REPO\`, $REPOS repositories ($SECS s each, $UI_CONNS connections)"
out ""
out "| endpoint | req/s | p50 ms | p99 ms | errors | server CPU µs/req | server peak RSS MiB |"
out "|---|---|---|---|---|---|---|"
ENDPOINTS=(
  "/v2/$REPO/tags/list?n=100&last=$mid"
  "/ui/api/session"
  "/ui/api/repositories"
  "/ui/api/repositories?n=100&last=$midrepo"
  "/ui/api/repositories?ns=r"
  "/ui/api/tags?repo=$REPO"
  "/ui/api/tags?repo=$REPO&last=$mid"
  "/ui/api/manifest?repo=$REPO&ref=$mid"
  "/ui/api/manifest?repo=$REPO&ref=$image"
  "/ui/api/referrers?repo=$REPO&digest=$image"
  "/ui/api/layer?repo=$REPO&digest=$layer"
  "/ui/"
)
for p in "${ENDPOINTS[@]}"; do
  settle
  o=$LOGS/b-$(echo "$p" | tr -c 'a-zA-Z0-9' _ | cut -c1-80).txt
  phase_begin "$ORIGIN_PID"
  wrk1 "$o" "$UI_CONNS" "$url$p"
  phase_end "$ORIGIN_PID"
  read -r rps p50 p99 reqs errs < <(wrk_stats "$o")
  cpu=$(python3 -c "print(f'{$PHASE_CPU * 1e6 / max($reqs, 1):.0f}')")
  shown=${p//$image/<image>}
  out "| \`${shown//$layer/<layer>}\` | $rps | $p50 | $p99 | $errs | $cpu | $((PHASE_HWM / 1024)) |"
done

# Every page of the UI's tag list, following `next`, on one keep-alive connection.
walk=$(python3 - "$url" "$REPO" <<'PY'
import http.client, json, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
path, pages, tags = f"/ui/api/tags?repo={sys.argv[2]}", 0, 0
t0 = time.perf_counter()
last = None
while True:
    q = path + (f"&last={urllib.parse.quote(last)}" if last else "")
    conn.request("GET", q)
    r = conn.getresponse()
    body = json.loads(r.read())
    if r.status != 200:
        sys.exit(f"{q}: {r.status}")
    pages += 1
    tags += len(body["tags"])
    last = body.get("next")
    if not last:
        break
print(f"{tags} tags in {pages} pages, {(time.perf_counter() - t0):.1f} s")
PY
)
out ""
out "UI tag walk (every page of 100, following \`next\`, one connection): $walk"
out ""
out "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BENCH_OUT:-}" ]; then cp "$TABLES" "$BENCH_OUT"; fi
