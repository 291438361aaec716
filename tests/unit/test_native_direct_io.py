"""Pack files written with ``O_DIRECT`` (:mod:`kubestash.engine.native.direct_io`): exact bytes whatever the
length, and plain writes where the filesystem refuses ``O_DIRECT`` (tmpfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubestash.engine.native.direct_io import ALIGN, DirectWriter


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
