#!/usr/bin/env bash
# Install what is missing (a venv with the pinned test tools) and run the whole suite:
# ruff (lint + format), mypy --strict on src/, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# restic (Debian's 0.14) is the oracle of tests/integration/test_retention_restic.py.
if ! command -v restic >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    fi
    echo "== installing restic (apt-get install -y restic)"
    if ! $SUDO apt-get install -y restic; then
        $SUDO apt-get update && $SUDO apt-get install -y restic
    fi
fi
# azurite (Azure Blob emulator for tests/integration/test_backends.py), pinned by package-lock.json.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
    echo "== installing npm test servers (npm ci)"
    npm ci --no-audit --no-fund
    touch node_modules
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "== ruff" && .venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench
echo "== mypy --strict src" && .venv/bin/mypy --strict src
echo "== pytest" && .venv/bin/pytest "$@"
