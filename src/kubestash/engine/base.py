"""The engine interface: what the task runner needs from a restic-format repository.

Two implementations share it: the ``restic`` CLI (:mod:`kubestash.engine.restic`) and the native Python
engine (:mod:`kubestash.engine.native.engine`); :mod:`kubestash.engine.select` picks one. Everything
crossing this boundary is a frozen dataclass; credentials travel only inside :class:`RepositoryTarget` and
never appear in an :class:`EngineError` message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from kubestash.api.storage import Backend

EngineErrorReason = Literal[
    "WrongPassword",
    "RepositoryNotFound",
    "Locked",
    "Unreachable",
    "InvalidCredentials",
    "PathNotFound",
    "SnapshotNotFound",
    "Timeout",
    "Cancelled",
    "Failed",
]


class EngineError(Exception):
    """A failed engine operation; ``message`` is for users (status conditions) and holds no secret."""

    def __init__(self, reason: EngineErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class StorageLocation:
    """The BackupStorage behind a remote target, for an engine that talks to the object store itself."""

    storage: Backend
    secret: Mapping[str, bytes] | None = field(repr=False)
    directory: str
    """The repository's directory below the storage's own prefix."""


@dataclass(frozen=True)
class RepositoryTarget:
    """One restic repository and how to open it."""

    url: str
    """What restic's ``-r`` takes: a local path, ``s3:http://host:port/bucket/prefix/dir``, ``gs:b:/dir``..."""
    password: str = field(repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Provider credentials and settings (AWS_ACCESS_KEY_ID, ...), passed to the engine's environment only."""
    options: tuple[str, ...] = ()
    """Extra global restic flags: ``--insecure-tls``, ``--cacert FILE``, ``-o s3.connections=N``."""
    cache_dir: Path | None = None
    """None: no cache (``--no-cache``)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every secret value in env/password, for scrubbing messages."""
    location: StorageLocation | None = field(default=None, repr=False, compare=False)
    """For s3/gcs/azure targets made from a BackupStorage: the same place as the URL, as a backend spec."""


@dataclass(frozen=True)
class Progress:
    """A progress report during backup or restore (restic's ``status`` message)."""

    seconds_elapsed: float = 0.0
    seconds_remaining: float | None = None
    percent_done: float = 0.0
    """0.0 .. 1.0"""
    total_files: int = 0
    files_done: int = 0
    total_bytes: int = 0
    bytes_done: int = 0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_done / self.seconds_elapsed if self.seconds_elapsed > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs_new: int = 0
    dirs_changed: int = 0
    dirs_unmodified: int = 0
    data_added: int = 0
    """Bytes newly stored in the repository (before compression, as restic reports it)."""
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0
    started: datetime | None = None
    ended: datetime | None = None


@dataclass(frozen=True)
class RestoreSummary:
    files_restored: int = 0
    bytes_restored: int = 0
    total_duration: float = 0.0
    paths: tuple[str, ...] = ()
    """The paths the snapshot holds; the restored tree is ``<target>/<path>``."""


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    time: datetime
    paths: tuple[str, ...] = ()
    hostname: str = ""
    tags: tuple[str, ...] = ()
    parent: str | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


@dataclass(frozen=True)
class KeyInfo:
    """A key of the repository as ``restic key list`` shows it: ``id`` is the 8-character short id (unique
    enough for :meth:`Engine.remove_key`, which takes any unique prefix)."""

    id: str
    current: bool
    user: str = ""
    host: str = ""
    created: datetime | None = None


class Engine(Protocol):
    """Operations on one repository at a time. All may raise :class:`EngineError`.

    ``timeout`` (seconds) is a hard deadline: when it passes the operation is stopped (the restic engine
    kills its process) and ``EngineError("Timeout")`` is raised; cancelling the awaiting task stops it too.
    """

    async def init(self, repo: RepositoryTarget) -> bool:
        """Create the repository if it does not exist yet; True if it was created now."""
        ...

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
    ) -> BackupSummary: ...

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
        """Back up the standard output of ``command`` as the file ``filename`` (database dumps)."""
        ...

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
        """Restore into ``target`` (each snapshot path re-created below it). Patterns follow restic; with
        ``relative`` an absolute pattern is taken relative to the snapshot's one path (``/app`` = its app/)."""
        ...

    async def snapshots(self, repo: RepositoryTarget) -> list[SnapshotInfo]: ...

    async def stats(self, repo: RepositoryTarget, snapshot_id: str | None = None) -> int:
        """Bytes stored for the snapshot (or the whole repository): restic ``stats --mode raw-data``."""
        ...

    async def check(
        self, repo: RepositoryTarget, *, read_data: bool = False, snapshots: Sequence[str] | None = None
    ) -> CheckResult:
        """The repository's integrity. ``snapshots`` (ids or prefixes) lets an engine check only what those
        snapshots need (the native engine does; restic 0.14 can only check everything, and does)."""
        ...

    async def forget(self, repo: RepositoryTarget, snapshot_ids: Sequence[str], *, prune: bool = True) -> None: ...

    async def unlock(self, repo: RepositoryTarget, *, remove_all: bool = False) -> None: ...

    async def keys(self, repo: RepositoryTarget) -> list[KeyInfo]: ...

    async def add_key(self, repo: RepositoryTarget, new_password: str, *, user: str = "", host: str = "") -> None: ...

    async def remove_key(self, repo: RepositoryTarget, key_id: str) -> None: ...

    async def update_key(self, repo: RepositoryTarget, new_password: str) -> None:
        """Change the password of the key ``repo.password`` opens (restic ``key passwd``; the key gets a new ID)."""
        ...
