"""``kubestash repo key ...`` and ``kubestash repo unlock`` as a user runs them, restic 0.14 as the oracle:
the same JSON as ``restic key list --json``, passwords that work in both, and locks that both honour."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubestash.engine.native.files import encode_unpacked, storage_id
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore
from kubestash.engine.native.tree import GoTime
from restic_helpers import PASSWORD

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
OTHER = "second-password-99"


def env_for(password: str) -> dict[str, str]:
    env = {**os.environ, "RESTIC_PASSWORD": password}
    env.pop("RESTIC_PASSWORD_FILE", None)
    env.pop("RESTIC_REPOSITORY", None)
    return env


def kubestash(repo: Path, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBESTASH), "repo", "-r", str(repo), *args],
        env=env_for(password),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def restic(repo: Path, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["restic", "-r", str(repo), "--no-cache", *args],
        env=env_for(password),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    asyncio.run(init_repository(LocalStore(path), PASSWORD, kdf=KdfParams(n=1024, r=8, p=1)))
    return path


def test_key_list_add_remove_passwd(repo: Path, tmp_path: Path) -> None:
    ours = kubestash(repo, "--json", "key", "list")
    assert ours.returncode == 0, ours.stderr
    theirs = restic(repo, "--json", "key", "list")
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)
    table = kubestash(repo, "key", "list")
    assert table.returncode == 0 and f"*{json.loads(ours.stdout)[0]['id']}" in table.stdout

    pw = tmp_path / "pw"
    pw.write_text(OTHER + "\n")
    added = kubestash(repo, "key", "add", "--new-password-file", str(pw), "--user", "ann", "--host", "h1")
    assert added.returncode == 0, added.stderr
    new_id = added.stdout.split()[-1]
    assert (repo / "keys" / new_id).is_file() and OTHER not in added.stdout + added.stderr
    listed = json.loads(restic(repo, "--json", "key", "list", password=OTHER).stdout)
    assert {(k["id"], k["userName"], k["hostName"], k["current"]) for k in listed} >= {(new_id[:8], "ann", "h1", True)}
    ours_listed = json.loads(kubestash(repo, "--json", "key", "list", password=OTHER).stdout)
    assert sorted(ours_listed, key=lambda k: k["id"]) == sorted(listed, key=lambda k: k["id"])  # restic: dir order

    refused = kubestash(repo, "key", "remove", new_id[:8], password=OTHER)
    assert refused.returncode == 1
    assert "refusing to remove key currently used to access repository" in refused.stderr
    removed = kubestash(repo, "key", "remove", new_id[:8])
    assert removed.returncode == 0, removed.stderr
    assert restic(repo, "snapshots", password=OTHER).returncode != 0

    changed = kubestash(repo, "key", "passwd", "--new-password-file", str(pw))
    assert changed.returncode == 0, changed.stderr
    assert restic(repo, "snapshots").returncode != 0
    assert restic(repo, "snapshots", password=OTHER).returncode == 0
    assert kubestash(repo, "snapshots", password=OTHER).returncode == 0
    wrong = kubestash(repo, "snapshots")
    assert wrong.returncode == 1 and PASSWORD not in wrong.stderr

    missing = kubestash(repo, "key", "add", password=OTHER)
    assert missing.returncode == 1 and "--new-password-file" in missing.stderr


def _write_lock(repo: Path, **fields: object) -> str:
    opened = asyncio.run(NativeRepository.open(LocalStore(repo), PASSWORD))
    doc = {
        "time": GoTime.local(time.time_ns()).to_json(),
        "exclusive": True,
        "hostname": socket.gethostname(),
        "username": "someone",
        "pid": os.getpid(),
        **fields,
    }
    data = encode_unpacked(opened.key, json.dumps(doc).encode(), opened.config.version)
    (repo / "locks" / storage_id(data)).write_bytes(data)
    return storage_id(data)


def test_unlock_and_locked_commands(repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("hello")
    proc = subprocess.Popen(["true"])
    proc.wait()
    stale = _write_lock(repo, pid=proc.pid)
    live = _write_lock(repo, hostname="elsewhere", pid=1, exclusive=False)

    blocked = kubestash(repo, "backup", str(source))
    assert blocked.returncode == 1
    assert blocked.stderr.startswith(f"Error: repository is already locked exclusively by PID {proc.pid}")
    assert "\n" not in blocked.stderr.rstrip("\n")

    done = kubestash(repo, "unlock")
    assert (done.returncode, done.stdout) == (0, "successfully removed locks\n")
    assert sorted(p.name for p in (repo / "locks").iterdir()) == [live]
    assert stale not in {p.name for p in (repo / "locks").iterdir()}

    backed_up = kubestash(repo, "backup", str(source))  # a shared lock coexists with another shared lock
    assert backed_up.returncode == 0, backed_up.stderr
    checked = kubestash(repo, "check")  # check locks exclusively, like restic
    assert checked.returncode == 1 and "repository is already locked by PID 1 on elsewhere" in checked.stderr

    assert kubestash(repo, "unlock", "--remove-all").returncode == 0
    assert list((repo / "locks").iterdir()) == []
    checked = kubestash(repo, "check")
    assert checked.returncode == 0, checked.stderr
    assert list((repo / "locks").iterdir()) == []
    assert restic(repo, "check").returncode == 0


def test_restic_engine_passthrough(repo: Path) -> None:
    ours = kubestash(repo, "--engine", "restic", "--json", "key", "list")
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout) == json.loads(kubestash(repo, "--json", "key", "list").stdout)
    unlocked = kubestash(repo, "--engine", "restic", "unlock", "--remove-all")
    assert unlocked.returncode == 0, unlocked.stderr
