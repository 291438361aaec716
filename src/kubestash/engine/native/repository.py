"""Opening a restic repository and reading from it: keys, config, index, snapshots, blobs and trees.

This is the read side every native command builds on (restore now; ls, stats, check later). Opening does
what ``restic`` does before any command: find the key file the password opens, read ``config`` (repository
version 1 or 2), and load every index file into one map from blob id to where the blob lives, so any blob is
one ranged read of its pack away. That map is in memory for small repositories and in an on-disk cache for
large ones (:mod:`~kubestash.engine.native.index`).
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from kubestash.engine.native.aio import run_all
from kubestash.engine.native.crypto import CryptoError, Key, open_key_file
from kubestash.engine.native.files import load_json
from kubestash.engine.native.index import (
    BlobIndex,
    DiskIndex,
    IndexEntry,
    MemoryIndex,
    cache_errors,
    index_mode,
    memory_limit_bytes,
)
from kubestash.engine.native.pack import BlobType, IntegrityError, PackedBlob, decode_blob
from kubestash.engine.native.store import Store, StoreError, list_sizes, path_of
from kubestash.engine.native.tree import Node, node_from_json

log = logging.getLogger(__name__)

_READ_CONCURRENCY = 8
REFRESH_ATTEMPTS = 3
"""Index listings a refresh reads through when index files vanish between the listing and the read (a prune
replacing them: the index is read before any lock is taken, as it is to open a repository)."""
T = TypeVar("T")


class RepositoryError(Exception):
    """The repository cannot be used: missing, unsupported, or a lookup that has no answer."""


class WrongPasswordError(RepositoryError):
    """No key file in the repository opens with the given password."""


class SnapshotNotFoundError(RepositoryError):
    """No snapshot (or more than one) matches the given id, prefix or ``latest``."""


@dataclass(frozen=True)
class RepositoryConfig:
    version: int
    id: str
    chunker_polynomial: str


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot file's content (the fields KubeStash uses) and its id (the file's storage id)."""

    id: str
    time: datetime
    time_text: str
    """``time`` exactly as stored (Go's RFC 3339 with nanoseconds): what ``restic snapshots --json`` prints."""
    tree: str
    paths: tuple[str, ...]
    hostname: str = ""
    username: str = ""
    uid: int | None = None
    gid: int | None = None
    tags: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    parent: str | None = None
    program_version: str | None = None

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @classmethod
    def from_json(cls, snapshot_id: str, doc: dict[str, Any]) -> SnapshotInfo:
        text = str(doc["time"])
        return cls(
            id=snapshot_id,
            time=parse_time(text),
            time_text=text,
            tree=str(doc["tree"]),
            paths=tuple(doc.get("paths") or ()),
            hostname=str(doc.get("hostname") or ""),
            username=str(doc.get("username") or ""),
            uid=doc.get("uid"),
            gid=doc.get("gid"),
            tags=tuple(doc.get("tags") or ()),
            excludes=tuple(doc.get("excludes") or ()),
            parent=doc.get("parent"),
            program_version=doc.get("program_version"),
        )


_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))$")


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch from Go's RFC 3339 (``datetime`` would lose the last three digits)."""
    m = _TIME.match(text)
    if m is None:
        raise RepositoryError(f"unparseable time {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    fraction = (m.group(7) or "").ljust(9, "0")[:9]
    return seconds * 1_000_000_000 + int(fraction)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class NativeRepository:
    """An open restic repository: its master key, config and index."""

    def __init__(
        self, store: Store, key: Key, config: RepositoryConfig, index: BlobIndex | None = None, *, key_id: str = ""
    ) -> None:
        self.store = store
        self.key = key
        self.config = config
        self.index: BlobIndex = MemoryIndex() if index is None else index
        """Blob id → where it lives, with the index files it holds (loaded or written here: :meth:`refresh`
        reads only others) and each pack's blobs."""
        self.key_id = key_id
        """The name of the key file the password opened (``restic key list`` marks it current)."""
        self.vouched: dict[str, frozenset[str]] = {}
        """Snapshot id → trees its backup (in this process) read from the repository and found unchanged,
        with every blob below them indexed: what the check after that backup need not read again."""

    # ------------------------------------------------------------ opening

    @classmethod
    async def open(cls, store: Store, password: str, *, known: tuple[str, Key] | None = None) -> NativeRepository:
        """Open with ``password``; ``known`` = (key file name, master key) from an earlier open skips the key
        derivation while that key file still exists (:class:`WrongPasswordError` once it is gone)."""
        if not await store.list("config"):
            raise RepositoryError(f"{store.description}: no repository here (no config file)")
        if known is not None:
            if known[0] not in await store.list("keys"):
                raise WrongPasswordError(f"{store.description}: key {known[0][:8]} no longer exists")
            key_id, key = known
        else:
            key_id, key = await find_key_file(store, password)
        config = await _read_config(store, key, remembered=known is not None)
        sizes = await list_sizes(store, "index")
        repo = cls(store, key, config, new_index(config.id, key, sum(s or 0 for s in sizes.values())), key_id=key_id)
        await repo.refresh(set(sizes))
        return repo

    async def revalidate(self) -> None:
        """Before reusing this open repository for another operation: it is still the same repository
        (same config id), its key file still exists, and the index catches up with what others wrote."""
        if not await self.store.list("config"):
            raise RepositoryError(f"{self.store.description}: no repository here (no config file)")
        if self.key_id not in await self.store.list("keys"):
            raise WrongPasswordError(f"{self.store.description}: key {self.key_id[:8]} no longer exists")
        config = await _read_config(self.store, self.key, remembered=True)
        if config.id != self.config.id:
            raise RepositoryError(f"{self.store.description}: a different repository now")
        await self.refresh()

    async def refresh(self, names: set[str] | None = None) -> None:
        """Catch up with the index files written or removed since the index was loaded (by anyone); ``names``:
        the index files, if just listed. Files are parsed one at a time (one parsed index file in memory, not
        all: ``bench/index.py``, 200k blobs in memory, peak RSS 213 → 129 MiB with compact rows), and added
        as they are parsed (a lookup meanwhile may find some new blobs: they are all in the repository). In
        memory, a removed file (a prune rewrote the index) means loading all again, into a new index that
        replaces the old once complete, so a lookup never finds the index half loaded. On disk, each file is
        added in one transaction, and removed files are forgotten after the new ones are in."""
        listed = names if names is not None else set(await self.store.list("index"))
        for _ in range(REFRESH_ATTEMPTS - 1):
            try:
                await self._catch_up(listed)
                return
            except StoreError:
                # Listed, then gone before it was read: a prune (holding its lock) replaced the index files.
                # Anything else -- a file still listed but unreadable -- is raised.
                again = set(await self.store.list("index"))
                if listed <= again:
                    raise
                listed = again
        await self._catch_up(listed)

    async def _catch_up(self, names: set[str]) -> None:
        index = self.index
        known = index.files
        gone = known - names
        if isinstance(index, DiskIndex):
            index.touch()
            await self._add_index_files(index, sorted(names - known))
            index.forget_files(gone)
            return
        if gone:  # in memory, forgetting a file forgets all: the index is loaded again, aside, then swapped in
            staged = MemoryIndex()
            await self._add_index_files(staged, sorted(names))
            self.index = staged
        else:
            await self._add_index_files(index, sorted(names - known))

    async def _add_index_files(self, index: BlobIndex, names: list[str]) -> None:
        limit, parsing = asyncio.Semaphore(_READ_CONCURRENCY), asyncio.Lock()

        def add(name: str, data: bytes) -> None:
            try:
                index.add_file(name, index_entries(self._decoded("index", name, data)))
            except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
                # Authentic (it decrypted) but not an index: some other writer's bug, named, not a traceback.
                raise IntegrityError(f"index/{name}: not a valid index file ({type(e).__name__}: {e})") from None

        async def one(name: str) -> None:
            async with limit:
                data = await self.store.get(f"index/{name}")
                async with parsing:
                    await asyncio.to_thread(add, name, data)

        await run_all(one(name) for name in names)

    async def _load_all(self, kind: str, names: list[str]) -> list[Any]:
        limit = asyncio.Semaphore(_READ_CONCURRENCY)

        async def one(name: str) -> Any:
            async with limit:
                data = await self.store.get(f"{kind}/{name}")
            return await asyncio.to_thread(self._decoded, kind, name, data)

        return list(await asyncio.gather(*(one(n) for n in names)))

    def _decoded(self, kind: str, name: str, data: bytes) -> Any:
        """An unpacked file's JSON; damage named by its path."""
        try:
            return load_json(self.key, data)
        except CryptoError as e:
            raise IntegrityError(f"{kind}/{name}: {e}") from None

    # ------------------------------------------------------------ snapshots

    async def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        names = await self.store.list("snapshots")
        docs = await self._load_all("snapshots", names)
        infos = [SnapshotInfo.from_json(name, doc) for name, doc in zip(names, docs, strict=True)]
        return sorted(infos, key=lambda s: (parse_time_ns(s.time_text), s.id))

    async def find_snapshot(self, ref: str) -> SnapshotInfo:
        """The snapshot ``ref`` names: ``latest``, a full id, or a prefix that only one snapshot id has (read
        alone: an id is a file name)."""
        if ref == "latest":
            snapshots = await self.snapshots()
            if not snapshots:
                raise SnapshotNotFoundError("no snapshot found: the repository has none")
            return snapshots[-1]
        matches = [name for name in await self.store.list("snapshots") if name.startswith(ref)] if ref else []
        if len(matches) == 1:
            (doc,) = await self._load_all("snapshots", matches)
            return SnapshotInfo.from_json(matches[0], doc)
        if not matches:
            raise SnapshotNotFoundError(f"no snapshot matched ID {ref!r}")
        raise SnapshotNotFoundError(f"ID {ref!r} is ambiguous: {len(matches)} snapshots match")

    # ------------------------------------------------------------ blobs

    def lookup(self, blob_id: str) -> IndexEntry:
        entry = self.index.get(blob_id)
        if entry is None:
            raise IntegrityError(f"blob {blob_id} is not in the index")
        return entry

    async def load_blob(self, blob_id: str) -> bytes:
        entry = self.lookup(blob_id)
        data = await self.store.get_range(path_of("data", entry.pack_id), entry.blob.offset, entry.blob.length)
        return await asyncio.to_thread(decode_blob, self.key, entry.blob, data, entry.pack_id)

    async def load_tree(self, tree_id: str) -> list[Node]:
        """A tree blob's nodes."""
        items = await self.load_tree_items(tree_id)
        try:
            return [node_from_json(item) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"tree {tree_id} is not a valid tree: {exc}") from None

    async def load_tree_items(self, tree_id: str) -> list[dict[str, Any]]:
        """A tree blob's nodes as its JSON has them, for readers that need a few fields of each (building
        :class:`Node` objects, times parsed, cost the walk of an unchanged backup as much as the rest)."""
        blob = self.lookup(tree_id).blob
        data = await self.load_blob(tree_id) if blob.type == "tree" else b""  # not read: tree_items refuses it
        return tree_items(tree_id, blob, data)


Item = dict[str, Any]
"""A tree node as its JSON has it (parsed into a :class:`Node` only where a reader needs every field)."""


def tree_items(tree_id: str, blob: PackedBlob, data: bytes) -> list[Item]:
    """The nodes of tree blob ``tree_id`` (``blob`` its index entry, ``data`` its plaintext) as JSON objects."""
    if blob.type != "tree":
        raise IntegrityError(f"blob {tree_id} is a {blob.type} blob, not a tree")
    try:
        doc = json.loads(data.decode("utf-8", "replace"))
    except ValueError as exc:
        raise IntegrityError(f"tree {tree_id} is not a valid tree: {exc}") from None
    items = (doc.get("nodes") or []) if isinstance(doc, dict) else None  # an empty tree may say null
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise IntegrityError(f"tree {tree_id} is not a valid tree: no list of nodes")
    return items


async def _read_config(store: Store, key: Key, *, remembered: bool) -> RepositoryConfig:
    try:
        doc = load_json(key, await store.get("config"))
    except CryptoError:
        if not remembered:
            raise
        raise WrongPasswordError(f"{store.description}: the remembered key does not open config") from None
    config = RepositoryConfig(int(doc["version"]), str(doc["id"]), str(doc.get("chunker_polynomial", "")))
    if config.version not in (1, 2):
        raise RepositoryError(f"{store.description}: unsupported repository version {config.version}")
    return config


async def bounded(items: Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    """Run ``work`` on every item, at most ``limit`` at a time (workers pull from one iterator)."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(limit)))


async def find_key(store: Store, password: str) -> Key:
    """The master key from the first key file the password opens (restic tries them all the same way)."""
    return (await find_key_file(store, password))[1]


async def find_key_file(store: Store, password: str) -> tuple[str, Key]:
    """(key file name, master key) of the first key file the password opens."""
    for name in await store.list("keys"):
        try:
            doc = json.loads(await store.get(f"keys/{name}"))
            return name, await asyncio.to_thread(open_key_file, doc, password)
        except (CryptoError, ValueError, KeyError, TypeError):
            continue
    raise WrongPasswordError(f"{store.description}: wrong password or no key found")


def new_index(repository_id: str, key: Key, index_bytes: int) -> BlobIndex:
    """An empty index of the form the repository's size calls for (``KUBESTASH_INDEX`` may force one)."""
    mode = index_mode()
    if mode == "disk" or (mode == "auto" and index_bytes >= memory_limit_bytes()):
        try:
            return DiskIndex.for_repository(repository_id, key)
        except cache_errors() as e:  # nowhere to write even a temporary file (read-only file systems): in memory
            log.warning("index cache unavailable (%s): keeping the index in memory", e)
    return MemoryIndex()


def index_entries(doc: Any) -> Iterable[IndexEntry]:
    """Every (pack, blob) an index file's JSON lists -- a blob stored twice appears twice."""
    packs = doc if isinstance(doc, list) else doc.get("packs") or []  # a list: restic's legacy index format
    for pack in packs:
        pack_id = str(pack["id"])
        for blob in pack.get("blobs") or ():
            blob_type: BlobType = "tree" if blob["type"] == "tree" else "data"
            offset, length = int(blob["offset"]), int(blob["length"])
            uncompressed = int(blob.get("uncompressed_length") or 0) or None
            if offset < 0 or length <= 0 or (uncompressed or 0) < 0:
                raise ValueError(f"blob {blob['id']} of pack {pack_id}: a negative offset or length")
            yield IndexEntry(pack_id, PackedBlob(str(blob["id"]), blob_type, offset, length, uncompressed))
