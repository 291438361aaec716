"""``kubestash trigger|pause|resume|get`` as a user runs them: the installed command against the bundled server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from apiserver_process import ServerProcess
from kubestash.controllers.kinds import by_kind

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
BackupConfiguration = by_kind("BackupConfiguration")
BackupSession = by_kind("BackupSession")
Snapshot = by_kind("Snapshot")


@pytest.fixture
def ns(kube: Client, tmp_path: Path) -> str:
    """A namespace with a local BackupStorage, a RetentionPolicy and BackupConfiguration ``app-backup``."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    storage = "storage.kubestash.com/v1alpha1"
    for obj in (
        {
            "apiVersion": storage,
            "kind": "BackupStorage",
            "metadata": {"name": "local-storage", "namespace": name},
            "spec": {
                "storage": {
                    "provider": "local",
                    "local": {"mountPath": "/safe/data", "hostPath": {"path": str(tmp_path)}},
                }
            },
        },
        {
            "apiVersion": storage,
            "kind": "RetentionPolicy",
            "metadata": {"name": "keep-5", "namespace": name},
            "spec": {"successfulSnapshots": {"last": 5}},
        },
        backup_configuration(name),
    ):
        by_kind(str(obj["kind"]))
        kube.create(from_dict(obj))
    return name


def session_spec(name: str, ns: str) -> dict[str, Any]:
    return {
        "name": name,
        "scheduler": {"schedule": "*/5 * * * *", "jobTemplate": {"backoffLimit": 1}},
        "repositories": [
            {
                "name": f"{name}-repo",
                "backend": "local-backend",
                "directory": f"/app/{name}",
                "encryptionSecret": {"name": "encrypt-secret", "namespace": ns},
            }
        ],
        "addon": {"name": "workload-addon", "tasks": [{"name": "logical-backup", "params": {"paths": "/source/data"}}]},
    }


def backup_configuration(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "core.kubestash.com/v1alpha1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "app-backup", "namespace": ns},
        "spec": {
            "target": {"apiGroup": "apps", "kind": "Deployment", "name": "app", "namespace": ns},
            "backends": [
                {
                    "name": "local-backend",
                    "storageRef": {"name": "local-storage", "namespace": ns},
                    "retentionPolicy": {"name": "keep-5", "namespace": ns},
                }
            ],
            "sessions": [session_spec("hourly", ns), session_spec("daily", ns)],
        },
    }


def cli(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBESTASH), *args, "--kubeconfig", str(server.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def sessions_of(kube: Client, ns: str) -> list[dict[str, Any]]:
    found = [obj.to_dict() for obj in kube.list(BackupSession, namespace=ns)]  # type: ignore[attr-defined]
    return sorted(found, key=lambda o: o["spec"]["session"])


def test_trigger_creates_a_session_per_session_like_kubestash(server: ServerProcess, kube: Client, ns: str) -> None:
    before = int(time.time())
    result = cli(server, "trigger", "app-backup", "-n", ns)
    assert result.returncode == 0, result.stderr
    bc = kube.get(BackupConfiguration, "app-backup", namespace=ns)
    made = sessions_of(kube, ns)
    assert [s["spec"]["session"] for s in made] == ["daily", "hourly"]
    for obj in made:
        session = obj["spec"]["session"]
        name = obj["metadata"]["name"]
        prefix, _, stamp = name.rpartition("-")
        assert prefix == f"app-backup-{session}"
        assert before <= int(stamp) <= int(time.time())
        assert f"backupsession.core.kubestash.com/{name} created" in result.stdout
        assert obj["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "kubestash.com",
            "kubestash.com/invoker-name": "app-backup",
            "kubestash.com/invoker-namespace": ns,
            "kubestash.com/session-name": session,
        }
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "core.kubestash.com/v1alpha1",
            "kind": "BackupConfiguration",
            "name": "app-backup",
            "uid": bc.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["spec"]["invoker"] == {
            "apiGroup": "core.kubestash.com",
            "kind": "BackupConfiguration",
            "name": "app-backup",
        }


def test_trigger_selected_sessions_and_unknown_session(server: ServerProcess, kube: Client, ns: str) -> None:
    result = cli(server, "trigger", "app-backup", "-n", ns, "--sessions", "daily")
    assert result.returncode == 0, result.stderr
    assert [s["spec"]["session"] for s in sessions_of(kube, ns)] == ["daily"]

    bad = cli(server, "trigger", "app-backup", "-n", ns, "--sessions", "daily,weekly")
    assert bad.returncode == 2
    assert "has no session weekly" in bad.stderr
    assert "its sessions are: hourly, daily" in bad.stderr
    assert len(sessions_of(kube, ns)) == 1

    missing = cli(server, "trigger", "nope", "-n", ns)
    assert missing.returncode == 1
    assert f"BackupConfiguration {ns}/nope not found" in missing.stderr

    # `-nNS` is left to click (the fast path reads only plain forms): the same lines and exit codes.
    for fast in (bad, missing):
        args = ["nope"] if fast is missing else ["app-backup", "--sessions", "daily,weekly"]
        slow = cli(server, "trigger", f"-n{ns}", *args)
        assert (slow.returncode, slow.stdout, slow.stderr) == (fast.returncode, fast.stdout, fast.stderr)


def test_triggers_in_the_same_second_each_get_a_session(server: ServerProcess, kube: Client, ns: str) -> None:
    """Names have one-second resolution; a quick second trigger (or one right after the initial backup) must not
    fail with AlreadyExists: it takes the next second."""
    names = []
    for _ in range(3):
        result = cli(server, "trigger", "app-backup", "-n", ns, "--sessions", "daily")
        assert result.returncode == 0, result.stderr
        names += [line.split()[0] for line in result.stdout.splitlines() if line.endswith("(session daily)")]
    made = sorted(s["metadata"]["name"] for s in sessions_of(kube, ns))
    assert len(made) == 3
    assert sorted(n.removeprefix("backupsession.core.kubestash.com/") for n in names) == made


def test_kubeconfig_from_environment(server: ServerProcess, kube: Client, ns: str, tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(tmp_path)}
    result = subprocess.run(
        [str(KUBESTASH), "pause", "app-backup", "-n", ns], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert kube.get(BackupConfiguration, "app-backup", namespace=ns).spec["paused"] is True  # type: ignore[attr-defined]


def test_pause_and_resume(server: ServerProcess, kube: Client, ns: str) -> None:
    def paused() -> object:
        return kube.get(BackupConfiguration, "app-backup", namespace=ns).spec.get("paused")  # type: ignore[attr-defined]

    result = cli(server, "pause", "app-backup", "-n", ns)
    assert result.returncode == 0, result.stderr
    assert f"BackupConfiguration {ns}/app-backup paused" in result.stdout
    assert paused() is True
    again = cli(server, "pause", "app-backup", "-n", ns)
    assert "was already paused" in again.stdout
    result = cli(server, "resume", "app-backup", "-n", ns)
    assert result.returncode == 0, result.stderr
    assert f"BackupConfiguration {ns}/app-backup resumed" in result.stdout
    assert paused() is False


def test_get_prints_kubestash_columns(server: ServerProcess, ns: str) -> None:
    assert cli(server, "pause", "app-backup", "-n", ns).returncode == 0
    result = cli(server, "get", "bc", "-n", ns)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "PAUSED", "AGE"]
    assert row.split()[0] == "app-backup"
    assert "true" in row.split()

    assert cli(server, "trigger", "app-backup", "-n", ns, "--sessions", "hourly").returncode == 0
    everywhere = cli(server, "get", "backupsessions", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    lines = everywhere.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAMESPACE", "NAME", "INVOKER-TYPE", "INVOKER-NAME"]
    mine = [line.split() for line in lines[1:] if line.startswith(ns)]
    assert len(mine) == 1
    assert mine[0][1].startswith("app-backup-hourly-")
    assert mine[0][2:4] == ["BackupConfiguration", "app-backup"]

    one = cli(server, "get", "backupconfiguration", "app-backup", "-n", ns)
    assert one.stdout.splitlines()[1].startswith("app-backup")
    assert cli(server, "get", "snapshots", "-n", ns).stderr.strip() == f"No resources found in {ns} namespace."
    unknown = cli(server, "get", "pods")
    assert unknown.returncode == 2
    assert "backupconfigurations" in unknown.stderr


def wait_for_session(kube: Client, ns: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        made = sessions_of(kube, ns)
        if made:
            return str(made[0]["metadata"]["name"])
        time.sleep(0.1)
    raise AssertionError("trigger did not create a BackupSession")


def report_progress(kube: Client, ns: str, session: str, component_error: str | None = None) -> str:
    """What the controller and the backup job would write: Running session, Snapshot with restic progress."""
    name = f"hourly-repo-{session}"
    kube.create(
        from_dict(
            {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "Snapshot",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"repository": "hourly-repo", "session": "hourly", "backupSession": session, "version": "v1"},
            }
        )
    )
    component: dict[str, Any] = {
        "phase": "Running",
        "resticStats": [
            {
                "progress": {
                    "secondsElapsed": 4,
                    "percentDone": "40.00%",
                    "totalFiles": 40,
                    "filesDone": 12,
                    "backupDone": "4.000 MiB",
                    "total": "10.000 MiB",
                    "speed": "1.000 MiB/s",
                }
            }
        ],
    }
    if component_error:
        component.update(phase="Failed", error=component_error)
    kube.patch(
        Snapshot.Status,  # type: ignore[attr-defined]
        name,
        {"status": {"phase": "Running", "totalComponents": 1, "components": {"dump": component}}},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )
    set_session_status(kube, ns, session, {"phase": "Running", "snapshots": [{"name": name, "phase": "Running"}]})
    return name


def set_session_status(kube: Client, ns: str, session: str, status: dict[str, Any]) -> None:
    kube.patch(
        BackupSession.Status,  # type: ignore[attr-defined]
        session,
        {"status": status},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )


def start_waiting(server: ServerProcess, ns: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(str(KUBESTASH), "trigger", "app-backup", "-n", ns, "--sessions", "hourly"),
            *("--wait", "--timeout", "60", "--kubeconfig", str(server.kubeconfig)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_trigger_wait_prints_progress_and_succeeds(server: ServerProcess, kube: Client, ns: str) -> None:
    proc = start_waiting(server, ns)
    session = wait_for_session(kube, ns)
    report_progress(kube, ns, session)
    time.sleep(2)
    set_session_status(kube, ns, session, {"phase": "Succeeded", "duration": "5.2s"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert f"{session}: Running" in out
    assert (
        f"{session} hourly-repo/dump: 12/40 files, 4.000 MiB/10.000 MiB (40.0%), 1.000 MiB/s, ETA 6s, elapsed 4s" in out
    )
    assert f"{session}: Succeeded in 5.2s" in out


def test_trigger_wait_reports_failure(server: ServerProcess, kube: Client, ns: str) -> None:
    proc = start_waiting(server, ns)
    session = wait_for_session(kube, ns)
    snapshot = report_progress(kube, ns, session, component_error="restic: permission denied reading /source/data")
    time.sleep(1.5)
    condition = {
        "type": "SnapshotsEnsured",
        "status": "True",
        "reason": "SuccessfullyEnsuredSnapshots",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    set_session_status(kube, ns, session, {"phase": "Failed", "duration": "3s", "conditions": [condition]})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert f"{session}: Failed in 3s" in out
    assert f"snapshot {snapshot} component dump: restic: permission denied reading /source/data" in out
