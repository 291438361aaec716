"""The native engine's read path against repositories written by the real restic 0.14 (no mocks).

restic creates and backs up version 1 and version 2 repositories (locally and on moto S3); the native engine
must list the same snapshots, parse every pack header consistently with the index, and restore the tree
exactly -- bytes, modes, mtimes, symlinks, empty directories, non-ASCII names, ownership -- and must refuse a
wrong password and a damaged pack with errors that say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.api.storage import Backend
from kubestash.backends.factory import open_backend
from kubestash.engine.native.pack import IntegrityError, read_header
from kubestash.engine.native.repository import (
    NativeRepository,
    SnapshotNotFoundError,
    WrongPasswordError,
    parse_time_ns,
)
from kubestash.engine.native.restore import restore
from kubestash.engine.native.store import BackendStore, LocalStore, StoreError, path_of
from restic_helpers import PASSWORD, cheapen_key, describe, make_tree, restored_at
from storage_servers import moto_server

T = TypeVar("T")
BIG = 21 * 1024 * 1024
OWNED = "sub/owned.txt"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def restic(repo: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["restic", "-r", repo, "--no-cache", "--quiet", *args],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def build_tree(root: Path) -> Path:
    """make_tree's entries plus what a native restore must also get right."""
    tree = make_tree(root)
    (tree / "données").mkdir()
    (tree / "données" / "naïve.txt").write_text("ünïcödé\n")
    (tree / "with space.txt").write_text("spaced\n")
    (tree / "empty.txt").write_bytes(b"")
    (tree / "big.bin").write_bytes(os.urandom(BIG))
    (tree / "big-copy.bin").write_bytes((tree / "big.bin").read_bytes()[: 3 * 1024 * 1024])
    (tree / OWNED).write_text("owned\n")
    os.chown(tree / OWNED, 1234, 2345)
    (tree / "sub" / "deeper").chmod(0o750)
    (tree / "sub" / "b.bin").chmod(0o600)
    entries = sorted(tree.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for i, path in enumerate([*entries, tree]):
        ns = 1_600_000_000_123_456_789 + i * 7_000_000_001
        os.utime(path, ns=(ns - 5_000_000_000, ns), follow_symlinks=False)
    return tree


@dataclass(frozen=True)
class ResticRepo:
    path: Path
    version: int
    snapshot_ids: tuple[str, ...]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module", params=[2, 1], ids=["v2", "v1"])
def restic_repo(request: pytest.FixtureRequest, source: Path, tmp_path_factory: pytest.TempPathFactory) -> ResticRepo:
    version = int(request.param)
    path = tmp_path_factory.mktemp(f"repo-v{version}") / "repo"
    restic(str(path), "init", "--repository-version", str(version))
    cheapen_key(path, PASSWORD)
    restic(str(path), "backup", str(source / "sub"), "--tag", "first")
    restic(str(path), "backup", str(source))
    ids = tuple(s["id"] for s in json.loads(restic(str(path), "snapshots", "--json")))
    return ResticRepo(path, version, ids)


@pytest.fixture(params=["threads", "processes", "batches"])
def restore_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Restore in threads (as from an object store, or a small restore) or in worker processes (a large one
    from a local repository): the threshold moved so that this small tree takes either path. ``batches``: every
    file is a batch of its own (as every 256 MiB of a large restore), two being written while the walk goes on."""
    minimum = 1 << 62 if request.param == "threads" else 0
    monkeypatch.setattr("kubestash.engine.native.restore.PROCESS_MIN_BYTES", minimum)
    if request.param == "batches":
        monkeypatch.setattr("kubestash.engine.native.restore.BATCH_BYTES", 1)
    return str(request.param)


def open_local(repo: ResticRepo, password: str = PASSWORD) -> NativeRepository:
    return run(NativeRepository.open(LocalStore(repo.path), password))


def test_snapshots_match_restic(restic_repo: ResticRepo) -> None:
    repo = open_local(restic_repo)
    assert repo.config.version == restic_repo.version
    expected = json.loads(restic(str(restic_repo.path), "snapshots", "--json"))
    native = run(repo.snapshots())
    assert [s.id for s in native] == [s["id"] for s in expected]
    assert [list(s.paths) for s in native] == [s["paths"] for s in expected]
    assert [s.time_text for s in native] == [s["time"] for s in expected]
    assert [s.tree for s in native] == [s["tree"] for s in expected]
    assert native[0].tags == ("first",)
    assert native[0].time < native[1].time

    assert run(repo.find_snapshot("latest")).id == native[1].id
    assert run(repo.find_snapshot(native[0].id[:8])).id == native[0].id
    with pytest.raises(SnapshotNotFoundError):
        run(repo.find_snapshot("0000ffff"))


def test_pack_headers_agree_with_index(restic_repo: ResticRepo) -> None:
    repo = open_local(restic_repo)
    by_pack: dict[str, set[object]] = {}
    for entry in repo.index.values():
        by_pack.setdefault(entry.pack_id, set()).add(entry.blob)
    packs = run(repo.store.list("data"))
    assert sorted(by_pack) == packs
    compressed = 0
    for pack_id in packs:
        blobs = read_header(repo.key, run(repo.store.get(path_of("data", pack_id))), pack_id)
        assert set(blobs) == by_pack[pack_id]
        compressed += sum(b.uncompressed_length is not None for b in blobs)
    assert (compressed > 0) == (restic_repo.version == 2)


def test_restore_reproduces_the_tree(restic_repo: ResticRepo, source: Path, tmp_path: Path, restore_in: str) -> None:
    repo = open_local(restic_repo)
    files, size = run(restore(repo, restic_repo.snapshot_ids[-1], tmp_path / "out"))
    out = restored_at(tmp_path / "out", source)
    listing = restic(str(restic_repo.path), "ls", "--json", "latest", str(source / "big.bin"))
    (recorded,) = [n for n in map(json.loads, listing.splitlines()) if n.get("name") == "big.bin"]
    # restic records atime = mtime (restic's archiver); the restore must reproduce what was recorded.
    assert (out / "big.bin").stat().st_atime_ns == parse_time_ns(recorded["atime"])
    assert describe(out) == describe(source)
    regular = [p for p in source.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files == len(regular)
    assert size == sum(p.stat().st_size for p in regular)
    st = (out / OWNED).stat()
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert (out / "link").lstat().st_mtime_ns == (source / "link").lstat().st_mtime_ns
    assert out.stat().st_mtime_ns == source.stat().st_mtime_ns


def test_restore_over_changed_files(restic_repo: ResticRepo, source: Path, tmp_path: Path, restore_in: str) -> None:
    """Restoring over a previous restore whose files grew, shrank or were replaced gives the snapshot back."""
    repo = open_local(restic_repo)
    run(restore(repo, "latest", tmp_path / "out"))
    out = restored_at(tmp_path / "out", source)
    with (out / "big.bin").open("ab") as f:
        f.write(b"garbage past the end" * 1000)
    (out / "big-copy.bin").write_bytes(b"short")
    (out / "a.txt").unlink()
    run(restore(repo, "latest", tmp_path / "out"))
    assert describe(out) == describe(source)


def test_restore_include_and_exclude(restic_repo: ResticRepo, source: Path, tmp_path: Path, restore_in: str) -> None:
    repo = open_local(restic_repo)
    snap = restic_repo.snapshot_ids[-1][:10]
    files, _ = run(restore(repo, snap, tmp_path / "inc", include=[str(source / "données"), "*.sh"]))
    out = restored_at(tmp_path / "inc", source)
    assert files == 2
    assert (out / "données" / "naïve.txt").read_text() == "ünïcödé\n"
    assert (out / "sub" / "deeper" / "c.sh").stat().st_mode & 0o777 == 0o750
    assert not (out / "a.txt").exists() and not (out / "big.bin").exists()

    files, _ = run(restore(repo, snap, tmp_path / "exc", exclude=["*.bin", "/**/sub/deeper"]))
    out = restored_at(tmp_path / "exc", source)
    expected = {k: v for k, v in describe(source).items() if not k.endswith(".bin") and "deeper" not in k}
    assert describe(out) == expected
    assert files == sum(1 for v in expected.values() if v[0] == "file")


def test_wrong_password(restic_repo: ResticRepo) -> None:
    with pytest.raises(WrongPasswordError, match="wrong password"):
        open_local(restic_repo, "not-the-password")


def test_flipped_byte_is_an_integrity_error(restic_repo: ResticRepo, tmp_path: Path, restore_in: str) -> None:
    copy = tmp_path / "damaged"
    shutil.copytree(restic_repo.path, copy)
    repo = run(NativeRepository.open(LocalStore(copy), PASSWORD))
    big = max(repo.index.values(), key=lambda e: e.blob.length)
    pack = copy / path_of("data", big.pack_id)
    data = bytearray(pack.read_bytes())
    data[big.blob.offset + big.blob.length // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        run(restore(repo, "latest", tmp_path / "out"))
    assert big.pack_id in str(info.value)
    assert big.blob.id in str(info.value)


def test_a_missing_pack_is_named(restic_repo: ResticRepo, tmp_path: Path, restore_in: str) -> None:
    copy = tmp_path / "damaged"
    shutil.copytree(restic_repo.path, copy)
    repo = run(NativeRepository.open(LocalStore(copy), PASSWORD))
    big = max(repo.index.values(), key=lambda e: e.blob.length)
    (copy / path_of("data", big.pack_id)).unlink()
    with pytest.raises(StoreError, match=big.pack_id):
        run(restore(repo, "latest", tmp_path / "out"))


def test_reads_a_restic_repository_on_s3(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    secret = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key-123"}
    with moto_server() as moto:
        moto.create_bucket("native")
        url = f"s3:{moto.endpoint}/native/cluster/repo"
        restic(url, "init", env=secret)
        restic(url, "backup", str(tree), env=secret)
        (expected,) = json.loads(restic(url, "snapshots", "--json", env=secret))
        storage = Backend.model_validate(
            {"provider": "s3", "s3": {"endpoint": moto.endpoint, "bucket": "native", "prefix": "cluster"}}
        )
        backend = open_backend(storage, {k: v.encode() for k, v in secret.items()})

        async def scenario() -> tuple[int, int]:
            repo = await NativeRepository.open(BackendStore(backend, "repo"), PASSWORD)
            (snap,) = await repo.snapshots()
            assert (snap.id, list(snap.paths), snap.time_text) == (expected["id"], expected["paths"], expected["time"])
            return await restore(repo, snap.id[:8], tmp_path / "out")

        files, _ = run(scenario())
    assert files == 5
    assert describe(restored_at(tmp_path / "out", tree)) == describe(tree)
