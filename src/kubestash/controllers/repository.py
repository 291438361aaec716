"""Repository: write ``<path>/repository.yaml`` into its BackupStorage, report readiness, clean up.

The restic repositories inside (one per component) are created lazily by the
first backup; this controller makes the directory a KubeStash repository that
a re-synced BackupStorage can find again. It refuses to initialise when the
BackupStorage's usagePolicy does not admit the Repository's namespace, or when
the encryption Secret lacks ``RESTIC_PASSWORD``; the reason is the condition
message, never a secret value.
"""

from __future__ import annotations

import copy
import logging
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

import yaml
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Namespace

from kubestash.api import conditions as cond
from kubestash.api.admission.lookup import StaticLookup, usage_allowed
from kubestash.api.phases import repository_phase
from kubestash.api.storage import BackupStorage, Repository
from kubestash.backends.base import BackendError, ObjectBackend
from kubestash.controllers.backupstorage import REPOSITORY_FILE, Opener, secret_name
from kubestash.controllers.common import (
    FINALIZER,
    ensure_finalizer,
    load_secret,
    patch_status,
    record,
    release_finalizer,
    set_condition,
)
from kubestash.controllers.kinds import by_kind
from kubestash.runtime.controller import Result
from kubestash.runtime.events import EventKind, EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

PASSWORD_KEY = "RESTIC_PASSWORD"


class NotReadyYet(Exception):
    """Initialisation cannot proceed; the message says why and becomes the condition message."""


@dataclass
class RepositoryReconciler:
    client: AsyncClient
    repositories: Informer
    storages: Informer
    open_backend: Opener
    events: EventRecorder
    retry_interval: float = 30.0

    async def __call__(self, key: Key) -> Result | None:
        data = self.repositories.get(*key)
        if data is None:
            return None
        repo = Repository.model_validate(data)
        if repo.metadata.deletion_timestamp:
            await self._finalize(repo, data)
            return None
        await ensure_finalizer(self.client, "Repository", data)
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})  # the cache is shared: never mutate it
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        try:
            with closing(await self.backend_for(repo)) as backend:
                await self._check_encryption_secret(repo)
                await self._write_manifest(repo, backend)
        except NotReadyYet as exc:
            set_condition(conditions, cond.REPOSITORY_INITIALIZED, "False", "RepositoryInitializationFailed", str(exc))
        except BackendError as exc:
            message = f"{exc.reason}: {exc.message}"
            set_condition(conditions, cond.REPOSITORY_INITIALIZED, "False", "RepositoryInitializationFailed", message)
        else:
            message = f"{REPOSITORY_FILE} written to {backend.description}"
            set_condition(conditions, cond.REPOSITORY_INITIALIZED, "True", "RepositoryInitializationSucceeded", message)
        status["conditions"] = conditions
        status["phase"] = repository_phase(Repository.model_validate({**data, "status": status}))
        if status != (data.get("status") or {}):
            # Only what this controller owns: the Snapshot controller writes the backup summary fields.
            owned = {"conditions": status["conditions"], "phase": status["phase"]}
            await patch_status(self.client, "Repository", repo.name, repo.namespace, owned)
        if status["phase"] != (data.get("status") or {}).get("phase"):
            current = next(c for c in conditions if c["type"] == cond.REPOSITORY_INITIALIZED)
            kind: EventKind = "Normal" if status["phase"] == "Ready" else "Warning"
            await record(self.events, data, kind, status["phase"], current["message"])
        return None if status["phase"] == "Ready" else Result(requeue_after=self.retry_interval)

    # ---------------------------------------------------------------- steps
    def storage_of(self, repo: Repository) -> BackupStorage:
        ref = repo.spec.storage_ref
        if ref is None:
            raise NotReadyYet("spec.storageRef is not set")
        namespace = ref.namespace or repo.namespace
        data = self.storages.get(namespace, ref.name)
        if data is None:
            raise NotReadyYet(f'BackupStorage "{namespace}/{ref.name}" not found')
        storage = BackupStorage.model_validate(data)
        if (storage.status.phase if storage.status else None) != "Ready":
            raise NotReadyYet(f'BackupStorage "{namespace}/{ref.name}" is not Ready')
        return storage

    async def backend_for(self, repo: Repository) -> ObjectBackend:
        """The backend of the repository's BackupStorage, if it may be used from the repository's namespace (the
        caller closes it)."""
        storage = self.storage_of(repo)
        if storage.namespace != repo.namespace:
            labels = await self._namespace_labels(repo.namespace)
            policy = storage.spec.usage_policy
            lookup = StaticLookup(namespaces={repo.namespace: labels} if labels is not None else None)
            if not usage_allowed(policy, storage.namespace, repo.namespace, lookup):
                raise NotReadyYet(
                    f'BackupStorage "{storage.namespace}/{storage.name}" does not allow use from namespace '
                    f'"{repo.namespace}" (spec.usagePolicy)'
                )
        secret = None
        name = secret_name(storage.spec.storage)
        if name:
            secret = await load_secret(self.client, storage.namespace, name)
            if secret is None:
                raise NotReadyYet(f'Secret "{storage.namespace}/{name}" of the BackupStorage not found')
        return self.open_backend(storage.spec.storage, secret)

    async def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        try:
            ns = await self.client.get(Namespace, namespace)
        except ApiError:
            return None
        return dict((ns.metadata.labels if ns.metadata else None) or {})

    async def _check_encryption_secret(self, repo: Repository) -> None:
        ref = repo.spec.encryption_secret
        if ref is None:
            raise NotReadyYet("spec.encryptionSecret is not set; backups need a RESTIC_PASSWORD")
        namespace = ref.namespace or repo.namespace
        secret = await load_secret(self.client, namespace, ref.name)
        if secret is None:
            raise NotReadyYet(f'encryption Secret "{namespace}/{ref.name}" not found')
        if not secret.get(PASSWORD_KEY):
            raise NotReadyYet(f'encryption Secret "{namespace}/{ref.name}" has no {PASSWORD_KEY} key')

    async def _write_manifest(self, repo: Repository, backend: ObjectBackend) -> None:
        meta = {k: v for k, v in (("name", repo.name), ("namespace", repo.namespace)) if v}
        if repo.metadata.labels:
            meta["labels"] = repo.metadata.labels  # type: ignore[assignment]
        manifest = {"apiVersion": repo.api_version, "kind": repo.kind, "metadata": meta, "spec": repo.spec.to_wire()}
        body = yaml.safe_dump(manifest, sort_keys=False).encode()
        path = f"{(repo.spec.path or '').strip('/')}/{REPOSITORY_FILE}"
        try:
            if await backend.get(path) == body:
                return
        except BackendError as exc:
            if exc.reason != "NotFound":
                raise
        await backend.put(path, body)

    async def _finalize(self, repo: Repository, data: dict[str, Any]) -> None:
        if FINALIZER not in (repo.metadata.finalizers or []):
            return
        for snapshot in await self._snapshots(repo):
            try:
                await self.client.delete(by_kind("Snapshot"), snapshot, namespace=repo.namespace)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
        if repo.spec.deletion_policy == "WipeOut":
            try:
                with closing(await self.backend_for(repo)) as backend:
                    removed = await backend.delete_prefix((repo.spec.path or "").strip("/") + "/")
                await record(self.events, data, "Normal", "WipedOut", f"deleted {removed} objects of this repository")
            except (NotReadyYet, BackendError) as exc:
                await record(self.events, data, "Warning", "WipeOutFailed", str(exc))
                raise
        await release_finalizer(self.client, "Repository", data)

    async def _snapshots(self, repo: Repository) -> list[str]:
        names = []
        async for item in self.client.list(by_kind("Snapshot"), namespace=repo.namespace):
            snap = cast(Any, item)
            if (snap.spec or {}).get("repository") == repo.name:
                names.append(snap.metadata.name)
        return names
