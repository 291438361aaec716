"""The controller runtime against the bundled API server: informers, restarts, 410, controllers, events."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from lightkube import AsyncClient, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace

from apiserver_process import ServerProcess
from kubestash.runtime.controller import Controller, Result, owner_keys
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key


def clients(server: ServerProcess) -> tuple[Client, AsyncClient]:
    config = KubeConfig.from_file(str(server.kubeconfig))
    return Client(config=config), AsyncClient(config=config)


def new_namespace(kube: Client) -> str:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


def cm(name: str, ns: str, value: str = "v", owner: ConfigMap | None = None) -> ConfigMap:
    meta = ObjectMeta(name=name, namespace=ns)
    if owner is not None:
        meta.ownerReferences = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid}  # type: ignore[list-item]
        ]
    return ConfigMap(metadata=meta, data={"k": value})


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_informer_lists_then_watches(server: ServerProcess) -> None:
    kube, client = clients(server)
    ns = new_namespace(kube)
    kube.create(cm("before", ns))

    async def scenario() -> list[tuple[str, str]]:
        informer = Informer(client, ConfigMap, namespace=ns)
        events: list[tuple[str, str]] = []
        informer.add_handler(lambda e, o: events.append((e, o["metadata"]["name"])))
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 10)
        await asyncio.to_thread(kube.create, cm("after", ns))
        await asyncio.to_thread(kube.delete, ConfigMap, "before", namespace=ns)
        await until(lambda: ("DELETED", "before") in events)
        assert set(informer.cache) == {(ns, "after")}
        await informer.stop()
        return events

    assert asyncio.run(scenario()) == [("ADDED", "before"), ("ADDED", "after"), ("DELETED", "before")]


def test_informer_survives_api_server_restart_without_losing_updates(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    kube, client = clients(fresh_server)
    ns = new_namespace(kube)

    async def scenario() -> Counter[tuple[str, str]]:
        informer = Informer(client, ConfigMap, namespace=ns, retry_delay=0.1)
        seen: Counter[tuple[str, str]] = Counter()
        informer.add_handler(lambda e, o: seen.update([(e, o["metadata"]["name"] + "=" + o["data"]["k"])]))
        informer.start()
        await asyncio.wait_for(informer.synced.wait(), 10)
        await asyncio.to_thread(kube.create, cm("a", ns, "1"))
        await until(lambda: ("ADDED", "a=1") in seen)
        await asyncio.to_thread(fresh_server.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(fresh_server.start)
        kube2, _ = clients(fresh_server)
        await asyncio.to_thread(kube2.patch, ConfigMap, "a", {"data": {"k": "2"}}, namespace=ns)
        await asyncio.to_thread(kube2.create, cm("b", ns, "1"))
        await until(lambda: ("ADDED", "b=1") in seen, timeout=20)
        assert informer.get(ns, "a")["data"] == {"k": "2"}  # type: ignore[index]
        await informer.stop()
        return seen

    seen = asyncio.run(scenario())
    assert seen == Counter({("ADDED", "a=1"): 1, ("MODIFIED", "a=2"): 1, ("ADDED", "b=1"): 1}), seen


def test_informer_relists_on_410_and_reports_the_difference(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, cache_dir=tmp_path / "cache", extra_args=("--watch-history", "10")).start()
    kube, client = clients(server)
    try:

        async def scenario() -> list[tuple[str, str]]:
            informer = Informer(client, ConfigMap, namespace="default", retry_delay=0.05)
            events: list[tuple[str, str]] = []
            informer.add_handler(lambda e, o: events.append((e, o["metadata"]["name"])))
            await informer._relist()  # the initial list, then pretend the watch was away for long
            stale = informer._rv
            await asyncio.to_thread(kube.create, cm("new", "default"))
            for i in range(40):
                await asyncio.to_thread(kube.patch, ConfigMap, "new", {"data": {"k": str(i)}}, namespace="default")
            informer._rv = stale
            informer.start()
            await until(lambda: informer.relists >= 2 and informer.get("default", "new") is not None)
            await informer.stop()
            return events

        events = asyncio.run(scenario())
        assert events == [("ADDED", "new")], "the relist reports the object once, not 40 missed updates"
    finally:
        server.stop()


def test_controller_serialises_keys_retries_and_maps_owners(server: ServerProcess) -> None:
    kube, client = clients(server)
    ns = new_namespace(kube)
    owner = kube.create(cm("owner", ns))

    async def scenario() -> tuple[Counter[Key], int, int]:
        informer = Informer(client, ConfigMap, namespace=ns)
        running: set[Key] = set()
        overlaps = 0
        calls: Counter[Key] = Counter()
        failures = 0

        async def reconcile(key: Key) -> Result | None:
            nonlocal overlaps, failures
            if key in running:
                overlaps += 1
            running.add(key)
            calls[key] += 1
            await asyncio.sleep(0.02)
            running.discard(key)
            if key[1] == "flaky" and failures < 2:
                failures += 1
                raise RuntimeError("transient")
            return None

        controller = Controller("test", reconcile, workers=4)
        controller.watch(informer)
        controller.watch(informer, owner_keys("ConfigMap"))
        informer.start()
        controller.start()
        await asyncio.wait_for(informer.synced.wait(), 10)
        for i in range(20):
            await asyncio.to_thread(kube.patch, ConfigMap, "owner", {"data": {"k": str(i)}}, namespace=ns)
        await asyncio.to_thread(kube.create, cm("child", ns, owner=owner))
        await asyncio.to_thread(kube.create, cm("flaky", ns))
        await until(lambda: calls[(ns, "flaky")] >= 3 and calls[(ns, "child")] >= 1)
        await asyncio.sleep(0.3)
        await controller.stop()
        await informer.stop()
        return calls, overlaps, failures

    calls, overlaps, failures = asyncio.run(scenario())
    assert overlaps == 0, "one reconcile per key at a time"
    assert failures == 2 and calls[(ns, "flaky")] == 3, "failed reconciles are retried until they succeed"
    assert calls[(ns, "owner")] < 21, "bursts of changes collapse into fewer reconciles"
    assert calls[(ns, "owner")] >= 2, "the child's creation was mapped to its owner"


def test_requeue_after_and_events(server: ServerProcess) -> None:
    kube, client = clients(server)
    ns = new_namespace(kube)
    obj = kube.create(cm("polled", ns))

    async def scenario() -> int:
        calls = 0

        async def reconcile(key: Key) -> Result:
            nonlocal calls
            calls += 1
            return Result(requeue_after=0.05)

        controller = Controller("poller", reconcile, workers=1)
        controller.start()
        controller.queue.add((ns, "polled"))
        await asyncio.sleep(0.5)
        await controller.stop()
        await EventRecorder(client, "kubestash-test").record(
            obj.to_dict(), "Normal", "Polled", f"reconciled {calls} times"
        )
        return calls

    calls = asyncio.run(scenario())
    assert 4 <= calls <= 12
    events = [e for e in kube.list(Event, namespace=ns) if e.involvedObject.name == "polled"]
    assert [(e.reason, e.type, e.source.component) for e in events] == [("Polled", "Normal", "kubestash-test")]
