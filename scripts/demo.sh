#!/usr/bin/env bash
# Command 1: installs everything, then runs a real export on the local stack and prints a report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m devtools.demo "$@"
