#!/usr/bin/env bash
# Builds a release of this commit into target/release-artifacts (ORIGIN_RELEASE_OUT):
#   origin-<version>-linux-<arch>.tar.gz   the static binary (stripped), the README, the
#                                          changelog, config.example.toml, the systemd unit
#   origin-<version>.oci.tar               the container image (scripts/image.sh)
#   SHA256SUMS                             `sha256sum -c SHA256SUMS` checks the two
# ORIGIN_BIN=path uses an already-built binary instead of building the static one.
# Reproducible like the image: the commit's date on every file, sorted entries, no owners.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD 2>/dev/null || echo 0)}
out=${ORIGIN_RELEASE_OUT:-target/release-artifacts}
image_out="$out/image"

ORIGIN_IMAGE_OUT="$image_out" scripts/image.sh
# The binary that went into the image (the one built for this machine's architecture).
target_dir=${CARGO_TARGET_DIR:-target}
bin=${ORIGIN_BIN:-$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release/origin}
arch=$(python3 -c 'import sys; m=open(sys.argv[1],"rb").read(20)[18]; print({62:"amd64",183:"arm64"}[m])' "$bin")

name="origin-$version-linux-$arch"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
cp "$bin" "$stage/$name/origin"
strip --strip-all "$stage/$name/origin"
cp README.md CHANGELOG.md config.example.toml scripts/origin.service "$stage/$name/"
chmod 0755 "$stage/$name/origin"
chmod 0644 "$stage/$name"/*.md "$stage/$name/config.example.toml" "$stage/$name/origin.service"
mkdir -p "$out"
tar -C "$stage" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -cf - "$name" | gzip -9 -n > "$out/$name.tar.gz"
cp "$image_out/origin-$version.oci.tar" "$out/"
(cd "$out" && sha256sum "$name.tar.gz" "origin-$version.oci.tar" > SHA256SUMS)
ls -l "$out"
cat "$out/SHA256SUMS"
