#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing (used by `make`; needs root or sudo).
set -euo pipefail
if command -v redis-server >/dev/null; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "redis-server not found: install it with apt-get install -y redis-server" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing redis-server from Debian's packages" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system-wide server on port 6379; headrace runs its own on loopback.
$SUDO service redis-server stop >/dev/null 2>&1 || true
