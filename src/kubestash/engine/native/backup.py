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
  interrupted run leaves only unreferenced packs, which ``restic check`` merely reports. Unlike restic 0.14
  (which re-uploads such data), two things keep a crash cheap: an index file is written every
  ``index_every`` packs or ``index_interval`` seconds during the run (so a kill loses the index of the
  last few packs only), and every backup first *recovers* packs that are in ``data/`` but in no index
  (:func:`recover_packs`: one LIST, then only those packs' headers are read), so their blobs dedup.

Concurrency: the event loop coordinates the walk; files that must be read go, in batches per directory, to
workers that read, chunk (FastCDC, :mod:`.chunker`), hash, compress and encrypt, each filling its own data
:class:`PackWriter`, and build the files' nodes.

- On a local store (the default there, ``processes=None``): ``workers`` *processes* (:mod:`.workers`),
  forked when the first directory is scanned, so they inherit the key and the index. A worker also *scans*
  each directory (``listdir``, ``lstat``, the comparison with the parent tree it reads from the pack file
  itself, the nodes' JSON, with unchanged nodes' text cut out of the parent's blob, and the changed files of
  up to :data:`INLINE_READ_BYTES`); the coordinator keeps only what needs the whole picture (subdirectories,
  batches of larger changed files, the tree blobs). Per entry this was the coordinator's Python and it capped
  an incremental backup at one core: measured on the 1 GiB bench set with 5 % of its files changed, the
  coordinator's CPU went from 0.56-0.59 s to 0.08 s and the backup from 0.78-0.83 s to 0.51-0.56 s.
  A batch crosses the process boundary as paths and ``lstat`` results; what comes back is the nodes
  (content lists) and the ids and blob lists of the packs the worker wrote meanwhile -- a worker writes its
  full packs into ``data/`` itself (atomic, fsynced), never sending bulk data through a pipe. The parent
  indexes a pack only once its worker has reported it, so the order packs → index → snapshot holds; a pack
  written but not yet reported when the run dies is left to :func:`recover_packs`. Each message to a worker
  carries the blob ids the other workers stored since its last one, so a blob is stored twice only when two
  workers meet it at the same moment (a harmless duplicate: restic reads either, prune drops one). Aborting
  (an error, cancellation) kills the workers at once; they also die with the parent (``PR_SET_PDEATHSIG``).
  Why processes: in one process the GIL-holding parts (FastCDC's loop, Python per chunk and per file, node
  building) serialised two threads to ~1 core; two processes use both (measured: ``bench/engine.py``).
- On a remote store (:class:`~.store.BackendStore`), and for ``processes=False``: a pool of worker
  *threads* as before. A worker whose pack is full uploads it (through the event loop: the object store
  client lives there and cannot be shared with a forked process) and waits, which gives back-pressure and
  bounds memory to about ``workers x (2 x pack_size + read window + largest chunk)``.

Memory: a pack is built in one buffer, each blob encrypted in place (:class:`PackWriter`); chunks are
hashed and compressed straight out of the read window (no per-chunk copy); and :func:`.workers.tune_malloc`
keeps glibc from holding on to freed pack-sized buffers.

Excludes (a documented subset of restic's ``--exclude``): a pattern is split at ``/``; an absolute pattern
(``/data/cache``) must match the path's leading components, a relative one (``*.tmp``, ``cache/*.bin``) its
trailing components; each component is an ``fnmatch`` glob (``*``, ``?``, ``[...]``). ``**`` is not
supported. An excluded directory is not descended into.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import getpass
import hashlib
import io
import logging
import mmap
import os
import socket
import stat as stat_mod
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from kubestash.backends.base import BackendError
from kubestash.engine.native.chunker import MAX_SIZE as CHUNK_MAX_SIZE
from kubestash.engine.native.chunker import boundaries
from kubestash.engine.native.chunker import preload as preload_chunker
from kubestash.engine.native.crypto import CryptoError
from kubestash.engine.native.direct_io import DirectWriter, Staged
from kubestash.engine.native.files import encode_unpacked, storage_id
from kubestash.engine.native.index import DiskIndex, IndexEntry
from kubestash.engine.native.pack import (
    HEADER_LENGTH_SIZE,
    IntegrityError,
    PackedBlob,
    decode_blob,
    header_length,
    parse_header,
    read_header,
)
from kubestash.engine.native.packer import DATA, TREE, Pack, PackWriter, index_json, snapshot_json
from kubestash.engine.native.repository import Item, NativeRepository, SnapshotInfo, tree_items
from kubestash.engine.native.store import LocalStore, StoreError, list_sizes, path_of, writable
from kubestash.engine.native.tree import (
    GoTime,
    Node,
    encode_node,
    go_file_mode,
    go_unquote,
    item_json,
    local_offset,
    node_from_json,
    node_from_stat,
    node_texts,
    parse_go_text,
    sort_key,
    tree_blob,
)
from kubestash.engine.native.workers import WorkerProcesses, fork_available, tune_malloc

PACK_SIZE = 16 * 1024 * 1024
READ_WINDOW = 4 * 1024 * 1024
BATCH_BYTES = 8 * 1024 * 1024  # files of a directory handed to a worker together, up to this many bytes
BATCH_FILES = 64  # ... or this many files
INLINE_READ_BYTES = 4 * 1024 * 1024
"""Changed files a worker reads while it scans their directory, up to this many bytes per directory; the
rest go out in batches, so one directory of large files still keeps every worker busy."""
DIR_CONCURRENCY = 8
"""Subdirectories of one directory walked at the same time (see ``_Backup.directory``)."""
WORKER_DEPTH = 2
"""Messages (directory scans, batches of files) a worker process holds at once: the next waits in its pipe
while it works, instead of the worker waiting for the parent's event loop to get round to it after each reply
(1 GiB bench set, alternating pairs: unchanged incremental 0.26 → 0.23 s of backup, 5 %-changed 0.59 → 0.52 s,
the first backup unchanged). Each message carries the blob ids other workers stored since the worker's
previous one, so a message queued earlier knows a little less: no extra blob was stored in those runs."""
COMPRESSION_LEVEL = 1
INDEX_MAX_BLOBS = 50_000
ADDED_TRIM = 50_000
"""With the index on disk, a worker process drops the ids of other workers' blobs that are indexed meanwhile
once it remembers more than this many (then more than twice what is left)."""
INDEX_EVERY = 64
"""Write an index file after this many uploaded packs (1 GiB at the default pack size): bounds what a crash
leaves unindexed on a fast link, where the time limit below would let many GiB pile up."""
INDEX_INTERVAL = 120.0
"""... or after this many seconds since the last one. Each index file is one more PUT, and one more GET on
every later repository open until a prune merges them, so not much more often than restic's own (at most
every 10 min or 50,000 blobs); recovery (:func:`recover_packs`) covers whatever a crash leaves unindexed
anyway, at one ranged read per pack."""
JOBS_IN_FLIGHT = 4
"""Writes a worker process has handed to its writer thread (a spilled piece of a pack, or a pack's tail + fsync
+ rename) while it goes on chunking; each holds a staging buffer of about a megabyte until written."""
RECOVER_CONCURRENCY = 8
"""Pack headers read at the same time while recovering unindexed packs."""
_TAIL_READ = 64 * 1024  # first ranged read of an unindexed pack's tail: the header of ~1,500 blobs
log = logging.getLogger(__name__)


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
    packs_recovered: int = 0
    """Unindexed packs (a crashed or concurrent backup's) indexed at the start so their blobs dedup."""
    index_files: int = 0
    """Index files this run wrote (periodic, final and recovery ones)."""
    unreadable: list[str] = field(default_factory=list)
    """``path: reason`` of every file that could not be read and is not in the snapshot (restic's exit 3)."""


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
class DirScan:
    """A directory as :meth:`_Shared.scan_directory` found it, for the coordinator to complete."""

    names: list[str]
    subdirs: list[tuple[int, str, os.stat_result, Item | None]]
    """(position, path, lstat, the parent's node) of each subdirectory, for the coordinator to walk."""
    to_read: list[tuple[int, str, os.stat_result, bool]]
    """(position, path, lstat, whether the parent had it) of each file still to read."""
    read: list[tuple[str, int, bool]]
    """(path, size, whether the parent had it) of each file read during the scan."""
    unmodified: list[int]
    """Sizes of the files kept from the parent unread."""
    texts: list[str | None] | None = None
    """Each entry's node JSON, None where the coordinator fills it in (subdirectories, files to read); the
    whole list None when every entry but the subdirectories is the parent's own, names and all (the parent's
    tree is then reused if the subdirectories come out unchanged too)."""


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
    unreadable: list[str] = field(default_factory=list)
    excludes: tuple[str, ...] = ()

    @property
    def local_store(self) -> bool:
        """Packs may be handed to the store as ``bytearray`` (see :meth:`PackWriter.finish`)."""
        return isinstance(self.repo.store, LocalStore)

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

    def file_nodes(self, files: list[tuple[str, os.stat_result]]) -> list[Node | None]:
        """Read and store each file; their nodes (built here too, off the event loop). A file that cannot be
        read is left out (None) and named in :attr:`unreadable`, as restic skips it and reports it."""
        nodes: list[Node | None] = []
        for path, st in files:
            try:
                node = node_from_stat(path, st, content=self.chunk_file(path, st.st_size))
                encode_node(node)  # here, in a worker, rather than in the parent writing the tree
                nodes.append(node)
            except OSError as e:
                with self.lock:
                    self.unreadable.append(f"{path}: {e.strerror or e}")
                nodes.append(None)
        return nodes

    def known_content(self, item: Item) -> bool:
        content = item.get("content")
        return isinstance(content, list) and all(isinstance(b, str) and self.known(b) for b in content)

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
            and all(self.known(b) for b in previous.content)
        ):
            return previous.content
        return None

    def unread(self, full: str, st: os.stat_result, previous: Item | None) -> Node | Item | None:
        """A file's node without reading it: the parent's own (unchanged, not even parsed), or rebuilt around the
        parent's content (unchanged by restic's rule only); None if the file must be read."""
        if previous is not None and _unchanged(previous, st, file=True) and self.known_content(previous):
            return previous
        content = self.reusable(st, _node(previous))
        return None if content is None else node_from_stat(full, st, content=content)

    def scan_directory(self, path: str, previous: dict[str, Item], raw: dict[str, str], inline_bytes: int) -> DirScan:
        """List and ``lstat`` directory ``path``, keep what the parent tree (``previous``, by name; ``raw``: their
        texts) has unchanged, read changed files of up to ``inline_bytes`` in all here (the rest is left to
        :meth:`_Backup.read_files`, which spreads them over the workers) and encode the nodes. Runs in a worker
        process, so the walk's per-entry Python is spread over the workers too (in one process it kept a core
        busy on its own)."""
        names = sorted(os.listdir(path), key=lambda n: n.encode("utf-8", "surrogateescape"))
        scan = DirScan([], [], [], [], [])
        own: list[Node | Item | None] = []
        reused = bool(previous)
        for name in names:
            full = os.path.join(path, name)
            if self.excludes and excluded(full, self.excludes):
                continue
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # vanished since listdir
            prev = previous.get(name)
            node: Node | Item | None
            if stat_mod.S_ISDIR(st.st_mode):
                scan.subdirs.append((len(own), full, st, prev))
                node = None
            elif stat_mod.S_ISREG(st.st_mode):
                node = self.unread(full, st, prev)
                if node is None and st.st_size <= inline_bytes:
                    inline_bytes -= st.st_size
                    (node,) = self.file_nodes([(full, st)])
                    if node is None:
                        continue  # unreadable: left out, named in self.unreadable
                    scan.read.append((full, st.st_size, prev is not None))
                elif node is None:
                    scan.to_read.append((len(own), full, st, prev is not None))
                else:
                    scan.unmodified.append(st.st_size)
            else:
                node = node_from_stat(full, st)
            reused = reused and (node is prev or (node is None and stat_mod.S_ISDIR(st.st_mode)))
            scan.names.append(name)
            own.append(node)
        if not (reused and len(own) == len(previous)):
            scan.texts = [
                None if node is None else _encoded(node, raw.get(name))[1]
                for name, node in zip(scan.names, own, strict=True)
            ]
        return scan

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
        with io.FileIO(open_for_reading(path), "rb", closefd=True) as f:
            if size_hint < READ_WINDOW:  # the common case: one read of the whole file
                data = os.read(f.fileno(), size_hint + 1)
                if len(data) != size_hint:  # changed since its lstat, or a short read: on, up to a window
                    data += _read_full(f, READ_WINDOW - len(data))
                if len(data) < READ_WINDOW:
                    for offset, length in boundaries(data):
                        self.store_chunk(data[offset : offset + length], content)
                    return content
                buffer = bytearray(data)  # it grew: go on in windows
                del data
                while True:
                    data = _read_full(f, READ_WINDOW)
                    eof = len(data) < READ_WINDOW
                    buffer += data
                    del data
                    buffer = self.chunk_window(buffer, eof, content)
                    if eof:
                        return content
            self.chunk_windows(f, content)
        return content

    def chunk_windows(self, f: io.FileIO, content: list[str]) -> None:
        """:meth:`chunk_file` of a large file: each window is read (``readinto``) straight into one buffer
        behind the carry, chunks are stored from that buffer, the carry moves to its front."""
        window: mmap.mmap | None = getattr(self.local, "window", None)
        if window is None:  # anonymous memory: pages cost RAM once read into, not up front (bytearray zeroes)
            window = self.local.window = mmap.mmap(-1, READ_WINDOW + CHUNK_MAX_SIZE)
        filled = 0
        eof = False
        while not eof:
            with memoryview(window) as view:
                target = filled + READ_WINDOW
                while filled < target:
                    n = f.readinto(view[filled:target])
                    if not n:
                        eof = True
                        break
                    filled += n
                cuts = boundaries(view[:filled])
                if not eof:
                    cuts.pop()  # may continue in the next window: carried over
                for offset, length in cuts:
                    self.store_chunk(view[offset : offset + length], content)
            consumed = cuts[-1][0] + cuts[-1][1] if cuts else 0
            if consumed:
                window[: filled - consumed] = window[consumed:filled]  # the carry (at most one chunk)
                filled -= consumed

    def chunk_window(self, buffer: bytearray, eof: bool, content: list[str]) -> bytearray:
        """Store the chunks of ``buffer`` (a window of a file or stream, after the previous window's carry);
        what is left to carry into the next window. Unless ``eof``, the last chunk is not stored: it may go on
        in the next window, so chunking window by window cuts exactly where chunking everything at once would.
        """
        if not buffer:
            return buffer
        cuts = boundaries(buffer)
        if not eof:
            cuts.pop()  # may continue in the next window: carried over
        with memoryview(buffer) as view:
            for offset, length in cuts:
                self.store_chunk(view[offset : offset + length], content)  # hashed, compressed, copied in place
        if cuts:
            del buffer[: cuts[-1][0] + cuts[-1][1]]
        return buffer

    def store_chunk(self, chunk: bytes | memoryview, content: list[str]) -> None:
        blob_id = hashlib.sha256(chunk).hexdigest()
        content.append(blob_id)
        if self.claim(blob_id):
            writer = self.writer()
            writer.add(DATA, chunk, blob_id)
            if writer.size >= self.pack_size:
                pack = writer.finish(as_bytes=not self.local_store)
                self.ship(pack)  # returns once the bytes are written (or uploaded)
                writer.recycle(pack.data)


class _ProcessShared(_Shared):
    """:class:`_Shared` inside a worker process (see :class:`~.workers.WorkerProcesses`): it reads, chunks and
    stores files like a worker thread, but writes its packs to the local repository itself and reports them
    (ids and blob lists, never bytes) with the nodes; the parent indexes them (after they are on disk)."""

    def __init__(
        self,
        repo: NativeRepository,
        store: LocalStore,
        pack_size: int,
        compression_level: int,
        excludes: tuple[str, ...],
    ) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(repo, pack_size, loop, _no_upload, None, compression_level, excludes=excludes)
        self.store = store
        self.trim_at = ADDED_TRIM
        self.finished: list[tuple[Pack, int]] = []
        self.jobs: deque[Future[tuple[Pack, int] | None]] = deque()
        """Writes handed to the writer thread, in order: pieces of the open pack file (None), finished packs."""
        self.syncer: ThreadPoolExecutor | None = None  # started in the worker process, on its first pack
        self.direct = DirectWriter()
        self.open_file: tuple[int, str] | None = None
        self.spilled = 0

    def writer(self) -> PackWriter:
        """The pack writer of this process: it spills the pack into its temporary file as it grows."""
        writer: PackWriter | None = getattr(self.local, "writer", None)
        if writer is None:
            writer = PackWriter(
                self.repo.key, self.repo.config.version, compression_level=self.compression_level, spill=self.spill
            )
            self.local.writer = writer
        return writer

    def spill(self, piece: memoryview) -> None:
        """A piece of the pack being built: to its temporary file, on the writer thread."""
        fd, tmp = self.pack_file()
        self.submit(self._write_piece, fd, tmp, self.stage(piece))
        self.spilled += len(piece)

    def _write_piece(self, fd: int, tmp: str, staged: Staged) -> None:
        try:
            self.direct.write(fd, staged)
        except OSError as e:
            raise StoreError(f"{self.store.root}: cannot write {tmp}: {e.strerror or e}") from None

    def ship(self, pack: Pack) -> None:
        """Finish the pack file as :meth:`LocalStore.put` does (fsync, read-only, rename; the bytes spilled so
        far are already in it), on the writer thread while this process chunks on; it is reported once it is
        under its final name. Writes bypass the page cache where the filesystem allows (:mod:`~.direct_io`)."""
        fd, tmp = self.pack_file()
        target = self.store.root / pack.path
        uploaded = (Pack(pack.id, b"", pack.blobs), self.spilled + len(pack.data))
        self.submit(self._finish_pack, fd, tmp, target, self.stage(pack.data), uploaded)
        self.open_file, self.spilled = None, 0

    def pack_file(self) -> tuple[int, str]:
        """The temporary file of the pack being built (its name, hence its directory, is not known yet: the
        file waits in ``data/00/`` and is renamed into place)."""
        if self.open_file is None:
            directory = self.store.root / "data" / "00"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                self.open_file = tempfile.mkstemp(prefix=".tmp-", dir=directory)
            except OSError as e:
                raise StoreError(f"{self.store.root}: cannot write a pack: {e.strerror or e}") from None
        return self.open_file

    def stage(self, data: bytes | memoryview) -> Staged:
        """``data`` copied into a staging buffer, once at most :data:`JOBS_IN_FLIGHT` writes wait before it."""
        self.harvest(wait=len(self.jobs) - JOBS_IN_FLIGHT + 1)
        return self.direct.stage(data)

    def submit(self, job: Callable[..., tuple[Pack, int] | None], *args: Any) -> None:
        if self.syncer is None:
            self.syncer = ThreadPoolExecutor(1, thread_name_prefix="pack-writer")
        self.jobs.append(self.syncer.submit(job, *args))

    def _finish_pack(
        self, fd: int, tmp: str, target: Path, staged: Staged, uploaded: tuple[Pack, int]
    ) -> tuple[Pack, int]:
        """The end of a pack file, on the writer thread: its tail, fsync, read-only (as restic leaves its
        files), rename into place."""
        try:
            try:
                self.direct.write(fd, staged)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o400)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StoreError(f"{self.store.root}: cannot write {uploaded[0].path}: {e.strerror or e}") from None
        return uploaded

    def harvest(self, wait: int = 0) -> None:
        """Move written packs to :attr:`finished`: the oldest ``wait`` jobs waited for, then all that are done
        (a failed write raises here)."""
        while self.jobs and (wait > 0 or self.jobs[0].done()):
            done = self.jobs.popleft().result()
            if done is not None:
                self.finished.append(done)
            wait -= 1

    def learn(self, known: list[str]) -> None:
        """Add blob ids stored by others. With the index on disk (a large backup into a large repository) the
        ids the parent has indexed since are dropped now and then (the index answers for them), so this set
        holds what is not indexed yet, not everything the backup stored."""
        with self.lock:
            self.added.update(known)
            if isinstance(self.repo.index, DiskIndex) and len(self.added) > self.trim_at:
                index = self.repo.index
                self.added = {blob_id for blob_id in self.added if blob_id not in index}
                self.trim_at = max(ADDED_TRIM, 2 * len(self.added))  # amortized: a lookup per id added

    def previous_items(self, tree_id: str | None) -> tuple[dict[str, Item], dict[str, str]]:
        """:meth:`_Backup.previous_items` in a worker, read straight from the pack file, with each node's own
        text from the blob (by name, when :func:`node_texts` can tell)."""
        if tree_id is None:
            return {}, {}
        entry = self.repo.lookup(tree_id)
        data = self.store.read_range(path_of("data", entry.pack_id), entry.blob.offset, entry.blob.length)
        plain = decode_blob(self.repo.key, entry.blob, data, entry.pack_id)
        items = tree_items(tree_id, entry.blob, plain)
        names = [go_unquote(str(item.get("name", ""))) for item in items]
        texts = node_texts(plain.decode("utf-8", "replace"), len(items))
        return dict(zip(names, items, strict=True)), dict(zip(names, texts, strict=True)) if texts else {}

    def handle(self, message: tuple[Any, ...]) -> tuple[Any, list[str], list[tuple[Pack, int]]]:
        """``("files", [(path, stat)], new blob ids)``, ``("scan", path, parent tree, new blob ids)`` or
        ``("flush",)``: (nodes or :class:`DirScan`, unreadable, packs written)."""
        result: Any
        if message[0] == "files":
            _, files, known = message
            self.learn(known)  # blobs the other workers stored meanwhile: not stored twice
            result = [None if node is None else _Encoded(*_encoded(node)) for node in self.file_nodes(files)]
        elif message[0] == "scan":
            _, path, parent_tree, known = message
            self.learn(known)
            result = self.scan_directory(path, *self.previous_items(parent_tree), INLINE_READ_BYTES)
        else:
            result = []
            writer: PackWriter | None = getattr(self.local, "writer", None)
            if writer is not None and writer.count:
                self.ship(writer.finish(as_bytes=False))
            self.harvest(wait=len(self.jobs))
        self.harvest()
        unreadable, self.unreadable = self.unreadable, []
        done, self.finished = self.finished, []
        return result, unreadable, done


async def _no_upload(pack: Pack) -> None:
    raise AssertionError("a worker process writes its packs itself")


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
        index_every: int = INDEX_EVERY,
        index_interval: float = INDEX_INTERVAL,
        processes: bool = False,
    ) -> None:
        self.repo = repo
        self.excludes = tuple(excludes)
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="native-backup")
        loop = asyncio.get_running_loop()
        self.shared = _Shared(repo, pack_size, loop, self.upload, on_read, compression_level, excludes=self.excludes)
        self.procs: WorkerProcesses | None = None
        """Worker processes, forked when the first directory is scanned (see :meth:`scan`)."""
        self.use_processes = processes and isinstance(repo.store, LocalStore)
        self.workers = max(1, workers)
        self.compression_level = compression_level
        self.added_log: list[str] = []
        """Data blob ids the worker processes stored, in order; ``cursors[i]``: how many worker i was told of."""
        self.cursors: list[int] = []
        self.tree_writer = PackWriter(repo.key, repo.config.version, compression_level=compression_level)
        self.vouched: set[str] = set()
        """Trees read from the parent snapshot and kept as they were, with every blob below them indexed
        (see :attr:`NativeRepository.vouched`)."""
        self.unindexed: list[Pack] = []
        """Uploaded packs no index file names yet."""
        self.index_every = max(1, index_every)
        self.index_interval = index_interval
        self.last_index = time.monotonic()
        self.progress = BackupProgress()
        self.on_progress = on_progress
        self.summary = BackupSummary("", "", None)
        self.pack_size = pack_size
        self.out = writable(repo.store)

    # ------------------------------------------------------------ uploads

    async def upload(self, pack: Pack) -> None:
        await self.out.put(pack.path, pack.data)
        await self.uploaded(Pack(pack.id, b"", pack.blobs), len(pack.data))  # keep the blob list, drop the bytes

    async def uploaded(self, uploaded: Pack, size: int) -> None:
        """Account for a pack now in the repository (uploaded here or written by a worker process)."""
        self.progress.data_added += size
        self.summary.data_added += size
        uploaded.index_text()  # now, while the workers run, rather than at the end
        self.unindexed.append(uploaded)
        for blob in uploaded.blobs:
            if blob.type == DATA:
                self.summary.data_blobs += 1
            else:
                self.summary.tree_blobs += 1
        if len(self.unindexed) >= self.index_every or time.monotonic() - self.last_index >= self.index_interval:
            await self.write_index()

    async def store_tree(self, nodes: Iterable[Node | Item | _Encoded]) -> str:
        """Store the tree of ``nodes`` (new ones, and the parent's own for what did not change); its id."""
        return await self.store_texts(text for _, text in sorted(map(_encoded, nodes)))

    async def store_texts(self, texts: Iterable[str]) -> str:
        """Store the tree of nodes already encoded, in name order; its id."""
        blob = tree_blob(texts)
        tree_id = hashlib.sha256(blob).hexdigest()
        if self.shared.claim(tree_id):
            self.tree_writer.add(TREE, blob, tree_id)
            if self.tree_writer.size >= self.pack_size:
                await self.upload(self.tree_writer.finish(as_bytes=not self.shared.local_store))
        return tree_id

    # ------------------------------------------------------------ walking

    def counted(self, files: int, size: int) -> None:
        s = self.summary
        s.total_files_processed += files
        s.total_bytes_processed += size
        self.progress.files_done += files
        self.progress.bytes_done += size

    def counted_read(self, size: int, had_parent: bool) -> None:
        s = self.summary
        s.files_read += 1
        if had_parent:
            s.files_changed += 1
        else:
            s.files_new += 1
        self.counted(1, size)

    async def read_files(self, files: list[tuple[str, os.stat_result, bool]]) -> list[Node | _Encoded | None]:
        """Nodes of files that must be read (path, lstat, whether the parent had it), in one worker-pool job
        (batching keeps per-file overhead low); None for a file that could not be read."""
        batch = [(f, st) for f, st, _ in files]
        if self.use_processes:
            if self.shared.on_read is not None:
                for path, _ in batch:
                    self.shared.on_read(path)
            nodes = await self.ask_worker("files", batch)
        else:
            nodes = await asyncio.wrap_future(self.pool.submit(self.shared.file_nodes, batch))
        for (_, st, had_parent), node in zip(files, nodes, strict=True):
            if node is not None:
                self.counted_read(st.st_size, had_parent)
        if self.on_progress is not None:
            self.on_progress(self.progress)
        return list(nodes)

    def worker_processes(self) -> WorkerProcesses:
        if self.procs is None:
            assert isinstance(self.repo.store, LocalStore)
            preload_chunker()  # imported once here, not once per worker after the fork
            store, excludes = self.repo.store, self.excludes
            handler = _ProcessShared(self.repo, store, self.pack_size, self.compression_level, excludes)
            self.procs = WorkerProcesses(self.workers, handler.handle, name="native-backup", depth=WORKER_DEPTH)
            self.cursors = [0] * len(self.procs)
        return self.procs

    async def ask_worker(self, kind: str, *args: Any) -> Any:
        """Send ``(kind, *args, blob ids stored since)`` to the next idle worker process; its answer (its packs
        written meanwhile indexed, its unreadable files noted)."""
        procs = self.worker_processes()

        def message(worker: int) -> tuple[Any, ...]:
            known = self.added_log[self.cursors[worker] :]
            self.cursors[worker] = len(self.added_log)
            return (kind, *args, known)

        result, unreadable, done = await procs.call(message)
        self.shared.unreadable += unreadable
        await self.worker_packs(done)
        return result

    async def worker_packs(self, done: list[tuple[Pack, int]]) -> None:
        for pack, size in done:
            for blob in pack.blobs:
                self.shared.added.add(blob.id)
                self.added_log.append(blob.id)
            await self.uploaded(pack, size)

    async def entry_node(self, full: str, st: os.stat_result, previous: Item | None) -> Node | Item | _Encoded | None:
        """The node of a path backed up by name (the parent's own if unchanged); None if it could not be read."""
        if stat_mod.S_ISDIR(st.st_mode):
            return await self.dir_node(full, st, previous)
        if not stat_mod.S_ISREG(st.st_mode):
            return node_from_stat(full, st)
        node = self.shared.unread(full, st, previous)
        if node is not None:
            self.summary.files_unmodified += 1
            self.counted(1, st.st_size)
            return node
        (read,) = await self.read_files([(full, st, previous is not None)])
        return read

    async def dir_node(self, path: str, st: os.stat_result, previous: Item | None) -> Node | Item:
        parent_tree = _subtree(previous)
        subtree = await self.directory(path, parent_tree)
        if previous is not None and parent_tree == subtree and _unchanged(previous, st, file=False):
            return previous
        return node_from_stat(path, st, subtree=subtree)

    async def previous_items(self, parent_tree: str | None) -> dict[str, Item]:
        """The parent tree's nodes by name, as JSON (see :func:`_unchanged`)."""
        if parent_tree is None:
            return {}
        return {go_unquote(str(item.get("name", ""))): item for item in await self.repo.load_tree_items(parent_tree)}

    async def scan(self, path: str, parent_tree: str | None) -> DirScan:
        """:meth:`_Shared.scan_directory` in a worker process, else here (reading nothing)."""
        if self.use_processes:
            scan: DirScan = await self.ask_worker("scan", path, parent_tree)
        else:
            scan = self.shared.scan_directory(path, await self.previous_items(parent_tree), {}, 0)
        s = self.summary
        s.files_unmodified += len(scan.unmodified)
        self.counted(len(scan.unmodified), sum(scan.unmodified))
        for full, size, had_parent in scan.read:
            if self.shared.on_read is not None:
                self.shared.on_read(full)
            self.counted_read(size, had_parent)
        return scan

    async def directory(self, path: str, parent_tree: str | None) -> str:
        """Store the tree of directory ``path``; its id. A worker scans the directory; here its subdirectories
        are walked (at most :data:`DIR_CONCURRENCY` at once: each holds its parent tree's nodes while it
        waits) and the changed files the scan left are read, in batches spread over the workers."""
        scan = await self.scan(path, parent_tree)
        subdirs = asyncio.Semaphore(DIR_CONCURRENCY)

        async def subdir(full: str, st: os.stat_result, previous: Item | None) -> list[Node | Item]:
            async with subdirs:
                return [await self.dir_node(full, st, previous)]

        jobs: list[Awaitable[Sequence[Node | Item | _Encoded | None]]] = []
        slots: list[list[int]] = []
        batch: list[tuple[int, str, os.stat_result, bool]] = []
        batch_bytes = 0
        for n, entry in enumerate(scan.to_read):
            batch.append(entry)
            batch_bytes += entry[2].st_size
            if batch_bytes >= BATCH_BYTES or len(batch) >= BATCH_FILES or n == len(scan.to_read) - 1:
                jobs.append(self.read_files([(full, st, had) for _, full, st, had in batch]))
                slots.append([position for position, *_ in batch])
                batch, batch_bytes = [], 0
        for position, full, st, previous in scan.subdirs:
            jobs.append(subdir(full, st, previous))
            slots.append([position])
        filled: dict[int, Node | Item | _Encoded | None] = {}
        for positions, done in zip(slots, await asyncio.gather(*jobs), strict=True):
            filled.update(zip(positions, done, strict=True))
        if self.on_progress is not None:
            self.on_progress(self.progress)

        below = [filled[position] for position, *_ in scan.subdirs]
        if (
            parent_tree is not None
            and scan.texts is None
            and all(node is previous for node, (_, _, _, previous) in zip(below, scan.subdirs, strict=True))
        ):
            tree_id = parent_tree  # every node is the parent's own: the very same tree blob, already stored
            if all(subtree in self.vouched for subtree in map(_subtree, below) if subtree is not None):
                self.vouched.add(tree_id)
        else:
            texts = scan.texts
            if texts is None:  # the parent's own files, but a subdirectory changed: their JSON after all
                own = await self.previous_items(parent_tree)
                texts = [None if i in filled else _encoded(own[name])[1] for i, name in enumerate(scan.names)]
            for position, node in filled.items():
                texts[position] = None if node is None else _encoded(node)[1]
            tree_id = await self.store_texts([text for text in texts if text is not None])
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
        previous = await self.previous_items(parent_tree)
        nodes: list[Node | Item | _Encoded] = []
        for name, sub in sorted(trie.items(), key=lambda kv: kv[0].encode("utf-8", "surrogateescape")):
            full = os.path.join(prefix, name)
            st = os.lstat(full)
            prev = previous.get(name)
            if sub is not None:
                nodes.append(node_from_stat(full, st, subtree=await self.virtual(full, sub, _subtree(prev))))
            elif (node := await self.entry_node(full, st, prev)) is not None:  # a backed-up path
                nodes.append(node)
        return await self.store_tree(nodes)

    # ------------------------------------------------------------ finishing

    async def flush(self) -> None:
        """Write the last, partial packs: the workers' data packs and the tree pack at the same time (the
        index that names them comes after both)."""

        async def data() -> None:
            if self.procs is not None:
                for _, _, done in await self.procs.broadcast(("flush",)):
                    await self.worker_packs(done)
                await self.procs.close()
            await asyncio.to_thread(self.pool.shutdown, True)
            for writer in self.shared.writers:
                if writer.count:
                    await self.upload(writer.finish(as_bytes=not self.shared.local_store))

        async def trees() -> None:
            if self.tree_writer.count:
                await self.upload(self.tree_writer.finish(as_bytes=not self.shared.local_store))

        await asyncio.gather(data(), trees())

    async def write_index(self) -> None:
        """Write index file(s) naming the packs uploaded since the last one (periodically, and at the end).
        With the index on disk, the ids just indexed leave the in-memory sets (the index answers for them),
        so those hold what is not indexed yet, not everything the backup stored."""
        packs, self.unindexed = self.unindexed, []  # taken before any await: concurrent uploads add to a new list
        self.last_index = time.monotonic()
        self.summary.index_files += await write_index_files(self.repo, packs)
        if isinstance(self.repo.index, DiskIndex):
            with self.shared.lock:
                self.shared.added.difference_update(blob.id for pack in packs for blob in pack.blobs)
            told = min(self.cursors, default=len(self.added_log))
            del self.added_log[:told]  # every worker has been told of these
            self.cursors = [cursor - told for cursor in self.cursors]

    async def abort(self) -> None:
        """After a failure: stop the workers (one may wait for an upload, which needs the event loop running),
        then index what was uploaded, best effort, so the next backup reuses it without recovering it."""
        self.shared.aborted.set()
        if self.procs is not None:
            await asyncio.to_thread(self.procs.terminate)  # what they wrote unreported is recovered next time
            self.procs.wake_waiters()  # batches still queued for a worker fail instead of waiting forever
        await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)
        try:
            await self.write_index()
        except Exception as e:  # the original failure is what the caller must see
            log.warning("could not index the packs of a failed backup: %s", e)

    async def finish_index(self) -> None:
        """The last index file."""
        await self.write_index()


async def write_index_files(repo: NativeRepository, packs: Sequence[Pack]) -> int:
    """Index file(s) naming ``packs`` (at most :data:`INDEX_MAX_BLOBS` blobs each); how many were written.
    The packs' blobs join the in-memory index (a later operation in this process finds them there)."""
    version = repo.config.version
    out = writable(repo.store)
    written = count = 0
    batch: list[Pack] = []
    for pack in [*packs, None]:
        if pack is not None:
            batch.append(pack)
            count += len(pack.blobs)
        if batch and (pack is None or count >= INDEX_MAX_BLOBS):
            data = await asyncio.to_thread(encode_unpacked, repo.key, index_json(batch), version)
            name = storage_id(data)
            await out.put(f"index/{name}", data)
            repo.index.add_file(name, [IndexEntry(done.id, blob) for done in batch for blob in done.blobs])
            written += 1
            batch, count = [], 0
    return written


@dataclass
class Recovery:
    """What :func:`recover_packs` did."""

    packs: int = 0
    """Packs indexed."""
    blobs: int = 0
    """Blobs they hold that the index did not have."""
    index_files: int = 0
    skipped: list[str] = field(default_factory=list)
    """Unindexed packs left alone, each with why (unreadable, truncated, corrupt header)."""


async def recover_packs(repo: NativeRepository, *, concurrency: int = RECOVER_CONCURRENCY) -> Recovery:
    """Index the packs in ``data/`` that no index names, so their blobs are reused instead of uploaded again.

    An interrupted backup (ours or restic's) leaves such packs; their content is valid, only the index file
    naming them was never written. Cost: one LIST of ``data/`` (it comes with sizes on object stores), then
    for each unindexed pack one ranged read of its tail (two for a header over 64 KiB), never its blobs. The
    header is authenticated, and its blobs must end exactly where it starts, so a truncated or damaged pack
    is skipped (and reported in :attr:`Recovery.skipped`; looked at again by every backup until something
    removes it, as ``restic prune`` does), never indexed. A pack none of whose blobs is new
    is skipped too: indexing it would gain nothing (it may be a pack an index names whose blobs the
    in-memory index maps to another pack).

    A pack a concurrent backup has uploaded but not yet indexed is recovered too: harmless, its content is
    valid; when that backup indexes it as well, ``restic check`` prints a "contained in several indexes"
    hint (not an error) until the next prune or ``rebuild-index``.
    """
    indexed = repo.index.pack_ids()
    sizes = await list_sizes(repo.store, "data")
    candidates = sorted(name for name in sizes if name not in indexed)
    result = Recovery()
    if not candidates:
        return result
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(name: str) -> list[PackedBlob] | None:
        async with limit:
            try:
                return await _pack_header(repo, name, sizes[name])
            except (IntegrityError, StoreError, BackendError, CryptoError, OSError, ValueError) as e:
                reason = str(e) if name in str(e) else f"pack {name}: {e}"
                result.skipped.append(reason)
                log.warning("not recovering an unindexed pack: %s", reason)
                return None

    headers = await asyncio.gather(*(one(name) for name in candidates))
    recovered: list[Pack] = []
    for name, blobs in zip(candidates, headers, strict=True):
        if not blobs:
            continue
        new = sum(1 for blob in blobs if blob.id not in repo.index)
        if new:
            recovered.append(Pack(name, b"", tuple(blobs)))
            result.blobs += new
    if recovered:
        result.index_files = await write_index_files(repo, recovered)
        result.packs = len(recovered)
    result.skipped.sort()
    return result


async def _pack_header(repo: NativeRepository, name: str, size: int | None) -> list[PackedBlob]:
    """The blobs a pack's header lists, checked against the pack's size (see :func:`recover_packs`)."""
    path = path_of("data", name)
    if size is None:  # a store that does not tell sizes: read the pack whole (rare: only unindexed packs)
        data = await repo.store.get(path)
        return await asyncio.to_thread(read_header, repo.key, data, name)
    want = min(size, _TAIL_READ)
    tail = await repo.store.get_range(path, size - want, want)
    if len(tail) != want:
        raise IntegrityError(f"pack {name}: read {len(tail)} of its last {want} bytes")
    length = header_length(tail)
    start = size - HEADER_LENGTH_SIZE - length
    if start < 0:
        raise IntegrityError(f"pack {name}: header length {length} exceeds the pack size {size}")
    if length + HEADER_LENGTH_SIZE <= want:
        encrypted = tail[want - HEADER_LENGTH_SIZE - length : want - HEADER_LENGTH_SIZE]
    else:
        encrypted = await repo.store.get_range(path, start, length)
        if len(encrypted) != length:
            raise IntegrityError(f"pack {name}: header truncated")
    blobs = parse_header(repo.key, encrypted, name)
    if not blobs or blobs[-1].offset + blobs[-1].length != start:
        raise IntegrityError(f"pack {name}: its blobs do not end where its header starts ({start})")
    return blobs


async def write_snapshot(
    repo: NativeRepository,
    *,
    when: GoTime,
    tree: str,
    paths: Sequence[str],
    hostname: str,
    parent: str | None = None,
    excludes: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> str:
    """Write the snapshot document (with this process's user, as restic records it); its id."""
    try:
        username = getpass.getuser()
    except (KeyError, OSError):
        username = ""
    doc = snapshot_json(
        time=when,
        tree=tree,
        paths=paths,
        hostname=hostname,
        username=username,
        uid=os.getuid(),
        gid=os.getgid(),
        parent=parent,
        excludes=excludes,
        tags=tags,
    )
    data = encode_unpacked(repo.key, doc, repo.config.version)
    snapshot_id = storage_id(data)
    await writable(repo.store).put(f"snapshots/{snapshot_id}", data)
    return snapshot_id


def open_for_reading(path: str) -> int:
    """A descriptor to read ``path`` from: not following a symbolic link that replaced the file since its
    ``lstat``, and without updating its access time where the kernel allows it (the file's owner, or
    ``CAP_FOWNER``): backing a file up should not change it, and an atime update dirties the inode (more
    journal writes for every file read)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | _O_NOATIME)
    except PermissionError:
        if not _O_NOATIME:
            raise
        return os.open(path, flags)


_O_NOATIME = getattr(os, "O_NOATIME", 0)


def _read_full(f: io.FileIO, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end of the file."""
    parts = []
    while size > 0:
        data = f.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _unchanged(item: Item, st: os.stat_result, *, file: bool) -> bool:
    """True only when ``lstat`` would rebuild exactly this parent node (its JSON, unparsed), so the node is
    kept as it is: no user/group/xattr lookups, no :class:`Node` built (twenty fields) for each of the
    thousands of entries an incremental backup finds unchanged.

    For a file (whose content :meth:`_Shared.reusable` also keeps) or a directory (whose subtree came out the
    same) with the same size, mtime, ctime and inode: ``chmod``, ``chown``, ``link`` and ``setxattr`` all update
    ctime, so mode, owner, link count and xattrs are those recorded; what ctime does not cover is checked too
    (the device id, the zone offset the times were written with). User and group *names* are assumed to map
    as before. Anything unusual (another type, a missing field, times not in Go's own text) answers False:
    the node is then rebuilt from ``lstat``, which is always right, only slower."""
    get = item.get
    mtime_text, ctime_text = get("mtime"), get("ctime")
    if (
        get("type") != ("file" if file else "dir")
        or not isinstance(mtime_text, str)
        or not isinstance(ctime_text, str)
        or get("atime") != mtime_text
        or (get("inode") or 0) != st.st_ino
        or (get("size") or 0) != (st.st_size if file else 0)
        or (get("links") or 0) != (st.st_nlink if file else 0)
        or (get("device_id") or 0) != st.st_dev
        or get("uid") != st.st_uid
        or get("gid") != st.st_gid
        or (get("mode") or 0) != go_file_mode(st.st_mode)
    ):
        return False
    mtime, ctime = parse_go_text(mtime_text), parse_go_text(ctime_text)  # Go's canonical text only
    return (
        mtime is not None
        and ctime is not None
        and mtime.unix_ns == st.st_mtime_ns
        and ctime.unix_ns == st.st_ctime_ns
        and mtime.offset == local_offset(st.st_mtime_ns // 1_000_000_000)
        and ctime.offset == local_offset(st.st_ctime_ns // 1_000_000_000)
    )


def _node(item: Item | None) -> Node | None:
    """The parent's node parsed; None (as if there were no parent node) if it cannot be."""
    if item is None:
        return None
    try:
        return node_from_json(item)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class _Encoded(NamedTuple):
    """A new file's node as its tree needs it, sort key and JSON: what a worker process sends back for the files
    it read, rather than their nodes (pickling a node and its times cost ~18 µs, split between the worker and
    the parent; 20k small files: most of a second of CPU)."""

    key: bytes
    text: str


def _encoded(node: Node | Item | _Encoded, raw: str | None = None) -> tuple[bytes, str]:
    """(sort key, JSON) of a new node, or of a parent's unchanged one: its JSON reused when it can be (its
    times are Go's text: :func:`_unchanged` accepted it; ``raw``: its text in the parent's blob), else parsed
    and encoded again."""
    if isinstance(node, _Encoded):
        return node
    if isinstance(node, Node):
        return sort_key(node), encode_node(node)
    text = item_json(node, raw)
    if text is None:
        parsed = node_from_json(node)
        return sort_key(parsed), encode_node(parsed)
    return go_unquote(str(node["name"])).encode("utf-8", "surrogateescape"), text


def _subtree(item: Item | Node | _Encoded | None) -> str | None:
    """The subtree id of a parent's directory node (None for anything else: an encoded node is a file's)."""
    if isinstance(item, Node):
        return item.subtree if item.type == "dir" else None
    if isinstance(item, _Encoded):
        return None
    subtree = item.get("subtree") if item is not None and item.get("type") == "dir" else None
    return subtree if isinstance(subtree, str) else None


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
    index_every: int = INDEX_EVERY,
    index_interval: float = INDEX_INTERVAL,
    recover: bool = True,
    processes: bool | None = None,
) -> BackupSummary:
    """Back up the absolute ``paths`` into ``repo`` and write a snapshot; what was done.

    ``parent``: a snapshot id (or prefix, or ``latest``), ``"auto"`` for the newest snapshot of the same host
    and paths, or None for none. ``host`` None means this machine's name. ``on_read`` is called with each
    file path whose content is read (for tests and diagnostics). ``workers`` processes or threads (see
    ``processes``) chunk, encrypt and write packs (so at most that many packs are written at once).
    ``compression_level`` is zstd's (v2 repositories): restic's ``auto`` is Go zstd's "default" speed;
    level 1 here is ~1.4x faster than level 3 on text for ~5 % more compressed bytes (measured on the bench
    dataset's logs: ratio 0.300 against 0.287).
    ``index_every``/``index_interval``: write an index file after that many packs or seconds (crash safety,
    see :data:`INDEX_EVERY`); ``recover``: first index the packs an interrupted backup left unindexed
    (:func:`recover_packs`). ``processes``: read, chunk, compress and encrypt in ``workers`` forked processes
    that write their packs straight into the repository (None: when the store is local, ``workers`` > 1
    and ``fork`` is available; a remote store always uses threads), see the module docstring.
    """
    started = time.perf_counter()
    tune_malloc()
    if processes is None:
        processes = workers > 1 and isinstance(repo.store, LocalStore) and fork_available()
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

    recovery = await recover_packs(repo) if recover else Recovery()
    job = _Backup(
        repo,
        excludes=excludes,
        pack_size=pack_size,
        workers=workers,
        on_progress=on_progress,
        on_read=on_read,
        compression_level=compression_level,
        index_every=index_every,
        index_interval=index_interval,
        processes=processes,
    )
    finished = False
    try:
        root = await job.virtual("/", _trie(clean), parent_info.tree if parent_info else None)
        await job.flush()
        finished = True
    finally:
        if not finished:
            await job.abort()
    await job.finish_index()
    snapshot_id = await write_snapshot(
        repo,
        when=GoTime.local(time.time_ns()),
        tree=root,
        paths=clean,
        hostname=hostname,
        parent=parent_info.id if parent_info else None,
        excludes=excludes,
        tags=tags,
    )
    repo.vouched[snapshot_id] = frozenset(job.vouched)
    summary = job.summary
    summary.packs_recovered = recovery.packs
    summary.index_files += recovery.index_files
    summary.unreadable = list(job.shared.unreadable)
    summary.snapshot_id, summary.tree = snapshot_id, root
    summary.parent = parent_info.id if parent_info else None
    summary.total_duration = time.perf_counter() - started
    return summary
