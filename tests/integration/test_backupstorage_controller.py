"""The BackupStorage controller end to end: bundled API server + operator + a real backend."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Secret

from apiserver_process import ServerProcess
from google_token_server import google_token_server
from kubestash.api.storage import Backend
from kubestash.backends.base import ObjectBackend
from kubestash.backends.factory import open_backend
from kubestash.controllers.backupstorage import Opener
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.manager import Operator
from storage_servers import azurite, gcs_emulator, moto_server

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


def kubestash_layout(ns: str) -> dict[str, bytes]:
    """Files a BackupStorage written by another cluster holds: a Repository and one of its Snapshots."""
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
    return {
        "demo/app/repository.yaml": yaml.safe_dump(repository).encode(),
        "demo/app/snapshots/app-repo-backup-frequent-1700000000.yaml": yaml.safe_dump(snapshot).encode(),
    }


def test_wipeout_deletes_the_data_and_resync_restores_objects(
    server: ServerProcess, kube: Client, ns: str, tmp_path: Path
) -> None:
    root = tmp_path / "backend"
    for path, data in kubestash_layout(ns).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
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


@dataclass
class Remote:
    """A remote provider's server(s), how a BackupStorage points at them, and Secrets good and wrong."""

    provider: str
    spec: Callable[[str, str], dict[str, Any]]
    """(bucket, secretName) -> spec.storage.<provider>, prefix "team"."""
    bucket: str
    good: dict[str, str]
    wrong: dict[str, str]
    wrong_spec: Callable[[str, str], dict[str, Any]]
    opener: Opener

    def backend(self) -> ObjectBackend:
        storage = Backend.model_validate({"provider": self.provider, self.provider: self.spec(self.bucket, "")})
        return self.opener(storage, {k: v.encode() for k, v in self.good.items()})


@contextmanager
def remote(provider: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    """moto (S3; a second moto enforcing auth for the wrong key), gcp-storage-emulator with a stand-in Google
    token endpoint (GCS; see :mod:`google_token_server`), azurite (Azure: shared-key signatures checked)."""
    bucket = f"kubestash-{uuid.uuid4().hex[:8]}"
    if provider == "s3":
        with moto_server() as moto, moto_server(enforce_auth=True) as strict:
            moto.create_bucket(bucket)
            yield Remote(
                provider,
                lambda b, secret: {"endpoint": moto.endpoint, "bucket": b, "prefix": "team", "secretName": secret},
                bucket,
                {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE},
                {"AWS_ACCESS_KEY_ID": "AKIDWRONG", "AWS_SECRET_ACCESS_KEY": SECRET_VALUE + "-wrong"},
                lambda b, secret: {"endpoint": strict.endpoint, "bucket": b, "prefix": "other", "secretName": secret},
                open_backend,
            )
    elif provider == "gcs":
        with gcs_emulator() as gcs, google_token_server() as oauth:
            gcs.create_bucket(bucket)
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
            good = oauth.service_account_key("kubestash@test.iam")
            wrong = oauth.service_account_key("kubestash@test.iam", registered=False)

            def spec(b: str, secret: str) -> dict[str, Any]:
                return {"bucket": b, "prefix": "team", "secretName": secret}

            yield Remote(
                provider,
                spec,
                bucket,
                {"GOOGLE_SERVICE_ACCOUNT_JSON_KEY": good, "GOOGLE_PROJECT_ID": "kubestash-test"},
                {"GOOGLE_SERVICE_ACCOUNT_JSON_KEY": wrong},
                lambda b, secret: {**spec(b, secret), "prefix": "other"},
                open_backend,
            )
    else:
        with azurite() as blob:
            blob.create_container(bucket)

            def spec(b: str, secret: str) -> dict[str, Any]:
                return {"storageAccount": blob.account, "container": b, "prefix": "team", "secretName": secret}

            yield Remote(
                provider,
                spec,
                bucket,
                {"AZURE_ACCOUNT_KEY": blob.key},
                {"AZURE_ACCOUNT_KEY": base64.b64encode(SECRET_VALUE.encode()).decode()},
                lambda b, secret: {**spec(b, secret), "prefix": "other"},
                functools.partial(open_backend, endpoint=blob.endpoint),
            )


def storage_object(name: str, ns: str, provider: str, spec: dict[str, Any], policy: str = "Delete") -> Any:
    return BackupStorage.from_dict(  # type: ignore[attr-defined]
        {
            "apiVersion": "storage.kubestash.com/v1alpha1",
            "kind": "BackupStorage",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"storage": {"provider": provider, provider: spec}, "deletionPolicy": policy},
        }
    )


@pytest.mark.parametrize("provider", ["s3", "gcs", "azure"])
def test_remote_storage_ready_resynced_wrong_key_missing_bucket_and_wiped_out(
    provider: str,
    server: ServerProcess,
    kube: Client,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Per provider, the issue's acceptance: Ready with metadata.yaml; a wrong key and a missing bucket each
    NotReady with the cause named; Repository and Snapshot objects re-created from data already in the
    backend; WipeOut deleting every object under the prefix; no secret value in status, Events or logs."""
    caplog.set_level(logging.DEBUG)
    with remote(provider, monkeypatch) as r:
        backend = r.backend()

        async def seed() -> None:
            for path, data in kubestash_layout(ns).items():
                await backend.put(path, data)

        asyncio.run(seed())
        for name, data in (("good-creds", r.good), ("wrong-creds", r.wrong)):
            kube.create(Secret(metadata=ObjectMeta(name=name, namespace=ns), stringData=data))
        kube.create(storage_object("good", ns, provider, r.spec(r.bucket, "good-creds"), policy="WipeOut"))
        kube.create(storage_object("wrong", ns, provider, r.wrong_spec(r.bucket, "wrong-creds")))
        kube.create(storage_object("nobucket", ns, provider, r.spec("nosuchbucket", "good-creds")))

        def initialized(name: str) -> dict[str, Any] | None:
            conditions = status_of(kube, name, ns).get("conditions") or []
            return next((c for c in conditions if c["type"] == "BackendInitialized"), None)

        async def body(client: AsyncClient) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            await until(lambda: status_of(kube, "good", ns).get("phase") == "Ready")
            assert b"BackendMeta" in await backend.get("metadata.yaml")
            good = await until(lambda: (s := status_of(kube, "good", ns)).get("repositories") and s)
            repo = await asyncio.to_thread(kube.get, Repository, "app-repo", namespace=ns)
            assert repo.spec["storageRef"] == {"name": "good", "namespace": ns}
            snap = await asyncio.to_thread(kube.get, Snapshot, "app-repo-backup-frequent-1700000000", namespace=ns)
            assert snap.status["phase"] == "Succeeded"
            wrong = await until(lambda: initialized("wrong"))
            missing = await until(lambda: initialized("nobucket"))

            await asyncio.to_thread(kube.delete, BackupStorage, "good", namespace=ns)
            deadline = asyncio.get_running_loop().time() + 20
            while [info.path async for info in backend.list()]:
                assert asyncio.get_running_loop().time() < deadline, "WipeOut did not delete the data"
                await asyncio.sleep(0.2)
            return good, wrong, missing

        good, wrong, missing = run_with_operator(server, body, r.opener)
    assert good["repositories"][0]["name"] == "app-repo"
    assert wrong["status"] == "False" and wrong["message"].startswith("InvalidCredentials"), wrong
    assert missing["status"] == "False" and missing["message"].startswith("BucketNotFound"), missing
    assert status_of(kube, "wrong", ns)["phase"] == "NotReady"
    assert [r.metadata.name for r in kube.list(Repository, namespace=ns)] == []
    events = [e.to_dict() for e in kube.list(Event, namespace=ns)]
    everything = json.dumps(events) + caplog.text + server.log()
    everything += "".join(json.dumps(status_of(kube, n, ns)) for n in ("wrong", "nobucket"))
    for data in (r.good, r.wrong):
        for key, value in data.items():
            if key != "GOOGLE_PROJECT_ID":
                assert value not in everything
    if provider == "gcs":
        private_keys = [json.loads(d["GOOGLE_SERVICE_ACCOUNT_JSON_KEY"])["private_key"] for d in (r.good, r.wrong)]
        assert not any(k in everything for k in private_keys)


def test_operator_rides_out_an_api_server_restart(fresh_server: ServerProcess, tmp_path: Path) -> None:
    """The API server stops and starts again under a running operator: a storage created before and one
    created after both go Ready, and each side effect (the Ready Event, the metadata.yaml write) happens once."""
    fresh_server.start()
    kube = Client(config=KubeConfig.from_file(str(fresh_server.kubeconfig)))
    ns = "restart"
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    kube.create(local_storage("before", ns, tmp_path / "before"))

    async def body(client: AsyncClient) -> None:
        await until(lambda: status_of(kube, "before", ns).get("phase") == "Ready")
        written = (tmp_path / "before" / "metadata.yaml").stat().st_mtime_ns
        await asyncio.to_thread(fresh_server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(fresh_server.start)
        again = Client(config=KubeConfig.from_file(str(fresh_server.kubeconfig)))
        await asyncio.to_thread(again.create, local_storage("after", ns, tmp_path / "after"))
        await until(lambda: status_of(again, "after", ns).get("phase") == "Ready", timeout=30)
        await asyncio.sleep(1.5)  # a resync period: nothing is done twice
        assert (tmp_path / "before" / "metadata.yaml").stat().st_mtime_ns == written

    run_with_operator(fresh_server, body)
    kube = Client(config=KubeConfig.from_file(str(fresh_server.kubeconfig)))
    events = sorted((e.involvedObject.name, e.reason, e.count or 1) for e in kube.list(Event, namespace=ns))
    assert events == [("after", "Ready", 1), ("before", "Ready", 1)]
