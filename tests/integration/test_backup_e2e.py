"""Backups end to end in embedded mode: bundled API server + operator + local executor + restic.

The user's view: apply a BackupStorage, a RetentionPolicy, an encryption Secret, a target (a PVC on a
PersistentVolume, a Deployment or a StatefulSet using such volumes) and a BackupConfiguration; get Snapshots
that the stock ``restic`` reads and restores byte for byte, with the Secret's password.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from apiserver_process import ServerProcess
from e2e_world import (
    PASSWORD,
    SESSION,
    World,
    backup_configuration,
    core_resource,
    final_status,
    finished_session,
    manifest_of,
    run_with_operator,
    sessions_of,
    status,
    tree,
    trigger_now,
    until,
)
from kubestash.api.naming import backup_session_name
from kubestash.api.sessions import backup_session_manifest
from kubestash.controllers.kinds import by_kind
from storage_servers import moto_server


def restore_and_compare(world: World, repo_dir: str, source: Path, host_path: Path, *, excluded: bool = True) -> None:
    snaps = world.restic(repo_dir, "snapshots", "--json")
    assert snaps.returncode == 0, snaps.stderr
    listed = json.loads(snaps.stdout)
    assert listed, "restic lists the snapshot"
    target = world.tmp / f"restored-{uuid.uuid4().hex[:6]}"
    result = world.restic(repo_dir, "restore", listed[-1]["short_id"], "--target", str(target))
    assert result.returncode == 0, result.stderr
    restored = target / str(host_path).lstrip("/")
    assert manifest_of(restored) == manifest_of(source, skip=lambda p: excluded and p.name == "skip.tmp")


# ---------------------------------------------------------------- tests


def test_pvc_backup_with_pvc_addon(server: ServerProcess, kube: Client, world: World) -> None:
    source = world.tmp / "pvc-data"
    tree(source)
    world.pv_pvc("data", source)
    bc = backup_configuration(
        "pvc-backup",
        {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"},
        "pvc-addon",
        {"exclude": "*.tmp"},
    )
    world.apply(bc)

    async def body(client: AsyncClient) -> dict[str, Any]:
        return await finished_session(kube, world.ns)

    session = run_with_operator(server, body)
    assert session["phase"] == "Succeeded", json.dumps(session, indent=1)
    snap_name = session["snapshots"][0]["name"]
    snap = status(kube, "Snapshot", snap_name, world.ns)
    assert snap["phase"] == "Succeeded", snap
    component = snap["components"]["dump"]
    assert component["path"] == f"repository/v1/{SESSION}/dump"
    assert component["integrity"] is True
    repo = status(kube, "Repository", "pvc-backup-repo", world.ns)
    assert repo["snapshotCount"] == 1 and repo["lastBackupTime"] == snap["snapshotTime"]
    restore_and_compare(world, f"demo/{component['path']}", source, source)


def test_deployment_backup_with_workload_addon_paths_and_exclude(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.tmp / "deploy-data"
    tree(source)
    world.pv_pvc("app-data", source)
    world.deployment("demo-app", claim="app-data")
    target = {"apiGroup": "apps", "kind": "Deployment", "name": "demo-app"}
    world.apply(backup_configuration("deploy", target, "workload-addon", {"paths": "/source/data", "exclude": "*.tmp"}))

    session = run_with_operator(server, lambda client: finished_session(kube, world.ns))
    assert session["phase"] == "Succeeded", json.dumps(session, indent=1)
    snap = status(kube, "Snapshot", session["snapshots"][0]["name"], world.ns)
    assert list(snap["components"]) == ["dump"] and snap["phase"] == "Succeeded"
    stats = snap["components"]["dump"]["resticStats"]
    assert [s["summary"]["hostPath"] for s in stats] == ["/source/data"]  # the path in the pod, as KubeStash records it
    restore_and_compare(world, f"demo/repository/v1/{SESSION}/dump", source, source)


def test_statefulset_backup_has_one_component_per_replica(server: ServerProcess, kube: Client, world: World) -> None:
    sources = world.statefulset_with_backup()

    session = run_with_operator(server, lambda client: finished_session(kube, world.ns))
    assert session["phase"] == "Succeeded", json.dumps(session, indent=1)
    snap = status(kube, "Snapshot", session["snapshots"][0]["name"], world.ns)
    assert sorted(snap["components"]) == ["dump-pod-0", "dump-pod-1"]
    assert snap["totalComponents"] == 2
    for ordinal, source in enumerate(sources):
        component = f"dump-pod-{ordinal}"
        assert snap["components"][component]["phase"] == "Succeeded"
        restore_and_compare(world, f"demo/repository/v1/{SESSION}/{component}", source, source, excluded=False)


class FakeClock:
    """The operator's notion of now; tests move it instead of waiting for real minutes."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def poke(kube: Client, name: str, ns: str) -> None:
    """Make the controller look at the BackupConfiguration now (as its requeue timer would, later)."""
    patch = {"metadata": {"annotations": {"test/poke": uuid.uuid4().hex}}}
    kube.patch(by_kind("BackupConfiguration"), name, patch, namespace=ns, patch_type=PatchType.MERGE)


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_schedule_fires_pause_stops_it_and_overlaps_are_skipped(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("data", source)
    bc = backup_configuration("sched", {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"}, "pvc-addon")
    session_spec = bc["spec"]["sessions"][0]
    session_spec["scheduler"] = {"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid"}
    session_spec["sessionHistoryLimit"] = 10
    world.apply(bc)
    start = datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC)
    clock = FakeClock(start)

    async def body(client: AsyncClient) -> None:
        first = await finished_session(kube, world.ns, 1)
        assert first["phase"] == "Succeeded", first
        scheduled = status(kube, "BackupConfiguration", "sched", world.ns)["sessions"][0]
        assert scheduled["nextSchedule"] == "2026-11-25T10:01:00Z"

        clock.now = start + timedelta(seconds=31)  # 10:01:01
        await asyncio.to_thread(poke, kube, "sched", world.ns)
        second = await finished_session(kube, world.ns, 2)
        assert second["phase"] == "Succeeded", second
        names = [s.metadata.name for s in sessions_of(kube, world.ns)]
        assert f"sched-{SESSION}-{int((start + timedelta(seconds=30)).timestamp())}" in names

        # Two runs triggered together: the older runs, the other is Skipped.
        bc_now = kube.get(by_kind("BackupConfiguration"), "sched", namespace=world.ns).to_dict()  # type: ignore[attr-defined]
        for offset in (40, 41):
            manifest = backup_session_manifest(bc_now, SESSION, int(start.timestamp()) + offset)
            await asyncio.to_thread(kube.create, by_kind("BackupSession").from_dict(manifest))  # type: ignore[attr-defined]

        def both_final() -> list[str] | None:
            phases = {s.metadata.name: (s.status or {}).get("phase") for s in sessions_of(kube, world.ns)}
            pair = [phases.get(backup_session_name("sched", SESSION, int(start.timestamp()) + o)) for o in (40, 41)]
            return pair if all(p in ("Succeeded", "Skipped", "Failed") for p in pair) else None

        assert await until(both_final) == ["Succeeded", "Skipped"]
        skipped = status(
            kube, "BackupSession", backup_session_name("sched", SESSION, int(start.timestamp()) + 41), world.ns
        )
        assert "another backup of session" in skipped["conditions"][0]["message"]

        # Paused: the schedule passes, nothing runs.
        await asyncio.to_thread(
            kube.patch,
            by_kind("BackupConfiguration"),
            "sched",
            {"spec": {"paused": True}},
            namespace=world.ns,
            patch_type=PatchType.MERGE,
        )
        await asyncio.sleep(1.0)  # the pause reaches the operator before time moves on
        count = len(sessions_of(kube, world.ns))
        clock.now = start + timedelta(minutes=3)
        await asyncio.to_thread(poke, kube, "sched", world.ns)
        await asyncio.sleep(2.0)
        assert len(sessions_of(kube, world.ns)) == count
        assert status(kube, "BackupConfiguration", "sched", world.ns)["sessions"][0]["nextSchedule"] == (
            "2026-11-25T10:04:00Z"
        )

    run_with_operator(server, body, clock=clock)


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_retention_keeps_the_last_three_snapshots_and_their_data(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("data", source)
    world.apply(
        backup_configuration("ret", {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"}, "pvc-addon")
    )
    repo_dir = f"demo/repository/v1/{SESSION}/dump"

    async def body(client: AsyncClient) -> None:
        await finished_session(kube, world.ns, 1)
        bc = kube.get(by_kind("BackupConfiguration"), "ret", namespace=world.ns).to_dict()  # type: ignore[attr-defined]
        base = int(time.time()) + 100
        for i in range(9):
            (source / "app" / "counter.txt").write_text(f"run {i}\n")
            manifest = backup_session_manifest(bc, SESSION, base + i)
            await asyncio.to_thread(kube.create, by_kind("BackupSession").from_dict(manifest))  # type: ignore[attr-defined]

            def finished(name: str = manifest["metadata"]["name"]) -> str | None:
                phase = status(kube, "BackupSession", name, world.ns).get("phase")
                return phase if phase in ("Succeeded", "Failed", "Skipped") else None

            name = manifest["metadata"]["name"]
            assert await until(finished) == "Succeeded", status(kube, "BackupSession", name, world.ns)

        def three_left() -> list[Any] | None:
            snaps = [s for s in kube.list(by_kind("Snapshot"), namespace=world.ns)]
            return snaps if len(snaps) == 3 else None

        await until(three_left, what="3 Snapshots left")

    run_with_operator(server, body)
    snaps = sorted(kube.list(by_kind("Snapshot"), namespace=world.ns), key=lambda s: s.status["snapshotTime"])
    kept_ids = sorted(st["summary"]["id"] for s in snaps for st in s.status["components"]["dump"]["resticStats"])
    listed = json.loads(world.restic(repo_dir, "snapshots", "--json").stdout)
    assert sorted(s["short_id"] for s in listed) == kept_ids, "restic holds exactly the kept snapshots"
    check = world.restic(repo_dir, "check")
    assert check.returncode == 0, check.stderr
    repo = status(kube, "Repository", "ret-repo", world.ns)
    assert repo["snapshotCount"] == 3
    assert [r["name"] for r in repo["recentSnapshots"]] == [s.metadata.name for s in reversed(snaps)]
    files = sorted(p.name for p in (world.backend_root / "demo" / "snapshots").iterdir())
    assert files == sorted(f"{s.metadata.name}.yaml" for s in snaps)


def component_error(kube: Client, ns: str, session: dict[str, Any]) -> str:
    snap = status(kube, "Snapshot", session["snapshots"][0]["name"], ns)
    return "; ".join(str(c.get("error")) for c in snap["components"].values() if c.get("error"))


def task_pids(reading: Path) -> list[int]:
    """The task processes (children of this test process, which runs the operator) with a process at or
    below them reading ``reading``: the restic child of a task, a native engine's worker, or the task itself.
    Found through ``/proc`` so the test does not depend on which engine moves the data."""
    parents: dict[int, int] = {}
    readers: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status_line = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("PPid:"))
            parents[int(proc.name)] = int(status_line.split()[1])
            if any(os.readlink(fd) == str(reading) for fd in (proc / "fd").iterdir()):
                readers.append(int(proc.name))
        except (OSError, StopIteration):
            continue
    tasks = set()
    for reader in readers:
        pid = reader
        while pid in parents and parents[pid] not in (os.getpid(), 0, 1):
            pid = parents[pid]
        if parents.get(pid) == os.getpid():
            tasks.add(pid)
    return sorted(tasks)


async def running_snapshot(kube: Client, ns: str, session: str, reading: Path) -> str:
    def running() -> str | None:
        st = status(kube, "BackupSession", session, ns)
        snaps = st.get("snapshots") or []
        if not snaps:
            return None
        snap = status(kube, "Snapshot", snaps[0]["name"], ns)
        comp = (snap.get("components") or {}).get("dump") or {}
        return str(snaps[0]["name"]) if comp.get("phase") == "Running" and task_pids(reading) else None

    return await until(running, what="a running backup")  # type: ignore[no-any-return]


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_failures_say_why_and_the_next_backup_succeeds(server: ServerProcess, kube: Client, world: World) -> None:
    """Wrong password, a killed executor, the target deleted mid-run: each Failed with a readable reason, the
    repository still passes ``restic check``, and the next backup succeeds."""
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("data", source)
    world.apply(
        backup_configuration("fail", {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"}, "pvc-addon")
    )
    repo_dir = f"demo/repository/v1/{SESSION}/dump"
    big = source / "big.bin"

    def set_password(value: str) -> None:
        kube.patch(Secret, "encrypt-secret", {"stringData": {"RESTIC_PASSWORD": value}}, namespace=world.ns)

    async def body(client: AsyncClient) -> dict[str, str]:
        first = await finished_session(kube, world.ns, 1)
        assert first["phase"] == "Succeeded", first
        errors: dict[str, str] = {}

        await asyncio.to_thread(set_password, "not-the-password")
        failed = await final_status(kube, world.ns, await asyncio.to_thread(trigger_now, kube, world.ns, "fail"))
        assert failed["phase"] == "Failed"
        errors["password"] = component_error(kube, world.ns, failed)
        await asyncio.to_thread(set_password, PASSWORD)

        with big.open("wb") as f:
            for _ in range(60):
                f.write(os.urandom(8 << 20))
        name = await asyncio.to_thread(trigger_now, kube, world.ns, "fail")
        await running_snapshot(kube, world.ns, name, big)
        for pid in task_pids(big):
            os.kill(pid, 9)
        failed = await final_status(kube, world.ns, name)
        assert failed["phase"] == "Failed"
        errors["killed"] = component_error(kube, world.ns, failed)
        # the killed task could not remove its lock; the operator removed it (stale) when the Snapshot failed,
        # so restic's check, which takes an exclusive lock, runs at once
        check = await asyncio.to_thread(world.restic, repo_dir, "check")
        assert check.returncode == 0, check.stderr

        # New content: the killed run's packs were recovered, so the old bytes would only be hashed again (well
        # under a second for the whole file), sometimes too quick for this test to see the backup running.
        with big.open("wb") as f:
            for _ in range(60):
                f.write(os.urandom(8 << 20))
        name = await asyncio.to_thread(trigger_now, kube, world.ns, "fail")
        await running_snapshot(kube, world.ns, name, big)
        # Held still (SIGSTOP to the task's process group) so that it is surely running when the operator
        # notices the deletion: the native engine backs up the big file in about a second, faster than the
        # operator's next look at the target. The operator's SIGKILL ends a stopped process all the same.
        for pid in task_pids(big):
            group = os.getpgid(pid)
            assert group != os.getpgid(0), "task processes run in their own session"
            os.killpg(group, signal.SIGSTOP)
        await asyncio.to_thread(kube.delete, core_resource("PersistentVolumeClaim"), "data", namespace=world.ns)
        failed = await final_status(kube, world.ns, name)
        assert failed["phase"] == "Failed"
        errors["deleted"] = component_error(kube, world.ns, failed)

        big.unlink()
        await asyncio.to_thread(kube.delete, core_resource("PersistentVolume"), f"{world.ns}-data")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(world.pv_pvc, "data", source)
        await until(lambda: status(kube, "BackupConfiguration", "fail", world.ns).get("phase") == "Ready")
        ok = await final_status(kube, world.ns, await asyncio.to_thread(trigger_now, kube, world.ns, "fail"))
        assert ok["phase"] == "Succeeded", ok
        return errors

    errors = run_with_operator(server, body)
    assert "wrong password" in errors["password"], errors
    assert PASSWORD not in json.dumps(errors) and "not-the-password" not in json.dumps(errors)
    assert "exited with code -9 before reporting a result" in errors["killed"], errors
    assert "PersistentVolumeClaim" in errors["deleted"] and "was deleted while the backup ran" in errors["deleted"]
    check = world.restic(repo_dir, "check")
    assert check.returncode == 0, check.stderr
    restore_and_compare(world, repo_dir, source, source, excluded=False)


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_a_path_outside_the_workload_volumes_fails_with_the_reason(
    server: ServerProcess, kube: Client, world: World
) -> None:
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("app-data", source)
    world.deployment("demo-app", claim="app-data")
    target = {"apiGroup": "apps", "kind": "Deployment", "name": "demo-app"}
    world.apply(backup_configuration("missing", target, "workload-addon", {"paths": "/source/data/nope,/var/lib/x"}))
    session = run_with_operator(server, lambda client: finished_session(kube, world.ns))
    assert session["phase"] == "Failed"
    error = component_error(kube, world.ns, session)
    assert "/source/data/nope" in error or "/var/lib/x" in error, error


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_unreachable_s3_fails_the_backup_with_the_cause(server: ServerProcess, kube: Client, world: World) -> None:
    """S3 going away after the storage was Ready: the session fails with the cause, or -- once the storage's
    re-check has noticed -- is skipped naming it. (moto keeps its buckets in memory, so the recovery half --
    the next backup succeeding once S3 is back -- is shown by the local failure test, not here.)"""
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("data", source)
    creds = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3-secret-key-value-1234"}
    kube.create(Secret(metadata=ObjectMeta(name="s3-creds", namespace=world.ns), stringData=creds))
    bc = backup_configuration("s3gone", {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": "data"}, "pvc-addon")
    bc["spec"]["backends"][0]["storageRef"] = {"name": "s3"}
    with moto_server() as moto:
        moto.create_bucket("gone")
        s3 = {"endpoint": moto.endpoint, "bucket": "gone", "secretName": "s3-creds"}
        world.apply(
            {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "BackupStorage",
                "metadata": {"name": "s3"},
                "spec": {"storage": {"provider": "s3", "s3": s3}, "deletionPolicy": "Delete"},
            }
        )
        world.apply(bc)

        async def body(client: AsyncClient) -> list[dict[str, Any]]:
            first = await finished_session(kube, world.ns, 1)
            assert first["phase"] == "Succeeded", first
            await asyncio.to_thread(moto.stop)
            name = await asyncio.to_thread(trigger_now, kube, world.ns, "s3gone")
            failed = await final_status(kube, world.ns, name)
            # A Repository change makes the storage look again: it turns NotReady, and so does the configuration.
            patch = {"metadata": {"annotations": {"poke": "1"}}}
            await client.patch(
                by_kind("Repository"), "s3gone-repo", patch, namespace=world.ns, patch_type=PatchType.MERGE
            )

            def not_ready() -> bool:
                return status(kube, "BackupConfiguration", "s3gone", world.ns).get("phase") == "NotReady"

            await until(not_ready, what="BackupConfiguration NotReady")
            name = await asyncio.to_thread(trigger_now, kube, world.ns, "s3gone")
            return [failed, await final_status(kube, world.ns, name)]

        failed, skipped = run_with_operator(server, body)
    for outcome in (failed, skipped):
        if outcome["phase"] == "Skipped":  # the storage noticed first: the session says why it did not run
            error = next(c["message"] for c in outcome["conditions"] if c["type"] == "BackupSkipped")
            assert error.startswith("BackupConfiguration s3gone is NotReady: BackupStorage "), error
        else:
            assert outcome["phase"] == "Failed"
            error = component_error(kube, world.ns, outcome)
        assert "connection refused" in error.lower() or "unreachable" in error.lower(), error
        assert creds["AWS_SECRET_ACCESS_KEY"] not in json.dumps(outcome) + error
    assert skipped["phase"] == "Skipped"


@pytest.mark.parametrize("world", ["local"], indirect=True)
def test_failed_sessions_are_retried_per_retry_config(server: ServerProcess, kube: Client, world: World) -> None:
    source = world.tmp / "data"
    tree(source)
    world.pv_pvc("app-data", source)
    world.deployment("demo-app", claim="app-data")
    target = {"apiGroup": "apps", "kind": "Deployment", "name": "demo-app"}
    bc = backup_configuration("retry", target, "workload-addon", {"paths": "/not/mounted"})
    bc["spec"]["sessions"][0]["retryConfig"] = {"maxRetry": 2, "delay": "1s"}
    bc["spec"]["sessions"][0]["sessionHistoryLimit"] = 5
    world.apply(bc)
    last = run_with_operator(server, lambda client: finished_session(kube, world.ns, 3))
    sessions = sorted(sessions_of(kube, world.ns), key=lambda s: s.metadata.creationTimestamp)
    assert [s.status["phase"] for s in sessions] == ["Failed", "Failed", "Failed"]
    assert [s.spec.get("retryLeft") for s in sessions] == [2, 1, None]
    assert [bool(s.status.get("retried")) for s in sessions] == [True, True, False]
    assert last["phase"] == "Failed"
