#!/usr/bin/env bash
# Installs what building and testing gaitkeeper needs on Debian/Ubuntu, only where missing:
# cmake and a C toolchain (pingora's zlib-ng), OpenSSL headers (webauthn-rs), and with --test also Chromium and ChromeDriver
# (browser tests), curl, nginx and HAProxy (the load balancers of the edge tests), and
# Node.js/npm and Python's pip where the machine has none (the real third-party apps of
# tests/apps). Rust itself comes from rustup (https://rustup.rs).
set -euo pipefail

want=(cmake gcc g++ make pkg-config libssl-dev)
if [[ "${1:-}" == "--test" ]]; then
  want+=(chromium chromium-driver curl nginx haproxy)
  # A Node.js or Python installed another way (nodesource, pyenv) is used as it is.
  command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
  python3 -m pip --version >/dev/null 2>&1 || want+=(python3-pip)
fi
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo not found. Install Rust with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
