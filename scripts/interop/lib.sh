# shellcheck shell=bash
# Shared set-up of scripts/interop.sh, part one (sourced by it before setup.sh and the
# scenario files): settings, the temp dir and cleanup, package installs, the step runner,
# the curl helpers and the test images. Expects ROOT (the repository) and TARGET.

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
