# shellcheck shell=bash
# containerd (ctr) scenarios of scripts/interop.sh (sourced by it; containerd is started by lib.sh).

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
