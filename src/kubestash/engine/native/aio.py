"""Running a set of coroutines as tasks, all or none: the first failure is raised once the others are cancelled
and done. ``asyncio.gather`` leaves the others running (they go on writing into what the caller is about to
retry or discard); ``asyncio.TaskGroup`` raises an ``ExceptionGroup``, where the engine's callers catch the
error itself (:class:`~kubestash.engine.native.pack.IntegrityError`, ``StoreError``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_all(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """The results of ``coroutines``, in order."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
