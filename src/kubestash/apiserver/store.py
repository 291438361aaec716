"""Objects and their change history in SQLite, with one global, monotonic resourceVersion.

Why SQLite in WAL mode with ``synchronous=NORMAL``: a transaction is in the
write-ahead log before ``commit`` returns, so every acknowledged write survives
``kill -9`` of the server (only a power cut could lose the last commits), and
one file is all the state there is to back up.

All calls are synchronous and made from the server's event loop. That is the
point: writes are serialised without locks, and a watch that reads history and
then subscribes cannot miss an event in between, because nothing else runs
until it awaits. A write commits in tens of microseconds, far below the
request overhead.

Every write appends to ``events``; watches resume from it. The oldest events
are compacted away (``history`` events are kept), and a watch asking for a
version older than that gets 410 Gone, as from kube-apiserver.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class StoreError(Exception):
    code = 500
    reason = "InternalError"


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


class Gone(StoreError):
    code = 410
    reason = "Expired"


@dataclass(frozen=True)
class Event:
    type: EventType
    resource: str
    namespace: str
    rv: int
    obj: dict[str, Any]


@dataclass
class Subscription:
    resource: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: Event) -> bool:
        return event.resource == self.resource and (self.namespace is None or event.namespace == self.namespace)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_resource ON events (resource, rv);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Store:
    def __init__(self, path: Path | str, *, history: int = 50_000) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._history = history
        row = self._db.execute("SELECT MAX(rv) FROM events").fetchone()
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        # The newest event is never compacted away (compaction keeps ``history`` >= the floor),
        # so the last resourceVersion is the newest event's, or the floor after compacting everything.
        self._rv = max(int(row[0] or 0), int(meta.get("compacted", 0)))
        self._compacted = int(meta.get("compacted", 0))
        self._subscriptions: list[Subscription] = []
        self._writes_since_compaction = 0
        self._pending: list[Event] = []
        self.listeners: list[Callable[[Event], None]] = []
        """Called synchronously after every committed write (garbage collector, CRD registry)."""

    def close(self) -> None:
        for sub in self._subscriptions:
            sub.queue.put_nowait(None)
        self._db.close()

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def compacted(self) -> int:
        return self._compacted

    # ------------------------------------------------------------------ reads
    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?", (resource, namespace, name)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def list_objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Objects ordered by namespace and name (the order kube-apiserver lists in)."""
        if namespace is None:
            rows = self._db.execute(
                "SELECT data FROM objects WHERE resource=? ORDER BY namespace, name", (resource,)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT data FROM objects WHERE resource=? AND namespace=? ORDER BY name", (resource, namespace)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def list_all(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(resource, object) for everything stored: used by garbage collection and namespace deletion."""
        for resource, data in self._db.execute("SELECT resource, data FROM objects").fetchall():
            yield resource, json.loads(data)

    def list_namespace(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._db.execute("SELECT resource, data FROM objects WHERE namespace=?", (namespace,)).fetchall()
        return [(r, json.loads(d)) for r, d in rows]

    def events_since(self, resource: str, namespace: str | None, rv: int) -> list[Event]:
        if rv < self._compacted:
            raise Gone(f"too old resource version: {rv} ({self._compacted})")
        rows = self._db.execute(
            "SELECT rv, namespace, type, data FROM events WHERE resource=? AND rv>? ORDER BY rv", (resource, rv)
        ).fetchall()
        return [
            Event(t, resource, ns, r, json.loads(d)) for r, ns, t, d in rows if namespace is None or ns == namespace
        ]

    # ----------------------------------------------------------------- writes
    def create(self, resource: str, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self._transaction() as rv:
            obj["metadata"]["resourceVersion"] = str(rv)
            try:
                text = _dumps(obj)
                self._db.execute(
                    "INSERT INTO objects (resource, namespace, name, rv, data) VALUES (?, ?, ?, ?, ?)",
                    (resource, namespace, name, rv, text),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(name) from None
            self._append(Event("ADDED", resource, namespace, rv, obj), text)
        return obj

    def update(
        self, resource: str, namespace: str, name: str, obj: dict[str, Any], *, expected_rv: str | None = None
    ) -> dict[str, Any]:
        """Replace an object; ``expected_rv`` (if given) must be the stored version, else Conflict."""
        with self._transaction() as rv:
            row = self._db.execute(
                "SELECT rv FROM objects WHERE resource=? AND namespace=? AND name=?", (resource, namespace, name)
            ).fetchone()
            if row is None:
                raise NotFound(name)
            if expected_rv and str(row[0]) != expected_rv:
                raise Conflict(
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again"
                )
            obj["metadata"]["resourceVersion"] = str(rv)
            text = _dumps(obj)
            self._db.execute(
                "UPDATE objects SET rv=?, data=? WHERE resource=? AND namespace=? AND name=?",
                (rv, text, resource, namespace, name),
            )
            self._append(Event("MODIFIED", resource, namespace, rv, obj), text)
        return obj

    def delete(self, resource: str, namespace: str, name: str, *, expected_rv: str | None = None) -> dict[str, Any]:
        with self._transaction() as rv:
            row = self._db.execute(
                "SELECT rv, data FROM objects WHERE resource=? AND namespace=? AND name=?", (resource, namespace, name)
            ).fetchone()
            if row is None:
                raise NotFound(name)
            if expected_rv and str(row[0]) != expected_rv:
                raise Conflict(f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified')
            obj: dict[str, Any] = json.loads(row[1])
            obj["metadata"]["resourceVersion"] = str(rv)
            self._db.execute(
                "DELETE FROM objects WHERE resource=? AND namespace=? AND name=?", (resource, namespace, name)
            )
            self._append(Event("DELETED", resource, namespace, rv, obj), _dumps(obj))
        return obj

    @contextmanager
    def _transaction(self) -> Iterator[int]:
        rv = self._rv + 1
        self._pending = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield rv
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._rv = rv
        for event in self._pending:
            self._publish(event)
        self._writes_since_compaction += 1
        if self._writes_since_compaction >= min(1000, max(1, self._history // 2)):
            self._compact()

    def _append(self, event: Event, text: str) -> None:
        self._db.execute(
            "INSERT INTO events (rv, resource, namespace, type, data) VALUES (?, ?, ?, ?, ?)",
            (event.rv, event.resource, event.namespace, event.type, text),
        )
        self._pending.append(event)

    def _publish(self, event: Event) -> None:
        for sub in self._subscriptions:
            if sub.wants(event):
                sub.queue.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    def _compact(self) -> None:
        self._writes_since_compaction = 0
        floor = self._rv - self._history
        if floor <= self._compacted:
            return
        self._db.execute("DELETE FROM events WHERE rv <= ?", (floor,))
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('compacted', ?)", (str(floor),))
        self._compacted = floor

    # ------------------------------------------------------------------ watch
    def subscribe(self, resource: str, namespace: str | None) -> Subscription:
        sub = Subscription(resource, namespace)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
