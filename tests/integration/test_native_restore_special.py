"""The native restore of what restic 0.14 restores beyond files, directories and symlinks: hard links, FIFOs,
device nodes and extended attributes, compared with the source and with ``restic restore`` of the same
snapshot (written by restic, and by the native backup). No mocks: real trees in a temporary directory.
Device nodes need root to create (``mknod``), in the source as in a restore: as another user the tree has
none and that part of the comparison is empty (said in the assertion message if it fails)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from kubestash.engine.native.backup import backup
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.restore import BATCH_FILES, PROCESS_MIN_BYTES, restore
from kubestash.engine.native.store import LocalStore
from restic_helpers import PASSWORD, restic_output, restored_at

AS_ROOT = os.geteuid() == 0


def special_tree(root: Path) -> Path:
    tree = root / "special"
    (tree / "sub").mkdir(parents=True)
    (tree / "big.bin").write_bytes(os.urandom(PROCESS_MIN_BYTES + (2 << 20)))  # the worker-process restore
    os.link(tree / "big.bin", tree / "sub" / "big-again.bin")
    (tree / "a.txt").write_bytes(os.urandom(70_000))
    os.link(tree / "a.txt", tree / "b.txt")
    os.link(tree / "a.txt", tree / "sub" / "c.txt")
    (tree / "empty").write_bytes(b"")
    os.link(tree / "empty", tree / "sub" / "empty-too")
    (tree / "single.txt").write_text("one link\n")
    os.mkfifo(tree / "pipe", 0o640)
    os.setxattr(tree / "single.txt", "user.colour", b"blue")
    os.setxattr(tree / "a.txt", "user.shared", b"\x00\x01 binary")
    os.setxattr(tree / "sub", "user.kind", b"directory")
    (tree / "read-only.txt").write_text("kept read-only\n")
    os.setxattr(tree / "read-only.txt", "user.note", b"set before the mode")
    (tree / "read-only.txt").chmod(0o400)
    if AS_ROOT:
        os.mknod(tree / "null", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(tree / "loop", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    for i, path in enumerate(sorted(tree.rglob("*"), key=lambda p: -len(p.parts))):
        os.utime(path, ns=(1_700_000_000_000_000_000 + i * 1_000_000_007,) * 2, follow_symlinks=False)
    return tree


def shape(tree: Path) -> dict[str, object]:
    """Per path what a restore must reproduce, and which paths share an inode."""
    inodes: dict[int, list[str]] = {}
    paths = sorted(tree.rglob("*"))
    for path in paths:
        inodes.setdefault(path.lstat().st_ino, []).append(str(path.relative_to(tree)))
    result: dict[str, object] = {}
    for path in paths:
        st = path.lstat()
        kind = stat.S_IFMT(st.st_mode)
        result[str(path.relative_to(tree))] = {
            "type": kind,
            "mode": stat.S_IMODE(st.st_mode),
            "mtime": st.st_mtime_ns,
            "rdev": st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0,
            "xattrs": {name: os.getxattr(path, name, follow_symlinks=False) for name in os.listxattr(path)},
            "content_sha": hash(path.read_bytes()) if kind == stat.S_IFREG else None,
            "same_inode": inodes[st.st_ino],
        }
    return result


@pytest.mark.parametrize(("writer", "batch"), [("restic", BATCH_FILES), ("native", BATCH_FILES), ("native", 2)])
def test_hard_links_fifos_devices_and_xattrs_are_restored_like_restic(tmp_path: Path, writer: str, batch: int) -> None:
    """``batch`` 2: the restore goes in batches of two files (hard links across batches, the big file's batch in
    worker processes, the others in threads)."""
    source = special_tree(tmp_path)
    repo = tmp_path / "repo"
    if writer == "restic":
        restic_output(repo, "init")
        restic_output(repo, "backup", "-q", str(source))
    else:
        asyncio.run(init_repository(LocalStore(repo), PASSWORD, kdf=KdfParams(1024, 8, 1)))

        async def native_backup() -> None:
            await backup(await NativeRepository.open(LocalStore(repo), PASSWORD), [str(source)])

        asyncio.run(native_backup())
    snapshot = json.loads(restic_output(repo, "snapshots", "--json", "latest"))[0]["id"]
    restic_output(repo, "restore", snapshot, "--target", str(tmp_path / "by-restic"))

    async def native_restore(target: Path) -> tuple[int, int]:
        opened = await NativeRepository.open(LocalStore(repo), PASSWORD)
        return await restore(opened, snapshot, target, batch_files=batch)

    files, _ = asyncio.run(native_restore(tmp_path / "native"))
    expected = shape(source)
    assert sum(1 for entry in expected.values() if entry["type"] == stat.S_IFCHR) == (1 if AS_ROOT else 0), (
        "device nodes are in the tree only when the test runs as root"
    )
    assert files == sum(1 for entry in expected.values() if entry["type"] == stat.S_IFREG)
    assert shape(restored_at(tmp_path / "native", source)) == expected
    assert shape(restored_at(tmp_path / "by-restic", source)) == expected  # the oracle agrees on the source

    asyncio.run(native_restore(tmp_path / "native"))  # again over the first restore: links and FIFOs replaced
    assert shape(restored_at(tmp_path / "native", source)) == expected
