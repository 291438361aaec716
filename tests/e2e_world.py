"""The world an end-to-end test builds: namespaces with a BackupStorage (local or S3 on moto), an encryption
Secret, a RetentionPolicy, PersistentVolumes on temporary directories, workloads, BackupConfigurations; an
operator running in the test's event loop; and ways to wait for what it does."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lightkube import AsyncClient, Client, KubeConfig
from lightkube.resources.core_v1 import Secret

from apiserver_process import ServerProcess
from kubestash.api.sessions import backup_session_manifest
from kubestash.controllers.backupconfiguration import utcnow
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.manager import Operator

PASSWORD = "correct-horse-battery-staple"
SESSION = "frequent-backup"
FINAL = ("Succeeded", "Failed", "Skipped")


def tree(root: Path, seed: int = 0) -> None:
    """A small tree with what a restore must reproduce: nested files, modes, owners (as root), a symlink, an empty
    dir, a sparse file."""
    (root / "app" / "logs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "app" / "config.yaml").write_text(f"seed: {seed}\nname: demo\n")
    (root / "app" / "data.bin").write_bytes(os.urandom(200_000))
    (root / "app" / "logs" / "today.log").write_text("line\n" * 1000)
    (root / "app" / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "script.sh").chmod(0o750)
    (root / "app" / "skip.tmp").write_text("excluded by the pattern\n")
    (root / "link").symlink_to("app/config.yaml")
    with (root / "app" / "sparse.img").open("wb") as sparse:
        sparse.truncate(8 << 20)
        sparse.seek(4 << 20)
        sparse.write(b"data in the middle of a hole")
    if os.geteuid() == 0:
        os.chown(root / "app" / "config.yaml", 1234, 2345)
        os.chown(root / "app" / "logs", 3456, 3456)
        os.lchown(root / "link", 4567, 4567)


def manifest_of(root: Path, *, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, Any]:
    """Path -> (kind, mode, owner, sha256 | link target, mtime) for everything under root."""
    out: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if skip(path):
            continue
        st = path.lstat()
        owner = f"{st.st_uid}:{st.st_gid}"
        if path.is_symlink():
            out[rel] = ("link", owner, os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", oct(st.st_mode & 0o7777), owner, st.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = ("file", oct(st.st_mode & 0o7777), owner, digest, st.st_mtime_ns)
    return out


@dataclass
class World:
    kube: Client
    ns: str
    tmp: Path
    backend_root: Path
    storage: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    repo_url_base: str = ""

    def apply(self, obj: dict[str, Any]) -> None:
        kind = obj["kind"]
        obj.setdefault("metadata", {}).setdefault("namespace", self.ns)
        if kind in ("PersistentVolume",):
            obj["metadata"].pop("namespace")
        resource = by_kind(kind) if "kubestash.com" in obj["apiVersion"] else core_resource(kind)
        self.kube.create(resource.from_dict(obj))

    def pv_pvc(self, name: str, path: Path) -> None:
        pv = f"{self.ns}-{name}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": str(path)},
                    "claimRef": {"namespace": self.ns, "name": name},
                },
            }
        )
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                    "volumeName": pv,
                },
            }
        )

    def deployment(self, name: str, *, claim: str) -> None:
        """A one-replica Deployment mounting ``claim`` at /source/data."""
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
        self.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "demo"}},
                    "template": pod_template(volumes),
                },
            }
        )

    def pvc_with_backup(self, bc: str, *, claim: str = "data", params: dict[str, str] | None = None) -> Path:
        """A claim on a fresh tree() and a pvc-addon BackupConfiguration ``bc`` on it; returns the tree."""
        source = self.tmp / claim
        tree(source)
        self.pv_pvc(claim, source)
        target = {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": claim}
        self.apply(backup_configuration(bc, target, "pvc-addon", params))
        return source

    def statefulset_with_backup(self) -> list[Path]:
        """StatefulSet ``db`` (two replicas on fresh trees) and workload-addon BackupConfiguration ``sts``."""
        sources = []
        for ordinal in range(2):
            source = self.tmp / f"sts-{ordinal}"
            tree(source, seed=ordinal)
            self.pv_pvc(f"data-db-{ordinal}", source)
            sources.append(source)
        self.statefulset("db")
        target = {"apiGroup": "apps", "kind": "StatefulSet", "name": "db"}
        self.apply(backup_configuration("sts", target, "workload-addon", {"paths": "/source/data"}))
        return sources

    def statefulset(self, name: str) -> None:
        """Two replicas mounting volumeClaimTemplate ``data`` (claims ``data-<name>-<ordinal>``) at /source/data."""
        self.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 2,
                    "serviceName": name,
                    "selector": {"matchLabels": {"app": "demo"}},
                    "template": pod_template([]),
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                        }
                    ],
                },
            }
        )

    def restic(self, repo_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env, "RESTIC_PASSWORD": PASSWORD}
        url = f"{self.repo_url_base}/{repo_dir}" if self.repo_url_base else str(self.backend_root / repo_dir)
        return subprocess.run(
            ["restic", "-r", url, "--no-cache", *args], env=env, capture_output=True, text=True, check=False
        )


def core_resource(kind: str) -> Any:
    from lightkube.resources.apps_v1 import Deployment, StatefulSet
    from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim

    return {
        "PersistentVolume": PersistentVolume,
        "PersistentVolumeClaim": PersistentVolumeClaim,
        "Deployment": Deployment,
        "StatefulSet": StatefulSet,
        "Secret": Secret,
    }[kind]


def backup_configuration(
    name: str, target: dict[str, Any], addon: str, params: dict[str, str] | None = None, directory: str = "/demo"
) -> dict[str, Any]:
    task: dict[str, Any] = {"name": "logical-backup"}
    if params:
        task["params"] = params
    return {
        "apiVersion": "core.kubestash.com/v1alpha1",
        "kind": "BackupConfiguration",
        "metadata": {"name": name},
        "spec": {
            "target": target,
            "backends": [
                {"name": "backend", "storageRef": {"name": "storage"}, "retentionPolicy": {"name": "keep-three"}}
            ],
            "sessions": [
                {
                    "name": SESSION,
                    "sessionHistoryLimit": 2,
                    "scheduler": {"schedule": "0 0 1 1 *"},
                    "repositories": [
                        {
                            "name": f"{name}-repo",
                            "backend": "backend",
                            "directory": directory,
                            "encryptionSecret": {"name": "encrypt-secret"},
                        }
                    ],
                    "addon": {"name": addon, "tasks": [task]},
                }
            ],
        },
    }


def run_with_operator(
    server: ServerProcess,
    body: Callable[[AsyncClient], Any],
    clock: Callable[[], datetime] = utcnow,
    volume_root: Path | None = None,
) -> Any:
    async def scenario() -> Any:
        client = AsyncClient(config=KubeConfig.from_file(str(server.kubeconfig)))
        operator = Operator(
            client,
            sync_interval=5.0,
            retry_interval=0.5,
            kubeconfig=server.kubeconfig,
            clock=clock,
            volume_root=volume_root,
        )
        await operator.start()
        try:
            return await body(client)
        finally:
            await operator.stop()

    return asyncio.run(scenario())


async def until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.2)


def status(kube: Client, kind: str, name: str, ns: str) -> dict[str, Any]:
    try:
        return dict(kube.get(by_kind(kind), name, namespace=ns).status or {})
    except Exception:
        return {}


def sessions_of(kube: Client, ns: str) -> list[Any]:
    return sorted(kube.list(by_kind("BackupSession"), namespace=ns), key=lambda s: s.metadata.name)


async def finished_session(kube: Client, ns: str, count: int = 1) -> dict[str, Any]:
    """Wait until ``count`` BackupSessions exist and all are final; return the status of the newest."""

    def done() -> dict[str, Any] | None:
        items = sessions_of(kube, ns)
        final = [dict(s.status or {}) for s in items if (s.status or {}).get("phase") in FINAL]
        if len(items) < count or len(final) < len(items):
            return None
        newest = max(items, key=lambda s: (s.metadata.creationTimestamp, s.metadata.name))
        return dict(newest.status or {})

    return await until(done, what="finished BackupSessions")  # type: ignore[no-any-return]


def pod_template(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "demo"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/source/data"}],
                }
            ],
            "volumes": volumes,
        },
    }


def trigger_now(kube: Client, ns: str, bc_name: str) -> str:
    bc = kube.get(by_kind("BackupConfiguration"), bc_name, namespace=ns).to_dict()  # type: ignore[attr-defined]
    manifest = backup_session_manifest(bc, SESSION, int(time.time() * 1000) % 10**10)
    kube.create(by_kind("BackupSession").from_dict(manifest))  # type: ignore[attr-defined]
    return str(manifest["metadata"]["name"])


async def final_status(kube: Client, ns: str, name: str, timeout: float = 90.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        st = status(kube, "BackupSession", name, ns)
        return st if st.get("phase") in FINAL else None

    return await until(done, timeout=timeout, what=f"BackupSession {name} finished")  # type: ignore[no-any-return]
