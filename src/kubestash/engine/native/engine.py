"""The :class:`~kubestash.engine.base.Engine` run in this process: no restic binary, no second process.

The task runner and the operator see the same interface as with the restic engine; what differs is where the
time goes. restic pays a key derivation (~0.6 s here) on every command and the task runner runs three of them
per backup (init check, backup, check); here the master key is derived once per process and password, and
then reused for every operation on that repository.

Decisions worth knowing:

* **Where** -- a target made from a BackupStorage carries its backend spec (:class:`StorageLocation`), opened
  through :mod:`kubestash.backends` (S3, GCS, Azure); otherwise the URL is read as restic spells it: a local
  path, or ``s3:`` with ``AWS_*`` credentials from the target's env.
* **Locks** -- restic-compatible lock files (:mod:`.lock`): backup, restore and check hold a shared lock,
  forget/prune an exclusive one, so restic and this engine can work on one repository side by side.
* **Progress** -- the walk reports files and bytes as they are done; totals come from a scan of the paths that
  runs alongside (as restic's scanner does). Reports go out at most ``progress_fps`` times a second.
* **Timeouts** -- the operation is cancelled; the backup's worker threads stop at their next chunk and the
  partial work stays harmless (packs without an index or snapshot), as after a crash.
* Errors are :class:`EngineError` with the same reasons the restic engine gives, every secret replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import stat
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubestash.backends.base import BackendError
from kubestash.engine.base import (
    BackupSummary,
    CheckResult,
    EngineError,
    EngineErrorReason,
    KeyInfo,
    Progress,
    ProgressCallback,
    RepositoryTarget,
    RestoreSummary,
    SnapshotInfo,
)
from kubestash.engine.native import backup as native_backup
from kubestash.engine.native import keys as native_keys
from kubestash.engine.native import lock as native_lock
from kubestash.engine.native import prune as native_prune
from kubestash.engine.native.check import check as native_check
from kubestash.engine.native.crypto import CryptoError, Key
from kubestash.engine.native.index import handle_set
from kubestash.engine.native.init import init_repository
from kubestash.engine.native.pack import IntegrityError
from kubestash.engine.native.repository import (
    NativeRepository,
    RepositoryError,
    SnapshotNotFoundError,
    WrongPasswordError,
)
from kubestash.engine.native.restore import RestoreProgress
from kubestash.engine.native.restore import restore as native_restore
from kubestash.engine.native.stdin import backup_stream
from kubestash.engine.native.store import BackendStore, Store, StoreError, store_from_url
from kubestash.engine.support import hidden, local_repo_lock, report, rooted, scrub

OPEN_REPOSITORIES = 4
"""Local repositories kept open per event loop (each holds its index in memory)."""


def store_for(target: RepositoryTarget) -> Store:
    if target.location is not None:
        from kubestash.backends.factory import open_backend

        return BackendStore(open_backend(target.location.storage, target.location.secret), target.location.directory)
    return store_from_url(target.url, target.env)


@dataclass
class _Totals:
    """What the scan found so far; ``done`` once it has seen everything."""

    files: int = 0
    bytes: int = 0
    done: bool = False


SCAN_DELAY = 0.5
"""Seconds a backup runs before the scan for its totals starts: a shorter one needs no ETA, and the scan's
``lstat`` of every file (in a thread, so under the GIL) cost an unchanged backup of 20k files ~10 %."""


def _scan(paths: Sequence[str], excludes: Sequence[str], totals: _Totals, stop: threading.Event) -> None:
    """Count the regular files (and their bytes) a backup of ``paths`` will see, like restic's scanner."""
    if stop.wait(SCAN_DELAY):
        return
    pending = list(paths)
    while pending and not stop.is_set():
        path = pending.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if native_backup.excluded(path, excludes):
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(path) as entries:
                    pending.extend(e.path for e in entries)
            except OSError:
                continue
        elif stat.S_ISREG(st.st_mode):
            totals.files += 1
            totals.bytes += st.st_size
    totals.done = not stop.is_set()


class NativeEngine:
    """Every :class:`~kubestash.engine.base.Engine` operation, in Python, in this process."""

    def __init__(
        self, *, workers: int = 2, pack_size: int = native_backup.PACK_SIZE, progress_fps: float = 2.0
    ) -> None:
        self.workers = workers
        self.pack_size = pack_size
        self.progress_fps = progress_fps
        self._keys: dict[tuple[str, str], tuple[str, Key]] = {}
        """(url, password hash) → (key file id, master key): each password's KDF runs once per process."""
        self._init_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )
        self._opened: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, OrderedDict[tuple[str, str], NativeRepository]
        ] = weakref.WeakKeyDictionary()
        """Repositories opened lately (per event loop), local or in an object store, reused by the next
        operation on the same target (URL, password, credentials): a backup's check then loads no index file
        again and checks no tree the backup has just read (see ``vouched``) -- on an object store, requests
        saved."""

    # ------------------------------------------------------------ opening

    def _cache_key(self, target: RepositoryTarget) -> tuple[str, str]:
        """(URL, digest of everything that opens it: password, credentials, the BackupStorage's spec)."""
        digest = hashlib.sha256(target.password.encode())
        for name, value in sorted(target.env.items()):
            digest.update(f"\0env\0{name}\0{value}".encode())
        location = target.location
        if location is not None:
            digest.update(f"\0at\0{location.directory}\0{location.storage.model_dump_json()}".encode())
            for name, data in sorted((location.secret or {}).items()):
                digest.update(b"\0secret\0" + name.encode() + b"\0" + data)
        return target.url, digest.hexdigest()

    async def _open(self, target: RepositoryTarget) -> NativeRepository:
        """The repository, its master key derived from the password only the first time in this process; one
        opened lately is reused once :meth:`NativeRepository.revalidate` says it may be."""
        cache_key = self._cache_key(target)
        opened = self._opened.setdefault(asyncio.get_running_loop(), OrderedDict())
        repo = opened.pop(cache_key, None)
        if repo is not None:
            try:
                await repo.revalidate()
            except (RepositoryError, StoreError, CryptoError, IntegrityError, BackendError):
                repo = None
        if repo is None:
            repo = await self._open_store(store_for(target), target, cache_key)
        opened[cache_key] = repo
        while len(opened) > OPEN_REPOSITORIES:  # not closed: an operation may still use it (garbage collected)
            opened.popitem(last=False)
        return repo

    async def _open_store(self, store: Store, target: RepositoryTarget, cache_key: tuple[str, str]) -> NativeRepository:
        known = self._keys.get(cache_key)
        if known is not None:
            try:
                return await NativeRepository.open(store, target.password, known=known)
            except WrongPasswordError:
                del self._keys[cache_key]  # the key file was removed or replaced: derive again
        repo = await NativeRepository.open(store, target.password)
        self._keys[cache_key] = (repo.key_id, repo.key)
        return repo

    @asynccontextmanager
    async def _session(
        self,
        target: RepositoryTarget,
        what: str,
        *,
        lock: bool | None,
        timeout: float | None = None,
        secrets: Sequence[str] = (),
    ) -> AsyncIterator[NativeRepository]:
        """Open ``target`` and hold a lock (``lock``: True exclusive, False shared, None none) while the body
        runs; every failure becomes an :class:`EngineError` and ``timeout`` a deadline for all of it."""
        try:
            async with asyncio.timeout(timeout) as deadline:
                repo = await self._open(target)
                if lock is None:
                    yield repo
                else:
                    async with contextlib.AsyncExitStack() as stack:
                        try:
                            await stack.enter_async_context(native_lock.locked(repo, exclusive=lock))
                        except native_lock.LockedError:
                            # A stale lock (its process gone, or not refreshed for 30 minutes) blocks restic
                            # until `unlock`; here it is removed and locking tried once more. A live one blocks.
                            if not await native_lock.remove_locks(repo):
                                raise
                            await stack.enter_async_context(native_lock.locked(repo, exclusive=lock))
                        # The index was read before the lock: a prune that finished in between replaced it.
                        await repo.refresh()
                        yield repo
        except TimeoutError:
            if deadline.expired():
                raise EngineError("Timeout", f"{what} did not finish within {timeout:g}s and was stopped") from None
            raise
        except EngineError:
            raise
        except Exception as e:
            raise engine_error(e, target, what, secrets) from None

    # ------------------------------------------------------------ operations

    async def init(self, repo: RepositoryTarget) -> bool:
        locks = self._init_locks.setdefault(asyncio.get_running_loop(), {})
        async with locks.setdefault(repo.url, asyncio.Lock()), local_repo_lock(repo.url):
            try:
                store = store_for(repo)
                if await store.list("config"):
                    await self._open(repo)  # the password must open it (and the key is then remembered)
                    return False
                opened = await init_repository(store, repo.password)
            except Exception as e:
                raise engine_error(e, repo, "init") from None
            self._keys[self._cache_key(repo)] = (opened.key_id, opened.key)
            return True

    async def backup(
        self,
        repo: RepositoryTarget,
        paths: Sequence[Path],
        *,
        excludes: Sequence[str] = (),
        host: str = "host-0",
        tags: Sequence[str] = (),
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> BackupSummary:
        if not paths:
            raise EngineError("PathNotFound", "no paths to back up")
        for path in paths:
            if not os.path.lexists(path):
                raise EngineError("PathNotFound", scrub(f"path {path} does not exist", hidden(repo)))
        clean = [os.path.abspath(p) for p in paths]
        totals, stop = _Totals(), threading.Event()
        meter = _Meter(on_progress, self.progress_fps, totals)
        started = datetime.now(UTC)
        async with self._session(repo, "backup", lock=False, timeout=timeout) as opened:
            scan = asyncio.create_task(asyncio.to_thread(_scan, clean, excludes, totals, stop))
            try:
                result = await native_backup.backup(
                    opened,
                    clean,
                    excludes=excludes,
                    host=host,
                    tags=tags,
                    parent="auto",
                    on_progress=meter.backup,
                    pack_size=self.pack_size,
                    workers=self.workers,
                )
            finally:
                stop.set()
                await asyncio.shield(scan)
        if result.unreadable:
            first, count = result.unreadable[0], len(result.unreadable)
            message = f"backup incomplete: {count} file(s) could not be read (first: {first}); snapshot "
            raise EngineError(
                "Failed", scrub(message + f"{result.snapshot_id[:8]} was saved without them", hidden(repo))
            )
        meter.finish(result.total_files_processed, result.total_bytes_processed)
        return _summary(result, started)

    async def backup_stdin(
        self,
        repo: RepositoryTarget,
        command: Sequence[str],
        filename: str,
        *,
        host: str = "host-0",
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> BackupSummary:
        if not command:
            raise EngineError("Failed", "no command to back up the output of")
        meter = _Meter(on_progress, self.progress_fps, _Totals())
        started = datetime.now(UTC)
        async with self._session(repo, "backup", lock=False, timeout=timeout) as opened:
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as e:
                message = f"cannot run {Path(command[0]).name}: {e.strerror or e}"
                raise EngineError("Failed", scrub(message, hidden(repo))) from None
            errors: deque[str] = deque(maxlen=3)
            assert process.stderr is not None
            reader = asyncio.create_task(_tail(process.stderr, errors))
            try:
                result = await backup_stream(
                    opened,
                    _checked_output(process, Path(command[0]).name, reader, errors, hidden(repo)),
                    filename,
                    host=host,
                    on_progress=meter.backup,
                    pack_size=self.pack_size,
                )
            finally:
                await asyncio.shield(_stop_group(process))
                reader.cancel()
        meter.finish(result.total_files_processed, result.total_bytes_processed)
        return _summary(result, started)

    async def restore(
        self,
        repo: RepositoryTarget,
        snapshot_id: str,
        target: Path,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        relative: bool = False,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> RestoreSummary:
        loop = asyncio.get_running_loop()
        started = loop.time()
        meter = _Meter(on_progress, self.progress_fps, _Totals())
        async with self._session(repo, "restore", lock=False, timeout=timeout) as opened:
            snapshot = await opened.find_snapshot(snapshot_id)
            root = snapshot.paths[0] if relative and len(snapshot.paths) == 1 else None
            files, size = await native_restore(
                opened,
                snapshot.id,
                target,
                include=[rooted(p, root) for p in include],
                exclude=[rooted(p, root) for p in exclude],
                on_progress=meter.restore,
            )
        meter.finish(files, size)
        return RestoreSummary(
            files_restored=files, bytes_restored=size, total_duration=loop.time() - started, paths=snapshot.paths
        )

    async def snapshots(self, repo: RepositoryTarget) -> list[SnapshotInfo]:
        async with self._session(repo, "snapshots", lock=None) as opened:
            found = await opened.snapshots()
        return [
            SnapshotInfo(id=s.id, time=s.time, paths=s.paths, hostname=s.hostname, tags=s.tags, parent=s.parent)
            for s in found
        ]

    async def stats(self, repo: RepositoryTarget, snapshot_id: str | None = None) -> int:
        async with self._session(repo, "stats", lock=None) as opened:
            chosen = [await opened.find_snapshot(snapshot_id)] if snapshot_id else await opened.snapshots()
            blobs = await native_prune.used_blobs(opened, [s.tree for s in chosen], handle_set(opened.index))
        entries = (opened.index.get(blob_id) for blob_id, _ in blobs)
        return sum(entry.blob.length for entry in entries if entry is not None)

    async def check(
        self, repo: RepositoryTarget, *, read_data: bool = False, snapshots: Sequence[str] | None = None
    ) -> CheckResult:
        async with self._session(repo, "check", lock=False) as opened:
            ids = None if snapshots is None else [(await opened.find_snapshot(s)).id for s in snapshots]
            result = await native_check(opened, read_data=read_data, snapshots=ids)
        if not result.ok:
            message = "; ".join(result.errors[:3]) + (
                f" (and {len(result.errors) - 3} more)" if len(result.errors) > 3 else ""
            )
            return CheckResult(ok=False, message=scrub(message, hidden(repo)))
        extra = f"; {len(result.warnings)} unreferenced packs (prune removes them)" if result.warnings else ""
        return CheckResult(ok=True, message=f"no errors were found{extra}")

    async def forget(self, repo: RepositoryTarget, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        if not snapshot_ids:
            return
        async with self._session(repo, "forget", lock=True) as opened:
            await native_prune.forget(opened, snapshot_ids)
            if prune:
                await native_prune.prune(opened)

    async def unlock(self, repo: RepositoryTarget, *, remove_all: bool = False) -> None:
        async with self._session(repo, "unlock", lock=None) as opened:
            await native_lock.remove_locks(opened, all=remove_all)

    async def keys(self, repo: RepositoryTarget) -> list[KeyInfo]:
        async with self._session(repo, "key list", lock=None) as opened:
            found = await native_keys.list_keys(opened)
        return [KeyInfo(k.id[:8], k.current, user=k.username, host=k.hostname, created=k.created) for k in found]

    async def add_key(self, repo: RepositoryTarget, new_password: str, *, user: str = "", host: str = "") -> None:
        _new_password_ok(new_password)
        async with self._session(repo, "key add", lock=None, secrets=[new_password]) as opened:
            await native_keys.add_key(opened, new_password, user=user, host=host)

    async def update_key(self, repo: RepositoryTarget, new_password: str) -> None:
        _new_password_ok(new_password)
        async with self._session(repo, "key passwd", lock=True, secrets=[new_password]) as opened:
            await native_keys.change_password(opened, new_password)
        self._keys.pop(self._cache_key(repo), None)

    async def remove_key(self, repo: RepositoryTarget, key_id: str) -> None:
        async with self._session(repo, "key remove", lock=True) as opened:
            await native_keys.remove_key(opened, key_id)


# ---------------------------------------------------------------- helpers


class _Meter:
    """Turns the native operations' progress into :class:`Progress` reports, at most ``fps`` a second."""

    def __init__(self, on_progress: ProgressCallback | None, fps: float, totals: _Totals) -> None:
        self.on_progress = on_progress
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.totals = totals
        self.started = time.monotonic()
        self.last = 0.0
        report(on_progress, Progress())

    def _emit(self, files: int, size: int, total_files: int, total_bytes: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self.last < self.interval):
            return
        self.last = now
        elapsed = now - self.started
        rate = size / elapsed if elapsed > 0 else 0.0
        known = total_bytes > 0 and total_bytes >= size
        report(
            self.on_progress,
            Progress(
                seconds_elapsed=elapsed,
                seconds_remaining=(total_bytes - size) / rate if known and rate > 0 else None,
                percent_done=1.0 if force else (min(0.99, size / total_bytes) if known else 0.0),
                total_files=max(total_files, files),
                files_done=files,
                total_bytes=max(total_bytes, size),
                bytes_done=size,
            ),
        )

    def backup(self, progress: native_backup.BackupProgress) -> None:
        totals = self.totals
        self._emit(progress.files_done, progress.bytes_done, totals.files, totals.bytes if totals.done else 0)

    def restore(self, progress: RestoreProgress) -> None:
        known = progress.walked  # before, totals are what the walk has found so far: no ETA from them
        self._emit(progress.files_done, progress.bytes_done, progress.total_files * known, progress.total_bytes * known)

    def finish(self, files: int, size: int) -> None:
        self._emit(files, size, files, size, force=True)


def _summary(result: native_backup.BackupSummary, started: datetime) -> BackupSummary:
    """restic's JSON summary names the snapshot by its short id: status fields look the same with either engine."""
    return BackupSummary(
        snapshot_id=result.snapshot_id[:8],
        files_new=result.files_new,
        files_changed=result.files_changed,
        files_unmodified=result.files_unmodified,
        dirs_new=result.dirs_new,
        dirs_changed=result.dirs_changed,
        dirs_unmodified=result.dirs_unmodified,
        data_added=result.data_added,
        total_files_processed=result.total_files_processed,
        total_bytes_processed=result.total_bytes_processed,
        total_duration=result.total_duration,
        started=started,
        ended=datetime.now(UTC),
    )


async def _checked_output(
    process: asyncio.subprocess.Process,
    name: str,
    reader: asyncio.Task[None],
    errors: deque[str],
    secrets: Sequence[str],
) -> AsyncIterator[bytes]:
    """The command's standard output; at its end, an error unless the command exited 0 -- so a failed dump
    never becomes a snapshot. The message has the last lines of its stderr (the name only: argv may hold
    credentials)."""
    assert process.stdout is not None
    while chunk := await process.stdout.read(1 << 20):
        yield chunk
    code = await process.wait()
    if code != 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 1.0)
        tail = "; ".join(errors) or "no error output"
        raise EngineError("Failed", scrub(f"{name} exited with code {code}: {tail}", secrets))


async def _tail(stream: asyncio.StreamReader, lines: deque[str]) -> None:
    while line := await stream.readline():
        if text := line.decode(errors="replace").strip():
            lines.append(text)


async def _stop_group(process: asyncio.subprocess.Process, grace: float = 3.0) -> None:
    """SIGTERM to the command's process group, SIGKILL after ``grace``: no dump keeps running unobserved."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), wait)


def _new_password_ok(new_password: str) -> None:
    if not new_password or new_password != new_password.strip():
        raise EngineError("Failed", "the new password must be non-empty without surrounding whitespace")


_REASONS: tuple[tuple[type[BaseException], EngineErrorReason], ...] = (
    (WrongPasswordError, "WrongPassword"),
    (SnapshotNotFoundError, "SnapshotNotFound"),
    (native_lock.LockedError, "Locked"),
    (native_backup.BackupError, "Failed"),
    (BackendError, "Unreachable"),
    (StoreError, "Unreachable"),
    (IntegrityError, "Failed"),
    (CryptoError, "Failed"),
)


def engine_error(exc: BaseException, target: RepositoryTarget, what: str, secrets: Sequence[str] = ()) -> EngineError:
    """``exc`` as an :class:`EngineError` with restic's reasons; the message names the operation, no secret."""
    reason: EngineErrorReason = next((r for t, r in _REASONS if isinstance(exc, t)), "Failed")
    if isinstance(exc, BackendError):
        credentials = exc.reason in ("InvalidCredentials", "PermissionDenied")
        reason = "InvalidCredentials" if credentials else "Unreachable"
        message = exc.message if credentials or exc.reason != "Unreachable" else f"storage unreachable: {exc.message}"
    else:
        message = str(exc) or type(exc).__name__
    if isinstance(exc, RepositoryError) and "no repository here" in message:
        reason = "RepositoryNotFound"
    return EngineError(reason, scrub(f"{what}: {' '.join(message.split())}", (*hidden(target), *secrets)))
