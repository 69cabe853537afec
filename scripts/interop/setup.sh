# shellcheck shell=bash
# Shared set-up of scripts/interop.sh, part two (sourced after lib.sh): the registry under
# test (Origin, distribution or an external one), the clients' environments (podman and
# skopeo config, the own dockerd and containerd instances, all state under $WORK) and the
# client wrappers the scenario files use (SK, PODMAN, D, CTR).

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
# Client wrappers (used by several scenario files)
# ---------------------------------------------------------------------------------------
SK() { run skopeo --policy "$POLICY" "$@"; }
PODMAN() { run podman --log-level=error "$@"; }
D() { run "$DOCKER_CLI" "$@"; }
CTR() { # CTR NAMESPACE ARGS...
  local ns=$1
  shift
  run ctr --address "$CTR_SOCK" --namespace "$ns" "$@"
}
ctr_target() { # ctr_target NAMESPACE REF: the image's target digest
  ctr --address "$CTR_SOCK" --namespace "$1" images ls | awk -v r="$2" '$1==r {print $3}'
}
# The token Origin signs its webhook deliveries with (skopeo.sh checks the HMAC).
WEBHOOK_TOKEN=interop-webhook-token
