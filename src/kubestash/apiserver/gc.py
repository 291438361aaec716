"""Garbage collection: ownerReferences, foreground/orphan deletion, namespace termination.

Runs beside the request handlers, driven by the store's change events, the way
kube-controller-manager's garbage collector and namespace controller react to
watches. An index of owner uid -> dependents keeps every step proportional to
the objects involved, not to the size of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import defaultdict
from typing import Any

from kubestash.apiserver.errors import ApiError
from kubestash.apiserver.objects import FOREGROUND, ORPHAN, ObjectManager, Propagation
from kubestash.apiserver.store import Event

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
"""(resource, namespace, name) as stored."""


def _key(resource: str, obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return resource, meta.get("namespace") or "", meta["name"]


class GarbageCollector:
    def __init__(self, manager: ObjectManager) -> None:
        self.manager = manager
        self.store = manager.store
        self._uids: dict[str, Key] = {}
        self._dependents: dict[str, set[Key]] = defaultdict(set)
        self._owners: dict[Key, set[str]] = {}
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        for resource, obj in self.store.list_all():
            self._index(resource, obj)
            self._react(resource, obj)
        self.store.listeners.append(self._on_event)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def idle(self) -> None:
        """Wait until every queued collection step has run (tests)."""
        while not self._queue.empty():
            await asyncio.sleep(0.01)

    # -------------------------------------------------------------- indexing
    def _index(self, resource: str, obj: dict[str, Any]) -> None:
        key = _key(resource, obj)
        uid = obj["metadata"].get("uid")
        if uid:
            self._uids[uid] = key
        owners = {ref["uid"] for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("uid")}
        for stale in self._owners.get(key, set()) - owners:
            self._dependents[stale].discard(key)
        for uid_ in owners:
            self._dependents[uid_].add(key)
        self._owners[key] = owners

    def _unindex(self, resource: str, obj: dict[str, Any]) -> None:
        key = _key(resource, obj)
        self._uids.pop(obj["metadata"].get("uid", ""), None)
        for owner in self._owners.pop(key, set()):
            self._dependents[owner].discard(key)

    def _on_event(self, event: Event) -> None:
        if event.type == "DELETED":
            for owner in self._owners.get(_key(event.resource, event.obj), set()):
                if owner in self._uids:  # an owner waiting in foreground deletion may now go
                    self._queue.put_nowait(("finalize", self._uids[owner]))
            self._unindex(event.resource, event.obj)
            uid = event.obj["metadata"].get("uid")
            if uid and self._dependents.get(uid):
                self._queue.put_nowait(("owner-gone", uid))
            ns = event.obj["metadata"].get("namespace")
            if ns:
                self._queue.put_nowait(("namespace", ns))
        else:
            self._index(event.resource, event.obj)
            self._react(event.resource, event.obj)

    def _react(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp"):
            return
        if resource == "namespaces":
            self._queue.put_nowait(("namespace", meta["name"]))
            return
        finalizers = meta.get("finalizers") or []
        if FOREGROUND in finalizers or ORPHAN in finalizers:
            self._queue.put_nowait(("finalize", _key(resource, obj)))

    # ------------------------------------------------------------------- work
    async def _run(self) -> None:
        while True:
            kind, arg = await self._queue.get()
            try:
                if kind == "owner-gone":
                    self._collect_dependents(arg)
                elif kind == "finalize":
                    self._finalize(arg)
                elif kind == "namespace":
                    self._terminate_namespace(arg)
            except ApiError as exc:
                log.debug("garbage collection step %s %s: %s", kind, arg, exc.message)
            except Exception:
                log.exception("garbage collection step %s %s failed", kind, arg)
            await asyncio.sleep(0)

    def _delete(self, key: Key, propagation: Propagation = "Background") -> None:
        rt = self.manager.registry.by_key(key[0])
        if rt is None:
            self.store.delete(*key)
            return
        self.manager.delete(rt, key[1], key[2], propagation=propagation)

    def _collect_dependents(self, owner_uid: str) -> None:
        for key in list(self._dependents.get(owner_uid, ())):
            dependent = self.store.get(*key)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") in self._uids]
            if not alive:
                self._delete(key)
            elif len(alive) != len(refs):
                updated = copy.deepcopy(dependent)
                updated["metadata"]["ownerReferences"] = alive
                self.store.update(*key, updated)

    def _finalize(self, key: Key) -> None:
        obj = self.store.get(*key)
        if obj is None:
            return
        uid = obj["metadata"].get("uid", "")
        finalizers = list(obj["metadata"].get("finalizers") or [])
        dependents = [d for d in self._dependents.get(uid, ()) if self.store.get(*d) is not None]
        if ORPHAN in finalizers:
            for dep_key in dependents:
                dep = self.store.get(*dep_key)
                if dep is not None:
                    dep = copy.deepcopy(dep)
                    dep["metadata"]["ownerReferences"] = [
                        r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
                    ] or None
                    if dep["metadata"]["ownerReferences"] is None:
                        del dep["metadata"]["ownerReferences"]
                    self.store.update(*dep_key, dep)
            finalizers.remove(ORPHAN)
        elif FOREGROUND in finalizers:
            if dependents:
                for dep_key in dependents:
                    dep = self.store.get(*dep_key)
                    if dep is not None and not dep["metadata"].get("deletionTimestamp"):
                        self._delete(dep_key, "Foreground")
                return  # the owner goes once its dependents are gone (re-queued on their deletion)
            finalizers.remove(FOREGROUND)
        else:
            return
        updated = copy.deepcopy(obj)
        updated["metadata"]["finalizers"] = finalizers
        if finalizers:
            self.store.update(*key, updated)
        else:
            self.store.delete(*key)

    def _terminate_namespace(self, name: str) -> None:
        ns = self.store.get("namespaces", "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining = self.store.list_namespace(name)
        for resource, obj in remaining:
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(_key(resource, obj))
        if not self.store.list_namespace(name):
            self.store.delete("namespaces", "", name)
