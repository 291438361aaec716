#!/usr/bin/env bash
# The main job on the embedded default: up, apply the example manifests, back up, restore, show.
#
# Today only the first step exists: the API models, admission rules and CRDs (issue #2).
# The bundled API server (`kubestash up`, issue #3), storage controllers (#4) and the
# backup/restore path (#5, #6) are not built yet, so this script checks the example
# manifests exactly as the API server will admit them and prints the CRDs it will serve.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .

echo "== kubestash validate -f examples/quickstart"
.venv/bin/kubestash validate -f examples/quickstart --scope directory

echo "== CRDs the API server will serve"
.venv/bin/kubestash crds | grep -E '^  name: ' | sed 's/^  name: /  /'

cat <<'MSG'

Not yet available: `kubestash up` (bundled API server, issue #3), storage controllers (#4),
backup (#5) and restore (#6). Until they land this quickstart stops after validation.
MSG
