"""Restores end to end in embedded mode: bundled API server + operator + local executor + restic.

The user's view: back up a PVC, a Deployment or a StatefulSet (as in test_backup_e2e), then apply a
RestoreSession and get the files back -- the same paths, bytes, modes, symlinks, empty directories and
mtimes -- into the same target or another one, from the latest Snapshot, a named one or a point in time,
all components or some, from this namespace or (when the storage allows it) another one.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, AsyncClient, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from apiserver_process import ServerProcess
from e2e_world import (
    World,
    backup_configuration,
    core_resource,
    final_status,
    finished_session,
    manifest_of,
    run_with_operator,
    status,
    tree,
    trigger_now,
    until,
)
from kubestash.api.conditions import parse_time, rfc3339
from kubestash.controllers.kinds import by_kind

RESTORE_FINAL = ("Succeeded", "Failed", "Invalid", "Unknown")
PVC = {"apiGroup": "", "kind": "PersistentVolumeClaim"}


def restore_session(
    name: str,
    target: dict[str, Any] | None,
    addon: str,
    source: dict[str, Any],
    params: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "logical-backup-restore"}
    if params:
        task["params"] = params
    body: dict[str, Any] = {"dataSource": source, "addon": {"name": addon, "tasks": [task]}, **spec}
    if target is not None:
        body["target"] = target
    return {
        "apiVersion": "core.kubestash.com/v1alpha1",
        "kind": "RestoreSession",
        "metadata": {"name": name},
        "spec": body,
    }


async def restored(kube: Client, ns: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st = status(kube, "RestoreSession", name, ns)
        return st if st.get("phase") in RESTORE_FINAL else None

    return await until(done, timeout=timeout, what=f"RestoreSession {name} finished")  # type: ignore[no-any-return]


def without_tmp(p: Path) -> bool:
    return p.name == "skip.tmp"


def latest(repository: str) -> dict[str, Any]:
    return {"repository": repository, "snapshot": "latest", "encryptionSecret": {"name": "encrypt-secret"}}


# ---------------------------------------------------------------- one per backup case, local and S3


def test_pvc_restored_over_itself_and_into_a_new_pvc(server: ServerProcess, kube: Client, world: World) -> None:
    source = world.tmp / "pvc-data"
    tree(source)
    original = manifest_of(source, skip=without_tmp)
    world.pv_pvc("data", source)
    world.apply(backup_configuration("pvc", {**PVC, "name": "data"}, "pvc-addon", {"exclude": "*.tmp"}))
    fresh = world.tmp / "fresh"
    fresh.mkdir()
    world.pv_pvc("fresh", fresh)

    async def body(client: AsyncClient) -> tuple[dict[str, Any], dict[str, Any], bool]:
        assert (await finished_session(kube, world.ns))["phase"] == "Succeeded"
        # The user's data goes wrong after the backup: a file changes, one disappears, one is new.
        (source / "app" / "config.yaml").write_text("corrupted")
        (source / "app" / "data.bin").unlink()
        (source / "app" / "new.txt").write_text("written after the backup")
        world.apply(restore_session("back", {**PVC, "name": "data"}, "pvc-addon", latest("pvc-repo")))
        world.apply(restore_session("copy", {**PVC, "name": "fresh"}, "pvc-addon", latest("pvc-repo")))
        back = await restored(kube, world.ns, "back")
        copy = await restored(kube, world.ns, "copy")
        bc = kube.get(by_kind("BackupConfiguration"), "pvc", namespace=world.ns).to_dict()  # type: ignore[attr-defined]
        return back, copy, bool(bc["spec"].get("paused"))

    back, copy, paused_after = run_with_operator(server, body)
    assert back["phase"] == "Succeeded", json.dumps(back, indent=1)
    assert copy["phase"] == "Succeeded", json.dumps(copy, indent=1)
    assert back["components"]["dump"]["phase"] == "Succeeded" and back["totalComponents"] == 1
    assert back["targetFound"] is True
    assert back["pausedBackups"] == [
        {"apiGroup": "core.kubestash.com", "kind": "BackupConfiguration", "name": "pvc", "namespace": world.ns}
    ]
    assert paused_after is False, "the backup paused for the restore is resumed afterwards"
    snapshot = next(d for d in back["dependencies"] if d["kind"] == "Snapshot")
    assert snapshot["found"] is True and snapshot["name"].startswith("pvc-repo-pvc-")
    after = manifest_of(source, skip=without_tmp)
    assert after.pop("app/new.txt")[0] == "file", "files the snapshot does not have are left alone"
    assert after == original, "changed and deleted files are back, byte for byte"
    assert manifest_of(fresh) == original
    assert (fresh / "app" / "sparse.img").stat().st_blocks * 512 <= 1 << 20, "a sparse file comes back sparse"
    assert not [p for p in fresh.iterdir() if p.name.startswith(".kubestash-restore-")]


def test_deployment_restored_into_another_deployment(server: ServerProcess, kube: Client, world: World) -> None:
    source = world.tmp / "deploy-data"
    tree(source)
    world.pv_pvc("app-data", source)
    world.deployment("demo-app", claim="app-data")
    target = {"apiGroup": "apps", "kind": "Deployment", "name": "demo-app"}
    world.apply(backup_configuration("deploy", target, "workload-addon", {"paths": "/source/data", "exclude": "*.tmp"}))
    other = world.tmp / "other-data"
    other.mkdir()
    world.pv_pvc("other-data", other)
    world.deployment("other-app", claim="other-data")
    partial = world.tmp / "partial-data"
    partial.mkdir()
    world.pv_pvc("partial-data", partial)
    world.deployment("partial-app", claim="partial-data")

    async def body(client: AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        assert (await finished_session(kube, world.ns))["phase"] == "Succeeded"
        deploy = {"apiGroup": "apps", "kind": "Deployment"}
        world.apply(restore_session("whole", {**deploy, "name": "other-app"}, "workload-addon", latest("deploy-repo")))
        world.apply(
            restore_session(
                "logs-only",
                {**deploy, "name": "partial-app"},
                "workload-addon",
                latest("deploy-repo"),
                {"include": "/source/data/app/logs"},
            )
        )
        return await restored(kube, world.ns, "whole"), await restored(kube, world.ns, "logs-only")

    whole, logs_only = run_with_operator(server, body)
    assert whole["phase"] == "Succeeded", json.dumps(whole, indent=1)
    assert manifest_of(other) == manifest_of(source, skip=without_tmp)
    assert logs_only["phase"] == "Succeeded", json.dumps(logs_only, indent=1)
    assert sorted(manifest_of(partial)) == ["app", "app/logs", "app/logs/today.log"]


def test_statefulset_restores_each_replica_and_a_chosen_component(
    server: ServerProcess, kube: Client, world: World
) -> None:
    sources = world.statefulset_with_backup()
    copies, only_one = [], []
    for ordinal in range(2):
        for prefix, into in (("copy", copies), ("one", only_one)):
            directory = world.tmp / f"{prefix}-{ordinal}"
            directory.mkdir()
            world.pv_pvc(f"data-{prefix}db-{ordinal}", directory)
            into.append(directory)
    world.statefulset("copydb")
    world.statefulset("onedb")

    async def body(client: AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        assert (await finished_session(kube, world.ns))["phase"] == "Succeeded"
        sts = {"apiGroup": "apps", "kind": "StatefulSet"}
        world.apply(restore_session("all", {**sts, "name": "copydb"}, "workload-addon", latest("sts-repo")))
        source = {**latest("sts-repo"), "components": ["dump-pod-1"]}
        world.apply(restore_session("one", {**sts, "name": "onedb"}, "workload-addon", source))
        return await restored(kube, world.ns, "all"), await restored(kube, world.ns, "one")

    everything, one = run_with_operator(server, body)
    assert everything["phase"] == "Succeeded", json.dumps(everything, indent=1)
    assert sorted(everything["components"]) == ["dump-pod-0", "dump-pod-1"]
    for source, copy in zip(sources, copies, strict=True):
        assert manifest_of(copy) == manifest_of(source)
    assert one["phase"] == "Succeeded" and list(one["components"]) == ["dump-pod-1"], one
    assert manifest_of(only_one[0]) == {}, "component dump-pod-0 was not asked for"
    assert manifest_of(only_one[1]) == manifest_of(sources[1])


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_restore_creates_the_claim_from_volume_claim_templates(
    server: ServerProcess, kube: Client, world: World
) -> None:
    """The namespace lost its volume: the restore creates the claim, embedded mode's provisioner binds it."""
    source = world.pvc_with_backup("lost")
    volumes = world.tmp / "volumes"
    rs = restore_session("recreate", {**PVC, "name": "data-restored"}, "pvc-addon", latest("lost-repo"))
    rs["spec"]["addon"]["tasks"][0]["targetVolumes"] = {
        "volumeClaimTemplates": [
            {
                "metadata": {"name": "data-restored"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            }
        ]
    }

    async def body(client: AsyncClient) -> dict[str, Any]:
        assert (await finished_session(kube, world.ns))["phase"] == "Succeeded"
        world.apply(rs)
        return await restored(kube, world.ns, "recreate")

    result = run_with_operator(server, body, volume_root=volumes)
    assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    claim = kube.get(core_resource("PersistentVolumeClaim"), "data-restored", namespace=world.ns)
    assert claim.status.phase == "Bound"
    pv = kube.get(core_resource("PersistentVolume"), claim.spec.volumeName)
    directory = Path(pv.spec.hostPath.path)
    assert directory.is_relative_to(volumes / world.ns)
    assert manifest_of(directory) == manifest_of(source)


# ---------------------------------------------------------------- point in time, failures, namespaces


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_point_in_time_picks_the_snapshot_before_the_target_time(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.tmp / "pitr-data"
    source.mkdir()
    world.pv_pvc("data", source)
    world.apply(backup_configuration("pitr", {**PVC, "name": "data"}, "pvc-addon"))

    async def body(client: AsyncClient) -> list[dict[str, Any]]:
        (source / "version").write_text("1")
        first = await finished_session(kube, world.ns)
        assert first["phase"] == "Succeeded"
        times = [parse_time(status(kube, "Snapshot", first["snapshots"][0]["name"], world.ns)["snapshotTime"])]
        for version in (2, 3):
            await asyncio.sleep(1.1)  # snapshot times have second precision
            (source / "version").write_text(str(version))
            done = await final_status(kube, world.ns, trigger_now(kube, world.ns, "pitr"))
            assert done["phase"] == "Succeeded"
            times.append(parse_time(status(kube, "Snapshot", done["snapshots"][0]["name"], world.ns)["snapshotTime"]))
        t1, t2, t3 = times
        assert t1 and t2 and t3 and t1 < t2 < t3
        results = []
        cases = [
            ("between", {"targetTime": rfc3339(t2 + (t3 - t2) / 2)}),
            ("exclusive", {"targetTime": rfc3339(t2), "exclusive": True}),
            ("inclusive", {"targetTime": rfc3339(t2)}),
            ("too-early", {"targetTime": rfc3339(t1 - timedelta(hours=1))}),
        ]
        for name, pitr in cases:
            into = world.tmp / f"into-{name}"
            into.mkdir()
            world.pv_pvc(f"into-{name}", into)
            source_ref = {"repository": "pitr-repo", "pitr": pitr, "encryptionSecret": {"name": "encrypt-secret"}}
            world.apply(restore_session(name, {**PVC, "name": f"into-{name}"}, "pvc-addon", source_ref))
            results.append(await restored(kube, world.ns, name))
        return results

    between, exclusive, inclusive, too_early = run_with_operator(server, body)
    for result in (between, exclusive, inclusive):
        assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    assert (world.tmp / "into-between" / "version").read_text() == "2"
    assert (world.tmp / "into-exclusive" / "version").read_text() == "1"
    assert (world.tmp / "into-inclusive" / "version").read_text() == "2"
    assert too_early["phase"] == "Failed"
    message = next(c["message"] for c in too_early["conditions"] if c["type"] == "RestoreExecutorEnsured")
    assert "no Succeeded Snapshot of repository" in message and "taken at or before" in message, message
    assert list((world.tmp / "into-too-early").iterdir()) == []


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_failures_say_why_and_write_nothing(server: ServerProcess, kube: Client, world: World) -> None:
    source = world.pvc_with_backup("fail")
    (source / "big.bin").write_bytes(os.urandom(48 << 20))  # restoring it takes longer than restoreTimeout
    slow = world.tmp / "slow"
    slow.mkdir()
    world.pv_pvc("slow", slow)
    into = world.tmp / "into"
    into.mkdir()
    (into / "mine.txt").write_text("the user's own file")
    world.pv_pvc("into", into)
    kube.create(
        Secret(metadata=ObjectMeta(name="wrong-secret", namespace=world.ns), stringData={"RESTIC_PASSWORD": "nope-123"})
    )

    async def body(client: AsyncClient) -> dict[str, dict[str, Any]]:
        session = await finished_session(kube, world.ns)
        assert session["phase"] == "Succeeded"
        snapshot = session["snapshots"][0]["name"]
        into_pvc = {**PVC, "name": "into"}
        wrong = {**latest("fail-repo"), "encryptionSecret": {"name": "wrong-secret"}}
        world.apply(restore_session("wrong-password", into_pvc, "pvc-addon", wrong))
        world.apply(restore_session("no-target", {**PVC, "name": "absent"}, "pvc-addon", latest("fail-repo")))
        named = {
            "repository": "fail-repo",
            "snapshot": "no-such-snapshot",
            "encryptionSecret": {"name": "encrypt-secret"},
        }
        world.apply(restore_session("no-snapshot", into_pvc, "pvc-addon", named))
        unknown = {**latest("fail-repo"), "components": ["dump-pod-7"]}
        world.apply(restore_session("bad-component", into_pvc, "pvc-addon", unknown))
        world.apply(
            restore_session("too-slow", {**PVC, "name": "slow"}, "pvc-addon", latest("fail-repo"), restoreTimeout="1s")
        )
        results = {}
        for name in ("wrong-password", "no-target", "no-snapshot", "bad-component", "too-slow"):
            results[name] = await restored(kube, world.ns, name)
        # The Snapshot is deleted after the restore resolved it: the task finds it gone.
        kube.delete(by_kind("Snapshot"), snapshot, namespace=world.ns)
        await until(lambda: not status(kube, "Snapshot", snapshot, world.ns), what="Snapshot deleted")
        gone = {"repository": "fail-repo", "snapshot": snapshot, "encryptionSecret": {"name": "encrypt-secret"}}
        world.apply(restore_session("deleted", into_pvc, "pvc-addon", gone))
        results["deleted"] = await restored(kube, world.ns, "deleted")
        return results

    results = run_with_operator(server, body)
    assert {n: r["phase"] for n, r in results.items()} == {
        "wrong-password": "Failed",
        "no-target": "Failed",
        "no-snapshot": "Failed",
        "bad-component": "Invalid",
        "deleted": "Failed",
        "too-slow": "Failed",
    }
    text = json.dumps(results)
    assert "wrong password" in results["wrong-password"]["components"]["dump"]["error"]
    assert "nope-123" not in text
    assert results["no-target"]["targetFound"] is False
    assert "PersistentVolumeClaim" in reason(results["no-target"]) and "absent not found" in reason(
        results["no-target"]
    )
    assert "Snapshot" in reason(results["no-snapshot"]) and "no-such-snapshot not found" in reason(
        results["no-snapshot"]
    )
    assert "dump-pod-7" in reason(results["bad-component"], "ValidationPassed")
    assert "not found" in reason(results["deleted"])
    slow_error = results["too-slow"]["components"]["dump"]["error"]
    assert "did not finish within restoreTimeout" in slow_error, slow_error
    assert list(slow.iterdir()) == [], "a restore stopped at its deadline leaves nothing behind"
    assert manifest_of(into) == {"mine.txt": manifest_of(into)["mine.txt"]}, "nothing was written into the target"


def reason(result: dict[str, Any], condition: str = "RestoreExecutorEnsured") -> str:
    return str(next(c["message"] for c in result["conditions"] if c["type"] == condition))


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_cross_namespace_restore_follows_the_storage_usage_policy(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.pvc_with_backup("origin")
    other = f"rs-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=other)))
    into = world.tmp / "into"
    into.mkdir()
    elsewhere = World(kube, other, world.tmp, world.backend_root, world.storage)
    elsewhere.pv_pvc("into", into)
    from_a = {"namespace": world.ns, **latest("origin-repo")}
    from_a["encryptionSecret"] = {"name": "encrypt-secret", "namespace": world.ns}
    manifest = restore_session("from-a", {**PVC, "name": "into"}, "pvc-addon", from_a)

    async def body(client: AsyncClient) -> dict[str, Any]:
        assert (await finished_session(kube, world.ns))["phase"] == "Succeeded"
        # The storage allows only its own namespace (the default): admission refuses.
        with pytest.raises(ApiError) as refused:
            elsewhere.apply(json.loads(json.dumps(manifest)))
        assert refused.value.status.code == 422
        assert "spec.dataSource.repository" in str(refused.value.status.message)
        policy = {"spec": {"usagePolicy": {"allowedNamespaces": {"from": "All"}}}}
        kube.patch(by_kind("BackupStorage"), "storage", policy, namespace=world.ns, patch_type=PatchType.MERGE)
        elsewhere.apply(manifest)
        return await restored(kube, other, "from-a")

    result = run_with_operator(server, body)
    assert result["phase"] == "Succeeded", json.dumps(result, indent=1)
    assert manifest_of(into) == manifest_of(source)
