#!/usr/bin/env bash
# README command 2: installs test dependencies and runs the whole test suite against real
# components (the real binary, real sockets on 127.0.0.1, headless Chromium, PostgreSQL when
# GAITKEEPER_TEST_POSTGRES_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cargo test --all-targets --locked "$@"
