from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apiserver_process import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One bundled API server for the session; tests isolate themselves by namespace."""
    data = tmp_path_factory.mktemp("apiserver")
    proc = ServerProcess(data, cache_dir=tmp_path_factory.mktemp("kube-cache")).start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that restart or kill it."""
    data = tmp_path / "data"
    data.mkdir()
    proc = ServerProcess(data, cache_dir=tmp_path / "kube-cache")
    yield proc
    proc.stop()
