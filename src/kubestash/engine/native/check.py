"""Verifying a restic repository without the restic binary, like ``restic check [--read-data]``.

A backup is only worth something if it can be restored, and the cheapest time to find out it cannot is
before it is needed. This walks the repository the way restic's checker does and reports every problem it
finds instead of stopping at the first one, each message naming the pack, blob or snapshot involved:

* **index vs. packs** -- every pack an index file lists exists in ``data/``; its header (the encrypted blob
  list at the end of the pack) lists exactly the blobs the index says, at the same offsets and lengths, and
  the pack has the size those imply. A pack in ``data/`` that no index lists is a *warning*, as in restic
  ("pack ... not referenced in index": an interrupted backup or prune left it; ``prune`` removes it).
* **snapshots and trees** -- every snapshot file decrypts, its tree and every subtree below it load (decrypt,
  decompress, hash to their ids), and every data blob a file node references is in the index.
* **read data** (optional) -- every pack is read whole: its SHA-256 must equal its name, its header must agree
  with the index, and every blob in it must decrypt, decompress and hash to its id.

Header checks read only each pack's tail (one ranged read sized from the index); ``read_data`` reads whole
packs, a run of blobs at a time (:data:`READ_SPAN`). Memory stays bounded: at most
:data:`READ_DATA_CONCURRENCY` packs are read at once, trees are loaded one at a time per worker, and only
blob/tree ids (not contents) are remembered. Every index file is read and authenticated again, two at a time,
but the packs' blob lists come from :attr:`NativeRepository.index` (in memory or on disk, it keeps every place
of a blob): a second map of every blob, from all index files parsed at once, cost the 1 GiB bench repository's
``--read-data`` 5 MiB of its peak RSS.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from kubestash.backends.base import BackendError
from kubestash.engine.native.crypto import OVERHEAD, CryptoError
from kubestash.engine.native.files import load_json
from kubestash.engine.native.index import DiskIndex, handle_set
from kubestash.engine.native.pack import (
    COMPRESSED_ENTRY,
    HEADER_LENGTH_SIZE,
    PLAIN_ENTRY,
    IntegrityError,
    PackedBlob,
    decode_blob,
    header_blobs,
    header_length,
    header_start,
    parse_header,
    read_runs,
)
from kubestash.engine.native.repository import NativeRepository, bounded, index_entries
from kubestash.engine.native.store import StoreError, list_sizes, path_of
from kubestash.engine.native.tree import go_unquote
from kubestash.engine.native.workers import tune_malloc

PACK_CONCURRENCY = 4
"""Pack headers read at the same time."""
READ_DATA_CONCURRENCY = 2
"""Packs read and verified at the same time (``read_data``): two keep both cores busy."""
READ_SPAN = 4 << 20
"""``read_data`` reads a pack in ranged reads of whole blobs up to this size: a pack held whole cost its size
(16 MiB) per pack in flight (1 GiB bench repository: peak RSS 100 → 80 MiB, as fast; restic's ~95)."""
TREE_CONCURRENCY = 8
"""Trees loaded at the same time."""
FILE_CONCURRENCY = 8
"""Index and snapshot files read at the same time."""

_LOAD_ERRORS = (IntegrityError, StoreError, BackendError, CryptoError, ValueError, KeyError, TypeError, OSError)
"""What reading damaged or missing repository data raises; anything else is a bug and propagates."""


@dataclass(frozen=True)
class CheckCounters:
    packs: int = 0
    """Packs listed in the index (and checked)."""
    blobs: int = 0
    """Distinct blobs listed in the index."""
    snapshots: int = 0
    trees: int = 0
    """Distinct trees loaded from the snapshots."""


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    errors: list[str]
    """Damage: the repository cannot restore everything it claims to hold."""
    warnings: list[str]
    """Harmless leftovers (unreferenced packs)."""
    counters: CheckCounters
    read_data: bool = False


@dataclass
class _State:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def check(
    repo: NativeRepository, *, read_data: bool = False, snapshots: Sequence[str] | None = None
) -> CheckReport:
    """Check ``repo`` like ``restic check`` (``read_data``: like ``restic check --read-data``).

    ``snapshots`` (ids) narrows the check to what those snapshots need: their trees load and authenticate,
    every blob they reference is indexed with the right type, and the packs holding those blobs match the
    index (``read_data``: their content too). That is the check after a backup: it costs what the snapshot
    is, not what the repository has grown to; unreferenced packs are not looked for. A tree the backup of
    that snapshot vouched for (:attr:`NativeRepository.vouched`: it read the tree from the repository in
    this process, found the directory unchanged and every blob below it indexed) is not read again, so the
    check after an incremental backup costs what changed.
    """
    state = _State()
    if read_data:
        tune_malloc()  # pack-sized buffers freed by the reading threads go back to the system, not to arenas
    if snapshots is None:
        packs = await _index_packs(repo, state)
        await _check_packs(repo, packs, read_data, state)
        count, trees = await _check_snapshots(repo, state)
    else:
        await repo.refresh()
        used: set[str] = set()
        vouched = frozenset().union(*(repo.vouched.pop(s, frozenset()) for s in snapshots))
        count, trees = await _check_snapshots(repo, state, only=list(snapshots), used=used, vouched=vouched)
        packs = _Packs.of({pack_id: set(repo.index.blobs_in(pack_id)) for pack_id in used})
        await _check_packs(repo, packs, read_data, state, whole=False)
        if vouched:
            await _check_pack_sizes(repo, used, state)
    counters = CheckCounters(packs=len(packs.ids), blobs=packs.count_blobs(), snapshots=count, trees=trees)
    return CheckReport(not state.errors, state.errors, state.warnings, counters, read_data)


# ---------------------------------------------------------------- index and packs


@dataclass(frozen=True)
class _Packs:
    """The packs to check, each with the blobs the index lists for it (a pack two index files name lists the
    blobs of both), from a map in memory or from the on-disk index one pack at a time."""

    ids: AbstractSet[str]
    blobs: Callable[[str], set[PackedBlob]]
    count_blobs: Callable[[], int]
    """How many distinct blob ids they hold."""

    @classmethod
    def of(cls, packs: dict[str, set[PackedBlob]]) -> _Packs:
        return cls(packs.keys(), packs.__getitem__, lambda: len({b.id for blobs in packs.values() for b in blobs}))


async def _index_packs(repo: NativeRepository, state: _State) -> _Packs:
    """Every indexed pack with the blobs the index files list for it. Every index file is read and
    authenticated again (the repository is what is checked, not what was loaded), two at a time, and a file
    the repository's index lacks is added to it; the packs' blob lists come from that index, which keeps every
    place of a blob (a blob in two packs, which restic allows, is in both packs' lists)."""
    names = await repo.store.list("index")
    if isinstance(repo.index, DiskIndex):
        repo.index.forget_files(repo.index.files - set(names))
    elif repo.index.files - set(names):  # in memory a forgotten file forgets all: load it again
        await repo.refresh(set(names))
    index = repo.index
    cached = index.files
    errors: list[str] = []

    def verify(name: str, data: bytes) -> None:
        entries = list(index_entries(load_json(repo.key, data)))
        if name not in cached:
            index.add_file(name, entries)

    async def one(name: str) -> None:
        try:
            await asyncio.to_thread(verify, name, await repo.store.get(path_of("index", name)))
        except _LOAD_ERRORS as e:
            errors.append(f"index {name}: cannot load: {_reason(e)}")

    await bounded(names, one, 2)
    state.errors += sorted(errors)
    return _Packs(index.pack_ids(), lambda pack_id: set(index.blobs_in(pack_id)), lambda: len(index))


async def _check_packs(
    repo: NativeRepository, packs: _Packs, read_data: bool, state: _State, *, whole: bool = True
) -> None:
    """Every pack in ``packs`` against its index entries; with ``whole`` also the packs no index names."""
    sizes = await list_sizes(repo.store, "data")
    stored = set(sizes)
    state.errors += [f"pack {pack_id}: does not exist" for pack_id in sorted(packs.ids - stored)]
    if whole:
        state.warnings += [f"pack {pack_id}: not referenced in index" for pack_id in sorted(stored - packs.ids)]
    errors: list[str] = []

    async def one(pack_id: str) -> None:
        try:
            if read_data:
                indexed = packs.blobs(pack_id)
                size = sizes[pack_id]
                errors.extend(await _read_pack(repo, pack_id, _pack_size(indexed) if size is None else size, indexed))
            else:
                errors.extend(await _check_pack_header(repo, pack_id, packs.blobs(pack_id)))
        except _LOAD_ERRORS as e:
            errors.append(f"pack {pack_id}: cannot read: {_reason(e)}")

    await bounded(sorted(packs.ids & stored), one, READ_DATA_CONCURRENCY if read_data else PACK_CONCURRENCY)
    state.errors += sorted(errors)


async def _check_pack_sizes(repo: NativeRepository, skip: set[str], state: _State) -> None:
    """Every indexed pack but ``skip`` exists with the size its index entries imply (one LIST, as restic
    check compares them): what a vouched tree was not read again for still cannot have lost a pack."""
    stored = await list_sizes(repo.store, "data")
    for pack_id in sorted(repo.index.pack_ids() - skip):
        blobs = set(repo.index.blobs_in(pack_id))
        size = stored.get(pack_id, -1)
        expected = _pack_size(blobs)
        if size == -1:
            state.errors.append(f"pack {pack_id}: does not exist")
        elif size is not None and size != expected:
            state.errors.append(f"pack {pack_id}: size is {size} bytes, the index implies {expected} bytes")


def _pack_size(blobs: set[PackedBlob]) -> int:
    """The size of a pack holding exactly ``blobs``: the blobs, the encrypted header, its length field."""
    entries = sum(PLAIN_ENTRY if b.uncompressed_length is None else COMPRESSED_ENTRY for b in blobs)
    return max(b.offset + b.length for b in blobs) + OVERHEAD + entries + HEADER_LENGTH_SIZE


async def _check_pack_header(repo: NativeRepository, pack_id: str, indexed: set[PackedBlob]) -> list[str]:
    """The pack's size and header against the index, from one ranged read of the pack's tail."""
    blobs_end = max(b.offset + b.length for b in indexed)
    expected = _pack_size(indexed) - blobs_end
    encrypted_header = expected - HEADER_LENGTH_SIZE
    # One byte more than the index implies: a longer pack shows up as a longer read, a shorter one as a shorter.
    tail = await repo.store.get_range(path_of("data", pack_id), blobs_end, expected + 1)
    if len(tail) != expected:
        size = f"{blobs_end + len(tail)} bytes" if len(tail) < expected else "longer"
        return [f"pack {pack_id}: size is {size}, the index implies {blobs_end + expected} bytes"]
    stored_length = header_length(tail)
    if stored_length != encrypted_header:
        return [f"pack {pack_id}: header is {stored_length} bytes, the index implies {encrypted_header}"]
    try:
        header = parse_header(repo.key, tail[:-HEADER_LENGTH_SIZE], pack_id)
    except IntegrityError as e:
        return [str(e)]
    return _compare(pack_id, header, indexed)


async def _read_pack(repo: NativeRepository, pack_id: str, size: int, indexed: set[PackedBlob]) -> list[str]:
    """``--read-data`` for one pack of ``size`` bytes: its header against the index, then the whole pack read in
    runs of whole blobs (:data:`READ_SPAN`), each blob decrypted, decompressed and hashed to its id as it comes,
    every byte hashed to the pack's name."""
    path = path_of("data", pack_id)
    errors: list[str] = []
    header: list[PackedBlob] = []
    try:
        header = await _read_header(repo, pack_id, size)
    except IntegrityError as e:
        errors.append(str(e))
    else:
        errors += _compare(pack_id, header, indexed)
    digest = hashlib.sha256()
    position = 0
    for run in read_runs(header, READ_SPAN):
        end = run[-1].offset + run[-1].length
        data = await repo.store.get_range(path, position, end - position)
        errors += await asyncio.to_thread(_hash_and_decode, repo, pack_id, digest, data, position, run)
        position += len(data)
        if position < end:
            break
    while position < size:  # the header; the whole pack if its header could not be read
        data = await repo.store.get_range(path, position, min(size - position, READ_SPAN))
        if not data:
            break
        await asyncio.to_thread(digest.update, data)
        position += len(data)
    if digest.hexdigest() != pack_id:
        errors.insert(0, f"pack {pack_id}: content hashes to {digest.hexdigest()}, not to its name")
    return errors


async def _read_header(repo: NativeRepository, pack_id: str, size: int) -> list[PackedBlob]:
    """A pack's blobs from its header (two ranged reads of its tail: the header's length, then the header)."""
    path = path_of("data", pack_id)
    tail = await repo.store.get_range(path, max(0, size - HEADER_LENGTH_SIZE), HEADER_LENGTH_SIZE)
    start = header_start(tail, size, pack_id)
    encrypted = await repo.store.get_range(path, start, size - HEADER_LENGTH_SIZE - start)
    return header_blobs(repo.key, encrypted, start, pack_id)


def _hash_and_decode(
    repo: NativeRepository, pack_id: str, digest: hashlib._Hash, data: bytes, start: int, run: list[PackedBlob]
) -> list[str]:
    digest.update(data)
    errors: list[str] = []
    with memoryview(data) as view:
        for blob in run:
            at = blob.offset - start
            try:
                decode_blob(repo.key, blob, view[at : at + blob.length], pack_id)
            except IntegrityError as e:
                errors.append(str(e))
    return errors


def _compare(pack_id: str, header: list[PackedBlob], indexed: set[PackedBlob]) -> list[str]:
    in_header = set(header)
    errors = [
        f"pack {pack_id}: {b.type} blob {b.id} (offset {b.offset}, length {b.length}) is in the index "
        "but not in the pack header"
        for b in sorted(indexed - in_header, key=lambda b: b.offset)
    ]
    errors += [
        f"pack {pack_id}: {b.type} blob {b.id} (offset {b.offset}, length {b.length}) is in the pack header "
        "but not in the index"
        for b in sorted(in_header - indexed, key=lambda b: b.offset)
    ]
    return errors


# ---------------------------------------------------------------- snapshots and trees


@dataclass(frozen=True)
class _TreeRef:
    id: str
    snapshot: str
    path: str

    def where(self) -> str:
        return f"tree {self.id} (snapshot {self.snapshot[:8]}, {self.path or '/'})"


async def _check_snapshots(
    repo: NativeRepository,
    state: _State,
    *,
    only: list[str] | None = None,
    used: set[str] | None = None,
    vouched: frozenset[str] = frozenset(),
) -> tuple[int, int]:
    """(snapshots, distinct trees): every snapshot's tree (or ``only`` those) and everything below it loads
    and is indexed; ``used`` collects the packs holding what they reference; ``vouched`` trees are taken as
    checked (with everything below them)."""
    names = only if only is not None else await repo.store.list("snapshots")
    roots: list[_TreeRef] = []
    errors: list[str] = []

    async def load(name: str) -> None:
        try:
            doc = load_json(repo.key, await repo.store.get(path_of("snapshots", name)))
            roots.append(_TreeRef(str(doc["tree"]), name, ""))
        except _LOAD_ERRORS as e:
            errors.append(f"snapshot {name}: cannot load: {_reason(e)}")

    await bounded(names, load, FILE_CONCURRENCY)
    seen = handle_set(repo.index)  # tree ids; on disk for a large repository
    for tree_id in vouched:
        seen.add((tree_id, "tree"))
    queue: asyncio.Queue[_TreeRef] = asyncio.Queue()
    for ref in sorted(roots, key=lambda r: r.snapshot):
        if (ref.id, "tree") not in seen:
            seen.add((ref.id, "tree"))
            queue.put_nowait(ref)

    async def worker() -> None:
        while True:
            ref = await queue.get()
            try:
                for sub in await _check_tree(repo, ref, errors, used):
                    if (sub.id, "tree") not in seen:
                        seen.add((sub.id, "tree"))
                        queue.put_nowait(sub)
            finally:
                queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(TREE_CONCURRENCY)]
    try:
        await _join(queue, workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    state.errors += sorted(errors)
    return len(names), len(seen)


async def _join(queue: asyncio.Queue[_TreeRef], workers: list[asyncio.Task[None]]) -> None:
    """Wait until the queue is drained, re-raising a worker's unexpected exception instead of hanging."""
    joined = asyncio.create_task(queue.join())
    try:
        done, _ = await asyncio.wait([joined, *workers], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not joined:
                task.result()
    finally:
        joined.cancel()


async def _check_tree(
    repo: NativeRepository, ref: _TreeRef, errors: list[str], used: set[str] | None = None
) -> list[_TreeRef]:
    """Load one tree, check its file nodes' blobs against the index, return its subtrees.

    Reads the tree's JSON directly instead of building :class:`~.tree.Node` objects: a check only needs each
    node's type, subtree and content, and parsing times and modes for every node of every snapshot made the
    check after each backup cost as much as the backup itself.
    """
    try:
        if used is not None:
            used.add(repo.lookup(ref.id).pack_id)
        nodes = await repo.load_tree_items(ref.id)
    except _LOAD_ERRORS as e:
        errors.append(f"{ref.where()}: cannot load: {_reason(e)}")
        return []
    subtrees: list[_TreeRef] = []
    index = repo.index
    for node in nodes:
        kind = node.get("type")
        if kind == "dir":
            subtree = node.get("subtree")
            if not subtree:
                errors.append(f"{ref.where()}: directory {_path(ref, node)} has no subtree")
            else:
                subtrees.append(_TreeRef(str(subtree), ref.snapshot, _path(ref, node)))
        elif kind == "file":
            for blob_id in node.get("content") or ():
                found = index.get(blob_id)
                if found is None:
                    errors.append(f"{ref.where()}: file {_path(ref, node)}: data blob {blob_id} is not in the index")
                elif found.blob.type != "data":
                    errors.append(f"{ref.where()}: file {_path(ref, node)}: blob {blob_id} is a {found.blob.type} blob")
                elif used is not None:
                    used.add(found.pack_id)
    return subtrees


def _path(ref: _TreeRef, node: dict[str, Any]) -> str:
    return f"{ref.path}/{go_unquote(str(node.get('name', '')))}"


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"missing field {e}"
    return str(e) or type(e).__name__
