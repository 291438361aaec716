"""Native stream backups against restic 0.14's ``backup --stdin`` as the oracle (no mocks).

- restic dumps and restores our stream snapshot byte for byte: random and compressible data, a stream longer
  than the read window (fed in odd-sized pieces, and from a subprocess's stdout), a nested file name.
- The file is chunked as if read whole (same FastCDC windowing as files).
- For the same bytes, name and time (``--time``), our tree blob is restic's very blob when both chunkers cut
  the same (a stream under the 512 KiB minimum chunk); above that the tree has restic's structure and fields.
- Deduplication: the same stream twice stores no data the second time; restic's stdin backup and then ours
  of the same (single-chunk) bytes stores no data blob.
- An empty stream is refused as restic refuses it, unless ``allow_empty``.
- Memory stays bounded for a stream many times the window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import tracemalloc
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.engine.native.backup import READ_WINDOW, BackupError
from kubestash.engine.native.chunker import boundaries
from kubestash.engine.native.files import decode_unpacked
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.stdin import backup_stream, file_stream
from kubestash.engine.native.store import LocalStore
from kubestash.engine.native.tree import MODE_DIR, GoTime, encode_tree
from restic_helpers import PASSWORD, cheapen_key

T = TypeVar("T")
CHEAP = KdfParams(1024, 8, 1)
MiB = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def restic_run(repo: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo), "TZ": "UTC"}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return subprocess.run(
        ["restic", "--no-cache", *args], env=env, input=stdin, capture_output=True, check=False, timeout=300
    )


def restic(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = restic_run(repo, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def native_init(path: Path) -> NativeRepository:
    return run(init_repository(LocalStore(path), PASSWORD, version=2, kdf=CHEAP))


def reopen(path: Path) -> NativeRepository:
    return run(NativeRepository.open(LocalStore(path), PASSWORD))


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def compressible(size: int) -> bytes:
    line = b"INSERT INTO t VALUES (%d, 'some fairly repetitive text payload');\n"
    out = bytearray()
    i = 0
    while len(out) < size:
        out += line % i
        i += 1
    return bytes(out[:size])


def chunk_ids(data: bytes) -> tuple[str, ...]:
    return tuple(hashlib.sha256(data[o : o + n]).hexdigest() for o, n in boundaries(data))


def snapshot_doc(repo: NativeRepository, snapshot_id: str, path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(decode_unpacked(repo.key, (path / "snapshots" / snapshot_id).read_bytes()))
    return doc


@pytest.mark.parametrize(
    ("kind", "size"),
    [("random", 3 * MiB), ("compressible", 5 * MiB), ("random", 2 * READ_WINDOW + 12345)],
)
def test_stream_is_restored_by_restic(tmp_path: Path, kind: str, size: int) -> None:
    data = os.urandom(size) if kind == "random" else compressible(size)
    repo = native_init(tmp_path / "repo")
    seen: list[int] = []
    summary = run(
        backup_stream(repo, pieces(data, 100_003), "dump.sql", on_progress=lambda p: seen.append(p.bytes_done))
    )
    assert summary.files_new == summary.total_files_processed == 1 and summary.total_bytes_processed == size
    assert summary.data_blobs == len(boundaries(data)) and summary.parent is None
    assert seen[-1] == size
    (node,) = run(repo.load_tree(summary.tree))
    assert node.content == chunk_ids(data)  # windowed chunking cuts where chunking the whole does
    if kind == "compressible":
        assert summary.data_added < size // 5
    assert restic(tmp_path / "repo", "dump", "latest", "/dump.sql") == data
    restic(tmp_path / "repo", "restore", "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "dump.sql").read_bytes() == data
    restic(tmp_path / "repo", "check", "--read-data")
    (snap,) = json.loads(restic(tmp_path / "repo", "snapshots", "--json"))
    assert snap["paths"] == ["/dump.sql"] and snap["id"] == summary.snapshot_id and "parent" not in snap


def test_stream_from_subprocess_with_nested_name(tmp_path: Path) -> None:
    data = os.urandom(READ_WINDOW + 777) + compressible(3 * MiB)
    (tmp_path / "src.bin").write_bytes(data)
    repo = native_init(tmp_path / "repo")

    async def dump() -> str:
        proc = await asyncio.create_subprocess_exec("cat", str(tmp_path / "src.bin"), stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        summary = await backup_stream(repo, proc.stdout, "db/main/dump.sql", tags=("db",), pack_size=2 * MiB)
        assert await proc.wait() == 0
        return summary.snapshot_id

    snapshot_id = run(dump())
    assert restic(tmp_path / "repo", "dump", snapshot_id, "/db/main/dump.sql") == data
    (snap,) = json.loads(restic(tmp_path / "repo", "snapshots", "--json"))
    assert snap["paths"] == ["/db/main/dump.sql"] and snap["tags"] == ["db"]
    root = run(repo.load_tree(snap["tree"]))
    assert [(n.name, n.type, n.mode) for n in root] == [("db", "dir", MODE_DIR | 0o755)]
    assert root[0].subtree is not None
    (main,) = run(repo.load_tree(root[0].subtree))
    assert main.subtree is not None
    (leaf,) = run(repo.load_tree(main.subtree))
    assert (leaf.name, leaf.size, leaf.mode) == ("dump.sql", len(data), 0o644)


def test_file_stream_helper(tmp_path: Path) -> None:
    data = os.urandom(MiB + 3)
    (tmp_path / "f").write_bytes(data)
    repo = native_init(tmp_path / "repo")
    with (tmp_path / "f").open("rb") as f:
        run(backup_stream(repo, file_stream(f, 65536), "f.bin"))
    assert restic(tmp_path / "repo", "dump", "latest", "f.bin") == data


def test_empty_stream(tmp_path: Path) -> None:
    repo = native_init(tmp_path / "repo")
    # restic 0.14 refuses an empty stdin; so do we by default, writing no snapshot
    refused = restic_run(tmp_path / "repo", "backup", "--stdin", "--stdin-filename", "e.txt", stdin=b"")
    assert refused.returncode != 0 and b"no data read" in refused.stderr
    with pytest.raises(BackupError, match="no data read"):
        run(backup_stream(repo, pieces(b"", 1), "e.txt"))
    assert not list((tmp_path / "repo" / "snapshots").iterdir())
    summary = run(backup_stream(repo, pieces(b"", 1), "e.txt", allow_empty=True))
    assert summary.data_blobs == 0
    raw = run(repo.load_blob(summary.tree))
    assert b'"content":[]' in raw and b'"size"' not in raw
    assert restic(tmp_path / "repo", "dump", "latest", "/e.txt") == b""
    restic(tmp_path / "repo", "restore", "latest", "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "e.txt").read_bytes() == b""
    restic(tmp_path / "repo", "check")


def restic_time(text: str) -> GoTime:
    """restic's ``--time`` (local time; TZ=UTC for restic here) as a GoTime."""
    when = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return GoTime(int(when.timestamp()) * 10**9)


@pytest.mark.parametrize("size", [300 * 1024, 3 * MiB])
def test_same_tree_as_restic(tmp_path: Path, size: int) -> None:
    """restic writes the node from its timestamp and process ids: with ``--time`` its tree is reproducible."""
    path = tmp_path / "repo"
    restic(path, "init", "--repository-version", "2")
    cheapen_key(path, PASSWORD)
    data = os.urandom(size)
    stamp = "2024-05-06 07:08:09"
    restic(path, "backup", "--stdin", "--stdin-filename", "x.sql", "--time", stamp, "--host", "h", stdin=data)
    repo = reopen(path)
    (theirs,) = run(repo.snapshots())
    ours = run(backup_stream(repo, pieces(data, 65536), "x.sql", host="h", timestamp=restic_time(stamp)))
    assert ours.packs_recovered == 0
    mine = snapshot_doc(repo, ours.snapshot_id, path)
    restic_doc = snapshot_doc(repo, theirs.id, path)
    assert {k: v for k, v in mine.items() if k != "tree"} == {k: v for k, v in restic_doc.items() if k != "tree"}
    (their_node,) = run(repo.load_tree(theirs.tree))
    (our_node,) = run(repo.load_tree(ours.tree))
    assert (their_node.uid, their_node.gid) == (os.getuid(), os.getgid())
    if size <= 512 * 1024:  # one chunk for both chunkers: the very same tree blob, and no data added
        assert ours.tree == theirs.tree and ours.data_blobs == 0 and ours.tree_blobs == 0
    else:  # restic's Rabin chunks differ from FastCDC's: all but the content list is the same
        assert our_node.content != their_node.content
        assert encode_tree([replace(our_node, content=their_node.content)]) == run(repo.load_blob(theirs.tree))
    assert restic(path, "dump", ours.snapshot_id, "x.sql") == data
    restic(path, "check", "--read-data")


def test_same_stream_twice_stores_no_data(tmp_path: Path) -> None:
    data = os.urandom(6 * MiB) + compressible(2 * MiB)
    repo = native_init(tmp_path / "repo")
    first = run(backup_stream(repo, pieces(data, MiB), "a"))
    second = run(backup_stream(reopen(tmp_path / "repo"), pieces(data, 333_333), "a"))
    assert first.data_blobs > 3 and second.data_blobs == 0 and second.tree_blobs == 1
    assert second.data_added < 4096  # one small tree pack
    assert second.parent is None
    assert restic(tmp_path / "repo", "dump", second.snapshot_id, "a") == data


def test_memory_is_bounded(tmp_path: Path) -> None:
    total = 64 * READ_WINDOW  # 256 MiB

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(total // MiB):
            yield os.urandom(MiB)

    repo = native_init(tmp_path / "repo")
    tracemalloc.start()
    try:
        summary = run(backup_stream(repo, generate(), "big", pack_size=4 * MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.total_bytes_processed == total
    # two windows, a carried chunk, a maximum-size (8 MiB) chunk and its compressed and encrypted copies, a
    # pack being finished: ~60 MiB at worst, whatever the stream's length
    assert peak < 80 * MiB, peak


def test_failing_stream_writes_no_snapshot(tmp_path: Path) -> None:
    """A producer that fails midway (a dump command exiting non-zero) must not become a snapshot; what was
    uploaded is indexed all the same, so the next backup of the same bytes reuses it."""
    # Seeded: the chunks stored before the failure are those that end inside the first window (random bytes
    # whose first cut falls beyond it would store none, and the test would pass or fail by chance).
    data = random.Random(0).randbytes(6 * MiB)
    assert boundaries(data)[0][1] < READ_WINDOW

    async def failing() -> AsyncIterator[bytes]:
        async for piece in pieces(data, 2 * MiB):
            yield piece
        raise RuntimeError("pg_dump exited with 1")

    repo = native_init(tmp_path / "repo")
    with pytest.raises(RuntimeError, match="pg_dump"):
        run(backup_stream(repo, failing(), "dump.sql", pack_size=MiB))
    assert not list((tmp_path / "repo" / "snapshots").iterdir())
    assert restic_run(tmp_path / "repo", "check").returncode == 0
    again = run(backup_stream(reopen(tmp_path / "repo"), pieces(data, MiB), "dump.sql"))
    assert again.packs_recovered == 0 and again.data_blobs < len(boundaries(data))
    assert restic(tmp_path / "repo", "dump", "latest", "dump.sql") == data
