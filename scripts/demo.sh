#!/usr/bin/env bash
# README command 1: installs build dependencies, builds, and runs `gaitkeeper demo` — the
# bundled legacy app with gaitkeeper in front of it, state under ./gaitkeeper-demo.
# Extra arguments go to `gaitkeeper demo` (e.g. --port 8081).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bins
# Wherever cargo puts its output (CARGO_TARGET_DIR, build.target-dir, or target/).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target/release/gaitkeeper" demo "$@"
