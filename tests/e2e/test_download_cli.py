"""``kubestash download`` as a user runs it: the installed command, the bundled API server, real restic repositories.

The objects an operator would have written (Repository, Snapshot with its status) are seeded directly; the
component repositories are made with the ``restic`` binary, one per component, each holding one snapshot
of a different tree backed up as the pod path ``/source/data``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from apiserver_process import ServerProcess
from kubestash.cli.download import ProgressLine
from kubestash.controllers.kinds import by_kind
from kubestash.engine.base import Progress
from restic_helpers import cheapen_key, describe, make_tree

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
STORAGE = "storage.kubestash.com/v1alpha1"
PASSWORD = "correct-horse-battery"
WRONG = "not-the-password-42"
Snapshot = by_kind("Snapshot")
COMPONENTS = ("dump-pod-0", "dump-pod-1")


@dataclass(frozen=True)
class Seeded:
    ns: str
    sources: dict[str, Path]
    """component -> the tree backed up as /source/data"""


def restic(repo: Path, password: str, *args: str) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": password, "RESTIC_CACHE_DIR": str(repo.parent / ".cache")}
    result = subprocess.run(
        ["restic", "-r", str(repo), *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def backed_up_repository(repo: Path, tree: Path) -> str:
    """A restic repository at ``repo`` holding one snapshot of ``tree``; its snapshot ID."""
    restic(repo, PASSWORD, "init")
    cheapen_key(repo, PASSWORD)
    out = restic(repo, PASSWORD, "backup", "--json", "--host", "pod", str(tree))
    summary = [doc for doc in map(json.loads, out.splitlines()) if doc.get("message_type") == "summary"]
    return str(summary[-1]["snapshot_id"])


def snapshot_object(ns: str, name: str, repository: str) -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "Snapshot",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubestash.com/repo-name": repository}},
        "spec": {
            "snapshotID": "01JDEMO0000000000000000000",
            "type": "FullBackup",
            "repository": repository,
            "session": "s",
            "backupSession": "app-backup-s-1700000000",
            "version": "v1",
            "appRef": {"apiGroup": "apps", "kind": "StatefulSet", "name": "dump", "namespace": ns},
            "deletionPolicy": "Delete",
        },
    }


def seed_snapshot(kube: Client, ns: str, name: str, repository: str, status: dict[str, Any]) -> None:
    kube.create(from_dict(snapshot_object(ns, name, repository)))
    kube.patch(
        Snapshot.Status,  # type: ignore[attr-defined]
        name,
        {"status": status},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )


@pytest.fixture(scope="module")
def seeded(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    kube = Client(config=KubeConfig.from_file(str(server.kubeconfig)))
    ns = f"dl-{uuid.uuid4().hex[:8]}"
    backend = tmp_path_factory.mktemp("backend")
    sources_root = tmp_path_factory.mktemp("sources")
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    for secret, password in (("encrypt-secret", PASSWORD), ("wrong-secret", WRONG)):
        kube.create(Secret(metadata=ObjectMeta(name=secret, namespace=ns), stringData={"RESTIC_PASSWORD": password}))
    objects: list[dict[str, Any]] = []
    # Two BackupStorages on the same directory: a Repository's path is unique per BackupStorage, and
    # ``bad-repo`` must open ``demo-repo``'s component repositories with the wrong password.
    for storage, repo, secret in (
        ("local-storage", "demo-repo", "encrypt-secret"),
        ("same-dir", "bad-repo", "wrong-secret"),
    ):
        objects += [
            {
                "apiVersion": STORAGE,
                "kind": "BackupStorage",
                "metadata": {"name": storage, "namespace": ns},
                "spec": {
                    "storage": {
                        "provider": "local",
                        "local": {"mountPath": "/safe/data", "hostPath": {"path": str(backend)}},
                    }
                },
            },
            {
                "apiVersion": STORAGE,
                "kind": "Repository",
                "metadata": {"name": repo, "namespace": ns},
                "spec": {
                    "storageRef": {"name": storage, "namespace": ns},
                    "path": "demo",
                    "encryptionSecret": {"name": secret, "namespace": ns},
                },
            },
        ]
    for obj in objects:
        by_kind(str(obj["kind"]))
        kube.create(from_dict(obj))

    sources: dict[str, Path] = {}
    components: dict[str, Any] = {}
    for i, component in enumerate(COMPONENTS):
        tree = make_tree(sources_root / component)
        (tree / f"only-in-{i}.txt").write_text(f"component {i}\n")
        if i:
            (tree / "sub" / "b.bin").write_bytes(b"different\n" * 100)
        path = f"repository/v1/s/{component}"
        snapshot_id = backed_up_repository(backend / "demo" / path, tree)
        sources[component] = tree
        components[component] = {
            "phase": "Succeeded",
            "path": path,
            "duration": "1s",
            "resticStats": [{"summary": {"id": snapshot_id, "hostPath": "/source/data", "uploaded": "1 KiB"}}],
        }
    succeeded = {"phase": "Succeeded", "totalComponents": 2, "components": components}
    seed_snapshot(kube, ns, "demo-snap", "demo-repo", succeeded)
    seed_snapshot(kube, ns, "bad-snap", "bad-repo", succeeded)
    failed_component = {**components["dump-pod-1"], "phase": "Failed", "error": "restic backup: disk full"}
    seed_snapshot(
        kube,
        ns,
        "failed-snap",
        "demo-repo",
        {**succeeded, "phase": "Failed", "components": {**components, "dump-pod-1": failed_component}},
    )
    return Seeded(ns, sources)


def download(
    server: ServerProcess, seeded: Seeded, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(KUBESTASH), "download", *args, "-n", seeded.ns, "--kubeconfig", str(server.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    for secret in (PASSWORD, WRONG):
        assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def landed(dest: Path, component: str, snapshot: str = "demo-snap") -> Path:
    return dest / snapshot / component / "source" / "data"


def test_downloads_every_component(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for component in COMPONENTS:
        assert describe(landed(tmp_path, component)) == describe(seeded.sources[component])
    assert sorted(p.name for p in (tmp_path / "demo-snap").iterdir()) == list(COMPONENTS)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("dump-pod-0: 6 files, ")
    assert lines[0].endswith(f"-> {landed(tmp_path, 'dump-pod-0')}")
    assert not list(tmp_path.rglob(".kubestash-restore-*"))


def test_selected_component_into_the_current_directory(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--components", "dump-pod-1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "demo-snap").iterdir()] == ["dump-pod-1"]
    assert describe(landed(tmp_path, "dump-pod-1")) == describe(seeded.sources["dump-pod-1"])


def test_include_restores_only_that_subtree(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--destination", str(tmp_path), "--include", "/source/data/sub")
    assert result.returncode == 0, result.stderr
    for component in COMPONENTS:
        want = {k: v for k, v in describe(seeded.sources[component]).items() if k == "sub" or k.startswith("sub/")}
        assert describe(landed(tmp_path, component)) == want


def test_exclude_skips_that_subtree(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(
        server,
        seeded,
        "demo-snap",
        "--destination",
        str(tmp_path),
        "--components",
        "dump-pod-0",
        "--exclude",
        "/source/data/sub,*.tmp",
        "--exclude",
        "/elsewhere/x",
    )
    assert result.returncode == 0, result.stderr
    source = describe(seeded.sources["dump-pod-0"])
    want = {k: v for k, v in source.items() if not (k == "sub" or k.startswith("sub/") or k.endswith(".tmp"))}
    assert describe(landed(tmp_path, "dump-pod-0")) == want


def test_include_and_exclude_together_is_a_usage_error(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--destination", str(tmp_path), "--include", "a", "--exclude", "b")
    assert result.returncode == 2
    assert "cannot be combined" in result.stderr
    assert not list(tmp_path.iterdir())


def test_include_outside_every_backed_up_path(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--destination", str(tmp_path), "--include", "/etc/passwd")
    assert result.returncode == 2
    assert "concerns none of the backed-up paths: /source/data" in result.stderr
    assert not list(tmp_path.iterdir())


def test_unknown_component(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "demo-snap", "--destination", str(tmp_path), "--components", "dump-pod-0,nope")
    assert result.returncode == 2
    assert f"Snapshot {seeded.ns}/demo-snap has no component nope" in result.stderr
    assert "its components are: dump-pod-0, dump-pod-1" in result.stderr
    assert not list(tmp_path.iterdir())


def test_snapshot_not_succeeded(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "failed-snap", "--destination", str(tmp_path), "--components", "dump-pod-0")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: Snapshot {seeded.ns}/failed-snap is not Succeeded (phase Failed)")
    assert "component dump-pod-1: restic backup: disk full" in line
    assert not list(tmp_path.iterdir())


def test_wrong_password_leaves_nothing_behind(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    existing = tmp_path / "bad-snap" / "dump-pod-0" / "mine.txt"
    existing.parent.mkdir(parents=True)
    existing.write_text("keep me\n")
    result = download(server, seeded, "bad-snap", "--destination", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split(": ", 2)[:2] for line in lines] == [["Error", c] for c in COMPONENTS], result.stderr
    assert all(line.endswith(": wrong password or no key found") for line in lines), result.stderr
    assert result.stdout == ""
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "bad-snap",
        "bad-snap/dump-pod-0",
        "bad-snap/dump-pod-0/mine.txt",
    ]


def test_missing_snapshot(server: ServerProcess, seeded: Seeded, tmp_path: Path) -> None:
    result = download(server, seeded, "x", "--destination", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: Snapshot {seeded.ns}/x not found"


def test_progress_line_rewrites_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    line = ProgressLine(out, tty=True)
    line.interval = 0
    progress = Progress(seconds_elapsed=2, percent_done=0.5, total_files=4, files_done=2, total_bytes=2048)
    line.update("dump-pod-0", Progress(**{**progress.__dict__, "bytes_done": 1024}))
    line.update("dump-pod-0", Progress(**{**progress.__dict__, "bytes_done": 2048, "files_done": 4}))
    line.clear()
    text = out.getvalue()
    assert "\n" not in text
    first = text.split("\r")[1]
    assert first.startswith("dump-pod-0: 2/4 files, 1.000 KiB/2.000 KiB (50.0%), 512 B/s, ETA 2s")
    assert text.endswith("\r")


def test_progress_lines_are_rare_in_a_pipe() -> None:
    out = io.StringIO()
    line = ProgressLine(out, tty=False)
    line.start()
    for _ in range(50):
        line.update("dump-pod-0", Progress(seconds_elapsed=1, total_files=1))
    line.clear()
    assert out.getvalue() == ""
    line.last -= 10
    line.update("dump-pod-0", Progress(seconds_elapsed=1, total_files=1))
    assert out.getvalue().count("\n") == 1
