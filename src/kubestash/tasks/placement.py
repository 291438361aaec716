"""Put a backed-up directory's contents at a chosen place, all or nothing.

restic restores a snapshot below ``--target`` at its *original* absolute path, and nothing stops it from
leaving half a tree behind when it fails. A restore, though, must land the contents of one backed-up path
(``/source/data`` in the pod, or whatever directory it was here) at a possibly different place (the restore
target's volume, or ``<dest>/<snapshot>/<component>`` for ``kubestash download``), and must not leave a
partial tree where the user did not ask for one. So the engine restores into a staging directory *inside*
the destination (same filesystem: every later step is a rename), and only a complete restore is moved into
place, entry by entry: files, symlinks and new directories are renamed over what is there (restoring over
existing files replaces them; other files are left alone), existing directories are merged and then get
the snapshot's mode, owner and mtime back. On any failure the staging directory is removed. All-zero
blocks of large files become holes again before the move (restic 0.14 restores sparse files dense).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kubestash.engine.base import Engine, EngineError, ProgressCallback, RepositoryTarget, RestoreSummary

STAGING_PREFIX = ".kubestash-restore-"


async def restore_into(
    engine: Engine,
    repo: RepositoryTarget,
    snapshot_id: str,
    destination: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_progress: ProgressCallback | None = None,
    timeout: float | None = None,
) -> RestoreSummary:
    """Restore the one path of restic snapshot ``snapshot_id`` so that its contents are ``destination``'s.

    Absolute include/exclude patterns are relative to the backed-up path (``/app/*.log``); others match
    names anywhere, as restic's do.
    """
    destination.mkdir(parents=True, exist_ok=True)
    before = os.lstat(destination)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=destination))
    root = before  # on failure the destination gets its own times back
    try:
        summary = await engine.restore(
            repo,
            snapshot_id,
            staging,
            include=include,
            exclude=exclude,
            relative=True,
            on_progress=on_progress,
            timeout=timeout,
        )
        if len(summary.paths) != 1:
            raise EngineError("Failed", f"snapshot {snapshot_id} holds {len(summary.paths)} paths; expected one")
        source = staging / summary.paths[0].lstrip("/")
        if source.is_dir() and not source.is_symlink():
            root = os.lstat(source)
            await asyncio.to_thread(punch_holes, source)
            merge_tree(source, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        copy_metadata(root, destination)
    return summary


SPARSE_MIN = 1 << 20
"""Files smaller than this are left dense (a hole saves little, reading costs)."""
HOLE_BLOCK = 1 << 20
_ZERO = bytes(HOLE_BLOCK)
_PUNCH_HOLE = 0x02 | 0x01
"""fallocate(2) FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (Python's os module has no hole punching)."""


def punch_holes(root: Path) -> int:
    """Turn every all-zero 1 MiB block of the large files under ``root`` back into a hole; bytes freed.

    restic 0.14 restores sparse files (VM images, database files) dense: without this a restore could need
    far more disk than the data it holds. Contents and mtimes stay as restored.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    freed = 0
    buffer = bytearray(HOLE_BLOCK)
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size < SPARSE_MIN:
                continue
            punched = 0
            try:
                f = open(path, "r+b", buffering=0)  # noqa: SIM115 -- an unwritable file is skipped, not an error
            except OSError:
                continue
            with f:
                offset = 0
                while (n := f.readinto(buffer)) == HOLE_BLOCK:
                    if buffer == _ZERO:
                        if libc.fallocate(f.fileno(), _PUNCH_HOLE, offset, n) != 0:
                            break  # the filesystem has no holes: leave the file as it is
                        punched += n
                    offset += n
            if punched:
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                freed += punched
    return freed


def scope_patterns(patterns: Sequence[str], base: str) -> list[str] | None:
    """Patterns written against paths in the pod (``/source/data/app``) for a backup of ``base``.

    Absolute ones under ``base`` become relative to it (``/app``), as :func:`restore_into` takes them; absolute
    ones elsewhere concern other backed-up paths and are dropped; others match names anywhere and pass as
    they are. None when patterns were given but none concerns ``base`` (an include then selects nothing).
    """
    prefix = posixpath.normpath(base).rstrip("/")
    scoped = []
    for pattern in patterns:
        if not pattern.startswith("/"):
            scoped.append(pattern)
        elif pattern.rstrip("/") == prefix:
            scoped.append("/")
        elif pattern.startswith(prefix + "/"):
            scoped.append(pattern[len(prefix) :])
    return scoped if scoped or not patterns else None


def merge_tree(source: Path, destination: Path) -> None:
    """Move ``source``'s entries into the existing directory ``destination``; ``source`` ends up empty."""
    for entry in os.scandir(source):
        src = Path(entry.path)
        dst = destination / entry.name
        try:
            existing = os.lstat(dst)
        except FileNotFoundError:
            os.rename(src, dst)
            continue
        if entry.is_dir(follow_symlinks=False) and stat.S_ISDIR(existing.st_mode):
            meta = os.lstat(src)
            merge_tree(src, dst)
            copy_metadata(meta, dst)
            continue
        if stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(dst)  # a directory where the snapshot has a file or symlink
        elif entry.is_dir(follow_symlinks=False):
            dst.unlink()  # a file or symlink where the snapshot has a directory
        os.replace(src, dst)


def copy_metadata(meta: os.stat_result, path: Path) -> None:
    """Give a merged directory the snapshot's mode, owner (when we may) and times."""
    os.chmod(path, stat.S_IMODE(meta.st_mode))
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.lchown(path, meta.st_uid, meta.st_gid)
    os.utime(path, ns=(meta.st_atime_ns, meta.st_mtime_ns))
