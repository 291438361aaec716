from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from apiserver_process import ServerProcess
from e2e_world import PASSWORD, World
from kubestash.engine.base import RepositoryTarget
from kubestash.engine.restic import ResticEngine
from restic_helpers import PASSWORD as RESTIC_PASSWORD
from restic_helpers import cheapen_key
from storage_servers import MotoServer, moto_server


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


@pytest.fixture
def kube(server: ServerProcess) -> Client:
    return Client(config=KubeConfig.from_file(str(server.kubeconfig)))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def world(request: pytest.FixtureRequest, kube: Client, tmp_path: Path) -> World:
    ns = f"bk-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    backend_root = tmp_path / "backend"
    if request.param == "local":
        storage: dict[str, Any] = {
            "provider": "local",
            "local": {"mountPath": "/safe/data", "hostPath": {"path": str(backend_root)}},
        }
        w = World(kube, ns, tmp_path, backend_root, storage)
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        bucket = f"b-{ns}"
        moto.create_bucket(bucket)
        creds = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3-secret-key-value-1234"}
        kube.create(Secret(metadata=ObjectMeta(name="s3-creds", namespace=ns), stringData=creds))
        storage = {
            "provider": "s3",
            "s3": {"endpoint": moto.endpoint, "bucket": bucket, "prefix": "team", "secretName": "s3-creds"},
        }
        w = World(kube, ns, tmp_path, backend_root, storage, env=creds)
        w.repo_url_base = f"s3:{moto.endpoint}/{bucket}/team"
    kube.create(
        Secret(metadata=ObjectMeta(name="encrypt-secret", namespace=ns), stringData={"RESTIC_PASSWORD": PASSWORD})
    )
    w.apply(
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": "storage"},
            "spec": {"storage": storage, "default": True, "deletionPolicy": "WipeOut"},
        }
    )
    w.apply(
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "RetentionPolicy",
            "metadata": {"name": "keep-three"},
            "spec": {"successfulSnapshots": {"last": 3}, "failedSnapshots": {"last": 1}},
        }
    )
    return w


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository made by ``restic init``, with a cheap key, copied by each test that needs a repository."""
    path = tmp_path_factory.mktemp("template") / "repo"
    assert asyncio.run(ResticEngine().init(RepositoryTarget(url=str(path), password=RESTIC_PASSWORD))) is True
    cheapen_key(path, RESTIC_PASSWORD)
    return path


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> RepositoryTarget:
    """A copy of the template repository (PASSWORD of restic_helpers) for this test."""
    shutil.copytree(template, tmp_path / "repo")
    return RepositoryTarget(url=str(tmp_path / "repo"), password=RESTIC_PASSWORD, secrets=(RESTIC_PASSWORD,))
