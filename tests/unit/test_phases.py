"""Phases derived from conditions and components, checked against the rules in the KubeStash reference
(/work/shared/reference/kubestash.md, each kind's "Phase rule"/"Phase algorithm"; BackupVerificationSession from
apimachinery's ``BackupVerificationSession.CalculatePhase``)."""

from __future__ import annotations

from typing import Any

import pytest

from kubestash.api import conditions as c
from kubestash.api import phases
from kubestash.api.backup import BackupConfiguration, BackupSession
from kubestash.api.restore import RestoreSession
from kubestash.api.storage import BackupStorage, Repository, Snapshot
from kubestash.api.verification import BackupVerificationSession

T = "2026-01-01T00:00:00Z"

Conds = dict[str, str]
"""condition type -> status ("True"/"False"/"Unknown")"""


def wire_conditions(conds: Conds) -> list[dict[str, Any]]:
    return [{"type": t, "status": s, "reason": "Test", "lastTransitionTime": T} for t, s in conds.items()]


def status_with(conds: Conds | None, **fields: Any) -> dict[str, Any]:
    status: dict[str, Any] = dict(fields)
    if conds is not None:
        status["conditions"] = wire_conditions(conds)
    return status


# --------------------------------------------------------------------------- BackupStorage


def backup_storage(conds: Conds | None) -> BackupStorage:
    obj: dict[str, Any] = {
        "metadata": {"name": "s3-storage", "namespace": "demo"},
        "spec": {"storage": {"provider": "s3", "s3": {"bucket": "b", "secretName": "s3-secret"}}},
    }
    if conds is not None:
        obj["status"] = status_with(conds)
    return BackupStorage.model_validate(obj)


@pytest.mark.parametrize(
    ("conds", "expected"),
    [
        (None, "NotReady"),
        ({}, "NotReady"),
        ({c.BACKEND_INITIALIZED: "True"}, "Ready"),  # no secret check (credential-less) is fine
        ({c.BACKEND_INITIALIZED: "True", c.BACKEND_SECRET_FOUND: "True"}, "Ready"),
        ({c.BACKEND_INITIALIZED: "True", c.BACKEND_SECRET_FOUND: "False"}, "NotReady"),
        ({c.BACKEND_INITIALIZED: "True", c.BACKEND_SECRET_FOUND: "Unknown"}, "NotReady"),
        ({c.BACKEND_INITIALIZED: "False", c.BACKEND_SECRET_FOUND: "True"}, "NotReady"),
        ({c.BACKEND_INITIALIZED: "Unknown"}, "NotReady"),
        ({c.BACKEND_SECRET_FOUND: "True"}, "NotReady"),
    ],
)
def test_backup_storage_phase(conds: Conds | None, expected: str) -> None:
    assert phases.backup_storage_phase(backup_storage(conds)) == expected


# --------------------------------------------------------------------------- Repository


@pytest.mark.parametrize(
    ("conds", "expected"),
    [
        (None, "NotReady"),
        ({}, "NotReady"),
        ({c.REPOSITORY_INITIALIZED: "True"}, "Ready"),
        ({c.REPOSITORY_INITIALIZED: "False"}, "NotReady"),
        ({c.REPOSITORY_INITIALIZED: "Unknown"}, "NotReady"),
        ({c.BACKEND_INITIALIZED: "True"}, "NotReady"),
    ],
)
def test_repository_phase(conds: Conds | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "gcs-demo-repo"}, "spec": {"path": "/dep"}}
    if conds is not None:
        obj["status"] = status_with(conds)
    assert phases.repository_phase(Repository.model_validate(obj)) == expected


# --------------------------------------------------------------------------- BackupConfiguration


def backup_configuration(
    *,
    status: bool = True,
    validation: str | None = "True",
    target_found: bool | None = True,
    backends: list[bool | None] | None = None,
    sessions: list[str] | None = None,
    spec_backends: int = 2,
    spec_sessions: int = 2,
) -> BackupConfiguration:
    """A BC with ``spec_backends`` backends and ``spec_sessions`` sessions; status lists given explicitly."""
    backends = [True, True] if backends is None else backends
    sessions = ["True", "True"] if sessions is None else sessions
    obj: dict[str, Any] = {
        "metadata": {"name": "sample-backup-dep", "namespace": "demo"},
        "spec": {
            "backends": [{"name": f"backend-{i}"} for i in range(spec_backends)],
            "sessions": [{"name": f"session-{i}"} for i in range(spec_sessions)],
        },
    }
    if status:
        st: dict[str, Any] = {
            "backends": [
                {"name": f"backend-{i}"} | ({} if r is None else {"ready": r}) for i, r in enumerate(backends)
            ],
            "sessions": [
                {"name": f"session-{i}", "conditions": wire_conditions({c.SCHEDULER_ENSURED: s})}
                for i, s in enumerate(sessions)
            ],
        }
        if target_found is not None:
            st["targetFound"] = target_found
        if validation is not None:
            st["conditions"] = wire_conditions({c.VALIDATION_PASSED: validation})
        obj["status"] = st
    return BackupConfiguration.model_validate(obj)


def test_backup_configuration_ready() -> None:
    assert phases.backup_configuration_phase(backup_configuration()) == "Ready"


def test_backup_configuration_ready_without_validation_condition() -> None:
    assert phases.backup_configuration_phase(backup_configuration(validation=None)) == "Ready"


def test_backup_configuration_without_status_is_not_ready() -> None:
    assert phases.backup_configuration_phase(backup_configuration(status=False)) == "NotReady"


def test_backup_configuration_invalid_wins_over_ready() -> None:
    assert phases.backup_configuration_phase(backup_configuration(validation="False")) == "Invalid"
    assert phases.backup_configuration_phase(backup_configuration(validation="False", target_found=False)) == "Invalid"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_found": False},
        {"target_found": None},
        {"backends": [True, False]},
        {"backends": [True, None]},
        {"backends": [True]},  # one backend not reported yet
        {"backends": [True, True, True]},  # more reported than configured
        {"sessions": ["True", "False"]},
        {"sessions": ["True", "Unknown"]},
        {"sessions": ["True"]},  # one session's scheduler not reported yet
        {"validation": "Unknown", "target_found": False},
    ],
)
def test_backup_configuration_not_ready(kwargs: dict[str, Any]) -> None:
    assert phases.backup_configuration_phase(backup_configuration(**kwargs)) == "NotReady"


def test_backup_configuration_unknown_validation_does_not_block_ready() -> None:
    assert phases.backup_configuration_phase(backup_configuration(validation="Unknown")) == "Ready"


# --------------------------------------------------------------------------- BackupSession


def backup_session(
    conds: Conds | None = None,
    snapshots: list[str] | None = None,
    retention: list[str] | None = None,
) -> BackupSession:
    obj: dict[str, Any] = {
        "metadata": {"name": "sample-backup-dep-demo-session-1700000000", "namespace": "demo"},
        "spec": {
            "invoker": {"apiGroup": "core.kubestash.com", "kind": "BackupConfiguration", "name": "bc"},
            "session": "demo-session",
        },
    }
    if conds is not None or snapshots is not None or retention is not None:
        st: dict[str, Any] = status_with(conds)
        if snapshots is not None:
            st["snapshots"] = [{"name": f"snap-{i}", "phase": p} for i, p in enumerate(snapshots)]
        if retention is not None:
            st["retentionPolicy"] = [{"repository": f"repo-{i}", "phase": p} for i, p in enumerate(retention)]
        obj["status"] = st
    return BackupSession.model_validate(obj)


DONE = {c.METRICS_PUSHED: "True"}


def test_backup_session_without_status_is_pending() -> None:
    assert phases.backup_session_phase(backup_session()) == "Pending"


def test_backup_session_metrics_push_failure_is_failed() -> None:
    bs = backup_session({c.METRICS_PUSHED: "False", c.BACKUP_SKIPPED: "True"}, ["Succeeded"])
    assert phases.backup_session_phase(bs) == "Failed"


def test_backup_session_skipped() -> None:
    assert phases.backup_session_phase(backup_session({c.BACKUP_SKIPPED: "True"})) == "Skipped"
    assert phases.backup_session_phase(backup_session({c.BACKUP_SKIPPED: "True", **DONE}, ["Failed"])) == "Skipped"


@pytest.mark.parametrize(
    "failure",
    [
        {c.BACKUP_EXECUTOR_ENSURED: "False"},
        {c.SNAPSHOTS_ENSURED: "False"},
        {c.PRE_BACKUP_HOOKS_SUCCEEDED: "False"},
        {c.POST_BACKUP_HOOKS_SUCCEEDED: "False"},
        {c.SESSION_HISTORY_CLEANED: "False"},
        {c.SNAPSHOT_CLEANUP_INCOMPLETE: "True"},
    ],
)
def test_backup_session_failure_after_final_step(failure: Conds) -> None:
    # even with every snapshot succeeded, a failed step makes the finished session Failed
    assert phases.backup_session_phase(backup_session({**DONE, **failure}, ["Succeeded", "Succeeded"])) == "Failed"


@pytest.mark.parametrize(
    "failure",
    [
        {c.PRE_BACKUP_HOOKS_SUCCEEDED: "False"},
        {c.BACKUP_EXECUTOR_ENSURED: "False"},
        {c.SNAPSHOT_CLEANUP_INCOMPLETE: "True"},
    ],
)
def test_backup_session_failure_before_final_step_is_still_running(failure: Conds) -> None:
    # the phase only turns Failed once the final step (MetricsPushed) ran
    assert phases.backup_session_phase(backup_session(failure, ["Succeeded"])) == "Running"


def test_backup_session_retention_failure() -> None:
    bs = backup_session(DONE, ["Succeeded"], retention=["Applied", "FailedToApply"])
    assert phases.backup_session_phase(bs) == "Failed"
    ok = backup_session(DONE, ["Succeeded"], retention=["Applied", "Applied"])
    assert phases.backup_session_phase(ok) == "Succeeded"


@pytest.mark.parametrize(
    ("snapshots", "with_final_step", "expected"),
    [
        ([], False, "Pending"),
        ([], True, "Pending"),
        (["Pending"], False, "Pending"),
        (["Pending", "Pending"], True, "Pending"),
        (["Pending", "Running"], False, "Running"),
        (["Succeeded", "Pending"], False, "Running"),
        (["Succeeded", "Running"], True, "Running"),
        (["Succeeded", "Succeeded"], False, "Running"),  # not done until MetricsPushed
        (["Succeeded", "Succeeded"], True, "Succeeded"),
        (["Succeeded", "Failed"], False, "Running"),
        (["Succeeded", "Failed"], True, "Failed"),
        (["Failed"], True, "Failed"),
    ],
)
def test_backup_session_phase_from_snapshots(snapshots: list[str], with_final_step: bool, expected: str) -> None:
    bs = backup_session(DONE if with_final_step else {}, snapshots)
    assert phases.backup_session_phase(bs) == expected


def test_backup_session_unknown_metrics_counts_as_final_step() -> None:
    # "MetricsPushed present" (any status) ends the session with the snapshots' phase
    bs = backup_session({c.METRICS_PUSHED: "Unknown"}, ["Succeeded"])
    assert phases.backup_session_phase(bs) == "Succeeded"


# --------------------------------------------------------------------------- Snapshot


def snapshot(
    conds: Conds | None = None,
    components: list[str] | None = None,
    total: int | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Snapshot:
    obj: dict[str, Any] = {
        "metadata": {"name": "gcs-demo-repo-sample-backup-dep-demo-session-1700000000", "namespace": "demo"},
        "spec": {"repository": "gcs-demo-repo", "session": "demo-session"},
    }
    st: dict[str, Any] = status_with(conds)
    if components is not None:
        st["components"] = {f"dump-pod-{i}": {"phase": p} for i, p in enumerate(components)}
        st["totalComponents"] = len(components) if total is None else total
    if extra is not None:
        st["components"] = extra
    if conds is not None or components is not None or extra is not None:
        obj["status"] = st
    return Snapshot.model_validate(obj)


UPLOADED = {c.SNAPSHOT_METADATA_UPLOADED: "True"}


@pytest.mark.parametrize(
    "failure",
    [
        {c.SNAPSHOT_METADATA_UPLOADED: "False"},
        {c.RECENT_SNAPSHOT_LIST_UPDATED: "False"},
        {c.BACKUP_INCOMPLETE: "True", **UPLOADED},
    ],
)
def test_snapshot_failed_conditions(failure: Conds) -> None:
    assert phases.snapshot_phase(snapshot(failure, ["Succeeded"])) == "Failed"
    assert phases.snapshot_phase(snapshot(failure)) == "Failed"


@pytest.mark.parametrize(
    ("conds", "components", "total", "expected"),
    [
        (None, None, None, "Pending"),
        (UPLOADED, None, None, "Pending"),
        (UPLOADED, [], 0, "Pending"),
        ({}, ["Running"], None, "Running"),
        ({}, ["Succeeded", "Succeeded"], None, "Running"),  # metadata not uploaded yet
        (UPLOADED, ["Succeeded", "Succeeded"], None, "Succeeded"),
        (UPLOADED, ["Succeeded", "Failed"], None, "Failed"),
        (UPLOADED, ["Running", "Failed", "Succeeded"], None, "Failed"),  # any failed component
        (UPLOADED, ["Succeeded", "Running"], None, "Running"),
        (UPLOADED, ["Succeeded"], 2, "Running"),  # second component has not reported yet
        (UPLOADED, ["Succeeded", "Failed"], 3, "Failed"),
        ({c.SNAPSHOT_METADATA_UPLOADED: "Unknown"}, ["Succeeded"], None, "Succeeded"),
    ],
)
def test_snapshot_phase(conds: Conds | None, components: list[str] | None, total: int | None, expected: str) -> None:
    assert phases.snapshot_phase(snapshot(conds, components, total)) == expected


@pytest.mark.parametrize(
    ("components", "total", "expected"),
    [
        (None, None, "Pending"),
        (["Succeeded"], None, "Succeeded"),
        (["Succeeded", "Failed"], None, "Failed"),
        (["Pending", "Failed"], None, "Failed"),
        (["Pending", "Running"], None, "Running"),
        (["Succeeded"], 3, "Running"),
    ],
)
def test_snapshot_components_phase(components: list[str] | None, total: int | None, expected: str) -> None:
    assert phases.snapshot_components_phase(snapshot({}, components, total)) == expected


RESTIC = {"resticStats": [{"summary": {"id": "abc", "hostPath": "/source/data"}}]}


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        ({}, None),
        ({"dump": {"integrity": True, **RESTIC}}, True),
        ({"dump-pod-0": {"integrity": True, **RESTIC}, "dump-pod-1": {"integrity": False, **RESTIC}}, False),
        ({"dump-pod-0": {"integrity": True, **RESTIC}, "dump-pod-1": {**RESTIC}}, None),  # not checked yet
        ({"dump": {"integrity": True, **RESTIC}, "volumesnapshot": {"volumeSnapshotterStats": []}}, True),
        ({"volumesnapshot": {"volumeSnapshotterStats": [{"pvcName": "data"}]}}, None),
    ],
)
def test_snapshot_integrity(components: dict[str, dict[str, Any]], expected: bool | None) -> None:
    snap = snapshot(UPLOADED, extra=components)
    assert phases.snapshot_integrity(snap) is expected


# --------------------------------------------------------------------------- RestoreSession


def restore_session(
    conds: Conds | None = None, components: list[str] | None = None, total: int | None = None
) -> RestoreSession:
    obj: dict[str, Any] = {
        "metadata": {"name": "sample-restore", "namespace": "demo"},
        "spec": {"dataSource": {"repository": "gcs-demo-repo", "snapshot": "latest"}},
    }
    if conds is not None or components is not None:
        st = status_with(conds)
        if components is not None:
            st["components"] = {f"dump-pod-{i}": {"phase": p} for i, p in enumerate(components)}
            st["totalComponents"] = len(components) if total is None else total
        obj["status"] = st
    return RestoreSession.model_validate(obj)


def test_restore_session_without_status_is_pending() -> None:
    assert phases.restore_session_phase(restore_session()) == "Pending"


def test_restore_session_metrics_failure_wins_over_invalid() -> None:
    rs = restore_session({c.METRICS_PUSHED: "False", c.VALIDATION_PASSED: "False"})
    assert phases.restore_session_phase(rs) == "Failed"


def test_restore_session_invalid() -> None:
    assert phases.restore_session_phase(restore_session({c.VALIDATION_PASSED: "False"})) == "Invalid"
    rs = restore_session({c.VALIDATION_PASSED: "False", **DONE}, ["Succeeded"])
    assert phases.restore_session_phase(rs) == "Invalid"


@pytest.mark.parametrize(
    "failure",
    [
        {c.PRE_RESTORE_HOOKS_SUCCEEDED: "False"},
        {c.POST_RESTORE_HOOKS_SUCCEEDED: "False"},
        {c.RESTORE_EXECUTOR_ENSURED: "False"},
        {c.RESTORE_INCOMPLETE: "True"},
    ],
)
def test_restore_session_failure_after_final_step(failure: Conds) -> None:
    assert phases.restore_session_phase(restore_session({**DONE, **failure}, ["Succeeded"])) == "Failed"
    # before the final step the same condition leaves it Running
    assert phases.restore_session_phase(restore_session(failure, ["Succeeded"])) == "Running"


@pytest.mark.parametrize(
    ("components", "total", "with_final_step", "expected"),
    [
        ([], None, False, "Pending"),
        ([], None, True, "Pending"),
        (["Running"], None, False, "Running"),
        (["Succeeded", "Succeeded"], None, False, "Running"),
        (["Succeeded", "Succeeded"], None, True, "Succeeded"),
        (["Succeeded", "Failed"], None, True, "Failed"),
        (["Succeeded", "Failed"], None, False, "Running"),
        (["Running", "Failed"], None, True, "Failed"),  # any failed component
        (["Succeeded", "Unknown"], None, False, "Unknown"),  # Unknown is reported without waiting
        (["Succeeded", "Unknown"], None, True, "Unknown"),
        (["Failed", "Unknown"], None, True, "Failed"),
        (["Succeeded"], 2, True, "Running"),
        (["Succeeded", "Running"], None, True, "Running"),
    ],
)
def test_restore_session_phase_from_components(
    components: list[str], total: int | None, with_final_step: bool, expected: str
) -> None:
    rs = restore_session(DONE if with_final_step else {}, components, total)
    assert phases.restore_session_phase(rs) == expected


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        ([], "Pending"),
        (["Succeeded"], "Succeeded"),
        (["Succeeded", "Unknown"], "Unknown"),
        (["Failed", "Unknown", "Succeeded"], "Failed"),
        (["Running", "Failed"], "Failed"),
        (["Running", "Pending"], "Running"),
    ],
)
def test_restore_components_phase(components: list[str], expected: str) -> None:
    assert phases.restore_components_phase(restore_session({}, components)) == expected


# --------------------------------------------------------------------------- BackupVerificationSession


@pytest.mark.parametrize(
    ("conds", "expected"),
    [
        (None, "Running"),
        ({}, "Running"),
        ({c.VERIFICATION_SESSION_HISTORY_CLEANED: "False"}, "Failed"),
        ({c.VERIFICATION_SESSION_HISTORY_CLEANED: "False", c.BACKUP_VERIFICATION_SKIPPED: "True"}, "Failed"),
        ({c.BACKUP_VERIFICATION_SKIPPED: "True"}, "Skipped"),
        ({c.BACKUP_VERIFICATION_SKIPPED: "True", c.VERIFICATION_SESSION_HISTORY_CLEANED: "True"}, "Skipped"),
        ({c.VERIFICATION_SESSION_HISTORY_CLEANED: "True", c.RESTORE_SUCCEEDED: "False"}, "Failed"),
        (
            {c.VERIFICATION_SESSION_HISTORY_CLEANED: "True", c.RESTORE_SUCCEEDED: "True", c.BACKUP_VERIFIED: "False"},
            "Failed",
        ),
        (
            {c.VERIFICATION_SESSION_HISTORY_CLEANED: "True", c.RESTORE_SUCCEEDED: "True", c.BACKUP_VERIFIED: "True"},
            "Succeeded",
        ),
        ({c.VERIFICATION_SESSION_HISTORY_CLEANED: "True", c.RESTORE_SUCCEEDED: "True"}, "Succeeded"),  # RestoreOnly
        ({c.RESTORE_SUCCEEDED: "False"}, "Running"),  # not final until history is cleaned
        ({c.RESTORE_SUCCEEDED: "True", c.BACKUP_VERIFIED: "True"}, "Running"),
    ],
)
def test_backup_verification_session_phase(conds: Conds | None, expected: str) -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "freq-backup-demo-storage-1730194200", "namespace": "demo"},
        "spec": {"session": "freq-backup", "repository": "demo-storage"},
    }
    if conds is not None:
        obj["status"] = status_with(conds)
    assert phases.backup_verification_session_phase(BackupVerificationSession.model_validate(obj)) == expected
