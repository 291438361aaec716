"""Native stream backup: what ``restic backup --stdin --stdin-filename NAME`` stores, from an async byte stream.

A database dump piped from a subprocess is backed up without a temporary file. What restic 0.14 writes for
``--stdin`` (its ``fs.Reader``, checked against the binary by ``tests/integration/test_native_stdin.py``):

- The snapshot's ``paths`` is ``["/" + NAME]``; it has no ``parent`` (restic looks for none with ``--stdin``)
  and its ``time`` is the backup's timestamp.
- The root tree holds one file node ``NAME``: mode ``0644`` (420), ``mtime`` = ``atime`` = ``ctime`` = the
  snapshot's time, ``uid``/``gid`` of the backing-up process (``os.Getuid``), no user, group, inode, device
  or links, ``size`` the bytes read, ``content`` the data blobs. For ``a/b/NAME``, directory nodes ``a`` and
  ``b`` (mode ``0755``) are above it; restic stamps them with the clock as it walks them, we with the
  snapshot's time. So the tree blob is the same as restic's for the same bytes, name and
  ``--time`` whenever both cut the same chunks (always for a stream under the chunkers' 512 KiB minimum;
  above it restic's Rabin chunker and our FastCDC cut elsewhere, see :mod:`.chunker`).
- An empty stream is an error ("no data read"): restic refuses it so that a failed producer
  (``pg_dump ... | restic backup --stdin``) does not look like a successful backup. ``allow_empty=True``
  stores an empty file instead (``"content":[]``, no ``size``), which restic restores as such.

The stream is chunked with the same FastCDC windowing as files (:meth:`.backup._Shared.chunk_window`), a
window of :data:`.backup.READ_WINDOW` bytes at a time, and the next window is read while the previous one is
chunked, compressed and encrypted in a worker thread. Memory stays at about two windows plus a maximum-size
chunk plus a pack, whatever the stream's length. Data deduplicates through the index (a second backup of
the same bytes stores no data blob); there is no parent-based skipping, as in restic.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import IO, Protocol

from kubestash.engine.native.backup import (
    COMPRESSION_LEVEL,
    INDEX_EVERY,
    INDEX_INTERVAL,
    PACK_SIZE,
    READ_WINDOW,
    BackupError,
    BackupProgress,
    BackupSummary,
    Recovery,
    _Backup,
    recover_packs,
    write_snapshot,
)
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.tree import MODE_DIR, GoTime, Node

FILE_MODE = 0o644
DIR_MODE = MODE_DIR | 0o755
DEFAULT_FILENAME = "stdin"


class ByteReader(Protocol):
    """What :class:`asyncio.StreamReader` offers (e.g. ``process.stdout``): ``read(n)``, ``b""`` at the end."""

    async def read(self, n: int = -1) -> bytes: ...


Stream = ByteReader | AsyncIterable[bytes]


class _Source:
    """Exact-size reads from a :data:`Stream` (a reader returns short reads; an iterator, any piece sizes)."""

    def __init__(self, stream: Stream) -> None:
        self._reader: ByteReader | None = None
        self._pieces: AsyncIterator[bytes] | None = None
        if callable(getattr(stream, "read", None)):
            self._reader = stream  # type: ignore[assignment]
        else:
            self._pieces = aiter(stream)  # type: ignore[arg-type]
        self._left = b""

    async def _next(self, n: int) -> bytes:
        if self._reader is not None:
            return await self._reader.read(n)
        assert self._pieces is not None
        try:
            return bytes(await anext(self._pieces))
        except StopAsyncIteration:
            return b""

    async def take(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the stream."""
        parts = [self._left] if self._left else []
        have = len(self._left)
        self._left = b""
        while have < n:
            piece = await self._next(n - have)
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        if len(data) > n:
            data, self._left = data[:n], data[n:]
        return data


async def file_stream(f: IO[bytes], size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A blocking binary file (``sys.stdin.buffer``, a pipe) as a :data:`Stream`; reads run in a thread."""
    while True:
        piece = await asyncio.to_thread(f.read, size)
        if not piece:
            return
        yield piece


def stdin_paths(filename: str) -> list[str]:
    """The path components of ``filename`` as restic's ``--stdin-filename`` takes it (``a/b`` is nested)."""
    parts = [p for p in filename.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise BackupError(f"invalid stdin filename {filename!r}")
    return parts


async def backup_stream(
    repo: NativeRepository,
    stream: Stream,
    filename: str = DEFAULT_FILENAME,
    *,
    host: str | None = "host-0",
    tags: Sequence[str] = (),
    timestamp: GoTime | None = None,
    on_progress: Callable[[BackupProgress], None] | None = None,
    pack_size: int = PACK_SIZE,
    compression_level: int = COMPRESSION_LEVEL,
    allow_empty: bool = False,
    index_every: int = INDEX_EVERY,
    index_interval: float = INDEX_INTERVAL,
    recover: bool = True,
) -> BackupSummary:
    """Back up the bytes of ``stream`` as the file ``filename``, like ``restic backup --stdin``; what was done.

    ``stream``: an :class:`asyncio.StreamReader` (``process.stdout`` of a subprocess started with
    ``stdout=PIPE``), anything with an async ``read(n)``, or an async iterator of bytes (:func:`file_stream`
    for a blocking file). ``timestamp`` is restic's ``--time`` (default now): the snapshot's time and the
    file's times. ``host`` None means this machine's name. An empty stream raises :class:`BackupError`
    unless ``allow_empty``. The remaining keywords are :func:`.backup.backup`'s.
    """
    started = time.perf_counter()
    parts = stdin_paths(filename)
    hostname = socket.gethostname() if host is None else host
    when = timestamp if timestamp is not None else GoTime.local(time.time_ns())
    recovery = await recover_packs(repo) if recover else Recovery()
    job = _Backup(
        repo,
        excludes=(),
        pack_size=pack_size,
        workers=1,  # a stream is chunked in order; one writer also fills whole packs
        on_progress=on_progress,
        on_read=None,
        compression_level=compression_level,
        index_every=index_every,
        index_interval=index_interval,
    )
    source = _Source(stream)
    content: list[str] = []
    size = 0
    finished = False
    try:
        data = await source.take(READ_WINDOW)
        carry = bytearray()
        while True:
            eof = len(data) < READ_WINDOW
            size += len(data)
            carry += data
            del data
            chunked = job.pool.submit(job.shared.chunk_window, carry, eof, content)
            if not eof:
                data = await source.take(READ_WINDOW)  # read the next window while this one is chunked
            carry = await asyncio.wrap_future(chunked)
            job.progress.bytes_done = size
            if on_progress is not None:
                on_progress(job.progress)
            if eof:
                break
        if size == 0 and not allow_empty:
            raise BackupError(f"{filename}: no data read from the stream (allow_empty=True stores an empty file)")
        uid, gid = os.getuid(), os.getgid()
        node = Node(
            name=parts[-1],
            type="file",
            mode=FILE_MODE,
            mtime=when,
            atime=when,
            ctime=when,
            uid=uid,
            gid=gid,
            size=size,
            content=tuple(content),
        )
        tree = await job.store_tree([node])
        for name in reversed(parts[:-1]):
            directory = Node(name, "dir", DIR_MODE, when, when, when, uid, gid, subtree=tree)
            tree = await job.store_tree([directory])
        await job.flush()
        finished = True
    finally:
        if not finished:
            await job.abort()
    await job.finish_index()
    snapshot_id = await write_snapshot(
        repo, when=when, tree=tree, paths=["/" + "/".join(parts)], hostname=hostname, tags=tags
    )
    summary = job.summary
    summary.snapshot_id, summary.tree = snapshot_id, tree
    summary.files_new = summary.files_read = summary.total_files_processed = 1
    summary.dirs_new = len(parts) - 1
    summary.total_bytes_processed = size
    summary.packs_recovered = recovery.packs
    summary.index_files += recovery.index_files
    summary.total_duration = time.perf_counter() - started
    job.progress.files_done = 1
    if on_progress is not None:
        on_progress(job.progress)
    return summary
