# shellcheck shell=bash
# podman scenarios of scripts/interop.sh (sourced by it).

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
