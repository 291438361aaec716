"""The operator with ``--engine restic``: the same end-to-end scenarios as with the default native engine,
with the restic binary moving the data.

The scenarios are the ones of ``test_backup_e2e`` and ``test_restore_e2e`` (imported, not copied); here they
run with ``KUBESTASH_ENGINE=restic`` in the environment, which the operator and every task process it starts
read, exactly as ``kubestash up --engine restic`` sets it. Their own assertions use restic as the oracle
(``restic snapshots``, ``restic check``, ``restic restore`` byte for byte). Two scenarios keep the suite short
(a PVC backed up, then restored, on local and S3 storage): target resolution does not depend on the engine,
and forget+prune is covered engine by engine in ``test_engines`` and ``test_native_prune``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from test_backup_e2e import test_pvc_backup_with_pvc_addon
from test_restore_e2e import test_pvc_restored_over_itself_and_into_a_new_pvc

from kubestash.engine.select import ENGINE_ENV

__all__ = ["test_pvc_backup_with_pvc_addon", "test_pvc_restored_over_itself_and_into_a_new_pvc"]


@pytest.fixture(autouse=True)
def restic_engine(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run with the restic engine, and prove it: ``restic`` on PATH becomes a wrapper that logs its arguments,
    and the backups must have gone through it (the tests' own oracle never runs ``restic backup``)."""
    real = shutil.which("restic")
    assert real is not None
    bin_dir = tmp_path_factory.mktemp("wrapped-restic")
    log = bin_dir / "calls.log"
    wrapper = bin_dir / "restic"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(["restic", "version"], check=True, capture_output=True)
    assert log.read_text() == "version\n", "restic calls go through the wrapper"
    monkeypatch.setenv(ENGINE_ENV, "restic")
    yield
    verbs = {word for call in log.read_text().splitlines() for word in call.split()}
    assert "backup" in verbs, f"restic never backed up: {sorted(verbs)}"
