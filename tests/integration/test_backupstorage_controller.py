"""The BackupStorage controller end to end: bundled API server + operator + a real backend."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Secret

from apiserver_process import ServerProcess
from kubestash.api.storage import Backend
from kubestash.backends.factory import open_backend
from kubestash.controllers.backupstorage import Opener
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.manager import Operator
from storage_servers import azurite, moto_server

BackupStorage = by_kind("BackupStorage")
Repository = by_kind("Repository")
Snapshot = by_kind("Snapshot")
SECRET_VALUE = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def kube(server: ServerProcess) -> Client:
    return Client(config=KubeConfig.from_file(str(server.kubeconfig)))


@pytest.fixture
def ns(kube: Client) -> Iterator[str]:
    name = f"bs-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name


def local_storage(name: str, ns: str, root: Path, policy: str = "Delete") -> Any:
    return BackupStorage.from_dict(  # type: ignore[attr-defined]
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "storage": {"provider": "local", "local": {"mountPath": "/safe/data", "hostPath": {"path": str(root)}}},
                "deletionPolicy": policy,
            },
        }
    )


def run_with_operator(server: ServerProcess, body: Callable[[AsyncClient], Any], opener: Opener = open_backend) -> Any:
    async def scenario() -> Any:
        client = AsyncClient(config=KubeConfig.from_file(str(server.kubeconfig)))
        operator = Operator(client, sync_interval=1.0, retry_interval=0.2, backend_opener=opener)
        await operator.start()
        try:
            return await body(client)
        finally:
            await operator.stop()

    return asyncio.run(scenario())


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


def status_of(kube: Client, name: str, ns: str) -> dict[str, Any]:
    return dict(kube.get(BackupStorage, name, namespace=ns).status or {})


def test_local_storage_becomes_ready_and_writes_metadata(
    server: ServerProcess, kube: Client, ns: str, tmp_path: Path
) -> None:
    root = tmp_path / "backend"
    kube.create(local_storage("local", ns, root))

    async def body(client: AsyncClient) -> dict[str, Any]:
        return await until(lambda: (s := status_of(kube, "local", ns)).get("phase") == "Ready" and s)  # type: ignore[no-any-return]

    status = run_with_operator(server, body)
    meta = yaml.safe_load((root / "metadata.yaml").read_text())
    assert meta["kind"] == "BackendMeta" and meta["apiVersion"] == "config.kubestash.com/v1alpha1"
    initialized = next(c for c in status["conditions"] if c["type"] == "BackendInitialized")
    assert initialized["status"] == "True" and initialized["reason"] == "BackendInitializationSucceeded"
    assert "kubestash.com/cleanup" in kube.get(BackupStorage, "local", namespace=ns).metadata.finalizers
    events = [e for e in kube.list(Event, namespace=ns) if e.involvedObject.name == "local"]
    assert [(e.type, e.reason) for e in events] == [("Normal", "Ready")]


def test_missing_secret_is_not_ready_with_the_reason(server: ServerProcess, kube: Client, ns: str) -> None:
    storage = BackupStorage.from_dict(  # type: ignore[attr-defined]
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": "s3", "namespace": ns},
            "spec": {"storage": {"provider": "s3", "s3": {"bucket": f"b-{ns}", "secretName": "s3-secret"}}},
        }
    )
    kube.create(storage)

    async def body(client: AsyncClient) -> dict[str, Any]:
        return await until(lambda: (s := status_of(kube, "s3", ns)).get("conditions") and s)  # type: ignore[no-any-return]

    status = run_with_operator(server, body)
    assert status["phase"] == "NotReady"
    found = next(c for c in status["conditions"] if c["type"] == "BackendSecretFound")
    assert found["status"] == "False" and f'"{ns}/s3-secret" not found' in found["message"]


def test_unreachable_endpoint_is_reported_and_secrets_never_leak(
    server: ServerProcess, kube: Client, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    kube.create(
        Secret(
            metadata=ObjectMeta(name="creds", namespace=ns),
            stringData={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE},
        )
    )
    kube.create(
        BackupStorage.from_dict(  # type: ignore[attr-defined]
            {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "BackupStorage",
                "metadata": {"name": "s3", "namespace": ns},
                "spec": {
                    "storage": {
                        "provider": "s3",
                        "s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9", "secretName": "creds"},
                    }
                },
            }
        )
    )
    caplog.set_level(logging.DEBUG)

    async def body(client: AsyncClient) -> dict[str, Any]:
        return await until(  # type: ignore[no-any-return]
            lambda: (
                (s := status_of(kube, "s3", ns)).get("phase") == "NotReady"
                and any(c["type"] == "BackendInitialized" for c in s.get("conditions", []))
                and s
            ),
            timeout=60,
        )

    status = run_with_operator(server, body)
    initialized = next(c for c in status["conditions"] if c["type"] == "BackendInitialized")
    assert initialized["status"] == "False" and initialized["message"].startswith("Unreachable")
    events = [e.to_dict() for e in kube.list(Event, namespace=ns)]
    everything = json.dumps(status) + json.dumps(events) + caplog.text + server.log()
    assert SECRET_VALUE not in everything


def test_wipeout_deletes_the_data_and_resync_restores_objects(
    server: ServerProcess, kube: Client, ns: str, tmp_path: Path
) -> None:
    root = tmp_path / "backend"
    repo_dir = root / "demo" / "app"
    (repo_dir / "snapshots").mkdir(parents=True)
    repository = {
        "apiVersion": "storage.kubestash.com/v1alpha1",
        "kind": "Repository",
        "metadata": {"name": "app-repo", "namespace": ns, "uid": "old-cluster-uid", "resourceVersion": "42"},
        "spec": {
            "storageRef": {"name": "old", "namespace": "elsewhere"},
            "path": "/demo/app",
            "deletionPolicy": "Delete",
        },
        "status": {"phase": "Ready", "snapshotCount": 1, "size": "1.000 KiB"},
    }
    snapshot = {
        "apiVersion": "storage.kubestash.com/v1alpha1",
        "kind": "Snapshot",
        "metadata": {"name": "app-repo-backup-frequent-1700000000", "namespace": ns},
        "spec": {"repository": "app-repo", "session": "frequent", "snapshotID": "01HG", "type": "FullBackup"},
        "status": {"phase": "Succeeded", "snapshotTime": "2023-11-14T22:13:20Z"},
    }
    (repo_dir / "repository.yaml").write_text(yaml.safe_dump(repository))
    (repo_dir / "snapshots" / "app-repo-backup-frequent-1700000000.yaml").write_text(yaml.safe_dump(snapshot))
    kube.create(local_storage("resync", ns, root, policy="WipeOut"))

    async def body(client: AsyncClient) -> None:
        await until(lambda: (s := status_of(kube, "resync", ns)).get("repositories") and s)
        repo = await asyncio.to_thread(kube.get, Repository, "app-repo", namespace=ns)
        assert repo.spec["storageRef"] == {"name": "resync", "namespace": ns}
        assert repo.status["snapshotCount"] == 1
        snap = await asyncio.to_thread(kube.get, Snapshot, "app-repo-backup-frequent-1700000000", namespace=ns)
        assert snap.status["phase"] == "Succeeded"
        status = status_of(kube, "resync", ns)
        assert status["repositories"] == [
            {"name": "app-repo", "namespace": ns, "path": "/demo/app", "size": "1.000 KiB", "synced": True}
        ]
        assert status["totalSize"] == "1.000 KiB"
        await asyncio.to_thread(kube.delete, BackupStorage, "resync", namespace=ns)

        def gone() -> bool:
            try:
                kube.get(BackupStorage, "resync", namespace=ns)
            except Exception:
                return True
            return False

        await until(gone)

    run_with_operator(server, body)
    assert not any(p.is_file() for p in root.rglob("*")), "WipeOut removed the backed-up data"
    assert [r.metadata.name for r in kube.list(Repository, namespace=ns)] == []


def repository(name: str, ns: str, path: str, storage: str, storage_ns: str, policy: str = "Delete") -> Any:
    return Repository.from_dict(  # type: ignore[attr-defined]
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "Repository",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "storageRef": {"name": storage, "namespace": storage_ns},
                "path": path,
                "encryptionSecret": {"name": "enc", "namespace": ns},
                "deletionPolicy": policy,
            },
        }
    )


def repo_status(kube: Client, name: str, ns: str) -> dict[str, Any]:
    return dict(kube.get(Repository, name, namespace=ns).status or {})


def test_repository_is_initialised_in_its_storage_and_wiped_out(
    server: ServerProcess, kube: Client, ns: str, tmp_path: Path
) -> None:
    root = tmp_path / "backend"
    kube.create(local_storage("local", ns, root))
    kube.create(Secret(metadata=ObjectMeta(name="enc", namespace=ns), stringData={"RESTIC_PASSWORD": SECRET_VALUE}))
    kube.create(repository("app", ns, "/demo/app", "local", ns, policy="WipeOut"))
    kube.create(repository("other", ns, "/demo/other", "local", ns))
    kube.create(
        Snapshot.from_dict(  # type: ignore[attr-defined]
            {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "Snapshot",
                "metadata": {"name": "app-snap", "namespace": ns},
                "spec": {"repository": "app", "session": "s"},
            }
        )
    )

    async def body(client: AsyncClient) -> None:
        for name in ("app", "other"):
            await until(lambda n=name: repo_status(kube, n, ns).get("phase") == "Ready")  # type: ignore[misc]
        manifest = yaml.safe_load((root / "demo" / "app" / "repository.yaml").read_text())
        assert manifest["kind"] == "Repository" and manifest["spec"]["path"] == "/demo/app"
        storage = await until(lambda: len(status_of(kube, "local", ns).get("repositories") or []) == 2)
        assert storage
        await asyncio.to_thread(kube.delete, Repository, "app", namespace=ns)

        def app_gone() -> bool:
            return not [r for r in kube.list(Repository, namespace=ns) if r.metadata.name == "app"]

        await until(app_gone)

    run_with_operator(server, body)
    assert not (root / "demo" / "app").exists() or not any((root / "demo" / "app").rglob("*.yaml"))
    assert (root / "demo" / "other" / "repository.yaml").exists(), "WipeOut of one repository spares the others"
    assert [s.metadata.name for s in kube.list(Snapshot, namespace=ns)] == []


def test_repository_not_ready_reasons(server: ServerProcess, kube: Client, ns: str, tmp_path: Path) -> None:
    other = f"{ns}-owner"
    kube.create(Namespace(metadata=ObjectMeta(name=other)))
    kube.create(local_storage("private", other, tmp_path / "private"))
    kube.create(local_storage("mine", ns, tmp_path / "mine"))
    kube.create(repository("no-secret", ns, "/a", "mine", ns))
    kube.create(repository("not-shared", ns, "/b", "private", other))

    async def body(client: AsyncClient) -> tuple[str, str]:
        def message(name: str) -> str:
            conds = repo_status(kube, name, ns).get("conditions") or []
            return str(next((c["message"] for c in conds if c["type"] == "RepositoryInitialized"), ""))

        await until(lambda: "encryption Secret" in message("no-secret") and "usagePolicy" in message("not-shared"))
        return message("no-secret"), message("not-shared")

    no_secret, not_shared = run_with_operator(server, body)
    assert no_secret == f'encryption Secret "{ns}/enc" not found'
    assert f'does not allow use from namespace "{ns}"' in not_shared
    assert repo_status(kube, "no-secret", ns)["phase"] == "NotReady"


def s3_storage(name: str, ns: str, endpoint: str, bucket: str, policy: str = "Delete") -> Any:
    return BackupStorage.from_dict(  # type: ignore[attr-defined]
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "storage": {
                    "provider": "s3",
                    "s3": {"endpoint": endpoint, "bucket": bucket, "prefix": "team", "secretName": "s3-creds"},
                },
                "deletionPolicy": policy,
            },
        }
    )


def test_s3_storage_on_moto_ready_then_missing_bucket_then_wiped_out(
    server: ServerProcess, kube: Client, ns: str
) -> None:
    with moto_server() as moto:
        moto.create_bucket("kubestash")
        kube.create(
            Secret(
                metadata=ObjectMeta(name="s3-creds", namespace=ns),
                stringData={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE},
            )
        )
        kube.create(s3_storage("s3", ns, moto.endpoint, "kubestash", policy="WipeOut"))
        kube.create(s3_storage("nobucket", ns, moto.endpoint, "missing-bucket"))

        async def body(client: AsyncClient) -> dict[str, Any]:
            await until(lambda: status_of(kube, "s3", ns).get("phase") == "Ready")
            missing = await until(
                lambda: (
                    (s := status_of(kube, "nobucket", ns)).get("conditions")
                    and any(c["type"] == "BackendInitialized" for c in s["conditions"])
                    and s
                )
            )
            backend = open_backend(
                Backend.model_validate(
                    {"provider": "s3", "s3": {"endpoint": moto.endpoint, "bucket": "kubestash", "prefix": "team"}}
                ),
                {"AWS_ACCESS_KEY_ID": b"AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE.encode()},
            )
            assert b"BackendMeta" in await backend.get("metadata.yaml")
            await asyncio.to_thread(kube.delete, BackupStorage, "s3", namespace=ns)

            async def wiped() -> bool:
                return not await backend.exists("metadata.yaml")

            deadline = asyncio.get_running_loop().time() + 15
            while not await wiped():
                assert asyncio.get_running_loop().time() < deadline, "WipeOut did not delete the data"
                await asyncio.sleep(0.1)
            return dict(missing)

        missing = run_with_operator(server, body)
    initialized = next(c for c in missing["conditions"] if c["type"] == "BackendInitialized")
    assert missing["phase"] == "NotReady"
    assert initialized["message"].startswith("BucketNotFound"), initialized["message"]
    assert SECRET_VALUE not in json.dumps(missing)


def test_azure_storage_on_azurite_ready_and_wrong_key_named(server: ServerProcess, kube: Client, ns: str) -> None:
    """Azure Blob through azurite: the real shared-key protocol, so a wrong key is really refused."""
    with azurite() as blob:
        blob.create_container("backups")
        for name, key in (("azure-creds", blob.key), ("wrong-creds", base64.b64encode(b"not-the-key" * 4).decode())):
            kube.create(Secret(metadata=ObjectMeta(name=name, namespace=ns), stringData={"AZURE_ACCOUNT_KEY": key}))
        for name, secret in (("azure", "azure-creds"), ("wrong", "wrong-creds")):
            kube.create(
                BackupStorage.from_dict(  # type: ignore[attr-defined]
                    {
                        "apiVersion": "storage.kubestash.com/v1alpha1",
                        "kind": "BackupStorage",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {
                            "storage": {
                                "provider": "azure",
                                "azure": {
                                    "storageAccount": blob.account,
                                    "container": "backups",
                                    "prefix": name,
                                    "secretName": secret,
                                },
                            }
                        },
                    }
                )
            )

        async def body(client: AsyncClient) -> dict[str, Any]:
            await until(lambda: status_of(kube, "azure", ns).get("phase") == "Ready")
            return await until(  # type: ignore[no-any-return]
                lambda: (
                    (s := status_of(kube, "wrong", ns)).get("conditions")
                    and any(c["type"] == "BackendInitialized" for c in s["conditions"])
                    and s
                )
            )

        wrong = run_with_operator(server, body, functools.partial(open_backend, endpoint=blob.endpoint))
    initialized = next(c for c in wrong["conditions"] if c["type"] == "BackendInitialized")
    assert wrong["phase"] == "NotReady"
    assert initialized["message"].startswith("InvalidCredentials"), initialized["message"]
