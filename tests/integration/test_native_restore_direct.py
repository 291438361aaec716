"""A large restore from a local repository writes file content with ``O_DIRECT`` (no copy into the page
cache, which it would also crowd: the applications beside a restore keep their cached files). Real backup and
restore on this machine's filesystem; the filesystem refusing ``O_DIRECT`` is simulated (every filesystem
here takes it)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from kubestash.engine.native.backup import backup
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.restore import PROCESS_MIN_BYTES, restore
from kubestash.engine.native.store import LocalStore
from restic_helpers import PASSWORD, restored_at

FAST_KDF = KdfParams(n=1024, r=8, p=1)


def resident_fraction(path: Path) -> float:
    """Share of the file's pages in the page cache (``mincore`` on a mapping of it)."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    with path.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapping:
        start = ctypes.c_char.from_buffer(mapping)
        try:
            assert libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vector) == 0
        finally:
            del start
    return sum(v & 1 for v in vector) / pages


def tree_and_repo(tmp_path: Path) -> tuple[Path, NativeRepository]:
    tree = tmp_path / "data"
    (tree / "small").mkdir(parents=True)
    (tree / "big.bin").write_bytes(os.urandom(PROCESS_MIN_BYTES + (5 << 20) + 1234))
    (tree / "big-twice.bin").write_bytes((tree / "big.bin").read_bytes()[: 9 << 20] * 2)
    for i in range(50):
        (tree / "small" / f"{i}.txt").write_bytes(os.urandom(i * 997))
    for i, path in enumerate(sorted(tree.rglob("*"))):
        os.utime(path, ns=(1_650_000_000_000_000_000 + i * 1_000_000_007,) * 2)
    repo = asyncio.run(init_repository(LocalStore(tmp_path / "repo"), PASSWORD, kdf=FAST_KDF))
    asyncio.run(backup(repo, [str(tree)]))
    return tree, repo


def snapshot_of(tree: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p.relative_to(tree)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(tree.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("finished", ["at the end", "every batch"])
def test_large_files_bypass_the_page_cache_and_keep_their_bytes_and_mtimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished: str
) -> None:
    """``every batch``: each file a batch of its own, and the files written with ``O_DIRECT`` finished as soon
    as one waits (as when a large restore has thousands of them), not after the last batch."""
    if finished == "every batch":
        monkeypatch.setattr("kubestash.engine.native.restore.BATCH_BYTES", 1)
        monkeypatch.setattr("kubestash.engine.native.restore.BATCH_FILES", 1)
        monkeypatch.setattr("kubestash.engine.native.restore.PROCESS_MIN_BYTES", 0)
    tree, repo = tree_and_repo(tmp_path)
    asyncio.run(restore(repo, "latest", tmp_path / "out"))
    out = restored_at(tmp_path / "out", tree)
    for name in ("big.bin", "big-twice.bin"):
        assert resident_fraction(out / name) < 0.05, f"{name}: its content went through the page cache"
    assert snapshot_of(out) == snapshot_of(tree), "content, mtime (set after the last O_DIRECT write) and mode"


def test_restoring_over_a_previous_restore_with_o_direct(tmp_path: Path) -> None:
    """Files that exist already (longer than the snapshot's) are written in place and cut to size."""
    tree, repo = tree_and_repo(tmp_path)
    asyncio.run(restore(repo, "latest", tmp_path / "out"))
    out = restored_at(tmp_path / "out", tree)
    with (out / "big.bin").open("ab") as f:
        f.write(os.urandom(3 << 20))
    (out / "big-twice.bin").write_bytes(os.urandom(1 << 20))
    asyncio.run(restore(repo, "latest", tmp_path / "out"))
    assert snapshot_of(out) == snapshot_of(tree)


def test_a_filesystem_refusing_o_direct_gets_plain_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: opening with ``O_DIRECT`` fails with EINVAL (as on filesystems without it); the worker
    processes, forked from this one, inherit the patch."""
    real_open = os.open

    def refusing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args, **kwargs)

    tree, repo = tree_and_repo(tmp_path)
    monkeypatch.setattr(os, "open", refusing_open)
    asyncio.run(restore(repo, "latest", tmp_path / "out"))
    monkeypatch.undo()
    out = restored_at(tmp_path / "out", tree)
    assert resident_fraction(out / "big.bin") > 0.9, "written plainly, through the page cache"
    assert snapshot_of(out) == snapshot_of(tree)
