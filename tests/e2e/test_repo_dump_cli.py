"""``kubestash repo dump``: a file of a snapshot to stdout, a directory as a tar archive, as ``restic dump``.

Compared byte for byte (files) and member for member (archives) with what restic 0.14 prints for the same
repository; a database dump backed up from a pipe by the native engine comes back through a pipe.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from restic_helpers import PASSWORD, cheapen_key, make_tree

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
ENV = {**os.environ, "RESTIC_PASSWORD": PASSWORD}


def run(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, env=ENV, input=stdin, capture_output=True, check=False, timeout=120)


def ours(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run([str(KUBESTASH), "repo", "-r", str(repo), *args], stdin)


def restics(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return run(["restic", "-r", str(repo), "--no-cache", "--quiet", *args], stdin)


def members(archive: bytes) -> list[tuple[str, int, int, str, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        found = []
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            found.append((m.name.rstrip("/"), m.type[0], m.mode, m.linkname, data))
        return sorted(found)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = make_tree(tmp_path_factory.mktemp("src"))
    (source / "big.bin").write_bytes(os.urandom(3 << 20))
    path = tmp_path_factory.mktemp("repo") / "repo"
    assert restics(path, "init").returncode == 0
    cheapen_key(path, PASSWORD)
    assert restics(path, "backup", str(source)).returncode == 0
    return path, source


def test_a_file_comes_out_as_restic_dumps_it(repo: tuple[Path, Path]) -> None:
    path, source = repo
    for name in ("big.bin", "a.txt", "sub/deeper/c.sh"):
        mine = ours(path, "dump", "latest", str(source / name))
        assert mine.returncode == 0, mine.stderr
        assert mine.stdout == restics(path, "dump", "latest", str(source / name)).stdout == (source / name).read_bytes()


@pytest.mark.parametrize("where", ["dir", "root"])
def test_a_directory_comes_out_as_restic_archives_it(repo: tuple[Path, Path], where: str) -> None:
    path, source = repo
    target = str(source / "sub") if where == "dir" else "/"
    mine = ours(path, "dump", "latest", target)
    assert mine.returncode == 0, mine.stderr
    assert members(mine.stdout) == members(restics(path, "dump", "latest", target).stdout)


def test_a_missing_path_is_one_line(repo: tuple[Path, Path]) -> None:
    path, source = repo
    missing = ours(path, "dump", "latest", str(source / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == f'Error: cannot dump file: path "{source / "nope"}" not found in snapshot'
    assert PASSWORD.encode() not in missing.stderr


def test_a_stdin_backup_comes_back_through_a_pipe(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    assert ours(path, "init").returncode == 0
    dump = b"-- SQL dump\n" + os.urandom(1 << 20) + b"\n-- end\n"
    stored = restics(path, "backup", "--stdin", "--stdin-filename", "db.sql", stdin=dump)
    assert stored.returncode == 0, stored.stderr
    mine = ours(path, "dump", "latest", "/db.sql")
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout == dump


def test_a_native_stdin_backup_is_what_restic_dumps(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    assert ours(path, "init").returncode == 0
    dump = b"-- SQL dump\n" + os.urandom(600_000) + b"\n-- end\n"
    stored = ours(path, "backup", "--stdin", "--stdin-filename", "db.sql", "--host", "db-0", stdin=dump)
    assert stored.returncode == 0, stored.stderr
    assert restics(path, "dump", "latest", "/db.sql").stdout == dump
    both = ours(path, "backup", "--stdin", "/etc")
    assert both.returncode == 2 and b"not both" in both.stderr
