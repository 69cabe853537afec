# OIDC phase of scripts/interop.sh (sourced by it; Origin only): an identity provider made of
# a static discovery document and JWKS served by `python3 -m http.server` on 127.0.0.1, and
# RS256 tokens minted and signed by the openssl CLI (an implementation independent of the
# one Origin verifies with). One more Origin instance trusts that provider; its policy lets
# the `release` workflow of acme/app push to acme/app. skopeo pushes with the token as the
# password (--dest-creds x:$TOKEN, what CI actions do with docker login); another
# workflow's token is denied, a tampered one refused.
OIDC_DIR=$WORK/oidc
OIDC_AUDIENCE=origin-interop

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

# oidc_token CLAIMS-JSON: an RS256 JWT signed with $OIDC_DIR/key.pem.
oidc_token() {
  local header input
  header=$(printf '{"alg":"RS256","typ":"JWT","kid":"interop-1"}' | b64url)
  input="$header.$(printf '%s' "$1" | b64url)"
  printf '%s.%s' "$input" "$(printf '%s' "$input" | openssl dgst -sha256 -sign "$OIDC_DIR/key.pem" -binary | b64url)"
}

# oidc_claims WORKFLOW: a GitHub Actions-like claim set from our issuer, valid for 10 minutes.
oidc_claims() {
  local now
  now=$(date +%s)
  printf '{"iss":"%s","aud":"%s","sub":"repo:acme/app:ref:refs/heads/main","repository":"acme/app","ref":"refs/heads/main","workflow":"%s","iat":%s,"nbf":%s,"exp":%s}' \
    "$OIDC_ISSUER" "$OIDC_AUDIENCE" "$1" "$now" "$now" "$((now + 600))"
}

s_oidc_start() {
  mkdir -p "$OIDC_DIR/www/.well-known" "$OIDC_DIR/data"
  cd "$OIDC_DIR"
  openssl genrsa -out key.pem 2048
  local n pid port i
  n=$(openssl rsa -in key.pem -noout -modulus | sed 's/^Modulus=//' |
    python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))' | b64url)
  python3 -u -m http.server --bind 127.0.0.1 --directory "$OIDC_DIR/www" 0 \
    >"$LOGS/oidc-idp.out" 2>"$LOGS/oidc-idp.err" &
  pid=$!
  echo "$pid" >>"$STATE/bg.pids"
  for i in $(seq 1 100); do
    port=$(grep -o 'port [0-9]*' "$LOGS/oidc-idp.out" 2>/dev/null | head -n1 | sed 's/port //' || true)
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || fail "the identity provider did not start: $(cat "$LOGS/oidc-idp.err")"
  OIDC_ISSUER=http://127.0.0.1:$port
  printf '{"issuer":"%s","jwks_uri":"%s/jwks.json"}' "$OIDC_ISSUER" "$OIDC_ISSUER" \
    >www/.well-known/openid-configuration
  printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"interop-1","n":"%s","e":"AQAB"}]}' "$n" \
    >www/jwks.json
  cat >config.toml <<EOF
[server]
bind_address = "127.0.0.1"
port = 0

[storage.fs]
root_dir = "$OIDC_DIR/data"

[oidc.ci]
issuer = "$OIDC_ISSUER"
audience = "$OIDC_AUDIENCE"

[[repository]]
namespace = ""
policies = [
  'identity.oidc.provider == "ci" && identity.oidc.claims.repository == "acme/app" && identity.oidc.claims.workflow == "release" && request.namespace == "acme/app"',
]
EOF
  cat config.toml
  run "$ORIGIN_BIN" check-config -c config.toml
  # An absolute path: cleanup stops a step's server only if its command line names $WORK.
  spawn_origin origin-oidc "$OIDC_DIR/config.toml"
  echo "OIDC_ISSUER=$OIDC_ISSUER" >"$STATE/oidc.env"
  echo "OIDC_REG=127.0.0.1:$SPAWNED_PORT" >>"$STATE/oidc.env"
}

s_oidc_skopeo_push() {
  need oidc-start
  # shellcheck disable=SC1091
  . "$STATE/oidc.env"
  local token other forged
  token=$(oidc_token "$(oidc_claims release)")
  SK copy --dest-tls-verify=false --dest-creds "x:$token" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$OIDC_REG/acme/app:v1"
  REG=$OIDC_REG REG_URL=http://$OIDC_REG CURL_EXTRA=(-H "Authorization: Bearer $token")
  expect_manifest acme/app v1 "$SINGLE_DIGEST"
  # Another workflow of the same repository: authenticated, denied by the policy.
  other=$(oidc_token "$(oidc_claims lint)")
  expect_fail 'denied|403' SK copy --dest-tls-verify=false --dest-creds "x:$other" \
    "oci:$SINGLE_LAYOUT:v1" "docker://$OIDC_REG/acme/app:lint"
  # The release token's signature on the lint claims: refused as bad credentials.
  forged="${token%%.*}.$(printf '%s' "$(oidc_claims release | sed 's/acme\/app/acme\/other/g')" | b64url).${token##*.}"
  eq "forged token GET /v2/" 401 "$(code_of "http://$OIDC_REG/v2/" -H "Authorization: Bearer $forged")"
  eq "token GET /v2/" 200 "$(code_of "http://$OIDC_REG/v2/" -H "Authorization: Bearer $token")"
  # Tokens never reach the log.
  if grep -F -- "${token##*.}" "$LOGS/origin-oidc.err"; then fail "a token signature is in the log"; fi
}
