"""Where each blob lives: the repository's index, in memory or, for large repositories, on disk.

restic loads every index file into memory on every command, and its memory grows with the repository (its
users' second pain point: OOM-killed backups and prunes of multi-terabyte repositories). In CPython a blob's
entry costs ~230 bytes even as compact rows: fine for the 22k blobs of a 1 GiB backup (5 MiB), 2.3 GB for 10M.

So the index has two forms behind one interface (a read-only mapping from blob id to :class:`IndexEntry`,
plus the index files it holds and each pack's blobs):

- :class:`MemoryIndex`, a ``dict`` and typed arrays (~230 bytes a blob): lookups in ~1 µs; used while the
  repository's index files sum to less than :data:`MEMORY_LIMIT_MIB` (``KUBESTASH_INDEX_MEMORY_MIB``, default
  4 MiB of index files: ~100k blobs, ~100 GiB of data in 1 MiB chunks, ~25 MiB of memory at most).
- :class:`DiskIndex`, an SQLite file in the cache directory: memory stays at SQLite's page cache (4 MiB)
  whatever the repository's size, and reopening the repository parses only the index files written since
  (restic re-reads all of them every time). A lookup costs ~10 µs: seconds per TiB backed up. Building the
  cache the first time costs ~15 µs per blob (``bench/index.py``, 1M blobs: built in 17 s once, reopened in
  0.4 s with 77 MiB peak RSS, where restic needs 3.6 s and 150 MiB and the dict 9.8 s and 800 MiB).
  ``KUBESTASH_INDEX=memory|disk`` forces one form (default ``auto``).

The cache lives in ``$KUBESTASH_CACHE_DIR`` (else ``$XDG_CACHE_HOME/kubestash``, else
``~/.cache/kubestash``), one file per repository id, or in a temporary file (removed when closed) when that
directory cannot be written; a cache unused for 30 days is deleted when another is opened. It is only ever
a copy of authenticated index files: its file list is reconciled with the repository's ``index/`` listing
on every open and refresh, and a file it cannot use is rebuilt. Blob ids are stored AES-256-ECB-encrypted
under a key derived from the master key (deterministic, so lookups still work; ECB shows only equality of
ids, which the table's uniqueness shows anyway), so the cache names no blob: a blob id is the SHA-256 of
content, and restic keeps ids inside encrypted files only. Pack ids (file names in ``data/``), offsets and
lengths are stored as they are.

Written around the standard library's ``sqlite3``: no maintained package offers a persistent, concurrent
(several processes back up at once), bounded-memory map from 32-byte keys to small records.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
import threading
import time
import weakref
from array import array
from collections.abc import Collection, Iterable, Iterator, KeysView
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kubestash.engine.native.crypto import Key
from kubestash.engine.native.pack import BlobType, PackedBlob

if TYPE_CHECKING:
    import sqlite3  # imported when a disk index is first used: every command would pay ~7 ms for it otherwise

log = logging.getLogger(__name__)

MEMORY_LIMIT_MIB = 4.0
"""Index files summing to less than this are held in memory (``auto``; ``KUBESTASH_INDEX_MEMORY_MIB``)."""
CACHE_MAX_AGE_S = 30 * 86400
"""A repository's index cache unused this long is deleted (restic's ``--cleanup-cache`` age)."""

_SCHEMA = 1
_PAGE_CACHE_KIB = 4096
_TYPES: tuple[BlobType, BlobType] = ("data", "tree")
_TABLES = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE files (no INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE packs (no INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE)",  # a number is never reused
    "CREATE TABLE blobs (id BLOB NOT NULL, file INTEGER NOT NULL, pack INTEGER NOT NULL, type INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, length INTEGER NOT NULL, ulength INTEGER, PRIMARY KEY (id, file)) WITHOUT ROWID",
    "CREATE INDEX blobs_by_pack ON blobs (pack)",
)


class IndexEntry(NamedTuple):
    """Where a blob lives: its pack and its place in it (a named tuple, like :class:`PackedBlob`)."""

    pack_id: str
    blob: PackedBlob


IndexMode = Literal["auto", "memory", "disk"]


def memory_limit_bytes() -> int:
    text = os.environ.get("KUBESTASH_INDEX_MEMORY_MIB", "")
    try:
        return int(float(text or MEMORY_LIMIT_MIB) * (1 << 20))
    except ValueError:
        raise ValueError(f"KUBESTASH_INDEX_MEMORY_MIB: {text!r} is not a number of MiB") from None


def index_mode() -> IndexMode:
    mode = os.environ.get("KUBESTASH_INDEX", "auto")
    if mode not in ("auto", "memory", "disk"):
        raise ValueError(f"KUBESTASH_INDEX: {mode!r} is not one of auto, memory, disk")
    return mode  # type: ignore[return-value]


def cache_dir() -> Path:
    explicit = os.environ.get("KUBESTASH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kubestash"


class MemoryIndex:
    """The whole index in memory: a dict from blob id to its first row, the rows in typed arrays.

    A dict of :class:`IndexEntry` tuples cost ~600 bytes a blob (the entry, its :class:`PackedBlob`, three int
    objects, the id string); these rows cost ~230 (the id string, its dict slot and row number, 33 bytes of
    arrays), and an entry is built when it is looked up (~1 µs)."""

    def __init__(self) -> None:
        self._adding = threading.Lock()
        """Held while a file is added (two refreshes in threads must not both add one file); lookups never wait."""
        self._reset()

    def _reset(self) -> None:
        self.files: set[str] = set()
        self._first: dict[str, int] = {}
        """Blob id → the row of its first place (a blob indexed twice keeps its first place for lookups)."""
        self._ids: list[str] = []
        self._pack = array("I")
        self._kind = array("B")
        self._offset = array("Q")
        self._length = array("Q")
        self._ulength = array("q")
        """Uncompressed length, -1 for a plain blob."""
        self._packs: dict[str, int] = {}
        self._pack_names: list[str] = []
        self._pack_rows: list[array[int]] = []

    def add_file(self, name: str, entries: Iterable[IndexEntry]) -> None:
        with self._adding:
            if name not in self.files:
                self._add(entries)
                self.files.add(name)

    def _add(self, entries: Iterable[IndexEntry]) -> None:
        first, ids, packs = self._first, self._ids, self._packs
        for pack_id, blob in entries:
            row = len(ids)
            number = packs.get(pack_id)
            if number is None:
                number = len(self._pack_names)
                self._pack_names.append(pack_id)
                self._pack_rows.append(array("I"))
                packs[pack_id] = number
            ids.append(blob.id)
            self._pack.append(number)
            self._kind.append(blob.type == "tree")
            self._offset.append(blob.offset)
            self._length.append(blob.length)
            self._ulength.append(-1 if blob.uncompressed_length is None else blob.uncompressed_length)
            self._pack_rows[number].append(row)
            first.setdefault(blob.id, row)  # last: a lookup in another thread finds the row only once it is whole

    def forget_files(self, names: Collection[str]) -> None:
        """Entries do not remember their file: forgetting any file forgets everything (callers add back what
        they still have, see :meth:`NativeRepository.refresh`)."""
        with self._adding:
            if self.files & set(names):
                self._reset()

    def _entry(self, row: int) -> IndexEntry:
        ulength: int | None = self._ulength[row]
        if ulength == -1:
            ulength = None
        blob = PackedBlob(self._ids[row], _TYPES[self._kind[row]], self._offset[row], self._length[row], ulength)
        return IndexEntry(self._pack_names[self._pack[row]], blob)

    def get(self, blob_id: str, default: None = None) -> IndexEntry | None:
        row = self._first.get(blob_id)
        return None if row is None else self._entry(row)

    def __getitem__(self, blob_id: str) -> IndexEntry:
        entry = self.get(blob_id)
        if entry is None:
            raise KeyError(blob_id)
        return entry

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._first

    def __len__(self) -> int:
        return len(self._first)

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def values(self) -> Iterator[IndexEntry]:
        """Every blob once, at its first place."""
        return (self._entry(row) for row in self._first.values())

    def pack_ids(self) -> KeysView[str]:
        return self._packs.keys()

    def blobs_in(self, pack_id: str) -> list[PackedBlob]:
        """A pack's blobs as the index lists them (twice if two index files name the pack)."""
        number = self._packs.get(pack_id)
        return [] if number is None else [self._entry(row).blob for row in self._pack_rows[number]]

    def close(self) -> None:
        pass


class DiskIndex:
    """The index in an SQLite file: the same lookups as :class:`MemoryIndex`, memory independent of size.

    One connection per thread and process (a forked backup worker opens its own), WAL journal so readers
    never wait for a writer, each index file added in one transaction (a file another process added in the
    meantime is skipped, so concurrent opens of one repository build the cache once)."""

    def __init__(self, path: Path | None, key: Key) -> None:
        secret = hmac.digest(key.encrypt, b"kubestash index cache v1", "sha256")
        self._cipher = Cipher(algorithms.AES(secret), modes.ECB())
        self._check = hashlib.sha256(secret).hexdigest()
        self._local = threading.local()
        self._pack_names: dict[int, str] = {}
        """Pack number → pack id, as lookups meet them (packs are megabytes each: few even in large repositories)."""
        self._temporary = path is None
        if path is None:
            fd, name = tempfile.mkstemp(prefix="kubestash-index-", suffix=".sqlite")
            os.close(fd)
            path = Path(name)
        self.path = path
        try:
            self._prepare()
        except _sqlite().DatabaseError as e:  # not a database, an older schema, another key: start over
            log.info("index cache %s unusable (%s): rebuilding it", path, e)
            self._drop_connection()
            path.unlink(missing_ok=True)
            self._prepare()
        if self._temporary:
            weakref.finalize(self, _remove, path)
        self.touch()

    def touch(self) -> None:
        """Mark the cache used now: its age (for the 30-day cleanup) is the time since it was last used, and a
        process that keeps a repository open (the operator) refreshes it before every operation."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    @classmethod
    def for_repository(cls, repository_id: str, key: Key) -> DiskIndex:
        directory = cache_dir() / "index"
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            _remove_stale(directory)
            path = directory / f"{repository_id}.sqlite"
            with open(path, "ab"):
                pass
            os.chmod(path, 0o600)
        except OSError as e:
            log.info("index cache directory %s not writable (%s): using a temporary file", directory, e)
            return cls(None, key)
        return cls(path, key)

    # ------------------------------------------------------------ connections and schema

    def _db(self) -> sqlite3.Connection:
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is None or local.pid != os.getpid():  # a forked child must not use its parent's connection
            if db is not None:
                _INHERITED.append(db)  # nor close it (SQLite's warning): kept, unused, until the child exits
            db = _sqlite().connect(self.path, timeout=120, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
            db.execute("PRAGMA synchronous = OFF")  # a cache: a crash at worst loses it, never the repository
            local.db, local.pid = db, os.getpid()
            local.encrypt = self._cipher.encryptor()
            local.decrypt = self._cipher.decryptor()
        return db

    def _drop_connection(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` (the write lock at once, so two writers queue instead of failing later)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _prepare(self) -> None:
        self._db().execute("PRAGMA journal_mode = WAL")
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _TABLES:
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('key', ?)", (self._check,))
                db.execute(f"PRAGMA user_version = {_SCHEMA}")
            elif version != _SCHEMA:
                raise _sqlite().DatabaseError(f"schema {version}, not {_SCHEMA}")
            else:
                row = db.execute("SELECT value FROM meta WHERE name = 'key'").fetchone()
                if row is None or row[0] != self._check:
                    raise _sqlite().DatabaseError("written under another master key")

    def close(self) -> None:
        self._drop_connection()
        if self._temporary:
            _remove(self.path)

    # ------------------------------------------------------------ ids

    def _key(self, blob_id: str) -> bytes | None:
        """The stored form of a blob id (None if it is no id: no such blob)."""
        self._db()  # this thread's cipher
        try:
            plain = bytes.fromhex(blob_id)
        except ValueError:
            return None
        key: bytes = self._local.encrypt.update(plain)
        return key if len(key) == 32 else None

    def _id(self, key: bytes) -> str:
        return str(self._local.decrypt.update(key).hex())

    # ------------------------------------------------------------ the mapping

    def get(self, blob_id: str, default: None = None) -> IndexEntry | None:
        key = self._key(blob_id)
        if key is None:
            return None
        db = self._db()
        row = db.execute(
            "SELECT pack, type, offset, length, ulength FROM blobs WHERE id = ? LIMIT 1", (key,)
        ).fetchone()
        if row is None:
            return None
        pack_id = self._pack_names.get(row[0])
        if pack_id is None:  # numbers are never reused, so a name once read stays right
            pack_id = self._pack_names[row[0]] = db.execute("SELECT id FROM packs WHERE no = ?", row[:1]).fetchone()[0]
        return IndexEntry(pack_id, PackedBlob(blob_id, _TYPES[row[1]], row[2], row[3], row[4]))

    def __contains__(self, blob_id: object) -> bool:
        key = self._key(blob_id) if isinstance(blob_id, str) else None
        query = "SELECT 1 FROM blobs WHERE id = ? LIMIT 1"
        return key is not None and self._db().execute(query, (key,)).fetchone() is not None

    def __getitem__(self, blob_id: str) -> IndexEntry:
        entry = self.get(blob_id)
        if entry is None:
            raise KeyError(blob_id)
        return entry

    def __len__(self) -> int:
        return int(self._db().execute("SELECT count(DISTINCT id) FROM blobs").fetchone()[0])

    def __iter__(self) -> Iterator[str]:
        return (entry.blob.id for entry in self.values())

    def values(self) -> Iterator[IndexEntry]:
        """Every blob once, at its first place (streamed: memory stays bounded)."""
        previous = None
        rows = self._db().execute(
            "SELECT blobs.id, packs.id, type, offset, length, ulength FROM blobs "
            "JOIN packs ON packs.no = blobs.pack ORDER BY blobs.id, file"
        )
        for key, pack_id, kind, offset, length, ulength in rows:
            if key != previous:
                previous = key
                yield IndexEntry(pack_id, PackedBlob(self._id(key), _TYPES[kind], offset, length, ulength))

    # ------------------------------------------------------------ files and packs

    @property
    def files(self) -> set[str]:
        return {name for (name,) in self._db().execute("SELECT name FROM files")}

    def add_file(self, name: str, entries: Iterable[IndexEntry]) -> None:
        """Add one index file's entries (nothing if another process already added that file)."""
        with self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO files (name) VALUES (?)", (name,))
            if cursor.rowcount:
                self._insert(db, cursor.lastrowid, list(entries))

    def _insert(self, db: sqlite3.Connection, file_no: Any, entries: list[IndexEntry]) -> None:
        """The rows of one index file: ids encrypted in one call, packs numbered, rows in key order (B-tree
        inserts in order are the cheap ones)."""
        try:
            plain = bytes.fromhex("".join([entry.blob.id for entry in entries]))
        except ValueError:
            raise ValueError("a blob id in the index is not 64 hex digits") from None
        if len(plain) != 32 * len(entries):
            raise ValueError("a blob id in the index is not 64 hex digits")
        keys = self._local.encrypt.update(plain)
        pack_ids = list({entry.pack_id: None for entry in entries})
        db.executemany("INSERT OR IGNORE INTO packs (id) VALUES (?)", [(pack_id,) for pack_id in pack_ids])
        numbers: dict[str, int] = {}
        for start in range(0, len(pack_ids), 500):
            some = pack_ids[start : start + 500]
            query = f"SELECT id, no FROM packs WHERE id IN ({','.join('?' * len(some))})"
            numbers.update(db.execute(query, some).fetchall())
        rows = [  # the type column: 0 data, 1 tree (_TYPES)
            (keys[32 * i : 32 * i + 32], file_no, numbers[pack_id], int(blob.type == "tree"), *blob[2:])
            for i, (pack_id, blob) in enumerate(entries)
        ]
        rows.sort()
        db.executemany("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def forget_files(self, names: Collection[str]) -> None:
        """Drop the entries of index files the repository no longer has (a prune rewrote them)."""
        if not names:
            return
        with self._transaction() as db:
            numbers = [row[0] for name in names for row in db.execute("SELECT no FROM files WHERE name = ?", (name,))]
            for start in range(0, len(numbers), 500):
                some = numbers[start : start + 500]
                marks = ",".join("?" * len(some))
                db.execute(f"DELETE FROM blobs WHERE file IN ({marks})", some)  # one pass over the table
                db.execute(f"DELETE FROM files WHERE no IN ({marks})", some)
            db.execute("DELETE FROM packs WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.pack = packs.no)")

    def pack_ids(self) -> set[str]:
        """Every indexed pack (a set of names: packs are megabytes each, so even a large repository has few)."""
        return {pack_id for (pack_id,) in self._db().execute("SELECT id FROM packs")}

    def blobs_in(self, pack_id: str) -> list[PackedBlob]:
        rows = self._db().execute(
            "SELECT blobs.id, type, offset, length, ulength FROM blobs JOIN packs ON packs.no = blobs.pack "
            "WHERE packs.id = ? ORDER BY file, offset",
            (pack_id,),
        )
        return [PackedBlob(self._id(key), _TYPES[kind], o, n, u) for key, kind, o, n, u in rows]

    def has(self, blob_id: str, blob_type: BlobType) -> bool:
        """Indexed with this type (:meth:`get` answers for one place only)."""
        key = self._key(blob_id)
        query = "SELECT 1 FROM blobs WHERE id = ? AND type = ? LIMIT 1"
        return key is not None and self._db().execute(query, (key, _TYPES.index(blob_type))).fetchone() is not None

    def placements(self, pack_id: str) -> list[PackedBlob]:
        """A pack's blobs in offset order, each once (though two index files list it)."""
        return sorted(set(self.blobs_in(pack_id)), key=lambda blob: blob.offset)

    def duplicates(self) -> dict[tuple[str, BlobType], list[str]]:
        """Each blob stored in more than one place, with the pack of every place (a pack twice if it holds the
        blob twice): what prune must choose between. Few in a healthy repository."""
        rows = self._db().execute(
            "WITH placed AS (SELECT DISTINCT id, type, pack, offset FROM blobs) "
            "SELECT placed.id, placed.type, packs.id FROM placed JOIN packs ON packs.no = placed.pack "
            "WHERE (placed.id, placed.type) IN (SELECT id, type FROM placed GROUP BY id, type HAVING count(*) > 1) "
            "ORDER BY placed.id, placed.type, placed.offset"
        )
        found: dict[tuple[str, BlobType], list[str]] = {}
        for key, kind, pack_id in rows:
            found.setdefault((self._id(key), _TYPES[kind]), []).append(pack_id)
        return found

    def handle_set(self) -> DiskHandleSet:
        return DiskHandleSet(self)


class DiskHandleSet:
    """A set of (blob id, type) in a temporary SQLite file, ids encrypted like the index's: the blobs prune
    finds in use, or will copy, for a repository whose index is on disk (a Python set costs ~200 bytes a
    blob). One connection, one open transaction (nothing here needs to survive the process)."""

    def __init__(self, index: DiskIndex) -> None:
        self._index = index
        fd, name = tempfile.mkstemp(prefix="kubestash-blobs-", suffix=".sqlite")
        os.close(fd)
        self.path = Path(name)
        weakref.finalize(self, _remove, self.path)
        self._db = _sqlite().connect(name, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB}")
        self._db.execute(
            "CREATE TABLE handles (id BLOB NOT NULL, type INTEGER NOT NULL, PRIMARY KEY (id, type)) WITHOUT ROWID"
        )
        self._db.execute("BEGIN")
        self._count = 0
        self._odd: set[tuple[str, BlobType]] = set()
        self._lock = threading.Lock()

    def _row(self, handle: tuple[str, BlobType]) -> tuple[bytes, int] | None:
        key = self._index._key(handle[0])
        return None if key is None else (key, _TYPES.index(handle[1]))

    def __contains__(self, handle: object) -> bool:
        if not isinstance(handle, tuple) or len(handle) != 2:
            return False
        row = self._row(handle)
        if row is None:
            return handle in self._odd
        with self._lock:
            return self._db.execute("SELECT 1 FROM handles WHERE id = ? AND type = ?", row).fetchone() is not None

    def add(self, handle: tuple[str, BlobType]) -> None:
        row = self._row(handle)
        if row is None:  # no blob id (a damaged tree): kept aside, so that prune can name it
            self._count += handle not in self._odd
            self._odd.add(handle)
            return
        with self._lock:
            self._count += self._db.execute("INSERT OR IGNORE INTO handles VALUES (?, ?)", row).rowcount

    def discard(self, handle: tuple[str, BlobType]) -> None:
        row = self._row(handle)
        if row is None:
            self._count -= handle in self._odd
            self._odd.discard(handle)
            return
        with self._lock:
            self._count -= self._db.execute("DELETE FROM handles WHERE id = ? AND type = ?", row).rowcount

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[str, BlobType]]:
        yield from list(self._odd)
        with self._lock:
            rows = self._db.execute("SELECT id, type FROM handles").fetchmany
            batch = rows(1000)
        while batch:
            for key, kind in batch:
                yield self._index._id(key), _TYPES[kind]
            with self._lock:
                batch = rows(1000)

    def close(self) -> None:
        self._db.close()
        _remove(self.path)


BlobIndex = MemoryIndex | DiskIndex
HandleSet = set[tuple[str, BlobType]] | DiskHandleSet
"""Blob handles (id, type) in memory, or in a temporary file when the index is on disk."""


def handle_set(index: BlobIndex) -> HandleSet:
    """An empty set of blob handles of the kind the index calls for (on disk for a large repository)."""
    return index.handle_set() if isinstance(index, DiskIndex) else set()


_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked process inherited (see :meth:`DiskIndex._db`)."""


def cache_errors() -> tuple[type[Exception], ...]:
    """What making an index cache raises where it cannot be made (no writable directory, not even for a
    temporary file; a file SQLite cannot use). Evaluated in an ``except`` clause: ``sqlite3`` loads only then."""
    return (OSError, _sqlite().Error)


def _sqlite() -> ModuleType:
    import sqlite3

    return sqlite3


def _remove_stale(directory: Path) -> None:
    limit = time.time() - CACHE_MAX_AGE_S
    for path in directory.glob("*.sqlite"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < limit:
                log.info("removing index cache %s: unused for %d days", path, CACHE_MAX_AGE_S // 86400)
                _remove(path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
