"""``kubestash unlock`` and ``kubestash password`` as a user runs them: the installed command against the bundled
server, on real restic repositories of a local BackupStorage (no operator: the Repository's status is patched)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.types import PatchType

from apiserver_process import ServerProcess
from kubestash.controllers.kinds import by_kind
from restic_helpers import cheapen_key

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
RESTIC = shutil.which("restic") or "restic"
PASSWORD = "old-Secret-pw-9f3e1c"
NEW_PASSWORD = "new-Secret-pw-51ab7d"
NEWER_PASSWORD = "newer-Secret-pw-c0ffee"
ALL_PASSWORDS = (PASSWORD, NEW_PASSWORD, NEWER_PASSWORD)
PATHS = ("repository/v1/s/dump-pod-0", "repository/v1/s/dump-pod-1")
Repository = by_kind("Repository")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One restic repository with a snapshot and a cheap key, copied for every component path."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    restic(repo, "init")
    cheapen_key(repo, PASSWORD)
    source = tmp_path_factory.mktemp("source")
    (source / "dump.sql").write_text("select 1;\n")
    restic(repo, "backup", str(source))
    return repo


@dataclass(frozen=True)
class World:
    ns: str
    root: Path
    """The BackupStorage's directory; the Repository is ``<root>/demo``."""

    def repo(self, component_path: str) -> Path:
        return self.root / "demo" / component_path


@pytest.fixture
def world(kube: Client, tmp_path: Path, template: Path) -> World:
    """Namespace, encryption Secret, local BackupStorage, Repository ``demo`` with two component repositories."""
    ns = f"repo-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "storage"
    kube.create(Namespace(metadata=ObjectMeta(name=ns)))
    kube.create(
        Secret(metadata=ObjectMeta(name="encrypt-secret", namespace=ns), stringData={"RESTIC_PASSWORD": PASSWORD})
    )
    storage = "storage.kubestash.com/v1alpha1"
    for obj in (
        {
            "apiVersion": storage,
            "kind": "BackupStorage",
            "metadata": {"name": "local-storage", "namespace": ns},
            "spec": {
                "storage": {"provider": "local", "local": {"mountPath": "/safe/data", "hostPath": {"path": str(root)}}}
            },
        },
        {
            "apiVersion": storage,
            "kind": "Repository",
            "metadata": {"name": "demo", "namespace": ns},
            "spec": {
                "storageRef": {"name": "local-storage", "namespace": ns},
                "path": "demo",
                "encryptionSecret": {"name": "encrypt-secret", "namespace": ns},
            },
        },
    ):
        by_kind(str(obj["kind"]))
        kube.create(from_dict(obj))
    kube.patch(
        Repository.Status,  # type: ignore[attr-defined]
        "demo",
        {"status": {"componentPaths": list(PATHS)}},
        namespace=ns,
        patch_type=PatchType.MERGE,
    )
    result = World(ns, root)
    for path in PATHS:
        shutil.copytree(template, result.repo(path))
    return result


def restic(repo: Path, *args: str, password: str = PASSWORD, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = password
    return subprocess.run(
        [RESTIC, "-r", str(repo), "--no-cache", *args], capture_output=True, text=True, env=env, timeout=60, check=check
    )


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    (result,) = cli_all(server, list(args))
    return result


def cli_all(server: ServerProcess, *argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several ``kubestash`` commands at once (each costs ~0.8 s of interpreter start-up)."""
    procs = [
        (argv, subprocess.Popen(
            [str(KUBESTASH), *argv, "--kubeconfig", str(server.kubeconfig)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ))
        for argv in argvs
    ]  # fmt: skip
    results = []
    for argv, proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        for secret in ALL_PASSWORDS:
            assert secret not in out + err
    return results


def locks(repo: Path) -> list[str]:
    return restic(repo, "list", "locks", "--no-lock").stdout.split()


def hold_lock(repo: Path) -> subprocess.Popen[bytes]:
    """A running ``restic backup --stdin``: it holds a (non-exclusive) lock until its stdin closes."""
    before = len(list((repo / "locks").iterdir()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env["RESTIC_PASSWORD"] = PASSWORD
    proc = subprocess.Popen(
        [RESTIC, "-r", str(repo), "--no-cache", "backup", "--stdin", "--stdin-filename", "held.sql"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while len(list((repo / "locks").iterdir())) <= before:
        assert proc.poll() is None and time.monotonic() < deadline, "restic never took its lock"
        time.sleep(0.05)
    return proc


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def password_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"pw-{uuid.uuid4().hex[:6]}"
    path.write_text(text)
    return str(path)


def key_ids(repo: Path, password: str = PASSWORD) -> dict[str, bool]:
    """Key ID -> is it the one ``password`` opens."""
    import json

    return {k["id"]: k["current"] for k in json.loads(restic(repo, "key", "list", "--json", password=password).stdout)}


def opens(repo: Path, password: str) -> bool:
    return restic(repo, "cat", "config", password=password, check=False).returncode == 0


# ------------------------------------------------------------------ unlock
def test_unlock_removes_stale_locks_and_keeps_live_ones_unless_forced(server: ServerProcess, world: World) -> None:
    first = world.repo(PATHS[0])
    kill(hold_lock(first))  # a crashed job: its lock stays, its process is gone
    live = hold_lock(first)
    try:
        assert len(locks(first)) == 2
        result = cli(server, "unlock", "demo", "-n", world.ns)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"{path}: stale locks removed; locks of running operations kept (--force removes them)" for path in PATHS
        ]
        assert len(locks(first)) == 1, "the running backup keeps its lock"

        result = cli(server, "unlock", "demo", "-n", world.ns, "--paths", PATHS[0], "--force")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"{PATHS[0]}: all locks removed"]
        assert locks(first) == []
    finally:
        kill(live)


def test_unlock_usage_errors(server: ServerProcess, world: World) -> None:
    shutil.rmtree(world.repo(PATHS[1]))  # one component repository is gone: the other is still unlocked
    unknown, missing, partial = cli_all(
        server,
        ["unlock", "demo", "-n", world.ns, "--paths", "repository/v1/s/nope"],
        ["unlock", "missing", "-n", world.ns],
        ["unlock", "demo", "-n", world.ns],
    )
    assert unknown.returncode == 2
    assert "no component path repository/v1/s/nope" in unknown.stderr
    assert f"its component paths are: {', '.join(PATHS)}" in unknown.stderr

    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Error: Repository {world.ns}/missing not found"

    assert partial.returncode == 1
    assert partial.stdout.startswith(f"{PATHS[0]}: stale locks removed")
    assert partial.stderr.startswith(f"Error: {PATHS[1]}: ") and "unlock" in partial.stderr.splitlines()[0]
    assert "Traceback" not in partial.stderr


# ------------------------------------------------------------------ password
def test_password_add_list_remove_update(server: ServerProcess, world: World, tmp_path: Path) -> None:
    new_file = password_file(tmp_path, NEW_PASSWORD + "\n")
    result = cli(
        server, "password", "add", "demo", "-n", world.ns, "--new-password-file", new_file, "--user", "alice",
        "--host", "laptop",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{path}: key added (user alice, host laptop)" for path in PATHS]
    pod0, pod1 = world.repo(PATHS[0]), world.repo(PATHS[1])
    opened_by_new = key_ids(pod0, NEW_PASSWORD)  # the new password opens the repository: its key is "current"
    assert len(opened_by_new) == 2
    alice0 = next(k for k, cur in opened_by_new.items() if cur)
    keys = key_ids(pod1)
    assert len(keys) == 2
    alice, in_use = next(k for k, cur in keys.items() if not cur), next(k for k, cur in keys.items() if cur)

    result = cli(server, "pw", "list", "demo", "-n", world.ns)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines]
    assert len(rows) == 8
    assert rows[0] == [f"{PATHS[0]}:"] and rows[4] == [f"{PATHS[1]}:"]
    assert rows[1] == rows[5] == ["ID", "CURRENT", "USER", "HOST", "CREATED"]
    assert rows[2][:2] == [next(k for k in opened_by_new if k != alice0), "*"]
    assert rows[3][:3] == [alice0, "alice", "laptop"] and rows[3][-1] == "UTC"
    assert rows[6][:2] == [in_use, "*"] and rows[7][:3] == [alice, "alice", "laptop"]

    result = cli(
        server, "password", "remove", "demo", "-n", world.ns, "--id-paths", f"{alice}:{PATHS[1]},{in_use}:{PATHS[1]}"
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{PATHS[1]}: key {alice} removed"]
    assert f"Error: {PATHS[1]}: key {in_use}: " in result.stderr
    assert "refusing to remove key currently used" in result.stderr
    assert key_ids(pod1) == {in_use: True}

    newer_file = password_file(tmp_path, NEWER_PASSWORD)
    result = cli(
        server, "password", "update", "demo", "-n", world.ns, "--new-password-file", newer_file, "--paths", PATHS[0]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{PATHS[0]}: password of the current key changed"]
    assert f"the encryption Secret {world.ns}/encrypt-secret still holds the old password" in result.stderr
    assert "RESTIC_PASSWORD" in result.stderr
    assert f"1 other component path still on the old password ({PATHS[1]})" in result.stderr
    assert not opens(pod0, PASSWORD)
    assert len(key_ids(pod0, NEWER_PASSWORD)) == 2  # the changed key and alice's


def test_password_usage_errors(server: ServerProcess, world: World, tmp_path: Path) -> None:
    blank = password_file(tmp_path, "  \n")
    bad_file, bad_pair, bad_path, missing = cli_all(
        server,
        ["password", "add", "demo", "-n", world.ns, "--new-password-file", blank],
        ["password", "remove", "demo", "-n", world.ns, "--id-paths", "abcd1234"],
        ["password", "remove", "demo", "-n", world.ns, "--id-paths", "abcd1234:repository/v1/x/y"],
        ["password", "list", "nothere", "-n", world.ns],
    )
    assert bad_file.returncode == 2
    assert "the password must be non-empty" in bad_file.stderr
    assert bad_pair.returncode == 2
    assert "expected <key id>:<component path>" in bad_pair.stderr
    assert bad_path.returncode == 2
    assert f"its component paths are: {', '.join(PATHS)}" in bad_path.stderr
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"Error: Repository {world.ns}/nothere not found"
