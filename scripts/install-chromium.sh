#!/usr/bin/env bash
# Installs Debian's Chromium (/usr/bin/chromium) for the console's browser tests (tests/test_console.py),
# only when it is missing. Playwright drives it; no browser is ever downloaded by Playwright itself.
# Needs root (as in CI) or sudo; without either it says so, and the browser tests are skipped.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO="sudo"
else
  echo "Chromium is not installed and this user cannot install it (run as root: apt-get install chromium);" \
       "the console's browser tests will be skipped." >&2
  exit 0
fi
echo "Installing Debian's chromium for the browser tests..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version 2>/dev/null | grep -i chromium >&2 || true
