#!/usr/bin/env bash
# Command 2: installs everything, then runs the tests (they start Azurite themselves when it is not
# running, and stop what they started).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
