"""Native key management against restic 0.14: keys we add open the repository in restic and vice versa,
removal really revokes a password, the current key is protected, and ``passwd`` swaps passwords in both."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.keys import add_key, change_password, list_keys, remove_key
from kubestash.engine.native.repository import NativeRepository, RepositoryError, WrongPasswordError
from kubestash.engine.native.store import LocalStore
from restic_helpers import PASSWORD

CHEAP = KdfParams(n=1024, r=8, p=1)
OTHER = "another-secret-7"


def restic(repo: Path, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESTIC_PASSWORD": password, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return subprocess.run(
        ["restic", "--no-cache", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def restic_keys(repo: Path, password: str = PASSWORD) -> list[dict[str, Any]]:
    done = restic(repo, "key", "list", "--json", password=password)
    assert done.returncode == 0, done.stderr
    keys: list[dict[str, Any]] = json.loads(done.stdout)
    return keys


def open_repo(path: Path, password: str = PASSWORD) -> NativeRepository:
    return asyncio.run(NativeRepository.open(LocalStore(path), password))


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    asyncio.run(init_repository(LocalStore(path), PASSWORD, kdf=CHEAP))
    return path


def test_opening_records_the_key_file(repo_path: Path) -> None:
    (name,) = (p.name for p in (repo_path / "keys").iterdir())
    assert open_repo(repo_path).key_id == name
    (info,) = asyncio.run(list_keys(open_repo(repo_path)))
    assert (info.id, info.current) == (name, True)
    (theirs,) = restic_keys(repo_path)
    assert theirs["id"] == name[:8] and theirs["current"] is True
    assert info.created is not None
    assert info.created.astimezone().strftime("%Y-%m-%d %H:%M:%S") == theirs["created"]
    assert (info.username, info.hostname) == (theirs["userName"], theirs["hostName"])


def test_added_key_opens_the_repository_in_restic(repo_path: Path) -> None:
    repo = open_repo(repo_path)
    new_id = asyncio.run(add_key(repo, OTHER, user="bob", host="box", kdf=CHEAP))
    assert (repo_path / "keys" / new_id).is_file()
    by_id = {k["id"]: k for k in restic_keys(repo_path)}
    assert by_id[new_id[:8]] == {**by_id[new_id[:8]], "userName": "bob", "hostName": "box", "current": False}
    assert {k["id"]: k["current"] for k in restic_keys(repo_path, OTHER)} == {
        repo.key_id[:8]: False,
        new_id[:8]: True,
    }
    assert restic(repo_path, "snapshots", password=OTHER).returncode == 0
    assert open_repo(repo_path, OTHER).key_id == new_id


def test_restic_added_key_opens_natively_and_remove_revokes_it(repo_path: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(OTHER + "\n")
    done = restic(repo_path, "key", "add", "--new-password-file", str(tmp_path / "pw"))
    assert done.returncode == 0, done.stderr
    repo = open_repo(repo_path)
    (theirs,) = [k for k in asyncio.run(list_keys(repo)) if not k.current]
    assert open_repo(repo_path, OTHER).key_id == theirs.id

    asyncio.run(remove_key(repo, theirs.id[:6]))  # a unique prefix is enough
    assert not (repo_path / "keys" / theirs.id).exists()
    with pytest.raises(WrongPasswordError):
        open_repo(repo_path, OTHER)
    assert restic(repo_path, "snapshots", password=OTHER).returncode != 0
    assert [k["id"] for k in restic_keys(repo_path)] == [repo.key_id[:8]]


def test_remove_key_refusals(repo_path: Path) -> None:
    repo = open_repo(repo_path)
    with pytest.raises(RepositoryError, match="refusing to remove key currently used to access repository"):
        asyncio.run(remove_key(repo, repo.key_id[:8]))
    with pytest.raises(RepositoryError, match="no matching ID found for prefix 'zz'"):
        asyncio.run(remove_key(repo, "zz"))
    firsts: dict[str, str] = {}
    while True:  # pigeonhole: at most 17 keys until two share a first hex digit
        key_id = asyncio.run(add_key(repo, OTHER, kdf=CHEAP))
        if key_id[0] in firsts or repo.key_id[0] == key_id[0]:
            break
        firsts[key_id[0]] = key_id
    with pytest.raises(RepositoryError, match=f"multiple IDs with prefix '{key_id[0]}' found"):
        asyncio.run(remove_key(repo, key_id[0]))
    assert (repo_path / "keys" / repo.key_id).is_file()


def test_change_password_in_both_engines(repo_path: Path) -> None:
    repo = open_repo(repo_path)
    old_id = repo.key_id
    new_id = asyncio.run(change_password(repo, OTHER, kdf=CHEAP))
    assert repo.key_id == new_id != old_id
    assert [p.name for p in (repo_path / "keys").iterdir()] == [new_id]
    with pytest.raises(WrongPasswordError):
        open_repo(repo_path, PASSWORD)
    assert restic(repo_path, "snapshots").returncode != 0
    assert open_repo(repo_path, OTHER).key_id == new_id
    assert restic_keys(repo_path, OTHER) == [
        {**restic_keys(repo_path, OTHER)[0], "id": new_id[:8], "current": True},
    ]


def test_restic_passwd_is_seen_natively(repo_path: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(OTHER)
    done = restic(repo_path, "key", "passwd", "--new-password-file", str(tmp_path / "pw"))
    assert done.returncode == 0, done.stderr
    with pytest.raises(WrongPasswordError):
        open_repo(repo_path)
    (info,) = asyncio.run(list_keys(open_repo(repo_path, OTHER)))
    assert info.current


def test_known_key_skips_derivation_until_the_key_file_goes(repo_path: Path) -> None:
    repo = open_repo(repo_path)
    known = (repo.key_id, repo.key)
    again = asyncio.run(NativeRepository.open(LocalStore(repo_path), PASSWORD, known=known))
    assert again.key_id == repo.key_id
    asyncio.run(change_password(repo, OTHER, kdf=CHEAP))
    with pytest.raises(WrongPasswordError):
        asyncio.run(NativeRepository.open(LocalStore(repo_path), PASSWORD, known=known))
