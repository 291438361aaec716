"""The native engine's on-disk index (``engine/native/index.py``) against its in-memory index and restic 0.14.

No mocks: real repositories in temporary directories, real SQLite cache files, ``restic`` as the oracle for
what the native engine writes with the disk index and as a second writer whose index files (and prune) the
cache must follow.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.engine.native import backup as backup_module
from kubestash.engine.native.backup import backup
from kubestash.engine.native.crypto import Key
from kubestash.engine.native.files import encode_unpacked, storage_id
from kubestash.engine.native.index import DiskIndex, IndexEntry, MemoryIndex
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.pack import IntegrityError, PackedBlob
from kubestash.engine.native.prune import forget, prune
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.restore import restore
from kubestash.engine.native.store import LocalStore, StoreError
from restic_helpers import PASSWORD, describe, make_tree, restic_output, restored_at

T = TypeVar("T")
CHEAP = KdfParams(1024, 8, 1)
SRC = Path(__file__).resolve().parents[2] / "src"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class CountingStore(LocalStore):
    """A real local store that counts the index files read through it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index_reads: list[str] = []

    async def get(self, path: str) -> bytes:
        if path.startswith("index/"):
            self.index_reads.append(path)
        return await super().get(path)


def open_repo(
    path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, store: LocalStore | None = None
) -> NativeRepository:
    monkeypatch.setenv("KUBESTASH_INDEX", mode)
    return run(NativeRepository.open(store or LocalStore(path), PASSWORD))


def snapshot_of(tree: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> str:
    monkeypatch.setenv("KUBESTASH_INDEX", "disk")

    async def go() -> str:
        opened = await NativeRepository.open(LocalStore(repo), PASSWORD)
        return (await backup(opened, [str(tree)], **options)).snapshot_id

    return run(go())


def everything(index: MemoryIndex | DiskIndex) -> dict[str, Any]:
    """What a reader of the index can learn from it, comparable between the two forms."""
    return {
        "entries": {e.blob.id: e for e in index.values()},
        "files": index.files,
        "packs": {pack: sorted(index.blobs_in(pack)) for pack in index.pack_ids()},
        "length": len(index),
    }


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("KUBESTASH_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def repo(tmp_path: Path, cache: Path) -> Path:
    path = tmp_path / "repo"
    run(init_repository(LocalStore(path), PASSWORD, kdf=CHEAP))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    tree = make_tree(tmp_path)
    (tree / "sub" / "random.bin").write_bytes(os.urandom(3 << 20))  # several chunks, several small packs
    return tree


def test_the_disk_index_answers_every_lookup_the_memory_index_does(
    repo: Path, tree: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_of(tree, repo, monkeypatch, pack_size=1 << 20)
    restic_output(repo, "backup", "-q", str(tree / "sub"))  # a second writer's index file too
    memory, disk = open_repo(repo, monkeypatch, "memory"), open_repo(repo, monkeypatch, "disk")
    assert isinstance(memory.index, MemoryIndex) and isinstance(disk.index, DiskIndex)
    assert disk.index.path.parent == cache / "index"
    expected = everything(memory.index)
    assert len(expected["packs"]) >= 4 and len(expected["files"]) == 2
    assert everything(disk.index) == expected
    some = next(iter(expected["entries"]))
    assert disk.index.get(some) == disk.index[some] == expected["entries"][some]
    assert some in disk.index
    for absent in ("0" * 64, "not hex", "ab"):
        assert absent not in disk.index and disk.index.get(absent) is None
    with pytest.raises(KeyError):
        disk.index["0" * 64]


def test_what_is_written_with_the_disk_index_restic_checks_and_restores(
    repo: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker processes look blobs up in the cache too (each opens its own connection after the fork)."""
    snapshot_of(tree, repo, monkeypatch, processes=True, pack_size=1 << 20)
    (tree / "a.txt").write_bytes(b"changed\n")
    (tree / "new.bin").write_bytes(os.urandom(1 << 20))
    second = snapshot_of(tree, repo, monkeypatch, processes=True, parent="auto")
    assert "no errors were found" in restic_output(repo, "check", "--read-data")
    restic_output(repo, "restore", second, "--target", str(tmp_path / "by-restic"))
    assert describe(restored_at(tmp_path / "by-restic", tree)) == describe(tree)
    opened = open_repo(repo, monkeypatch, "disk")
    run(restore(opened, second, tmp_path / "native"))
    assert describe(restored_at(tmp_path / "native", tree)) == describe(tree)


def test_reopening_reads_only_the_index_files_written_since(
    repo: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_of(tree, repo, monkeypatch)
    store = CountingStore(repo)
    open_repo(repo, monkeypatch, "disk", store)
    assert store.index_reads == []  # the backup put its own index file into the cache
    (tree / "restic.bin").write_bytes(os.urandom(100_000))
    restic_output(repo, "backup", "-q", str(tree))
    reopened = open_repo(repo, monkeypatch, "disk", store)
    assert reopened.index.files == {path.name for path in (repo / "index").iterdir()}
    assert len(store.index_reads) == 1  # restic's new index file, nothing else
    latest = json.loads(restic_output(repo, "snapshots", "--json", "latest"))[0]
    assert latest["tree"] in reopened.index
    assert everything(reopened.index) == everything(open_repo(repo, monkeypatch, "memory").index)


def test_the_cache_follows_a_prune_by_either_engine(
    repo: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = snapshot_of(tree, repo, monkeypatch)
    (tree / "sub" / "random.bin").unlink()
    second = snapshot_of(tree, repo, monkeypatch, parent="auto")

    async def native_prune() -> NativeRepository:
        opened = await NativeRepository.open(LocalStore(repo), PASSWORD)
        await forget(opened, [first])
        await prune(opened, max_unused=0)
        return opened

    before = set(open_repo(repo, monkeypatch, "disk").index)
    monkeypatch.setenv("KUBESTASH_INDEX", "disk")
    pruned = run(native_prune())
    listed = {path.name for path in (repo / "index").iterdir()}
    for opened in (pruned, open_repo(repo, monkeypatch, "disk")):  # as the prune left it, and reopened
        assert opened.index.files == listed
        assert everything(opened.index) == everything(open_repo(repo, monkeypatch, "memory").index)
    assert before - set(open_repo(repo, monkeypatch, "disk").index)  # the prune removed blobs, the cache too

    (tree / "later.txt").write_text("after the native prune\n")
    third = snapshot_of(tree, repo, monkeypatch, parent="auto")
    restic_output(repo, "forget", second)
    restic_output(repo, "prune", "--max-unused", "0")  # restic rewrites the index files the cache holds
    reopened = open_repo(repo, monkeypatch, "disk")
    assert reopened.index.files == {path.name for path in (repo / "index").iterdir()}
    assert everything(reopened.index) == everything(open_repo(repo, monkeypatch, "memory").index)
    run(restore(reopened, third, tmp_path / "restored"))
    assert describe(restored_at(tmp_path / "restored", tree)) == describe(tree)


def test_the_cache_names_no_blob(repo: Path, tree: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot_of(tree, repo, monkeypatch)
    opened = open_repo(repo, monkeypatch, "disk")
    opened.index.close()
    stored = b"".join(path.read_bytes() for path in (cache / "index").iterdir())
    ids = list(open_repo(repo, monkeypatch, "memory").index)
    assert ids and len(stored) > 4096
    for blob_id in ids:
        assert blob_id.encode() not in stored
        assert bytes.fromhex(blob_id) not in stored


def test_a_damaged_cache_is_rebuilt(repo: Path, tree: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot_of(tree, repo, monkeypatch)
    (path,) = (cache / "index").glob("*.sqlite")
    path.write_bytes(b"this is not an SQLite database" * 200)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    opened = open_repo(repo, monkeypatch, "disk")
    assert everything(opened.index) == everything(open_repo(repo, monkeypatch, "memory").index)


def test_a_cache_written_under_another_key_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    entry = IndexEntry("ab" * 32, PackedBlob("cd" * 32, "data", 0, 100, 70))
    first = DiskIndex(path, Key.random())
    first.add_file("file-1", [entry])
    assert first.get(entry.blob.id) == entry and first.files == {"file-1"}
    first.close()
    other = DiskIndex(path, Key.random())
    assert other.files == set() and entry.blob.id not in other


def test_an_unwritable_cache_directory_falls_back_to_a_temporary_file(
    repo: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_of(tree, repo, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KUBESTASH_CACHE_DIR", str(blocker))
    opened = open_repo(repo, monkeypatch, "disk")
    assert isinstance(opened.index, DiskIndex) and not opened.index.path.is_relative_to(blocker)
    assert everything(opened.index) == everything(open_repo(repo, monkeypatch, "memory").index)
    path = opened.index.path
    opened.index.close()
    assert not path.exists()


def test_auto_keeps_the_index_in_memory_below_the_limit_and_on_disk_above(
    repo: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot_of(tree, repo, monkeypatch)
    assert isinstance(open_repo(repo, monkeypatch, "auto").index, MemoryIndex)
    monkeypatch.setenv("KUBESTASH_INDEX_MEMORY_MIB", "0.0001")  # ~100 bytes of index files
    assert isinstance(open_repo(repo, monkeypatch, "auto").index, DiskIndex)
    monkeypatch.setenv("KUBESTASH_INDEX", "sometimes")
    with pytest.raises(ValueError, match="KUBESTASH_INDEX: 'sometimes'"):
        run(NativeRepository.open(LocalStore(repo), PASSWORD))


def test_a_cache_unused_for_thirty_days_is_removed(
    repo: Path, tree: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (cache / "index").mkdir(parents=True, exist_ok=True)
    stale, recent = cache / "index" / ("1" * 64 + ".sqlite"), cache / "index" / ("2" * 64 + ".sqlite")
    for path in (stale, recent):
        path.write_bytes(b"")
    month_ago = time.time() - 31 * 86400
    os.utime(stale, (month_ago, month_ago))
    snapshot_of(tree, repo, monkeypatch)
    assert not stale.exists() and recent.exists()

    kept_open = open_repo(repo, monkeypatch, "disk")  # a process that keeps the repository open (the operator)
    assert isinstance(kept_open.index, DiskIndex)
    os.utime(kept_open.index.path, (month_ago, month_ago))
    run(kept_open.refresh())  # what it does before each operation
    other = tmp_path / "other"
    run(init_repository(LocalStore(other), PASSWORD, kdf=CHEAP))
    open_repo(other, monkeypatch, "disk")  # opening another cache looks for stale ones
    assert kept_open.index.path.exists()


OPEN_AND_DESCRIBE = """
import asyncio, json, sys
from pathlib import Path
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore, StoreError
repo = asyncio.run(NativeRepository.open(LocalStore(Path(sys.argv[1])), sys.argv[2]))
print(json.dumps({"length": len(repo.index), "files": sorted(repo.index.files), "kind": type(repo.index).__name__}))
"""


def test_concurrent_opens_build_one_consistent_cache(repo: Path, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three processes open a repository whose cache does not exist yet, at once (each adds every index file
    unless another process already has)."""
    for i in range(3):  # several index files to race over
        (tree / f"round-{i}.bin").write_bytes(os.urandom(200_000))
        restic_output(repo, "backup", "-q", str(tree))
    env = {**os.environ, "KUBESTASH_INDEX": "disk", "PYTHONPATH": str(SRC)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_DESCRIBE, str(repo), PASSWORD], env=env, stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outputs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    memory = open_repo(repo, monkeypatch, "memory").index
    expected = {"length": len(memory), "files": sorted(memory.files), "kind": "DiskIndex"}
    assert outputs == [expected] * 3
    assert everything(open_repo(repo, monkeypatch, "disk").index) == everything(memory)


@pytest.mark.parametrize("processes", [True, False])
def test_a_backup_that_forgets_what_it_indexed_still_stores_each_blob_once(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: bool
) -> None:
    """With the index on disk a backup drops from memory the ids it has indexed (here after every pack; a
    worker process once it remembers 5). Directory ``d<i>`` holds content ``i`` and again content ``i-1``, met
    while its first copy may still sit in an unfinished pack: an id not indexed yet must not be dropped.
    (One worker process: several may each store a blob they meet at the same moment, which is harmless.)"""
    monkeypatch.setattr(backup_module, "ADDED_TRIM", 5)
    source = tmp_path / "source"
    contents = [os.urandom(60_000) for _ in range(40)]
    for i, data in enumerate(contents):
        (source / f"d{i:02d}").mkdir(parents=True)
        (source / f"d{i:02d}" / "x.bin").write_bytes(data)
        (source / f"d{i:02d}" / "y.bin").write_bytes(contents[i - 1] if i else b"")
    snapshot = snapshot_of(
        source, repo, monkeypatch, processes=processes, workers=1 if processes else 2, index_every=1, pack_size=200_000
    )
    opened = open_repo(repo, monkeypatch, "disk")
    assert isinstance(opened.index, DiskIndex)
    stored = [b for pack in opened.index.pack_ids() for b in opened.index.placements(pack) if b.type == "data"]
    assert len(stored) == len(contents)  # each content stored once, though the backup forgot it in between
    assert len(opened.index.files) > 5  # an index file every pack
    assert "no errors were found" in restic_output(repo, "check", "--read-data")
    restic_output(repo, "restore", snapshot, "--target", str(tmp_path / "restored"))
    assert describe(restored_at(tmp_path / "restored", source)) == describe(source)


def test_with_nowhere_to_write_a_cache_the_index_stays_in_memory(
    repo: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Read-only file systems (a locked-down pod): the backup and restore still work, memory unbounded."""
    snapshot_of(tree, repo, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KUBESTASH_CACHE_DIR", str(blocker))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "no-temporary-files-either"))
    opened = open_repo(repo, monkeypatch, "disk")
    assert isinstance(opened.index, MemoryIndex)
    assert "keeping the index in memory" in caplog.text
    run(restore(opened, "latest", tmp_path / "restored"))
    assert describe(restored_at(tmp_path / "restored", tree)) == describe(tree)


@pytest.mark.parametrize(
    "blob",
    [
        {"id": "ab" * 32, "type": "data", "offset": -1, "length": 100},  # an unsigned column could not hold it
        {"id": "ab" * 32, "type": "data", "length": 100},
        {"id": "ab" * 32, "type": "data", "offset": "x", "length": 100},
        {"id": "ab" * 32, "type": "data", "offset": 0, "length": 100, "uncompressed_length": -1},
    ],
    ids=["negative-offset", "missing-offset", "offset-not-a-number", "negative-uncompressed-length"],
)
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_an_authentic_index_file_that_is_not_an_index_is_named(
    repo: Path, monkeypatch: pytest.MonkeyPatch, mode: str, blob: dict[str, Any]
) -> None:
    """It decrypts (another writer with the key made it) but does not describe blobs: opening the repository
    fails with an integrity error naming the file, not with a traceback from deep in the index."""
    opened = open_repo(repo, monkeypatch, mode)
    data = encode_unpacked(opened.key, json.dumps({"packs": [{"id": "cd" * 32, "blobs": [blob]}]}).encode(), 2)
    name = storage_id(data)
    run(LocalStore(repo).put(f"index/{name}", data))
    with pytest.raises(IntegrityError, match=f"index/{name}: not a valid index file"):
        open_repo(repo, monkeypatch, mode)


class _StaleListing(LocalStore):
    """The first listing of ``index/`` also names a file that is gone by the time it is read (``always``: every
    listing does), as when a prune replaces the index files while the repository is being opened."""

    def __init__(self, root: Path, *, always: bool = False) -> None:
        super().__init__(root)
        self.always = always
        self.listings = 0

    async def list(self, kind: str) -> list[str]:
        names = await super().list(kind)
        if kind == "index":
            self.listings += 1
            if self.always or self.listings == 1:
                names = [*names, "ab" * 32]
        return names


def test_index_file_removed_while_opening_is_read_past(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"content " * 100)

    async def scenario() -> None:
        repo = await init_repository(LocalStore(tmp_path / "repo"), PASSWORD, kdf=CHEAP)
        await backup(repo, [str(tmp_path / "src")])
        stale = _StaleListing(tmp_path / "repo")
        opened = await NativeRepository.open(stale, PASSWORD)
        await opened.refresh()  # what a session does once it holds its lock
        assert stale.listings == 2 and len(opened.index) == len(repo.index) > 0
        broken = await NativeRepository.open(_StaleListing(tmp_path / "repo", always=True), PASSWORD)
        with pytest.raises(StoreError, match="ab" * 32):  # still listed, still unreadable: an error
            await broken.refresh()

    run(scenario())
