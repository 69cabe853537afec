#!/bin/sh
# Regenerates the README's UI pictures (docs/images/ui-*.png) with the browser test:
# a real Origin, real pushed content, headless Chromium at 1280 px and 390 px.
# Needs Debian's chromium and chromium-driver, and selenium from PyPI
# (python3 -m venv /work/venv-ui && /work/venv-ui/bin/pip install selenium).
#   scripts/ui_screenshots.sh            # builds and uses target/release/origin
#   ORIGIN_BIN=target/debug/origin PYTHON=python3 scripts/ui_screenshots.sh
set -eu
cd "$(dirname "$0")/.."
if [ -z "${ORIGIN_BIN:-}" ]; then
    cargo build --release --bin origin
    ORIGIN_BIN=target/release/origin
fi
PYTHON=${PYTHON:-/work/venv-ui/bin/python}
SE_OFFLINE=true SE_AVOID_STATS=true ORIGIN_BIN="$ORIGIN_BIN" "$PYTHON" tests/ui_browser.py --screenshots
ls -l docs/images/ui-*.png
