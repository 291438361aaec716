"""Native init and backup against restic 0.14 as the oracle (no mocks).

- A natively initialised repository is accepted by ``restic snapshots`` and ``restic check``.
- A native backup (v2 and v1) passes ``restic check --read-data`` and ``restic restore`` reproduces the
  source (modes, mtimes, symlink, empty directory); a second backup with the first as parent reads no file,
  stores no data blob and has the same root tree.
- After ``restic backup`` of a directory, a native backup of the unchanged directory with restic's snapshot
  as parent produces restic's very root tree id and stores no data.
- Excludes are honoured.
- The same through ``BackendStore`` on moto S3.

Every write of a test goes below ``<base>/work`` while the source lives in ``<base>/src``, so the source's
own ancestors inside ``<base>`` do not change between backups. Their ancestors above (``/tmp``...) are
shared with every other process on the machine; their metadata is part of a snapshot (as with restic), so
root tree ids are compared only when those directories did not change in between; the source's own
subtree is always compared.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.api.storage import Backend
from kubestash.backends.factory import open_backend
from kubestash.engine.native.backup import INLINE_READ_BYTES, backup, excluded, tree_nodes
from kubestash.engine.native.chunker import boundaries
from kubestash.engine.native.files import decode_unpacked
from kubestash.engine.native.init import DEFAULT_KDF, KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import BackendStore, LocalStore
from restic_helpers import PASSWORD, cheapen_key, describe, make_tree, restored_at
from storage_servers import moto_server

T = TypeVar("T")
CHEAP = KdfParams(1024, 8, 1)
BIG = 30 * 1024 * 1024
SMALL_FILES = 2000


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def restic(repo: Path, *args: str) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    done = subprocess.run(
        ["restic", "--no-cache", *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("native-backup")
    (root / "work").mkdir()
    tree = make_tree(root / "src")
    (tree / "big.bin").write_bytes(os.urandom(BIG))
    for i in range(SMALL_FILES):
        folder = tree / "many" / f"d{i // 200:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:04d}.txt").write_bytes(f"small file {i}\n".encode() * (i % 7 + 1))
    return root


@pytest.fixture
def source(base: Path) -> Path:
    return base / "src" / "tree"


@pytest.fixture
def work(base: Path, request: pytest.FixtureRequest) -> Path:
    path = base / "work" / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    return path


@contextmanager
def local_zone(zone: str) -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def ancestors_stat(source: Path) -> list[tuple[int, int, int]]:
    return [(st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for st in (p.lstat() for p in source.parents)]


def source_subtree(repo: NativeRepository, root: str, source: Path) -> str:
    """The tree id of ``source`` itself, down the snapshot's chain of parent directories."""
    tree = root
    for name in source.parts[1:]:
        (node,) = (n for n in run(tree_nodes(repo, tree)) if n.name == name)
        assert node.subtree is not None
        tree = node.subtree
    return tree


def native_init(path: Path, version: int = 2) -> NativeRepository:
    return run(init_repository(LocalStore(path), PASSWORD, version=version, kdf=CHEAP))


def test_native_init_is_accepted_by_restic(work: Path) -> None:
    repo = native_init(work / "repo")
    assert json.loads(restic(work / "repo", "snapshots", "--json")) == []
    restic(work / "repo", "check")
    assert json.loads(restic(work / "repo", "cat", "config"))["id"] == repo.config.id
    reopened = run(NativeRepository.open(LocalStore(work / "repo"), PASSWORD))
    assert (reopened.config, reopened.key) == (repo.config, repo.key)
    (key_file,) = (work / "repo" / "keys").iterdir()
    doc = json.loads(key_file.read_bytes())
    assert list(doc) == ["created", "username", "hostname", "kdf", "N", "r", "p", "salt", "data"]
    assert (doc["N"], doc["r"], doc["p"]) == (CHEAP.n, CHEAP.r, CHEAP.p)
    assert (DEFAULT_KDF.n, DEFAULT_KDF.r) == (32768, 8)
    assert len(repo.config.chunker_polynomial) == 14  # degree 53


@pytest.mark.parametrize("version", [2, 1])
def test_native_backup_restores_with_restic(work: Path, source: Path, version: int) -> None:
    repo = native_init(work / "repo", version)
    reads: list[str] = []
    before = ancestors_stat(source)
    first = run(backup(repo, [str(source)], on_read=reads.append, pack_size=4 * 1024 * 1024))
    assert first.parent is None and first.files_new == first.total_files_processed == len(reads)
    assert first.files_new == SMALL_FILES + 6  # make_tree's five files and big.bin
    assert first.data_blobs > BIG // (8 * 1024 * 1024)
    # big.bin was read in windows; its chunks are those of chunking the whole file at once
    (big,) = (n for n in run(tree_nodes(repo, source_subtree(repo, first.tree, source))) if n.name == "big.bin")
    whole = (source / "big.bin").read_bytes()
    assert big.content == tuple(hashlib.sha256(whole[o : o + n]).hexdigest() for o, n in boundaries(whole))

    # Right away (``restic check`` creates a cache directory in /tmp, an ancestor whose metadata is stored):
    reads.clear()
    second = run(backup(repo, [str(source)], parent="auto", on_read=reads.append))
    assert second.parent == first.snapshot_id
    assert reads == [] and second.files_unmodified == first.files_new
    assert second.data_blobs == 0 and second.tree_blobs <= len(source.parts) - 3  # only above <base>
    assert source_subtree(repo, second.tree, source) == source_subtree(repo, first.tree, source)
    if ancestors_stat(source) == before:
        assert (second.tree, second.tree_blobs) == (first.tree, 0)

    if version == 2:  # in another zone, unchanged files keep their content but get restic's new times
        with local_zone("Asia/Kolkata"):
            shifted = run(backup(repo, [str(source)], parent=first.snapshot_id))
            fresh = run(backup(repo, [str(source)], pack_size=4 * 1024 * 1024))
        assert (shifted.files_read, shifted.data_blobs, fresh.data_blobs) == (0, 0, 0)
        theirs = source_subtree(repo, fresh.tree, source)
        assert source_subtree(repo, shifted.tree, source) == theirs != source_subtree(repo, first.tree, source)

    restic(work / "repo", "check", "--read-data")
    snap = json.loads(restic(work / "repo", "snapshots", "--json"))[0]
    assert snap["id"] == first.snapshot_id and snap["paths"] == [str(source)] and snap["hostname"] == "host-0"
    target = work / "restored"
    restic(work / "repo", "restore", first.snapshot_id, "--target", str(target))
    assert describe(restored_at(target, source)) == describe(source)

    blobs = [
        blob
        for name in (work / "repo" / "index").iterdir()
        for pack in json.loads(decode_unpacked(repo.key, name.read_bytes()))["packs"]
        for blob in pack["blobs"]
    ]
    assert any("uncompressed_length" in b for b in blobs) == (version == 2)
    assert len({b["id"] for b in blobs}) == len(blobs)  # nothing stored twice


def test_native_backup_after_restic_reuses_its_trees(work: Path, source: Path) -> None:
    restic(work / "repo", "init", "--repository-version", "2")
    cheapen_key(work / "repo", PASSWORD)
    before = ancestors_stat(source)
    restic(work / "repo", "backup", str(source))
    (theirs,) = json.loads(restic(work / "repo", "snapshots", "--json"))
    repo = run(NativeRepository.open(LocalStore(work / "repo"), PASSWORD))
    reads: list[str] = []
    ours = run(backup(repo, [str(source)], parent=theirs["id"], on_read=reads.append))
    assert source_subtree(repo, ours.tree, source) == source_subtree(repo, theirs["tree"], source)
    assert reads == [] and ours.data_blobs == 0 and ours.tree_blobs <= len(source.parts) - 3
    if ancestors_stat(source) == before:  # byte-identical trees, down to the parent chain of the path
        assert (ours.tree, ours.tree_blobs) == (theirs["tree"], 0)
    restic(work / "repo", "check")
    nodes = run(tree_nodes(repo, ours.tree))
    assert [n.name for n in nodes] == [source.parts[1]]  # the root holds the path's first component

    # A changed file is read again; only its directory and that directory's ancestors get new trees.
    (source / "sub" / "b.bin").write_bytes(b"changed " * 100)
    reads.clear()
    third = run(backup(repo, [str(source)], parent=ours.snapshot_id, on_read=reads.append))
    assert reads == [str(source / "sub" / "b.bin")]
    assert (third.files_changed, third.files_unmodified, third.data_blobs) == (1, ours.files_unmodified - 1, 1)
    assert third.tree_blobs == len(source.parts) + 1  # "/", each ancestor, the source and sub
    assert source_subtree(repo, third.tree, source / "many") == source_subtree(repo, ours.tree, source / "many")
    restic(work / "repo", "check", "--read-data")


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_an_incremental_backup_writes_the_trees_a_fresh_one_would(tmp_path: Path, processes: bool) -> None:
    """Nodes kept from the parent (their text cut out of its tree blob, or encoded again where it cannot be:
    two extended attributes), files read while their directory is scanned or in batches, a directory whose own
    files are all unchanged below a changed subdirectory: every tree must come out byte for byte as a backup
    without a parent writes it, or unchanged directories would stop deduplicating between snapshots (and
    engines)."""
    tree = make_tree(tmp_path / "src")
    for d in range(3):
        folder = tree / "many" / f"d{d}" / "inner"
        folder.mkdir(parents=True)
        for i in range(40):
            (folder.parent / f"f{i:02d}.txt").write_text(f"file {d}/{i}\n" * (i + 1))
        (folder / "deep.txt").write_text(f"deep {d}\n")
    large = tree / "many" / "d1" / "large.bin"
    large.write_bytes(os.urandom(INLINE_READ_BYTES + 4096))  # read in a batch, not during the scan
    tagged = tree / "many" / "d2" / "tagged.txt"
    tagged.write_text("tagged")
    try:
        os.setxattr(tagged, "user.one", b"1")
        os.setxattr(tagged, "user.two", b"2")
    except OSError:  # a filesystem without user xattrs: the rest still holds
        pass
    repo = native_init(tmp_path / "repo")
    first = run(backup(repo, [str(tree)], processes=processes))

    (tree / "many" / "d0" / "inner" / "deep.txt").write_text("changed deep\n")  # d0's own files unchanged
    (tree / "many" / "d1" / "f03.txt").write_text("changed\n")
    with large.open("r+b") as f:
        f.write(b"changed")
    (tree / "many" / "d2" / "new.txt").write_text("new")
    (tree / "a.txt").unlink()
    reads: list[str] = []
    second = run(backup(repo, [str(tree)], parent=first.snapshot_id, processes=processes, on_read=reads.append))
    changed = {"many/d0/inner/deep.txt", "many/d1/f03.txt", "many/d1/large.bin", "many/d2/new.txt"}
    assert {str(Path(r).relative_to(tree)) for r in reads} == changed
    assert (second.files_changed, second.files_new, second.files_read) == (3, 1, 4)
    assert second.files_unmodified == first.files_new - 1 - 3
    fresh = run(backup(repo, [str(tree)], parent=None, processes=processes))
    assert fresh.files_read == fresh.total_files_processed
    assert source_subtree(repo, second.tree, tree) == source_subtree(repo, fresh.tree, tree)
    restic(tmp_path / "repo", "check", "--read-data")
    restic(tmp_path / "repo", "restore", second.snapshot_id, "--target", str(tmp_path / "restored"))
    assert describe(restored_at(tmp_path / "restored", tree)) == describe(tree)


def test_excludes(work: Path, source: Path) -> None:
    repo = native_init(work / "repo")
    summary = run(backup(repo, [str(source)], excludes=["*.tmp", f"{source}/sub/deeper", "many"]))
    assert summary.files_new == 4  # a.txt, b.bin, secret.key, big.bin
    target = work / "restored"
    restic(work / "repo", "restore", "latest", "--target", str(target))
    restored = describe(restored_at(target, source))
    assert "scratch.tmp" not in restored and "sub/deeper" not in restored and "many" not in restored
    assert {"a.txt", "sub/b.bin", "link", "empty"} <= set(restored)
    (snap,) = json.loads(restic(work / "repo", "snapshots", "--json"))
    assert snap["excludes"] == ["*.tmp", f"{source}/sub/deeper", "many"]


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_reading_a_file_leaves_its_access_time_alone(tmp_path: Path, processes: bool) -> None:
    """An atime older than the mtime is the case ``relatime`` updates on the next read; a backup must not (it
    would change what the next snapshot records and dirty every inode it reads). Files the backup may not
    open with ``O_NOATIME`` (another owner, no ``CAP_FOWNER``) are read anyway."""
    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("small.txt", "large.bin"):
        path = tree / name
        path.write_bytes(os.urandom(10 if name == "small.txt" else 5 * 1024 * 1024))
        st = path.stat()
        os.utime(path, ns=(st.st_mtime_ns - 3600 * 10**9, st.st_mtime_ns))
    before = {p.name: p.stat().st_atime_ns for p in tree.iterdir()}
    repo = native_init(tmp_path / "repo")
    summary = run(backup(repo, [str(tree)], processes=processes, workers=2))
    assert summary.files_new == 2
    assert {p.name: p.stat().st_atime_ns for p in tree.iterdir()} == before


def test_exclude_patterns() -> None:
    assert excluded("/a/b/c.tmp", ["*.tmp"])
    assert excluded("/a/b/c", ["b/c"]) and not excluded("/a/b/c", ["a/c"])
    assert excluded("/a/b", ["/a/*"]) and not excluded("/x/a/b", ["/a/*"])
    assert not excluded("/a/b.txt", ["*.tmp", ""])


def test_native_init_and_backup_on_s3(work: Path, source: Path) -> None:
    """Through ``BackendStore.put`` on moto S3: restic reads, checks and restores what the native engine wrote."""
    secret = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key-123"}
    with moto_server() as moto:
        moto.create_bucket("native")
        storage = Backend.model_validate(
            {"provider": "s3", "s3": {"endpoint": moto.endpoint, "bucket": "native", "prefix": "cluster"}}
        )
        store = BackendStore(open_backend(storage, {k: v.encode() for k, v in secret.items()}), "repo")

        async def scenario() -> str:
            repo = await init_repository(store, PASSWORD, kdf=CHEAP)
            summary = await backup(repo, [str(source / "sub")], pack_size=1 << 20)
            assert await store.exists(f"snapshots/{summary.snapshot_id}")
            await store.put("locks/probe", b"x")
            await store.delete("locks/probe")
            assert not await store.exists("locks/probe")
            return summary.snapshot_id

        snapshot_id = run(scenario())
        url = f"s3:{moto.endpoint}/native/cluster/repo"
        env = {**os.environ, **secret, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": url}
        for args in (["check", "--read-data"], ["restore", snapshot_id, "--target", str(work / "out")]):
            done = subprocess.run(["restic", "--no-cache", *args], env=env, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
    assert describe(restored_at(work / "out", source / "sub")) == describe(source / "sub")
