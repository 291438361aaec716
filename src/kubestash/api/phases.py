"""Phases derived from conditions and components, exactly as KubeStash's ``CalculatePhase``.

Controllers never store a phase they have not computed here, so two controllers
(or a controller and ``kubectl``) can never disagree on what a status means.
"""

from __future__ import annotations

from kubestash.api import conditions as c
from kubestash.api.backup import BackupConfiguration, BackupSession, BackupSessionPhase, InvokerPhase
from kubestash.api.restore import RestorePhase, RestoreSession
from kubestash.api.storage import BackupStorage, ComponentPhase, Repository, Snapshot
from kubestash.api.verification import BackupVerificationSession


def backup_storage_phase(bs: BackupStorage) -> str:
    conds = bs.status.conditions if bs.status else None
    if c.is_condition_true(conds, c.BACKEND_INITIALIZED) and (
        not c.has_condition(conds, c.BACKEND_SECRET_FOUND) or c.is_condition_true(conds, c.BACKEND_SECRET_FOUND)
    ):
        return "Ready"
    return "NotReady"


def repository_phase(repo: Repository) -> str:
    conds = repo.status.conditions if repo.status else None
    return "Ready" if c.is_condition_true(conds, c.REPOSITORY_INITIALIZED) else "NotReady"


def backup_configuration_phase(bc: BackupConfiguration) -> InvokerPhase:
    status = bc.status
    if status is None:
        return "NotReady"
    if c.is_condition_false(status.conditions, c.VALIDATION_PASSED):
        return "Invalid"
    backends = status.backends or []
    sessions = status.sessions or []
    ready = (
        bool(status.target_found)
        and len(backends) == len(bc.spec.backends or [])
        and all(b.ready for b in backends)
        and len(sessions) == len(bc.spec.sessions or [])
        and all(c.is_condition_true(s.conditions, c.SCHEDULER_ENSURED) for s in sessions)
    )
    return "Ready" if ready else "NotReady"


def backup_session_phase(bs: BackupSession) -> BackupSessionPhase:
    status = bs.status
    conds = status.conditions if status else None
    if c.is_condition_false(conds, c.METRICS_PUSHED):
        return "Failed"
    if c.is_condition_true(conds, c.BACKUP_SKIPPED):
        return "Skipped"
    retention_failed = any(r.phase == "FailedToApply" for r in (status.retention_policy or [])) if status else False
    if c.is_condition_true(conds, c.METRICS_PUSHED) and (
        c.is_condition_false(conds, c.BACKUP_EXECUTOR_ENSURED)
        or c.is_condition_false(conds, c.SNAPSHOTS_ENSURED)
        or c.is_condition_false(conds, c.PRE_BACKUP_HOOKS_SUCCEEDED)
        or c.is_condition_false(conds, c.POST_BACKUP_HOOKS_SUCCEEDED)
        or retention_failed
        or c.is_condition_false(conds, c.SESSION_HISTORY_CLEANED)
        or c.is_condition_true(conds, c.SNAPSHOT_CLEANUP_INCOMPLETE)
    ):
        return "Failed"
    snapshots_phase = _backup_session_snapshots_phase(bs)
    if snapshots_phase == "Pending" or c.has_condition(conds, c.METRICS_PUSHED):
        return snapshots_phase
    return "Running"


def _backup_session_snapshots_phase(bs: BackupSession) -> BackupSessionPhase:
    snapshots = (bs.status.snapshots if bs.status else None) or []
    if not snapshots:
        return "Pending"
    phases = [s.phase for s in snapshots]
    if phases.count("Pending") == len(phases):
        return "Pending"
    failed = phases.count("Failed")
    if phases.count("Succeeded") + failed != len(phases):
        return "Running"
    return "Failed" if failed else "Succeeded"


def snapshot_components_phase(snap: Snapshot) -> ComponentPhase:
    status = snap.status
    if status is None or not status.components:
        return "Pending"
    total = status.total_components or 0
    phases = [comp.phase for comp in status.components.values()]
    succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
    if succeeded == total:
        return "Succeeded"
    if succeeded + failed == total or failed > 0:
        return "Failed"
    return "Running"


def snapshot_phase(snap: Snapshot) -> ComponentPhase:
    conds = snap.status.conditions if snap.status else None
    if (
        c.is_condition_false(conds, c.SNAPSHOT_METADATA_UPLOADED)
        or c.is_condition_false(conds, c.RECENT_SNAPSHOT_LIST_UPDATED)
        or c.is_condition_true(conds, c.BACKUP_INCOMPLETE)
    ):
        return "Failed"
    components_phase = snapshot_components_phase(snap)
    if components_phase == "Pending":
        return "Pending"
    if c.has_condition(conds, c.SNAPSHOT_METADATA_UPLOADED):
        return components_phase
    return "Running"


def snapshot_integrity(snap: Snapshot) -> bool | None:
    """AND of component integrities; unknown while any restic component has not reported one."""
    components = (snap.status.components if snap.status else None) or {}
    if not components:
        return None
    result, any_checked = True, False
    for comp in components.values():
        if comp.restic_stats is not None and comp.integrity is None:
            return None
        if comp.integrity is None:
            continue
        any_checked = True
        result = result and comp.integrity
    return result if any_checked else None


def restore_components_phase(rs: RestoreSession) -> RestorePhase:
    status = rs.status
    if status is None or not status.components:
        return "Pending"
    total = status.total_components or 0
    phases = [comp.phase for comp in status.components.values()]
    succeeded, failed, unknown = phases.count("Succeeded"), phases.count("Failed"), phases.count("Unknown")
    if succeeded == total:
        return "Succeeded"
    if succeeded + failed + unknown == total:
        return "Failed" if failed else "Unknown"
    if failed:
        return "Failed"
    return "Running"


def restore_session_phase(rs: RestoreSession) -> RestorePhase:
    conds = rs.status.conditions if rs.status else None
    if c.is_condition_false(conds, c.METRICS_PUSHED):
        return "Failed"
    if c.is_condition_false(conds, c.VALIDATION_PASSED):
        return "Invalid"
    if c.is_condition_true(conds, c.METRICS_PUSHED) and (
        c.is_condition_false(conds, c.PRE_RESTORE_HOOKS_SUCCEEDED)
        or c.is_condition_false(conds, c.POST_RESTORE_HOOKS_SUCCEEDED)
        or c.is_condition_false(conds, c.RESTORE_EXECUTOR_ENSURED)
        or c.is_condition_true(conds, c.RESTORE_INCOMPLETE)
    ):
        return "Failed"
    components_phase = restore_components_phase(rs)
    if components_phase in ("Pending", "Unknown") or c.has_condition(conds, c.METRICS_PUSHED):
        return components_phase
    return "Running"


def backup_verification_session_phase(bvs: BackupVerificationSession) -> str:
    conds = bvs.status.conditions if bvs.status else None
    if c.is_condition_false(conds, c.VERIFICATION_SESSION_HISTORY_CLEANED):
        return "Failed"
    if c.is_condition_true(conds, c.BACKUP_VERIFICATION_SKIPPED):
        return "Skipped"
    history_cleaned = c.is_condition_true(conds, c.VERIFICATION_SESSION_HISTORY_CLEANED)
    if history_cleaned and (
        c.is_condition_false(conds, c.RESTORE_SUCCEEDED) or c.is_condition_false(conds, c.BACKUP_VERIFIED)
    ):
        return "Failed"
    return "Succeeded" if history_cleaned else "Running"
