"""Property tests of the native write path with restic 0.14 as the reader (issue #7's acceptance).

Hypothesis generates what the native engine must encode -- directory trees with awkward names, modes, times
and contents (tree encoding and Go-style escaping), and sets of data/tree blobs of any size (pack headers,
compression, crypto framing) -- the native engine writes them, and the stock ``restic`` binary reads them:
``restic restore`` must give back every name, byte, mode and mtime, ``restic cat blob`` every plaintext,
``restic check --read-data`` must find nothing wrong. Examples are few (each runs restic) but varied.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubestash.engine.native.backup import backup
from kubestash.engine.native.files import encode_unpacked
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.packer import DATA, TREE, PackWriter, index_json
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore
from restic_helpers import PASSWORD, describe, restored_at

CHEAP = KdfParams(1024, 8, 1)
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Names restic must store and give back exactly: quotes, backslashes, HTML-escaped characters, spaces, control
# characters, non-ASCII letters, line and paragraph separators -- anything a file name may hold but "/" and NUL.
NAME_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00")
NAMES = st.text(NAME_CHARS, min_size=1, max_size=24).filter(lambda n: n not in (".", "..") and len(n.encode()) < 200)
CONTENT = st.binary(max_size=3000) | st.builds(
    lambda n, b: b * n, st.integers(1, 400_000), st.binary(min_size=1, max_size=8)
)
MODES = st.sampled_from([0o644, 0o600, 0o755, 0o700, 0o640, 0o444])
MTIMES = st.integers(0, 4_000_000_000).map(lambda s: s * 1_000_000_000 + 123_456_789)


def restic(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    done = subprocess.run(["restic", "--no-cache", *args], env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done


def new_repo(path: Path, version: int) -> NativeRepository:
    return asyncio.run(init_repository(LocalStore(path), PASSWORD, version=version, kdf=CHEAP))


@SETTINGS
@given(
    version=st.sampled_from([1, 2]),
    files=st.dictionaries(NAMES, st.tuples(CONTENT, MODES, MTIMES), min_size=1, max_size=6),
    subdirs=st.dictionaries(NAMES, st.tuples(MODES.map(lambda m: m | 0o700), MTIMES), max_size=3),
)
def test_trees_written_natively_are_what_restic_restores(
    tmp_path_factory: pytest.TempPathFactory,
    version: int,
    files: dict[str, tuple[bytes, int, int]],
    subdirs: dict[str, tuple[int, int]],
) -> None:
    """Names, bytes, modes and mtimes of files in the backed-up directory and in its subdirectories."""
    base = tmp_path_factory.mktemp("prop")
    source = base / "source"
    source.mkdir()
    directories = [source, *(source / name for name in subdirs)]
    for directory in directories[1:]:
        directory.mkdir()
    for directory in directories:
        for name, (content, mode, mtime) in files.items():
            path = directory / name
            if path.exists():  # a subdirectory of the same name
                continue
            path.write_bytes(content)
            path.chmod(mode)
            os.utime(path, ns=(mtime, mtime))
    for name, (mode, mtime) in subdirs.items():
        (source / name).chmod(mode)
        os.utime(source / name, ns=(mtime, mtime))

    repo_path = base / "repo"
    repo = new_repo(repo_path, version)
    summary = asyncio.run(backup(repo, [str(source)], pack_size=256 * 1024))
    restic(repo_path, "check", "--read-data")
    restic(repo_path, "restore", summary.snapshot_id, "--target", str(base / "out"))
    assert describe(restored_at(base / "out", source)) == describe(source)


@SETTINGS
@given(
    version=st.sampled_from([1, 2]),
    blobs=st.lists(
        st.tuples(
            st.sampled_from([DATA, TREE]),
            st.binary(max_size=2000) | st.binary(min_size=1, max_size=4).map(lambda b: b * 9000),
        ),
        min_size=1,
        max_size=25,
        unique_by=lambda t: t[1],
    ),
    per_pack=st.integers(1, 10),
)
def test_packs_written_natively_are_what_restic_reads(
    tmp_path_factory: pytest.TempPathFactory, version: int, blobs: list[tuple[str, bytes]], per_pack: int
) -> None:
    """Pack headers, blob framing and compression, and the index naming them, as restic reads them."""
    repo_path = tmp_path_factory.mktemp("packs") / "repo"
    repo = new_repo(repo_path, version)
    store = LocalStore(repo_path)
    packs = []
    for start in range(0, len(blobs), per_pack):
        writer = PackWriter(repo.key, version)
        for kind, plaintext in blobs[start : start + per_pack]:
            writer.add(kind, plaintext)
        pack = writer.finish()
        asyncio.run(store.put(f"data/{pack.id[:2]}/{pack.id}", pack.data))
        packs.append(pack)
    index = encode_unpacked(repo.key, index_json(packs), version)
    asyncio.run(store.put(f"index/{hashlib.sha256(index).hexdigest()}", index))

    restic(repo_path, "check", "--read-data")
    listed = restic(repo_path, "list", "blobs").stdout.decode().split()
    assert sorted(zip(listed[0::2], listed[1::2], strict=True)) == sorted(
        (kind, hashlib.sha256(plaintext).hexdigest()) for kind, plaintext in blobs
    )
    kind, plaintext = max(blobs, key=lambda b: len(b[1]))
    assert restic(repo_path, "cat", "blob", hashlib.sha256(plaintext).hexdigest()).stdout == plaintext
