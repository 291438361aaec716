"""The bundled API server driven by lightkube: the semantics controllers rely on."""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube import operators as op
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import CascadeType, PatchType

from apiserver_process import ServerProcess

BackupStorage = create_namespaced_resource("storage.kubestash.com", "v1alpha1", "BackupStorage", "backupstorages")


def client_for(server: ServerProcess) -> Client:
    return Client(config=KubeConfig.from_file(str(server.kubeconfig)), field_manager="tests")


@pytest.fixture
def kube(server: ServerProcess) -> Client:
    return client_for(server)


@pytest.fixture
def ns(kube: Client) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name


def cm(name: str, ns: str, **meta: Any) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, namespace=ns, **meta), data={"k": "v"})


def storage(name: str, ns: str) -> Any:
    return BackupStorage(
        metadata=ObjectMeta(name=name, namespace=ns),
        spec={"storage": {"provider": "s3", "s3": {"bucket": f"b-{ns}-{name}", "region": "us-east-1"}}},
    )


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def gone(kube: Client, res: Any, name: str, ns: str) -> bool:
    try:
        kube.get(res, name, namespace=ns)
    except ApiError as exc:
        return exc.status.code == 404
    return False


def test_custom_resource_crud_with_defaults(kube: Client, ns: str) -> None:
    created = kube.create(storage("s3", ns))
    assert created.metadata.uid and created.metadata.generation == 1
    assert created.spec["deletionPolicy"] == "Delete"
    assert created.spec["usagePolicy"] == {"allowedNamespaces": {"from": "Same"}}
    fetched = kube.get(BackupStorage, "s3", namespace=ns)
    assert fetched.metadata.resourceVersion == created.metadata.resourceVersion
    listed = list(kube.list(BackupStorage, namespace=ns))
    assert [o.metadata.name for o in listed] == ["s3"]
    kube.delete(BackupStorage, "s3", namespace=ns)
    assert gone(kube, BackupStorage, "s3", ns)


def test_admission_rejection_is_422_naming_the_field(kube: Client, ns: str) -> None:
    bad = storage("bad", ns)
    bad.spec["storage"]["s3"].pop("bucket")
    with pytest.raises(ApiError) as caught:
        kube.create(bad)
    assert caught.value.status.code == 422
    assert caught.value.status.reason == "Invalid"
    assert [c.field for c in caught.value.status.details.causes] == ["spec.storage.s3.bucket"]


def test_optimistic_concurrency_two_writers_one_conflict(kube: Client, ns: str) -> None:
    kube.create(cm("shared", ns))
    first, second = kube.get(ConfigMap, "shared", namespace=ns), kube.get(ConfigMap, "shared", namespace=ns)
    first.data = {"writer": "one"}
    second.data = {"writer": "two"}
    kube.replace(first)
    with pytest.raises(ApiError) as caught:
        kube.replace(second)
    assert caught.value.status.code == 409
    assert kube.get(ConfigMap, "shared", namespace=ns).data == {"writer": "one"}


def test_status_subresource_and_generation(kube: Client, ns: str) -> None:
    kube.create(storage("s", ns))
    kube.patch(
        BackupStorage.Status,
        "s",
        {"status": {"phase": "Ready"}, "spec": {"default": True}},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )
    after_status = kube.get(BackupStorage, "s", namespace=ns)
    assert after_status.status == {"phase": "Ready"}
    assert "default" not in after_status.spec, "spec changes are ignored on the status subresource"
    assert after_status.metadata.generation == 1
    kube.patch(
        BackupStorage,
        "s",
        {"spec": {"default": True}, "status": {"phase": "NotReady"}},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )
    after_spec = kube.get(BackupStorage, "s", namespace=ns)
    assert after_spec.spec["default"] is True and after_spec.metadata.generation == 2
    assert after_spec.status == {"phase": "Ready"}, "status is ignored on main-resource writes"


def test_generate_name_and_selectors_and_paging(kube: Client, ns: str) -> None:
    for i in range(7):
        kube.create(cm("", ns, generateName="gen-", labels={"app": "a" if i % 2 else "b", "idx": str(i)}))
    names = [o.metadata.name for o in kube.list(ConfigMap, namespace=ns)]
    assert len(names) == 7 and all(n.startswith("gen-") and len(n) == 9 for n in names)
    assert len(list(kube.list(ConfigMap, namespace=ns, labels={"app": "a"}))) == 3
    assert len(list(kube.list(ConfigMap, namespace=ns, labels={"idx": op.in_(["1", "2", "3"])}))) == 3
    assert len(list(kube.list(ConfigMap, namespace=ns, labels={"idx": op.not_in(["1", "2"])}))) == 5
    assert len(list(kube.list(ConfigMap, namespace=ns, fields={"metadata.name": names[0]}))) == 1
    paged = [o.metadata.name for o in kube.list(ConfigMap, namespace=ns, chunk_size=2)]
    assert paged == sorted(names)


def test_watch_resumes_from_resource_version(kube: Client, ns: str) -> None:
    start = kube.create(cm("a", ns)).metadata.resourceVersion
    kube.create(cm("b", ns))
    kube.patch(ConfigMap, "a", {"data": {"k": "changed"}}, namespace=ns)
    kube.delete(ConfigMap, "b", namespace=ns)
    seen = []
    for event, obj in kube.watch(ConfigMap, namespace=ns, resource_version=start, server_timeout=5):
        seen.append((event, obj.metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_server_side_apply_conflict_and_force(kube: Client, ns: str) -> None:
    kube.apply(cm("applied", ns), field_manager="alice")
    changed = cm("applied", ns)
    changed.data = {"k": "other"}
    with pytest.raises(ApiError) as caught:
        kube.apply(changed, field_manager="bob")
    assert caught.value.status.code == 409 and "alice" in caught.value.status.message
    kube.apply(changed, field_manager="bob", force=True)
    assert kube.get(ConfigMap, "applied", namespace=ns).data == {"k": "other"}


def test_finalizer_blocks_deletion_until_removed(kube: Client, ns: str) -> None:
    kube.create(cm("guarded", ns, finalizers=["example.com/guard"]))
    kube.delete(ConfigMap, "guarded", namespace=ns)
    pending = kube.get(ConfigMap, "guarded", namespace=ns)
    assert pending.metadata.deletionTimestamp is not None
    kube.patch(ConfigMap, "guarded", {"metadata": {"finalizers": None}}, namespace=ns)
    assert gone(kube, ConfigMap, "guarded", ns)


def _owned(kube: Client, ns: str, owner: ConfigMap, name: str) -> None:
    ref = OwnerReference(apiVersion="v1", kind="ConfigMap", name=owner.metadata.name, uid=owner.metadata.uid)
    kube.create(cm(name, ns, ownerReferences=[ref]))


def test_owner_reference_cascade_background(kube: Client, ns: str) -> None:
    owner = kube.create(cm("owner", ns))
    for name in ("child-1", "child-2"):
        _owned(kube, ns, owner, name)
    kube.delete(ConfigMap, "owner", namespace=ns)
    eventually(lambda: gone(kube, ConfigMap, "child-1", ns) and gone(kube, ConfigMap, "child-2", ns))


def test_owner_reference_cascade_foreground_and_orphan(kube: Client, ns: str) -> None:
    owner = kube.create(cm("fg-owner", ns))
    _owned(kube, ns, owner, "fg-child")
    blocker = kube.get(ConfigMap, "fg-child", namespace=ns)
    kube.patch(ConfigMap, "fg-child", {"metadata": {"finalizers": ["example.com/slow"]}}, namespace=ns)
    kube.delete(ConfigMap, "fg-owner", namespace=ns, cascade=CascadeType.FOREGROUND)
    time.sleep(0.3)
    waiting = kube.get(ConfigMap, "fg-owner", namespace=ns)
    assert waiting.metadata.deletionTimestamp and "foregroundDeletion" in waiting.metadata.finalizers
    assert blocker.metadata.uid == kube.get(ConfigMap, "fg-child", namespace=ns).metadata.uid
    kube.patch(ConfigMap, "fg-child", {"metadata": {"finalizers": None}}, namespace=ns)
    eventually(lambda: gone(kube, ConfigMap, "fg-child", ns) and gone(kube, ConfigMap, "fg-owner", ns))

    orphan_owner = kube.create(cm("o-owner", ns))
    _owned(kube, ns, orphan_owner, "o-child")
    kube.delete(ConfigMap, "o-owner", namespace=ns, cascade=CascadeType.ORPHAN)
    eventually(lambda: gone(kube, ConfigMap, "o-owner", ns))
    survivor = kube.get(ConfigMap, "o-child", namespace=ns)
    assert not survivor.metadata.ownerReferences


def test_namespace_deletion_cascades(kube: Client) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    kube.create(cm("inside", name))
    kube.create(storage("inside", name))
    kube.delete(Namespace, name)
    eventually(lambda: gone(kube, Namespace, name, ""))
    assert gone(kube, ConfigMap, "inside", name) and gone(kube, BackupStorage, "inside", name)
    with pytest.raises(ApiError) as caught:
        kube.create(cm("late", name))
    assert caught.value.status.code == 404


def test_watch_delivers_every_event_once_in_order_under_concurrent_writes(server: ServerProcess, ns: str) -> None:
    watcher = client_for(server)
    start = watcher.create(cm("marker", ns)).metadata.resourceVersion
    received: list[tuple[str, str, int]] = []
    done = threading.Event()
    total = 500

    def watch() -> None:
        for event, obj in watcher.watch(ConfigMap, namespace=ns, resource_version=start, server_timeout=60):
            received.append((event, obj.metadata.name, int(obj.metadata.resourceVersion)))
            if len(received) >= total:
                break
        done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def write(worker: int) -> None:
        kube = client_for(server)
        for i in range(total // 10):
            kube.create(cm(f"w{worker}-{i}", ns))

    writers = [threading.Thread(target=write, args=(w,)) for w in range(10)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert done.wait(60), f"only {len(received)} of {total} events arrived"
    names = [name for _, name, _ in received]
    assert len(names) == len(set(names)) == total
    assert all(event == "ADDED" for event, _, _ in received)
    versions = [rv for _, _, rv in received]
    assert versions == sorted(versions) and len(set(versions)) == total


def test_restart_after_kill_9_loses_no_acknowledged_write(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    kube = client_for(fresh_server)
    kube.create(Namespace(metadata=ObjectMeta(name="durable")))
    acknowledged: list[tuple[str, int]] = []
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            try:
                obj = kube.create(cm(f"c{i}", "durable"))
            except Exception:
                return
            acknowledged.append((obj.metadata.name, int(obj.metadata.resourceVersion)))
            i += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    eventually(lambda: len(acknowledged) >= 50)
    assert fresh_server.proc is not None
    os.kill(fresh_server.proc.pid, signal.SIGKILL)
    fresh_server.proc.wait()
    stop.set()
    thread.join(10)
    fresh_server.start()
    kube = client_for(fresh_server)
    stored = {o.metadata.name for o in kube.list(ConfigMap, namespace="durable")}
    missing = [name for name, _ in acknowledged if name not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost"
    after = kube.create(cm("after-restart", "durable"))
    assert int(after.metadata.resourceVersion) > max(rv for _, rv in acknowledged)


def test_too_old_resource_version_is_410(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, cache_dir=tmp_path / "cache", extra_args=("--watch-history", "20")).start()
    try:
        kube = client_for(server)
        start = kube.create(cm("first", "default")).metadata.resourceVersion
        for i in range(60):
            kube.patch(ConfigMap, "first", {"data": {"i": str(i)}}, namespace="default")
        with pytest.raises(ApiError) as caught:
            for _ in kube.watch(ConfigMap, namespace="default", resource_version=start, server_timeout=2):
                pass
        assert caught.value.status.code == 410
    finally:
        server.stop()


def _raw(server: ServerProcess, path: str, token: str | None, method: str = "GET") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{server.url}{path}", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=server.ssl_context(), timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_requests_without_a_valid_token_are_rejected(server: ServerProcess) -> None:
    assert _raw(server, "/api/v1/namespaces", None)[0] == 401
    code, body = _raw(server, "/api/v1/namespaces", "not-the-token")
    assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert _raw(server, "/api/v1/namespaces", server.token)[0] == 200
    assert _raw(server, "/version", None)[0] == 200
    insecure = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/version", context=insecure, timeout=5)


def test_secrets_on_disk_are_private(server: ServerProcess) -> None:
    for path in (server.kubeconfig, server.data_dir / "token", server.data_dir / "pki" / "server.key"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_delete_collection_by_label(server: ServerProcess, kube: Client, ns: str) -> None:
    for i in range(4):
        kube.create(cm(f"d{i}", ns, labels={"batch": "old" if i < 3 else "new"}))
    code, body = _raw(server, f"/api/v1/namespaces/{ns}/configmaps?labelSelector=batch%3Dold", server.token, "DELETE")
    assert code == 200 and len(body["items"]) == 3
    assert [o.metadata.name for o in kube.list(ConfigMap, namespace=ns)] == ["d3"]


def test_sigterm_shuts_down_cleanly_and_insecure_http_is_opt_in(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(data, cache_dir=tmp_path / "cache", extra_args=("--insecure-http",)).start()
    assert server.url.startswith("http://")
    with urllib.request.urlopen(f"{server.url}/api/v1/namespaces", timeout=5) as resp:
        assert resp.status == 200
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
