#!/usr/bin/env bash
# README command 2: installs test dependencies and runs the whole test suite against real
# components (the real binary, real sockets on 127.0.0.1, headless Chromium, real third-party
# apps — Django's admin from PyPI, an Express app and Node-RED from npm — and PostgreSQL when
# GAITKEEPER_TEST_POSTGRES_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
scripts/test-apps.sh
# The real-app tests fail, rather than skip, when their apps are missing.
export GAITKEEPER_TEST_REQUIRE_APPS=1
cargo test --all-targets --locked "$@"
