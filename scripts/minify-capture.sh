#!/usr/bin/env bash
# Regenerates injector/capture.min.js — the copy gaitkeeper serves — from injector/capture.js
# with terser (from the npm registry). Run it after every change to capture.js; a unit test
# fails while the minified copy is stale (it records the source's SHA-256 in its first line).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${TMPDIR:-/tmp}/gaitkeeper-terser"
if [[ ! -x "$TOOLS/node_modules/.bin/terser" ]]; then
  mkdir -p "$TOOLS"
  (cd "$TOOLS" && npm init -y >/dev/null && npm install --silent terser@5)
fi
SUM=$(sha256sum injector/capture.js | cut -d' ' -f1)
{
  echo "/*! gaitkeeper capture.js sha256:$SUM */"
  "$TOOLS/node_modules/.bin/terser" injector/capture.js --compress passes=3,pure_getters=true --mangle --ecma 2020 --comments false
} > injector/capture.min.js
echo "injector/capture.min.js: $(wc -c < injector/capture.min.js) bytes, $(gzip -9 -c injector/capture.min.js | wc -c) gzipped"
