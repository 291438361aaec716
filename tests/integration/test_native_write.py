"""The native write-side building blocks against restic 0.14 as the oracle.

1. Tree encoding: restic's own tree blobs re-encode byte for byte, and trees built from ``lstat`` of the
   same (unchanged) directories have restic's bytes and ids - an unchanged directory deduplicates.
2. Packs, index and snapshot written by us (repository versions 2 and 1) pass ``restic check --read-data``,
   ``restic restore`` reproduces the source, and a later ``restic backup --force`` of the unchanged source
   stores the very same tree blobs for every directory whose files restic chunks as we did.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubestash.engine.native.crypto import Key, open_key_file
from kubestash.engine.native.files import decode_unpacked, decompress, encode_unpacked, storage_id
from kubestash.engine.native.pack import read_header
from kubestash.engine.native.packer import DATA, TREE, Pack, PackWriter, index_json, snapshot_json
from kubestash.engine.native.tree import GoTime, Node, decode_tree, encode_tree, node_from_stat
from restic_helpers import PASSWORD, cheapen_key, describe

MTIME = 1_700_000_000_000_000_000
BIG_CHUNK = 1 << 20  # fixed-size chunks; files below restic's 512 KiB minimum chunk are one blob for both
KOLKATA = 5 * 3600 + 1800
ContentOf = Callable[[Path], list[str]]


def restic(repo: Path, *args: str, cwd: Path | None = None, tz: str = "UTC") -> bytes:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo), "TZ": tz}
    env.pop("RESTIC_PASSWORD_FILE", None)
    done = subprocess.run(["restic", *args], check=False, env=env, cwd=cwd, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def init_repo(path: Path, version: int = 2) -> Path:
    restic(path, "init", "--repository-version", str(version))
    cheapen_key(path, PASSWORD)
    return path


def build_source(root: Path) -> Path:
    """Everything a tree must encode: modes, setuid, symlink, empty dir/file, awkward names, an xattr."""
    data = root / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "empty dir").mkdir()
    (data / "big").mkdir()
    files = {
        "a.txt": (b"hello\n", 0o644),
        "run.sh": (b"#!/bin/sh\necho hi\n", 0o750),
        "secret.key": (b"k", 0o600),
        "suid": (b"\x7fELF", 0o4755),
        "empty": (b"", 0o644),
        "with space é 日本": (b"unicode\n", 0o644),
        'odd <>&"\\ name': (b"escape me", 0o640),
        "tab\tnbsp\u00a0soft\u00ademoji\U0001f600": (b"quoted by strconv", 0o644),
        b"latin1-\xe9-not-utf8".decode("utf-8", "surrogateescape"): (b"raw bytes", 0o644),
        "sub/b.bin": (bytes(range(256)) * 64, 0o644),
        "sub/deeper/c.txt": (os.urandom(300_000), 0o644),
        "big/large.bin": (os.urandom(BIG_CHUNK + 200_000), 0o644),
    }
    for name, (content, mode) in files.items():
        (data / name).write_bytes(content)
        (data / name).chmod(mode)
    os.setxattr(data / "a.txt", "user.comment", b"<kept>")
    (data / "sub" / "link").symlink_to("../a.txt")
    for i, path in enumerate(sorted(data.rglob("*"), key=lambda p: -len(p.parts))):  # children before parents
        os.utime(path, ns=(MTIME + i * 1_000_000_123, MTIME + i * 1_000_000_123), follow_symlinks=False)
    os.utime(data, ns=(MTIME, MTIME))
    return data


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build_source(tmp_path_factory.mktemp("src"))


def chunks(path: Path) -> list[bytes]:
    content = path.read_bytes()
    return [content[i : i + BIG_CHUNK] for i in range(0, len(content), BIG_CHUNK)]


def fixed_chunk_ids(path: Path) -> list[str]:
    return [hashlib.sha256(c).hexdigest() for c in chunks(path)]


def nodes_of(directory: Path, subtree_of: dict[Path, str], offset: int | None, content_of: ContentOf) -> list[Node]:
    """The nodes of ``directory`` built from the file system, as restic's archiver would."""
    nodes = []
    for entry in sorted(directory.iterdir()):
        content = content_of(entry) if entry.is_file() and not entry.is_symlink() else None
        nodes.append(
            node_from_stat(entry, entry.lstat(), content=content, subtree=subtree_of.get(entry), offset=offset)
        )
    return nodes


def local_trees(
    data: Path, offset: int | None = None, content_of: ContentOf = fixed_chunk_ids
) -> tuple[dict[Path, bytes], str]:
    """Tree blob of every directory (bottom-up) plus the id of the snapshot root (which holds ``data``)."""
    blobs: dict[Path, bytes] = {}
    subtree_of: dict[Path, str] = {}
    for directory in sorted(
        [data, *(p for p in data.rglob("*") if p.is_dir() and not p.is_symlink())], key=lambda p: -len(p.parts)
    ):
        blobs[directory] = encode_tree(nodes_of(directory, subtree_of, offset, content_of))
        subtree_of[directory] = hashlib.sha256(blobs[directory]).hexdigest()
    root = encode_tree([node_from_stat(data, data.lstat(), subtree=subtree_of[data], offset=offset)])
    blobs[data.parent] = root
    return blobs, hashlib.sha256(root).hexdigest()


def restic_trees(repo: Path, tree_id: str, base: Path) -> dict[Path, tuple[str, bytes]]:
    """restic's tree blobs of a snapshot, by the directory they describe (``base`` is the snapshot root)."""
    found: dict[Path, tuple[str, bytes]] = {}
    todo = [(base, tree_id)]
    while todo:
        path, tid = todo.pop()
        blob = restic(repo, "cat", "blob", tid)
        found[path] = (tid, blob)
        todo += [(path / n.name, n.subtree) for n in decode_tree(blob) if n.subtree]
    return found


def backup(repo: Path, data: Path, *extra: str, tz: str = "UTC") -> dict[str, Any]:
    out = restic(repo, "backup", data.name, "--json", *extra, cwd=data.parent, tz=tz)
    summary = json.loads(out.splitlines()[-1])
    assert summary["message_type"] == "summary"
    snap = json.loads(restic(repo, "cat", "snapshot", summary["snapshot_id"]))
    assert isinstance(snap, dict)
    return snap


@pytest.mark.parametrize(("tz", "offset"), [("UTC", None), ("Asia/Kolkata", KOLKATA)])
def test_restic_trees_reencode_and_match_lstat(tmp_path: Path, source: Path, tz: str, offset: int | None) -> None:
    repo = init_repo(tmp_path / "repo")
    snap = backup(repo, source, tz=tz)
    theirs = restic_trees(repo, snap["tree"], source.parent)
    assert set(theirs) == {source.parent, source, *(p for p in source.rglob("*") if p.is_dir() and not p.is_symlink())}
    for tree_id, blob in theirs.values():
        assert hashlib.sha256(blob).hexdigest() == tree_id
        assert encode_tree(decode_tree(blob)) == blob
    names = {n.name for n in decode_tree(theirs[source][1])}
    assert {'odd <>&"\\ name', "with space é 日本", "latin1-\udce9-not-utf8"} <= names
    (a_txt,) = (n for n in decode_tree(theirs[source][1]) if n.name == "a.txt")
    assert a_txt.extended_attributes[0].value == b"<kept>"
    if offset is not None:
        assert a_txt.mtime.offset == offset and a_txt.mtime.to_json().endswith("+05:30")

    # Data blob ids depend on restic's chunker (its polynomial is per repository): take them from restic.
    restic_content = {
        path / n.name: list(n.content or ()) for path, (_, blob) in theirs.items() for n in decode_tree(blob)
    }
    ours, root_id = local_trees(source, offset, restic_content.__getitem__)
    for path, blob in ours.items():
        assert blob == theirs[path][1], path
    assert root_id == snap["tree"]


def written_repo(repo: Path, data: Path) -> tuple[Key, int, str, dict[Path, str]]:
    """Back ``data`` up into ``repo`` with the native building blocks only; the snapshot id and tree ids."""
    (key_file,) = (repo / "keys").iterdir()
    key = open_key_file(json.loads(key_file.read_bytes()), PASSWORD)
    version = int(json.loads(decode_unpacked(key, (repo / "config").read_bytes()))["version"])
    data_packer, tree_packer = PackWriter(key, version), PackWriter(key, version)
    packs: list[Pack] = []
    known: set[str] = set()

    def add(packer: PackWriter, kind: str, plaintext: bytes) -> str:
        blob = hashlib.sha256(plaintext).hexdigest()
        if blob not in known:
            known.add(blob)
            packer.add(kind, plaintext, blob)
            if packer.size > 400_000:  # several packs, each with several blobs
                packs.append(packer.finish())
        return blob

    for path in sorted(data.rglob("*")):
        if path.is_file() and not path.is_symlink():
            for chunk in chunks(path):
                add(data_packer, DATA, chunk)
    trees, root_id = local_trees(data)
    tree_ids = {path: add(tree_packer, TREE, blob) for path, blob in trees.items()}
    assert tree_ids[data.parent] == root_id
    packs += [p.finish() for p in (data_packer, tree_packer) if p.count]
    for pack in packs:
        assert [b.id for b in read_header(key, pack.data)] == [b.id for b in pack.blobs]
        (repo / pack.path).parent.mkdir(exist_ok=True)
        (repo / pack.path).write_bytes(pack.data)
    index = encode_unpacked(key, index_json(packs), version)
    (repo / "index" / storage_id(index)).write_bytes(index)
    user = pwd.getpwuid(os.getuid()).pw_name
    doc = snapshot_json(
        time=GoTime.local(time.time_ns()),
        tree=root_id,
        paths=[str(data)],
        hostname=socket.gethostname(),
        username=user,
        uid=os.getuid(),
        gid=os.getgid(),
    )
    snapshot = encode_unpacked(key, doc, version)
    (repo / "snapshots" / storage_id(snapshot)).write_bytes(snapshot)
    return key, version, storage_id(snapshot), tree_ids


@pytest.mark.parametrize("version", [2, 1])
def test_native_repository_passes_restic(tmp_path: Path, source: Path, version: int) -> None:
    repo = init_repo(tmp_path / "repo", version)
    key, seen_version, snapshot_id, tree_ids = written_repo(repo, source)
    assert seen_version == version

    listed = json.loads(restic(repo, "snapshots", "--json"))
    assert [s["id"] for s in listed] == [snapshot_id]
    assert listed[0]["paths"] == [str(source)] and listed[0]["hostname"] == socket.gethostname()
    restic(repo, "check", "--read-data")
    (index_file,) = (repo / "index").iterdir()
    blobs = [b for p in json.loads(decode_unpacked(key, index_file.read_bytes()))["packs"] for b in p["blobs"]]
    compressed = [b for b in blobs if "uncompressed_length" in b]
    assert bool(compressed) == (version == 2)  # v2: b.bin and the trees shrink, random data does not
    assert len(compressed) < len(blobs) or version == 1

    target = tmp_path / "restored"
    restic(repo, "restore", snapshot_id, "--target", str(target))
    assert describe(target / source.name) == describe(source)
    assert os.getxattr(target / source.name / "a.txt", "user.comment") == b"<kept>"

    # restic, re-reading every file of the unchanged source, stores our tree blobs again for every
    # directory whose files it chunks like we did (all but big/ and its ancestors).
    snap = backup(repo, source, "--force")
    theirs = restic_trees(repo, snap["tree"], source.parent)
    moved = {source.parent, source, source / "big"}
    for path, tree_id in tree_ids.items():
        if path not in moved:
            assert theirs[path][0] == tree_id, path
    restic(repo, "check")


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([1, 2]),
    st.lists(st.tuples(st.sampled_from([DATA, TREE]), st.binary(max_size=300) | st.just(b"z" * 5000)), min_size=1),
)
def test_pack_layout(version: int, blobs: list[tuple[str, bytes]]) -> None:
    """Every blob is found again from the pack's own header, decrypts (and decompresses) to its plaintext."""
    key = Key.random()
    writer = PackWriter(key, version)
    for kind, plaintext in blobs:
        writer.add(kind, plaintext)
    pack = writer.finish()
    assert writer.count == 0 and hashlib.sha256(pack.data).hexdigest() == pack.id
    assert read_header(key, pack.data) == list(pack.blobs)
    for (kind, plaintext), blob in zip(blobs, pack.blobs, strict=True):
        assert (blob.type, blob.id) == (kind, hashlib.sha256(plaintext).hexdigest())
        stored = key.decrypt_bytes(pack.data[blob.offset : blob.offset + blob.length])
        if blob.uncompressed_length is None:
            assert stored == plaintext
        else:
            assert version == 2 and len(stored) < len(plaintext) == blob.uncompressed_length
            assert decompress(stored) == plaintext
    entry_sizes = sum(41 if b.uncompressed_length is not None else 37 for b in pack.blobs)
    header_length = int.from_bytes(pack.data[-4:], "little")
    assert header_length == entry_sizes + 32
    assert len(pack.data) == sum(b.length for b in pack.blobs) + header_length + 4
