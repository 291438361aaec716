"""RestoreSession: restore a Snapshot (by name, ``latest`` or a point in time) into a target, end to end.

Steps (reference §3.7): resolve the data source to one Succeeded Snapshot (``status.dependencies``; none →
Failed with the reason); check the ``components`` filter against it (``ValidationPassed``; unknown
components → Invalid); check the target (``targetFound``, ``RestoreTargetFound``; missing → Failed, nothing
written); set ``restoreDeadline``; pause the BackupConfigurations that back up the same target
(``pausedBackups``) so no backup reads a half-restored volume; one executor process per component
(``RestoreExecutorEnsured``); a process that exits without reporting, or is killed at the deadline, fails
its component (``RestoreIncomplete``); when every component is final, resume the paused backups and close
with ``MetricsPushed``, after which :func:`~kubestash.api.phases.restore_session_phase` gives the phase.

A finalizer makes sure a RestoreSession deleted mid-run stops its processes and resumes the backups it
paused. Everything is level-triggered: a restarted operator continues from what status says.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import PersistentVolumeClaim

from kubestash.api import conditions as cond
from kubestash.api.conditions import parse_time, rfc3339
from kubestash.api.datasource import Candidate, NoSnapshot, choose_snapshot
from kubestash.api.durations import parse_go_duration
from kubestash.api.phases import restore_session_phase
from kubestash.api.restore import RestoreSession
from kubestash.api.sessions import MANAGED_BY_LABELS
from kubestash.api.shared import TypedObjectReference
from kubestash.controllers.backupconfiguration import utcnow
from kubestash.controllers.common import (
    FINALIZER,
    close_session,
    ensure_finalizer,
    get_or_none,
    has_condition,
    patch,
    patch_status,
    record,
    release_finalizer,
    set_condition,
)
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.targets import target_exists
from kubestash.executor.local import Invocation, LocalExecutor, task_command
from kubestash.runtime.controller import Result
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

FINAL = ("Succeeded", "Failed", "Invalid", "Unknown")
STORAGE_GROUP = "storage.kubestash.com"
CORE_GROUP = "core.kubestash.com"
RESTORE_KEY_PREFIX = "restore/"


@dataclass
class RestoreSessionReconciler:
    client: AsyncClient
    sessions: Informer
    snapshots: Informer
    configs: Informer
    executor: LocalExecutor
    events: EventRecorder
    kubeconfig: str | None = None
    clock: Callable[[], datetime] = utcnow

    async def __call__(self, key: Key) -> Result | None:
        data = self.sessions.get(*key)
        if data is None:
            return None
        namespace, name = key
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})
        if data["metadata"].get("deletionTimestamp"):
            await self.executor.kill_owned_by(key, "the RestoreSession was deleted")
            await self._resume_backups(namespace, status)
            if FINALIZER in (data["metadata"].get("finalizers") or []):
                await release_finalizer(self.client, "RestoreSession", data)
            return None
        if status.get("phase") in FINAL:
            return None
        await ensure_finalizer(self.client, "RestoreSession", data)
        rs = RestoreSession.model_validate(data)
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        status["conditions"] = conditions
        now = self.clock()

        snapshot = self._resolved(status)
        if snapshot is None:
            try:
                snapshot = self._resolve(rs)
            except NoSnapshot as exc:
                status["dependencies"] = [self._dependency(rs, None)]
                await self._fail(data, status, str(exc), now)
                return None
            status["dependencies"] = [self._dependency(rs, snapshot)]
        snap_ns, snap_name = snapshot
        snap_data = self.snapshots.get(snap_ns, snap_name)
        available = sorted(((snap_data or {}).get("status") or {}).get("components") or {})

        if not has_condition(conditions, cond.VALIDATION_PASSED):
            wanted = (rs.spec.data_source.components if rs.spec.data_source else None) or available
            unknown = [c for c in wanted if c not in available]
            if unknown or not wanted:
                message = (
                    f"Snapshot {snap_ns}/{snap_name} has no component {', '.join(unknown)}; "
                    f"it has: {', '.join(available) or 'none'}"
                )
                set_condition(
                    conditions, cond.VALIDATION_PASSED, "False", cond.REASON_RESOURCE_VALIDATION_FAILED, message
                )
                await self._finish(data, status, now)
                return None
            set_condition(
                conditions,
                cond.VALIDATION_PASSED,
                "True",
                cond.REASON_RESOURCE_VALIDATION_PASSED,
                "Validation has been passed",
            )
            status["totalComponents"] = len(wanted)
            status["components"] = {c: {"phase": "Pending"} for c in wanted}

        target = self._target(rs)
        if not has_condition(conditions, cond.RESTORE_EXECUTOR_ENSURED):
            if target is not None:
                await self._ensure_claims(rs, target)
            if target is None or not await target_exists(self.client, target, namespace):
                what = f"{target.kind} {target.namespace}/{target.name}" if target else "the target"
                status["targetFound"] = False
                set_condition(
                    conditions,
                    cond.RESTORE_TARGET_FOUND,
                    "False",
                    cond.REASON_UNABLE_TO_CHECK_TARGET,
                    f"{what} not found",
                )
                await self._fail(data, status, f"{what} not found: create it, then restore again", now)
                return None
            if not await self._claim_bound(target):
                return Result(requeue_after=0.5)  # a provisioner is binding the claim (or the user will)
            status["targetFound"] = True
            set_condition(
                conditions, cond.RESTORE_TARGET_FOUND, "True", cond.REASON_TARGET_FOUND, "restore target found"
            )
            timeout = rs.spec.restore_timeout
            if timeout and not status.get("restoreDeadline"):
                created = parse_time(rs.metadata.creation_timestamp) or now
                status["restoreDeadline"] = rfc3339(created + parse_go_duration(timeout))
            if "pausedBackups" not in status:
                status["pausedBackups"] = await self._pause_backups(namespace, target)
            # Saved before any process starts: a restart must not pause twice or forget what it paused.
            await patch_status(self.client, "RestoreSession", name, namespace, status)
            for component in status.get("components") or {}:
                await self.executor.launch(self._invocation(key, snapshot, component))
            set_condition(
                conditions,
                cond.RESTORE_EXECUTOR_ENSURED,
                "True",
                cond.REASON_RESTORE_EXECUTOR_ENSURED,
                f"started {len(status.get('components') or {})} restore process(es)",
            )
            status["phase"] = "Running"
            # Not the components: the processes report into them from now on, and may already have.
            await patch_status(
                self.client, "RestoreSession", name, namespace, {k: v for k, v in status.items() if k != "components"}
            )
            await record(self.events, data, "Normal", "Running", f"restoring Snapshot {snap_ns}/{snap_name}")
            deadline = parse_time(status.get("restoreDeadline"))
            return None if deadline is None else Result(requeue_after=max(0.2, (deadline - now).total_seconds() + 0.1))

        deadline = parse_time(status.get("restoreDeadline"))
        if deadline is not None and now >= deadline:
            timeout = rs.spec.restore_timeout
            await self.executor.kill_owned_by(key, f"the restore did not finish within restoreTimeout {timeout}")
        await self._collect_exits(key, status)
        components = status.get("components") or {}
        if all(c.get("phase") in ("Succeeded", "Failed") for c in components.values()):
            await self._finish(data, status, now)
            return None
        if deadline is not None:
            return Result(requeue_after=max(0.2, (deadline - now).total_seconds() + 0.1))
        return None

    # ------------------------------------------------------------ steps

    def _resolved(self, status: dict[str, Any]) -> tuple[str, str] | None:
        for dep in status.get("dependencies") or []:
            if dep.get("kind") == "Snapshot" and dep.get("found"):
                return str(dep.get("namespace") or ""), str(dep.get("name"))
        return None

    def _resolve(self, rs: RestoreSession) -> tuple[str, str]:
        source = rs.spec.data_source
        if source is None:
            raise NoSnapshot("spec.dataSource is missing")
        namespace = source.namespace or rs.namespace
        candidates = [
            Candidate(
                name=s["metadata"]["name"],
                repository=str((s.get("spec") or {}).get("repository") or ""),
                phase=str((s.get("status") or {}).get("phase") or ""),
                time=parse_time((s.get("status") or {}).get("snapshotTime"))
                or parse_time(s["metadata"].get("creationTimestamp")),
            )
            for s in self.snapshots.list(namespace)
            if not s["metadata"].get("deletionTimestamp")
        ]
        return namespace, choose_snapshot(source, namespace, candidates).name

    def _dependency(self, rs: RestoreSession, snapshot: tuple[str, str] | None) -> dict[str, Any]:
        source = rs.spec.data_source
        namespace = (source.namespace if source else None) or rs.namespace
        if snapshot is not None:
            name = snapshot[1]
        elif source is not None and source.pitr is not None:
            name = f"pitr:{source.pitr.target_time}"  # what was asked for: no Snapshot has that name
        else:
            name = str((source.snapshot if source else None) or "")
        return {
            "apiGroup": STORAGE_GROUP,
            "kind": "Snapshot",
            "namespace": namespace,
            "name": name,
            "found": snapshot is not None,
        }

    def _target(self, rs: RestoreSession) -> TypedObjectReference | None:
        target = rs.spec.target
        if target is None:
            return None
        return target if target.namespace else target.model_copy(update={"namespace": rs.namespace})

    async def _ensure_claims(self, rs: RestoreSession, target: TypedObjectReference) -> None:
        """Create the claims the restore task's ``targetVolumes.volumeClaimTemplates`` describe, if missing
        (``${POD_ORDINAL}`` in a name: one per replica of a StatefulSet target, else 0)."""
        tasks = (rs.spec.addon.tasks if rs.spec.addon else None) or []
        templates = (
            tasks[0].target_volumes.volume_claim_templates if tasks and tasks[0].target_volumes else None
        ) or []
        if not templates:
            return
        namespace = target.namespace or rs.namespace
        ordinals = [0]
        if target.kind == "StatefulSet":
            sts = await get_or_none(self.client, StatefulSet, target.name, namespace)
            ordinals = list(range(int(((sts or {}).get("spec") or {}).get("replicas") or 1)))
        for template in templates:
            meta = dict(template.get("metadata") or {})
            for ordinal in ordinals:
                name = str(meta.get("name") or "").replace("${POD_ORDINAL}", str(ordinal))
                if not name or await get_or_none(self.client, PersistentVolumeClaim, name, namespace) is not None:
                    continue
                labels = {**(meta.get("labels") or {}), **MANAGED_BY_LABELS}
                claim = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {**meta, "name": name, "namespace": namespace, "labels": labels},
                    "spec": template.get("spec") or {},
                }
                try:
                    await self.client.create(cast(PersistentVolumeClaim, PersistentVolumeClaim.from_dict(claim)))
                except ApiError as exc:
                    if exc.status.code != 409:
                        raise
                log.info("created PersistentVolumeClaim %s/%s for %s", namespace, name, rs.name)

    async def _claim_bound(self, target: TypedObjectReference) -> bool:
        if target.kind != "PersistentVolumeClaim":
            return True
        claim = await get_or_none(self.client, PersistentVolumeClaim, target.name, target.namespace)
        return bool(((claim or {}).get("spec") or {}).get("volumeName"))

    async def _pause_backups(self, namespace: str, target: TypedObjectReference) -> list[dict[str, Any]]:
        """Pause every BackupConfiguration backing up this target that is not paused already."""
        paused = []
        for bc in self.configs.list(target.namespace or namespace):
            spec = bc.get("spec") or {}
            bc_target = spec.get("target") or {}
            same = (
                (bc_target.get("apiGroup") or "") == (target.api_group or "")
                and bc_target.get("kind") == target.kind
                and bc_target.get("name") == target.name
                and (bc_target.get("namespace") or bc["metadata"]["namespace"]) == (target.namespace or namespace)
            )
            if not same or spec.get("paused"):
                continue
            meta = bc["metadata"]
            await patch(self.client, "BackupConfiguration", meta["name"], meta["namespace"], {"spec": {"paused": True}})
            paused.append(
                {
                    "apiGroup": CORE_GROUP,
                    "kind": "BackupConfiguration",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                }
            )
        return paused

    async def _resume_backups(self, namespace: str, status: dict[str, Any]) -> None:
        for ref in status.get("pausedBackups") or []:
            ns = ref.get("namespace") or namespace
            if await get_or_none(self.client, by_kind("BackupConfiguration"), ref["name"], ns) is None:
                continue
            try:
                await patch(self.client, "BackupConfiguration", ref["name"], ns, {"spec": {"paused": False}})
            except ApiError as exc:
                log.warning("cannot resume BackupConfiguration %s/%s: %s", ns, ref["name"], exc.status.message)

    def _invocation(self, owner: Key, snapshot: tuple[str, str], component: str) -> Invocation:
        namespace, name = owner
        args = ["restore", "--namespace", namespace, "--restoresession", name]
        args += ["--snapshot", snapshot[1], "--snapshot-namespace", snapshot[0], "--component", component]
        if self.kubeconfig:
            args += ["--kubeconfig", self.kubeconfig]
        return Invocation(key=_key(owner, component), argv=task_command(*args), owner=owner)

    async def _collect_exits(self, owner: Key, status: dict[str, Any]) -> None:
        """Fail components whose process is gone without a result (killed, crashed, deadline)."""
        failed = {}
        for component, state in (status.get("components") or {}).items():
            if state.get("phase") in ("Succeeded", "Failed"):
                continue
            reason = self.executor.unreported_end(_key(owner, component), "restore")
            if reason is None:
                continue
            failed[component] = {"phase": "Failed", "error": reason}
        if failed:
            for component, entry in failed.items():
                status["components"][component] = {**status["components"][component], **entry}
            set_condition(
                status["conditions"],
                cond.RESTORE_INCOMPLETE,
                "True",
                cond.REASON_RESTORE_EXECUTOR_TERMINATED,
                "; ".join(f"{c}: {f['error']}" for c, f in failed.items()),
            )

    async def _fail(self, data: dict[str, Any], status: dict[str, Any], message: str, now: datetime) -> None:
        set_condition(
            status["conditions"],
            cond.RESTORE_EXECUTOR_ENSURED,
            "False",
            cond.REASON_RESTORE_EXECUTOR_FAILED,
            message,
        )
        await self._finish(data, status, now)

    async def _finish(self, data: dict[str, Any], status: dict[str, Any], now: datetime) -> None:
        meta = data["metadata"]
        await self._resume_backups(meta["namespace"], status)
        close_session(status, meta, now)
        status["phase"] = restore_session_phase(RestoreSession.model_validate({**data, "status": status}))
        await patch_status(self.client, "RestoreSession", meta["name"], meta["namespace"], status)
        ok = status["phase"] == "Succeeded"
        message = f"restore {status['phase']} in {status['duration']}"
        if not ok:
            message += ": " + "; ".join(_reasons(status))
        await record(self.events, data, "Normal" if ok else "Warning", str(status["phase"]), message)
        self.executor.forget([_key((meta["namespace"], meta["name"]), c) for c in status.get("components") or {}])


def _key(owner: Key, component: str) -> str:
    return f"{RESTORE_KEY_PREFIX}{owner[0]}/{owner[1]}/{component}"


def _reasons(status: dict[str, Any]) -> list[str]:
    reasons = [
        f"{c['type']}: {c.get('message')}"
        for c in status.get("conditions") or []
        if (c.get("type") == cond.RESTORE_INCOMPLETE and c.get("status") == "True")
        or (c.get("type") in (cond.VALIDATION_PASSED, cond.RESTORE_EXECUTOR_ENSURED) and c.get("status") == "False")
    ]
    reasons += [f"{name}: {s['error']}" for name, s in (status.get("components") or {}).items() if s.get("error")]
    return reasons
