"""Pack files written with ``O_DIRECT`` (:mod:`kubestash.engine.native.direct_io`): exact bytes whatever the
length, and plain writes where the filesystem refuses ``O_DIRECT`` (tmpfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kubestash.engine.native.direct_io import ALIGN, DirectWriter


def write_file(writer: DirectWriter, path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer.write(fd, writer.stage(data))
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

    def write(fd: int, data: object) -> int:
        if refused_at == "write" and real_fcntl(fd, fcntl_mod.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr("kubestash.engine.native.direct_io.fcntl.fcntl", fcntl)
    monkeypatch.setattr("kubestash.engine.native.direct_io.os.write", write)
    writer = DirectWriter()
    data = os.urandom(ALIGN + 100)
    write_file(writer, tmp_path / "first", data)
    assert (tmp_path / "first").read_bytes() == data
    assert writer.usable is False, "the refusal is remembered, not met again for every pack"
    data = os.urandom(50)
    write_file(writer, tmp_path / "second", data)
    assert (tmp_path / "second").read_bytes() == data
