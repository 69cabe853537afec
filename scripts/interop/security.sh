# shellcheck shell=bash
# Security phase of scripts/interop.sh (sourced by it; Origin only): TLS, mTLS, Basic auth
# and policies, with skopeo, podman, docker and oras-py.

# ---------------------------------------------------------------------------------------
# Security phase (Origin only): TLS, mTLS, Basic auth, policies
# ---------------------------------------------------------------------------------------
PKI=$WORK/pki
ALICE_PASSWORD=secret
BOB_PASSWORD='bob-secret'
SEC_POLICIES="['identity.username == \"alice\"', '\"ci\" in identity.certificate.organizations']"

# pki_key FILE; pki_ca NAME SUBJECT; pki_leaf NAME CA SUBJECT EXTENSIONS (printf %b text)
pki_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
pki_ca() {
  pki_key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days 2 -sha256 -out "$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
pki_leaf() {
  pki_key "$1.key"
  openssl req -new -key "$1.key" -subj "$3" -out "$1.csr"
  printf '%b' "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 -sha256 \
    -extfile "$1.ext" -out "$1.crt"
}

s_tls_pki() {
  mkdir -p "$PKI"
  cd "$PKI"
  pki_ca ca "/CN=origin interop CA $NONCE"
  pki_ca other-ca "/CN=origin interop other CA $NONCE"
  pki_leaf server ca "/CN=127.0.0.1" \
    'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n'
  pki_leaf client ca "/O=ci/CN=ci-bot" 'extendedKeyUsage=clientAuth\n'
  pki_leaf other-client other-ca "/O=ci/CN=ci-bot" 'extendedKeyUsage=clientAuth\n'
  # Same CA, another organization: authenticated, but no policy allows it.
  pki_leaf dev-client ca "/O=dev/CN=dev-bot" 'extendedKeyUsage=clientAuth\n'
  openssl verify -CAfile ca.crt server.crt client.crt dev-client.crt
  if openssl verify -CAfile ca.crt other-client.crt; then fail "other-client.crt verifies against ca.crt"; fi
  openssl x509 -in server.crt -noout -subject -ext subjectAltName
  local c
  for c in client other-client dev-client; do openssl x509 -in "$c.crt" -noout -subject -issuer; done
  # containers/image certificate directories: *.crt are CAs, *.cert + *.key a client pair.
  mkdir -p certs-ca certs-client certs-other-ca certs-dev
  cp ca.crt certs-ca/
  for c in client:certs-client other-client:certs-other-ca dev-client:certs-dev; do
    cp ca.crt "${c#*:}/ca.crt"
    cp "${c%%:*}.crt" "${c#*:}/client.cert"
    cp "${c%%:*}.key" "${c#*:}/client.key"
  done
  ls -R "$PKI"/certs-*
}

# sec_config NAME MODE (plain|tls|mtls) ALICE_HASH BOB_HASH: an instance's config file.
sec_config() {
  local name=$1 mode=$2 dir=$WORK/$1
  mkdir -p "$dir/data"
  {
    printf '[server]\nbind_address = "127.0.0.1"\nport = 0\n\n'
    if [ "$mode" != plain ]; then
      printf '[server.tls]\nserver_certificate_bundle = "%s"\nserver_private_key = "%s"\n' \
        "$PKI/server.crt" "$PKI/server.key"
      [ "$mode" = mtls ] && printf 'client_ca_bundle = "%s"\nclient_certificate = "required"\n' "$PKI/ca.crt"
      echo
    fi
    printf '[storage.fs]\nroot_dir = "%s"\n\n' "$dir/data"
    # The mTLS instance authenticates by certificate only (no Basic identities).
    if [ "$mode" != mtls ]; then
      printf '[identity.alice]\nusername = "alice"\npassword = "%s"\n\n' "$3"
      printf '[identity.bob]\nusername = "bob"\npassword = "%s"\n\n' "$4"
    fi
    printf '[[repository]]\nnamespace = ""\npolicy_default_allow = false\npolicies = %s\n' "$SEC_POLICIES"
  } >"$dir/config.toml"
  cat "$dir/config.toml"
  run "$ORIGIN_BIN" check-config -c "$dir/config.toml"
}
# code_of URL CURL-ARGS...: the HTTP status of a GET (000 when no HTTP answer).
code_of() {
  local url=$1
  shift
  curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@" "$url" || true
}
answers() { [ "$(code_of "$@")" != 000 ]; } # answers URL CURL-ARGS...: any HTTP answer

s_tls_start_registries() {
  need tls-pki
  local alice bob name mode
  alice=$(printf '%s' "$ALICE_PASSWORD" | "$ORIGIN_BIN" hash-password)
  bob=$(printf '%s' "$BOB_PASSWORD" | "$ORIGIN_BIN" hash-password)
  : >"$STATE/sec.env.tmp"
  for name in origin-tls:tls origin-mtls:mtls origin-auth:plain; do
    mode=${name#*:}
    name=${name%%:*}
    sec_config "$name" "$mode" "$alice" "$bob"
    spawn_origin "$name" "$WORK/$name/config.toml"
    grep -m1 'origin listening' "$LOGS/$name.err"
    echo "$(tr a-z- A-Z_ <<<"${name#origin-}")_REG=127.0.0.1:$SPAWNED_PORT" >>"$STATE/sec.env.tmp"
  done
  cat "$STATE/sec.env.tmp"
  # shellcheck disable=SC1091
  . "$STATE/sec.env.tmp"
  local ca=(--cacert "$PKI/ca.crt") cert=(--cert "$PKI/client.crt" --key "$PKI/client.key")
  wait_until 10 answers "https://$TLS_REG/v2/" "${ca[@]}" || fail "TLS instance does not answer"
  eq "TLS: anonymous GET /v2/" 401 "$(code_of "https://$TLS_REG/v2/" "${ca[@]}")"
  eq "TLS: alice GET /v2/" 200 "$(code_of "https://$TLS_REG/v2/" "${ca[@]}" -u "alice:$ALICE_PASSWORD")"
  wait_until 10 answers "https://$MTLS_REG/v2/" "${ca[@]}" "${cert[@]}" || fail "mTLS instance does not answer"
  eq "mTLS: ci-bot GET /v2/" 200 "$(code_of "https://$MTLS_REG/v2/" "${ca[@]}" "${cert[@]}")"
  wait_until 10 answers "http://$AUTH_REG/v2/" || fail "plain-HTTP auth instance does not answer"
  eq "auth: anonymous GET /v2/" 401 "$(code_of "http://$AUTH_REG/v2/")"
  eq "auth: alice GET /v2/" 200 "$(code_of "http://$AUTH_REG/v2/" -u "alice:$ALICE_PASSWORD")"
  mv "$STATE/sec.env.tmp" "$STATE/sec.env"
}

# use_instance tls|mtls|auth [anonymous]: point REG, REG_URL and the curl helpers at a
# security-phase instance, as alice (tls, auth) or ci-bot's certificate (mtls).
use_instance() {
  need tls-start-registries
  # shellcheck disable=SC1091
  . "$STATE/sec.env"
  case $1 in
    tls) REG=$TLS_REG REG_URL=https://$TLS_REG CURL_EXTRA=(--cacert "$PKI/ca.crt" -u "alice:$ALICE_PASSWORD") ;;
    mtls) REG=$MTLS_REG REG_URL=https://$MTLS_REG
      CURL_EXTRA=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key") ;;
    auth) REG=$AUTH_REG REG_URL=http://$AUTH_REG CURL_EXTRA=(-u "alice:$ALICE_PASSWORD") ;;
  esac
  if [ "${2:-}" = anonymous ]; then CURL_EXTRA=("${CURL_EXTRA[@]:0:2}"); [ "$1" = auth ] && CURL_EXTRA=(); fi
  echo "instance $1 at $REG_URL"
}
# expect_fail PATTERN CMD...: CMD must fail, its output matching PATTERN (grep -E -i).
expect_fail() {
  local pattern=$1 out
  shift
  if out=$("$@" 2>&1); then echo "$out"; fail "succeeded, should have failed: $*"; fi
  echo "$out"
  grep -qiE -- "$pattern" <<<"$out" || fail "failed, but the output does not match /$pattern/"
  echo "ok: failed as expected (/$pattern/)"
}
# check_oci_out DIR DIGEST: a pulled single-image layout holds DIGEST and its blobs, intact.
check_oci_out() {
  eq "pulled manifest digest" "$2" "$(jq -r '.manifests[0].digest' "$1/index.json")"
  eq "pulled manifest bytes" "$2" "$(sha256_of "$1/blobs/sha256/${2#sha256:}")"
  local d
  for d in $(jq -r '.config.digest, .layers[].digest' "$1/blobs/sha256/${2#sha256:}"); do
    eq "pulled blob" "$d" "$(sha256_of "$1/blobs/sha256/${d#sha256:}")"
  done
}

s_tls_skopeo_in() {
  use_instance tls
  SK copy --dest-cert-dir "$PKI/certs-ca" --dest-creds "alice:$ALICE_PASSWORD" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-skopeo:v1"
  expect_manifest interop/tls-skopeo v1 "$SINGLE_DIGEST"
  # The certificate's DNS name too.
  local got
  got=$(SK inspect --raw --cert-dir "$PKI/certs-ca" --creds "alice:$ALICE_PASSWORD" \
    "docker://localhost:${REG##*:}/interop/tls-skopeo:v1" | sha256sum | cut -d' ' -f1)
  eq "skopeo inspect --raw via localhost" "$SINGLE_DIGEST" "sha256:$got"
}

s_tls_skopeo_out() {
  need tls-skopeo-copy-in
  use_instance tls
  local out=$WORK/out/tls-skopeo
  SK copy --src-cert-dir "$PKI/certs-ca" --src-creds "alice:$ALICE_PASSWORD" \
    "docker://$REG/interop/tls-skopeo:v1" "oci:$out:v1"
  check_oci_out "$out" "$SINGLE_DIGEST"
}

# Origin rate-limits failed Basic logins to 10 a minute per client address (all clients
# here are 127.0.0.1; the limit then answers 429 even to alice), and containers/image
# clients without credentials answer a Basic challenge with empty ones ("Basic Og==",
# which fail): the steps below cause about 7 failures on the TLS instance; keep it so.
s_tls_anonymous_denied() {
  use_instance tls anonymous
  http GET /v2/
  eq "anonymous GET /v2/ status" 401 "$S"
  local wa
  wa=$(header "$H" WWW-Authenticate)
  echo "WWW-Authenticate: $wa"
  [[ $wa == 'Basic realm="origin"'* ]] || fail "WWW-Authenticate '$wa' is not Basic realm=\"origin\""
  http GET /v2/interop/tls-skopeo/manifests/v1 -H "Accept: $ACCEPT_ALL"
  eq "anonymous GET manifest status" 401 "$S"
  eq "anonymous GET manifest error code" UNAUTHORIZED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'unauthorized|authentication required|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --no-creds "docker://$REG/interop/tls-skopeo:v1"
  expect_fail 'unauthorized|authentication required|401' \
    SK copy --dest-cert-dir "$PKI/certs-ca" --dest-no-creds "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-anonymous:v1"
  # No TLS at all: the client does not trust the server's certificate.
  expect_fail 'x509|certificate' \
    SK inspect --raw --creds "alice:$ALICE_PASSWORD" "docker://$REG/interop/tls-skopeo:v1"
}

s_tls_wrong_password() {
  use_instance tls anonymous
  http GET /v2/ -u alice:wrong-password
  eq "wrong password GET /v2/ status" 401 "$S"
  cat "$B"; echo
  [[ $(header "$H" WWW-Authenticate) == Basic* ]] || fail "401 without a Basic challenge"
  expect_fail 'invalid username or password|unauthorized|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --creds alice:wrong-password "docker://$REG/interop/tls-skopeo:v1"
  expect_fail 'invalid username or password|unauthorized|401' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" --creds nobody:secret "docker://$REG/interop/tls-skopeo:v1"
}

s_tls_known_identity_forbidden() {
  use_instance tls anonymous
  http GET /v2/ -u "bob:$BOB_PASSWORD"
  eq "bob GET /v2/ status (any authenticated caller)" 200 "$S"
  http GET /v2/interop/tls-skopeo/manifests/v1 -u "bob:$BOB_PASSWORD" -H "Accept: $ACCEPT_ALL"
  eq "bob GET manifest status" 403 "$S"
  eq "bob GET manifest error code" DENIED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'denied|403' \
    SK copy --dest-cert-dir "$PKI/certs-ca" --dest-creds "bob:$BOB_PASSWORD" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/tls-bob:v1"
  use_instance tls
  expect_manifest_absent interop/tls-bob v1
}

s_tls_podman_push() {
  use_instance tls
  printf '%s' "$ALICE_PASSWORD" | PODMAN login --cert-dir "$PKI/certs-ca" -u alice --password-stdin "$REG"
  jq -e --arg r "$REG" '.auths[$r].auth' "$REGISTRY_AUTH_FILE" >/dev/null || fail "no auth for $REG in $REGISTRY_AUTH_FILE"
  SK copy "oci:$SINGLE_LAYOUT:v1" "containers-storage:localhost/interop/tls-podman-local:v1"
  PODMAN tag localhost/interop/tls-podman-local:v1 "$REG/interop/tls-podman:v1"
  PODMAN push --cert-dir "$PKI/certs-ca" --digestfile "$WORK/tls-podman.digest" "$REG/interop/tls-podman:v1"
  local pushed
  pushed=$(cat "$WORK/tls-podman.digest")
  echo "podman pushed $pushed"
  expect_manifest interop/tls-podman v1 "$pushed"
  echo "$pushed" >"$STATE/tls-podman.digest"
}

s_tls_podman_pull() {
  need tls-podman-push
  use_instance tls
  local pushed
  pushed=$(cat "$STATE/tls-podman.digest")
  PODMAN rmi -f localhost/interop/tls-podman-local:v1 "$REG/interop/tls-podman:v1"
  PODMAN pull --cert-dir "$PKI/certs-ca" "$REG/interop/tls-podman:v1"
  eq "podman image Digest" "$pushed" "$(podman image inspect --format '{{.Digest}}' "$REG/interop/tls-podman:v1")"
  podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/tls-podman:v1" |
    jq -e --arg d "$REG/interop/tls-podman@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/tls-podman@$pushed"
  PODMAN logout "$REG"
  expect_fail 'unauthorized|authentication required|401' \
    PODMAN pull --cert-dir "$PKI/certs-ca" "$REG/interop/tls-podman@$pushed"
}

s_mtls_skopeo_push() {
  use_instance mtls
  SK copy --dest-cert-dir "$PKI/certs-client" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-skopeo:v1"
  expect_manifest interop/mtls-skopeo v1 "$SINGLE_DIGEST"
}

s_mtls_skopeo_pull() {
  need mtls-skopeo-push
  use_instance mtls
  local out=$WORK/out/mtls-skopeo
  SK copy --src-cert-dir "$PKI/certs-client" "docker://$REG/interop/mtls-skopeo:v1" "oci:$out:v1"
  check_oci_out "$out" "$SINGLE_DIGEST"
}

s_mtls_no_client_cert() {
  use_instance mtls
  local rc=0
  curl -sS --max-time 10 -o /dev/null --cacert "$PKI/ca.crt" "$REG_URL/v2/" || rc=$?
  echo "curl without a client certificate: exit $rc"
  [ "$rc" != 0 ] || fail "an HTTP answer without a client certificate"
  expect_fail 'certificate|tls|handshake' \
    SK inspect --raw --cert-dir "$PKI/certs-ca" "docker://$REG/interop/mtls-skopeo:v1"
  expect_fail 'certificate|tls|handshake' \
    SK copy --dest-cert-dir "$PKI/certs-ca" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-anonymous:v1"
}

s_mtls_other_ca() {
  use_instance mtls
  local rc=0
  curl -sS --max-time 10 -o /dev/null --cacert "$PKI/ca.crt" --cert "$PKI/other-client.crt" \
    --key "$PKI/other-client.key" "$REG_URL/v2/" || rc=$?
  echo "curl with the other CA's client certificate: exit $rc"
  [ "$rc" != 0 ] || fail "an HTTP answer with a client certificate from an unknown CA"
  expect_fail 'certificate|tls|handshake' \
    SK inspect --raw --cert-dir "$PKI/certs-other-ca" "docker://$REG/interop/mtls-skopeo:v1"
  expect_fail 'certificate|tls|handshake' \
    SK copy --dest-cert-dir "$PKI/certs-other-ca" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-other:v1"
}

# A valid certificate (same CA) of another organization: authenticated, denied by policy.
s_mtls_other_org() {
  use_instance mtls
  CURL_EXTRA=(--cacert "$PKI/ca.crt" --cert "$PKI/dev-client.crt" --key "$PKI/dev-client.key")
  http GET /v2/
  eq "O=dev GET /v2/ status (any authenticated caller)" 200 "$S"
  http GET /v2/interop/mtls-skopeo/manifests/v1 -H "Accept: $ACCEPT_ALL"
  eq "O=dev GET manifest status" 403 "$S"
  eq "O=dev GET manifest error code" DENIED "$(jq -r '.errors[0].code' "$B")"
  expect_fail 'denied|403' \
    SK copy --dest-cert-dir "$PKI/certs-dev" "oci:$SINGLE_LAYOUT:v1" "docker://$REG/interop/mtls-dev:v1"
}

s_mtls_podman_push() {
  use_instance mtls
  SK copy "oci:$SINGLE_LAYOUT:v1" "containers-storage:localhost/interop/mtls-podman-local:v1"
  PODMAN tag localhost/interop/mtls-podman-local:v1 "$REG/interop/mtls-podman:v1"
  PODMAN push --cert-dir "$PKI/certs-client" --digestfile "$WORK/mtls-podman.digest" "$REG/interop/mtls-podman:v1"
  local pushed
  pushed=$(cat "$WORK/mtls-podman.digest")
  echo "podman pushed $pushed"
  expect_manifest interop/mtls-podman v1 "$pushed"
  echo "$pushed" >"$STATE/mtls-podman.digest"
}

s_mtls_podman_pull() {
  need mtls-podman-push
  use_instance mtls
  local pushed
  pushed=$(cat "$STATE/mtls-podman.digest")
  PODMAN rmi -f localhost/interop/mtls-podman-local:v1 "$REG/interop/mtls-podman:v1"
  PODMAN pull --cert-dir "$PKI/certs-client" "$REG/interop/mtls-podman:v1"
  eq "podman image Digest" "$pushed" "$(podman image inspect --format '{{.Digest}}' "$REG/interop/mtls-podman:v1")"
  podman image inspect --format '{{json .RepoDigests}}' "$REG/interop/mtls-podman:v1" |
    jq -e --arg d "$REG/interop/mtls-podman@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/mtls-podman@$pushed"
}

# oras-py over TLS with Basic auth (its "basic" backend) and a chunked (PATCH) upload.
s_tls_oras_creds() {
  use_instance tls
  local f=$WORK/tmp/oras-tls/artifact.txt out digest
  mkdir -p "$(dirname "$f")" "$WORK/out/oras-tls"
  { echo "oras tls artifact $NONCE"; head -c 60000 /dev/urandom | base64; } >"$f"
  out=$(ORAS push "$REG" interop/tls-oras artifact "$f" --ca "$PKI/ca.crt" --user alice \
    --password "$ALICE_PASSWORD" --artifact-type "$ORAS_ARTIFACT_TYPE" --chunk-size 32768)
  echo "$out"
  digest=$(jq -r .digest <<<"$out")
  expect_manifest interop/tls-oras artifact "$digest"
  expect_blob interop/tls-oras "$(sha256_of "$f")"
  ORAS pull "$REG" interop/tls-oras artifact "$WORK/out/oras-tls" --ca "$PKI/ca.crt" --user alice \
    --password "$ALICE_PASSWORD"
  cmp "$f" "$WORK/out/oras-tls/artifact.txt" || fail "pulled file differs"
}

s_docker_login_push() {
  wait_dockerd || fail "dockerd did not start: $(tail -n 5 "$LOGS/dockerd.log")"
  use_instance auth
  # Before login: denied.
  expect_fail 'unauthorized|authentication required|no basic auth credentials' \
    D pull "$REG/interop/docker-auth:v1"
  printf '%s' "$ALICE_PASSWORD" | D login -u alice --password-stdin "$REG"
  jq -e --arg r "$REG" '.auths[$r].auth' "$DOCKER_CONFIG/config.json" >/dev/null ||
    fail "no auth for $REG in $DOCKER_CONFIG/config.json"
  D load -i "$SINGLE_DOCKER_TAR"
  D tag interop/docker-local:v1 "$REG/interop/docker-auth:v1"
  local out pushed
  out=$(D push "$REG/interop/docker-auth:v1" 2>&1) || { echo "$out"; fail "docker push failed"; }
  echo "$out"
  pushed=$(grep -o 'digest: sha256:[0-9a-f]\{64\}' <<<"$out" | tail -n1 | cut -d' ' -f2)
  [ -n "$pushed" ] || fail "no digest in docker push output"
  expect_manifest interop/docker-auth v1 "$pushed"
  echo "$pushed" >"$STATE/docker-auth.digest"
}

s_docker_login_pull() {
  need docker-login-push
  use_instance auth
  local pushed id out
  pushed=$(cat "$STATE/docker-auth.digest")
  id=$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker-auth:v1")
  # Every tag of that image (earlier steps tagged it for the main registry too).
  D rmi -f "$id"
  if "$DOCKER_CLI" image inspect "$id" >/dev/null 2>&1; then fail "image $id still present after rmi"; fi
  out=$(D pull "$REG/interop/docker-auth:v1" 2>&1) || { echo "$out"; fail "docker pull failed"; }
  echo "$out"
  grep -q "Digest: $pushed" <<<"$out" || fail "docker pull did not report Digest: $pushed"
  "$DOCKER_CLI" image inspect --format '{{json .RepoDigests}}' "$REG/interop/docker-auth:v1" |
    jq -e --arg d "$REG/interop/docker-auth@$pushed" 'index($d) != null' >/dev/null ||
    fail "RepoDigests lacks $REG/interop/docker-auth@$pushed"
  eq "image ID after pull" "$id" "$("$DOCKER_CLI" image inspect --format '{{.Id}}' "$REG/interop/docker-auth:v1")"
}

s_docker_logout() {
  need docker-login-push
  use_instance auth
  D logout "$REG"
  if jq -e --arg r "$REG" '.auths[$r]' "$DOCKER_CONFIG/config.json" >/dev/null 2>&1; then
    fail "$REG still in $DOCKER_CONFIG/config.json after logout"
  fi
  expect_fail 'unauthorized|authentication required|no basic auth credentials' \
    D pull "$REG/interop/docker-auth:v1"
}

s_sec_registries_still_up() {
  use_instance tls
  eq "TLS instance GET /v2/" 200 "$(code_of "https://$TLS_REG/v2/" "${CURL_EXTRA[@]}")"
  use_instance mtls
  eq "mTLS instance GET /v2/" 200 "$(code_of "https://$MTLS_REG/v2/" "${CURL_EXTRA[@]}")"
  use_instance auth
  eq "auth instance GET /v2/" 200 "$(code_of "http://$AUTH_REG/v2/" "${CURL_EXTRA[@]}")"
}
