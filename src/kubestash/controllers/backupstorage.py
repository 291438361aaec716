"""BackupStorage: make the backend ready, keep its status true, clean up on delete, re-sync.

Each reconcile is level-triggered and idempotent:

1. on deletion, honour ``deletionPolicy`` (Delete: remove the Repository and
   Snapshot objects that live in this storage and keep the data; WipeOut: also
   delete the data) and release the ``kubestash.com/cleanup`` finalizer;
2. otherwise ensure the finalizer, check the Secret (``BackendSecretFound``),
   initialise the backend by writing ``metadata.yaml`` (``BackendInitialized``,
   with the classified failure reason in the message), re-create Repository
   and Snapshot objects for KubeStash data already in the backend, and report
   ``status.repositories`` and ``totalSize``.

Not ready is retried every ``retry_interval``; ready storages are re-checked
every ``sync_interval``, which is also how data written by another cluster shows up.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import yaml
from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from kubestash import __version__
from kubestash.api import conditions as cond
from kubestash.api.phases import backup_storage_phase
from kubestash.api.sizes import human_size, parse_size
from kubestash.api.storage import Backend, BackupStorage, Repository, Snapshot
from kubestash.backends.base import BackendError, ObjectBackend
from kubestash.controllers.common import (
    FINALIZER,
    abandon,
    ensure_finalizer,
    load_secret,
    patch_status,
    record,
    release_finalizer,
    remove_condition,
    set_condition,
)
from kubestash.controllers.kinds import by_kind
from kubestash.runtime.controller import Result
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.yaml"
REPOSITORY_FILE = "repository.yaml"
SNAPSHOTS_DIR = "snapshots"

Opener = Callable[[Backend, Mapping[str, bytes] | None], ObjectBackend]


def secret_name(backend: Backend) -> str | None:
    section = backend.s3 or backend.gcs or backend.azure
    return getattr(section, "secret_name", None) if section is not None else None


class SecretMissing(Exception):
    """A Secret a repository needs does not exist; the message names it (never a value)."""


async def repository_secrets(
    client: AsyncClient, storage: BackupStorage, repository: Repository
) -> tuple[dict[str, bytes] | None, dict[str, bytes]]:
    """The storage Secret's data (None when the storage needs none) and the encryption Secret's data."""
    name = secret_name(storage.spec.storage)
    ref = repository.spec.encryption_secret
    namespace = (ref.namespace if ref else None) or repository.namespace
    # Both Secrets are read at once; what is reported missing is what reading them in turn would find first.
    loads = [
        asyncio.ensure_future(load_secret(client, ns, secret))
        for ns, secret in ((storage.namespace, name), (namespace, ref.name if ref else None))
        if secret
    ]
    try:
        storage_secret = None
        if name:
            storage_secret = await loads.pop(0)
            if storage_secret is None:
                raise SecretMissing(f'storage Secret "{storage.namespace}/{name}" not found')
        if ref is None or not ref.name:
            raise SecretMissing(f"Repository {repository.name} has no encryptionSecret")
        encryption = await loads.pop(0)
        if encryption is None:
            raise SecretMissing(f'encryption Secret "{namespace}/{ref.name}" not found')
        return storage_secret, encryption
    finally:
        abandon(*loads)  # not awaited: an earlier one failed


@dataclass
class BackupStorageReconciler:
    client: AsyncClient
    storages: Informer
    repositories: Informer
    open_backend: Opener
    events: EventRecorder
    retry_interval: float = 30.0
    sync_interval: float = 300.0

    async def __call__(self, key: Key) -> Result | None:
        data = self.storages.get(*key)
        if data is None:
            return None
        storage = BackupStorage.model_validate(data)
        if storage.metadata.deletion_timestamp:
            await self._finalize(storage, data)
            return None
        await ensure_finalizer(self.client, "BackupStorage", data)
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})  # the cache is shared: never mutate it
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        secret = await self._secret(storage, conditions)
        backend: ObjectBackend | None = None
        if secret is not False:
            backend = await self._initialize(storage, secret if isinstance(secret, Mapping) else None, conditions)
        if backend is not None:
            with closing(backend):
                try:
                    await self._resync(storage, backend)
                except BackendError as exc:  # the backend went away between the check and the listing
                    set_condition(
                        conditions, cond.BACKEND_INITIALIZED, "False", "BackendInitializationFailed", _failure(exc)
                    )
        repos = self._repositories(storage)
        status.update(
            conditions=conditions,
            repositories=[r for r, _ in repos] or None,
            totalSize=human_size(sum(size for _, size in repos)),
        )
        model = BackupStorage.model_validate({**data, "status": status})
        status["phase"] = backup_storage_phase(model)
        previous = (data.get("status") or {}).get("phase")
        await patch_status(self.client, "BackupStorage", storage.name, storage.namespace, status)
        if status["phase"] != previous:
            message = cond.get_condition(model.status.conditions if model.status else None, cond.BACKEND_INITIALIZED)
            await record(
                self.events,
                data,
                "Normal" if status["phase"] == "Ready" else "Warning",
                status["phase"],
                message.message if message is not None and message.message else f"BackupStorage is {status['phase']}",
            )
        return Result(requeue_after=self.sync_interval if status["phase"] == "Ready" else self.retry_interval)

    # ---------------------------------------------------------------- steps
    async def _secret(self, storage: BackupStorage, conditions: list[dict[str, Any]]) -> Mapping[str, bytes] | bool:
        """The decoded Secret, True when none is needed, False when it is missing."""
        name = secret_name(storage.spec.storage)
        if not name:
            remove_condition(conditions, cond.BACKEND_SECRET_FOUND)
            return True
        secret = await load_secret(self.client, storage.namespace, name)
        if secret is None:
            set_condition(
                conditions,
                cond.BACKEND_SECRET_FOUND,
                "False",
                "BackendSecretNotAvailable",
                f'Secret "{storage.namespace}/{name}" not found',
            )
            set_condition(
                conditions,
                cond.BACKEND_INITIALIZED,
                "False",
                "BackendInitializationFailed",
                f'waiting for Secret "{name}"',
            )
            return False
        set_condition(conditions, cond.BACKEND_SECRET_FOUND, "True", "BackendSecretAvailable", "")
        return secret

    async def _initialize(
        self, storage: BackupStorage, secret: Mapping[str, bytes] | None, conditions: list[dict[str, Any]]
    ) -> ObjectBackend | None:
        """The opened, checked backend (the caller closes it), or None with the failure in ``conditions``."""
        backend: ObjectBackend | None = None
        try:
            backend = self.open_backend(storage.spec.storage, secret)
            await backend.check()  # a write says more than a HEAD: wrong key vs. no permission vs. no bucket
            if not await backend.exists(METADATA_FILE):
                meta = {
                    "apiVersion": "config.kubestash.com/v1alpha1",
                    "kind": "BackendMeta",
                    "creationTimestamp": cond.now_rfc3339(),
                    "operatorVersion": __version__,
                }
                await backend.put(METADATA_FILE, yaml.safe_dump(meta, sort_keys=False).encode())
        except BaseException as exc:
            if backend is not None:
                backend.close()
            if not isinstance(exc, BackendError):
                raise
            set_condition(
                conditions,
                cond.BACKEND_INITIALIZED,
                "False",
                "BackendInitializationFailed",
                _failure(exc),
            )
            return None
        set_condition(
            conditions,
            cond.BACKEND_INITIALIZED,
            "True",
            "BackendInitializationSucceeded",
            f"backend {backend.description} is initialized",
        )
        return backend

    async def _resync(self, storage: BackupStorage, backend: ObjectBackend) -> None:
        """Re-create Repository and Snapshot objects for KubeStash data already in the backend."""
        known = {(r.get("spec") or {}).get("path", "").strip("/") for r in self._referencing(storage)}
        async for info in backend.list(""):
            if not info.path.endswith("/" + REPOSITORY_FILE):
                continue
            path = info.path[: -len(REPOSITORY_FILE) - 1]
            if path.strip("/") in known:
                continue
            try:
                manifest = yaml.safe_load(await backend.get(info.path))
                repo = Repository.model_validate(manifest)
            except (BackendError, yaml.YAMLError, ValueError) as exc:
                log.warning("skipping %s in %s: %s", info.path, backend.description, exc)
                continue
            await self._create_from_backend(repo, storage)
            async for snap in backend.list(f"{path}/{SNAPSHOTS_DIR}/"):
                try:
                    snapshot = Snapshot.model_validate(yaml.safe_load(await backend.get(snap.path)))
                except (BackendError, yaml.YAMLError, ValueError) as exc:
                    log.warning("skipping %s: %s", snap.path, exc)
                    continue
                await self._create_from_backend(snapshot, storage, repo.namespace)

    async def _create_from_backend(
        self, obj: Repository | Snapshot, storage: BackupStorage, namespace: str = ""
    ) -> None:
        wire = obj.to_wire()
        meta = wire.get("metadata") or {}
        clean_meta = {
            "name": meta.get("name"),
            "namespace": meta.get("namespace") or namespace or storage.namespace,
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
        }
        wire["metadata"] = {k: v for k, v in clean_meta.items() if v}
        if isinstance(obj, Repository):
            wire["spec"]["storageRef"] = {"name": storage.name, "namespace": storage.namespace}
        status = wire.pop("status", None)
        resource = by_kind(obj.KIND)
        try:
            await self.client.create(resource.from_dict(wire))  # type: ignore[attr-defined]
        except ApiError as exc:
            if exc.status.code != 409:
                log.warning("could not re-create %s %s: %s", obj.KIND, obj.name, exc.status.message)
                return
        if status:
            await self.client.patch(
                resource.Status,  # type: ignore[attr-defined]
                wire["metadata"]["name"],
                {"status": status},
                namespace=wire["metadata"]["namespace"],
                patch_type=PatchType.MERGE,
            )

    def _referencing(self, storage: BackupStorage) -> list[dict[str, Any]]:
        out = []
        for repo in self.repositories.list():
            ref = (repo.get("spec") or {}).get("storageRef") or {}
            namespace = ref.get("namespace") or repo["metadata"].get("namespace")
            if ref.get("name") == storage.name and namespace == storage.namespace:
                out.append(repo)
        return out

    def _repositories(self, storage: BackupStorage) -> list[tuple[dict[str, Any], int]]:
        out = []
        for repo in self._referencing(storage):
            status = repo.get("status") or {}
            entry = {
                "name": repo["metadata"]["name"],
                "namespace": repo["metadata"].get("namespace"),
                "path": (repo.get("spec") or {}).get("path"),
                "size": status.get("size"),
                "synced": True,
            }
            out.append(({k: v for k, v in entry.items() if v is not None}, parse_size(status.get("size"))))
        return out

    async def _finalize(self, storage: BackupStorage, data: dict[str, Any]) -> None:
        finalizers = storage.metadata.finalizers or []
        if FINALIZER not in finalizers:
            return
        for repo in self._referencing(storage):
            meta = repo["metadata"]
            try:
                await self.client.delete(by_kind("Repository"), meta["name"], namespace=meta.get("namespace"))
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
        if storage.spec.deletion_policy == "WipeOut":
            secret = await self._secret(storage, [])
            if secret is not False:
                backend = self.open_backend(storage.spec.storage, secret if isinstance(secret, Mapping) else None)
                with closing(backend):
                    removed = await backend.delete_prefix("")
                await record(
                    self.events, data, "Normal", "WipedOut", f"deleted {removed} objects from {backend.description}"
                )
        await release_finalizer(self.client, "BackupStorage", data)


def _failure(exc: BackendError) -> str:
    return f"{exc.reason}: {exc.message}"
