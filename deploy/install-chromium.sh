#!/usr/bin/env bash
# Installs Debian's chromium when it is missing (used by `make`: the dashboard test loads
# the worker's page in headless Chromium; needs root or sudo).
set -euo pipefail
if command -v chromium >/dev/null; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "chromium not found: install it with apt-get install -y chromium" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing chromium from Debian's packages" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
