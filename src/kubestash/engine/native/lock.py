"""restic-compatible repository locks: ``locks/<id>`` files that restic honours and that we honour.

A native command and a ``restic`` process (or the KubeStash operator's restic jobs) can work on the same
repository, so the native engine must take the locks restic takes and respect restic's. The format and rules
are restic 0.14's (``internal/restic/lock.go``), verified against the installed binary:

- a lock is the JSON ``{"time","exclusive","hostname","username","pid","uid","gid"}`` (``uid``/``gid``
  omitted when 0), saved like any unpacked file -- encrypted with the master key, zstd-compressed in
  repository version 2 -- under its storage id;
- a non-exclusive lock conflicts with an exclusive one; an exclusive lock conflicts with every lock;
- a *stale* lock (older than 30 minutes, or made on this host by a process that no longer exists) still
  conflicts: restic 0.14 never skips stale locks when locking, it only lets ``unlock`` remove them; a lock
  file that cannot be decrypted or parsed is ignored (restic ignores unreadable locks when locking);
- after writing its lock a process waits 200 ms and checks again, so two processes that locked at the same
  moment both notice and the loser removes its own lock;
- a held lock is refreshed (rewritten with a new time, then the old file removed) every 5 minutes so it never
  looks stale to others.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from kubestash.backends.base import BackendError
from kubestash.engine.native.crypto import CryptoError
from kubestash.engine.native.files import encode_unpacked, load_json, storage_id
from kubestash.engine.native.repository import NativeRepository, RepositoryError
from kubestash.engine.native.store import LocalStore, StoreError, WritableStore, path_of, writable
from kubestash.engine.native.tree import GoTime

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=30)
"""restic's ``StaleLockTimeout``."""
RECHECK_DELAY = 0.2
"""restic's ``waitBeforeLockCheck``: how long to wait after writing a lock before looking for rivals, so a
rival's lock written at the same moment has become visible on an eventually consistent store. A local
directory needs no wait: each party writes its lock before it lists the others, and a file system shows a
completed write to every later listing, so of two rivals at least the one listing last sees the other (both
may see each other and both give up, as with the wait). Every operation pays the wait, so this is 0.2 s off
each backup and each check on a local repository."""
_NS = 1_000_000_000


class LockedError(RepositoryError):
    """Another process holds a lock that conflicts with the one asked for."""


@dataclass(frozen=True)
class LockInfo:
    """A lock file in the repository, and whether restic would consider it stale."""

    id: str
    time: datetime
    exclusive: bool
    hostname: str
    username: str
    pid: int
    stale: bool


@dataclass(frozen=True)
class _Lock:
    info: LockInfo
    uid: int
    gid: int

    def describe(self) -> str:
        """restic's ``alreadyLockedError`` text."""
        info = self.info
        age = datetime.now(UTC) - info.time
        return (
            f"repository is already locked {'exclusively ' if info.exclusive else ''}by PID {info.pid} on "
            f"{info.hostname} by {info.username} (UID {self.uid}, GID {self.gid})\n"
            f"lock was created at {info.time.strftime('%Y-%m-%d %H:%M:%S')} ({_go_duration(age)} ago)\n"
            f"storage ID {info.id[:8]}\n"
            "the `unlock` command can be used to remove stale locks"
        )


def _go_duration(delta: timedelta) -> str:
    """Roughly Go's ``Duration.String()`` (``1h19m24s``), to whole seconds."""
    total = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is alive on this host. restic treats any error of ``kill(pid, 0)`` as "gone"; a process
    we may not signal (EPERM) exists, so we keep its lock (safer when not running as root)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _is_stale(when: datetime, hostname: str, pid: int) -> bool:
    """restic's ``Lock.Stale``: older than 30 minutes, or made on this host by a process that is gone."""
    if datetime.now(UTC) - when > STALE_AFTER:
        return True
    if hostname != socket.gethostname():
        return False
    return not _process_exists(pid)


def _parse(lock_id: str, doc: Any) -> _Lock:
    if not isinstance(doc, dict):
        raise ValueError("a lock is a JSON object")
    stamp = GoTime.from_json(str(doc["time"]))
    when = datetime.fromtimestamp(stamp.unix_ns / _NS, timezone(timedelta(seconds=stamp.offset)))
    hostname, pid = str(doc.get("hostname") or ""), int(doc.get("pid") or 0)
    info = LockInfo(
        id=lock_id,
        time=when,
        exclusive=bool(doc.get("exclusive")),
        hostname=hostname,
        username=str(doc.get("username") or ""),
        pid=pid,
        stale=_is_stale(when, hostname, pid),
    )
    return _Lock(info, int(doc.get("uid") or 0), int(doc.get("gid") or 0))


async def _load(repo: NativeRepository, lock_id: str) -> _Lock | None:
    """The lock ``lock_id``, or None if it is gone or unreadable (restic ignores such locks when locking)."""
    try:
        data = await repo.store.get(path_of("locks", lock_id))
        return _parse(lock_id, load_json(repo.key, data))
    except (StoreError, CryptoError, ValueError, KeyError, TypeError, BackendError) as e:
        log.debug("ignoring lock %s: %s", lock_id, e)
        return None


async def _lock_ids(repo: NativeRepository) -> list[str]:
    return [name for name in await repo.store.list("locks")]


async def _all_locks(repo: NativeRepository, skip: set[str] | None = None) -> list[_Lock]:
    ids = [i for i in await _lock_ids(repo) if not skip or i not in skip]
    found = await asyncio.gather(*(_load(repo, i) for i in ids))
    return [lock for lock in found if lock is not None]


async def list_locks(repo: NativeRepository) -> list[LockInfo]:
    """Every readable lock in the repository, oldest first."""
    return sorted((lock.info for lock in await _all_locks(repo)), key=lambda i: (i.time, i.id))


async def _check_conflicts(repo: NativeRepository, exclusive: bool, own: set[str]) -> None:
    for lock in await _all_locks(repo, own):
        if exclusive or lock.info.exclusive:
            raise LockedError(lock.describe())


def _lock_json(exclusive: bool) -> bytes:
    """restic's ``Lock`` JSON (field order and ``omitempty`` on uid/gid)."""
    try:
        username = getpass.getuser()
    except (KeyError, OSError):
        username = ""
    doc: dict[str, Any] = {
        "time": GoTime.local(time.time_ns()).to_json(),
        "exclusive": exclusive,
        "hostname": socket.gethostname(),
        "username": username,
        "pid": os.getpid(),
    }
    if hasattr(os, "getuid") and os.getuid():
        doc["uid"] = os.getuid()
    if hasattr(os, "getgid") and os.getgid():
        doc["gid"] = os.getgid()
    return json.dumps(doc, separators=(",", ":")).encode()


async def _write_lock(repo: NativeRepository, out: WritableStore, exclusive: bool, written: set[str]) -> str:
    """Save a new lock file; its id goes into ``written`` before the upload, so cleanup never misses it."""
    data = encode_unpacked(repo.key, _lock_json(exclusive), repo.config.version)
    lock_id = storage_id(data)
    written.add(lock_id)
    await out.put(path_of("locks", lock_id), data)
    return lock_id


async def _remove(out: WritableStore, written: set[str], only: str | None = None) -> None:
    """Delete our lock files (all of ``written``, or just ``only``) and forget them; failures are logged, not
    raised -- a leftover lock turns stale and ``unlock`` removes it."""
    for lock_id in sorted(written) if only is None else [only]:
        try:
            await out.delete(path_of("locks", lock_id))
        except Exception as e:
            log.warning("unable to remove lock %s: %s", lock_id[:8], e)
            continue
        written.discard(lock_id)


@asynccontextmanager
async def locked(repo: NativeRepository, *, exclusive: bool, refresh_interval: float = 300.0) -> AsyncIterator[None]:
    """Hold a restic lock on ``repo`` for the ``async with`` body; :class:`LockedError` if another conflicts.

    The lock file is removed on exit, also when the body raises or is cancelled.
    """
    out = writable(repo.store)
    await _check_conflicts(repo, exclusive, set())
    written: set[str] = set()
    try:
        current = await _write_lock(repo, out, exclusive, written)
        if not isinstance(repo.store, LocalStore):
            await asyncio.sleep(RECHECK_DELAY)
        await _check_conflicts(repo, exclusive, {current})
    except BaseException:
        await asyncio.shield(_remove(out, written))
        raise

    async def refresh() -> None:
        nonlocal current
        while True:
            await asyncio.sleep(refresh_interval)
            try:
                new = await _write_lock(repo, out, exclusive, written)
            except Exception as e:  # restic warns and keeps going; the old lock stays until it turns stale
                log.warning("unable to refresh lock: %s", e)
                continue
            old, current = current, new
            await _remove(out, written, old)

    task = asyncio.create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.shield(_remove(out, written))


async def remove_locks(repo: NativeRepository, *, all: bool = False) -> int:
    """Remove stale locks (``restic unlock``), or every lock file (``--remove-all``); returns how many."""
    out = writable(repo.store)
    if all:
        names = await repo.store.list("locks")
    else:
        names = [lock.info.id for lock in await _all_locks(repo) if lock.info.stale]
    for name in names:
        await out.delete(path_of("locks", name))
    return len(names)
