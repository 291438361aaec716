"""Write pack files (backup) and restored file content with ``O_DIRECT``: the device reads the bytes from our
memory, no page-cache copy. Restores: :class:`DirectRanges` (the why is in its docstring and in
``docs/decisions.md``); backups: :class:`DirectWriter`, as follows.

Why: a backup writes most of its input again as packs, and each buffered ``write`` copies every byte into
freshly allocated page-cache pages. On this project's VMs that copy (``copy_folio_from_iter_atomic`` in a
profile) cost 1.2-2.5 CPU-seconds per 800 MB -- about a sixth of a first backup's CPU -- while ``O_DIRECT``
writes of the same bytes cost 0.1 s; the pack is fsynced right after anyway, so the page cache bought
nothing. ``O_DIRECT`` wants an aligned buffer, offset and length: a worker's pack writer hands over its pack
in pieces of a multiple of a page as it grows (``PackWriter(spill=...)``), each copied into a page-aligned
staging buffer (a user-space copy, a tenth of the kernel's; it frees the writer's buffer at once, so the
write runs on a thread while the backup goes on); the tail is written padded and the file cut back to its
length. Where the filesystem refuses ``O_DIRECT`` (some network or FUSE filesystems) the same buffers are
written plainly. No library offers this for Python.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import errno
import fcntl
import functools
import mmap
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

ALIGN = 4096
"""Alignment for buffer, offsets and length: a page, which covers every logical block size up to 4 KiB."""
RANGE_BUFFER = 1 << 20
"""A restore worker's staging buffer for :class:`DirectRanges` (its largest ``O_DIRECT`` write)."""
RANGE_BUFFERS = 4
"""Staging buffers per restore worker: some being filled while the writes of the others are under way. A
write's time varies with what else the device does (both workers write, and read packs): with two 2 MiB
buffers a worker waited 0.27-0.38 s per 1 GiB bench restore for one to come free, with four of 1 MiB (the
same memory) 0.11-0.19 s; six of 1 MiB waited less again but cost 4 MiB more over the restore's process tree."""


class DirectWriter:
    """Page-aligned staging buffers, reused: :meth:`stage` copies a file's bytes into one (on the caller's
    thread, so the caller's own buffer is free at once), :meth:`write` writes it out (on a writer thread) and
    frees it. The caller keeps at most as many staged files outstanding as it wants buffers alive.
    :attr:`usable` turns False at the first refusal of ``O_DIRECT``; writes go on with plain ``write``."""

    def __init__(self) -> None:
        self.usable = hasattr(os, "O_DIRECT")
        self._free: list[mmap.mmap] = []

    def stage(self, data: bytes | bytearray | memoryview) -> Staged:
        size = len(data)
        padded = _padded(size)
        buffer = self._free.pop() if self._free else None
        if buffer is None or len(buffer) < padded:
            if buffer is not None:
                with contextlib.suppress(BufferError):
                    buffer.close()
            buffer = mmap.mmap(-1, padded)  # anonymous: page-aligned
        buffer[:size] = data
        return Staged(buffer, size)

    def write(self, fd: int, staged: Staged) -> None:
        """Write ``staged`` at the end of the file ``fd`` (whose length is a multiple of :data:`ALIGN` unless
        ``O_DIRECT`` was given up) and free its buffer; OSError as ``os.write`` raises it (``O_DIRECT``
        refusals are not errors: the plain write follows)."""
        try:
            if not (self.usable and self._write_direct(fd, staged)):
                with memoryview(staged.buffer) as view:
                    done = 0
                    while done < staged.size:
                        done += os.write(fd, view[done : staged.size])
        finally:
            self._free.append(staged.buffer)

    def _write_direct(self, fd: int, staged: Staged) -> bool:
        padded = _padded(staged.size)
        offset = os.lseek(fd, 0, os.SEEK_END)
        if offset % ALIGN:
            return False
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:
            self.usable = False
            return False
        try:
            with memoryview(staged.buffer) as view:
                done = 0
                while done < padded:
                    done += os.write(fd, view[done:padded])
        except OSError:
            self.usable = False  # e.g. EINVAL: this filesystem takes O_DIRECT opens but not these writes
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            return False
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        if padded != staged.size:
            os.ftruncate(fd, offset + staged.size)  # the padding (whatever the buffer held there) cut off
            os.lseek(fd, offset + staged.size, os.SEEK_SET)
        return True


def _padded(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


@dataclass(frozen=True)
class Staged:
    buffer: mmap.mmap
    size: int


class DirectRanges:
    """A restore worker's writes of file content at any offsets, with the page-cache copy left out where it can
    be: consecutive writes to one file (a *run*) are gathered in a page-aligned staging buffer; its whole pages
    go out with ``O_DIRECT`` on a writer thread while the caller decodes the next blobs into another buffer,
    and the partial pages at either end of the run are written plainly at once (another run's bytes may share
    them). No page is written both ways: an ``O_DIRECT`` write covers only pages wholly inside one run, and
    every byte of a restored file belongs to one run.

    A file is written through two descriptors: ``fd`` (plain) and ``dfd`` (``O_DIRECT``, or -1: then plain
    writes only). :meth:`release` closes them once the writes that use them are done; :meth:`flush` waits for
    every write. Make it in the process that uses it: its writer thread does not survive a fork."""

    def __init__(self, buffer_size: int = RANGE_BUFFER, buffers: int = RANGE_BUFFERS) -> None:
        self.usable = hasattr(os, "O_DIRECT")
        self.buffer_size = buffer_size
        self.buffers = buffers
        self._free: list[mmap.mmap] = []
        self._made = 0
        self._pending: collections.deque[_Pending] = collections.deque()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="direct-write")
        self._buffer: mmap.mmap | None = None
        self._path = ""
        self._fd = self._dfd = -1
        self._start = self._end = 0
        """The run being gathered: file bytes [start, end) at buffer positions from ``start % ALIGN`` on."""

    def write(self, path: str, fd: int, dfd: int, data: bytes | memoryview, offset: int) -> None:
        if fd != self._fd or offset != self._end or self._buffer is None:
            self.end_run()
            self._buffer = self._take()
            self._path, self._fd, self._dfd, self._start, self._end = path, fd, dfd, offset, offset
        with memoryview(data) as view:
            at = 0
            while at < len(view):
                pos = self._end - self._start + self._start % ALIGN
                n = min(len(view) - at, self.buffer_size - pos)
                self._buffer[pos : pos + n] = view[at : at + n]
                self._end += n
                at += n
                if pos + n == self.buffer_size:
                    self._send_pages()

    def end_run(self) -> None:
        """Hand over what is gathered (the writes may still be under way)."""
        buffer = self._buffer
        if buffer is None:
            return
        if self._end - self._end % ALIGN > -(-self._start // ALIGN) * ALIGN:
            self._send_pages()
            buffer = self._buffer
        assert buffer is not None
        base = self._start - self._start % ALIGN
        with memoryview(buffer) as view:
            pwrite_all(self._path, self._fd, view[self._start - base : self._end - base], self._start)
        self._free.append(buffer)
        self._buffer = None
        self._fd = self._dfd = -1

    def release(self, *fds: int) -> None:
        """Close ``fds`` once the writes handed over so far are done (now, if they are)."""
        self.end_run()
        if self._pending:
            self._pending[-1].close_after.extend(fds)  # one writer thread: writes complete in order
        else:
            _close(fds)

    def flush(self) -> None:
        """Wait for every write handed over (raising the first that failed)."""
        self.end_run()
        while self._pending:
            self._wait_oldest()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)

    def _send_pages(self) -> None:
        """Write the partial page the run starts in (plainly, now), hand its whole pages to the writer, and go
        on in a fresh buffer holding the bytes past the last whole page."""
        buffer = self._buffer
        assert buffer is not None
        base = self._start - self._start % ALIGN
        first = -(-self._start // ALIGN) * ALIGN
        last = self._end - self._end % ALIGN
        with memoryview(buffer) as view:
            if first > self._start:
                pwrite_all(self._path, self._fd, view[self._start - base : first - base], self._start)
            fresh = self._take()
            fresh[: self._end - last] = view[last - base : self._end - base]
        job = functools.partial(
            self._write_pages, self._path, self._fd, self._dfd, buffer, first - base, last - first, first
        )
        self._pending.append(_Pending(self._writer.submit(job), buffer))
        self._buffer, self._start = fresh, last

    def _write_pages(self, path: str, fd: int, dfd: int, buffer: mmap.mmap, at: int, size: int, offset: int) -> None:
        with memoryview(buffer) as view:
            pages = view[at : at + size]
            if dfd >= 0 and self.usable:
                try:
                    pwrite_all(path, dfd, pages, offset)
                    return
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self.usable = False  # the filesystem took the O_DIRECT open but not the write
            pwrite_all(path, fd, pages, offset)

    def _take(self) -> mmap.mmap:
        """A free staging buffer: a new one while fewer than :attr:`buffers` exist, else the oldest write's."""
        if self._free:
            return self._free.pop()
        if self._made < self.buffers or not self._pending:
            self._made += 1
            # Private: an anonymous mmap is shared by default, with the processes forked after it.
            return mmap.mmap(-1, self.buffer_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._wait_oldest()
        return self._free.pop()

    def _wait_oldest(self) -> None:
        pending = self._pending.popleft()
        try:
            pending.future.result()
        except BaseException:
            self._abandon()
            raise
        finally:
            self._free.append(pending.buffer)
            _close(pending.close_after)

    def _abandon(self) -> None:
        """After a failed write: drop the run being gathered, wait out the other writes (their errors are the
        same story), close their descriptors."""
        self._buffer = None
        self._fd = self._dfd = -1
        while self._pending:
            pending = self._pending.popleft()
            concurrent.futures.wait([pending.future])
            self._free.append(pending.buffer)
            _close(pending.close_after)


@dataclass
class _Pending:
    future: concurrent.futures.Future[None]
    buffer: mmap.mmap
    close_after: list[int] = field(default_factory=list)


def pwrite_all(path: str, fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset`` of ``path`` (open as ``fd``); an error names ``path``."""
    try:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], offset + done)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL("libc.so.6", use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


def preallocate(fd: int, size: int) -> bool:
    """Allocate ``size`` bytes to the new file ``fd`` (its length becomes ``size``): ``O_DIRECT`` writes into it
    are then overwrites within the file, which ext4 lets run side by side (one that extends a file, or fills a
    hole, holds the file's lock until the device is done: the other worker's writes to the same file waited).
    ``fallocate(2)`` itself, not glibc's ``posix_fallocate``, which writes zeros where the filesystem has no
    ``fallocate``. Whether it was done."""
    function = _fallocate()
    return function is not None and function(fd, 0, 0, size) == 0
