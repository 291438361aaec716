"""The CLI's own names for the kinds trigger/pause/resume use must be the registry's (it avoids importing it),
and ``kubestash trigger`` starts without importing what it does not need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kubestash.api.registry import KINDS
from kubestash.cli.backup import EVERYDAY_KINDS, by_kind
from kubestash.cli.kubeapi import DEFAULT_DATA_DIR
from kubestash.cli.up import DEFAULT_DATA_DIR as UP_DATA_DIR


def test_everyday_kinds_match_the_registry() -> None:
    for kind, (group, plural) in EVERYDAY_KINDS.items():
        info = next(i for i in KINDS if i.kind == kind)
        assert (group, plural, "v1alpha1") == (info.group, info.plural, info.version)
        assert by_kind(kind)._api_info.plural == plural


def test_trigger_does_not_import_the_models() -> None:
    """What keeps `kubestash trigger` quick to start: no pydantic models, no API server, no controllers."""
    code = (
        "import sys; from kubestash.cli.main import main; main.get_command(None, 'trigger'); "
        "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'kubestash.api.registry', "
        "'kubestash.apiserver', 'kubestash.controllers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_fast_trigger_path_imports_no_click_lightkube_or_httpx(tmp_path: Path) -> None:
    """``kubestash trigger`` reaches its BackupSession in about 0.07 s because of this (kubestash.cli.triggering)."""
    config = tmp_path / "config"
    config.write_text(
        "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\ncurrent-context: c\n"
    )
    code = (
        "import sys; from pathlib import Path; from kubestash.cli.main import main; "
        "from kubestash.cli import triggering, progress, kubeapi; "
        f"api, ns = triggering.open_api(Path({str(config)!r}), None, None); assert ns == 'default'; "
        "heavy = ('click', 'lightkube', 'httpx2', 'httpx', 'pydantic', 'msgspec', 'kubestash.apiserver', "
        "'kubestash.controllers', 'kubestash.engine'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_entry_point_is_still_the_click_group() -> None:
    from kubestash.cli.commands import main as group
    from kubestash.cli.main import main

    assert main.name == group.name
    assert main.get_command(None, "pause") is not None  # type: ignore[arg-type]
    assert DEFAULT_DATA_DIR == UP_DATA_DIR
