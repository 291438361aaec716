"""One file of a snapshot to a stream, or a directory as a tar archive: restic 0.14's ``dump``.

A database dump backed up from a pipe comes back through a pipe (``kubestash repo dump latest /dump.sql |
psql``) without touching the disk. A file is written blob by blob, so memory stays at one blob whatever its
size. A directory becomes a tar archive of everything below it, entries named by their snapshot path without
the leading slash, as restic names them (``tmp/data/a.txt``); the directory itself is not an entry. The tar
writer (:mod:`tarfile`, blocking) runs in a thread and pulls each file's blobs through the event loop.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from typing import BinaryIO

from kubestash.engine.native.repository import NativeRepository, RepositoryError
from kubestash.engine.native.restore import safe_name, subtree_of
from kubestash.engine.native.tree import Node, unix_mode


class DumpError(RepositoryError):
    """The path is not in the snapshot, or is something that cannot be dumped."""


async def find_node(repo: NativeRepository, tree_id: str, path: str) -> Node | None:
    """The node at the absolute snapshot ``path`` (None for ``/``, the snapshot's root)."""
    parts = [p for p in path.split("/") if p]
    node: Node | None = None
    current = tree_id
    for depth, part in enumerate(parts):
        found = next((n for n in await repo.load_tree(current) if safe_name(n) == part), None)
        if found is None or (depth < len(parts) - 1 and found.type != "dir"):
            raise DumpError(f'cannot dump file: path "{path}" not found in snapshot')
        node = found
        if found.type == "dir":
            current = subtree_of(found)
    return node


async def dump_file(repo: NativeRepository, node: Node, out: BinaryIO) -> int:
    """Write a file node's content to ``out``; the bytes written."""
    written = 0
    for blob_id in node.content or ():
        data = await repo.load_blob(blob_id)
        await asyncio.to_thread(out.write, data)
        written += len(data)
    await asyncio.to_thread(out.flush)
    return written


async def dump(repo: NativeRepository, tree_id: str, path: str, out: BinaryIO) -> None:
    """``restic dump``: the file at ``path`` as is, a directory (or ``/``) as a tar archive."""
    node = await find_node(repo, tree_id, path)
    if node is not None and node.type == "file":
        await dump_file(repo, node, out)
    elif node is None or node.type == "dir":
        root = tree_id if node is None else subtree_of(node)
        await _tar(repo, root, "/".join(p for p in path.split("/") if p), out)
    else:
        raise DumpError(f"cannot dump {path}: it is a {node.type}, not a file or directory")


async def _entries(repo: NativeRepository, tree_id: str, prefix: str) -> AsyncIterator[tuple[str, Node]]:
    for node in await repo.load_tree(tree_id):
        name = f"{prefix}/{safe_name(node)}" if prefix else safe_name(node)
        yield name, node
        if node.type == "dir":
            async for item in _entries(repo, subtree_of(node), name):
                yield item


def _info(name: str, node: Node) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + "/" if node.type == "dir" else name)
    info.mode = unix_mode(node.mode) & 0o7777
    info.uid, info.gid, info.uname, info.gname = node.uid, node.gid, node.user, node.group
    info.mtime = node.mtime.unix_ns // 1_000_000_000
    if node.type == "dir":
        info.type = tarfile.DIRTYPE
    elif node.type == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, node.linktarget
    else:
        info.size = node.size
    return info


class _BlobReader(io.RawIOBase):
    """A file's content for :mod:`tarfile` in its thread: blobs fetched one at a time through the loop."""

    def __init__(self, repo: NativeRepository, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.repo, self.loop = repo, loop
        self.blobs = list(node.content or ())
        self.buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.buffer and self.blobs:
            blob_id = self.blobs.pop(0)
            self.buffer = asyncio.run_coroutine_threadsafe(self.repo.load_blob(blob_id), self.loop).result()
        size = min(len(target), len(self.buffer))
        target[:size] = self.buffer[:size]
        self.buffer = self.buffer[size:]
        return size


async def _tar(repo: NativeRepository, tree_id: str, prefix: str, out: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    entries = [item async for item in _entries(repo, tree_id, prefix)]

    def write() -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for name, node in entries:
                if node.type in ("dir", "symlink"):
                    archive.addfile(_info(name, node))
                elif node.type == "file":
                    archive.addfile(_info(name, node), io.BufferedReader(_BlobReader(repo, node, loop)))
        out.flush()

    await asyncio.to_thread(write)
