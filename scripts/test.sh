#!/usr/bin/env bash
# Install what is missing (a venv with the pinned test tools) and run the whole suite:
# ruff (lint + format), mypy --strict on src/, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff" && .venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench
echo "== mypy --strict src" && .venv/bin/mypy --strict src
echo "== pytest" && .venv/bin/pytest "$@"
