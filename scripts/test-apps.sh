#!/usr/bin/env bash
# Installs the real third-party login apps the integration tests run behind the proxy
# (tests/apps/): Django (admin) into .test-deps/python, and the node_modules of the Express
# app and of Node-RED's editor with `npm ci`. Each step runs only when its install is missing
# or when its requirements.txt / package-lock.json changed since the last install (a sha256
# stamp under .test-deps/). Needs python3 + pip and node (18+) + npm.
# Tests then run `PYTHONPATH=.test-deps/python python3 tests/apps/django_admin.py ...`,
# `node tests/apps/express-login/app.js ...` and `node tests/apps/node-red/run.js ...`.
set -euo pipefail
cd "$(dirname "$0")/.."

deps=.test-deps
mkdir -p "$deps"

stamp_ok() { # stamp-file input-file
  [[ -f "$1" ]] && [[ "$(cat "$1")" == "$(sha256sum "$2" | cut -d' ' -f1)" ]]
}

req=tests/apps/requirements.txt
py_stamp="$deps/python.sha256"
if ! stamp_ok "$py_stamp" "$req" || [[ ! -d "$deps/python/django" ]]; then
  echo "test-apps: pip install -r $req into $deps/python"
  rm -rf "$deps/python" "$py_stamp"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$deps/python" -r "$req"
  sha256sum "$req" | cut -d' ' -f1 >"$py_stamp"
fi

npm_app() { # directory, a package its install must have
  local app="tests/apps/$1" stamp="$deps/$1.sha256"
  local lock="$app/package-lock.json"
  if ! stamp_ok "$stamp" "$lock" || [[ ! -d "$app/node_modules/$2" ]]; then
    echo "test-apps: npm ci in $app"
    rm -f "$stamp"
    (cd "$app" && npm ci --no-audit --no-fund --loglevel=error)
    sha256sum "$lock" | cut -d' ' -f1 >"$stamp"
  fi
}
npm_app express-login express
npm_app node-red node-red
npm_app oidc-provider oidc-provider
