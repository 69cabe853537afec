# shellcheck shell=bash
# skopeo scenarios of scripts/interop.sh (sourced by it).

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
