"""The CLI's own names for the kinds trigger/pause/resume use must be the registry's (it avoids importing it)."""

from __future__ import annotations

import subprocess
import sys

from kubestash.api.registry import KINDS
from kubestash.cli.backup import EVERYDAY_KINDS, by_kind


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
