"""The native ``check`` against repositories written by the real restic 0.14, healthy and damaged (no mocks).

A checker is only useful if it agrees with restic about what is broken: every damage below is applied to a
copy of a restic-written repository (version 1 and 2), the native check must report it with a message naming
the damaged pack, blob or tree, and ``restic check --read-data`` must reach the same verdict on the same copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubestash.engine.native.check import CheckReport, check
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore, path_of
from restic_helpers import PASSWORD, cheapen_key, make_tree


def restic(repo: Path, *args: str, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["restic", "-r", str(repo), "--no-cache", "--quiet", *args],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        check=False,
    )
    if check_rc:
        assert result.returncode == 0, result.stderr
    return result


def open_repo(path: Path) -> NativeRepository:
    return asyncio.run(NativeRepository.open(LocalStore(path), PASSWORD))


def native_check(path: Path, *, read_data: bool) -> CheckReport:
    return asyncio.run(check(open_repo(path), read_data=read_data))


@dataclass(frozen=True)
class ResticRepo:
    path: Path
    version: int


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = make_tree(tmp_path_factory.mktemp("src"))
    (tree / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return tree


@pytest.fixture(scope="module", params=[2, 1], ids=["v2", "v1"])
def restic_repo(request: pytest.FixtureRequest, source: Path, tmp_path_factory: pytest.TempPathFactory) -> ResticRepo:
    version = int(request.param)
    path = tmp_path_factory.mktemp(f"repo-v{version}") / "repo"
    restic(path, "init", "--repository-version", str(version))
    cheapen_key(path, PASSWORD)
    restic(path, "backup", str(source / "sub"))
    restic(path, "backup", str(source))
    return ResticRepo(path, version)


@pytest.mark.parametrize("read_data", [False, True], ids=["structure", "read-data"])
def test_healthy_repository_checks_ok(restic_repo: ResticRepo, read_data: bool) -> None:
    report = native_check(restic_repo.path, read_data=read_data)
    assert report.ok, report.errors
    assert (report.errors, report.warnings) == ([], [])
    repo = open_repo(restic_repo.path)
    assert report.counters.snapshots == 2
    assert report.counters.packs == len(asyncio.run(repo.store.list("data")))
    assert report.counters.blobs == len(repo.index)
    # At least the root tree and one tree per directory of the latest snapshot (no two have equal content).
    assert report.counters.trees >= 1 + len(directories(restic_repo))
    assert report.read_data is read_data


def directories(restic_repo: ResticRepo) -> list[str]:
    listing = restic(restic_repo.path, "ls", "--json", "latest").stdout.splitlines()
    return [n["path"] for n in map(json.loads, listing[1:]) if n["type"] == "dir"]


# ---------------------------------------------------------------- damage


def largest(repo: NativeRepository, blob_type: str) -> tuple[str, int, int, str]:
    """(pack id, offset, length, blob id) of the largest blob of ``blob_type``."""
    entry = max((e for e in repo.index.values() if e.blob.type == blob_type), key=lambda e: e.blob.length)
    return entry.pack_id, entry.blob.offset, entry.blob.length, entry.blob.id


def flip_data_byte(path: Path) -> list[str]:
    pack_id, offset, length, blob_id = largest(open_repo(path), "data")
    pack = path / path_of("data", pack_id)
    data = bytearray(pack.read_bytes())
    data[offset + length // 2] ^= 0x01
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    return [pack_id, blob_id]


def delete_data_pack(path: Path) -> list[str]:
    pack_id, *_ = largest(open_repo(path), "data")
    (path / path_of("data", pack_id)).unlink()
    return [pack_id]


def truncate_pack(path: Path) -> list[str]:
    pack_id, *_ = largest(open_repo(path), "data")
    pack = path / path_of("data", pack_id)
    pack.chmod(0o644)
    pack.write_bytes(pack.read_bytes()[:-1])
    return [pack_id]


def shrink_pack(path: Path) -> list[str]:
    """A pack cut to 2 bytes: too short even for the length of its header."""
    pack_id, *_ = largest(open_repo(path), "data")
    pack = path / path_of("data", pack_id)
    pack.chmod(0o644)
    pack.write_bytes(pack.read_bytes()[:2])
    return [pack_id]


def delete_root_tree_pack(path: Path) -> list[str]:
    repo = open_repo(path)
    root = asyncio.run(repo.find_snapshot("latest")).tree
    pack_id = repo.lookup(root).pack_id
    (path / path_of("data", pack_id)).unlink()
    return [pack_id, root]


def add_unreferenced_pack(path: Path) -> list[str]:
    data = os.urandom(4096)
    pack_id = hashlib.sha256(data).hexdigest()
    (path / "data" / pack_id[:2]).mkdir(exist_ok=True)
    (path / path_of("data", pack_id)).write_bytes(data)
    return [pack_id]


@dataclass(frozen=True)
class Damage:
    apply: Callable[[Path], list[str]]
    """Damage the repository; returns the ids the report must name."""
    structure_detects: bool
    """Found without --read-data."""
    is_error: bool = True
    """An error (check fails) rather than a warning."""


DAMAGES = {
    "flipped-byte": Damage(flip_data_byte, structure_detects=False),
    "deleted-pack": Damage(delete_data_pack, structure_detects=True),
    "truncated-pack": Damage(truncate_pack, structure_detects=True),
    "deleted-tree-pack": Damage(delete_root_tree_pack, structure_detects=True),
    "unreferenced-pack": Damage(add_unreferenced_pack, structure_detects=True, is_error=False),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_damage_is_reported_like_restic(restic_repo: ResticRepo, name: str, tmp_path: Path) -> None:
    damage = DAMAGES[name]
    copy = tmp_path / "damaged"
    shutil.copytree(restic_repo.path, copy)
    named = damage.apply(copy)

    for read_data in (False, True):
        report = native_check(copy, read_data=read_data)
        detected = read_data or damage.structure_detects
        messages = report.errors if damage.is_error else report.warnings
        if detected:
            assert report.ok is not damage.is_error
            assert messages, report
            text = "\n".join(messages)
            for object_id in named:
                assert object_id in text, (object_id, text)
        else:
            assert report.ok and not report.errors, report.errors

    assert restic_check_ok(copy) == report.ok, report


def test_a_pack_too_short_for_its_header_is_named(restic_repo: ResticRepo, tmp_path: Path) -> None:
    """(restic 0.14 fails it too, after ~40 s of retries: not run here.)"""
    copy = tmp_path / "damaged"
    shutil.copytree(restic_repo.path, copy)
    (pack_id,) = shrink_pack(copy)
    for read_data in (False, True):
        report = native_check(copy, read_data=read_data)
        assert not report.ok and any(pack_id in e for e in report.errors), report.errors


def restic_check_ok(repo: Path) -> bool:
    """restic's verdict: does ``restic check --read-data`` exit 0?

    restic 0.14 retries reading a missing pack for about 40 s before giving up; once it has printed
    "pack ...: does not exist" it has counted an error and will exit 1, so the verdict is read there and the
    process (started here) is stopped rather than waited for.
    """
    with subprocess.Popen(
        ["restic", "-r", str(repo), "--no-cache", "check", "--read-data"],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("pack ") and line.rstrip().endswith(": does not exist"):
                proc.kill()
                return False
        return proc.wait() == 0


def test_a_snapshot_scoped_check_looks_at_that_snapshot_only(restic_repo: ResticRepo, tmp_path: Path) -> None:
    """The check after a backup: the snapshot's trees and the packs of its blobs, not the whole repository."""
    copy = tmp_path / "repo"
    shutil.copytree(restic_repo.path, copy)
    repo = open_repo(copy)
    first, second = asyncio.run(repo.snapshots())  # first: source/sub only; second: all of source
    only_second = {e.pack_id for e in repo.index.values()} - {
        e.pack_id for e in repo.index.values() if e.blob.id in _reachable(repo, first.tree)
    }
    assert only_second, "the second backup wrote packs of its own"
    victim = sorted(only_second)[0]
    (copy / path_of("data", victim)).chmod(0o600)
    (copy / path_of("data", victim)).write_bytes(b"damaged")

    scoped = asyncio.run(check(open_repo(copy), snapshots=[first.id]))
    assert scoped.ok, scoped.errors
    assert scoped.counters.snapshots == 1
    assert scoped.counters.packs < len(asyncio.run(repo.store.list("data")))
    damaged = asyncio.run(check(open_repo(copy), snapshots=[second.id]))
    assert not damaged.ok and any(victim in e for e in damaged.errors), damaged.errors
    assert not native_check(copy, read_data=False).ok


def _reachable(repo: NativeRepository, tree_id: str) -> set[str]:
    """Every blob id below a tree (the tree itself included)."""
    found = {tree_id}
    for node in asyncio.run(repo.load_tree(tree_id)):
        if node.subtree:
            found |= _reachable(repo, node.subtree)
        found |= set(node.content or ())
    return found


def test_the_check_after_an_incremental_backup_costs_what_changed_and_still_sees_lost_packs(tmp_path: Path) -> None:
    """The engine checks a backup's snapshot in the same process: trees the backup read from the parent and
    kept are not read again (the check costs what changed), yet a pack lost since the last backup, or one
    with the wrong size, fails that check, and a later check of the same snapshot reads everything."""
    from kubestash.engine.base import RepositoryTarget
    from kubestash.engine.native.engine import NativeEngine

    tree = make_tree(tmp_path / "src")
    for i in range(30):
        (tree / "sub" / f"file-{i}.bin").write_bytes(os.urandom(20_000))
    target = RepositoryTarget(url=str(tmp_path / "repo"), password=PASSWORD, secrets=(PASSWORD,))
    engine = NativeEngine()
    loaded: list[str] = []

    async def run() -> None:
        await engine.init(target)
        first = await engine.backup(target, [tree])
        assert (await engine.check(target, snapshots=[first.snapshot_id])).ok

        (tree / "a.txt").write_bytes(b"changed\n")  # only the top directory changes
        original = NativeRepository.load_blob

        async def counting(self: NativeRepository, blob_id: str) -> bytes:
            loaded.append(blob_id)
            return await original(self, blob_id)

        NativeRepository.load_blob = counting  # type: ignore[method-assign]
        try:
            second = await engine.backup(target, [tree])
            loaded.clear()
            result = await engine.check(target, snapshots=[second.snapshot_id])
            assert result.ok, result.message
            incremental = len(loaded)
            loaded.clear()
            assert (await engine.check(target, snapshots=[second.snapshot_id])).ok
            assert incremental < len(loaded), (incremental, len(loaded))  # sub/ and sub/deeper/ were not re-read
        finally:
            NativeRepository.load_blob = original  # type: ignore[method-assign]

        repo = await NativeRepository.open(LocalStore(target_path), PASSWORD)
        victim = sorted(e.pack_id for e in repo.index.values() if e.blob.type == "data" and e.blob.length > 10_000)[0]
        (target_path / path_of("data", victim)).unlink()
        os.utime(tree / "a.txt")  # a new backup, still with the sub/ trees kept from the parent
        third = await engine.backup(target, [tree])
        lost = await engine.check(target, snapshots=[third.snapshot_id])
        assert not lost.ok and victim in lost.message, lost.message

    target_path = Path(target.url)
    asyncio.run(run())
