"""The restore task of one component: what a KubeStash restore Job's container does, as a process of ours.

It reads the RestoreSession, the Snapshot the controller resolved (``latest``, a point in time or a name),
the Repository with the session's ``encryptionSecret`` if it names one, the Addon restore task's parameters
(``include``/``exclude``) and the restore target's volumes; then, for each path the component's backup
saved (``resticStats[].summary``: restic snapshot id and the path in the pod), it puts that path's contents
at the same path of the target's component (:func:`~kubestash.tasks.placement.restore_into`: all or
nothing). It reports into ``RestoreSession.status.components[<component>]``: Running with progress, then
Succeeded with the duration, or Failed with the reason.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lightkube import AsyncClient

from kubestash.api.addons import Addon, Function
from kubestash.api.conditions import parse_time
from kubestash.api.restore import RestoreSession
from kubestash.api.storage import Snapshot
from kubestash.engine.base import Engine, EngineError
from kubestash.executor.local import EXIT_REPORTED_FAILURE, EXIT_SUCCEEDED
from kubestash.executor.volumes import ComponentVolumes, VolumeError, host_path, resolve_target
from kubestash.tasks.access import AccessError, RepositoryAccess, get_object, open_repository
from kubestash.tasks.backup import when_unlocked
from kubestash.tasks.placement import restore_into, scope_patterns
from kubestash.tasks.report import StatusReporter, TaskFailed, elapsed, parse_list, progress_status
from kubestash.tasks.resolve import TaskError, resolve_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestorePlan:
    session: RestoreSession
    snapshot: Snapshot
    access: RepositoryAccess
    parameters: Mapping[str, str]


async def run_restore(
    client: AsyncClient,
    engine: Engine,
    namespace: str,
    restore_session: str,
    snapshot: str,
    snapshot_namespace: str,
    component: str,
) -> int:
    """Restore one component of a Snapshot into the RestoreSession's target; the exit code tells the outcome."""
    started = time.monotonic()
    reporter = StatusReporter(client, "RestoreSession", namespace, restore_session, component)
    on_progress = reporter.throttled(lambda p: {"progress": progress_status(p, "restoreDone")})
    try:
        await reporter.update({"phase": "Running"})
        plan = await _plan(client, namespace, restore_session, snapshot, snapshot_namespace)
        state = (plan.snapshot.status.components or {}).get(component) if plan.snapshot.status else None
        if state is None or not state.path:
            raise TaskFailed(f"Snapshot {snapshot_namespace}/{snapshot} has no component {component!r}")
        entries = [s.summary for s in state.restic_stats or [] if s.summary and s.summary.id]
        if not entries:
            raise TaskFailed(f"component {component} of Snapshot {snapshot} holds no restic snapshot to restore")
        volumes = await _target_component(client, plan.session, component)
        include = parse_list(plan.parameters.get("include", ""))
        exclude = parse_list(plan.parameters.get("exclude", ""))
        with tempfile.TemporaryDirectory(prefix="kubestash-task-") as scratch:
            repo = plan.access.target(state.path, Path(scratch), enable_cache=False)
            for summary in entries:
                pod_path = summary.host_path or "/"
                scoped = scope_patterns(include, pod_path)
                if scoped is None:
                    continue  # the includes select nothing of this path
                restore = functools.partial(
                    restore_into,
                    engine,
                    repo,
                    str(summary.id),
                    host_path(volumes, pod_path, must_exist=False),
                    include=scoped,
                    exclude=scope_patterns(exclude, pod_path) or [],
                    on_progress=on_progress,
                    timeout=_remaining(plan.session),
                )
                await when_unlocked(engine, repo, restore)
        await reporter.update({"phase": "Succeeded", "duration": elapsed(started)})
        return EXIT_SUCCEEDED
    except (TaskFailed, TaskError, AccessError, VolumeError, EngineError) as exc:
        message = exc.message if isinstance(exc, EngineError) else str(exc)
        if isinstance(exc, EngineError) and exc.reason == "Timeout":
            message = "the restore did not finish within restoreTimeout and was stopped (nothing was written)"
        log.error("restore of component %s (%s/%s) failed: %s", component, namespace, restore_session, message)
        await reporter.update({"phase": "Failed", "error": message, "duration": elapsed(started)})
        return EXIT_REPORTED_FAILURE


async def _plan(
    client: AsyncClient, namespace: str, name: str, snapshot_name: str, snapshot_namespace: str
) -> RestorePlan:
    session = RestoreSession.model_validate(await get_object(client, "RestoreSession", name, namespace))
    try:
        snapshot = Snapshot.model_validate(await get_object(client, "Snapshot", snapshot_name, snapshot_namespace))
    except AccessError:
        raise TaskFailed(
            f"Snapshot {snapshot_namespace}/{snapshot_name} not found: it was deleted after the restore began"
        ) from None
    source = session.spec.data_source
    access = await open_repository(
        client,
        snapshot_namespace,
        snapshot.spec.repository or "",
        encryption_secret=source.encryption_secret if source else None,
    )
    addon_info = session.spec.addon
    if addon_info is None or not addon_info.tasks:
        raise TaskFailed("the RestoreSession names no addon restore task")
    addon = Addon.model_validate(await get_object(client, "Addon", addon_info.name, ""))
    task_ref = addon_info.tasks[0]
    task = next((t for t in addon.spec.restore_tasks or [] if t.name == task_ref.name), None)
    if task is None:
        raise TaskFailed(f"Addon {addon.metadata.name} has no restore task {task_ref.name!r}")
    function = Function.model_validate(await get_object(client, "Function", task.function or "", ""))
    variables = {"namespace": namespace, "restoreSession": name, "snapshot": snapshot_name}
    resolved = resolve_task(addon, function, task_ref, "restore", variables)
    return RestorePlan(session, snapshot, access, resolved.parameters)


async def _target_component(client: AsyncClient, session: RestoreSession, component: str) -> ComponentVolumes:
    """The target's component of the same name; a one-component target takes whichever component is restored
    into it (a StatefulSet replica's data into a standalone PVC)."""
    target = session.spec.target
    if target is None:
        raise TaskFailed("the RestoreSession has no target to restore into")
    if not target.namespace:
        target = target.model_copy(update={"namespace": session.namespace})
    components = await resolve_target(client, target)
    mine = next((c for c in components if c.name == component), None)
    if mine is None and len(components) == 1:
        mine = components[0]
    if mine is None:
        names = ", ".join(c.name for c in components) or "none"
        raise TaskFailed(f"{target.kind}/{target.name} has no component {component!r} (it has: {names})")
    return mine


def _remaining(session: RestoreSession) -> float | None:
    """Seconds left before the session's ``restoreDeadline`` (None: no limit)."""
    end = parse_time(session.status.restore_deadline if session.status else None)
    return None if end is None else max(0.1, end.timestamp() - time.time())
