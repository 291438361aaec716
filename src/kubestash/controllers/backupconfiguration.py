"""BackupConfiguration: check what it needs, create its Repositories, keep its schedule, trigger backups.

Per KubeStash (reference §3.5): ``targetFound``, ``dependencies`` (the Addons), ``status.backends`` (storage
phase, RetentionPolicy found), one Repository per session repository, per-session ``SchedulerEnsured`` and
``nextSchedule``, and an initial backup as soon as the configuration is Ready.

The schedule runs inside the operator rather than in a CronJob (embedded mode has no CronJob controller, and
one code path serves both). It is level-triggered: ``status.sessions[].nextSchedule`` is the next fire time;
a reconcile at or after it creates the BackupSession and moves ``nextSchedule`` on, and the reconcile is
requeued for the next fire. A BackupSession's name carries the scheduled second, so a trigger repeated after a
crash hits AlreadyExists instead of running twice. Missed fires while the operator was down collapse into one,
as a CronJob with a starting deadline does. ``paused`` (or the scheduler's ``suspend``) stops triggering; the
BackupSession controller decides whether a triggered session runs or is Skipped.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient

from kubestash.api import conditions as cond
from kubestash.api.backup import BackendReference, BackupConfiguration, RepositoryInfo, Session
from kubestash.api.conditions import parse_time, rfc3339
from kubestash.api.phases import backup_configuration_phase
from kubestash.api.schedule import next_fire
from kubestash.api.sessions import MANAGED_BY_LABELS, backup_session_manifest
from kubestash.controllers.common import create, get_or_none, has_condition, patch_status, record, set_condition
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.targets import target_exists
from kubestash.runtime.controller import Result
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BackupConfigurationReconciler:
    client: AsyncClient
    configs: Informer
    storages: Informer
    repositories: Informer
    events: EventRecorder
    clock: Clock = utcnow
    retry_interval: float = 30.0

    async def __call__(self, key: Key) -> Result | None:
        data = self.configs.get(*key)
        if data is None:
            return None
        bc = BackupConfiguration.model_validate(data)
        if bc.metadata.deletion_timestamp:
            return None
        namespace = key[0]
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        set_condition(
            conditions, cond.VALIDATION_PASSED, "True", cond.REASON_RESOURCE_VALIDATION_PASSED, "Validation passed"
        )
        target = bc.spec.target
        status["targetFound"] = await target_exists(self.client, target, namespace) if target is not None else True
        status["dependencies"] = [await self._addon_found(s) for s in bc.spec.sessions or [] if s.addon]
        status["backends"] = [await self._backend_status(b, namespace) for b in bc.spec.backends or []]
        status["repositories"] = [
            await self._ensure_repository(bc, repo, namespace)
            for session in bc.spec.sessions or []
            for repo in session.repositories or []
        ]
        now = self.clock()
        previous = {s.get("name"): s for s in status.get("sessions") or []}
        sessions: list[dict[str, Any]] = []
        wake: list[float] = []
        for session in bc.spec.sessions or []:
            entry, seconds = await self._schedule(data, bc, session, previous.get(session.name) or {}, now)
            sessions.append(entry)
            if seconds is not None:
                wake.append(seconds)
        status["sessions"] = sessions
        status["conditions"] = conditions
        status["phase"] = backup_configuration_phase(BackupConfiguration.model_validate({**data, "status": status}))
        if status != data.get("status"):
            if status["phase"] != (data.get("status") or {}).get("phase"):
                ready = status["phase"] == "Ready"
                why = "BackupConfiguration is ready" if ready else "; ".join(not_ready_reasons(status)) or "not ready"
                await record(self.events, data, "Normal" if ready else "Warning", str(status["phase"]), why)
            await patch_status(self.client, "BackupConfiguration", key[1], namespace, status)
        # After the Ready status is stored: the BackupSession it creates must find its invoker Ready.
        if status["phase"] == "Ready" and not has_condition(conditions, cond.INITIAL_BACKUP_TRIGGERED):
            await self._initial_backup(data, bc, conditions, now)
            await patch_status(self.client, "BackupConfiguration", key[1], namespace, {"conditions": conditions})
        if status["phase"] != "Ready":
            wake.append(self.retry_interval)
        return Result(requeue_after=max(0.2, min(wake))) if wake else None

    # ------------------------------------------------------------ pieces

    async def _addon_found(self, session: Session) -> dict[str, Any]:
        name = session.addon.name if session.addon else ""
        found = await get_or_none(self.client, by_kind("Addon"), name) is not None
        return {"apiGroup": "addons.kubestash.com", "kind": "Addon", "name": name, "found": found}

    async def _backend_status(self, backend: BackendReference, namespace: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": backend.name}
        ready = True
        if backend.storage_ref is not None:
            ref = {"namespace": backend.storage_ref.namespace or namespace, "name": backend.storage_ref.name}
            storage = self.storages.get(ref["namespace"], ref["name"])
            phase = ((storage or {}).get("status") or {}).get("phase")
            state: dict[str, Any] = {"ref": ref, "phase": phase or "NotReady"}
            if storage is None:
                state["reason"] = f"BackupStorage {ref['namespace']}/{ref['name']} not found"
            elif phase != "Ready":
                conditions = (storage.get("status") or {}).get("conditions") or []
                cause = next((c["message"] for c in conditions if c.get("status") == "False" and c.get("message")), "")
                what = f"BackupStorage {ref['namespace']}/{ref['name']} is not Ready"
                state["reason"] = f"{what}: {cause}" if cause else what
            ready = ready and phase == "Ready"
            entry["storage"] = state
        if backend.retention_policy is not None:
            ref = {"namespace": backend.retention_policy.namespace or namespace, "name": backend.retention_policy.name}
            if await get_or_none(self.client, by_kind("RetentionPolicy"), ref["name"], ref["namespace"]):
                entry["retentionPolicy"] = {"ref": ref, "found": True}
            else:
                reason = f"RetentionPolicy {ref['namespace']}/{ref['name']} not found"
                entry["retentionPolicy"] = {"ref": ref, "found": False, "reason": reason}
                ready = False
        entry["ready"] = ready
        return entry

    async def _ensure_repository(self, bc: BackupConfiguration, repo: RepositoryInfo, namespace: str) -> dict[str, Any]:
        backend = next((b for b in bc.spec.backends or [] if b.name == repo.backend), None)
        existing = self.repositories.get(namespace, repo.name)
        if existing is None and backend is not None and backend.storage_ref is not None:
            target = bc.spec.target
            manifest: dict[str, Any] = {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "Repository",
                "metadata": {
                    "name": repo.name,
                    "namespace": namespace,
                    "labels": {**MANAGED_BY_LABELS, "kubestash.com/invoker-name": bc.metadata.name},
                },
                "spec": {
                    "storageRef": {
                        "name": backend.storage_ref.name,
                        "namespace": backend.storage_ref.namespace or namespace,
                    },
                    "path": repo.directory,
                    "deletionPolicy": "WipeOut" if repo.deletion_policy == "WipeOut" else "Delete",
                },
            }
            if target is not None:
                manifest["spec"]["appRef"] = target.model_dump(by_alias=True, exclude_none=True) | {
                    "namespace": target.namespace or namespace
                }
            if repo.encryption_secret is not None:
                manifest["spec"]["encryptionSecret"] = {
                    "name": repo.encryption_secret.name,
                    "namespace": repo.encryption_secret.namespace or namespace,
                }
            try:
                await create(self.client, manifest)
            except ApiError as exc:
                return {"name": repo.name, "phase": "NotReady", "reason": exc.status.message}
            return {"name": repo.name, "phase": "NotReady", "reason": "waiting for the Repository to be initialized"}
        phase = ((existing or {}).get("status") or {}).get("phase") or "NotReady"
        entry: dict[str, Any] = {"name": repo.name, "phase": phase}
        if phase != "Ready":
            conditions = ((existing or {}).get("status") or {}).get("conditions") or []
            initialized: dict[str, Any] = next(
                (c for c in conditions if c.get("type") == cond.REPOSITORY_INITIALIZED), {}
            )
            entry["reason"] = initialized.get("message") or "Repository is not Ready yet"
        return entry

    async def _schedule(
        self, data: dict[str, Any], bc: BackupConfiguration, session: Session, previous: dict[str, Any], now: datetime
    ) -> tuple[dict[str, Any], float | None]:
        conditions: list[dict[str, Any]] = list(previous.get("conditions") or [])
        entry: dict[str, Any] = {"name": session.name}
        if session.scheduler is None:
            set_condition(
                conditions, cond.SCHEDULER_ENSURED, "False", cond.REASON_SCHEDULER_NOT_ENSURED, "no scheduler"
            )
            entry["conditions"] = conditions
            return entry, None
        schedule = session.scheduler.schedule
        due = parse_time(previous.get("nextSchedule"))
        stopped = bool(bc.spec.paused or session.scheduler.suspend)
        if due is not None and now >= due and not stopped:
            await self._trigger(data, session, int(due.timestamp()), "Scheduled")
        if due is None or now >= due:
            due = next_fire(schedule, now)
        entry["nextSchedule"] = rfc3339(due)
        set_condition(
            conditions, cond.SCHEDULER_ENSURED, "True", cond.REASON_SCHEDULER_ENSURED, f"Scheduler ensured: {schedule}"
        )
        entry["conditions"] = conditions
        return entry, max(0.0, (due - now).total_seconds()) + 0.05

    async def _initial_backup(
        self, data: dict[str, Any], bc: BackupConfiguration, conditions: list[dict[str, Any]], now: datetime
    ) -> None:
        try:
            for session in bc.spec.sessions or []:
                # Named after the configuration's creation: a reconcile that repeats it (its cache not yet
                # showing InitialBackupTriggered) gets AlreadyExists instead of a second backup.
                created = parse_time(bc.metadata.creation_timestamp) or now
                await self._trigger(data, session, int(created.timestamp()), "Initial")
        except ApiError as exc:
            set_condition(
                conditions,
                cond.INITIAL_BACKUP_TRIGGERED,
                "False",
                cond.REASON_INITIAL_BACKUP_TRIGGER_FAILED,
                exc.status.message or "failed to create the BackupSession",
            )
            return
        set_condition(
            conditions,
            cond.INITIAL_BACKUP_TRIGGERED,
            "True",
            cond.REASON_INITIAL_BACKUP_TRIGGERED,
            "Initial backup triggered",
        )

    async def _trigger(self, data: dict[str, Any], session: Session, unix_seconds: int, why: str) -> None:
        """Scheduled and initial runs may be retried (``retryLeft`` = maxRetry); a manual trigger may not."""
        retries = session.retry_config.max_retry if session.retry_config else 0
        manifest = backup_session_manifest(data, session.name, unix_seconds, retry_left=retries)
        if not await create(self.client, manifest):
            return  # triggered already (a retried reconcile): never twice
        log.info("%s backup %s/%s", why, manifest["metadata"]["namespace"], manifest["metadata"]["name"])


def not_ready_reasons(status: dict[str, Any]) -> list[str]:
    """Why a BackupConfiguration status is not Ready (for its event and a session it skips)."""
    if status.get("phase") == "Ready":
        return []
    reasons = []
    if not status.get("targetFound"):
        reasons.append("target not found")
    reasons += [f"Addon {d['name']} not found" for d in status.get("dependencies") or [] if not d.get("found")]
    for backend in status.get("backends") or []:
        for part in ("storage", "retentionPolicy"):
            reason = (backend.get(part) or {}).get("reason")
            if reason:
                reasons.append(reason)
    return reasons
