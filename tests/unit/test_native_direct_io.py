"""Files written with ``O_DIRECT`` (:mod:`kubestash.engine.native.direct_io`): backup's pack files and
restore's ranges hold exactly their bytes whatever the lengths and offsets, and plain writes follow where the
filesystem refuses ``O_DIRECT``."""

from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubestash.engine.native.direct_io import ALIGN, DirectRanges, DirectWriter, preallocate


def write_file(writer: DirectWriter, path: Path, data: bytes, piece: int = 0) -> None:
    """``data`` into a new file: in pieces of ``piece`` bytes (a multiple of ALIGN) and the rest, or at once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        done = 0
        while piece and len(data) - done > piece:
            writer.write(fd, writer.stage(data[done : done + piece]))
            done += piece
        writer.write(fd, writer.stage(data[done:]))
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [1, ALIGN - 1, ALIGN, 3 * ALIGN + 17, (1 << 20) + 5])
def test_files_hold_exactly_their_bytes_and_buffers_are_reused(tmp_path: Path, size: int) -> None:
    writer = DirectWriter()
    big = os.urandom((2 << 20) + 3)
    write_file(writer, tmp_path / "big", big)  # leaves its bytes in the staging buffer past the next file's end
    data = os.urandom(size)
    write_file(writer, tmp_path / "file", data)
    assert (tmp_path / "file").read_bytes() == data, "no padding or stale buffer bytes past the end"
    assert (tmp_path / "big").read_bytes() == big
    assert len(writer._free) == 1, "one staging buffer served both files"


def test_a_file_written_in_pieces_then_a_tail(tmp_path: Path) -> None:
    data = os.urandom(5 * ALIGN + 999)
    write_file(DirectWriter(), tmp_path / "pack", data, piece=2 * ALIGN)
    assert (tmp_path / "pack").read_bytes() == data


@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_a_filesystem_refusing_o_direct_gets_plain_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_at: str
) -> None:
    """The refusal is simulated (a patched ``fcntl``, or ``os.write`` failing with EINVAL under O_DIRECT):
    this kernel's filesystems here, tmpfs included, all take O_DIRECT, so a real refusal cannot be had."""
    import errno
    import fcntl as fcntl_mod

    real_fcntl, real_write = fcntl_mod.fcntl, os.write

    def fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if refused_at == "open" and cmd == fcntl_mod.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    direct_writes = 0

    def write(fd: int, data: object) -> int:
        nonlocal direct_writes
        if real_fcntl(fd, fcntl_mod.F_GETFL) & os.O_DIRECT:
            direct_writes += 1
            if refused_at == "write" and direct_writes > 1:  # the file's first piece went through
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr("kubestash.engine.native.direct_io.fcntl.fcntl", fcntl)
    monkeypatch.setattr("kubestash.engine.native.direct_io.os.write", write)
    writer = DirectWriter()
    data = os.urandom(3 * ALIGN + 100)
    write_file(writer, tmp_path / "first", data, piece=ALIGN)
    assert (tmp_path / "first").read_bytes() == data
    assert writer.usable is False, "the refusal is remembered, not met again for every pack"
    data = os.urandom(50)
    write_file(writer, tmp_path / "second", data)
    assert (tmp_path / "second").read_bytes() == data


# ---------------------------------------------------------------- restore: DirectRanges


def open_pair(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    return fd, os.open(path, os.O_WRONLY | os.O_DIRECT)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 300_000),
    cuts=st.lists(st.integers(1, 299_999), max_size=12),
    buffer_pages=st.sampled_from([2, 3, 16]),
    buffers=st.integers(1, 3),
    shuffled=st.randoms(use_true_random=False),
    preallocated=st.booleans(),
)
def test_ranges_written_in_any_order_hold_exactly_their_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    cuts: list[int],
    buffer_pages: int,
    buffers: int,
    shuffled: random.Random,
    preallocated: bool,
) -> None:
    """Runs of consecutive pieces, each starting and ending anywhere in a page, pieces of other runs written in
    between (as two files' blobs alternate in a pack): the file is the bytes, whatever the buffer size."""
    path = tmp_path_factory.mktemp("ranges") / "file"
    data = shuffled.randbytes(size)
    bounds = sorted({0, size, *(c for c in cuts if c < size)})
    pieces = list(itertools.pairwise(bounds))
    order = sorted(pieces, key=lambda piece: (shuffled.random() < 0.3, piece))  # most in order, some not
    fd, dfd = open_pair(path)
    if preallocated:
        assert preallocate(fd, size)
    ranges = DirectRanges(buffer_size=buffer_pages * ALIGN, buffers=buffers)
    try:
        for start, end in order:
            ranges.write("file", fd, dfd, data[start:end], start)
        ranges.release(fd, dfd)
        ranges.flush()
    finally:
        ranges.close()
    assert path.read_bytes() == data
    with pytest.raises(OSError):
        os.fstat(dfd)  # released: closed once its writes were done


def test_two_files_interleaved_and_descriptors_closed_after_their_writes(tmp_path: Path) -> None:
    """The same blob written to two files in turn (deduplicated content) ends each one's run; ``release``
    leaves a descriptor open while a write through it is under way."""
    blob = os.urandom(3 * ALIGN + 123)
    files = {name: open_pair(tmp_path / name) for name in ("a", "b")}
    ranges = DirectRanges(buffer_size=2 * ALIGN, buffers=2)
    try:
        for i in range(4):
            for name, (fd, dfd) in files.items():
                ranges.write(name, fd, dfd, blob, i * len(blob))
        for fd, dfd in files.values():
            ranges.release(fd, dfd)
        ranges.flush()
    finally:
        ranges.close()
    for name in files:
        assert (tmp_path / name).read_bytes() == blob * 4


def test_an_o_direct_write_refused_is_written_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal is simulated (``os.pwrite`` failing with EINVAL on the ``O_DIRECT`` descriptor): the
    filesystems here all take such writes."""
    import errno
    import fcntl as fcntl_mod

    real_pwrite = os.pwrite

    def pwrite(fd: int, data: object, offset: int) -> int:
        if fcntl_mod.fcntl(fd, fcntl_mod.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr("kubestash.engine.native.direct_io.os.pwrite", pwrite)
    data = os.urandom(10 * ALIGN + 5)
    fd, dfd = open_pair(tmp_path / "file")
    ranges = DirectRanges(buffer_size=4 * ALIGN, buffers=2)
    try:
        ranges.write("file", fd, dfd, data, 7)
        ranges.release(fd, dfd)
        ranges.flush()
    finally:
        ranges.close()
    assert (tmp_path / "file").read_bytes() == bytes(7) + data
    assert ranges.usable is False


def test_a_failed_write_names_the_file(tmp_path: Path) -> None:
    """A write that fails (here: a descriptor open read-only) surfaces when the writes are waited for."""
    path = tmp_path / "file"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    ranges = DirectRanges(buffer_size=2 * ALIGN, buffers=1)
    try:
        with pytest.raises(OSError) as failed:
            ranges.write(str(path), fd, -1, os.urandom(5 * ALIGN), 0)
            ranges.flush()
        assert failed.value.filename == str(path)
    finally:
        ranges.close()
        os.close(fd)
