# shellcheck shell=bash
# curl scenarios of scripts/interop.sh (sourced by it): the registry API driven by hand.

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
