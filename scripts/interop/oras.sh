# shellcheck shell=bash
# oras-py scenarios of scripts/interop.sh (sourced by it).

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
