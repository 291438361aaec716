"""BackupSession: run one backup of one session, end to end, and say honestly how it went.

Steps, in KubeStash's order (reference §3.6): skip when the invoker is not Ready or another run of the same
session is in progress (``BackupSkipped``); set ``backupDeadline``; one Snapshot per session repository
(``SnapshotsEnsured``) with ``totalComponents`` from the target; one executor process per component
(``BackupExecutorEnsured``); watch them: a process that exits without its component reporting a result, or
one killed at the deadline, fails that component with the cause (and ``BackupIncomplete`` on the Snapshot);
when every Snapshot is final, apply each backend's RetentionPolicy to the repository's Snapshots
(``status.retentionPolicy``), keep only ``sessionHistoryLimit`` finished sessions (``SessionHistoryCleaned``)
and close with ``MetricsPushed`` -- after which :func:`~kubestash.api.phases.backup_session_phase` gives the
final phase. Everything is level-triggered: a restart continues from what status says.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import ulid
from lightkube import ApiError, AsyncClient

from kubestash.api import conditions as cond
from kubestash.api.backup import BackupConfiguration, BackupSession, Session
from kubestash.api.conditions import parse_time, rfc3339
from kubestash.api.durations import parse_go_duration
from kubestash.api.naming import snapshot_name
from kubestash.api.phases import backup_session_phase
from kubestash.api.retention import SnapshotRecord, apply_retention_policy
from kubestash.api.sessions import MANAGED_BY_LABELS, backup_session_manifest
from kubestash.api.storage import RetentionPolicy
from kubestash.controllers.backupconfiguration import not_ready_reasons, utcnow
from kubestash.controllers.common import (
    close_session,
    create,
    get_or_none,
    has_condition,
    patch,
    patch_status,
    record,
    set_condition,
)
from kubestash.controllers.kinds import by_kind
from kubestash.controllers.targets import target_exists
from kubestash.executor.local import Invocation, LocalExecutor, task_command
from kubestash.executor.volumes import VolumeError, resolve_target
from kubestash.runtime.controller import Result
from kubestash.runtime.events import EventRecorder
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

RUNNING_RECHECK = 2.0
"""Seconds between looks at a running session's target and deadline when nothing else wakes it."""

FINAL = ("Succeeded", "Failed", "Skipped")


@dataclass
class BackupSessionReconciler:
    client: AsyncClient
    sessions: Informer
    configs: Informer
    snapshots: Informer
    executor: LocalExecutor
    events: EventRecorder
    kubeconfig: str | None = None
    clock: Callable[[], datetime] = utcnow

    async def __call__(self, key: Key) -> Result | None:
        data = self.sessions.get(*key)
        if data is None:
            return None
        bs = BackupSession.model_validate(data)
        namespace, name = key
        if bs.metadata.deletion_timestamp:
            await self.executor.kill_owned_by(key, "the BackupSession was deleted")
            return None
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})
        if status.get("phase") in FINAL:
            return await self._retry(data, status)
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        status["conditions"] = conditions
        bc_name = bs.spec.invoker.name if bs.spec.invoker else ""
        bc_data = self.configs.get(namespace, bc_name)
        if ((bc_data or {}).get("status") or {}).get("phase") != "Ready":
            # The cache may not have seen it turn Ready yet.
            bc_data = await get_or_none(self.client, by_kind("BackupConfiguration"), bc_name, namespace)
        bc = BackupConfiguration.model_validate(bc_data) if bc_data else None
        session = next((s for s in (bc.spec.sessions if bc else None) or [] if s.name == bs.spec.session), None)
        now = self.clock()

        if not has_condition(conditions, cond.SNAPSHOTS_ENSURED):
            skip = self._skip_reason(bs, bc, session)
            if skip is not None:
                set_condition(conditions, cond.BACKUP_SKIPPED, "True", cond.REASON_PREREQUISITES_NOT_SATISFIED, skip)
                await self._finish(data, status, now)
                await record(self.events, data, "Warning", "Skipped", skip)
                return None
        if bc is None or session is None:
            return None  # its BackupConfiguration is gone; the garbage collector removes this session with it
        timeout = bs.spec.backup_timeout or session.backup_timeout
        if timeout and not status.get("backupDeadline"):
            created = parse_time(bs.metadata.creation_timestamp) or now
            status["backupDeadline"] = rfc3339(created + parse_go_duration(timeout))

        if not has_condition(conditions, cond.SNAPSHOTS_ENSURED):
            try:
                components = [c.name for c in await resolve_target(self.client, _target(bc, namespace))]
                status["snapshots"] = await self._ensure_snapshots(data, bc, session, components, now)
            except (VolumeError, ApiError, ValueError) as exc:
                message = (exc.status.message if isinstance(exc, ApiError) else str(exc)) or "failed"
                set_condition(conditions, cond.SNAPSHOTS_ENSURED, "False", cond.REASON_SNAPSHOTS_ENSURE_FAILED, message)
                await self._finish(data, status, now)
                return None
            status["totalSnapshots"] = len(status["snapshots"])
            set_condition(
                conditions, cond.SNAPSHOTS_ENSURED, "True", cond.REASON_SNAPSHOTS_ENSURED, "Snapshots are ensured"
            )
            await patch_status(self.client, "BackupSession", name, namespace, status)

        snapshots = [self.snapshots.get(namespace, s["name"]) for s in status.get("snapshots") or []]
        if any(not _components(snap) for snap in snapshots):
            return Result(requeue_after=0.2)  # created a moment ago: not in the cache yet
        if not has_condition(conditions, cond.BACKUP_EXECUTOR_ENSURED):
            for snap in snapshots:
                for component in _components(snap):
                    await self.executor.launch(self._invocation(key, snap, component))
            set_condition(
                conditions,
                cond.BACKUP_EXECUTOR_ENSURED,
                "True",
                cond.REASON_BACKUP_EXECUTOR_ENSURED,
                f"started {sum(len(_components(s)) for s in snapshots)} backup process(es)",
            )
            await patch_status(self.client, "BackupSession", name, namespace, status)

        deadline = parse_time(status.get("backupDeadline"))
        if not all(_reported(snap) for snap in snapshots):  # else nothing is left to stop or to fail
            if deadline is not None and now >= deadline:
                await self.executor.kill_owned_by(key, f"the backup did not finish within backupTimeout {timeout}")
            target = _target(bc, namespace)
            if not await target_exists(self.client, target, namespace):
                what = f"{target.kind} {target.namespace}/{target.name}"
                await self.executor.kill_owned_by(key, f"the target {what} was deleted while the backup ran")
            for snap in snapshots:
                await self._collect_exits(key, snap)

        status["snapshots"] = [
            {**entry, "phase": ((snap or {}).get("status") or {}).get("phase") or "Pending"}
            for entry, snap in zip(status.get("snapshots") or [], snapshots, strict=True)
        ]
        if all(s["phase"] in ("Succeeded", "Failed") for s in status["snapshots"]):
            await self._after_backup(data, bc, session, status, now)
            await self._finish(data, status, now)
            return None
        status["phase"] = backup_session_phase(BackupSession.model_validate({**data, "status": status}))
        if status != data.get("status"):
            await patch_status(self.client, "BackupSession", name, namespace, status)
        # While a component runs, look again now and then: a deleted target (no event reaches this session)
        # must stop a backup that reports no progress, and the deadline must be met on time.
        wait = RUNNING_RECHECK if deadline is None else min(RUNNING_RECHECK, (deadline - now).total_seconds() + 0.1)
        return Result(requeue_after=max(0.2, wait))

    # ------------------------------------------------------------ steps

    def _skip_reason(self, bs: BackupSession, bc: BackupConfiguration | None, session: Session | None) -> str | None:
        invoker = bs.spec.invoker.name if bs.spec.invoker else ""
        if bc is None:
            return f"BackupConfiguration {invoker!r} not found"
        if session is None:
            return f"BackupConfiguration {invoker} has no session {bs.spec.session!r}"
        phase = (bc.status.phase if bc.status else None) or "NotReady"
        if phase != "Ready":
            why = "; ".join(not_ready_reasons(bc.model_dump(by_alias=True, exclude_none=True).get("status") or {}))
            return f"BackupConfiguration {invoker} is {phase}" + (why and f": {why}")
        mine = (bs.metadata.creation_timestamp or "", bs.metadata.name or "")
        for other in self.sessions.list(bs.metadata.namespace):
            meta = other["metadata"]
            spec = other.get("spec") or {}
            if meta["name"] == bs.metadata.name or (spec.get("invoker") or {}).get("name") != invoker:
                continue
            if spec.get("session") != bs.spec.session:
                continue
            other_status = other.get("status") or {}
            if other_status.get("phase") in FINAL:
                continue
            started = has_condition(other_status.get("conditions") or [], cond.SNAPSHOTS_ENSURED)
            # Of two runs triggered together, the older goes first: deterministic without coordination.
            if started or (meta.get("creationTimestamp") or "", meta["name"]) < mine:
                return f"another backup of session {bs.spec.session} is running: BackupSession {meta['name']}"
        return None

    async def _ensure_snapshots(
        self, data: dict[str, Any], bc: BackupConfiguration, session: Session, components: list[str], now: datetime
    ) -> list[dict[str, Any]]:
        meta = data["metadata"]
        target = _target(bc, meta["namespace"])
        app_ref = target.model_dump(by_alias=True, exclude_none=True)
        entries = []
        for repo in session.repositories or []:
            name = snapshot_name(repo.name, meta["name"])
            manifest = {
                "apiVersion": "storage.kubestash.com/v1alpha1",
                "kind": "Snapshot",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": {
                        **MANAGED_BY_LABELS,
                        "kubestash.com/repo-name": repo.name,
                        "kubestash.com/app-ref-kind": target.kind or "",
                        "kubestash.com/app-ref-name": target.name,
                        "kubestash.com/app-ref-namespace": target.namespace or meta["namespace"],
                        "kubestash.com/session-name": session.name,
                    },
                },
                "spec": {
                    "snapshotID": str(ulid.ULID()),
                    "type": "FullBackup",
                    "repository": repo.name,
                    "session": session.name,
                    "backupSession": meta["name"],
                    "version": "v1",
                    "appRef": app_ref,
                    "deletionPolicy": "Delete",
                },
            }
            await create(self.client, manifest)
            await patch_status(
                self.client,
                "Snapshot",
                name,
                meta["namespace"],
                {"totalComponents": len(components), "components": {c: {"phase": "Pending"} for c in components}},
            )
            entries.append({"name": name, "phase": "Pending", "appRef": app_ref, "repository": repo.name})
        return entries

    def _invocation(self, owner: Key, snap: dict[str, Any] | None, component: str) -> Invocation:
        meta = (snap or {}).get("metadata") or {}
        args = ["backup", "--namespace", meta.get("namespace", ""), "--snapshot", meta.get("name", "")]
        args += ["--component", component]
        if self.kubeconfig:
            args += ["--kubeconfig", self.kubeconfig]
        return Invocation(
            key=f"{meta.get('namespace')}/{meta.get('name')}/{component}", argv=task_command(*args), owner=owner
        )

    async def _collect_exits(self, owner: Key, snap: dict[str, Any] | None) -> None:
        """Fail components whose process is gone without a result (killed, crashed, deadline)."""
        if snap is None:
            return
        meta = snap["metadata"]
        components = (snap.get("status") or {}).get("components") or {}
        failed: dict[str, Any] = {}
        for component, state in components.items():
            if state.get("phase") in ("Succeeded", "Failed"):
                continue
            reason = self.executor.unreported_end(f"{meta['namespace']}/{meta['name']}/{component}", "backup")
            if reason is None:
                continue
            failed[component] = {"phase": "Failed", "error": reason}
        if failed:
            snap_conditions = list((snap.get("status") or {}).get("conditions") or [])
            set_condition(
                snap_conditions,
                cond.BACKUP_INCOMPLETE,
                "True",
                cond.REASON_BACKUP_EXECUTOR_TERMINATED,
                "; ".join(f"{c}: {f['error']}" for c, f in failed.items()),
            )
            body = {"components": failed, "conditions": snap_conditions}
            await patch_status(self.client, "Snapshot", meta["name"], meta["namespace"], body)

    async def _after_backup(
        self, data: dict[str, Any], bc: BackupConfiguration, session: Session, status: dict[str, Any], now: datetime
    ) -> None:
        conditions = status["conditions"]
        namespace = data["metadata"]["namespace"]

        async def retention(repository: str, name: str, policy_namespace: str) -> dict[str, Any]:
            entry: dict[str, Any] = {"ref": {"name": name, "namespace": policy_namespace}, "repository": repository}
            try:
                removed = await self._apply_retention(namespace, repository, name, policy_namespace, now)
                entry["phase"] = "Applied"
                if removed:
                    log.info("retention removed %s", ", ".join(removed))
            except (ApiError, ValueError) as exc:
                entry["phase"] = "FailedToApply"
                entry["error"] = exc.status.message if isinstance(exc, ApiError) else str(exc)
            return entry

        async def history() -> ApiError | None:
            try:
                await self._clean_history(data, session)
            except ApiError as exc:
                return exc
            return None

        policies = []
        for repo in session.repositories or []:
            backend = next((b for b in bc.spec.backends or [] if b.name == repo.backend), None)
            ref = backend.retention_policy if backend else None
            if ref is not None:
                policies.append(retention(repo.name, ref.name, ref.namespace or namespace))
        # Each repository's retention and the history cleanup touch different objects: done at once.
        results, failed = await asyncio.gather(asyncio.gather(*policies), history())
        status["retentionPolicy"] = results
        if results:
            set_condition(
                conditions,
                cond.RETENTION_POLICY_EXECUTOR_ENSURED,
                "True",
                cond.REASON_RETENTION_POLICY_EXECUTOR_ENSURED,
                "retention policy applied",
            )
        if failed is None:
            set_condition(
                conditions,
                cond.SESSION_HISTORY_CLEANED,
                "True",
                cond.REASON_SESSION_HISTORY_CLEANED,
                "Successfully cleaned up backup history",
            )
        else:
            set_condition(
                conditions,
                cond.SESSION_HISTORY_CLEANED,
                "False",
                cond.REASON_SESSION_HISTORY_CLEAN_FAILED,
                failed.status.message or "failed",
            )

    async def _apply_retention(
        self, namespace: str, repository: str, policy_name: str, policy_namespace: str, now: datetime
    ) -> list[str]:
        policy = RetentionPolicy.model_validate(
            (await self.client.get(by_kind("RetentionPolicy"), policy_name, namespace=policy_namespace)).to_dict()  # type: ignore[attr-defined]
        )
        records = []
        for snap in self.snapshots.list(namespace):
            if (snap.get("spec") or {}).get("repository") != repository or snap["metadata"].get("deletionTimestamp"):
                continue
            snap_status = snap.get("status") or {}
            phase = snap_status.get("phase")
            if phase not in ("Succeeded", "Failed"):
                continue
            when = parse_time(snap_status.get("snapshotTime")) or parse_time(snap["metadata"].get("creationTimestamp"))
            if when is None:
                continue
            records.append(SnapshotRecord(snap["metadata"]["name"], when, phase == "Succeeded"))
        removed = [d.snapshot.name for d in apply_retention_policy(policy.spec, records, now) if not d.keep]
        for snap_name in removed:
            # WipeOut: the Snapshot's finalizer forgets and prunes its data in every component repository.
            await patch(self.client, "Snapshot", snap_name, namespace, {"spec": {"deletionPolicy": "WipeOut"}})
            await self.client.delete(by_kind("Snapshot"), snap_name, namespace=namespace)
        return removed

    async def _clean_history(self, data: dict[str, Any], session: Session) -> None:
        meta = data["metadata"]
        invoker = (data.get("spec") or {}).get("invoker", {}).get("name")
        finished = [
            s
            for s in self.sessions.list(meta["namespace"])
            if (s.get("spec") or {}).get("invoker", {}).get("name") == invoker
            and (s.get("spec") or {}).get("session") == session.name
            and s["metadata"]["name"] != meta["name"]
            and (s.get("status") or {}).get("phase") in FINAL
        ]
        finished.sort(key=lambda s: (s["metadata"].get("creationTimestamp") or "", s["metadata"]["name"]))
        keep = max(0, (session.session_history_limit or 1) - 1)  # this session counts
        for old in finished[: max(0, len(finished) - keep)]:
            try:
                await self.client.delete(by_kind("BackupSession"), old["metadata"]["name"], namespace=meta["namespace"])
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    async def _retry(self, data: dict[str, Any], status: dict[str, Any]) -> Result | None:
        """At ``nextRetry``, run a failed session again with one retry less (reference §3.6 step 10)."""
        due = parse_time(status.get("nextRetry"))
        if not status.get("retried") or due is None:
            return None
        now = self.clock()
        if now < due:
            return Result(requeue_after=(due - now).total_seconds() + 0.05)
        meta, spec = data["metadata"], data.get("spec") or {}
        bc = self.configs.get(meta["namespace"], (spec.get("invoker") or {}).get("name", ""))
        if bc is None:
            return None
        left = int(spec.get("retryLeft") or 0) - 1
        manifest = backup_session_manifest(bc, str(spec.get("session")), int(due.timestamp()), retry_left=left)
        if await create(self.client, manifest):
            log.info("retrying %s/%s as %s", meta["namespace"], meta["name"], manifest["metadata"]["name"])
        return None

    async def _finish(self, data: dict[str, Any], status: dict[str, Any], now: datetime) -> None:
        close_session(status, data["metadata"], now)
        status["phase"] = backup_session_phase(BackupSession.model_validate({**data, "status": status}))
        retry_left = int((data.get("spec") or {}).get("retryLeft") or 0)
        if status["phase"] == "Failed" and retry_left > 0:
            delay = self._retry_delay(data)
            status["retried"] = True
            status["nextRetry"] = rfc3339(now + delay)
        meta = data["metadata"]
        await patch_status(self.client, "BackupSession", meta["name"], meta["namespace"], status)
        if status["phase"] != "Skipped":
            message = f"backup {status['phase']} in {status['duration']}"
            ok = status["phase"] == "Succeeded"
            await record(self.events, data, "Normal" if ok else "Warning", str(status["phase"]), message)
        keys = [k for s in status.get("snapshots") or [] for k in self._keys_of(meta["namespace"], s["name"])]
        self.executor.forget(keys)

    def _retry_delay(self, data: dict[str, Any]) -> timedelta:
        spec = data.get("spec") or {}
        bc = self.configs.get(data["metadata"]["namespace"], (spec.get("invoker") or {}).get("name", ""))
        model = BackupConfiguration.model_validate(bc) if bc else None
        session = next(
            (s for s in (model.spec.sessions if model else None) or [] if s.name == spec.get("session")), None
        )
        delay = session.retry_config.delay if session and session.retry_config else None
        return parse_go_duration(delay) if delay else timedelta(0)

    def _keys_of(self, namespace: str, snap_name: str) -> list[str]:
        snap = self.snapshots.get(namespace, snap_name) or {}
        return [f"{namespace}/{snap_name}/{c}" for c in _components(snap)]


def _components(snap: dict[str, Any] | None) -> list[str]:
    return sorted(((snap or {}).get("status") or {}).get("components") or {})


def _reported(snap: dict[str, Any] | None) -> bool:
    """Whether every component of the Snapshot has reported its result (its process has nothing left to do)."""
    components = ((snap or {}).get("status") or {}).get("components") or {}
    return bool(components) and all(c.get("phase") in ("Succeeded", "Failed") for c in components.values())


def _target(bc: BackupConfiguration, namespace: str) -> Any:
    target = bc.spec.target
    if target is None:
        raise ValueError("the BackupConfiguration has no target")
    return target if target.namespace else target.model_copy(update={"namespace": namespace})
