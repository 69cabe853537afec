#!/usr/bin/env bash
# Interoperability test: round-trips freshly built images through a registry with
# real clients (skopeo, podman, the Docker engine, containerd's ctr) and curl.
#
#   scripts/interop.sh                      # against Origin (target/release/origin)
#   INTEROP_TARGET=distribution scripts/interop.sh   # against CNCF distribution (docker-registry)
#   INTEROP_TARGET=external INTEROP_REGISTRY=127.0.0.1:5000 scripts/interop.sh
#
# Other knobs: ORIGIN_BIN (default target/release/origin), INTEROP_KEEP=1 keeps the
# temp dir (logs, configs) for debugging, INTEROP_NO_INSTALL=1 skips apt-get and pip,
# INTEROP_STEPS="regex" runs only the matching steps (setup always runs), INTEROP_BUDGET=600
# (seconds) fails the steps not started by then, INTEROP_ORAS_PY (default oras==0.2.43) is
# the pip requirement for oras-py.
#
# Images are hand-written OCI layouts (no network, no base image): a linux/amd64 image with
# a text layer and a 2 MiB random one, and an index of linux/amd64 + linux/arm64 images
# sharing a layer. Clients keep all their state under the temp dir (podman/skopeo via
# CONTAINERS_* variables, own dockerd and containerd instances); skopeo still writes its
# blob-info cache under /var/lib/containers/cache, which it offers no way to move.
# To see what each client sends: scripts/interop/trace-proxy.py (see its docstring).
#
# oras-py (PyPI "oras", driven by scripts/interop/oras-artifact.py) is pip-installed with
# --target into the temp dir, in the background while the other steps run; the system
# Python is not modified (pip's own download cache is used).
#
# Security phase (INTEROP_TARGET=origin only): openssl makes a CA, a server certificate
# for 127.0.0.1/localhost and client certificates; three more Origin instances run on
# port 0 with their own storage: TLS with Basic auth (alice; bob is known but not
# allowed), mTLS with a required client certificate (policy: organization "ci"), and
# plain HTTP with Basic auth (docker login; 127.0.0.0/8 is insecure for dockerd by
# default). skopeo and podman use --cert-dir (ca.crt, client.cert/client.key), docker its
# DOCKER_CONFIG under the temp dir.
#
# Pull-through cache phase (INTEROP_TARGET=origin only): a CNCF distribution instance is the
# upstream, seeded with library/mirrortest:v1 (an image built for this phase only, so that
# docker really downloads its layers); one more Origin instance mirrors it twice: as
# "docker.io" (the default mirror; dockerd's daemon.json names it in registry-mirrors, so
# its port is chosen before dockerd starts) and as "upstreamtest" (registry "upstream.test",
# reached by ctr through a hosts.toml mirror, which adds ?ns=upstream.test). The upstream is
# stopped for the last step, which pulls from the cache alone.
#
# OIDC phase (INTEROP_TARGET=origin only): see scripts/interop/oidc.sh; skopeo pushes with
# an RS256 token signed by openssl, verified against a JWKS served by python3's http.server.
#
# Prints one "PASS <step>" or "FAIL <step>" line per step (a failing step is followed by
# the tail of its log, indented), then "N passed, M failed" alone on a line; exits
# non-zero when anything failed. Needs root (dockerd, containerd). Everything started
# here is stopped by PID and the temp dir removed on exit, on failure and on signals.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${INTEROP_TARGET:-origin}
ORIGIN_BIN=${ORIGIN_BIN:-$ROOT/target/release/origin}
STEP_FILTER=${INTEROP_STEPS:-}
BUDGET=${INTEROP_BUDGET:-600}   # seconds; steps not started by then FAIL without running
T0=$SECONDS

case "$TARGET" in
  origin | distribution | external) ;;
  *) echo "interop: INTEROP_TARGET must be origin, distribution or external (got '$TARGET')" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "interop: must run as root (dockerd and containerd are started)" >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------
# Temp dir, process bookkeeping, cleanup
# ---------------------------------------------------------------------------------------
# Short path: unix socket paths (dockerd, containerd) must stay under 108 bytes.
WORK=$(mktemp -d /tmp/interop.XXXXXX) || exit 2
LOGS=$WORK/logs
STATE=$WORK/state
mkdir -p "$LOGS" "$STATE"
PIDS=()   # processes started here, stopped in reverse order
POLICY_RC_D_CREATED=0

stop_pid() { # stop_pid PID [PATTERN]: TERM, bounded wait, KILL. PATTERN guards reuse.
  local pid=$1 pattern=${2:-} i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  if [ -n "$pattern" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    # Reap it if it is our child (a zombie still answers kill -0).
    if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then break; fi
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# kill_tree PID: TERM a process and all its descendants (children first found via /proc).
kill_tree() {
  local pid=$1 child
  # shellcheck disable=SC2013 # the file holds space-separated PIDs
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$pid" 2>/dev/null
}

STEP_PID=
CLEANED=0
cleanup() {
  [ "$CLEANED" = 1 ] && return
  CLEANED=1
  local i pid m
  if [ -n "$STEP_PID" ]; then
    kill_tree "$STEP_PID"
    wait "$STEP_PID" 2>/dev/null
  fi
  # The oras-py install (pip under timeout under a subshell), should it still run.
  [ -n "${ORAS_INSTALL_PID:-}" ] && kill_tree "$ORAS_INSTALL_PID"
  # Processes started inside steps (subshells): their PIDs are in $STATE/bg.pids, stopped
  # first and only while their command line still names our temp dir.
  if [ -s "$STATE/bg.pids" ]; then
    local bg=()
    mapfile -t bg <"$STATE/bg.pids"
    for ((i = ${#bg[@]} - 1; i >= 0; i--)); do stop_pid "${bg[$i]}" "$WORK"; done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}"; done
  # dockerd's own containerd, should dockerd have been killed before stopping it: only
  # if that PID still runs a command line naming our temp dir.
  pid=$(cat "$WORK/docker/exec/containerd/containerd.pid" 2>/dev/null || true)
  stop_pid "$pid" "$WORK"
  # Anything still mounted under the temp dir (dockerd's data-root bind mount, snapshots).
  if command -v findmnt >/dev/null 2>&1; then
    findmnt -rn -o TARGET 2>/dev/null | grep -F "$WORK" | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
  fi
  if [ "$POLICY_RC_D_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ -n "${INTEROP_KEEP:-}" ]; then
    echo "interop: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'echo "interop: interrupted" >&2; exit 130' INT TERM HUP

# ---------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------
install_missing() {
  local -A pkg_for=([skopeo]=skopeo [podman]=podman [containerd]=containerd [ctr]=containerd
    [dockerd]=docker.io [jq]=jq [curl]=curl [timeout]=coreutils [findmnt]=util-linux
    [gzip]=gzip [tar]=tar [openssl]=openssl [python3]=python3)
  # distribution is the registry under test, or the upstream of Origin's mirror phase.
  [ "$TARGET" != external ] && pkg_for[docker-registry]=docker-registry
  local cmd need=()
  for cmd in "${!pkg_for[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("${pkg_for[$cmd]}")
  done
  # The Docker client: the docker.io package's one (a newer one elsewhere on PATH is fine too).
  command -v docker >/dev/null 2>&1 || need+=(docker.io)
  # pip, for oras-py (installed with --target under the temp dir).
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  [ "${#need[@]}" -eq 0 ] && return 0
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ -n "${INTEROP_NO_INSTALL:-}" ]; then
    echo "interop: missing packages and INTEROP_NO_INSTALL is set: ${need[*]}" >&2
    return 1
  fi
  echo "interop: installing ${need[*]}" >&2
  # Keep the packages' own services (system dockerd, containerd, registry) from starting.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d &&
      POLICY_RC_D_CREATED=1
  fi
  local rc=0
  apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
    rc=$?
  if [ "$POLICY_RC_D_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_D_CREATED=0; fi
  return $rc
}
preflight_fail() { # preflight_fail STEP MESSAGE: nothing can run; still print the summary
  echo "FAIL $1"
  echo "    | $2"
  echo "0 passed, 1 failed"
  exit 1
}
install_missing || preflight_fail install-packages "apt-get could not install what is missing"
if [ "$TARGET" = origin ] && [ ! -x "$ORIGIN_BIN" ]; then
  preflight_fail start-registry "$ORIGIN_BIN not found: run cargo build --release first"
fi
# Prefer the Docker client shipped with the engine package (same API version).
DOCKER_CLI=docker
[ -x /usr/bin/docker ] && DOCKER_CLI=/usr/bin/docker

# ---------------------------------------------------------------------------------------
# Step runner
# ---------------------------------------------------------------------------------------
PASSED=0
FAILED=0
REG_LOG=   # the registry's log, for the excerpt under a FAIL
EXTRA_REG_LOGS=()   # the security phase's Origin instances' logs, likewise
# step NAME FUNCTION [ARGS...]: runs FUNCTION in a subshell with errexit, output to a log.
step() {
  local name=$1 log="$LOGS/$1.log" rc t=$SECONDS
  shift
  if [ -n "$STEP_FILTER" ] && ! [[ $name =~ $STEP_FILTER ]]; then return 0; fi
  if [ $((SECONDS - T0)) -ge "$BUDGET" ]; then
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    echo "    | not run: the ${BUDGET}s time budget (INTEROP_BUDGET) is spent"
    return
  fi
  local -A reg_lines=()
  local f
  for f in $REG_LOG "${EXTRA_REG_LOGS[@]}"; do
    reg_lines[$f]=0
    [ -e "$f" ] && reg_lines[$f]=$(wc -l <"$f")
  done
  # In the background and waited for, so that a signal is handled at once (cleanup stops
  # the step's processes), not after the step's current command ends.
  (
    set -eEuo pipefail
    trap - INT TERM HUP
    trap 'echo "error: line $LINENO: $BASH_COMMAND (exit $?)"' ERR
    "$@"
  ) >"$log" 2>&1 </dev/null &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=
  echo "# took $((SECONDS - t))s, exit $rc" >>"$log"
  if [ $rc -eq 0 ]; then
    PASSED=$((PASSED + 1))
    touch "$STATE/ok.$name"
    echo "PASS $name"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $name"
    tail -n 30 "$log" | sed 's/^/    | /'
    # What the registries complained about meanwhile.
    for f in "${!reg_lines[@]}"; do
      [ -e "$f" ] || continue
      tail -n +$((reg_lines[$f] + 1)) "$f" 2>/dev/null | grep -iE 'error|warn|panic' | grep -v 'serving plain HTTP' |
        tail -n 10 | cut -c1-400 | sed "s/^/    | $([ "$f" = "$REG_LOG" ] && echo registry || basename "$f" .err): /"
    done
  fi
}
fail() { echo "FAILED: $*" >&2; exit 1; }
need() { # need STEP...: a prerequisite step must have passed
  local s
  for s in "$@"; do [ -e "$STATE/ok.$s" ] || fail "prerequisite step '$s' did not pass"; done
}
# eq WHAT EXPECTED ACTUAL
eq() {
  if [ "$2" != "$3" ]; then fail "$1: expected '$2', got '$3'"; fi
  echo "ok: $1 = $3" >&2
}
# run CMD...: log the command line, run it with a deadline.
run() {
  echo "+ $*" >&2
  timeout -k 5 "${RUN_TIMEOUT:-90}" "$@"
}
# wait_until SECONDS CMD...: poll CMD every 0.1 s until it succeeds or SECONDS pass.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------
# Registry helpers (curl)
# ---------------------------------------------------------------------------------------
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_OCI_CONFIG=application/vnd.oci.image.config.v1+json
MT_OCI_LAYER_GZ=application/vnd.oci.image.layer.v1.tar+gzip
MT_DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
MT_DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
ACCEPT_ALL="$MT_OCI_INDEX, $MT_OCI_MANIFEST, $MT_DOCKER_LIST, $MT_DOCKER_MANIFEST"

sha256_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
header() { # header FILE NAME: a response header's value (case-insensitive name)
  awk -v n="$(echo "$2" | tr '[:upper:]' '[:lower:]')" 'BEGIN{FS=":"} tolower($1)==n {sub(/^[^:]*:[ \t]*/,""); sub(/\r$/,""); v=$0} END{print v}' "$1"
}
status() { # status FILE: the final status code in a curl -D dump
  awk '/^HTTP\//{c=$2} END{print c}' "$1"
}
# http METHOD PATH [curl args...]: sets H (headers file), B (body file), S (status).
# CURL_EXTRA (an array) is added to every call: CA, client certificate, credentials.
CURL_EXTRA=()
http() {
  local method=$1 path=$2
  shift 2
  H=$(mktemp "$WORK/tmp/h.XXXXXX")
  B=$(mktemp "$WORK/tmp/b.XXXXXX")
  local opt=(-X "$method" -o "$B")
  [ "$method" = HEAD ] && opt=(-I -o /dev/null)
  echo "+ curl $method $path $*"
  curl -sS --max-time 30 "${opt[@]}" -D "$H" "${CURL_EXTRA[@]}" "$@" "$REG_URL$path" || fail "curl $method $path failed"
  S=$(status "$H")
  echo "  -> $S"
}
# manifest_digest NAME REF [ACCEPT]: GET the manifest; check Docker-Content-Digest (when
# sent) and HEAD against the body's hash; print the digest. Fails unless 200.
manifest_digest() {
  local name=$1 ref=$2 accept=${3:-$ACCEPT_ALL} dcd body_digest head_dcd ct len size
  http GET "/v2/$name/manifests/$ref" -H "Accept: $accept" >&2
  [ "$S" = 200 ] || fail "GET /v2/$name/manifests/$ref: status $S: $(head -c 300 "$B")"
  body_digest=$(sha256_of "$B")
  size=$(stat -c %s "$B")
  dcd=$(header "$H" Docker-Content-Digest)
  if [ -n "$dcd" ] && [ "$dcd" != "$body_digest" ]; then
    fail "GET $name:$ref Docker-Content-Digest $dcd != sha256 of body $body_digest"
  fi
  ct=$(header "$H" Content-Type)
  local mt
  mt=$(jq -r '.mediaType // empty' "$B")
  if [ -n "$mt" ] && [ "$ct" != "$mt" ]; then
    fail "GET $name:$ref Content-Type '$ct' != manifest mediaType '$mt'"
  fi
  http HEAD "/v2/$name/manifests/$ref" -H "Accept: $accept" >&2
  [ "$S" = 200 ] || fail "HEAD /v2/$name/manifests/$ref: status $S"
  head_dcd=$(header "$H" Docker-Content-Digest)
  if [ -n "$head_dcd" ] && [ "$head_dcd" != "$body_digest" ]; then
    fail "HEAD $name:$ref Docker-Content-Digest $head_dcd != $body_digest"
  fi
  len=$(header "$H" Content-Length)
  if [ -n "$len" ] && [ "$len" != "$size" ]; then
    fail "HEAD $name:$ref Content-Length $len != GET body size $size"
  fi
  echo "$body_digest"
}
# expect_manifest NAME REF DIGEST
expect_manifest() {
  local got
  got=$(manifest_digest "$1" "$2") || exit 1
  eq "registry digest of $1:$2" "$3" "$got"
}
expect_manifest_absent() { # expect_manifest_absent NAME REF
  http GET "/v2/$1/manifests/$2" -H "Accept: $ACCEPT_ALL"
  eq "GET /v2/$1/manifests/$2 status" 404 "$S"
  http HEAD "/v2/$1/manifests/$2" -H "Accept: $ACCEPT_ALL"
  eq "HEAD /v2/$1/manifests/$2 status" 404 "$S"
}
expect_blob() { # expect_blob NAME DIGEST: GET the blob and check its hash
  http GET "/v2/$1/blobs/$2" -L
  eq "GET blob $2 status" 200 "$S"
  eq "hash of blob body" "$2" "$(sha256_of "$B")"
}
abs_location() { # abs_location LOCATION: make an upload Location absolute
  case "$1" in
    http://* | https://*) echo "$1" ;;
    /*) echo "$REG_URL$1" ;;
    *) fail "unexpected Location '$1'" ;;
  esac
}
# curl_push_blob NAME FILE: POST an upload, PUT the whole blob with ?digest= (monolithic).
curl_push_blob() {
  local name=$1 file=$2 digest loc sep
  digest=$(sha256_of "$file")
  http HEAD "/v2/$name/blobs/$digest"
  [ "$S" = 200 ] && { echo "  blob $digest exists"; return 0; }
  [ "$S" = 404 ] || fail "HEAD blob: status $S (want 200 or 404)"
  http POST "/v2/$name/blobs/uploads/" -H "Content-Length: 0"
  eq "POST upload status" 202 "$S"
  loc=$(header "$H" Location)
  [ -n "$loc" ] || fail "POST upload: no Location"
  loc=$(abs_location "$loc")
  sep='?'
  [[ $loc == *\?* ]] && sep='&'
  echo "+ curl PUT $loc${sep}digest=$digest"
  curl -sS --max-time 30 -X PUT -D "$H" -o "$B" -H "Content-Type: application/octet-stream" \
    --data-binary "@$file" "$loc${sep}digest=$digest" || fail "PUT upload failed"
  S=$(status "$H")
  eq "PUT upload status" 201 "$S"
  local dcd
  dcd=$(header "$H" Docker-Content-Digest)
  [ -z "$dcd" ] || eq "PUT upload Docker-Content-Digest" "$digest" "$dcd"
}
# curl_push_manifest NAME REF FILE MEDIATYPE
curl_push_manifest() {
  local digest
  digest=$(sha256_of "$3")
  http PUT "/v2/$1/manifests/$2" -H "Content-Type: $4" --data-binary "@$3"
  [ "$S" = 201 ] || fail "PUT manifest $1:$2: status $S: $(head -c 300 "$B")"
  local dcd
  dcd=$(header "$H" Docker-Content-Digest)
  [ -z "$dcd" ] || eq "PUT manifest Docker-Content-Digest" "$digest" "$dcd"
}
# curl_push_layout NAME TAG LAYOUT: push every blob of an OCI layout, then the manifests
# (children of an index by digest first), then the top one under TAG.
curl_push_layout() {
  local name=$1 tag=$2 layout=$3 top top_mt f d mt
  top=$(jq -r '.manifests[0].digest' "$layout/index.json")
  top_mt=$(jq -r '.manifests[0].mediaType' "$layout/index.json")
  for f in "$layout"/blobs/sha256/*; do
    d="sha256:$(basename "$f")"
    mt=$(jq -r '.mediaType? // empty' "$f" 2>/dev/null || true)
    case "$mt" in
      "$MT_OCI_MANIFEST" | "$MT_OCI_INDEX") ;;
      *) curl_push_blob "$name" "$f" ;;
    esac
  done
  if [ "$top_mt" = "$MT_OCI_INDEX" ]; then
    for d in $(jq -r '.manifests[].digest' "$layout/blobs/sha256/${top#sha256:}"); do
      curl_push_manifest "$name" "$d" "$layout/blobs/sha256/${d#sha256:}" "$MT_OCI_MANIFEST"
    done
  fi
  curl_push_manifest "$name" "$tag" "$layout/blobs/sha256/${top#sha256:}" "$top_mt"
}

# ---------------------------------------------------------------------------------------
# Building images (hand-written OCI layouts: no network, no base image)
# ---------------------------------------------------------------------------------------
# blob_add LAYOUT FILE: store FILE as a blob; sets BLOB_DIGEST and BLOB_SIZE.
blob_add() {
  local hex
  hex=$(sha256sum "$2" | cut -d' ' -f1)
  mkdir -p "$1/blobs/sha256"
  cp "$2" "$1/blobs/sha256/$hex"
  BLOB_DIGEST=sha256:$hex
  BLOB_SIZE=$(stat -c %s "$2")
}
# layer_add LAYOUT DIR: a reproducible tar+gzip of DIR; sets LAYER_DESC and DIFF_ID.
layer_add() {
  local tmp=$WORK/tmp/layer.tar
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=ustar \
    -C "$2" -cf "$tmp" .
  DIFF_ID=$(sha256_of "$tmp")
  gzip -n -c "$tmp" >"$tmp.gz"
  blob_add "$1" "$tmp.gz"
  rm -f "$tmp" "$tmp.gz"
  LAYER_DESC="{\"mediaType\":\"$MT_OCI_LAYER_GZ\",\"digest\":\"$BLOB_DIGEST\",\"size\":$BLOB_SIZE}"
}
# image_add LAYOUT ARCH LAYERDIR...: config + manifest; sets MANIFEST_DESC, MANIFEST_DIGEST,
# CONFIG_DIGEST.
image_add() {
  local layout=$1 arch=$2 dir diff_ids=() layers=() f=$WORK/tmp/json
  shift 2
  for dir in "$@"; do
    layer_add "$layout" "$dir"
    diff_ids+=("\"$DIFF_ID\"")
    layers+=("$LAYER_DESC")
  done
  printf '{"created":"2024-01-01T00:00:00Z","architecture":"%s","os":"linux","config":{"Cmd":["/hello"],"Labels":{"org.example.interop":"%s"}},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[{"created":"2024-01-01T00:00:00Z","created_by":"origin interop.sh"}]}' \
    "$arch" "$NONCE" "$(IFS=,; echo "${diff_ids[*]}")" >"$f"
  blob_add "$layout" "$f"
  CONFIG_DIGEST=$BLOB_DIGEST
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[%s]}' \
    "$MT_OCI_MANIFEST" "$MT_OCI_CONFIG" "$BLOB_DIGEST" "$BLOB_SIZE" "$(IFS=,; echo "${layers[*]}")" >"$f"
  blob_add "$layout" "$f"
  MANIFEST_DIGEST=$BLOB_DIGEST
  MANIFEST_DESC="{\"mediaType\":\"$MT_OCI_MANIFEST\",\"digest\":\"$BLOB_DIGEST\",\"size\":$BLOB_SIZE,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}"
}
# layout_finish LAYOUT DESC: oci-layout + index.json pointing at DESC tagged v1.
layout_finish() {
  echo '{"imageLayoutVersion":"1.0.0"}' >"$1/oci-layout"
  jq -c '{schemaVersion:2, manifests:[. + {annotations:{"org.opencontainers.image.ref.name":"v1"}} | del(.platform)]}' \
    <<<"$2" >"$1/index.json"
}

build_images() {
  local d=$WORK/img l
  mkdir -p "$d/src"
  # Single-platform image: a small text layer and a 2 MiB incompressible one (so uploads
  # cross many read buffers and clients stream them chunked).
  mkdir -p "$d/src/a" "$d/src/b" "$d/src/common" "$d/src/amd64" "$d/src/arm64"
  printf 'hello from origin interop %s\n' "$NONCE" >"$d/src/a/hello"
  head -c 2097152 /dev/urandom >"$d/src/b/random.bin"
  l=$d/single
  image_add "$l" amd64 "$d/src/a" "$d/src/b"
  layout_finish "$l" "$MANIFEST_DESC"
  {
    echo "SINGLE_LAYOUT=$l"
    echo "SINGLE_DIGEST=$MANIFEST_DIGEST"
    echo "SINGLE_CONFIG=$CONFIG_DIGEST"
  } >"$WORK/images.env"
  # Multi-platform index: linux/amd64 + linux/arm64 sharing one layer.
  printf 'common layer %s\n' "$NONCE" >"$d/src/common/common"
  printf 'amd64 %s\n' "$NONCE" >"$d/src/amd64/hello"
  printf 'arm64 %s\n' "$NONCE" >"$d/src/arm64/hello"
  l=$d/multi
  image_add "$l" amd64 "$d/src/common" "$d/src/amd64"
  local amd64_desc=$MANIFEST_DESC amd64_digest=$MANIFEST_DIGEST amd64_config=$CONFIG_DIGEST
  image_add "$l" arm64 "$d/src/common" "$d/src/arm64"
  local arm64_desc=$MANIFEST_DESC arm64_digest=$MANIFEST_DIGEST
  printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s,%s]}' \
    "$MT_OCI_INDEX" "$amd64_desc" "$arm64_desc" >"$WORK/tmp/index.json"
  blob_add "$l" "$WORK/tmp/index.json"
  layout_finish "$l" "{\"mediaType\":\"$MT_OCI_INDEX\",\"digest\":\"$BLOB_DIGEST\",\"size\":$BLOB_SIZE}"
  {
    echo "MULTI_LAYOUT=$l"
    echo "MULTI_DIGEST=$BLOB_DIGEST"
    echo "MULTI_AMD64_DIGEST=$amd64_digest"
    echo "MULTI_AMD64_CONFIG=$amd64_config"
    echo "MULTI_ARM64_DIGEST=$arm64_digest"
  } >>"$WORK/images.env"
  # Archives: OCI archives for ctr import; docker-archive for docker load.
  tar -C "$d/single" -cf "$d/single.oci.tar" .
  tar -C "$d/multi" -cf "$d/multi.oci.tar" .
  run skopeo --policy "$POLICY" copy -q "oci:$d/single:v1" \
    "docker-archive:$d/single.docker.tar:interop/docker-local:v1"
  {
    echo "SINGLE_OCI_TAR=$d/single.oci.tar"
    echo "MULTI_OCI_TAR=$d/multi.oci.tar"
    echo "SINGLE_DOCKER_TAR=$d/single.docker.tar"
  } >>"$WORK/images.env"
  cat "$WORK/images.env"
}

# ---------------------------------------------------------------------------------------
# Registry under test
# ---------------------------------------------------------------------------------------
free_port() {
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}
registry_ping() { curl -fsS --max-time 2 -o /dev/null "$REG_URL/v2/"; }
registry_ping_or_dead() { # true when up, or when the registry process died (stop polling)
  registry_ping && return 0
  if [ -n "$REGISTRY_PID" ] && ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
    echo "registry process exited"
    return 0
  fi
  return 1
}

# spawn_origin NAME CONFIG: start an Origin instance (logs $LOGS/NAME.out, $LOGS/NAME.err),
# wait for its "origin listening on" line; sets SPAWNED_PID and SPAWNED_PORT. The PID goes
# to PIDS and to $STATE/bg.pids (cleanup stops both: this may run inside a step's subshell).
spawn_origin() {
  local name=$1 config=$2 i
  SPAWNED_PORT=
  "$ORIGIN_BIN" serve -c "$config" >"$LOGS/$name.out" 2>"$LOGS/$name.err" &
  SPAWNED_PID=$!
  PIDS+=("$SPAWNED_PID")
  echo "$SPAWNED_PID" >>"$STATE/bg.pids"
  for i in $(seq 1 200); do
    SPAWNED_PORT=$(grep -o 'origin listening on 127\.0\.0\.1:[0-9]*' "$LOGS/$name.err" 2>/dev/null | head -n1 | sed 's/.*://' || true)
    [ -n "$SPAWNED_PORT" ] && break
    kill -0 "$SPAWNED_PID" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$SPAWNED_PORT" ] || { echo "origin ($name) did not log its port:"; tail -n 20 "$LOGS/$name.err"; return 1; }
}

start_origin() {
  local dir=$WORK/origin
  mkdir -p "$dir/data"
  # An event webhook receiver (see s_skopeo_webhook).
  WEBHOOK_PORT=$(free_port) || return 1
  WEBHOOK_EVENTS=$dir/webhook-events.jsonl
  : >"$WEBHOOK_EVENTS"
  python3 "$ROOT/scripts/interop/webhook-receiver.py" "$WEBHOOK_PORT" "$WEBHOOK_EVENTS" \
    >"$LOGS/webhook-receiver.out" 2>&1 &
  PIDS+=($!)
  cat >"$dir/config.toml" <<EOF
[server]
bind_address = "127.0.0.1"
port = 0
# Go clients probe TLS first (see s_tls_probe): should the server sit on a ClientHello
# until this deadline, each of their operations waits that long. 2 s keeps such a run
# within minutes; the tls-probe-rejected step still fails on the behaviour itself.


[storage.fs]
root_dir = "$dir/data"

[[repository]]
namespace = ""
policy_default_allow = true
policies = []
event_webhooks = ["interop"]

[event_webhook.interop]
url = "http://127.0.0.1:$WEBHOOK_PORT/events"
events = ["manifest.push"]
repository_filter = ["interop/webhook"]
token = "$WEBHOOK_TOKEN"
EOF
  REG_LOG=$LOGS/origin.err
  spawn_origin origin "$dir/config.toml" || { REGISTRY_PID=$SPAWNED_PID; return 1; }
  REGISTRY_PID=$SPAWNED_PID
  REG=127.0.0.1:$SPAWNED_PORT
}

start_distribution() {
  local dir=$WORK/distribution port
  mkdir -p "$dir/data"
  port=$(free_port) || return 1
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
  # distribution reads REGISTRY_* variables as configuration: hide podman's auth file one.
  REG_LOG=$LOGS/distribution.err
  env -u REGISTRY_AUTH_FILE docker-registry serve "$dir/config.yml" >"$LOGS/distribution.out" 2>"$REG_LOG" &
  PIDS+=($!)
  REGISTRY_PID=$!
  REG=127.0.0.1:$port
}

start_registry() {
  case "$TARGET" in
    origin) start_origin ;;
    distribution) start_distribution ;;
    external)
      REG=${INTEROP_REGISTRY:?INTEROP_TARGET=external needs INTEROP_REGISTRY=host:port}
      REGISTRY_PID=
      ;;
  esac || return 1
  REG_URL=http://$REG
  wait_until 20 registry_ping_or_dead
  registry_ping || {
    echo "registry at $REG_URL did not answer GET /v2/"
    [ -n "$REGISTRY_PID" ] && tail -n 20 "$LOGS/$TARGET.err" 2>/dev/null
    return 1
  }
  echo "registry: $TARGET at $REG_URL"
}

# ---------------------------------------------------------------------------------------
# Client environments (all state under $WORK)
# ---------------------------------------------------------------------------------------
setup_containers_conf() {
  local c=$WORK/containers
  mkdir -p "$c" "$WORK/podman/tmp" "$WORK/podman/net"
  POLICY=$c/policy.json
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
  cat >"$c/registries.conf" <<EOF
unqualified-search-registries = []
EOF
  cat >"$c/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$WORK/podman/storage"
runroot = "$WORK/podman/run"
EOF
  cat >"$c/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "$WORK/podman/tmp"
[network]
network_config_dir = "$WORK/podman/net"
EOF
  echo '{}' >"$c/auth.json"
  export CONTAINERS_REGISTRIES_CONF=$c/registries.conf
  export CONTAINERS_STORAGE_CONF=$c/storage.conf
  export CONTAINERS_CONF=$c/containers.conf
  export REGISTRY_AUTH_FILE=$c/auth.json
  export TMPDIR=$WORK/tmp
}

DOCKERD_PID=
start_dockerd() {
  local d=$WORK/docker
  mkdir -p "$d/config"
  # The mirror phase's Origin instance serves docker.io pulls (only those: other names go
  # to their own registry). 127.0.0.0/8 is an insecure registry for dockerd by default.
  if [ -n "${MIRROR_PORT:-}" ]; then
    printf '{"registry-mirrors": ["http://127.0.0.1:%s"]}\n' "$MIRROR_PORT" >"$d/daemon.json"
  else
    echo '{}' >"$d/daemon.json"
  fi
  export DOCKER_HOST=unix://$d/docker.sock
  export DOCKER_CONFIG=$d/config
  dockerd --config-file "$d/daemon.json" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver=vfs --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/docker.pid" \
    -H "$DOCKER_HOST" >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  PIDS+=("$DOCKERD_PID")
}
dockerd_ready() { "$DOCKER_CLI" version >/dev/null 2>&1; }
wait_dockerd() { # bounded; a failure is remembered so later steps fail at once
  [ -e "$STATE/dockerd.ready" ] && return 0
  [ -e "$STATE/dockerd.failed" ] && return 1
  if [ -n "$DOCKERD_PID" ] && wait_until 30 dockerd_ready; then
    touch "$STATE/dockerd.ready"
    return 0
  fi
  touch "$STATE/dockerd.failed"
  return 1
}

CONTAINERD_PID=
start_containerd() {
  local c=$WORK/containerd
  mkdir -p "$c"
  CTR_SOCK=$c/containerd.sock
  cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.metadata.v1.bolt"]
  # Pulls in another namespace must fetch from the registry, not reuse pushed content.
  content_sharing_policy = "isolated"
EOF
  containerd --config "$c/config.toml" >"$LOGS/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  PIDS+=("$CONTAINERD_PID")
  export CONTAINERD_SNAPSHOTTER=native
}
ctr_ready() { ctr --address "$CTR_SOCK" version >/dev/null 2>&1; }
wait_containerd() {
  [ -e "$STATE/containerd.ready" ] && return 0
  [ -e "$STATE/containerd.failed" ] && return 1
  if [ -n "$CONTAINERD_PID" ] && wait_until 30 ctr_ready; then
    touch "$STATE/containerd.ready"
    return 0
  fi
  touch "$STATE/containerd.failed"
  return 1
}

# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------
SK() { run skopeo --policy "$POLICY" "$@"; }

# Go clients (skopeo, podman, docker) try TLS first on an insecure registry and fall back
# to plain HTTP only when the handshake fails: a server that sits on a ClientHello waiting
# for a request head costs each of their operations a 10 s TLS handshake timeout.
s_tls_probe() {
  local t ms rc=0
  t=$(date +%s%N)
  curl -sk --max-time 8 -o /dev/null "https://$REG/v2/" || rc=$?
  ms=$((($(date +%s%N) - t) / 1000000))
  echo "https:// probe: curl exit $rc after ${ms} ms"
  [ "$rc" != 0 ] || fail "the registry answered TLS on its plain-HTTP port?"
  [ "$ms" -lt 1000 ] || fail "a TLS ClientHello was not rejected promptly (${ms} ms)"
}

s_registry_base() {
  http GET /v2/
  eq "GET /v2/ status" 200 "$S"
  local v
  v=$(header "$H" Docker-Distribution-API-Version)
  echo "Docker-Distribution-API-Version: '${v}'"
}

s_curl_push_single() {
  curl_push_layout interop/curl-single v1 "$SINGLE_LAYOUT"
  expect_manifest interop/curl-single v1 "$SINGLE_DIGEST"
  expect_manifest interop/curl-single "$SINGLE_DIGEST" "$SINGLE_DIGEST"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$SINGLE_LAYOUT/blobs/sha256/${SINGLE_DIGEST#sha256:}"); do
    expect_blob interop/curl-single "$d"
  done
}

s_curl_push_index() {
  curl_push_layout interop/curl-multi v1 "$MULTI_LAYOUT"
  expect_manifest interop/curl-multi v1 "$MULTI_DIGEST"
  expect_manifest interop/curl-multi "$MULTI_AMD64_DIGEST" "$MULTI_AMD64_DIGEST"
  expect_manifest interop/curl-multi "$MULTI_ARM64_DIGEST" "$MULTI_ARM64_DIGEST"
}

# Clients push layers in parallel (docker and containerd: several at once; containerd also
# re-pushes blobs the registry already has in other repositories). Rounds of concurrent
# monolithic uploads, each round into a new repository: 6 blobs stored in earlier rounds,
# 2 new ones.
s_curl_concurrent_uploads() {
  local round i n=8 rounds=16 dir=$WORK/tmp/concurrent repo st bad=0
  mkdir -p "$dir"
  for i in $(seq 1 $n); do head -c $((1000 + RANDOM)) /dev/urandom >"$dir/blob-$i"; done
  for round in $(seq 1 $rounds); do
    repo=interop/concurrent-$round
    for i in 1 2; do head -c $((1000 + RANDOM)) /dev/urandom >"$dir/blob-$i"; done
    for i in $(seq 1 $n); do
      (
        f=$dir/blob-$i
        d=$(sha256_of "$f")
        loc=$(curl -sS --max-time 30 -X POST -D - -o /dev/null "$REG_URL/v2/$repo/blobs/uploads/" |
          tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
        [ -n "$loc" ] || { echo "POST: no Location" >"$f.status"; exit 0; }
        loc=$(abs_location "$loc")
        sep='?'
        [[ $loc == *\?* ]] && sep='&'
        curl -sS --max-time 30 -o "$f.body" -w '%{http_code}' -X PUT -H "Content-Type: application/octet-stream" \
          --data-binary "@$f" "$loc${sep}digest=$d" >"$f.status" 2>&1
      ) &
    done
    wait
    for i in $(seq 1 $n); do
      st=$(cat "$dir/blob-$i.status")
      if [ "$st" != 201 ]; then
        echo "round $round, PUT of blob $i: $st $(cat "$dir/blob-$i.body" 2>/dev/null)"
        bad=$((bad + 1))
      fi
    done
  done
  [ "$bad" = 0 ] || fail "$bad of $((rounds * n)) concurrent uploads did not answer 201"
  for i in $(seq 1 $n); do
    expect_blob "$repo" "$(sha256_of "$dir/blob-$i")" >/dev/null ||
      fail "blob $i of the last round does not read back"
  done
  echo "all $((rounds * n)) uploads answered 201"
}

s_skopeo_single_in() {
  SK copy "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/skopeo-single:v1" --dest-tls-verify=false
  expect_manifest interop/skopeo-single v1 "$SINGLE_DIGEST"
  local got
  got=$(SK inspect --raw --tls-verify=false "docker://$REG/interop/skopeo-single:v1" | sha256sum | cut -d' ' -f1)
  eq "skopeo inspect --raw digest" "$SINGLE_DIGEST" "sha256:$got"
}

s_skopeo_single_out() {
  need skopeo-copy-single-in
  local out=$WORK/out/skopeo-single
  mkdir -p "$(dirname "$out")"
  SK copy --src-tls-verify=false "docker://$REG/interop/skopeo-single:v1" "oci:$out:v1"
  eq "pulled manifest digest" "$SINGLE_DIGEST" "$(jq -r '.manifests[0].digest' "$out/index.json")"
  eq "pulled manifest bytes" "$SINGLE_DIGEST" "$(sha256_of "$out/blobs/sha256/${SINGLE_DIGEST#sha256:}")"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$out/blobs/sha256/${SINGLE_DIGEST#sha256:}"); do
    eq "pulled blob" "$d" "$(sha256_of "$out/blobs/sha256/${d#sha256:}")"
  done
}

s_skopeo_index_in() {
  SK copy --all --preserve-digests "oci:$MULTI_LAYOUT:v1" "docker://$REG/interop/skopeo-multi:v1" --dest-tls-verify=false
  expect_manifest interop/skopeo-multi v1 "$MULTI_DIGEST"
  expect_manifest interop/skopeo-multi "$MULTI_AMD64_DIGEST" "$MULTI_AMD64_DIGEST"
  expect_manifest interop/skopeo-multi "$MULTI_ARM64_DIGEST" "$MULTI_ARM64_DIGEST"
}

s_skopeo_index_out() {
  need skopeo-copy-index-in
  local out=$WORK/out/skopeo-multi d
  mkdir -p "$(dirname "$out")"
  SK copy --all --preserve-digests --src-tls-verify=false "docker://$REG/interop/skopeo-multi:v1" "oci:$out:v1"
  eq "pulled index digest" "$MULTI_DIGEST" "$(jq -r '.manifests[0].digest' "$out/index.json")"
  eq "pulled index bytes" "$MULTI_DIGEST" "$(sha256_of "$out/blobs/sha256/${MULTI_DIGEST#sha256:}")"
  for d in "$MULTI_AMD64_DIGEST" "$MULTI_ARM64_DIGEST"; do
    [ -f "$out/blobs/sha256/${d#sha256:}" ] || fail "child manifest $d not pulled"
  done
  # Pulling one platform through the index by tag.
  SK --override-arch arm64 copy --src-tls-verify=false "docker://$REG/interop/skopeo-multi:v1" "oci:$out-arm64:v1"
  eq "arm64 instance digest" "$MULTI_ARM64_DIGEST" "$(jq -r '.manifests[0].digest' "$out-arm64/index.json")"
}

s_skopeo_copy_between_repos() {
  need curl-push-single
  # Registry to registry: same repo new tag, and a new repo (blobs may be mounted).
  SK copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/interop/curl-single:v1" "docker://$REG/interop/curl-single:v2"
  SK copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/interop/curl-single:v1" "docker://$REG/interop/skopeo-copied:v1"
  expect_manifest interop/curl-single v2 "$SINGLE_DIGEST"
  expect_manifest interop/skopeo-copied v1 "$SINGLE_DIGEST"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$SINGLE_LAYOUT/blobs/sha256/${SINGLE_DIGEST#sha256:}"); do
    expect_blob interop/skopeo-copied "$d"
  done
}

# Origin only: a skopeo push reaches the event webhook receiver started with the registry,
# signed with the webhook's token (scripts/interop/webhook-check.py checks the HMAC).
WEBHOOK_TOKEN=interop-webhook-token
webhook_got_push() {
  python3 "$ROOT/scripts/interop/webhook-check.py" "$WEBHOOK_EVENTS" "$WEBHOOK_TOKEN" \
    interop/webhook v1 "$SINGLE_DIGEST"
}
s_skopeo_webhook() {
  if [ "$TARGET" != origin ]; then echo "not origin: nothing to check"; return 0; fi
  SK copy "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/webhook:v1" --dest-tls-verify=false
  wait_until 10 webhook_got_push || webhook_got_push
}

s_skopeo_list_tags() {
  need curl-push-single
  SK copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/interop/curl-single:v1" "docker://$REG/interop/skopeo-tags:v1"
  SK copy --src-tls-verify=false --dest-tls-verify=false \
    "docker://$REG/interop/curl-single:v1" "docker://$REG/interop/skopeo-tags:v2"
  local out
  out=$(SK list-tags --tls-verify=false "docker://$REG/interop/skopeo-tags")
  echo "$out"
  eq "list-tags Repository" "$REG/interop/skopeo-tags" "$(jq -r .Repository <<<"$out")"
  eq "list-tags Tags" "v1 v2" "$(jq -r '.Tags | sort | join(" ")' <<<"$out")"
}

s_curl_tags_list() {
  # Three tags on one manifest, pushed by curl.
  local f=$SINGLE_LAYOUT/blobs/sha256/${SINGLE_DIGEST#sha256:} t
  curl_push_layout interop/curl-tags b-tag "$SINGLE_LAYOUT"
  for t in c-tag a-tag; do curl_push_manifest interop/curl-tags "$t" "$f" "$MT_OCI_MANIFEST"; done
  http GET /v2/interop/curl-tags/tags/list
  eq "tags/list status" 200 "$S"
  cat "$B"; echo
  eq "tags/list name" interop/curl-tags "$(jq -r .name "$B")"
  if [ "$TARGET" = distribution ]; then
    # distribution 2.8.2 lists tags in storage (readdir) order unless ?n= is given.
    eq "tags/list tags (any order)" "a-tag b-tag c-tag" "$(jq -r '.tags | sort | join(" ")' "$B")"
  else
    # Spec: "If the list is not empty, the tags MUST be in lexical order".
    eq "tags/list tags (lexical order)" "a-tag b-tag c-tag" "$(jq -r '.tags | join(" ")' "$B")"
  fi
  # Unknown repository.
  http GET /v2/interop/no-such-repo/tags/list
  eq "tags/list of an unknown repository" 404 "$S"
}

# Not run against distribution 2.8.2, which ignores n and last.
s_curl_tags_pagination() {
  need curl-tags-list
  # Pagination: n and last (distribution spec "Listing Tags").
  http GET "/v2/interop/curl-tags/tags/list?n=2"
  eq "tags/list?n=2 status" 200 "$S"
  eq "tags/list?n=2 tags" "a-tag b-tag" "$(jq -r '.tags | join(" ")' "$B")"
  echo "Link: $(header "$H" Link)"
  http GET "/v2/interop/curl-tags/tags/list?n=2&last=b-tag"
  eq "tags/list?n=2&last=b-tag status" 200 "$S"
  eq "tags/list?n=2&last=b-tag tags" "c-tag" "$(jq -r '.tags | join(" ")' "$B")"
  http GET "/v2/interop/curl-tags/tags/list?n=0"
  eq "tags/list?n=0 status" 200 "$S"
  eq "tags/list?n=0 tags" "" "$(jq -r '(.tags // []) | join(" ")' "$B")"
}

# Referrers API (distribution spec 1.1); not run against distribution 2.8.2.
s_curl_referrers() {
  curl_push_layout interop/referrers v1 "$SINGLE_LAYOUT"
  local empty=$WORK/tmp/empty.json art=$WORK/tmp/artifact.json sdesc ed art_digest
  printf '{}' >"$empty"
  ed=$(sha256_of "$empty")
  curl_push_blob interop/referrers "$empty"
  sdesc="{\"mediaType\":\"$MT_OCI_MANIFEST\",\"digest\":\"$SINGLE_DIGEST\",\"size\":$(stat -c %s "$SINGLE_LAYOUT/blobs/sha256/${SINGLE_DIGEST#sha256:}")}"
  printf '{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.interop+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2}],"subject":%s,"annotations":{"org.example.interop":"%s"}}' \
    "$MT_OCI_MANIFEST" "$ed" "$ed" "$sdesc" "$NONCE" >"$art"
  art_digest=$(sha256_of "$art")
  http PUT "/v2/interop/referrers/manifests/$art_digest" -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$art"
  eq "PUT artifact status" 201 "$S"
  eq "PUT artifact OCI-Subject" "$SINGLE_DIGEST" "$(header "$H" OCI-Subject)"
  http GET "/v2/interop/referrers/referrers/$SINGLE_DIGEST"
  eq "GET referrers status" 200 "$S"
  cat "$B"; echo
  eq "referrers Content-Type" "$MT_OCI_INDEX" "$(header "$H" Content-Type | cut -d';' -f1)"
  eq "referrers entry" "$art_digest application/vnd.example.interop+json" \
    "$(jq -r --arg d "$art_digest" '.manifests[] | select(.digest==$d) | "\(.digest) \(.artifactType)"' "$B")"
  http GET "/v2/interop/referrers/referrers/$SINGLE_DIGEST?artifactType=application/vnd.example.other"
  eq "GET filtered referrers status" 200 "$S"
  if [ "$(header "$H" OCI-Filters-Applied)" = artifactType ]; then
    eq "filtered referrers" 0 "$(jq '.manifests | length' "$B")"
  fi
  # A digest nothing refers to: an empty index, not 404.
  http GET "/v2/interop/referrers/referrers/$ed"
  eq "GET referrers of an unreferenced digest status" 200 "$S"
  eq "unreferenced digest's referrers" 0 "$(jq '.manifests | length' "$B")"
}

s_curl_catalog() {
  need curl-push-single curl-push-index
  http GET /v2/_catalog
  eq "_catalog status" 200 "$S"
  cat "$B"; echo
  jq -e '.repositories | index("interop/curl-single") != null' "$B" >/dev/null ||
    fail "interop/curl-single not in catalog"
  jq -e '.repositories | index("interop/curl-multi") != null' "$B" >/dev/null ||
    fail "interop/curl-multi not in catalog"
}

s_skopeo_delete() {
  SK copy "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/skopeo-delete:v1" --dest-tls-verify=false
  expect_manifest interop/skopeo-delete v1 "$SINGLE_DIGEST"
  SK delete --tls-verify=false "docker://$REG/interop/skopeo-delete:v1"
  expect_manifest_absent interop/skopeo-delete v1
  expect_manifest_absent interop/skopeo-delete "$SINGLE_DIGEST"
  # The same manifest elsewhere is untouched.
  if [ -e "$STATE/ok.skopeo-copy-single-in" ]; then
    expect_manifest interop/skopeo-single v1 "$SINGLE_DIGEST"
  fi
}

s_curl_delete() {
  curl_push_layout interop/curl-delete v1 "$MULTI_LAYOUT"
  expect_manifest interop/curl-delete v1 "$MULTI_DIGEST"
  # Delete one child manifest by digest, then the index itself.
  http DELETE "/v2/interop/curl-delete/manifests/$MULTI_ARM64_DIGEST"
  eq "DELETE child manifest status" 202 "$S"
  expect_manifest_absent interop/curl-delete "$MULTI_ARM64_DIGEST"
  http DELETE "/v2/interop/curl-delete/manifests/$MULTI_DIGEST"
  eq "DELETE index status" 202 "$S"
  expect_manifest_absent interop/curl-delete "$MULTI_DIGEST"
  expect_manifest_absent interop/curl-delete v1
  expect_manifest interop/curl-delete "$MULTI_AMD64_DIGEST" "$MULTI_AMD64_DIGEST"
  # Deleting what is not there.
  http DELETE "/v2/interop/curl-delete/manifests/$MULTI_DIGEST"
  eq "DELETE of a deleted manifest status" 404 "$S"
}

PODMAN() { run podman --log-level=error "$@"; }

s_podman_push() {
  # Load the image into podman's (temp) storage, then push.
  SK copy "oci:$SINGLE_LAYOUT:v1" "containers-storage:localhost/interop/podman-local:v1"
  PODMAN tag localhost/interop/podman-local:v1 "$REG/interop/podman:v1"
  PODMAN push --tls-verify=false --digestfile "$WORK/podman.digest" "$REG/interop/podman:v1"
  local pushed
  pushed=$(cat "$WORK/podman.digest")
  echo "podman pushed $pushed"
  expect_manifest interop/podman v1 "$pushed"
  echo "$pushed" >"$STATE/podman.digest"
}

s_podman_pull() {
  need podman-push
  local pushed
  pushed=$(cat "$STATE/podman.digest")
  PODMAN rmi -f localhost/interop/podman-local:v1 "$REG/interop/podman:v1"
  if podman image exists "$REG/interop/podman:v1"; then fail "image still present after rmi"; fi
  PODMAN pull --tls-verify=false "$REG/interop/podman:v1"
  eq "podman image Digest" "$pushed" "$(podman image inspect --format '{{.Digest}}' "$REG/interop/podman:v1")"
  podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/podman:v1" |
    jq -e --arg d "$REG/interop/podman@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/podman@$pushed"
  # By digest too.
  PODMAN pull --tls-verify=false "$REG/interop/podman@$pushed"
}

s_podman_pull_index() {
  need curl-push-index
  PODMAN pull --tls-verify=false --arch arm64 "$REG/interop/curl-multi:v1"
  local repo_digests
  repo_digests=$(podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/curl-multi:v1")
  echo "RepoDigests: $repo_digests"
  jq -e --arg d "$REG/interop/curl-multi@$MULTI_ARM64_DIGEST" 'index($d) != null' <<<"$repo_digests" >/dev/null ||
    fail "RepoDigests lacks the arm64 instance $MULTI_ARM64_DIGEST"
  eq "podman image arch" arm64 "$(podman image inspect --format '{{.Architecture}}' "$REG/interop/curl-multi:v1")"
}

s_podman_manifest_push() {
  need curl-push-index
  # A list built by podman from the two platform images, pushed with --all.
  PODMAN manifest create localhost/interop/podman-list:v1
  PODMAN manifest add --tls-verify=false localhost/interop/podman-list:v1 \
    "docker://$REG/interop/curl-multi@$MULTI_AMD64_DIGEST"
  PODMAN manifest add --tls-verify=false localhost/interop/podman-list:v1 \
    "docker://$REG/interop/curl-multi@$MULTI_ARM64_DIGEST"
  PODMAN manifest push --all --tls-verify=false --digestfile "$WORK/podman-list.digest" \
    localhost/interop/podman-list:v1 "docker://$REG/interop/podman-list:v1"
  local pushed
  pushed=$(cat "$WORK/podman-list.digest")
  echo "podman pushed list $pushed"
  expect_manifest interop/podman-list v1 "$pushed"
  # The list names both instances, and they are pullable by digest.
  local body
  body=$(curl -fsS -H "Accept: $ACCEPT_ALL" "$REG_URL/v2/interop/podman-list/manifests/$pushed")
  echo "$body"
  local d
  for d in $(jq -r '.manifests[].digest' <<<"$body"); do manifest_digest interop/podman-list "$d" >/dev/null; done
  eq "instances in list" 2 "$(jq '.manifests | length' <<<"$body")"
}

D() { run "$DOCKER_CLI" "$@"; }

s_docker_push() {
  wait_dockerd || fail "dockerd did not start: $(tail -n 5 "$LOGS/dockerd.log")"
  D load -i "$SINGLE_DOCKER_TAR"
  D tag interop/docker-local:v1 "$REG/interop/docker:v1"
  local out pushed
  out=$(D push "$REG/interop/docker:v1" 2>&1) || { echo "$out"; fail "docker push failed"; }
  echo "$out"
  pushed=$(grep -o 'digest: sha256:[0-9a-f]\{64\}' <<<"$out" | tail -n1 | cut -d' ' -f2)
  [ -n "$pushed" ] || fail "no digest in docker push output"
  # docker pushes a Docker schema 2 manifest (it converts OCI on load).
  expect_manifest interop/docker v1 "$pushed"
  local mt
  mt=$(curl -fsS -H "Accept: $ACCEPT_ALL" "$REG_URL/v2/interop/docker/manifests/v1" | jq -r .mediaType)
  echo "pushed mediaType: $mt"
  echo "$pushed" >"$STATE/docker.digest"
}

s_docker_pull() {
  need docker-push
  local pushed id out
  pushed=$(cat "$STATE/docker.digest")
  id=$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker:v1")
  D rmi "$REG/interop/docker:v1" interop/docker-local:v1
  if "$DOCKER_CLI" image inspect "$id" >/dev/null 2>&1; then fail "image $id still present after rmi"; fi
  out=$(D pull "$REG/interop/docker:v1" 2>&1) || { echo "$out"; fail "docker pull failed"; }
  echo "$out"
  grep -q "Digest: $pushed" <<<"$out" || fail "docker pull did not report Digest: $pushed"
  "$DOCKER_CLI" image inspect --format '{{json .RepoDigests}}' "$REG/interop/docker:v1" |
    jq -e --arg d "$REG/interop/docker@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/docker@$pushed"
  eq "image ID after pull" "$id" "$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker:v1")"
  # By digest.
  D pull "$REG/interop/docker@$pushed"
}

s_docker_push_mount() {
  need docker-pull
  # Same blobs into another repository: docker asks for a cross-repository mount first.
  local pushed out
  pushed=$(cat "$STATE/docker.digest")
  D tag "$REG/interop/docker:v1" "$REG/interop/docker-mount:v1"
  out=$(D push "$REG/interop/docker-mount:v1" 2>&1) || { echo "$out"; fail "docker push failed"; }
  echo "$out"
  grep -q "digest: $pushed" <<<"$out" || fail "docker push to another repo reported another digest"
  expect_manifest interop/docker-mount v1 "$pushed"
  if grep -q 'Mounted from' <<<"$out"; then echo "note: blobs were mounted"; else echo "note: blobs were uploaded (no mount)"; fi
}

s_docker_pull_index() {
  need curl-push-index
  wait_dockerd || fail "dockerd did not start"
  local out
  out=$(D pull "$REG/interop/curl-multi:v1" 2>&1) || { echo "$out"; fail "docker pull failed"; }
  echo "$out"
  "$DOCKER_CLI" image inspect --format '{{json .RepoDigests}}' "$REG/interop/curl-multi:v1" |
    jq -e --arg d "$REG/interop/curl-multi@$MULTI_DIGEST" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks the index digest $MULTI_DIGEST"
  eq "image ID (amd64 config)" "$MULTI_AMD64_CONFIG" \
    "$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/curl-multi:v1")"
}

CTR() { # CTR NAMESPACE ARGS...
  local ns=$1
  shift
  run ctr --address "$CTR_SOCK" --namespace "$ns" "$@"
}
ctr_target() { # ctr_target NAMESPACE REF: the image's target digest
  ctr --address "$CTR_SOCK" --namespace "$1" images ls | awk -v r="$2" '$1==r {print $3}'
}

s_ctr_push_single() {
  wait_containerd || fail "containerd did not start: $(tail -n 5 "$LOGS/containerd.log")"
  CTR push images import --base-name localhost/interop/ctr-local "$SINGLE_OCI_TAR"
  eq "imported target" "$SINGLE_DIGEST" "$(ctr_target push localhost/interop/ctr-local:v1)"
  CTR push images push --plain-http "$REG/interop/ctr-single:v1" localhost/interop/ctr-local:v1
  expect_manifest interop/ctr-single v1 "$SINGLE_DIGEST"
}

s_ctr_pull_single() {
  need ctr-push-single
  CTR pull images pull --plain-http "$REG/interop/ctr-single:v1"
  eq "pulled target" "$SINGLE_DIGEST" "$(ctr_target pull "$REG/interop/ctr-single:v1")"
  CTR pull images rm --sync "$REG/interop/ctr-single:v1"
  CTR pull images pull --plain-http "$REG/interop/ctr-single@$SINGLE_DIGEST"
  eq "pulled-by-digest target" "$SINGLE_DIGEST" "$(ctr_target pull "$REG/interop/ctr-single@$SINGLE_DIGEST")"
  CTR pull images check
}

s_ctr_push_index() {
  wait_containerd || fail "containerd did not start"
  CTR push images import --all-platforms --base-name localhost/interop/ctr-multi-local "$MULTI_OCI_TAR"
  eq "imported target" "$MULTI_DIGEST" "$(ctr_target push localhost/interop/ctr-multi-local:v1)"
  CTR push images push --plain-http "$REG/interop/ctr-multi:v1" localhost/interop/ctr-multi-local:v1
  expect_manifest interop/ctr-multi v1 "$MULTI_DIGEST"
  expect_manifest interop/ctr-multi "$MULTI_AMD64_DIGEST" "$MULTI_AMD64_DIGEST"
  expect_manifest interop/ctr-multi "$MULTI_ARM64_DIGEST" "$MULTI_ARM64_DIGEST"
}

s_ctr_pull_index() {
  need ctr-push-index
  CTR pull images pull --plain-http --all-platforms "$REG/interop/ctr-multi:v1"
  eq "pulled target" "$MULTI_DIGEST" "$(ctr_target pull "$REG/interop/ctr-multi:v1")"
  local d
  for d in "$MULTI_AMD64_DIGEST" "$MULTI_ARM64_DIGEST"; do
    ctr --address "$CTR_SOCK" --namespace pull content get "$d" | sha256sum | grep -q "${d#sha256:}" ||
      fail "child manifest $d not in the content store"
  done
  CTR pull images check
}

# ---------------------------------------------------------------------------------------
# oras-py (OCI artifacts), against the registry under test
# ---------------------------------------------------------------------------------------
ORAS_PY_DIR=$WORK/oras-py
ORAS_PY_SPEC=${INTEROP_ORAS_PY:-oras==0.2.43}
ORAS_ARTIFACT_TYPE=application/vnd.example.interop.oras
# start_oras_install: pip install --target under the temp dir, in the background (its
# outcome in $STATE/oras-install.rc, its output in $LOGS/oras-install.log).
start_oras_install() {
  (
    trap - INT TERM HUP
    rc=0
    if python3 -c 'import oras.provider' 2>/dev/null; then
      echo "oras-py already importable: $(python3 -c 'import oras.version as v; print(v.__version__)')"
    elif [ -n "${INTEROP_NO_INSTALL:-}" ]; then
      echo "oras-py is missing and INTEROP_NO_INSTALL is set"
      rc=1
    else
      echo "+ pip install --target $ORAS_PY_DIR $ORAS_PY_SPEC"
      PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 timeout -k 5 150 \
        python3 -m pip install -q --target "$ORAS_PY_DIR" "$ORAS_PY_SPEC" || rc=$?
    fi
    echo "$rc" >"$STATE/oras-install.rc"
  ) >"$LOGS/oras-install.log" 2>&1 </dev/null &
  ORAS_INSTALL_PID=$!
  PIDS+=("$ORAS_INSTALL_PID")
}
oras_ready() {
  wait_until 150 test -e "$STATE/oras-install.rc" || fail "pip install of oras-py still running after 150 s"
  [ "$(cat "$STATE/oras-install.rc")" = 0 ] ||
    fail "oras-py could not be installed: $(tail -n 5 "$LOGS/oras-install.log" | tr '\n' ' ')"
}
ORAS() { # ORAS push|pull ARGS...: scripts/interop/oras-artifact.py with oras-py on the path
  oras_ready
  PYTHONPATH=$ORAS_PY_DIR${PYTHONPATH:+:$PYTHONPATH} run python3 "$ROOT/scripts/interop/oras-artifact.py" "$@"
}

# A file artifact with an artifactType and a subject (an image pushed by curl), by tag.
s_oras_push() {
  curl_push_layout interop/oras v1 "$SINGLE_LAYOUT"
  local f=$WORK/tmp/oras/artifact.txt out digest
  mkdir -p "$(dirname "$f")"
  { echo "oras artifact $NONCE"; head -c 24000 /dev/urandom | base64; } >"$f"
  out=$(ORAS push "$REG" interop/oras artifact "$f" --insecure --artifact-type "$ORAS_ARTIFACT_TYPE" \
    --subject "$SINGLE_DIGEST")
  echo "$out"
  eq "PUT manifest status" 201 "$(jq -r .status <<<"$out")"
  digest=$(jq -r .digest <<<"$out")
  [[ $digest == sha256:* ]] || fail "no Docker-Content-Digest on the manifest PUT"
  expect_manifest interop/oras artifact "$digest"
  http GET "/v2/interop/oras/manifests/$digest" -H "Accept: $MT_OCI_MANIFEST"
  cat "$B"; echo
  eq "artifactType" "$ORAS_ARTIFACT_TYPE" "$(jq -r .artifactType "$B")"
  eq "subject" "$SINGLE_DIGEST" "$(jq -r .subject.digest "$B")"
  eq "layer title" artifact.txt "$(jq -r '.layers[0].annotations["org.opencontainers.image.title"]' "$B")"
  eq "PUT-answered digest is the artifact's" "$digest" "$(sha256_of "$B")"
  expect_blob interop/oras "$(sha256_of "$f")"
  cp "$f" "$STATE/oras-artifact.txt"
  echo "$digest" >"$STATE/oras.digest"
}

s_oras_pull() {
  need oras-push
  local out=$WORK/out/oras-pull digest
  digest=$(cat "$STATE/oras.digest")
  mkdir -p "$out/by-tag" "$out/by-digest"
  ORAS pull "$REG" interop/oras artifact "$out/by-tag" --insecure
  cmp "$STATE/oras-artifact.txt" "$out/by-tag/artifact.txt" || fail "pulled file differs"
  ORAS pull "$REG" interop/oras "$digest" "$out/by-digest" --insecure
  cmp "$STATE/oras-artifact.txt" "$out/by-digest/artifact.txt" || fail "pulled (by digest) file differs"
  echo "ok: pulled bytes equal the pushed file"
}

# oras-py has no referrers call (nor attach): the artifact's subject makes it a referrer.
s_oras_referrers() {
  need oras-push
  local digest
  digest=$(cat "$STATE/oras.digest")
  http GET "/v2/interop/oras/referrers/$SINGLE_DIGEST"
  eq "GET referrers status" 200 "$S"
  cat "$B"; echo
  eq "referrers entry" "$digest $ORAS_ARTIFACT_TYPE" \
    "$(jq -r --arg d "$digest" '.manifests[] | select(.digest==$d) | "\(.digest) \(.artifactType)"' "$B")"
  eq "referrers entry annotation" oras-py \
    "$(jq -r --arg d "$digest" '.manifests[] | select(.digest==$d) | .annotations["org.example.interop"]' "$B")"
  http GET "/v2/interop/oras/referrers/$SINGLE_DIGEST?artifactType=$ORAS_ARTIFACT_TYPE"
  eq "GET filtered referrers status" 200 "$S"
  eq "filtered referrers" "$digest" "$(jq -r '[.manifests[].digest] | join(" ")' "$B")"
}

# ---------------------------------------------------------------------------------------
# Security phase (Origin only): TLS, mTLS, Basic auth, policies
# ---------------------------------------------------------------------------------------
PKI=$WORK/pki
ALICE_PASSWORD=secret
BOB_PASSWORD='bob-secret'
SEC_POLICIES="['identity.username == \"alice\"', '\"ci\" in identity.certificate.organizations']"

# pki_key FILE; pki_ca NAME SUBJECT; pki_leaf NAME CA SUBJECT EXTENSIONS (printf %b text)
pki_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
pki_ca() {
  pki_key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days 2 -sha256 -out "$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
pki_leaf() {
  pki_key "$1.key"
  openssl req -new -key "$1.key" -subj "$3" -out "$1.csr"
  printf '%b' "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 -sha256 \
    -extfile "$1.ext" -out "$1.crt"
}

s_tls_pki() {
  mkdir -p "$PKI"
  cd "$PKI"
  pki_ca ca "/CN=origin interop CA $NONCE"
  pki_ca other-ca "/CN=origin interop other CA $NONCE"
  pki_leaf server ca "/CN=127.0.0.1" \
    'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n'
  pki_leaf client ca "/O=ci/CN=ci-bot" 'extendedKeyUsage=clientAuth\n'
  pki_leaf other-client other-ca "/O=ci/CN=ci-bot" 'extendedKeyUsage=clientAuth\n'
  # Same CA, another organization: authenticated, but no policy allows it.
  pki_leaf dev-client ca "/O=dev/CN=dev-bot" 'extendedKeyUsage=clientAuth\n'
  openssl verify -CAfile ca.crt server.crt client.crt dev-client.crt
  if openssl verify -CAfile ca.crt other-client.crt; then fail "other-client.crt verifies against ca.crt"; fi
  openssl x509 -in server.crt -noout -subject -ext subjectAltName
  local c
  for c in client other-client dev-client; do openssl x509 -in "$c.crt" -noout -subject -issuer; done
  # containers/image certificate directories: *.crt are CAs, *.cert + *.key a client pair.
  mkdir -p certs-ca certs-client certs-other-ca certs-dev
  cp ca.crt certs-ca/
  for c in client:certs-client other-client:certs-other-ca dev-client:certs-dev; do
    cp ca.crt "${c#*:}/ca.crt"
    cp "${c%%:*}.crt" "${c#*:}/client.cert"
    cp "${c%%:*}.key" "${c#*:}/client.key"
  done
  ls -R "$PKI"/certs-*
}

# sec_config NAME MODE (plain|tls|mtls) ALICE_HASH BOB_HASH: an instance's config file.
sec_config() {
  local name=$1 mode=$2 dir=$WORK/$1
  mkdir -p "$dir/data"
  {
    printf '[server]\nbind_address = "127.0.0.1"\nport = 0\n\n'
    if [ "$mode" != plain ]; then
      printf '[server.tls]\nserver_certificate_bundle = "%s"\nserver_private_key = "%s"\n' \
        "$PKI/server.crt" "$PKI/server.key"
      [ "$mode" = mtls ] && printf 'client_ca_bundle = "%s"\nclient_certificate = "required"\n' "$PKI/ca.crt"
      echo
    fi
    printf '[storage.fs]\nroot_dir = "%s"\n\n' "$dir/data"
    # The mTLS instance authenticates by certificate only (no Basic identities).
    if [ "$mode" != mtls ]; then
      printf '[identity.alice]\nusername = "alice"\npassword = "%s"\n\n' "$3"
      printf '[identity.bob]\nusername = "bob"\npassword = "%s"\n\n' "$4"
    fi
    printf '[[repository]]\nnamespace = ""\npolicy_default_allow = false\npolicies = %s\n' "$SEC_POLICIES"
  } >"$dir/config.toml"
  cat "$dir/config.toml"
  run "$ORIGIN_BIN" check-config -c "$dir/config.toml"
}
# code_of URL CURL-ARGS...: the HTTP status of a GET (000 when no HTTP answer).
code_of() {
  local url=$1
  shift
  curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@" "$url" || true
}
answers() { [ "$(code_of "$@")" != 000 ]; } # answers URL CURL-ARGS...: any HTTP answer

s_tls_start_registries() {
  need tls-pki
  local alice bob name mode
  alice=$(printf '%s' "$ALICE_PASSWORD" | "$ORIGIN_BIN" hash-password)
  bob=$(printf '%s' "$BOB_PASSWORD" | "$ORIGIN_BIN" hash-password)
  : >"$STATE/sec.env.tmp"
  for name in origin-tls:tls origin-mtls:mtls origin-auth:plain; do
    mode=${name#*:}
    name=${name%%:*}
    sec_config "$name" "$mode" "$alice" "$bob"
    spawn_origin "$name" "$WORK/$name/config.toml"
    grep -m1 'origin listening' "$LOGS/$name.err"
    echo "$(tr a-z- A-Z_ <<<"${name#origin-}")_REG=127.0.0.1:$SPAWNED_PORT" >>"$STATE/sec.env.tmp"
  done
  cat "$STATE/sec.env.tmp"
  # shellcheck disable=SC1091
  . "$STATE/sec.env.tmp"
  local ca=(--cacert "$PKI/ca.crt") cert=(--cert "$PKI/client.crt" --key "$PKI/client.key")
  wait_until 10 answers "https://$TLS_REG/v2/" "${ca[@]}" || fail "TLS instance does not answer"
  eq "TLS: anonymous GET /v2/" 401 "$(code_of "https://$TLS_REG/v2/" "${ca[@]}")"
  eq "TLS: alice GET /v2/" 200 "$(code_of "https://$TLS_REG/v2/" "${ca[@]}" -u "alice:$ALICE_PASSWORD")"
  wait_until 10 answers "https://$MTLS_REG/v2/" "${ca[@]}" "${cert[@]}" || fail "mTLS instance does not answer"
  eq "mTLS: ci-bot GET /v2/" 200 "$(code_of "https://$MTLS_REG/v2/" "${ca[@]}" "${cert[@]}")"
  wait_until 10 answers "http://$AUTH_REG/v2/" || fail "plain-HTTP auth instance does not answer"
  eq "auth: anonymous GET /v2/" 401 "$(code_of "http://$AUTH_REG/v2/")"
  eq "auth: alice GET /v2/" 200 "$(code_of "http://$AUTH_REG/v2/" -u "alice:$ALICE_PASSWORD")"
  mv "$STATE/sec.env.tmp" "$STATE/sec.env"
}

# use_instance tls|mtls|auth [anonymous]: point REG, REG_URL and the curl helpers at a
# security-phase instance, as alice (tls, auth) or ci-bot's certificate (mtls).
use_instance() {
  need tls-start-registries
  # shellcheck disable=SC1091
  . "$STATE/sec.env"
  case $1 in
    tls) REG=$TLS_REG REG_URL=https://$TLS_REG CURL_EXTRA=(--cacert "$PKI/ca.crt" -u "alice:$ALICE_PASSWORD") ;;
    mtls) REG=$MTLS_REG REG_URL=https://$MTLS_REG
      CURL_EXTRA=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key") ;;
    auth) REG=$AUTH_REG REG_URL=http://$AUTH_REG CURL_EXTRA=(-u "alice:$ALICE_PASSWORD") ;;
  esac
  if [ "${2:-}" = anonymous ]; then CURL_EXTRA=("${CURL_EXTRA[@]:0:2}"); [ "$1" = auth ] && CURL_EXTRA=(); fi
  echo "instance $1 at $REG_URL"
}
# expect_fail PATTERN CMD...: CMD must fail, its output matching PATTERN (grep -E -i).
expect_fail() {
  local pattern=$1 out
  shift
  if out=$("$@" 2>&1); then echo "$out"; fail "succeeded, should have failed: $*"; fi
  echo "$out"
  grep -qiE -- "$pattern" <<<"$out" || fail "failed, but the output does not match /$pattern/"
  echo "ok: failed as expected (/$pattern/)"
}
# check_oci_out DIR DIGEST: a pulled single-image layout holds DIGEST and its blobs, intact.
check_oci_out() {
  eq "pulled manifest digest" "$2" "$(jq -r '.manifests[0].digest' "$1/index.json")"
  eq "pulled manifest bytes" "$2" "$(sha256_of "$1/blobs/sha256/${2#sha256:}")"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${2#sha256:}"); do
    eq "pulled blob" "$d" "$(sha256_of "$1/blobs/sha256/${d#sha256:}")"
  done
}

s_tls_skopeo_in() {
  use_instance tls
  SK copy --dest-cert-dir "$PKI/certs-ca" --dest-creds "alice:$ALICE_PASSWORD" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-skopeo:v1"
  expect_manifest interop/tls-skopeo v1 "$SINGLE_DIGEST"
  # The certificate's DNS name too.
  local got
  got=$(SK inspect --raw --cert-dir "$PKI/certs-ca" --creds "alice:$ALICE_PASSWORD" \
    "docker://localhost:${REG##*:}/interop/tls-skopeo:v1" | sha256sum | cut -d' ' -f1)
  eq "skopeo inspect --raw via localhost" "$SINGLE_DIGEST" "sha256:$got"
}

s_tls_skopeo_out() {
  need tls-skopeo-copy-in
  use_instance tls
  local out=$WORK/out/tls-skopeo
  SK copy --src-cert-dir "$PKI/certs-ca" --src-creds "alice:$ALICE_PASSWORD" \
    "docker://$REG/interop/tls-skopeo:v1" "oci:$out:v1"
  check_oci_out "$out" "$SINGLE_DIGEST"
}

# Origin rate-limits failed Basic logins to 10 a minute per client address (all clients
# here are 127.0.0.1; the limit then answers 429 even to alice), and containers/image
# clients without credentials answer a Basic challenge with empty ones ("Basic Og==",
# which fail): the steps below cause about 7 failures on the TLS instance; keep it so.
s_tls_anonymous_denied() {
  use_instance tls anonymous
  http GET /v2/
  eq "anonymous GET /v2/ status" 401 "$S"
  local wa
  wa=$(header "$H" WWW-Authenticate)
  echo "WWW-Authenticate: $wa"
  [[ $wa == 'Basic realm="origin"'* ]] || fail "WWW-Authenticate '$wa' is not Basic realm=\"origin\""
  http GET /v2/interop/tls-skopeo/manifests/v1 -H "Accept: $ACCEPT_ALL"
  eq "anonymous GET manifest status" 401 "$S"
  eq "anonymous GET manifest error code" UNAUTHORIZED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'unauthorized|authentication required|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --no-creds "docker://$REG/interop/tls-skopeo:v1"
  expect_fail 'unauthorized|authentication required|401' \
    SK copy --dest-cert-dir "$PKI/certs-ca" --dest-no-creds "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-anonymous:v1"
  # No TLS at all: the client does not trust the server's certificate.
  expect_fail 'x509|certificate' \
    SK inspect --raw --creds "alice:$ALICE_PASSWORD" "docker://$REG/interop/tls-skopeo:v1"
}

s_tls_wrong_password() {
  use_instance tls anonymous
  http GET /v2/ -u alice:wrong-password
  eq "wrong password GET /v2/ status" 401 "$S"
  cat "$B"; echo
  [[ $(header "$H" WWW-Authenticate) == Basic* ]] || fail "401 without a Basic challenge"
  expect_fail 'invalid username or password|unauthorized|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --creds alice:wrong-password "docker://$REG/interop/tls-skopeo:v1"
  expect_fail 'invalid username or password|unauthorized|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --creds nobody:secret "docker://$REG/interop/tls-skopeo:v1"
}

s_tls_known_identity_forbidden() {
  use_instance tls anonymous
  http GET /v2/ -u "bob:$BOB_PASSWORD"
  eq "bob GET /v2/ status (any authenticated caller)" 200 "$S"
  http GET /v2/interop/tls-skopeo/manifests/v1 -u "bob:$BOB_PASSWORD" -H "Accept: $ACCEPT_ALL"
  eq "bob GET manifest status" 403 "$S"
  eq "bob GET manifest error code" DENIED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'denied|403' \
    SK copy --dest-cert-dir "$PKI/certs-ca" --dest-creds "bob:$BOB_PASSWORD" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-bob:v1"
  use_instance tls
  expect_manifest_absent interop/tls-bob v1
}

s_tls_podman_push() {
  use_instance tls
  printf '%s' "$ALICE_PASSWORD" | PODMAN login --cert-dir "$PKI/certs-ca" -u alice --password-stdin "$REG"
  jq -e --arg r "$REG" '.auths[$r].auth' "$REGISTRY_AUTH_FILE" >/dev/null || fail "no auth for $REG in $REGISTRY_AUTH_FILE"
  SK copy "oci:$SINGLE_LAYOUT:v1" "containers-storage:localhost/interop/tls-podman-local:v1"
  PODMAN tag localhost/interop/tls-podman-local:v1 "$REG/interop/tls-podman:v1"
  PODMAN push --cert-dir "$PKI/certs-ca" --digestfile "$WORK/tls-podman.digest" "$REG/interop/tls-podman:v1"
  local pushed
  pushed=$(cat "$WORK/tls-podman.digest")
  echo "podman pushed $pushed"
  expect_manifest interop/tls-podman v1 "$pushed"
  echo "$pushed" >"$STATE/tls-podman.digest"
}

s_tls_podman_pull() {
  need tls-podman-push
  use_instance tls
  local pushed
  pushed=$(cat "$STATE/tls-podman.digest")
  PODMAN rmi -f localhost/interop/tls-podman-local:v1 "$REG/interop/tls-podman:v1"
  PODMAN pull --cert-dir "$PKI/certs-ca" "$REG/interop/tls-podman:v1"
  eq "podman image Digest" "$pushed" "$(podman image inspect --format '{{.Digest}}' "$REG/interop/tls-podman:v1")"
  podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/tls-podman:v1" |
    jq -e --arg d "$REG/interop/tls-podman@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/tls-podman@$pushed"
  PODMAN logout "$REG"
  expect_fail 'unauthorized|authentication required|401' \
    PODMAN pull --cert-dir "$PKI/certs-ca" "$REG/interop/tls-podman@$pushed"
}

s_mtls_skopeo_push() {
  use_instance mtls
  SK copy --dest-cert-dir "$PKI/certs-client" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-skopeo:v1"
  expect_manifest interop/mtls-skopeo v1 "$SINGLE_DIGEST"
}

s_mtls_skopeo_pull() {
  need mtls-skopeo-push
  use_instance mtls
  local out=$WORK/out/mtls-skopeo
  SK copy --src-cert-dir "$PKI/certs-client" "docker://$REG/interop/mtls-skopeo:v1" "oci:$out:v1"
  check_oci_out "$out" "$SINGLE_DIGEST"
}

s_mtls_no_client_cert() {
  use_instance mtls
  local rc=0
  curl -sS --max-time 10 -o /dev/null --cacert "$PKI/ca.crt" "$REG_URL/v2/" || rc=$?
  echo "curl without a client certificate: exit $rc"
  [ "$rc" != 0 ] || fail "an HTTP answer without a client certificate"
  expect_fail 'certificate|tls|handshake' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" "docker://$REG/interop/mtls-skopeo:v1"
  expect_fail 'certificate|tls|handshake' \
    SK copy --dest-cert-dir "$PKI/certs-ca" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-anonymous:v1"
}

s_mtls_other_ca() {
  use_instance mtls
  local rc=0
  curl -sS --max-time 10 -o /dev/null --cacert "$PKI/ca.crt" --cert "$PKI/other-client.crt" \
    --key "$PKI/other-client.key" "$REG_URL/v2/" || rc=$?
  echo "curl with the other CA's client certificate: exit $rc"
  [ "$rc" != 0 ] || fail "an HTTP answer with a client certificate from an unknown CA"
  expect_fail 'certificate|tls|handshake' \
    SK inspect --raw --cert-dir "$PKI/certs-other-ca" "docker://$REG/interop/mtls-skopeo:v1"
  expect_fail 'certificate|tls|handshake' \
    SK copy --dest-cert-dir "$PKI/certs-other-ca" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-other:v1"
}

# A valid certificate (same CA) of another organization: authenticated, denied by policy.
s_mtls_other_org() {
  use_instance mtls
  CURL_EXTRA=(--cacert "$PKI/ca.crt" --cert "$PKI/dev-client.crt" --key "$PKI/dev-client.key")
  http GET /v2/
  eq "O=dev GET /v2/ status (any authenticated caller)" 200 "$S"
  http GET /v2/interop/mtls-skopeo/manifests/v1 -H "Accept: $ACCEPT_ALL"
  eq "O=dev GET manifest status" 403 "$S"
  eq "O=dev GET manifest error code" DENIED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'denied|403' \
    SK copy --dest-cert-dir "$PKI/certs-dev" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-dev:v1"
}

s_mtls_podman_push() {
  use_instance mtls
  SK copy "oci:$SINGLE_LAYOUT:v1" "containers-storage:localhost/interop/mtls-podman-local:v1"
  PODMAN tag localhost/interop/mtls-podman-local:v1 "$REG/interop/mtls-podman:v1"
  PODMAN push --cert-dir "$PKI/certs-client" --digestfile "$WORK/mtls-podman.digest" "$REG/interop/mtls-podman:v1"
  local pushed
  pushed=$(cat "$WORK/mtls-podman.digest")
  echo "podman pushed $pushed"
  expect_manifest interop/mtls-podman v1 "$pushed"
  echo "$pushed" >"$STATE/mtls-podman.digest"
}

s_mtls_podman_pull() {
  need mtls-podman-push
  use_instance mtls
  local pushed
  pushed=$(cat "$STATE/mtls-podman.digest")
  PODMAN rmi -f localhost/interop/mtls-podman-local:v1 "$REG/interop/mtls-podman:v1"
  PODMAN pull --cert-dir "$PKI/certs-client" "$REG/interop/mtls-podman:v1"
  eq "podman image Digest" "$pushed" "$(podman image inspect --format '{{.Digest}}' "$REG/interop/mtls-podman:v1")"
  podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/mtls-podman:v1" |
    jq -e --arg d "$REG/interop/mtls-podman@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/mtls-podman@$pushed"
}

# oras-py over TLS with Basic auth (its "basic" backend) and a chunked (PATCH) upload.
s_tls_oras_creds() {
  use_instance tls
  local f=$WORK/tmp/oras-tls/artifact.txt out digest
  mkdir -p "$(dirname "$f")" "$WORK/out/oras-tls"
  { echo "oras tls artifact $NONCE"; head -c 60000 /dev/urandom | base64; } >"$f"
  out=$(ORAS push "$REG" interop/tls-oras artifact "$f" --ca "$PKI/ca.crt" --user alice \
    --password "$ALICE_PASSWORD" --artifact-type "$ORAS_ARTIFACT_TYPE" --chunk-size 32768)
  echo "$out"
  digest=$(jq -r .digest <<<"$out")
  expect_manifest interop/tls-oras artifact "$digest"
  expect_blob interop/tls-oras "$(sha256_of "$f")"
  ORAS pull "$REG" interop/tls-oras artifact "$WORK/out/oras-tls" --ca "$PKI/ca.crt" --user alice \
    --password "$ALICE_PASSWORD"
  cmp "$f" "$WORK/out/oras-tls/artifact.txt" || fail "pulled file differs"
}

s_docker_login_push() {
  wait_dockerd || fail "dockerd did not start: $(tail -n 5 "$LOGS/dockerd.log")"
  use_instance auth
  # Before login: denied.
  expect_fail 'unauthorized|authentication required|no basic auth credentials' \
    D pull "$REG/interop/docker-auth:v1"
  printf '%s' "$ALICE_PASSWORD" | D login -u alice --password-stdin "$REG"
  jq -e --arg r "$REG" '.auths[$r].auth' "$DOCKER_CONFIG/config.json" >/dev/null ||
    fail "no auth for $REG in $DOCKER_CONFIG/config.json"
  D load -i "$SINGLE_DOCKER_TAR"
  D tag interop/docker-local:v1 "$REG/interop/docker-auth:v1"
  local out pushed
  out=$(D push "$REG/interop/docker-auth:v1" 2>&1) || { echo "$out"; fail "docker push failed"; }
  echo "$out"
  pushed=$(grep -o 'digest: sha256:[0-9a-f]\{64\}' <<<"$out" | tail -n1 | cut -d' ' -f2)
  [ -n "$pushed" ] || fail "no digest in docker push output"
  expect_manifest interop/docker-auth v1 "$pushed"
  echo "$pushed" >"$STATE/docker-auth.digest"
}

s_docker_login_pull() {
  need docker-login-push
  use_instance auth
  local pushed id out
  pushed=$(cat "$STATE/docker-auth.digest")
  id=$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker-auth:v1")
  # Every tag of that image (earlier steps tagged it for the main registry too).
  D rmi -f "$id"
  if "$DOCKER_CLI" image inspect "$id" >/dev/null 2>&1; then fail "image $id still present after rmi"; fi
  out=$(D pull "$REG/interop/docker-auth:v1" 2>&1) || { echo "$out"; fail "docker pull failed"; }
  echo "$out"
  grep -q "Digest: $pushed" <<<"$out" || fail "docker pull did not report Digest: $pushed"
  "$DOCKER_CLI" image inspect --format '{{json .RepoDigests}}' "$REG/interop/docker-auth:v1" |
    jq -e --arg d "$REG/interop/docker-auth@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/docker-auth@$pushed"
  eq "image ID after pull" "$id" "$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker-auth:v1")"
}

s_docker_logout() {
  need docker-login-push
  use_instance auth
  D logout "$REG"
  if jq -e --arg r "$REG" '.auths[$r]' "$DOCKER_CONFIG/config.json" >/dev/null 2>&1; then
    fail "$REG still in $DOCKER_CONFIG/config.json after logout"
  fi
  expect_fail 'unauthorized|authentication required|no basic auth credentials' \
    D pull "$REG/interop/docker-auth:v1"
}

s_sec_registries_still_up() {
  use_instance tls
  eq "TLS instance GET /v2/" 200 "$(code_of "https://$TLS_REG/v2/" "${CURL_EXTRA[@]}")"
  use_instance mtls
  eq "mTLS instance GET /v2/" 200 "$(code_of "https://$MTLS_REG/v2/" "${CURL_EXTRA[@]}")"
  use_instance auth
  eq "auth instance GET /v2/" 200 "$(code_of "http://$AUTH_REG/v2/" "${CURL_EXTRA[@]}")"
}

# ---------------------------------------------------------------------------------------
# Pull-through cache phase (Origin only): a distribution upstream, an Origin mirror of it
# ---------------------------------------------------------------------------------------
MIRROR_STEPS=(mirror-start-registries mirror-docker-pull mirror-ctr-hosts-ns-pull mirror-read-only
  mirror-list-tags mirror-docker-pull-upstream-down)
MIRROR_PORT=      # the mirror instance (in dockerd's registry-mirrors); chosen before dockerd starts
MIRROR_UP_PORT=   # the upstream distribution instance
MIRROR_DIR=$WORK/mirror
# mirror_port [OTHER]: a free port below the ephemeral range (32768-): it is bound only
# minutes later, meanwhile clients' outgoing connections must not take it.
mirror_port() {
  local p i
  for i in $(seq 1 50); do
    p=$(free_port) || return 1
    if [ "$p" -lt 32768 ] && [ "$p" != "${1:-}" ]; then echo "$p"; return 0; fi
  done
  return 1
}
mirror_env() { # the ports and the mirrored image's digests, in a step
  [ -n "$MIRROR_PORT" ] || fail "no mirror port (the phase was not set up)"
  # shellcheck disable=SC1091
  . "$STATE/mirror.env"
  MIRROR_URL=http://127.0.0.1:$MIRROR_PORT
}
upstream_ping() { curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$MIRROR_UP_PORT/v2/"; }
mirror_metric() { # mirror_metric NAME: a counter's value on the mirror's /metrics (0 when absent)
  local v
  v=$(curl -fsS --max-time 5 "http://127.0.0.1:$MIRROR_PORT/metrics" | awk -v m="$1" '$1==m {print $2}')
  echo "${v:-0}"
}
# mirror_access PATTERN: the mirror's access log lines (origin::access) matching PATTERN (grep -E).
mirror_access() { grep -F 'origin::access' "$LOGS/origin-mirror.err" | grep -E -- "$1"; }

# The upstream: CNCF distribution with its access log on (to stdout, mirror-upstream.out).
# Its PID goes to $STATE/mirror-upstream.pid (a later step stops it) and $STATE/bg.pids.
start_mirror_upstream() {
  local dir=$MIRROR_DIR/upstream pid
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$MIRROR_UP_PORT
YML
  env -u REGISTRY_AUTH_FILE docker-registry serve "$dir/config.yml" \
    >>"$LOGS/mirror-upstream.out" 2>>"$LOGS/mirror-upstream.err" &
  pid=$!
  echo "$pid" >>"$STATE/bg.pids"
  echo "$pid" >"$STATE/mirror-upstream.pid"
  wait_until 20 upstream_ping || fail "upstream distribution on $MIRROR_UP_PORT does not answer: $(tail -n 5 "$LOGS/mirror-upstream.err")"
  echo "upstream: distribution (pid $pid) at http://127.0.0.1:$MIRROR_UP_PORT"
}

s_mirror_start_registries() {
  [ -n "$MIRROR_PORT" ] || fail "no mirror port (the phase was not set up)"
  command -v docker-registry >/dev/null || fail "docker-registry (CNCF distribution) is not installed"
  # An image of its own: docker must download its layers (SINGLE_LAYOUT's are in dockerd's
  # store already after the docker steps, which would leave the blob path untested).
  local l=$MIRROR_DIR/image src=$MIRROR_DIR/src
  mkdir -p "$src"
  printf 'pulled through origin %s\n' "$NONCE" >"$src/hello"
  head -c 1048576 /dev/urandom >"$src/random.bin"
  image_add "$l" amd64 "$src"
  layout_finish "$l" "$MANIFEST_DESC"
  {
    echo "MIRROR_LAYOUT=$l"
    echo "MIRROR_DIGEST=$MANIFEST_DIGEST"
    echo "MIRROR_CONFIG=$CONFIG_DIGEST"
  } >"$STATE/mirror.env.tmp"
  cat "$STATE/mirror.env.tmp"

  start_mirror_upstream
  SK copy "oci:$l:v1" "docker://127.0.0.1:$MIRROR_UP_PORT/library/mirrortest:v1" --dest-tls-verify=false
  REG_URL=http://127.0.0.1:$MIRROR_UP_PORT expect_manifest library/mirrortest v1 "$MANIFEST_DIGEST"

  local dir=$MIRROR_DIR/origin
  mkdir -p "$dir/data"
  cat >"$dir/config.toml" <<TOML
[server]
bind_address = "127.0.0.1"
port = $MIRROR_PORT

[storage.fs]
root_dir = "$dir/data"

# Names no mirror claims (containerd's ?ns= of another registry) stay local.
[[repository]]
namespace = ""
policy_default_allow = true
policies = []

# An ordinary local namespace beside the mirrors (pushes work there).
[[repository]]
namespace = "local"
policy_default_allow = true
policies = []

[[repository]]
namespace = "docker.io"
policy_default_allow = true
policies = []
[repository.mirror]
registry = "docker.io"
default = true
# Short, so that the last step's pull revalidates (and finds the upstream down).
tag_freshness = "1s"
[[repository.mirror.upstream]]
url = "http://127.0.0.1:$MIRROR_UP_PORT"
timeout = "5s"

[[repository]]
namespace = "upstreamtest"
policy_default_allow = true
policies = []
[repository.mirror]
registry = "upstream.test"
tag_freshness = "1s"
[[repository.mirror.upstream]]
url = "http://127.0.0.1:$MIRROR_UP_PORT"
timeout = "5s"
TOML
  cat "$dir/config.toml"
  run "$ORIGIN_BIN" check-config -c "$dir/config.toml"
  spawn_origin origin-mirror "$dir/config.toml"
  grep -E 'origin listening|mirroring' "$LOGS/origin-mirror.err"
  eq "mirror port" "$MIRROR_PORT" "$SPAWNED_PORT"
  wait_until 10 answers "http://127.0.0.1:$MIRROR_PORT/v2/" || fail "mirror instance does not answer"
  eq "mirror GET /v2/" 200 "$(code_of "http://127.0.0.1:$MIRROR_PORT/v2/")"
  mv "$STATE/mirror.env.tmp" "$STATE/mirror.env"
}

# dockerd's registry-mirrors: "mirrortest:v1" is docker.io/library/mirrortest:v1, which
# only the mirror can serve here (no route to the internet).
s_mirror_docker_pull() {
  need mirror-start-registries
  wait_dockerd || fail "dockerd did not start: $(tail -n 5 "$LOGS/dockerd.log")"
  mirror_env
  jq -e --arg m "$MIRROR_URL" '.["registry-mirrors"] | index($m) != null' "$WORK/docker/daemon.json" >/dev/null ||
    fail "daemon.json does not name $MIRROR_URL: $(cat "$WORK/docker/daemon.json")"
  "$DOCKER_CLI" info --format '{{json .RegistryConfig.Mirrors}}'
  if "$DOCKER_CLI" image inspect mirrortest:v1 >/dev/null 2>&1; then fail "mirrortest:v1 present before the pull"; fi
  local out
  out=$(D pull mirrortest:v1 2>&1) || { echo "$out"; fail "docker pull mirrortest:v1 failed"; }
  echo "$out"
  grep -q "Digest: $MIRROR_DIGEST" <<<"$out" || fail "docker pull did not report Digest: $MIRROR_DIGEST"
  grep -q 'Pull complete' <<<"$out" || fail "docker pull downloaded no layer"
  eq "image ID (the upstream image's config)" "$MIRROR_CONFIG" \
    "$("$DOCKER_CLI" image inspect --format '{{.Id}}' mirrortest:v1)"
  "$DOCKER_CLI" image inspect --format '{{json .RepoDigests}}' mirrortest:v1 |
    jq -e --arg d "mirrortest@$MIRROR_DIGEST" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks mirrortest@$MIRROR_DIGEST"
  # The mirror served it under the unprefixed name (dockerd resolves the tag with a HEAD,
  # then GETs the manifest by digest), and asked the upstream.
  mirror_access 'method="(HEAD|GET)" path="/v2/library/mirrortest/manifests/v1" status=200' ||
    fail "no request for /v2/library/mirrortest/manifests/v1 (200) in the mirror's access log"
  mirror_access "method=\"GET\" path=\"/v2/library/mirrortest/manifests/($MIRROR_DIGEST|v1)\" status=200" ||
    fail "no manifest GET (200) in the mirror's access log"
  mirror_access "method=\"GET\" path=\"/v2/library/mirrortest/blobs/$MIRROR_CONFIG\" status=200" ||
    fail "no GET of the config blob in the mirror's access log"
  grep -F '"GET /v2/library/mirrortest/manifests/v1 ' "$LOGS/mirror-upstream.out" ||
    fail "the upstream's access log has no GET of the manifest"
  # Stored under the docker.io namespace (tags/list is answered from local storage).
  REG_URL=$MIRROR_URL
  http GET /v2/docker.io/library/mirrortest/tags/list
  eq "mirror tags/list docker.io/library/mirrortest status" 200 "$S"
  eq "mirror tags/list docker.io/library/mirrortest" v1 "$(jq -r '.tags | join(" ")' "$B")"
  expect_blob docker.io/library/mirrortest "$MIRROR_CONFIG"
}

# containerd's hosts.toml mirror: requests to the mirror carry ?ns=upstream.test, which
# Origin maps to the mirror whose registry is "upstream.test" (namespace upstreamtest).
s_mirror_ctr_hosts_ns_pull() {
  need mirror-start-registries
  wait_containerd || fail "containerd did not start: $(tail -n 5 "$LOGS/containerd.log")"
  mirror_env
  local hosts=$WORK/ctr-hosts ref=upstream.test/library/mirrortest:v1
  mkdir -p "$hosts/upstream.test"
  cat >"$hosts/upstream.test/hosts.toml" <<TOML
server = "http://upstream.test"

[host."$MIRROR_URL"]
  capabilities = ["pull", "resolve"]
TOML
  cat "$hosts/upstream.test/hosts.toml"
  CTR mirror images pull --hosts-dir "$hosts" "$ref"
  eq "pulled target" "$MIRROR_DIGEST" "$(ctr_target mirror "$ref")"
  CTR mirror images check
  mirror_access 'path="/v2/library/mirrortest/manifests/v1\?ns=upstream\.test" status=200' ||
    fail "no tag request with ?ns=upstream.test (200) in the mirror's access log"
  mirror_access "method=\"GET\" path=\"/v2/library/mirrortest/manifests/($MIRROR_DIGEST|v1)\\?ns=upstream\\.test\" status=200" ||
    fail "no manifest GET with ?ns=upstream.test (200) in the mirror's access log"
  mirror_access "method=\"GET\" path=\"/v2/library/mirrortest/blobs/$MIRROR_CONFIG\\?ns=upstream\\.test\" status=200" ||
    fail "no config blob GET with ?ns=upstream.test (200) in the mirror's access log"
  # The mirror fetched the tag from the upstream under the upstream's name.
  grep -E '"(HEAD|GET) /v2/library/mirrortest/manifests/v1 ' "$LOGS/mirror-upstream.out" | tail -n 2
  REG_URL=$MIRROR_URL
  http GET /v2/upstreamtest/library/mirrortest/tags/list
  eq "mirror tags/list upstreamtest/library/mirrortest status" 200 "$S"
  eq "mirror tags/list upstreamtest/library/mirrortest" v1 "$(jq -r '.tags | join(" ")' "$B")"
  http GET /v2/_catalog
  cat "$B"; echo
  jq -e '.repositories | index("upstreamtest/library/mirrortest") != null' "$B" >/dev/null ||
    fail "upstreamtest/library/mirrortest not in the mirror's catalog"
}

# Mirrors are read-only by default: every write answers 405, however the mirror is named.
s_mirror_read_only() {
  need mirror-start-registries
  mirror_env
  REG_URL=$MIRROR_URL
  local p f=$MIRROR_LAYOUT/blobs/sha256/${MIRROR_DIGEST#sha256:}
  for p in /v2/library/mirror-ro/blobs/uploads/ /v2/docker.io/library/mirror-ro/blobs/uploads/ \
    '/v2/library/mirror-ro/blobs/uploads/?ns=upstream.test' /v2/upstreamtest/library/mirror-ro/blobs/uploads/; do
    http POST "$p" -H "Content-Length: 0"
    eq "POST $p status" 405 "$S"
    cat "$B"; echo
  done
  http PUT /v2/library/mirrortest/manifests/v2 -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$f"
  eq "PUT manifest into the mirror status" 405 "$S"
  http DELETE "/v2/docker.io/library/mirrortest/manifests/$MIRROR_DIGEST"
  eq "DELETE manifest in the mirror status" 405 "$S"
  expect_fail '405|method not allowed|read-only|unsupported' \
    SK copy "oci:$MIRROR_LAYOUT:v1" "docker://127.0.0.1:$MIRROR_PORT/library/mirror-ro:v1" --dest-tls-verify=false
  # No tag was written. (The repository may exist, without tags: a HEAD of a blob the
  # mirror holds under another name links it here, as skopeo's HEADs just did.)
  http GET /v2/docker.io/library/mirror-ro/tags/list
  cat "$B"; echo
  case "$S" in
    404) ;;
    200) eq "refused repository's tags" "" "$(jq -r '(.tags // []) | join(" ")' "$B")" ;;
    *) fail "refused repository's tags/list: status $S" ;;
  esac
  # The same push into the instance's local namespace works.
  SK copy "oci:$MIRROR_LAYOUT:v1" "docker://127.0.0.1:$MIRROR_PORT/local/mirror-ro:v1" --dest-tls-verify=false
  expect_manifest local/mirror-ro v1 "$MIRROR_DIGEST"
}

# The upstream stopped: the tag (stale after 1 s) cannot be revalidated; the cached one is
# served, with the cached blobs.
# Tag lists come from the upstream: a tag pushed only there is listed by skopeo through the
# mirror, under the unprefixed and the prefixed name.
s_mirror_list_tags() {
  need mirror-start-registries
  mirror_env
  SK copy "oci:$MIRROR_LAYOUT:v1" "docker://127.0.0.1:$MIRROR_UP_PORT/library/mirrortest:upstream-only" \
    --dest-tls-verify=false
  local out name
  for name in library/mirrortest docker.io/library/mirrortest; do
    out=$(SK list-tags --tls-verify=false "docker://127.0.0.1:$MIRROR_PORT/$name") ||
      fail "skopeo list-tags $name through the mirror failed"
    echo "$out"
    eq "tags of $name through the mirror" "upstream-only v1" "$(jq -r '.Tags | sort | join(" ")' <<<"$out")"
  done
  grep -F '"GET /v2/library/mirrortest/tags/list' "$LOGS/mirror-upstream.out" ||
    fail "the upstream's access log has no GET of the tag list"
}

s_mirror_docker_pull_upstream_down() {
  need mirror-docker-pull
  mirror_env
  local pid before after out
  pid=$(cat "$STATE/mirror-upstream.pid")
  # Not our child (started by an earlier step's subshell): stop_pid's wait fails, hence ||.
  stop_pid "$pid" "$WORK" || true
  if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
    fail "upstream (pid $pid) still runs"
  fi
  if upstream_ping; then fail "the upstream still answers"; fi
  echo "upstream (pid $pid) stopped"
  before=$(mirror_metric origin_mirror_stale_served_total)
  echo "origin_mirror_stale_served_total before: $before"
  D rmi mirrortest:v1
  if "$DOCKER_CLI" image inspect "$MIRROR_CONFIG" >/dev/null 2>&1; then fail "image $MIRROR_CONFIG still present after rmi"; fi
  sleep 1.5   # past tag_freshness
  out=$(D pull mirrortest:v1 2>&1) || { echo "$out"; fail "docker pull mirrortest:v1 (upstream down) failed"; }
  echo "$out"
  grep -q "Digest: $MIRROR_DIGEST" <<<"$out" || fail "docker pull did not report Digest: $MIRROR_DIGEST"
  grep -q 'Pull complete' <<<"$out" || fail "docker pull downloaded no layer"
  eq "image ID" "$MIRROR_CONFIG" "$("$DOCKER_CLI" image inspect --format '{{.Id}}' mirrortest:v1)"
  after=$(mirror_metric origin_mirror_stale_served_total)
  echo "origin_mirror_stale_served_total after: $after"
  if [ "$after" -lt 1 ] || [ "$after" -le "$before" ]; then
    fail "origin_mirror_stale_served_total did not grow ($before -> $after)"
  fi
  grep -F 'serving the cached tag' "$LOGS/origin-mirror.err" || fail "no stale-serving warning in the mirror's log"
}

# shellcheck source=interop/oidc.sh
. "$ROOT/scripts/interop/oidc.sh"

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
mkdir -p "$WORK/tmp" "$WORK/out"
NONCE="$(date +%s)-$$-$RANDOM"
setup_containers_conf
# selected NAME...: true when a step filter is unset or matches one of the names.
selected() {
  local n
  [ -z "$STEP_FILTER" ] && return 0
  for n in "$@"; do [[ $n =~ $STEP_FILTER ]] && return 0; done
  return 1
}
# The mirror phase's ports: dockerd reads registry-mirrors from daemon.json at start.
if [ "$TARGET" = origin ] && selected "${MIRROR_STEPS[@]}"; then
  if ! MIRROR_PORT=$(mirror_port) || ! MIRROR_UP_PORT=$(mirror_port "$MIRROR_PORT"); then
    preflight_fail mirror-ports "no free port for the mirror phase"
  fi
fi
# Daemons boot in the background while the registry starts and images are built.
start_dockerd
start_containerd
selected oras-push oras-pull oras-referrers tls-oras-creds && start_oras_install

echo "interop: target $TARGET, work dir $WORK"
if ! start_registry >"$LOGS/start-registry.log" 2>&1; then
  echo "FAIL start-registry"
  sed 's/^/    | /' "$LOGS/start-registry.log"
  echo "0 passed, 1 failed"
  exit 1
fi
cat "$LOGS/start-registry.log" >&2
PASSED=$((PASSED + 1))
echo "PASS start-registry"

# errexit applies only outside an || / if context, hence the separate status check.
(
  set -eEuo pipefail
  trap 'echo "error: line $LINENO: $BASH_COMMAND (exit $?)"' ERR
  build_images
) >"$LOGS/build-images.log" 2>&1
# shellcheck disable=SC2181
[ $? = 0 ] || {
  echo "FAIL build-images"
  tail -n 20 "$LOGS/build-images.log" | sed 's/^/    | /'
  echo "$PASSED passed, $((FAILED + 1)) failed"
  exit 1
}
# shellcheck disable=SC1091
. "$WORK/images.env"
PASSED=$((PASSED + 1))
echo "PASS build-images"

step registry-api-base s_registry_base
step tls-probe-rejected s_tls_probe
step curl-push-single s_curl_push_single
step curl-push-index s_curl_push_index
step curl-concurrent-uploads s_curl_concurrent_uploads
step skopeo-copy-single-in s_skopeo_single_in
step skopeo-copy-single-out s_skopeo_single_out
step skopeo-copy-index-in s_skopeo_index_in
step skopeo-copy-index-out s_skopeo_index_out
step skopeo-copy-between-repos s_skopeo_copy_between_repos
step skopeo-list-tags s_skopeo_list_tags
step skopeo-push-webhook s_skopeo_webhook
step curl-tags-list s_curl_tags_list
if [ "$TARGET" != distribution ]; then
  step curl-tags-pagination s_curl_tags_pagination
  step curl-referrers s_curl_referrers
fi
step curl-catalog s_curl_catalog
step skopeo-delete s_skopeo_delete
step curl-delete-manifest s_curl_delete
step podman-push s_podman_push
step podman-pull s_podman_pull
step podman-pull-index s_podman_pull_index
step podman-manifest-push s_podman_manifest_push
step docker-push s_docker_push
step docker-pull s_docker_pull
step docker-push-mount s_docker_push_mount
step docker-pull-index s_docker_pull_index
step ctr-push-single s_ctr_push_single
step ctr-pull-single s_ctr_pull_single
step ctr-push-index s_ctr_push_index
step ctr-pull-index s_ctr_pull_index

step oras-push s_oras_push
step oras-pull s_oras_pull
[ "$TARGET" != distribution ] && step oras-referrers s_oras_referrers

# Security phase: TLS, mTLS and Basic auth instances of Origin (see the header).
if [ "$TARGET" = origin ]; then
  EXTRA_REG_LOGS=("$LOGS/origin-tls.err" "$LOGS/origin-mtls.err" "$LOGS/origin-auth.err")
  if selected tls-pki tls-start-registries tls-skopeo-copy-in tls-skopeo-copy-out \
    tls-anonymous-denied tls-wrong-password-denied tls-known-identity-forbidden tls-podman-push \
    tls-podman-pull tls-oras-creds mtls-skopeo-push mtls-skopeo-pull mtls-no-client-cert-rejected \
    mtls-other-ca-rejected mtls-other-org-forbidden mtls-podman-push mtls-podman-pull \
    docker-login-push docker-login-pull docker-logout tls-registries-still-up; then
    STEP_FILTER_SAVED=$STEP_FILTER
    STEP_FILTER=   # the phase's setup always runs when any of its steps is selected
    step tls-pki s_tls_pki
    step tls-start-registries s_tls_start_registries
    STEP_FILTER=$STEP_FILTER_SAVED
  fi
  step tls-skopeo-copy-in s_tls_skopeo_in
  step tls-skopeo-copy-out s_tls_skopeo_out
  step tls-anonymous-denied s_tls_anonymous_denied
  step tls-wrong-password-denied s_tls_wrong_password
  step tls-known-identity-forbidden s_tls_known_identity_forbidden
  step tls-podman-push s_tls_podman_push
  step tls-podman-pull s_tls_podman_pull
  step tls-oras-creds s_tls_oras_creds
  step mtls-skopeo-push s_mtls_skopeo_push
  step mtls-skopeo-pull s_mtls_skopeo_pull
  step mtls-no-client-cert-rejected s_mtls_no_client_cert
  step mtls-other-ca-rejected s_mtls_other_ca
  step mtls-other-org-forbidden s_mtls_other_org
  step mtls-podman-push s_mtls_podman_push
  step mtls-podman-pull s_mtls_podman_pull
  step docker-login-push s_docker_login_push
  step docker-login-pull s_docker_login_pull
  step docker-logout s_docker_logout
  step tls-registries-still-up s_sec_registries_still_up
fi

# OIDC phase: tokens from an identity provider as credentials (see the header).
if [ "$TARGET" = origin ]; then
  EXTRA_REG_LOGS+=("$LOGS/origin-oidc.err")
  if selected oidc-start oidc-skopeo-push; then
    STEP_FILTER_SAVED=$STEP_FILTER
    STEP_FILTER=   # the phase's setup always runs when any of its steps is selected
    step oidc-start s_oidc_start
    STEP_FILTER=$STEP_FILTER_SAVED
  fi
  step oidc-skopeo-push s_oidc_skopeo_push
fi

# Pull-through cache phase: an Origin mirror of a distribution upstream (see the header).
if [ "$TARGET" = origin ]; then
  EXTRA_REG_LOGS+=("$LOGS/origin-mirror.err" "$LOGS/mirror-upstream.err")
  if selected "${MIRROR_STEPS[@]}"; then
    STEP_FILTER_SAVED=$STEP_FILTER
    STEP_FILTER=   # the phase's setup always runs when any of its steps is selected
    step mirror-start-registries s_mirror_start_registries
    STEP_FILTER=$STEP_FILTER_SAVED
  fi
  step mirror-docker-pull s_mirror_docker_pull
  step mirror-ctr-hosts-ns-pull s_mirror_ctr_hosts_ns_pull
  step mirror-read-only s_mirror_read_only
  step mirror-list-tags s_mirror_list_tags
  # Last: it stops the upstream.
  step mirror-docker-pull-upstream-down s_mirror_docker_pull_upstream_down
fi

# The registry must have survived all of it.
step registry-still-up registry_ping

echo "interop: $((SECONDS - T0))s" >&2
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
