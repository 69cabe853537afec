# shellcheck shell=bash
# Docker engine scenarios of scripts/interop.sh (sourced by it; dockerd is started by lib.sh).

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
