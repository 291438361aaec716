"""Restoring a snapshot from a restic repository without the restic binary.

Behaves like ``restic restore <id> --target <target>``: the snapshot's root tree is recreated below
``target``, so each backed-up path appears at its full path (``/data/app`` → ``<target>/data/app``), with
modes, mtimes/atimes, symlinks, empty directories and -- when running as root -- ownership. Directory metadata
is applied last, children first, so writing into a directory never disturbs its restored mtime or mode.

Content is read pack by pack, not file by file: every data blob the restore needs is grouped by the pack that
holds it, each pack is read once as a few ranged reads (neighbouring blobs merged into one span of at most
:data:`MAX_SPAN` bytes), and its blobs are decrypted, decompressed, verified against their ids and written
(``pwrite``) into every file position that uses them. From a local repository a large restore does this in
two forked worker processes, a pack per message, each worker's next one already waiting in its pipe
(:data:`PROCESS_MIN_BYTES`, :data:`RESTORE_DEPTH`, :class:`_Processes`); otherwise a
bounded number of packs is in flight at once in threads (OpenSSL, zstd and hashlib release the GIL on large
buffers). Any blob that fails authentication or its hash raises
:class:`~kubestash.engine.native.pack.IntegrityError` naming the blob and the pack.

Speed and memory (see ``bench/engine.py``): a file with content is created (``O_TRUNC``) by its first write,
not in a serial pass before any data moves (creating thousands of files up front stalled on the file
system's journal), and its descriptor stays open until its last byte is written (at most
:data:`MAX_OPEN_FILES` at once; beyond that a write opens and closes). A blob is decrypted straight out of
the span it was read with (no per-blob copy), decompressed into one buffer of its known size, hashed, and
written from there. Worker processes cannot agree on who truncates a file, so they create files exclusively
(``O_EXCL``) and open existing ones as they are; the ones that existed before are cut to their size at the end.
The walk keeps paths as strings and of each file only its metadata (:class:`NodeMetadata`) and blob ids, not
its JSON node; the workers apply the metadata of their share of each batch's files. Data starts moving before
the walk ends: every :data:`BATCH_BYTES` of content the walk hands a batch to the workers and goes on (1 GiB
bench set, cold cache: the 0.35 s walk and 0.1 s of planning had run before any write; alternating A/B,
restore 4.6 → 4.1 s on average).

The worker processes write large blobs (:data:`DIRECT_MIN`) with ``O_DIRECT`` through
:class:`~kubestash.engine.native.direct_io.DirectRanges`: copying a gigabyte into fresh page-cache pages cost
them ~1 CPU-second of kernel time (``copy_folio_from_iter_atomic``), a fifth of the restore's CPU, and a
restore would crowd out the page cache of the applications next to it. A file with such blobs is preallocated
(``fallocate``) by the worker that creates it, so the other worker's writes into it need not wait for the
device. A worker's last writes may still be under way when it reports a pack done: the files written so get
their metadata once every worker has waited for its writes (``drain``: after the last batch, or whenever
:data:`BATCH_FILES` such files wait), so no write lands after the mtime is set.

Include/exclude patterns are a subset of restic's (``internal/filter``): a pattern is split at ``/`` and
matched component by component with :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[...]`` never cross a
``/``); ``**`` matches any number of components; a pattern not starting with ``/`` may match at any depth
(``*.txt`` matches every ``.txt`` basename); a pattern matching a directory selects everything below it.
Paths are the snapshot's full paths (``/data/app/a.txt``). Not supported: ``!`` negation, ``$VAR``
expansion, case-insensitive variants, pattern files.

Like restic 0.14, it also restores hard links (a file whose node counts several links and whose inode and
device were met before in this restore becomes a link to the first path, created after the data is in),
FIFOs, block and character devices (``mknod``: root only; otherwise each is named in a warning and left out)
and extended attributes (set before the mode, since a read-only mode could forbid it; one the target file
system refuses is named in a warning, not an error: the content is there). Sockets are not restored (restic
skips them too), nor sparse regions.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import stat as stat_mod
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from kubestash.engine.native.aio import run_all
from kubestash.engine.native.crypto import Key
from kubestash.engine.native.direct_io import DirectRanges, preallocate, pwrite_all
from kubestash.engine.native.pack import IntegrityError, PackedBlob, decode_blob, read_runs
from kubestash.engine.native.repository import Item, NativeRepository
from kubestash.engine.native.store import LocalStore, StoreError, path_of
from kubestash.engine.native.tree import (
    Node,
    NodeMetadata,
    go_unquote,
    metadata_from_json,
    node_from_json,
    unix_mode,
)
from kubestash.engine.native.workers import WorkerProcesses, fewer_collections, fork_available, tune_malloc

log = logging.getLogger(__name__)

PACK_CONCURRENCY = 3
"""Spans being read, decoded or written at once (each in its own thread): enough to keep both cores busy while
other threads wait on the file system (creating a file can wait on its journal)."""
SPAN_GAP = 1 << 20
"""Blobs of one pack closer than this are fetched in one ranged read (the gap is read and discarded)."""
MAX_SPAN = 1 << 20
"""A ranged read grows by whole blobs up to this many bytes (one larger blob is read on its own): each worker
holds one span and a decoded blob at a time (1 GiB bench set: 4 MiB spans, restore tree PSS 121 MiB; 1 MiB, 112
MiB and no slower)."""
MAX_OPEN_FILES = 256
DIRECT_WRITES = True
"""Worker processes write file content with ``O_DIRECT`` (:class:`DirectRanges`), where the filesystem takes it."""
DIRECT_MIN = 64 << 10
"""... blobs of at least this many bytes (a smaller file's page or two go through the page cache)."""
PROCESS_MIN_BYTES = 32 << 20
"""A restore from a local repository decodes and writes in worker processes (:data:`RESTORE_PROCESSES`,
forked) from the first batch with this much content on: in threads, the GIL hand-offs between them cost more
than a core's worth of the decode-and-write loop (futex wake-ups were ~13 % of a 1 GiB restore's samples)."""
RESTORE_PROCESSES = 2
RESTORE_DEPTH = 2
"""Pack messages a restore worker holds at once: its next pack is waiting in its pipe when it finishes one
(the parent, walking the tree and planning batches on its event loop, was slow to hand it over: the workers sat
idle 0.2 s each in a 2.5 s restore of the 1 GiB bench set; 0.06-0.14 s with two)."""
BATCH_FILES = 8192
"""Files restored per batch of the walk: what the restore holds in memory (~0.6 KiB each with their metadata
and write plans) whatever the snapshot's size; a pack needed by two batches is read twice, partly. (1 GiB
bench set, 20k small files: 50k a batch, restore tree PSS 108 MiB; 8192, 103 MiB, and no slower.)"""
BATCH_BYTES = 256 << 20
"""... or this much file content: a batch's data starts moving while the walk goes on finding the next."""
BATCHES_IN_FLIGHT = 2
"""Batches planned and being written while the walk goes on (their packs queue for the same workers)."""

# ---------------------------------------------------------------- tree nodes


def safe_name(node: Node | str) -> str:
    """The node's name (or ``node`` itself, a name), refused when it could escape its directory (a damaged or
    hostile tree)."""
    name = node if isinstance(node, str) else node.name
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise IntegrityError(f"tree node with an unsafe name {name!r}")
    return name


def subtree_of(node: Node) -> str:
    if not node.subtree:
        raise IntegrityError(f"directory node {node.name!r} has no subtree")
    return node.subtree


# ---------------------------------------------------------------- include / exclude


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _pattern(pattern: str) -> list[str]:
    parts = _parts(pattern)
    return parts if pattern.startswith("/") else ["**", *parts]


def _match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def _may_match_below(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Could a path below ``parts`` match? (``parts`` is a prefix of something the pattern matches.)"""
    if not parts:
        return True
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    return fnmatchcase(parts[0], pattern[0]) and _may_match_below(pattern[1:], parts[1:])


@dataclass(frozen=True)
class PathFilter:
    """restic-like include/exclude selection on snapshot paths (see the module docstring for the syntax)."""

    include: tuple[tuple[str, ...], ...] = ()
    exclude: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> PathFilter:
        return cls(tuple(tuple(_pattern(p)) for p in include), tuple(tuple(_pattern(p)) for p in exclude))

    @staticmethod
    def _matches(patterns: tuple[tuple[str, ...], ...], parts: list[str]) -> bool:
        # A pattern that matches a directory matches everything below it.
        return any(_match(p, parts[:i]) for p in patterns for i in range(1, len(parts) + 1))

    def select(self, path: str) -> tuple[bool, bool]:
        """(restore this node, descend into it if it is a directory)."""
        if not self.include and not self.exclude:
            return True, True
        parts = _parts(path)
        if self._matches(self.exclude, parts):
            return False, False
        if not self.include:
            return True, True
        if self._matches(self.include, parts):
            return True, True
        return False, any(_may_match_below(p, parts) for p in self.include)


# ---------------------------------------------------------------- restore


class _File(NamedTuple):
    """A file to restore: only what writing it and its metadata needs (the JSON node it came from is dropped:
    kept for a batch of small files it was most of the restore's memory, and every forked worker that touched
    it copied the pages it sat in)."""

    path: str
    meta: NodeMetadata
    content: list[str]


@dataclass
class _Plan:
    """What to create, by path (plain strings: ``pathlib`` cost the walk of 20k files as much as the rest)."""

    dirs: list[tuple[str, Node]] = field(default_factory=list)
    files: list[_File] = field(default_factory=list)
    specials: list[tuple[str, Node]] = field(default_factory=list)
    """Symbolic links, FIFOs and device nodes: created with their metadata before any data moves."""
    hardlinks: list[tuple[str, str]] = field(default_factory=list)
    """(path, the earlier path of the same inode): linked once that one has its data and metadata."""
    inodes: dict[tuple[int, int], str] = field(default_factory=dict)
    """(device id, inode) → the first path restored for it, of files with more than one link."""
    dirs_created: int = 0
    """How many of :attr:`dirs` exist already (created by an earlier batch)."""
    restored: int = 0
    """Files of earlier batches."""
    batch_bytes: int = 0
    """Content of :attr:`files`, by their nodes' sizes."""


class _Write(NamedTuple):
    """Where a blob goes (a named tuple: one per blob of every restored file, built several times faster than a
    frozen dataclass)."""

    path: str
    offset: int


@dataclass
class RestoreProgress:
    """Totals grow as the walk finds files (``walked``: it has found them all), done counts after every span of
    a pack is written."""

    total_files: int = 0
    total_bytes: int = 0
    files_done: int = 0
    bytes_done: int = 0
    walked: bool = False


async def restore(
    repo: NativeRepository,
    snapshot_id: str,
    target: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_progress: Callable[[RestoreProgress], None] | None = None,
    *,
    batch_files: int = BATCH_FILES,
) -> tuple[int, int]:
    """Restore snapshot ``snapshot_id`` (id, unique prefix or ``latest``) below ``target``.

    Returns (regular files restored, bytes of file content written). ``on_progress`` runs on the event loop.
    The walk hands over a batch every ``batch_files`` files or :data:`BATCH_BYTES` of content and goes on while
    it is written (data, then the files' metadata; at most :data:`BATCHES_IN_FLIGHT` at once), so memory follows
    the batches, not the snapshot; directories' metadata and hard links come last.
    """
    tune_malloc()
    snapshot = await repo.find_snapshot(snapshot_id)
    plan = _Plan()
    as_root = os.geteuid() == 0
    progress = RestoreProgress()
    await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
    processes = None
    if isinstance(repo.store, LocalStore) and fork_available():
        processes = _Processes(repo.key, repo.store.root, as_root)

    running: list[asyncio.Task[None]] = []

    async def flush() -> None:
        files, specials = plan.files, plan.specials
        plan.files, plan.specials, plan.batch_bytes = [], [], 0
        # Room is made before a batch is handed over, not after: the walk builds the next batch while the
        # ones in flight are written, so the workers find it ready when one is done (waiting after, the
        # workers sat idle while the walk read the next 8192 files' trees: ~0.1 s per batch on the bench set).
        while len(running) >= BATCHES_IN_FLIGHT or any(task.done() for task in running):
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.remove(task)
                task.result()  # a failed batch stops the restore
        plan.restored += len(files)
        write = await _restore_batch(repo, plan, files, specials, as_root, progress, on_progress, processes)
        running.append(asyncio.create_task(write))

    with fewer_collections():
        try:
            selection = PathFilter.of(include, exclude)
            await _walk(repo, snapshot.tree, "", str(target), selection, plan, flush, batch_files)
            progress.walked = True
            await flush()
            await asyncio.gather(*running)
            if processes is not None:
                await processes.finish_late()
        except BaseException:
            if processes is not None:
                processes.terminate()
            raise
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if processes is not None:
                await processes.close()
    await asyncio.to_thread(_finish_tree, plan, as_root)
    return plan.restored + len(plan.hardlinks), progress.bytes_done


async def _restore_batch(
    repo: NativeRepository,
    plan: _Plan,
    batch: list[_File],
    specials: list[tuple[str, Node]],
    as_root: bool,
    progress: RestoreProgress,
    on_progress: Callable[[RestoreProgress], None] | None,
    processes: _Processes | None,
) -> Coroutine[Any, Any, None]:
    """Create a batch's directories, empty files, symlinks and special files; what fills and finishes its
    files, to run while the walk goes on."""
    writes: dict[str, dict[PackedBlob, list[_Write]]] = defaultdict(lambda: defaultdict(list))
    total = 0
    remaining: dict[str, int] = {}
    index = repo.index
    for path, _, content in batch:
        offset = 0
        for blob_id in content:
            entry = index.get(blob_id) or repo.lookup(str(blob_id))
            if entry.blob.type != "data":
                raise IntegrityError(f"{path}: content blob {blob_id} is a {entry.blob.type} blob")
            writes[entry.pack_id][entry.blob].append(_Write(path, offset))
            offset += entry.blob.plaintext_length
        total += offset
        remaining[path] = offset
    empty = {path for path, size in remaining.items() if size == 0}
    await asyncio.to_thread(_create_entries, plan, batch, specials, as_root, empty)
    metas = [(path, meta) for path, meta, _ in batch]
    progress.total_files += len(batch)
    progress.total_bytes += total
    progress.files_done += len(empty)
    if on_progress is not None:
        on_progress(progress)

    # ``written`` counts ``remaining`` down as packs are done: the writers get copies taken before any is.
    def written(done: list[tuple[str, int]]) -> None:
        for path, size in done:
            left = remaining[path] = remaining[path] - size
            progress.bytes_done += size
            progress.files_done += left == 0
        if on_progress is not None:
            on_progress(progress)

    if processes is not None and (processes.started or total >= PROCESS_MIN_BYTES):
        processes.get()  # forked before the walk goes on
        return _write_in_processes(processes, metas, dict(remaining), writes, written)
    return _write_in_threads(repo, metas, as_root, writes, written, _Files(dict(remaining)))


async def _write_in_threads(
    repo: NativeRepository,
    batch: list[tuple[str, NodeMetadata]],
    as_root: bool,
    writes: dict[str, dict[PackedBlob, list[_Write]]],
    written: Callable[[list[tuple[str, int]]], None],
    files: _Files,
) -> None:
    limit = asyncio.Semaphore(PACK_CONCURRENCY)
    executor = ThreadPoolExecutor(PACK_CONCURRENCY, thread_name_prefix="native-restore")

    async def one_pack(pack_id: str, blobs: dict[PackedBlob, list[_Write]]) -> None:
        async with limit:
            await _restore_from_pack(repo, pack_id, blobs, written, files, executor)

    try:
        await run_all(one_pack(pack_id, blobs) for pack_id, blobs in writes.items())
    finally:
        files.close()
        executor.shutdown(wait=False, cancel_futures=True)
    await asyncio.to_thread(_finish_files, batch, as_root, {})


async def _walk(
    repo: NativeRepository,
    tree_id: str,
    prefix: str,
    directory: str,
    selection: PathFilter,
    plan: _Plan,
    flush: Callable[[], Awaitable[None]],
    batch_files: int,
) -> None:
    for item in await repo.load_tree_items(tree_id):
        name = safe_name(go_unquote(str(item.get("name", ""))))
        snapshot_path = f"{prefix}/{name}"
        selected, descend = selection.select(snapshot_path)
        kind = item.get("type")
        path = f"{directory}/{name}"
        if kind == "dir":
            node = _parsed(item, f"tree {tree_id}")
            if selected:
                plan.dirs.append((path, node))
            if descend:
                await _walk(repo, subtree_of(node), snapshot_path, path, selection, plan, flush, batch_files)
        elif not selected:
            continue
        elif kind == "file":
            content = item.get("content")
            if content is not None and not (isinstance(content, list) and all(isinstance(b, str) for b in content)):
                raise IntegrityError(f"tree {tree_id}: file {name!r} has no list of blob ids")
            if _is_int(item.get("links")) and item["links"] > 1 and _is_int(item.get("inode")):
                same = plan.inodes.setdefault((int(item.get("device_id") or 0), item["inode"]), path)
                if same != path:
                    plan.hardlinks.append((path, same))
                    continue
            plan.files.append(_File(path, _metadata(item, path), content or []))
            size = item.get("size")
            plan.batch_bytes += size if isinstance(size, int) else 0
            if len(plan.files) >= batch_files or plan.batch_bytes >= BATCH_BYTES:
                await flush()
        elif kind in ("symlink", "fifo", "dev", "chardev"):
            plan.specials.append((path, _parsed(item, f"tree {tree_id}")))
        # socket: not restored (see the module docstring).


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parsed(item: Item, where: str) -> Node:
    try:
        return node_from_json(item)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{where}: not a valid tree node: {exc}") from None


def _metadata(item: Item, where: str) -> NodeMetadata:
    try:
        return metadata_from_json(item)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{where}: not a valid tree node: {exc}") from None


def _create_entries(
    plan: _Plan, files: list[_File], specials: list[tuple[str, Node]], as_root: bool, empty: set[str]
) -> None:
    """Directories, the ``empty`` files (no content to write: nothing else creates them), symlinks and special
    files."""
    made: set[str] = set()
    for path, _ in plan.dirs[plan.dirs_created :]:
        os.makedirs(path, mode=0o700, exist_ok=True)
        made.add(path)
    plan.dirs_created = len(plan.dirs)
    for path, _, _ in files:
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            made.add(parent)
        if path in empty:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.close(fd)
    for path, node in specials:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _make_room(path)
        if node.type == "symlink":
            os.symlink(node.linktarget, path)
            if as_root:
                os.lchown(path, node.uid, node.gid)
            meta = NodeMetadata.of(node)
            _set_xattrs(path, meta)
            os.utime(path, ns=meta.times_ns, follow_symlinks=False)
            continue
        if node.type == "fifo":
            os.mkfifo(path, 0o600)
        elif as_root:
            os.mknod(path, 0o600 | (stat_mod.S_IFBLK if node.type == "dev" else stat_mod.S_IFCHR), node.device)
        else:
            log.warning("not restoring device node %s: creating one needs root", path)
            continue
        _apply(path, NodeMetadata.of(node), as_root)


class _Files:
    """The files being written: each is created (truncated) by its first write and its descriptor kept until
    its last byte is written (``remaining`` counts down). Writer threads share it; after :meth:`close` (a
    failed or cancelled restore) a write raises, and the last write still running closes what is open."""

    def __init__(self, remaining: dict[str, int]) -> None:
        self.remaining = remaining
        self.fds: dict[str, int] = {}
        self.created: set[str] = set()
        self.opening: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()
        self.active = 0
        self.closed = False

    def write(self, path: str, data: bytes, offset: int) -> None:
        with self.lock:
            if self.closed:
                raise IntegrityError("restore stopped")
            self.active += 1
            fd = self.fds.get(path)
            opening = self.opening.setdefault(path, threading.Lock()) if fd is None else None
        cached = fd is not None
        try:
            if opening is not None:
                # Opened outside the shared lock (creating a file may wait on the file system's journal, and
                # the other threads' files need not wait with it); only the writes to this file wait here.
                with opening:
                    with self.lock:
                        fd = self.fds.get(path)
                    cached = fd is not None
                    if fd is None:
                        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                        if path not in self.created:
                            flags |= os.O_CREAT | os.O_TRUNC
                        fd = os.open(path, flags, 0o600)
                        with self.lock:
                            self.created.add(path)
                            if len(self.fds) < MAX_OPEN_FILES:
                                self.fds[path] = fd
                                cached = True
            assert fd is not None
            pwrite_all(path, fd, data, offset)
        finally:
            if fd is not None and not cached:
                os.close(fd)
            with self.lock:
                self.active -= 1
                left = self.remaining[path] = self.remaining[path] - len(data)
                if left <= 0:
                    self.opening.pop(path, None)
                    if path in self.fds:
                        # Every write to this file has finished (each counts down after its pwrite): safe to close.
                        os.close(self.fds.pop(path))
                if self.closed and not self.active:
                    self._close_all()

    def close(self) -> None:
        """No more writes; close what is open now, or when the writes still running are done."""
        with self.lock:
            self.closed = True
            if not self.active:
                self._close_all()

    def _close_all(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


async def _restore_from_pack(
    repo: NativeRepository,
    pack_id: str,
    blobs: dict[PackedBlob, list[_Write]],
    written: Callable[[list[tuple[str, int]]], None],
    files: _Files,
    executor: ThreadPoolExecutor,
) -> None:
    loop = asyncio.get_running_loop()
    for run in read_runs(blobs, MAX_SPAN, SPAN_GAP):
        start = run[0].offset
        end = run[-1].offset + run[-1].length
        data = await repo.store.get_range(path_of("data", pack_id), start, end - start)
        work = functools.partial(_decode_and_write, repo.key, pack_id, start, data, run, blobs, files)
        del data
        written(await loop.run_in_executor(executor, work))


def _decode_and_write(
    key: Key,
    pack_id: str,
    start: int,
    data: bytes,
    run: list[PackedBlob],
    writes: dict[PackedBlob, list[_Write]],
    files: _Files | _ExclusiveFiles,
) -> list[tuple[str, int]]:
    """Decode the blobs of ``run`` and write them; (file, bytes) for every write made."""
    done: list[tuple[str, int]] = []
    with memoryview(data) as view:
        for blob in run:
            at = blob.offset - start
            plain = decode_blob(key, blob, view[at : at + blob.length], pack_id)
            for write in writes[blob]:
                files.write(write.path, plain, write.offset)
                done.append((write.path, len(plain)))
    return done


async def _write_in_processes(
    processes: _Processes,
    batch: list[tuple[str, NodeMetadata]],
    sizes: dict[str, int],
    writes: dict[str, dict[PackedBlob, list[_Write]]],
    written: Callable[[list[tuple[str, int]]], None],
) -> None:
    """Decode and write a batch's packs in the worker processes, a pack per message; then each worker applies
    the metadata of its share of the batch's files. Files written with ``O_DIRECT`` get theirs after the last
    batch (:meth:`_Processes.finish_late`): a worker's last writes to them may still be under way."""
    procs = processes.get()
    existed: set[str] = set()
    direct: set[str] = set()

    async def one_pack(pack_id: str, blobs: dict[PackedBlob, list[_Write]]) -> None:
        # Only files with a blob large enough to go direct are preallocated: one test per blob, not per write.
        large = {w.path: sizes[w.path] for blob, ws in blobs.items() if blob.plaintext_length >= DIRECT_MIN for w in ws}
        done, found, wrote_direct = await procs.call(lambda _worker: ("pack", pack_id, blobs, large))
        existed.update(found)
        direct.update(wrote_direct)
        written(done)

    await run_all(one_pack(pack_id, blobs) for pack_id, blobs in writes.items())
    now = [(path, meta) for path, meta in batch if path not in direct]
    processes.late += [(path, meta) for path, meta in batch if path in direct]
    processes.late_existed.update((path, sizes[path]) for path in existed if path in direct)
    await _finish_in_processes(procs, now, {path: sizes[path] for path in existed if path not in direct})
    if len(processes.late) >= BATCH_FILES:
        await processes.finish_late()  # memory follows the batches, not the snapshot


async def _finish_in_processes(
    procs: WorkerProcesses, files: list[tuple[str, NodeMetadata]], existed: dict[str, int]
) -> None:
    """Each worker applies the metadata of its share of ``files`` (the ``existed`` ones first cut to size)."""

    def finish(share: list[tuple[str, NodeMetadata]]) -> Callable[[int], tuple[Any, ...]]:
        message = ("finish", share, {path: existed[path] for path, _ in share if path in existed})
        return lambda _worker: message

    size = max(1, -(-len(files) // len(procs)))
    await run_all(procs.call(finish(files[at : at + size])) for at in range(0, len(files), size))


class _Processes:
    """A local restore's worker processes: forked by the first batch with :data:`PROCESS_MIN_BYTES` of content and
    kept for the batches after it, which send them their files' metadata (pickled) when their data is in.

    Forked once, they share with the parent only the pages it had then. A pair forked per batch inherited its
    batch for free, but kept the whole parent heap of that moment while the parent went on changing its own copy:
    with two batches in flight, three copies (1 GiB bench set: tree PSS 164 MiB, restic's 106)."""

    def __init__(self, key: Key, root: Path, as_root: bool) -> None:
        self.handler = _ProcessWrites(key, root, as_root)
        self.procs: WorkerProcesses | None = None
        self.late: list[tuple[str, NodeMetadata]] = []
        """Files written with ``O_DIRECT``, to finish once every worker's writes are done."""
        self.late_existed: dict[str, int] = {}

    @property
    def started(self) -> bool:
        return self.procs is not None

    def get(self) -> WorkerProcesses:
        if self.procs is None:
            self.procs = WorkerProcesses(
                RESTORE_PROCESSES, self.handler.handle, name="native-restore", depth=RESTORE_DEPTH
            )
        return self.procs

    def terminate(self) -> None:
        if self.procs is not None:
            self.procs.terminate()
            self.procs.wake_waiters()
            self.procs = None

    async def finish_late(self) -> None:
        """Wait for every worker's writes, then apply the metadata of the files written with ``O_DIRECT`` (after
        the last batch, or whenever :data:`BATCH_FILES` of them wait: each drain idles a worker until the other
        is done with its pack)."""
        late, existed = self.late, self.late_existed
        self.late, self.late_existed = [], {}
        if self.procs is not None and late:
            await self.procs.broadcast(("drain",))
            await _finish_in_processes(self.procs, late, existed)

    async def close(self) -> None:
        if self.procs is not None:
            procs, self.procs = self.procs, None
            await procs.close()


class _ProcessWrites:
    """A restore worker process's job: read a pack's wanted spans from the local repository, decode each blob
    and write it wherever it goes. Files are opened without ``O_TRUNC`` (another process may be writing the
    same file); one that existed already is reported, and cut to its size before its metadata is applied
    (``finish``, with the files of a batch whose data is in)."""

    def __init__(self, key: Key, root: Path, as_root: bool) -> None:
        self.key = key
        self.root = root
        self.as_root = as_root
        self.direct: DirectRanges | None = None

    def handle(self, message: tuple[Any, ...]) -> tuple[list[tuple[str, int]], list[str], list[str]] | None:
        if message[0] == "finish":
            _, files, sizes = message
            _finish_files(files, self.as_root, sizes)
            return None
        if message[0] == "drain":
            if self.direct is not None:
                self.direct.flush()
            return None
        _, pack_id, blobs, sizes = message
        done: list[tuple[str, int]] = []
        if self.direct is None and DIRECT_WRITES:
            self.direct = DirectRanges()  # here, in the worker: its writer thread would not survive a fork
        files = _ExclusiveFiles(self.direct, sizes)
        try:
            with self._open_pack(pack_id) as pack:
                for run in read_runs(blobs, MAX_SPAN, SPAN_GAP):
                    start = run[0].offset
                    data = self._read(pack, pack_id, start, run[-1].offset + run[-1].length - start)
                    done += _decode_and_write(self.key, pack_id, start, data, run, blobs, files)
        finally:
            files.close()
        return done, files.existed, list(files.direct_paths)

    def _open_pack(self, pack_id: str) -> BinaryIO:
        try:
            return open(self.root / path_of("data", pack_id), "rb", buffering=0)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot read {path_of('data', pack_id)}: {e.strerror or e}") from None

    def _read(self, pack: BinaryIO, pack_id: str, start: int, length: int) -> bytes:
        try:
            return os.pread(pack.fileno(), length, start)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot read {path_of('data', pack_id)}: {e.strerror or e}") from None


class _ExclusiveFiles:
    """A restore worker's files for one pack (:meth:`write` as :class:`_Files`'s): created with ``O_EXCL``,
    or opened as they are when they exist (named in :attr:`existed`); at most :data:`MAX_OPEN_FILES` open.
    With ``direct``, blobs of :data:`DIRECT_MIN` bytes or more go through it (see :class:`DirectRanges`;
    their files named in :attr:`direct_paths`), and a file of ``sizes`` it creates is first preallocated."""

    def __init__(self, direct: DirectRanges | None = None, sizes: dict[str, int] | None = None) -> None:
        self.fds: dict[str, tuple[int, int]] = {}
        self.existed: list[str] = []
        self.direct = direct
        self.sizes = sizes or {}
        self.direct_paths: set[str] = set()

    def write(self, path: str, data: bytes, offset: int) -> None:
        fds = self.fds.get(path)
        if fds is None:
            if len(self.fds) >= MAX_OPEN_FILES:
                self.close()
            fds = self.fds[path] = (self._open(path), -1)
        direct = self.direct
        if direct is None or not direct.usable or len(data) < DIRECT_MIN:
            pwrite_all(path, fds[0], data, offset)
            return
        if fds[1] < 0:
            try:
                dfd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECT)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                direct.usable = False  # this filesystem refuses O_DIRECT
                pwrite_all(path, fds[0], data, offset)
                return
            fds = self.fds[path] = (fds[0], dfd)
            self.direct_paths.add(path)
        direct.write(path, fds[0], fds[1], data, offset)

    def _open(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            self.existed.append(path)
            return os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        size = self.sizes.get(path)
        if size:
            preallocate(fd, size)
        return fd

    def close(self) -> None:
        """Close the files (those with writes still under way, once they are done)."""
        for fd, dfd in self.fds.values():
            if dfd >= 0 and self.direct is not None:
                self.direct.release(fd, dfd)
            else:
                os.close(fd)
        self.fds.clear()


def _finish_files(files: list[tuple[str, NodeMetadata]], as_root: bool, existed: dict[str, int]) -> None:
    """Mode, owner and times of ``files``, the ones that ``existed`` before first cut to their size (which sets
    mtime)."""
    for path, meta in files:
        size = existed.get(path)
        if size is not None:
            os.truncate(path, size)
        _apply(path, meta, as_root)


def _finish_tree(plan: _Plan, as_root: bool) -> None:
    """Hard links (their first path now has its data and metadata), then directories' metadata, deepest first,
    so restoring a directory's mtime comes after every change inside it."""
    for path, same in plan.hardlinks:
        _make_room(path)
        os.link(same, path)
    for path, node in sorted(plan.dirs, key=lambda item: item[0].count("/"), reverse=True):
        _apply(path, NodeMetadata.of(node), as_root)


def _make_room(path: str) -> None:
    """Remove what an earlier restore left at ``path`` (a link or node is made, not written into)."""
    if os.path.lexists(path):
        os.unlink(path)


def _apply(path: str, meta: NodeMetadata, as_root: bool) -> None:
    if as_root:
        os.chown(path, meta.uid, meta.gid)
    _set_xattrs(path, meta)
    os.chmod(path, unix_mode(meta.mode))
    os.utime(path, ns=meta.times_ns)


def _set_xattrs(path: str, meta: NodeMetadata) -> None:
    for attr in meta.extended_attributes:
        try:
            os.setxattr(path, attr.name, attr.value, follow_symlinks=False)
        except OSError as e:
            log.warning("not restoring extended attribute %s of %s: %s", attr.name, path, e.strerror or e)
