#!/usr/bin/env bash
# Builds Origin's OCI image from scratch: no base image, no Docker, no registry to pull from.
#
#   scripts/image.sh                  static release binary for this machine's architecture
#   ORIGIN_BIN=path scripts/image.sh  an already-built binary (static, or dynamic: then the
#                                     shared libraries it loads go into the image with it)
#   ORIGIN_TARGETS="x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu" scripts/image.sh
#                                     one image index for amd64 and arm64 (README "Deploy")
#
# Writes target/image/oci (an OCI image layout) and target/image/origin-<version>.oci.tar
# (its OCI archive: `skopeo copy oci-archive:target/image/origin-<version>.oci.tar
# docker://registry.example/origin:<version>`). ORIGIN_IMAGE_OUT changes the folder.
#
# Reproducible: the build date is the commit's (SOURCE_DATE_EPOCH), paths are remapped in
# the binary, and scripts/oci_image.py writes sorted entries with fixed times and owners and
# a gzip header without name or time; two runs on one commit give the same digests.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
revision=${ORIGIN_GIT_REVISION:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
export ORIGIN_GIT_REVISION="$revision"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD 2>/dev/null || echo 0)}
# The org.opencontainers.image.source label: ORIGIN_SOURCE_URL, else Cargo.toml's repository.
repository=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -1)
source_url=${ORIGIN_SOURCE_URL:-${repository:-unknown}}
out=${ORIGIN_IMAGE_OUT:-target/image}
target_dir=${CARGO_TARGET_DIR:-target}

binaries=()
if [ -n "${ORIGIN_BIN:-}" ]; then
  binaries=("$ORIGIN_BIN")
else
  # glibc linked statically (crt-static): one file, no loader, no libraries to ship.
  # --target keeps RUSTFLAGS off build scripts and proc macros, which must stay dynamic.
  targets=${ORIGIN_TARGETS:-$(rustc -vV | sed -n 's/^host: //p')}
  for t in $targets; do
    RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$PWD=/build/origin --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo ${RUSTFLAGS:-}" \
      cargo build --release --locked --bin origin --target "$t"
    binaries+=("$target_dir/$t/release/origin")
  done
fi

args=()
for b in "${binaries[@]}"; do args+=(--binary "$b"); done
mkdir -p "$out"
python3 scripts/oci_image.py "${args[@]}" --version "$version" --revision "$revision" \
  --source "$source_url" --out "$out/oci" --archive "$out/origin-$version.oci.tar"
