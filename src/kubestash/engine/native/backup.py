"""Native backup into a restic repository: walk, chunk, deduplicate, compress, encrypt, pack, index, snapshot.

What restic 0.14's archiver does, reproduced where it shows in the repository:

- An absolute path is stored with the chain of its parent directories: the snapshot's root tree holds the
  first path component (``/tmp`` → node ``tmp``), whose subtree holds the next, down to the backed-up
  directory; every intermediate node carries the real ``lstat`` metadata of that directory. Several paths
  share their common ancestors. Tree blobs are byte-identical to restic's (:mod:`.tree`), so an unchanged
  directory has the same tree id whichever engine wrote the snapshot.
- With a parent snapshot, a file whose size, mtime, ctime and inode equal its node in the parent (and all of
  whose blobs are still in the index) is not read: the parent node's content list is reused.
- Data and tree blobs go to separate packs; a blob already in the index, or already stored by this run, is
  not stored again.
- Crash safety: packs are uploaded first, then the index file(s) naming them, then the snapshot. An
  interrupted run leaves only unreferenced packs, which ``restic check`` merely reports.

Concurrency: the walk runs on the event loop; files that must be read go, in batches per directory, to a
pool of worker threads that chunk (FastCDC, :mod:`.chunker`), hash, compress and encrypt, each filling its
own data :class:`PackWriter`. A worker whose pack is full uploads it (through the event loop) and waits, which
gives back-pressure and bounds memory to about ``workers x (2 x pack_size + read window + largest chunk)``.
Threads, not processes: hashlib and zstd release the GIL on large buffers, and a process pool would have to
copy every chunk to a worker and every encrypted blob back. Measured here (bench dataset, one core): read +
chunk + hash + zstd-1 + encrypt + node building costs ~1.2 CPU-s per 256 MiB (~220 MB/s); this machine's
second core is shared with other sessions (two zstd *processes* together ran no faster than one), so the
second worker mostly overlaps I/O (reads, pack writes with fsync). See ``bench/engine.py``.

Excludes (a documented subset of restic's ``--exclude``): a pattern is split at ``/``; an absolute pattern
(``/data/cache``) must match the path's leading components, a relative one (``*.tmp``, ``cache/*.bin``) its
trailing components; each component is an ``fnmatch`` glob (``*``, ``?``, ``[...]``). ``**`` is not
supported. An excluded directory is not descended into.
"""

from __future__ import annotations

import asyncio
import fnmatch
import getpass
import hashlib
import os
import socket
import stat as stat_mod
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from kubestash.engine.native.chunker import boundaries
from kubestash.engine.native.files import encode_unpacked, storage_id
from kubestash.engine.native.packer import DATA, TREE, Pack, PackWriter, index_json, snapshot_json
from kubestash.engine.native.repository import IndexEntry, NativeRepository, SnapshotInfo
from kubestash.engine.native.store import writable
from kubestash.engine.native.tree import GoTime, Node, encode_tree, go_file_mode, node_from_stat

PACK_SIZE = 16 * 1024 * 1024
READ_WINDOW = 4 * 1024 * 1024
BATCH_BYTES = 8 * 1024 * 1024  # files of a directory handed to a worker together, up to this many bytes
BATCH_FILES = 64  # ... or this many files
COMPRESSION_LEVEL = 1
INDEX_MAX_BLOBS = 50_000


@dataclass
class BackupProgress:
    files_done: int = 0
    bytes_done: int = 0
    data_added: int = 0


@dataclass
class BackupSummary:
    snapshot_id: str
    tree: str
    parent: str | None
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs_new: int = 0
    dirs_changed: int = 0
    dirs_unmodified: int = 0
    data_blobs: int = 0
    tree_blobs: int = 0
    data_added: int = 0
    """Bytes of pack files written (blobs as stored, headers included)."""
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0
    files_read: int = 0
    """Files whose content was read (the others reused their parent node's content)."""


class BackupError(Exception):
    """A path to back up does not exist or cannot be backed up."""


def excluded(path: str, patterns: Sequence[str]) -> bool:
    """Whether the absolute ``path`` matches one of the exclude ``patterns`` (see the module docstring)."""
    parts = [p for p in path.split("/") if p]
    for pattern in patterns:
        pat = [p for p in pattern.split("/") if p]
        if not pat:
            continue
        window = parts[: len(pat)] if pattern.startswith("/") else parts[-len(pat) :]
        if len(window) == len(pat) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(window, pat, strict=True)):
            return True
    return False


async def tree_nodes(repo: NativeRepository, tree_id: str) -> list[Node]:
    """A tree's nodes (the parent's, when deciding what changed)."""
    return await repo.load_tree(tree_id)


@dataclass
class _Shared:
    """State the worker threads share with the event loop."""

    repo: NativeRepository
    pack_size: int
    loop: asyncio.AbstractEventLoop
    upload: Callable[[Pack], Coroutine[Any, Any, None]]
    on_read: Callable[[str], None] | None
    compression_level: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    added: set[str] = field(default_factory=set)
    writers: list[PackWriter] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)
    aborted: threading.Event = field(default_factory=threading.Event)

    def known(self, blob_id: str) -> bool:
        return blob_id in self.repo.index or blob_id in self.added

    def claim(self, blob_id: str) -> bool:
        """True if the caller should store ``blob_id`` (nobody has, nor is about to)."""
        with self.lock:
            if blob_id in self.repo.index or blob_id in self.added:
                return False
            self.added.add(blob_id)
            return True

    def writer(self) -> PackWriter:
        writer: PackWriter | None = getattr(self.local, "writer", None)
        if writer is None:
            writer = PackWriter(self.repo.key, self.repo.config.version, compression_level=self.compression_level)
            self.local.writer = writer
            with self.lock:
                self.writers.append(writer)
        return writer

    def ship(self, pack: Pack) -> None:
        """Upload a finished pack and wait for it (back-pressure; an upload error is raised here)."""
        future = asyncio.run_coroutine_threadsafe(self.upload(pack), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                if self.aborted.is_set():
                    future.cancel()
                    raise BackupError("backup aborted") from None

    def file_nodes(self, files: list[tuple[str, os.stat_result]]) -> list[Node]:
        """Read and store each file; their nodes (built here too, off the event loop)."""
        return [node_from_stat(path, st, content=self.chunk_file(path, st.st_size)) for path, st in files]

    def chunk_file(self, path: str, size_hint: int) -> list[str]:
        """Read, chunk and store ``path``; its content list (blob ids in order). Runs in a worker thread.

        The file is read in windows of :data:`READ_WINDOW` bytes: every chunk of a window but the last ends
        at a cut point FastCDC found inside the window (or at its maximum size), so it is what chunking the
        whole file would give; the last is carried into the next window. Memory stays at about a window plus
        a maximum-size chunk per worker whatever the file size.
        """
        if self.on_read is not None:
            self.on_read(path)
        content: list[str] = []
        with open(path, "rb") as f:
            if size_hint < READ_WINDOW:  # the common case: one read of the whole file
                data = f.read()
                if len(data) < READ_WINDOW:
                    for offset, length in boundaries(data):
                        self.store_chunk(data[offset : offset + length], content)
                    return content
                carry = data  # it grew: go on in windows
            else:
                carry = b""
            buffer = bytearray(carry)
            while True:
                data = f.read(READ_WINDOW)  # buffered: short only at the end of the file
                eof = len(data) < READ_WINDOW
                buffer += data
                del data
                if not buffer:
                    break
                cuts = boundaries(buffer)
                if not eof:
                    cuts.pop()  # may continue in the next window: carried over
                with memoryview(buffer) as view:
                    for offset, length in cuts:
                        self.store_chunk(bytes(view[offset : offset + length]), content)
                if eof:
                    break
                if cuts:
                    end = cuts[-1][0] + cuts[-1][1]
                    del buffer[:end]
        return content

    def store_chunk(self, chunk: bytes, content: list[str]) -> None:
        blob_id = hashlib.sha256(chunk).hexdigest()
        content.append(blob_id)
        if self.claim(blob_id):
            writer = self.writer()
            writer.add(DATA, chunk, blob_id)
            if writer.size >= self.pack_size:
                self.ship(writer.finish())


class _Backup:
    def __init__(
        self,
        repo: NativeRepository,
        *,
        excludes: Sequence[str],
        pack_size: int,
        workers: int,
        on_progress: Callable[[BackupProgress], None] | None,
        on_read: Callable[[str], None] | None,
        compression_level: int,
    ) -> None:
        self.repo = repo
        self.excludes = tuple(excludes)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="native-backup")
        self.shared = _Shared(repo, pack_size, asyncio.get_running_loop(), self.upload, on_read, compression_level)
        self.tree_writer = PackWriter(repo.key, repo.config.version, compression_level=compression_level)
        self.packs: list[Pack] = []
        self.progress = BackupProgress()
        self.on_progress = on_progress
        self.summary = BackupSummary("", "", None)
        self.pack_size = pack_size
        self.out = writable(repo.store)

    # ------------------------------------------------------------ uploads

    async def upload(self, pack: Pack) -> None:
        await self.out.put(pack.path, pack.data)
        self.progress.data_added += len(pack.data)
        self.summary.data_added += len(pack.data)
        self.packs.append(Pack(pack.id, b"", pack.blobs))  # keep the blob list, drop the bytes
        for blob in pack.blobs:
            if blob.type == DATA:
                self.summary.data_blobs += 1
            else:
                self.summary.tree_blobs += 1

    async def store_tree(self, nodes: Iterable[Node]) -> str:
        blob = encode_tree(nodes)
        tree_id = hashlib.sha256(blob).hexdigest()
        if self.shared.claim(tree_id):
            self.tree_writer.add(TREE, blob, tree_id)
            if self.tree_writer.size >= self.pack_size:
                await self.upload(self.tree_writer.finish())
        return tree_id

    # ------------------------------------------------------------ walking

    def reusable(self, st: os.stat_result, previous: Node | None) -> Sequence[str] | None:
        """The parent node's content if the file is unchanged by restic's rule (and its blobs still exist)."""
        if (
            previous is not None
            and previous.type == "file"
            and previous.size == st.st_size
            and previous.mtime.unix_ns == st.st_mtime_ns
            and previous.ctime.unix_ns == st.st_ctime_ns
            and previous.inode == st.st_ino
            and previous.content is not None
            and all(self.shared.known(b) for b in previous.content)
        ):
            return previous.content
        return None

    def counted(self, st: os.stat_result) -> None:
        s = self.summary
        s.total_files_processed += 1
        s.total_bytes_processed += st.st_size
        self.progress.files_done += 1
        self.progress.bytes_done += st.st_size

    async def read_files(self, files: list[tuple[str, os.stat_result, Node | None]]) -> list[Node]:
        """Nodes of files that must be read, in one worker-pool job (batching keeps per-file overhead low)."""
        nodes = await asyncio.wrap_future(self.pool.submit(self.shared.file_nodes, [(f, st) for f, st, _ in files]))
        s = self.summary
        for _, st, previous in files:
            s.files_read += 1
            if previous is None:
                s.files_new += 1
            else:
                s.files_changed += 1
            self.counted(st)
        if self.on_progress is not None:
            self.on_progress(self.progress)
        return nodes

    async def entry_nodes(self, entries: list[tuple[str, os.stat_result, Node | None]]) -> list[Node]:
        """Nodes of a directory's entries, in their order: unchanged files straight from the parent, files to
        read in batches for the worker pool, subdirectories walked concurrently (so the pool never idles at a
        directory's end)."""
        nodes: list[Node | None] = [None] * len(entries)
        jobs: list[Awaitable[list[Node]]] = []
        slots: list[list[int]] = []
        batch: list[int] = []
        batch_bytes = 0
        for i, (full, st, previous) in enumerate(entries):
            if stat_mod.S_ISDIR(st.st_mode):
                jobs.append(self.dir_node(full, st, previous))
                slots.append([i])
            elif stat_mod.S_ISREG(st.st_mode):
                content = self.reusable(st, previous)
                if content is not None:
                    same = _same_node(previous, st)
                    nodes[i] = same if same is not None else node_from_stat(full, st, content=content)
                    self.summary.files_unmodified += 1
                    self.counted(st)
                    continue
                batch.append(i)
                batch_bytes += st.st_size
                if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES:
                    jobs.append(self.read_files([entries[j] for j in batch]))
                    slots.append(batch)
                    batch, batch_bytes = [], 0
            else:
                nodes[i] = node_from_stat(full, st)
        if batch:
            jobs.append(self.read_files([entries[j] for j in batch]))
            slots.append(batch)
        for indexes, done in zip(slots, await asyncio.gather(*jobs), strict=True):
            for i, node in zip(indexes, done, strict=True):
                nodes[i] = node
        if self.on_progress is not None:
            self.on_progress(self.progress)
        return [node for node in nodes if node is not None]

    async def dir_node(self, path: str, st: os.stat_result, previous: Node | None) -> list[Node]:
        parent_tree = previous.subtree if previous is not None and previous.type == "dir" else None
        subtree = await self.directory(path, parent_tree)
        if previous is not None and previous.subtree == subtree:
            same = _same_node(previous, st)
            if same is not None:
                return [same]
        return [node_from_stat(path, st, subtree=subtree)]

    async def directory(self, path: str, parent_tree: str | None) -> str:
        """Store the tree of directory ``path``; its id."""
        previous = {n.name: n for n in await tree_nodes(self.repo, parent_tree)} if parent_tree else {}
        names = sorted(os.listdir(path), key=lambda n: n.encode("utf-8", "surrogateescape"))
        entries = []
        for name in names:
            full = os.path.join(path, name)
            if self.excludes and excluded(full, self.excludes):
                continue
            try:
                entries.append((full, os.lstat(full), previous.get(name)))
            except FileNotFoundError:
                continue  # vanished since listdir
        nodes = await self.entry_nodes(entries)
        if (
            parent_tree is not None
            and len(nodes) == len(previous)
            and all(node is prev for node, (_, _, prev) in zip(nodes, entries, strict=True))
        ):
            tree_id = parent_tree  # every node is the parent's own: the very same tree blob, already stored
        else:
            tree_id = await self.store_tree(nodes)
        s = self.summary
        if parent_tree is None:
            s.dirs_new += 1
        elif parent_tree == tree_id:
            s.dirs_unmodified += 1
        else:
            s.dirs_changed += 1
        return tree_id

    async def virtual(self, prefix: str, trie: dict[str, Any], parent_tree: str | None) -> str:
        """The tree of ``prefix`` holding only the backed-up paths below it (restic's parent chain)."""
        previous = {n.name: n for n in await tree_nodes(self.repo, parent_tree)} if parent_tree else {}
        nodes = []
        for name, sub in sorted(trie.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape")):
            full = os.path.join(prefix, name)
            st = os.lstat(full)
            prev = previous.get(name)
            if sub is None:  # a backed-up path
                nodes += await self.entry_nodes([(full, st, prev)])
            else:
                sub_parent = prev.subtree if prev is not None and prev.type == "dir" else None
                nodes.append(node_from_stat(full, st, subtree=await self.virtual(full, sub, sub_parent)))
        return await self.store_tree(nodes)

    # ------------------------------------------------------------ finishing

    async def flush(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, True)
        for writer in [*self.shared.writers, self.tree_writer]:
            if writer.count:
                await self.upload(writer.finish())

    async def write_index(self) -> None:
        version = self.repo.config.version
        batch: list[Pack] = []
        count = 0
        for pack in [*self.packs, None]:
            if pack is not None:
                batch.append(pack)
                count += len(pack.blobs)
            if batch and (pack is None or count >= INDEX_MAX_BLOBS):
                data = await asyncio.to_thread(encode_unpacked, self.repo.key, index_json(batch), version)
                await self.out.put(f"index/{storage_id(data)}", data)
                batch, count = [], 0
        for pack in self.packs:
            for blob in pack.blobs:
                self.repo.index.setdefault(blob.id, IndexEntry(pack.id, blob))


def _same_node(previous: Node | None, st: os.stat_result) -> Node | None:
    """The parent's node itself when ``lstat`` would rebuild it unchanged, else None.

    For a file (whose content the caller reuses) or a directory (whose subtree came out the same) with the
    same size, mtime, ctime and inode as its parent node: ``chmod``, ``chown``, ``link``
    and ``setxattr`` all update ctime, so mode, owner, link count and xattrs are those recorded. What ctime
    does not cover is checked here: the device id and the zone offset the times were written with. (User and
    group *names* are assumed to map as before.) This skips the user/group/xattr lookups that dominate an
    unchanged backup of many small files.
    """
    if (
        previous is None
        or previous.mtime.unix_ns != st.st_mtime_ns
        or previous.ctime.unix_ns != st.st_ctime_ns
        or previous.inode != st.st_ino
        or previous.size != (st.st_size if previous.type == "file" else 0)
        or previous.device_id != st.st_dev
        or previous.uid != st.st_uid
        or previous.gid != st.st_gid
        or previous.links != (st.st_nlink if previous.type == "file" else 0)
        or previous.mode != go_file_mode(st.st_mode)
        or previous.atime != previous.mtime
        or previous.mtime.offset != GoTime.local(st.st_mtime_ns).offset
        or previous.ctime.offset != GoTime.local(st.st_ctime_ns).offset
    ):
        return None
    return previous


def _trie(paths: Sequence[str]) -> dict[str, Any]:
    """Nested dict of path components; ``None`` marks a backed-up path (its descendants are implied)."""
    root: dict[str, Any] = {}
    for path in paths:
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise BackupError("backing up / itself is not supported")
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is None:
                break  # an ancestor is backed up already
            node = child
        else:
            node[parts[-1]] = None
    return root


async def find_parent(repo: NativeRepository, paths: Sequence[str], host: str) -> SnapshotInfo | None:
    """restic's automatic parent: the newest snapshot of the same host and the same paths."""
    wanted = tuple(sorted(paths))
    matching = [s for s in await repo.snapshots() if s.hostname == host and tuple(sorted(s.paths)) == wanted]
    return matching[-1] if matching else None


async def backup(
    repo: NativeRepository,
    paths: Sequence[str],
    *,
    excludes: Sequence[str] = (),
    host: str | None = "host-0",
    tags: Sequence[str] = (),
    parent: str | Literal["auto"] | None = None,
    on_progress: Callable[[BackupProgress], None] | None = None,
    on_read: Callable[[str], None] | None = None,
    pack_size: int = PACK_SIZE,
    workers: int = 2,
    compression_level: int = COMPRESSION_LEVEL,
) -> BackupSummary:
    """Back up the absolute ``paths`` into ``repo`` and write a snapshot; what was done.

    ``parent``: a snapshot id (or prefix, or ``latest``), ``"auto"`` for the newest snapshot of the same host
    and paths, or None for none. ``host`` None means this machine's name. ``on_read`` is called with each
    file path whose content is read (for tests and diagnostics). ``workers`` threads chunk, encrypt and
    upload (so at most that many packs are written at once). ``compression_level`` is zstd's (v2 repositories): restic's
    ``auto`` is Go zstd's "default" speed; level 1 here is ~1.4x faster than level 3 on text for ~5 % more
    compressed bytes (measured on the bench dataset's logs: ratio 0.300 against 0.287).
    """
    started = time.perf_counter()
    hostname = socket.gethostname() if host is None else host
    clean = sorted({os.path.normpath(os.path.abspath(p)) for p in paths})
    for path in clean:
        if not os.path.lexists(path):
            raise BackupError(f"{path}: no such file or directory")
    parent_info: SnapshotInfo | None = None
    if parent == "auto":
        parent_info = await find_parent(repo, clean, hostname)
    elif parent is not None:
        parent_info = await repo.find_snapshot(parent)

    job = _Backup(
        repo,
        excludes=excludes,
        pack_size=pack_size,
        workers=workers,
        on_progress=on_progress,
        on_read=on_read,
        compression_level=compression_level,
    )
    finished = False
    try:
        root = await job.virtual("/", _trie(clean), parent_info.tree if parent_info else None)
        await job.flush()
        finished = True
    finally:
        if not finished:  # stop the workers (one may wait for an upload, which needs this loop running)
            job.shared.aborted.set()
            await asyncio.to_thread(job.pool.shutdown, True, cancel_futures=True)
    await job.write_index()

    try:
        username = getpass.getuser()
    except (KeyError, OSError):
        username = ""
    doc = snapshot_json(
        time=GoTime.local(time.time_ns()),
        tree=root,
        paths=clean,
        hostname=hostname,
        username=username,
        uid=os.getuid(),
        gid=os.getgid(),
        parent=parent_info.id if parent_info else None,
        excludes=excludes,
        tags=tags,
    )
    data = encode_unpacked(repo.key, doc, repo.config.version)
    snapshot_id = storage_id(data)
    await writable(repo.store).put(f"snapshots/{snapshot_id}", data)
    summary = job.summary
    summary.snapshot_id, summary.tree = snapshot_id, root
    summary.parent = parent_info.id if parent_info else None
    summary.total_duration = time.perf_counter() - started
    return summary
