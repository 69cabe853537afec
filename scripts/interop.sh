#!/usr/bin/env bash
# Interoperability test: round-trips freshly built images through a registry with
# real clients (skopeo, podman, the Docker engine, containerd's ctr, oras-py) and curl.
# This is the one entry point (CI runs it whole); the scenarios live in scripts/interop/,
# one file per client or phase, and scripts/interop/README.md says how to run one.
#
#   scripts/interop.sh                      # everything, against Origin (target/release/origin)
#   scripts/interop.sh skopeo podman        # only those files' steps (and their prerequisites)
#   INTEROP_STEPS='^skopeo-delete$' scripts/interop.sh   # steps by name (a regex)
#   INTEROP_TARGET=distribution scripts/interop.sh   # against CNCF distribution (docker-registry)
#   INTEROP_TARGET=external INTEROP_REGISTRY=127.0.0.1:5000 scripts/interop.sh
#
# Arguments name scenario files: curl skopeo podman docker ctr oras security oidc mirror.
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

# The steps of each scenario file, with the steps of other files they need, as a regex.
steps_of() {
  case "$1" in
    curl) echo 'registry-api-base|tls-probe-rejected|curl-.*' ;;
    skopeo) echo 'skopeo-.*' ;;
    podman) echo 'curl-push-index|podman-.*' ;;
    docker) echo 'curl-push-index|docker-push|docker-pull|docker-push-mount|docker-pull-index' ;;
    ctr) echo 'ctr-.*' ;;
    oras) echo 'oras-.*' ;;
    security) echo 'tls-.*|mtls-.*|docker-login-.*|docker-logout' ;;
    oidc) echo 'oidc-.*' ;;
    mirror) echo 'mirror-.*' ;;
    *) return 1 ;;
  esac
}
if [ $# -gt 0 ]; then
  case "$1" in
    -h | --help) sed -n '2,/^set -uo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
  esac
  picked=
  for a in "$@"; do
    re=$(steps_of "$a") || { echo "interop: unknown scenario file '$a' (try --help)" >&2; exit 2; }
    picked+="${picked:+|}$re"
  done
  INTEROP_STEPS="^(${picked}|registry-still-up)\$"
  export INTEROP_STEPS
fi

# Shared set-up, then one file per client or phase (scripts/interop/README.md).
# shellcheck source=interop/lib.sh
. "$ROOT/scripts/interop/lib.sh"
# shellcheck source=interop/setup.sh
. "$ROOT/scripts/interop/setup.sh"
for f in curl skopeo podman docker ctr oras security oidc mirror; do
  # shellcheck source=/dev/null
  . "$ROOT/scripts/interop/$f.sh"
done

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
