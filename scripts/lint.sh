#!/usr/bin/env bash
# Lint (ruff: pyflakes, pycodestyle, import order, blind excepts) and type checks (mypy on the layers
# the rest stands on); settings in pyproject.toml. Run by .ci/run before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
