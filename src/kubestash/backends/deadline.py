"""A time limit on every backend request, so one silent endpoint cannot hold a controller's workers.

Client libraries retry unreachable endpoints for minutes (obstore up to 3, Google's client 2); a reconcile
waiting that long holds a worker, and a few dead BackupStorages would starve the healthy ones. The operator
therefore wraps each backend it opens: an operation that has not answered within the limit fails as
``Unreachable`` and the reconcile retries later with backoff, reporting the cause meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from kubestash.backends.base import BackendError, ObjectBackend, ObjectInfo

T = TypeVar("T")

DEFAULT_SECONDS = 30.0


class TimeLimited:
    """An :class:`ObjectBackend` that gives each request of ``inner`` at most ``seconds``."""

    def __init__(self, inner: ObjectBackend, seconds: float = DEFAULT_SECONDS) -> None:
        self._inner = inner
        self._seconds = seconds

    @property
    def description(self) -> str:
        return self._inner.description

    def close(self) -> None:
        self._inner.close()

    async def put(self, path: str, data: bytes) -> None:
        await self._limit(self._inner.put(path, data), "put", path)

    async def get(self, path: str) -> bytes:
        return await self._limit(self._inner.get(path), "get", path)

    async def get_range(self, path: str, offset: int, length: int) -> bytes:
        return await self._limit(self._inner.get_range(path, offset, length), "get", path)

    async def exists(self, path: str) -> bool:
        return await self._limit(self._inner.exists(path), "head", path)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        items = aiter(self._inner.list(prefix))
        while True:
            try:
                item = await self._limit(anext(items), "list", prefix)
            except StopAsyncIteration:
                return
            yield item

    async def delete(self, path: str) -> None:
        await self._limit(self._inner.delete(path), "delete", path)

    async def delete_prefix(self, prefix: str) -> int:
        # Many requests; the limit applies to the whole, scaled so large wipes are not cut short.
        return await self._limit(self._inner.delete_prefix(prefix), "delete", prefix, factor=20)

    async def check(self) -> None:
        await self._limit(self._inner.check(), "check", "")

    async def _limit(self, op: Awaitable[T], name: str, path: str, *, factor: int = 1) -> T:
        seconds = self._seconds * factor
        try:
            return await asyncio.wait_for(op, seconds)
        except TimeoutError:
            where = f"{self.description}/{path.strip('/')}" if path.strip("/") else self.description
            raise BackendError("Unreachable", f"{name} {where}: no answer within {seconds:g}s") from None
