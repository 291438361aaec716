"""Controllers: a reconcile function, the informers that trigger it, and workers draining a queue.

Reconcilers are level-triggered: they receive a key, read the current state
from the caches and converge it. The runtime guarantees one reconcile per key
at a time, retries failures with backoff, honours ``requeue_after``, and maps
changes of owned objects to their owner's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubestash.runtime.informer import EventType, Informer, Key, key_of
from kubestash.runtime.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None
    """Reconcile this key again after so many seconds (polling something outside the API)."""


Reconciler = Callable[[Key], Awaitable[Result | None]]
Mapper = Callable[[dict[str, Any]], Iterable[Key]]


def own_key(obj: dict[str, Any]) -> Iterable[Key]:
    return [key_of(obj)]


def owner_keys(kind: str, api_version: str | None = None) -> Mapper:
    """Map an object to the keys of its controller owners of ``kind`` (same namespace)."""

    def mapper(obj: dict[str, Any]) -> Iterable[Key]:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == kind and (api_version is None or ref.get("apiVersion") == api_version):
                yield str(meta.get("namespace") or ""), str(ref.get("name"))

    return mapper


class Controller:
    def __init__(self, name: str, reconcile: Reconciler, *, workers: int = 2) -> None:
        self.name = name
        self.reconcile = reconcile
        self.workers = workers
        self.queue: WorkQueue[Key] = WorkQueue()
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, informer: Informer, mapper: Mapper = own_key) -> None:
        def handler(event: EventType, obj: dict[str, Any]) -> None:
            for key in mapper(obj):
                self.queue.add(key)

        informer.add_handler(handler)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.workers):
            self._tasks.append(loop.create_task(self._worker(), name=f"{self.name}-worker-{i}"))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking work; reconciles already running get ``grace`` seconds to finish, then are cancelled.

        Cancelling is safe because reconciles are level-triggered: the next start redoes whatever was cut
        short. Without the limit, one reconcile waiting on a dead endpoint would hold up shutdown."""
        self.queue.shutdown()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                result = await self.reconcile(key)
            except Exception:
                delay = self.queue.add_rate_limited(key)
                log.exception("%s: reconcile %s/%s failed; retrying in %.2fs", self.name, *key, delay)
            else:
                self.queue.forget(key)
                if result is not None and result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
            finally:
                self.queue.done(key)
