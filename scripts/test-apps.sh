#!/usr/bin/env bash
# Installs the two real third-party login apps the integration tests run behind the proxy
# (tests/apps/): Django (admin) into .test-deps/python, and the Express app's node_modules
# with `npm ci`. Each step runs only when its install is missing or when
# tests/apps/requirements.txt / tests/apps/express-login/package-lock.json changed since the
# last install (a sha256 stamp under .test-deps/). Needs python3 + pip and node + npm.
# Tests then run `PYTHONPATH=.test-deps/python python3 tests/apps/django_admin.py ...` and
# `node tests/apps/express-login/app.js ...`.
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

app=tests/apps/express-login
lock="$app/package-lock.json"
node_stamp="$deps/express-login.sha256"
if ! stamp_ok "$node_stamp" "$lock" || [[ ! -d "$app/node_modules/express" ]]; then
  echo "test-apps: npm ci in $app"
  rm -f "$node_stamp"
  (cd "$app" && npm ci --no-audit --no-fund --loglevel=error)
  sha256sum "$lock" | cut -d' ' -f1 >"$node_stamp"
fi
