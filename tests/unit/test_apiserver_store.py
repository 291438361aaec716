"""The SQLite store: resourceVersions, optimistic concurrency, history, compaction, reopening."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubestash.apiserver.store import AlreadyExists, Conflict, Gone, NotFound, Store


def cm(name: str, data: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "demo"},
        "data": {"k": data},
    }


def test_versions_are_global_and_monotonic(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    a = store.create("configmaps", "demo", "a", cm("a"))
    b = store.create("secrets", "demo", "b", cm("b"))
    a2 = store.update("configmaps", "demo", "a", cm("a", "y"))
    versions = [int(o["metadata"]["resourceVersion"]) for o in (a, b, a2)]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert store.resource_version == versions[-1]


def test_stale_update_conflicts_and_missing_objects_are_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    first = store.create("configmaps", "demo", "a", cm("a"))
    stale = first["metadata"]["resourceVersion"]
    store.update("configmaps", "demo", "a", cm("a", "y"), expected_rv=stale)
    with pytest.raises(Conflict):
        store.update("configmaps", "demo", "a", cm("a", "z"), expected_rv=stale)
    with pytest.raises(AlreadyExists):
        store.create("configmaps", "demo", "a", cm("a"))
    with pytest.raises(NotFound):
        store.update("configmaps", "demo", "missing", cm("missing"))
    with pytest.raises(NotFound):
        store.delete("configmaps", "demo", "missing")
    assert store.get("configmaps", "demo", "a")["data"] == {"k": "y"}  # type: ignore[index]


def test_history_replays_in_order_and_compaction_gives_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", history=5)
    start = store.resource_version
    for i in range(3):
        store.create("configmaps", "demo", f"c{i}", cm(f"c{i}"))
    store.delete("configmaps", "demo", "c0")
    events = store.events_since("configmaps", "demo", start)
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [
        ("ADDED", "c0"),
        ("ADDED", "c1"),
        ("ADDED", "c2"),
        ("DELETED", "c0"),
    ]
    for i in range(1200):
        store.update("configmaps", "demo", "c1", cm("c1", str(i)))
    with pytest.raises(Gone):
        store.events_since("configmaps", "demo", start)
    assert len(store.events_since("configmaps", "demo", store.resource_version - 3)) == 3


def test_reopen_keeps_objects_and_continues_versions(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.create("configmaps", "demo", "a", cm("a"))
    store.delete("configmaps", "demo", "a")
    last = store.resource_version
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert reopened.get("configmaps", "demo", "a") is None
    created = reopened.create("configmaps", "demo", "b", cm("b"))
    assert int(created["metadata"]["resourceVersion"]) == last + 1


def test_subscribers_see_committed_events_only_for_their_resource() -> None:
    async def scenario() -> list[str]:
        store = Store(":memory:")
        sub = store.subscribe("configmaps", "demo")
        store.create("configmaps", "demo", "a", cm("a"))
        store.create("configmaps", "other", "b", cm("b"))
        store.create("secrets", "demo", "c", cm("c"))
        with pytest.raises(AlreadyExists):
            store.create("configmaps", "demo", "a", cm("a"))
        names = []
        while not sub.queue.empty():
            event = await sub.queue.get()
            assert event is not None
            names.append(f"{event.type}:{event.obj['metadata']['name']}")
        return names

    assert asyncio.run(scenario()) == ["ADDED:a"]


def test_reopen_after_compacting_every_event_keeps_the_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", history=0)
    store.create("configmaps", "demo", "a", cm("a"))
    for i in range(5):
        store.update("configmaps", "demo", "a", cm("a", str(i)))
    last = store.resource_version
    store.close()
    reopened = Store(tmp_path / "s.db", history=0)
    assert reopened.resource_version == last
    assert int(reopened.create("configmaps", "demo", "b", cm("b"))["metadata"]["resourceVersion"]) == last + 1
