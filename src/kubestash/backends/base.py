"""One interface over the places backups land: a local directory, S3, GCS, Azure Blob.

Controllers and the engine see only :class:`ObjectBackend`; which provider sits
behind it is decided once, from a BackupStorage spec and its Secret
(:func:`kubestash.backends.factory.open_backend`). Paths are relative to the
BackupStorage's prefix (``metadata.yaml``, ``<repo path>/repository.yaml``).

Errors are classified (:class:`BackendError.reason`) so a BackupStorage's
status can say *why* it is not ready -- wrong credentials, a missing bucket and
an unreachable endpoint read differently -- and never carry a secret value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

ErrorReason = Literal[
    "NotFound",
    "BucketNotFound",
    "InvalidCredentials",
    "PermissionDenied",
    "Unreachable",
    "InvalidConfiguration",
    "Unknown",
]


class BackendError(Exception):
    def __init__(self, reason: ErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    """Relative to the backend's prefix, "/"-separated."""
    size: int


class ObjectBackend(Protocol):
    @property
    def description(self) -> str:
        """Where this is, for messages (``s3://bucket/prefix``); never includes credentials."""
        ...

    async def put(self, path: str, data: bytes) -> None: ...

    async def get(self, path: str) -> bytes:
        """Raises BackendError("NotFound") for a missing object."""
        ...

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the object), in one ranged request: a
        repository reads a blob or a pack header without downloading the whole pack."""
        ...

    async def exists(self, path: str) -> bool: ...

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object under ``prefix`` (recursive)."""
        ...

    async def delete(self, path: str) -> None:
        """Deleting a missing object is not an error."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix``; returns how many objects were deleted."""
        ...

    async def check(self) -> None:
        """Prove the location is reachable and writable with these credentials, or raise BackendError."""
        ...

    def close(self) -> None:
        """Done with this backend: what it runs in the background stops (a request still retrying on a thread
        stops at its next attempt instead of going on for its client's minutes). Idempotent."""
        ...
