"""What the CLI tests share: a bundled API server per module (the commands run against it as separate
processes) and a lightkube client for arranging objects and checking results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lightkube import Client, KubeConfig

from apiserver_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("apiserver"), cache_dir=tmp_path_factory.mktemp("kube-cache"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def kube(server: ServerProcess) -> Client:
    return Client(config=KubeConfig.from_file(str(server.kubeconfig)))
