"""Informers: a local cache of one kind kept current by list + watch, feeding controllers.

The informer lists once, then watches from the list's resourceVersion and
resumes from the last version it saw whenever the connection drops (the API
server restarting, a proxy timing out). When that version is too old (410
Gone) it lists again and reports the difference as ADDED/MODIFIED/DELETED, so
handlers never miss a change and see each one once. A resync period re-offers
every cached object, the safety net level-triggered controllers rely on.

Objects are plain JSON dicts: the same code serves built-in kinds, KubeStash's
kinds (decoded with ``kubestash.api`` models by the controllers) and any CRD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.core.resource import NamespacedResource, Resource

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
Key = tuple[str, str]
"""(namespace, name); namespace is "" for cluster-scoped objects."""
Handler = Callable[[EventType, dict[str, Any]], None]


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _as_dict(obj: Any) -> dict[str, Any]:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return dict(data)


class Informer:
    def __init__(
        self,
        client: AsyncClient,
        resource: type[Resource],
        *,
        namespace: str | None = None,
        resync: float | None = None,
        retry_delay: float = 0.5,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.resync = resync
        self.retry_delay = retry_delay
        self.cache: dict[Key, dict[str, Any]] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self.relists = 0
        self._rv: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)
        for obj in self.cache.values():
            handler("ADDED", obj)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get((namespace, name))

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in sorted(self.cache.items()) if namespace is None or ns == namespace]

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._run(), name=f"informer-{self.resource.__name__}"))
        if self.resync:
            self._tasks.append(loop.create_task(self._resync_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # ---------------------------------------------------------------- internals
    def _dispatch(self, event: EventType, obj: dict[str, Any]) -> None:
        for handler in self.handlers:
            try:
                handler(event, obj)
            except Exception:
                log.exception("informer handler failed for %s", key_of(obj))

    async def _relist(self) -> None:
        listing = self.client.list(self.resource, namespace=self._scope())  # type: ignore[type-var]
        fresh: dict[Key, dict[str, Any]] = {}
        async for item in listing:
            obj = _as_dict(item)
            fresh[key_of(obj)] = obj
        self._rv = listing.resourceVersion
        old = self.cache
        self.cache = fresh
        for key, obj in old.items():
            if key not in fresh:
                self._dispatch("DELETED", obj)
        for key, obj in fresh.items():
            before = old.get(key)
            if before is None:
                self._dispatch("ADDED", obj)
            elif (before.get("metadata") or {}).get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._dispatch("MODIFIED", obj)
        self.relists += 1
        self.synced.set()

    def _scope(self) -> str | None:
        """The namespace argument lightkube expects: a name, ALL_NS, or None for cluster-scoped kinds."""
        if not issubclass(self.resource, NamespacedResource):
            return None
        return self.namespace or ALL_NS

    async def _run(self) -> None:
        while True:
            try:
                if self._rv is None:
                    await self._relist()
                await self._watch()
            except ApiError as exc:
                if exc.status.code == 410:
                    log.info("%s: resourceVersion %s expired; listing again", self.resource.__name__, self._rv)
                    self._rv = None
                    continue
                log.warning("%s watch failed: %s", self.resource.__name__, exc.status.message)
                await asyncio.sleep(self.retry_delay)
            except (httpx2.HTTPError, OSError) as exc:
                log.info("%s watch interrupted (%s); resuming from %s", self.resource.__name__, exc, self._rv)
                await asyncio.sleep(self.retry_delay)

    async def _watch(self) -> None:
        watch = self.client.watch(self.resource, namespace=self._scope(), resource_version=self._rv)  # type: ignore[type-var]
        async for event, item in watch:
            obj = _as_dict(item)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if event == "BOOKMARK":
                self._rv = rv or self._rv
                continue
            key = key_of(obj)
            if event == "DELETED":
                self.cache.pop(key, None)
            else:
                self.cache[key] = obj
            self._rv = rv or self._rv
            self._dispatch(event, obj)  # type: ignore[arg-type]

    async def _resync_loop(self) -> None:
        assert self.resync is not None
        while True:
            await asyncio.sleep(self.resync)
            for obj in list(self.cache.values()):
                self._dispatch("SYNC", obj)
