#!/usr/bin/env bash
# Command 2: installs everything (Debian's Chromium too, for the console's browser tests, when it may),
# then runs the tests (they start Azurite themselves when it is not running, and stop what they started).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-chromium.sh  # the console's browser tests (skipped when Chromium cannot be installed)
exec .venv/bin/python -m pytest "$@"
