"""The README's first command, run as a user runs it, so it stays true on every landing."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_runs_and_shows_the_objects() -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "quickstart.sh")], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "backupstorage.storage.kubestash.com/local-storage created" in out
    assert "backupconfiguration.core.kubestash.com/demo-backup" in out
    assert "Server Version: v1.34.0+kubestash" in out
    assert "backupstorage.storage.kubestash.com/local-storage condition met" in out
    assert "kind: BackendMeta" in out
    assert "initial backup: Succeeded" in out
    assert "2 snapshots" in out, "restic itself lists both backups"
    assert "restoresession.core.kubestash.com/demo-restore created" in out
    assert "all 3001 files restored byte for byte" in out
