# shellcheck shell=bash
# Pull-through cache phase of scripts/interop.sh (sourced by it; Origin only).

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
