"""Where the KubeStash compatibility corpus (docs examples, addon catalog) lives for the tests.

The live corpus is ``../shared/compat`` beside the repository; new files there are covered
without a change here. A clone on its own (CI on a fresh machine) falls back to the snapshot
committed under ``tests/compat``, so the compatibility tests always run and never skip.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_LIVE = REPO.parent / "shared" / "compat"
COMPAT_ROOT = _LIVE if (_LIVE / "kubestash-docs").is_dir() else REPO / "tests" / "compat"
COMPAT_FOLDERS = ("kubestash-docs", "kubestash-catalog")
