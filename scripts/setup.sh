#!/usr/bin/env bash
# Installs what a fresh Debian machine needs to build, test, demo and
# benchmark livetally. Idempotent and quiet when everything is there.
# Usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang valgrind curl python3
  libevent-dev libmemcached-dev libhiredis-dev libcmocka-dev libjansson-dev libhttp-parser-dev zlib1g-dev
  memcached redis-server redis-tools
  nginx-light wrk haproxy
  chromium systemd prometheus
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node (nodesource or Debian) for the browser test's tooling.
command -v npm >/dev/null || missing+=(nodejs npm)

install_browser_tooling() {
  # puppeteer-core drives the installed Chromium over the DevTools protocol
  # (tests/integration/test_browser_sse.py); pinned in tests/browser.
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  [ -d "$dir/node_modules/puppeteer-core" ] && return 0
  echo "setup: npm install in tests/browser (puppeteer-core)"
  (cd "$dir" && npm ci --no-audit --no-fund --silent >/dev/null)
}

if [ ${#missing[@]} -eq 0 ]; then
  install_browser_tooling
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root (missing: ${missing[*]})" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
# Packages with services (memcached, redis, nginx, haproxy) must not start a
# system instance: tests start their own on free loopback ports.
policy_added=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
if [ -n "$policy_added" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
install_browser_tooling
echo "setup: done"
