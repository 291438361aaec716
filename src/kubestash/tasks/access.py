"""Opening a Repository's component repositories from the API server.

The backup and restore tasks and the repository commands of the CLI (``download``, ``unlock``,
``password``) all start the same way: Repository → its BackupStorage → the storage and encryption Secrets →
one restic location per component path (``repository/v1/<session>/<component>``). Failures are
:class:`AccessError` with a message naming the object or Secret that is missing, never a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient

from kubestash.api.shared import ObjectReference
from kubestash.api.storage import BackupStorage, Repository
from kubestash.controllers.backupstorage import SecretMissing, repository_secrets
from kubestash.controllers.common import get_or_none
from kubestash.controllers.kinds import by_kind
from kubestash.engine.base import EngineError, RepositoryTarget
from kubestash.engine.location import repository_target


class AccessError(Exception):
    """An object or Secret needed to reach a repository is missing or unreadable; the message says which."""


@dataclass(frozen=True)
class RepositoryAccess:
    repository: Repository
    storage: BackupStorage
    storage_secret: Mapping[str, bytes] | None = field(repr=False)
    encryption_secret: Mapping[str, bytes] = field(repr=False)

    def directory(self, component_path: str) -> str:
        """The component repository's directory inside the storage (``<Repository path>/<component path>``)."""
        return f"{(self.repository.spec.path or '').strip('/')}/{component_path.strip('/')}"

    def target(self, component_path: str, scratch_dir: Path, *, enable_cache: bool = True) -> RepositoryTarget:
        try:
            return repository_target(
                self.storage.spec.storage,
                self.storage_secret,
                self.encryption_secret,
                self.directory(component_path),
                scratch_dir=scratch_dir,
                enable_cache=enable_cache,
            )
        except EngineError as exc:
            raise AccessError(exc.message) from None

    def component_paths(self) -> list[str]:
        """Every component repository the Repository's Snapshots have used so far."""
        status = self.repository.status
        return list((status.component_paths if status else None) or [])


async def get_object(client: AsyncClient, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """The object as JSON data; :class:`AccessError` naming it if it does not exist or cannot be read."""
    where = f"{namespace}/{name}" if namespace else name
    try:
        obj = await get_or_none(client, by_kind(kind), name, namespace or None)
    except ApiError as exc:
        raise AccessError(f"{kind} {where}: {exc.status.message}") from None
    if obj is None:
        raise AccessError(f"{kind} {where} not found")
    return obj


async def open_repository(
    client: AsyncClient, namespace: str, name: str, *, encryption_secret: ObjectReference | None = None
) -> RepositoryAccess:
    """The Repository ``namespace/name`` and everything needed to open its component repositories.

    ``encryption_secret`` overrides the Repository's own (a RestoreSession's ``dataSource.encryptionSecret``).
    """
    repository = Repository.model_validate(await get_object(client, "Repository", name, namespace))
    if encryption_secret is not None and encryption_secret.name:
        ref = encryption_secret.model_copy(update={"namespace": encryption_secret.namespace or namespace})
        repository = repository.model_copy(
            update={"spec": repository.spec.model_copy(update={"encryption_secret": ref})}
        )
    ref_storage = repository.spec.storage_ref
    if ref_storage is None or not ref_storage.name:
        raise AccessError(f"Repository {namespace}/{name} has no storageRef")
    storage = BackupStorage.model_validate(
        await get_object(client, "BackupStorage", ref_storage.name, ref_storage.namespace or namespace)
    )
    try:
        storage_secret, encryption = await repository_secrets(client, storage, repository)
    except SecretMissing as exc:
        raise AccessError(str(exc)) from None
    except ApiError as exc:
        raise AccessError(f"cannot read the Secrets of Repository {namespace}/{name}: {exc.status.message}") from None
    return RepositoryAccess(repository, storage, storage_secret, encryption)
