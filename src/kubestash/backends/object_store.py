""":class:`ObjectBackend` over any obstore store: local directory, S3, Azure Blob and GCS share one implementation.

obstore (Rust ``object_store`` bindings) speaks all four providers with one async API, so the provider
differences live only in how a store is built (:mod:`kubestash.backends.factory`). This class adds what the
rest of KubeStash needs on top:

* the BackupStorage ``prefix`` and secret scrubbing (:class:`~kubestash.backends.keys.KeySpace`);
* classified errors (:class:`~kubestash.backends.base.BackendError`). obstore raises ``FileNotFoundError``
  for any 404 and mostly ``GenericError``/``PermissionDeniedError`` otherwise, so the reason is read from
  the exception type *and* the provider's error code quoted in the message (``NoSuchBucket``,
  ``ContainerNotFound``, ``InvalidAccessKeyId``, ``AuthenticationFailed``...). A 404 on a write or a list
  can only mean the bucket/container is missing, whatever the body says (GCS sends none);
* messages safe for a status condition: only the summary line of the obstore error is kept, shortened;
* an optional cap on concurrent requests (``maxConnections``), because obstore's HTTP client has no
  connection limit of its own -- only an idle-pool size.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError

from kubestash.backends.base import BackendError, ErrorReason, ObjectInfo
from kubestash.backends.keys import KeySpace

if TYPE_CHECKING:
    from obstore.store import ObjectStore

_DELETE_BATCH = 1000
_MAX_MESSAGE = 400

_BUCKET_MISSING = ("NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist")
_BAD_CREDENTIALS = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthenticationFailed",
    "InvalidClientTokenId",
    "ExpiredToken",
    "InvalidToken",
    "failed to authenticate",
    "Invalid Access Key",
    "invalid_grant",
    "401 Unauthorized",
)
_PERMISSION = ("AccessDenied", "AuthorizationPermissionMismatch", "AuthorizationFailure", "403 Forbidden")
_UNREACHABLE = (
    "error sending request",
    "Connection refused",
    "connection refused",
    "dns error",
    "failed to lookup address",
    "timed out",
    "Timeout",
    "tcp connect error",
)
_CODE = re.compile(r"<Code>\s*([A-Za-z]+)\s*</Code>")
_XML_MESSAGE = re.compile(r"<Message>\s*([^<\n]*)")
_STATUS = re.compile(r"status code: (\d{3}[A-Za-z ]*)")


class ObstoreBackend:
    """An :class:`~kubestash.backends.base.ObjectBackend` over an obstore store and a key prefix."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        description: str,
        prefix: str = "",
        secrets: Iterable[str] = (),
        max_connections: int | None = None,
    ) -> None:
        self._store = store
        self._keys = KeySpace(description, prefix, secrets)
        self._limit = asyncio.Semaphore(max_connections) if max_connections and max_connections > 0 else None

    @property
    def description(self) -> str:
        return self._keys.description

    # ------------------------------------------------------------ operations

    async def put(self, path: str, data: bytes) -> None:
        key = self._keys.key(path)
        try:
            async with self._slot():
                await obstore.put_async(self._store, key, data)
        except Exception as e:
            raise self._error(e, "put", path, missing_means_bucket=True) from None

    async def get(self, path: str) -> bytes:
        key = self._keys.key(path)
        try:
            async with self._slot():
                result = await obstore.get_async(self._store, key)
                return bytes(await result.bytes_async())
        except Exception as e:
            raise self._error(e, "get", path) from None

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        key = self._keys.key(path)
        try:
            async with self._slot():
                return bytes(await obstore.get_range_async(self._store, key, start=offset, length=length))
        except Exception as e:
            raise self._error(e, "get", path) from None

    async def exists(self, path: str) -> bool:
        key = self._keys.key(path)
        try:
            async with self._slot():
                await obstore.head_async(self._store, key)
        except Exception as e:
            err = self._error(e, "head", path)
            if err.reason == "NotFound":
                return False
            raise err from None
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        full = self._keys.join(prefix)
        try:
            stream = obstore.list(self._store, full or None, chunk_size=1000)
            async for batch in stream:
                for meta in batch:
                    yield ObjectInfo(path=self._keys.relative(meta["path"]), size=int(meta["size"]))
        except Exception as e:
            err = self._error(e, "list", prefix, missing_means_bucket=True)
            if err.reason == "NotFound":  # a local directory that does not exist yet: nothing under it
                return
            raise err from None

    async def delete(self, path: str) -> None:
        key = self._keys.key(path)
        try:
            async with self._slot():
                await obstore.delete_async(self._store, key)
        except Exception as e:
            err = self._error(e, "delete", path)
            if err.reason != "NotFound":
                raise err from None

    async def delete_prefix(self, prefix: str) -> int:
        paths = [self._keys.join(info.path) async for info in self.list(prefix)]
        for start in range(0, len(paths), _DELETE_BATCH):
            batch = paths[start : start + _DELETE_BATCH]
            try:
                async with self._slot():
                    await obstore.delete_async(self._store, batch)
            except Exception as e:
                err = self._error(e, "delete", prefix)
                if err.reason != "NotFound":  # a concurrent delete got there first
                    raise err from None
        return len(paths)

    async def check(self) -> None:
        probe = f".kubestash-probe-{uuid.uuid4().hex}"
        await self.put(probe, b"kubestash write probe\n")
        await self.delete(probe)

    def close(self) -> None:
        """Nothing to stop: obstore's requests are futures of the caller's tasks, cancelled with them."""

    # ------------------------------------------------------------ helpers

    def _slot(self) -> asyncio.Semaphore | _NoLimit:
        return self._limit if self._limit is not None else _NO_LIMIT

    def _error(self, exc: BaseException, op: str, path: str, *, missing_means_bucket: bool = False) -> BackendError:
        reason, detail = classify(exc, missing_means_bucket=missing_means_bucket)
        return self._keys.error(reason, op, path, detail)


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *_: object) -> None:
        return None


_NO_LIMIT = _NoLimit()


def classify(exc: BaseException, *, missing_means_bucket: bool = False) -> tuple[ErrorReason, str]:
    """The reason for an obstore (or OS) exception and a one-line summary of it (not yet scrubbed)."""
    if isinstance(exc, BackendError):
        return exc.reason, exc.message
    text = str(exc)
    detail = summarize(text)
    if any(s in text for s in _BUCKET_MISSING):
        return "BucketNotFound", detail
    if isinstance(exc, UnauthenticatedError) or any(s in text for s in _BAD_CREDENTIALS):
        return "InvalidCredentials", detail
    if isinstance(exc, FileNotFoundError):
        return ("BucketNotFound" if missing_means_bucket else "NotFound"), detail
    if isinstance(exc, PermissionDeniedError | PermissionError) or any(s in text for s in _PERMISSION):
        return "PermissionDenied", detail
    if any(s in text for s in _UNREACHABLE):
        return "Unreachable", detail
    if isinstance(exc, BaseError | OSError | ValueError):
        return "Unknown", detail
    return "Unknown", f"{type(exc).__name__}: {detail}"


def summarize(text: str) -> str:
    """The useful part of an obstore message, on one line and bounded in length: for an HTTP error answer
    the status and the provider's error code and message; otherwise the first paragraph (no debug dump)."""
    head = text.split("Debug source:", 1)[0]
    status = _STATUS.search(head)
    code = _CODE.search(head)
    msg = _XML_MESSAGE.search(head)
    if status or code:
        parts = [f"HTTP {status.group(1).strip()}" if status else "", code.group(1) if code else ""]
        line = ", ".join(p for p in parts if p)
        if msg and msg.group(1).strip():
            line += f": {msg.group(1).strip()}"
    else:
        line = " ".join(head.split()).rstrip(" :")
    if len(line) > _MAX_MESSAGE:
        line = line[: _MAX_MESSAGE - 3] + "..."
    return line
