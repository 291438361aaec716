"""restore_into with the real restic: a backed-up directory's contents land at another place, all or nothing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kubestash.engine.base import EngineError, Progress, RepositoryTarget
from kubestash.engine.restic import ResticEngine
from kubestash.tasks.placement import STAGING_PREFIX, restore_into
from restic_helpers import describe, make_tree


def backup(repo: RepositoryTarget, tree: Path) -> str:
    return asyncio.run(ResticEngine().backup(repo, [tree])).snapshot_id


def test_contents_land_at_a_new_place_with_every_attribute(repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    snapshot = backup(repo, tree)
    destination = tmp_path / "elsewhere" / "data"
    progress: list[Progress] = []
    summary = asyncio.run(
        restore_into(ResticEngine(restore_poll=0.01), repo, snapshot, destination, on_progress=progress.append)
    )
    assert describe(destination) == describe(tree)
    assert os.stat(destination).st_mtime_ns == os.stat(tree).st_mtime_ns
    assert summary.files_restored == 5 and summary.paths == (str(tree),)
    assert progress[-1].percent_done == 1.0


def test_restoring_over_existing_files_replaces_them_and_keeps_others(repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    snapshot = backup(repo, tree)
    destination = tmp_path / "live"
    (destination / "sub").mkdir(parents=True)
    (destination / "a.txt").write_text("changed since the backup")
    (destination / "sub" / "b.bin").mkdir()  # a directory where the snapshot has a file
    (destination / "link").write_text("a file where the snapshot has a symlink")
    (destination / "new-since-backup.txt").write_text("keep me")
    asyncio.run(restore_into(ResticEngine(), repo, snapshot, destination))
    restored = describe(destination)
    assert restored.pop("new-since-backup.txt")[0] == "file"
    assert restored == describe(tree)
    assert not [p for p in destination.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_include_relative_to_the_backed_up_path(repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    snapshot = backup(repo, tree)
    destination = tmp_path / "partial"
    asyncio.run(restore_into(ResticEngine(), repo, snapshot, destination, include=["/sub/deeper"]))
    assert sorted(str(p.relative_to(destination)) for p in destination.rglob("*")) == [
        "sub",
        "sub/deeper",
        "sub/deeper/c.sh",
    ]


def test_a_failed_restore_leaves_the_destination_untouched(repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    snapshot = backup(repo, tree)
    destination = tmp_path / "untouched"
    destination.mkdir()
    (destination / "a.txt").write_text("mine")
    before = describe(destination), os.stat(destination).st_mtime_ns
    wrong = RepositoryTarget(url=repo.url, password="not-the-password", secrets=("not-the-password",))
    with pytest.raises(EngineError) as failure:
        asyncio.run(restore_into(ResticEngine(), wrong, snapshot, destination))
    assert failure.value.reason == "WrongPassword" and "not-the-password" not in failure.value.message
    assert (describe(destination), os.stat(destination).st_mtime_ns) == before
    with pytest.raises(EngineError) as missing:
        asyncio.run(restore_into(ResticEngine(), repo, "deadbeef", destination))
    assert missing.value.reason == "SnapshotNotFound"
    assert (describe(destination), os.stat(destination).st_mtime_ns) == before


def test_sparse_files_come_back_sparse(repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = tmp_path / "images"
    tree.mkdir()
    image = tree / "disk.img"
    with image.open("wb") as f:
        f.truncate(16 << 20)
        f.seek(8 << 20)
        f.write(b"a few bytes in the middle of 16 MiB of holes")
    os.utime(image, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    snapshot = backup(repo, tree)
    destination = tmp_path / "restored"
    asyncio.run(restore_into(ResticEngine(), repo, snapshot, destination))
    restored = destination / "disk.img"
    assert restored.read_bytes() == image.read_bytes()
    assert restored.stat().st_mtime_ns == image.stat().st_mtime_ns
    assert restored.stat().st_blocks * 512 <= 2 << 20, "the holes are holes again, not 16 MiB of zeros on disk"
