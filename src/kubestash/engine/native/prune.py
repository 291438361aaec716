"""``forget`` and ``prune`` for the native engine, following restic 0.14's ``forget`` and ``prune``.

``forget`` only deletes snapshot files; the data they referenced stays until ``prune`` removes every blob no
remaining snapshot reaches. Callers must hold an exclusive repository lock for both (this module takes none):
a backup running concurrently could reference a blob prune is deleting.

Prune, as restic 0.14 does it:

1. Load every index file (the per-pack blob lists, duplicates kept) and list ``data/``. A pack an index lists
   but ``data/`` lacks is an error if a snapshot needs one of its blobs (repair the index first), else it is
   just left out of the new index; a pack in ``data/`` no index lists (left by an interrupted backup or
   prune) is "unreferenced" and deleted.
2. Walk every snapshot's trees (bounded concurrency, level by level) to find the used tree and data blobs.
   A used blob missing from the index means data is already lost: prune refuses to run, as restic does.
3. A blob stored more than once (duplicates) counts as used in one pack only (preferably a pack that would be
   kept whole), the other copies as unused. Packs with no used blob are deleted; packs whose blobs are all
   used and of one type are kept (when small -- below 1/25 of the target pack size -- they are repacked
   only if there are at least 10 of them); the rest are repack candidates. Candidates holding tree blobs
   (mixed packs, v2 tree packs with uncompressed blobs) and small candidates are always repacked; large
   data packs are repacked, highest unused share first, until the unused bytes left fall below the
   ``max_unused`` limit. As in restic, ``max_unused`` is a fraction of the repository size *after* prune,
   so the limit is ``used x p / (1 - p)`` (5 % → unused ≤ 5.26 % of used); ``0`` repacks every candidate,
   ``UNLIMITED`` (or ``p >= 1``) no large data pack. A pack's header counts as used space, as in restic.
   The plan printed by :func:`summary_lines` equals ``restic prune --dry-run``'s.
4. The used blobs of the repacked packs (those not also present in a kept pack) are read, verified, and
   written into new packs (data and tree blobs apart; re-encoded, so v2 compresses them).

Crash safety -- the order of writes, each step leaving a repository ``restic check`` accepts:

a. delete unreferenced packs (no index names them);
b. upload the new packs (unreferenced until step c: ``check`` only warns);
c. write new index files listing *every* remaining pack, ``supersedes`` naming the old index files (while
   both exist, blobs are listed twice, which restic accepts);
d. delete the old index files (the new ones already cover every remaining pack);
e. delete the fully unused and the repacked packs (no index names them any more).

An interruption at any point leaves at worst unreferenced packs or duplicate index entries; the next prune
finishes the job. Memory, with the index in memory: every pack's blobs and the set of used blobs, plus at
most :data:`PACK_CONCURRENCY` packs being repacked and two packs being filled. With the index on disk (a
large repository, :mod:`~kubestash.engine.native.index`) the same plan is computed from it: each pack's blobs
are read again where needed, the used and the to-copy blobs go into temporary SQLite files, and the new index
is written as its files fill; what stays in memory is a summary per pack (packs are megabytes each), the
blobs stored twice, the blob lists of the packs written, and the tree walk's current level.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from kubestash.api.retention import SnapshotRecord, apply_retention_policy
from kubestash.api.storage import RetentionPolicySpec
from kubestash.engine.native.backup import COMPRESSION_LEVEL, INDEX_MAX_BLOBS, PACK_SIZE
from kubestash.engine.native.crypto import OVERHEAD
from kubestash.engine.native.files import encode_unpacked, load_json, storage_id
from kubestash.engine.native.index import DiskIndex, HandleSet, IndexEntry, handle_set
from kubestash.engine.native.pack import (
    COMPRESSED_ENTRY,
    HEADER_LENGTH_SIZE,
    PLAIN_ENTRY,
    BlobType,
    IntegrityError,
    PackedBlob,
    decode_blob,
)
from kubestash.engine.native.packer import Pack, PackWriter, index_json
from kubestash.engine.native.repository import (
    NativeRepository,
    RepositoryError,
    SnapshotInfo,
    SnapshotNotFoundError,
    bounded,
    index_entries,
)
from kubestash.engine.native.store import WritableStore, path_of, writable

UNLIMITED = math.inf
"""``max_unused`` for restic's ``--max-unused unlimited``."""
DEFAULT_MAX_UNUSED = 0.05
PACK_CONCURRENCY = 2
"""Packs downloaded for repacking at the same time."""
TREE_CONCURRENCY = 8
FILE_CONCURRENCY = 8
DELETE_CONCURRENCY = 8


Handle = tuple[str, BlobType]
"""A blob as restic identifies it: id and type."""
Progress = Callable[[str], None]


class PruneError(RepositoryError):
    """Prune refuses to run: the repository is damaged in a way pruning could make worse."""


# ---------------------------------------------------------------- forget


def resolve_snapshots(snapshots: Sequence[SnapshotInfo], refs: Iterable[str]) -> list[SnapshotInfo]:
    """The snapshots ``refs`` name (full ids, unique prefixes or ``latest``), each once, in ``refs`` order."""
    chosen: dict[str, SnapshotInfo] = {}
    for ref in refs:
        if ref == "latest" and snapshots:
            matches = [snapshots[-1]]
        else:
            matches = [s for s in snapshots if ref and s.id.startswith(ref)]
        if not matches:
            raise SnapshotNotFoundError(f"no snapshot matched ID {ref!r}")
        if len(matches) > 1:
            raise SnapshotNotFoundError(f"ID {ref!r} is ambiguous: {len(matches)} snapshots match")
        chosen.setdefault(matches[0].id, matches[0])
    return list(chosen.values())


async def forget(repo: NativeRepository, snapshot_ids: Sequence[str]) -> list[str]:
    """Delete the snapshots named by id, unique prefix or ``latest``; their full ids.

    Every name is resolved before anything is deleted, so one unknown or ambiguous name removes nothing.
    """
    found = resolve_snapshots(await repo.snapshots(), snapshot_ids)
    await delete_snapshots(repo, found)
    return [s.id for s in found]


async def delete_snapshots(repo: NativeRepository, snapshots: Iterable[SnapshotInfo]) -> None:
    """Remove the snapshot files (their data stays until a prune)."""
    out = writable(repo.store)
    for snapshot in snapshots:
        await out.delete(path_of("snapshots", snapshot.id))


@dataclass(frozen=True)
class ForgetGroup:
    """One group of restic's default ``--group-by host,paths`` and the policy's decision on it."""

    host: str
    paths: tuple[str, ...]
    """Sorted, as restic's group key has them."""
    keep: list[SnapshotInfo]
    """Newest first."""
    remove: list[SnapshotInfo]
    """Newest first."""
    reasons: dict[str, tuple[str, ...]]
    """Snapshot id → why it is kept (``kept: last 1/2`` ...), from :func:`apply_retention_policy`."""


def plan_forget(
    snapshots: Iterable[SnapshotInfo],
    policy: RetentionPolicySpec,
    *,
    now: datetime,
    host: str | None = None,
    paths: Sequence[str] | None = None,
) -> list[ForgetGroup]:
    """Which snapshots ``policy`` keeps, per group of (host, sorted paths) as restic's default grouping.

    ``host`` and ``paths`` filter first, as ``restic forget --host/--path`` do: only snapshots of that host,
    and holding all of those paths, are considered; the others are neither kept nor removed. Every snapshot
    counts as succeeded (a restic repository records no failures).
    """
    groups: dict[tuple[str, tuple[str, ...]], list[SnapshotInfo]] = defaultdict(list)
    for s in snapshots:
        if host is not None and s.hostname != host:
            continue
        if paths and not set(paths) <= set(s.paths):
            continue
        groups[(s.hostname, tuple(sorted(s.paths)))].append(s)
    result = []
    for (group_host, group_paths), members in sorted(groups.items()):
        by_id = {s.id: s for s in members}
        decisions = apply_retention_policy(policy, (SnapshotRecord(s.id, s.time, True) for s in members), now)
        keep = [by_id[d.snapshot.name] for d in decisions if d.keep]
        remove = [by_id[d.snapshot.name] for d in decisions if not d.keep]
        reasons = {d.snapshot.name: d.reasons for d in decisions if d.keep}
        result.append(ForgetGroup(group_host, group_paths, keep, remove, reasons))
    return result


async def forget_by_policy(
    repo: NativeRepository,
    policy: RetentionPolicySpec,
    *,
    now: datetime,
    host: str | None = None,
    paths: Sequence[str] | None = None,
    dry_run: bool = False,
) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """(kept, removed) under ``policy`` (see :func:`plan_forget`); deletes the removed unless ``dry_run``."""
    groups = plan_forget(await repo.snapshots(), policy, now=now, host=host, paths=paths)
    kept = [s for g in groups for s in g.keep]
    removed = [s for g in groups for s in g.remove]
    if not dry_run:
        await delete_snapshots(repo, removed)
    return kept, removed


# ---------------------------------------------------------------- prune: the plan


@dataclass
class PruneReport:
    """What prune found and did (or, with ``dry_run``, would do). Blob sizes are as stored (encrypted), like
    restic's prune statistics; ``bytes_*`` are whole pack files (headers included)."""

    dry_run: bool
    used_blobs: int = 0
    used_size: int = 0
    duplicate_blobs: int = 0
    duplicate_size: int = 0
    unused_blobs: int = 0
    unused_size: int = 0
    """Blobs no snapshot uses, duplicate copies excluded."""
    unreferenced_packs: int = 0
    unreferenced_size: int = 0
    """Pack files no index lists (deleted whole)."""
    repack_blobs: int = 0
    repack_size: int = 0
    """All blobs of the packs to repack, and their headers (restic's "to repack")."""
    repack_removed_blobs: int = 0
    repack_removed_size: int = 0
    """Of those, the ones dropped (restic's "this removes")."""
    delete_blobs: int = 0
    delete_size: int = 0
    """Blobs of the packs deleted whole (restic's "to delete", without unreferenced packs)."""
    packs_deleted: int = 0
    """Packs deleted whole: unused and unreferenced ones (repacked ones are counted apart)."""
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    """Exact after a run; for ``dry_run`` an estimate (new packs' headers not counted)."""

    @property
    def total_blobs(self) -> int:
        return self.used_blobs + self.duplicate_blobs + self.unused_blobs

    @property
    def total_size(self) -> int:
        return self.used_size + self.duplicate_size + self.unused_size

    @property
    def blobs_removed(self) -> int:
        return self.delete_blobs + self.repack_removed_blobs

    @property
    def pruned_size(self) -> int:
        """restic's "total prune" size."""
        return self.delete_size + self.repack_removed_size + self.unreferenced_size

    @property
    def remaining_blobs(self) -> int:
        return self.total_blobs - self.blobs_removed

    @property
    def remaining_size(self) -> int:
        return self.total_size - self.delete_size - self.repack_removed_size

    @property
    def unused_after(self) -> int:
        """Unused bytes (unused and duplicate blobs) left in kept packs."""
        return self.unused_size + self.duplicate_size - self.delete_size - self.repack_removed_size

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after

    @property
    def nothing_to_do(self) -> bool:
        return not (self.packs_deleted or self.packs_repacked)


@dataclass
class _PackState:
    """A pack's summary (not its blobs: with the index on disk, those are read again when needed)."""

    id: str
    count: int
    types: set[BlobType]
    file_size: int
    uncompressed: bool
    used_blobs: int = 0
    used_size: int = 0
    unused_blobs: int = 0
    unused_size: int = 0

    @classmethod
    def of(cls, pack_id: str, blobs: list[PackedBlob]) -> _PackState:
        uncompressed = any(b.uncompressed_length is None for b in blobs)
        return cls(pack_id, len(blobs), {b.type for b in blobs}, pack_file_size(blobs), uncompressed)


def pack_file_size(blobs: Iterable[PackedBlob]) -> int:
    """A pack's size from its blob list: blobs, encrypted header, header length."""
    blobs = list(blobs)
    header = OVERHEAD + sum(PLAIN_ENTRY if b.uncompressed_length is None else COMPRESSED_ENTRY for b in blobs)
    return sum(b.length for b in blobs) + header + HEADER_LENGTH_SIZE


@dataclass
class _Source:
    """What the plan reads: each pack's blobs (offset order, each once), the blobs stored more than once (with
    the pack of each copy) and whether a handle is indexed: all in memory when the index is (every pack's
    blobs loaded from the index files), else from the on-disk index (memory: the duplicates, whatever the
    repository's size)."""

    index_names: list[str]
    pack_ids: list[str]
    blobs_of: Callable[[str], list[PackedBlob]]
    duplicates: dict[Handle, list[str]]
    indexed: Callable[[Handle], bool]

    @classmethod
    async def load(cls, repo: NativeRepository) -> _Source:
        index = repo.index
        if isinstance(index, DiskIndex):
            await repo.refresh()
            return cls(
                sorted(index.files),
                sorted(index.pack_ids()),
                index.placements,
                index.duplicates(),
                lambda handle: index.has(*handle),
            )
        index_names, pack_blobs = await _load_index(repo)
        copies: dict[Handle, list[str]] = defaultdict(list)
        for pack_id, blobs in pack_blobs.items():
            for b in blobs:
                copies[(b.id, b.type)].append(pack_id)
        duplicates = {handle: where for handle, where in copies.items() if len(where) > 1}
        return cls(index_names, list(pack_blobs), pack_blobs.__getitem__, duplicates, copies.__contains__)


@dataclass
class _Plan:
    report: PruneReport
    source: _Source
    packs: dict[str, _PackState]
    unreferenced: list[str]
    repack_handles: HandleSet
    remove: list[str] = field(default_factory=list)
    repack: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)


def _max_unused_bytes(max_unused: float, used: int) -> float:
    if max_unused < 0:
        raise ValueError(f"max_unused must be >= 0, got {max_unused}")
    if max_unused >= 1:
        return math.inf
    return used * max_unused / (1 - max_unused)


async def _load_index(repo: NativeRepository) -> tuple[list[str], dict[str, list[PackedBlob]]]:
    """(index file names, pack → its blobs in offset order); also refreshes ``repo.index``."""
    names = await repo.store.list("index")
    docs: dict[str, object] = {}

    async def one(name: str) -> None:
        docs[name] = load_json(repo.key, await repo.store.get(path_of("index", name)))

    await bounded(names, one, FILE_CONCURRENCY)
    packs: dict[str, dict[PackedBlob, None]] = defaultdict(dict)
    repo.index.forget_files(repo.index.files - set(names))
    for name in names:
        entries = list(index_entries(docs[name]))
        for entry in entries:
            packs[entry.pack_id][entry.blob] = None
        repo.index.add_file(name, entries)
    return names, {p: sorted(blobs, key=lambda b: b.offset) for p, blobs in packs.items()}


async def used_blobs(repo: NativeRepository, trees: Iterable[str], into: HandleSet | None = None) -> HandleSet:
    """Every tree and data blob reachable from ``trees`` (snapshot roots), added to ``into`` (a new set by
    default); refuses if one is not indexed."""
    used: HandleSet = set() if into is None else into
    level = list(dict.fromkeys(trees))
    for t in level:
        used.add((t, "tree"))
    limit = asyncio.Semaphore(TREE_CONCURRENCY)

    async def load(tree_id: str) -> list[tuple[str, BlobType]]:
        async with limit:
            try:
                nodes = await repo.load_tree(tree_id)
            except IntegrityError as e:
                raise PruneError(
                    f"tree {tree_id} cannot be loaded ({e}); will not prune to prevent (additional) data loss"
                ) from None
        found: list[tuple[str, BlobType]] = []
        for node in nodes:
            if node.type == "dir" and node.subtree:
                found.append((node.subtree, "tree"))
            elif node.type == "file":
                found += [(blob, "data") for blob in node.content or ()]
        return found

    while level:
        following: list[str] = []
        for found in await asyncio.gather(*(load(t) for t in level)):
            for handle in found:
                if handle not in used:
                    used.add(handle)
                    if handle[1] == "tree":
                        following.append(handle[0])
        level = following
    return used


async def _plan(
    repo: NativeRepository,
    max_unused: float,
    ignore_snapshots: Collection[str],
    pack_size: int,
    progress: Progress,
) -> _Plan:
    progress("loading indexes...")
    source = await _Source.load(repo)
    # Only names that are ids: a temporary file an interrupted upload left is no pack (restic skips them too).
    stored = {name for name in await repo.store.list("data")}
    missing = set(source.pack_ids) - stored
    progress("loading all snapshots...")
    snapshots = [s for s in await repo.snapshots() if s.id not in ignore_snapshots]
    progress(f"finding data that is still in use for {len(snapshots)} snapshots")
    used = await used_blobs(repo, (s.tree for s in snapshots), into=handle_set(repo.index))
    lost = sorted(handle for handle in used if not source.indexed(handle))
    if lost:
        raise PruneError(
            f"{len(lost)} used blobs are not in the index (first: {lost[0][1]} blob {lost[0][0]}); "
            "will not prune to prevent (additional) data loss"
        )

    progress("searching used packs...")
    report = PruneReport(dry_run=False)
    duplicates = source.duplicates
    packs: dict[str, _PackState] = {}
    # Unique used blobs and never-used blobs first; duplicates of used blobs are placed afterwards.
    for pack_id in source.pack_ids:
        blobs = source.blobs_of(pack_id)
        state = packs[pack_id] = _PackState.of(pack_id, blobs)
        for b in blobs:
            handle = (b.id, b.type)
            if handle not in used:
                state.unused_blobs += 1
                state.unused_size += b.length
                report.unused_blobs += 1
                report.unused_size += b.length
            elif handle not in duplicates:
                state.used_blobs += 1
                state.used_size += b.length
    chosen: dict[Handle, str] = {}
    for handle, where in duplicates.items():
        if handle in used:
            # The copy in the pack that would otherwise stay whole (fewest unused, most used bytes) stays used.
            chosen[handle] = min(where, key=lambda p: (packs[p].unused_size, -packs[p].used_size, p))
    for pack_id in sorted({pack_id for where in duplicates.values() for pack_id in where}):
        state = packs[pack_id]
        for b in source.blobs_of(pack_id):
            handle = (b.id, b.type)
            if handle in chosen:
                if chosen[handle] == state.id:
                    chosen[handle] = ""  # a pack listing the same blob twice: the second listing is a duplicate
                    state.used_blobs += 1
                    state.used_size += b.length
                else:
                    state.unused_blobs += 1
                    state.unused_size += b.length
                    report.duplicate_blobs += 1
                    report.duplicate_size += b.length
    report.used_blobs = len(used)
    report.used_size = sum(s.used_size for s in packs.values())

    progress("collecting packs for deletion and repacking")
    needed_missing = sorted(p for p in missing if packs[p].used_blobs)
    if needed_missing:
        raise PruneError(
            f"the index references {len(needed_missing)} needed pack files which are missing from the repository "
            f"(first: {needed_missing[0]}); repair the index first (restic rebuild-index)"
        )
    plan = _Plan(report, source, packs, sorted(stored - packs.keys()), handle_set(repo.index))
    # restic: only packs below 1/25 of the target pack size count as small; fully used small packs are
    # repacked only when there are at least 10 of them (to merge them, and not to repack one pack forever).
    small = pack_size // 25
    candidates: list[_PackState] = []
    small_candidates: list[_PackState] = []
    for state in sorted(packs.values(), key=lambda s: s.id):
        must_compress = repo.config.version >= 2 and state.types == {"tree"} and state.uncompressed
        if state.used_blobs == 0:
            plan.remove.append(state.id)  # a missing pack nobody needs is dropped from the index as well
            report.delete_blobs += state.count
            report.delete_size += state.unused_size
        elif state.unused_blobs == 0 and len(state.types) == 1 and not must_compress:
            if state.file_size >= small:
                plan.keep.append(state.id)
            else:
                small_candidates.append(state)
        else:
            candidates.append(state)
    if len(small_candidates) < 10:
        plan.keep += [s.id for s in small_candidates]
    else:
        candidates += small_candidates

    def order(s: _PackState) -> tuple[bool, bool, float, str]:
        # Tree (and mixed) packs first, then small packs, then the highest unused share (the header counts
        # as used space, as in restic).
        return (s.types == {"data"}, s.file_size >= small, -s.unused_size / s.file_size, s.id)

    limit = _max_unused_bytes(max_unused, report.used_size)
    unused_total = report.unused_size + report.duplicate_size
    for state in sorted(candidates, key=order):
        reached = unused_total - report.delete_size - report.repack_removed_size < limit
        must_compress = repo.config.version >= 2 and state.types == {"tree"} and state.uncompressed
        if state.types == {"data"} and not must_compress and reached and state.file_size >= small:
            plan.keep.append(state.id)
            continue
        plan.repack.append(state.id)
        report.repack_blobs += state.count
        report.repack_size += state.file_size
        report.repack_removed_blobs += state.unused_blobs
        report.repack_removed_size += state.unused_size

    # A used blob of a repacked pack is copied unless a kept pack has it too (then it is a duplicate).
    kept = set(plan.keep)
    for pack_id in plan.repack:
        for b in source.blobs_of(pack_id):
            handle = (b.id, b.type)
            if handle in used and not any(p in kept for p in duplicates.get(handle, ())):
                plan.repack_handles.add(handle)
    report.packs_deleted = len(plan.remove) + len(plan.unreferenced)
    report.packs_repacked = len(plan.repack)
    report.bytes_before = sum(s.file_size for s in packs.values() if s.id not in missing)
    report.bytes_after = sum(packs[pid].file_size for pid in plan.keep)
    return plan


# ---------------------------------------------------------------- prune: doing it


async def _repack(
    repo: NativeRepository, out: WritableStore, plan: _Plan, pack_size: int, progress: Progress
) -> list[Pack]:
    """Copy the wanted blobs of the packs to repack into new packs; the new packs (without their bytes)."""
    version = repo.config.version
    writers: dict[BlobType, PackWriter] = {
        t: PackWriter(repo.key, version, compression_level=COMPRESSION_LEVEL) for t in ("data", "tree")
    }
    written: list[Pack] = []
    pending = plan.repack_handles  # each copied once: the first pack holding it claims it
    lock = asyncio.Lock()

    async def upload(pack: Pack) -> None:
        await out.put(pack.path, pack.data)
        written.append(Pack(pack.id, b"", pack.blobs))

    async def one(pack_id: str) -> None:
        mine: list[PackedBlob] = []
        for b in plan.source.blobs_of(pack_id):
            if (b.id, b.type) in pending:
                pending.discard((b.id, b.type))
                mine.append(b)
        if not mine:
            return
        data = await repo.store.get(path_of("data", pack_id))

        def decode() -> list[tuple[PackedBlob, bytes]]:
            return [(b, decode_blob(repo.key, b, data[b.offset : b.offset + b.length], pack_id)) for b in mine]

        plain = await asyncio.to_thread(decode)
        async with lock:
            for b, content in plain:
                writer = writers[b.type]
                await asyncio.to_thread(writer.add, b.type, content, b.id)
                if writer.size >= pack_size:
                    await upload(writer.finish())

    await bounded(plan.repack, one, PACK_CONCURRENCY)
    for writer in writers.values():
        if writer.count:
            await upload(writer.finish())
    progress(f"repacked {len(plan.repack)} packs into {len(written)} new packs\n")
    return written


async def _write_index(
    repo: NativeRepository,
    out: WritableStore,
    packs: Iterable[Pack],
    supersedes: list[str],
    written: Callable[[str, list[Pack]], None],
) -> None:
    """New index files for ``packs`` (consumed as they come: one file's packs in memory), at most
    :data:`INDEX_MAX_BLOBS` blobs each; the first supersedes all the old index files (and at least one is
    written, so that ``supersedes`` is recorded). ``written`` gets each file's name and packs once stored."""
    first = True

    async def write(batch: list[Pack]) -> None:
        nonlocal first
        doc = index_json(batch, supersedes if first else ())
        first = False
        data = await asyncio.to_thread(encode_unpacked, repo.key, doc, repo.config.version)
        name = storage_id(data)
        await out.put(path_of("index", name), data)
        written(name, batch)

    batch: list[Pack] = []
    count = 0
    for pack in packs:
        if batch and count + len(pack.blobs) > INDEX_MAX_BLOBS:
            await write(batch)
            batch, count = [], 0
        batch.append(pack)
        count += len(pack.blobs)
    if batch or first:
        await write(batch)


async def _delete_all(out: WritableStore, paths: Iterable[str]) -> None:
    async def one(path: str) -> None:
        await out.delete(path)

    await bounded(list(paths), one, DELETE_CONCURRENCY)


async def prune(
    repo: NativeRepository,
    *,
    max_unused: float = DEFAULT_MAX_UNUSED,
    dry_run: bool = False,
    on_progress: Progress | None = None,
    pack_size: int = PACK_SIZE,
    ignore_snapshots: Collection[str] = (),
) -> PruneReport:
    """Remove data no snapshot uses (see the module docstring for the algorithm and the crash-safe order).

    ``max_unused``: tolerated unused fraction of the repository size after prune (0.05 is restic's
    ``--max-unused 5%``; :data:`UNLIMITED` repacks no large data pack). ``pack_size``: the size new packs are
    filled to, and restic's target pack size (a pack below 1/25 of it is "small" and repacked whenever it is a
    candidate). ``ignore_snapshots``: snapshot ids treated as already forgotten (``forget --dry-run --prune``).
    ``on_progress`` receives restic 0.14's output lines, the plan summary included, as the work proceeds.
    """
    progress: Progress = on_progress or (lambda _line: None)
    plan = await _plan(repo, max_unused, set(ignore_snapshots), pack_size, progress)
    report = plan.report
    report.dry_run = dry_run
    out = writable(repo.store) if not dry_run else None
    sizes: dict[str, int] = {}
    if plan.unreferenced:
        for pid in plan.unreferenced:  # rare leftovers of an interrupted run: read once to learn their size
            sizes[pid] = len(await repo.store.get(path_of("data", pid)))
        report.unreferenced_packs = len(plan.unreferenced)
        report.unreferenced_size = sum(sizes.values())
        report.bytes_before += report.unreferenced_size
    for line in ["", *summary_lines(report), ""]:
        progress(line)
    if out is None:
        report.bytes_after += sum(
            b.length for pid in plan.repack for b in plan.source.blobs_of(pid) if (b.id, b.type) in plan.repack_handles
        )
        return report
    if plan.unreferenced:
        progress("deleting unreferenced packs")
        await _delete_all(out, (path_of("data", pid) for pid in plan.unreferenced))
    if not plan.remove and not plan.repack:
        if plan.unreferenced:
            progress("done")
        return report

    new_packs: list[Pack] = []
    if plan.repack:
        progress("repacking packs")
        new_packs = await _repack(repo, out, plan, pack_size, progress)
    report.packs_written = len(new_packs)
    report.bytes_after += sum(pack_file_size(p.blobs) for p in new_packs)

    progress("rebuilding index")
    kept = (Pack(pid, b"", tuple(plan.source.blobs_of(pid))) for pid in sorted(plan.keep))
    later: list[tuple[str, list[Pack]]] = []  # an index in memory starts over when a file goes: add after

    def written(name: str, batch: list[Pack]) -> None:
        if isinstance(repo.index, DiskIndex):
            repo.index.add_file(name, _entries(batch))
        else:
            later.append((name, batch))

    await _write_index(repo, out, itertools.chain(kept, new_packs), plan.source.index_names, written)
    progress("deleting obsolete index files")
    await _delete_all(out, (path_of("index", name) for name in plan.source.index_names))
    obsolete = sorted(plan.remove + plan.repack)
    progress(f"removing {len(obsolete)} old packs")
    await _delete_all(out, (path_of("data", pid) for pid in obsolete))

    repo.index.forget_files(plan.source.index_names)
    for name, batch in later:
        repo.index.add_file(name, _entries(batch))
    progress("done")
    return report


def _entries(packs: list[Pack]) -> list[IndexEntry]:
    return [IndexEntry(pack.id, blob) for pack in packs for blob in pack.blobs]


def summary_lines(report: PruneReport) -> list[str]:
    """restic 0.14's prune plan summary (``to repack:`` ... ``unused size after prune:``)."""
    from kubestash.api.sizes import human_size

    def row(label: str, blobs: int, size: int) -> str:
        return f"{label:<14}{blobs:10d} blobs / {human_size(size)}"

    remaining = report.remaining_size
    percent = 100 * report.unused_after / remaining if remaining else 0.0
    lines = [
        row("to repack:", report.repack_blobs, report.repack_size),
        row("this removes:", report.repack_removed_blobs, report.repack_removed_size),
        row("to delete:", report.delete_blobs, report.delete_size + report.unreferenced_size),
        row("total prune:", report.blobs_removed, report.pruned_size),
        row("remaining:", report.remaining_blobs, remaining),
        f"unused size after prune: {human_size(report.unused_after)} ({percent:.2f}% of remaining size)",
    ]
    if report.nothing_to_do:
        lines += ["", "nothing to do"]
    return lines
