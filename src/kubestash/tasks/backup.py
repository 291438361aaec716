"""The backup task of one component: what a KubeStash backup Job's container does, as a process of ours.

It reads everything from the API server (Snapshot → BackupSession → BackupConfiguration session →
Repository → BackupStorage, Addon task → Function arguments, target → this component's volumes), backs each
requested path up into the component's restic repository ``<repo path>/repository/v1/<session>/<component>``,
and reports into ``Snapshot.status.components[<component>]``: Running with progress (about once a second),
then Succeeded with size, duration, integrity and the restic summary per path, or Failed with the reason.
Reporting is a merge patch of that one component, so components of one Snapshot never overwrite each other.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lightkube import AsyncClient

from kubestash.api.addons import Addon, Function
from kubestash.api.backup import BackupConfiguration, BackupSession, Session
from kubestash.api.conditions import rfc3339
from kubestash.api.durations import parse_go_duration
from kubestash.api.naming import component_path
from kubestash.api.shared import TypedObjectReference
from kubestash.api.sizes import human_size
from kubestash.api.storage import Snapshot
from kubestash.backends.base import BackendError
from kubestash.backends.factory import open_backend
from kubestash.controllers.common import abandon
from kubestash.engine.base import BackupSummary, Engine, EngineError, ProgressCallback, RepositoryTarget
from kubestash.executor.local import EXIT_REPORTED_FAILURE, EXIT_SUCCEEDED
from kubestash.executor.volumes import VolumeError, host_paths, resolve_target
from kubestash.tasks.access import AccessError, RepositoryAccess, get_object, open_repository
from kubestash.tasks.report import StatusReporter, TaskFailed, elapsed, parse_list, progress_status
from kubestash.tasks.resolve import TaskError, resolve_task

log = logging.getLogger(__name__)

LOCK_PATIENCE = 1800.0
T = TypeVar("T")


@dataclass(frozen=True)
class BackupPlan:
    snapshot: Snapshot
    access: RepositoryAccess
    session: Session
    target: TypedObjectReference | None
    parameters: Mapping[str, str]


async def run_backup(client: AsyncClient, engine: Engine, namespace: str, snapshot_name: str, component: str) -> int:
    """Back up one component of one Snapshot; the exit code says whether it Succeeded or reported its failure."""
    started = time.monotonic()
    reporter = StatusReporter(client, "Snapshot", namespace, snapshot_name, component)
    try:
        plan = await _plan(client, namespace, snapshot_name)
        relative = component_path(plan.snapshot.spec.session or "", component)
        directory = plan.access.directory(relative)
        await reporter.update({"path": relative, "phase": "Running", "driver": "Restic"})
        paths = await _paths(client, plan, component)
        excludes = parse_list(plan.parameters.get("exclude", ""))
        with tempfile.TemporaryDirectory(prefix="kubestash-task-") as scratch:
            repo = plan.access.target(
                relative, Path(scratch), enable_cache=plan.parameters.get("enableCache", "true").lower() == "true"
            )
            remaining = _remaining(plan)
            stats: list[dict[str, Any]] = []
            for index, (pod_path, path) in enumerate(paths):
                summary = await _backup(engine, repo, path, excludes, _progress_of(reporter, index, stats), remaining())
                stats[index:] = [_summary(summary, pod_path)]
                await reporter.update({"resticStats": stats})
            written = [s["summary"]["id"] for s in stats]
            check = await when_unlocked(engine, repo, lambda: engine.check(repo, snapshots=written))
        size = await _stored_size(plan.access, directory)
        await reporter.update(
            {
                "phase": "Succeeded",
                "size": human_size(size),
                "duration": elapsed(started),
                "integrity": check.ok,
                "resticStats": stats,
                "error": None if check.ok else f"restic check: {check.message}",
            }
        )
        return EXIT_SUCCEEDED
    except (TaskFailed, TaskError, AccessError, VolumeError, EngineError) as exc:
        message = exc.message if isinstance(exc, EngineError) else str(exc)
        log.error("component %s of %s/%s failed: %s", component, namespace, snapshot_name, message)
        await reporter.update(
            {
                "phase": "Failed",
                "error": message,
                "duration": elapsed(started),
            }
        )
        return EXIT_REPORTED_FAILURE


async def _backup(
    engine: Engine,
    repo: RepositoryTarget,
    path: Path,
    excludes: list[str],
    on_progress: ProgressCallback,
    timeout: float | None,
) -> BackupSummary:
    """Back up one path; a repository that does not exist yet is created first (every restic call pays a
    key derivation, so the common case -- the repository exists -- costs no separate probe)."""

    async def attempt() -> BackupSummary:
        return await engine.backup(repo, [path], excludes=excludes, on_progress=on_progress, timeout=timeout)

    try:
        return await when_unlocked(engine, repo, attempt)
    except EngineError as exc:
        if exc.reason != "RepositoryNotFound":
            raise
    await engine.init(repo)
    return await when_unlocked(engine, repo, attempt)


async def when_unlocked(
    engine: Engine, repo: RepositoryTarget, op: Callable[[], Awaitable[T]], patience: float = LOCK_PATIENCE
) -> T:
    """Run ``op``, waiting out an exclusive lock held by someone else (a prune after retention, a check).

    As KubeStash's jobs do: remove stale locks (left by a process that died; restic keeps honouring them
    otherwise), then wait with backoff for live ones instead of failing the backup.
    """
    delay, waited = 0.5, 0.0
    while True:
        try:
            return await op()
        except EngineError as exc:
            if exc.reason != "Locked" or waited >= patience:
                raise
        await engine.unlock(repo)
        log.info("repository locked; retrying in %.1fs", delay)
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 10.0)


async def _stored_size(access: RepositoryAccess, directory: str) -> int:
    """Bytes the component repository occupies in the backend (packs, indexes, snapshots: what the user pays
    for), from a listing rather than ``restic stats``, which would cost another key derivation."""
    try:
        with closing(open_backend(access.storage.spec.storage, access.storage_secret)) as backend:
            return sum([info.size async for info in backend.list(directory)])
    except BackendError as exc:
        raise TaskFailed(f"cannot measure the repository size: {exc.message}") from None


async def _plan(client: AsyncClient, namespace: str, snapshot_name: str) -> BackupPlan:
    snapshot = Snapshot.model_validate(await get_object(client, "Snapshot", snapshot_name, namespace))
    session_name = snapshot.spec.backup_session or ""
    # Two chains of reads that do not depend on each other run at once: the Repository's (Repository ->
    # BackupStorage -> Secrets) and the invoker's (BackupSession -> BackupConfiguration -> Addon -> Function).
    # A failure is still the one the same reads done one after another would meet first.
    repository = asyncio.ensure_future(open_repository(client, namespace, snapshot.spec.repository or ""))
    functions: asyncio.Future[tuple[Addon, Function]] | None = None
    try:
        backup_session = BackupSession.model_validate(
            await get_object(client, "BackupSession", session_name, namespace)
        )
        invoker = backup_session.spec.invoker
        bc_name = invoker.name if invoker else ""
        bc = BackupConfiguration.model_validate(await get_object(client, "BackupConfiguration", bc_name, namespace))
        session = next((s for s in bc.spec.sessions or [] if s.name == backup_session.spec.session), None)
        if session is None or session.addon is None or not session.addon.tasks:
            raise TaskFailed(
                f"BackupConfiguration {bc_name} has no session {backup_session.spec.session!r} with a task"
            )
        task_ref = session.addon.tasks[0]

        async def addon_and_function(addon_name: str) -> tuple[Addon, Function]:
            addon = Addon.model_validate(await get_object(client, "Addon", addon_name, ""))
            task = next((t for t in addon.spec.backup_tasks or [] if t.name == task_ref.name), None)
            if task is None:
                raise TaskFailed(f"Addon {addon.metadata.name} has no backup task {task_ref.name!r}")
            return addon, Function.model_validate(await get_object(client, "Function", task.function or "", ""))

        functions = asyncio.ensure_future(addon_and_function(session.addon.name))
        access = await repository
        addon, function = await functions
    finally:
        abandon(repository, functions)
    target = bc.spec.target
    if target is not None and not target.namespace:
        target = target.model_copy(update={"namespace": namespace})
    variables = {
        "namespace": namespace,
        "backupSession": session_name,
        "snapshot": snapshot_name,
        "invokerKind": "BackupConfiguration",
        "invokerName": bc_name,
    }
    resolved = resolve_task(addon, function, task_ref, "backup", variables)
    return BackupPlan(snapshot, access, session, target, resolved.parameters)


async def _paths(client: AsyncClient, plan: BackupPlan, component: str) -> list[tuple[str, Path]]:
    """Each requested path as (path in the pod, directory here). Status records the pod path (``hostPath``,
    as KubeStash's jobs see it), so a restore can map it onto whatever volume the restore target has."""
    if plan.target is None:
        raise TaskFailed("the BackupConfiguration has no target to back up")
    components = await resolve_target(client, plan.target)
    mine = next((c for c in components if c.name == component), None)
    if mine is None:
        names = ", ".join(c.name for c in components) or "none"
        raise TaskFailed(f"{plan.target.kind}/{plan.target.name} has no component {component!r} (it has: {names})")
    requested = parse_list(plan.parameters.get("paths", ""))
    if not requested:
        raise TaskFailed("parameter paths is empty: nothing to back up")
    return list(zip(requested, host_paths(mine, requested), strict=True))


def _remaining(plan: BackupPlan) -> Callable[[], float | None]:
    """Seconds left before the session's backupTimeout (None: no limit)."""
    timeout = plan.session.backup_timeout
    if not timeout:
        return lambda: None
    end = time.monotonic() + parse_go_duration(timeout).total_seconds()
    return lambda: max(0.1, end - time.monotonic())


def _summary(summary: BackupSummary, host_path: str) -> dict[str, Any]:
    return {
        "summary": {
            "id": summary.snapshot_id,
            "uploaded": human_size(summary.data_added),
            "hostPath": host_path,
            "size": human_size(summary.total_bytes_processed),
            "startTime": rfc3339(summary.started) if summary.started else None,
            "endTime": rfc3339(summary.ended) if summary.ended else None,
        }
    }


def _progress_of(reporter: StatusReporter, index: int, stats: list[dict[str, Any]]) -> ProgressCallback:
    """Progress of path ``index``, after the summaries of the paths already done."""
    return reporter.throttled(
        lambda p: {"resticStats": [*stats[:index], {"progress": progress_status(p, "backupDone")}]}
    )
