"""Condition types and reasons, and the helpers that read and write condition lists.

The names are KubeStash's (``apis/*/v1alpha1/*_types.go``); controllers set them
and :mod:`kubestash.api.phases` derives every phase from them, so status is a
pure function of conditions and components, never a separately stored guess.

``set_condition`` follows ``meta.SetStatusCondition``: ``lastTransitionTime``
moves only when the status changes, so a reconcile that repeats itself leaves
status byte-for-byte identical and triggers no watch event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kubestash.api.shared import Condition, ConditionStatus

# --- shared
METRICS_PUSHED = "MetricsPushed"
REASON_SUCCESSFULLY_PUSHED_METRICS = "SuccessfullyPushedMetrics"
REASON_FAILED_TO_PUSH_METRICS = "FailedToPushMetrics"
VALIDATION_PASSED = "ValidationPassed"
REASON_RESOURCE_VALIDATION_PASSED = "ResourceValidationPassed"
REASON_RESOURCE_VALIDATION_FAILED = "ResourceValidationFailed"

# --- BackupStorage
BACKEND_INITIALIZED = "BackendInitialized"
REASON_BACKEND_INITIALIZATION_SUCCEEDED = "BackendInitializationSucceeded"
REASON_BACKEND_INITIALIZATION_FAILED = "BackendInitializationFailed"
BACKEND_SECRET_FOUND = "BackendSecretFound"
REASON_BACKEND_SECRET_AVAILABLE = "BackendSecretAvailable"
REASON_BACKEND_SECRET_NOT_AVAILABLE = "BackendSecretNotAvailable"

# --- Repository
REPOSITORY_INITIALIZED = "RepositoryInitialized"
REASON_REPOSITORY_INITIALIZATION_SUCCEEDED = "RepositoryInitializationSucceeded"
REASON_REPOSITORY_INITIALIZATION_FAILED = "RepositoryInitializationFailed"

# --- Snapshot
SNAPSHOT_METADATA_UPLOADED = "SnapshotMetadataUploaded"
REASON_SNAPSHOT_METADATA_UPLOADED = "SuccessfullyUploadedSnapshotMetadata"
REASON_SNAPSHOT_METADATA_UPLOAD_FAILED = "FailedToUploadSnapshotMetadata"
RECENT_SNAPSHOT_LIST_UPDATED = "RecentSnapshotListUpdated"
REASON_RECENT_SNAPSHOT_LIST_UPDATED = "SuccessfullyUpdatedRecentSnapshotList"
REASON_RECENT_SNAPSHOT_LIST_UPDATE_FAILED = "FailedToUpdateRecentSnapshotList"
BACKUP_INCOMPLETE = "BackupIncomplete"
REASON_BACKUP_EXECUTOR_TERMINATED = "BackupExecutorTerminatedBeforeCompletion"

# --- BackupConfiguration (per session)
SCHEDULER_ENSURED = "SchedulerEnsured"
REASON_SCHEDULER_ENSURED = "SchedulerEnsured"
REASON_SCHEDULER_NOT_ENSURED = "SchedulerNotEnsured"
INITIAL_BACKUP_TRIGGERED = "InitialBackupTriggered"
REASON_INITIAL_BACKUP_TRIGGERED = "SuccessfullyTriggeredInitialBackup"
REASON_INITIAL_BACKUP_TRIGGER_FAILED = "FailedToTriggerInitialBackup"

# --- BackupSession
BACKUP_SKIPPED = "BackupSkipped"
REASON_PREREQUISITES_NOT_SATISFIED = "PreRequisitesNotSatisfied"
SESSION_HISTORY_CLEANED = "SessionHistoryCleaned"
REASON_SESSION_HISTORY_CLEANED = "SuccessfullyCleanedSessionHistory"
REASON_SESSION_HISTORY_CLEAN_FAILED = "FailedToCleanSessionHistory"
PRE_BACKUP_HOOKS_SUCCEEDED = "PreBackupHooksExecutionSucceeded"
REASON_PRE_BACKUP_HOOKS_SUCCEEDED = "SuccessfullyExecutedPreBackupHooks"
REASON_PRE_BACKUP_HOOKS_FAILED = "FailedToExecutePreBackupHooks"
POST_BACKUP_HOOKS_SUCCEEDED = "PostBackupHooksExecutionSucceeded"
REASON_POST_BACKUP_HOOKS_SUCCEEDED = "SuccessfullyExecutedPostBackupHooks"
REASON_POST_BACKUP_HOOKS_FAILED = "FailedToExecutePostBackupHooks"
BACKUP_EXECUTOR_ENSURED = "BackupExecutorEnsured"
REASON_BACKUP_EXECUTOR_ENSURED = "SuccessfullyEnsuredBackupExecutor"
REASON_BACKUP_EXECUTOR_FAILED = "FailedToEnsureBackupExecutor"
RETENTION_POLICY_EXECUTOR_ENSURED = "RetentionPolicyExecutorEnsured"
REASON_RETENTION_POLICY_EXECUTOR_ENSURED = "SuccessfullyEnsuredRetentionPolicyExecutor"
REASON_RETENTION_POLICY_EXECUTOR_FAILED = "FailedToEnsureRetentionPolicyExecutor"
SNAPSHOTS_ENSURED = "SnapshotsEnsured"
REASON_SNAPSHOTS_ENSURED = "SuccessfullyEnsuredSnapshots"
REASON_SNAPSHOTS_ENSURE_FAILED = "FailedToEnsureSnapshots"
SNAPSHOT_CLEANUP_INCOMPLETE = "SnapshotCleanupIncomplete"
REASON_SNAPSHOT_CLEANUP_TERMINATED = "SnapshotCleanupTerminatedBeforeCompletion"
POD_PENDING_TOO_LONG = "PodHasBeenInPendingStateForLongerThanExpected"

# --- RestoreSession
RESTORE_EXECUTOR_ENSURED = "RestoreExecutorEnsured"
REASON_RESTORE_EXECUTOR_ENSURED = "SuccessfullyEnsuredRestoreExecutor"
REASON_RESTORE_EXECUTOR_FAILED = "FailedToEnsureRestoreExecutor"
PRE_RESTORE_HOOKS_SUCCEEDED = "PreRestoreHooksExecutionSucceeded"
REASON_PRE_RESTORE_HOOKS_SUCCEEDED = "SuccessfullyExecutedPreRestoreHooks"
REASON_PRE_RESTORE_HOOKS_FAILED = "FailedToExecutePreRestoreHooks"
POST_RESTORE_HOOKS_SUCCEEDED = "PostRestoreHooksExecutionSucceeded"
REASON_POST_RESTORE_HOOKS_SUCCEEDED = "SuccessfullyExecutedPostRestoreHooks"
REASON_POST_RESTORE_HOOKS_FAILED = "FailedToExecutePostRestoreHooks"
RESTORE_TARGET_FOUND = "RestoreTargetFound"
REASON_UNABLE_TO_CHECK_TARGET = "UnableToCheckTargetAvailability"
REASON_TARGET_FOUND = "TargetFound"  # (inferred) the reference names only the failure reason
RESTORE_INCOMPLETE = "RestoreIncomplete"
REASON_RESTORE_EXECUTOR_TERMINATED = "RestoreExecutorTerminatedBeforeCompletion"

# --- BackupVerificationSession
BACKUP_VERIFICATION_SKIPPED = "BackupVerificationSkipped"
REASON_SNAPSHOT_ALREADY_VERIFIED = "SnapshotAlreadyVerified"
VERIFICATION_SESSION_HISTORY_CLEANED = "VerificationSessionHistoryCleaned"
REASON_VERIFICATION_HISTORY_CLEANED = "SuccessfullyCleanedVerificationSessionHistory"
REASON_VERIFICATION_HISTORY_CLEAN_FAILED = "FailedToCleanVerificationSessionHistory"
VERIFICATION_EXECUTOR_ENSURED = "VerificationExecutorEnsured"
REASON_VERIFICATION_EXECUTOR_ENSURED = "SuccessfullyEnsuredVerificationExecutor"
REASON_VERIFICATION_EXECUTOR_FAILED = "FailedToEnsureVerificationExecutor"
RESTORE_SUCCEEDED = "RestoreSucceeded"
REASON_RESTORED_BACKUP = "SuccessfullyRestoredBackup"
REASON_RESTORE_BACKUP_FAILED = "FailedToRestoreBackup"
BACKUP_VERIFIED = "BackupVerified"
REASON_VERIFIED_BACKUP = "SuccessfullyVerifiedBackup"
REASON_VERIFY_BACKUP_FAILED = "FailedToVerifyBackup"

Conditions = list[Condition] | None


def rfc3339(value: datetime) -> str:
    """Kubernetes' metav1.Time wire form (UTC, seconds)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def get_condition(conditions: Conditions, type_: str) -> Condition | None:
    for condition in conditions or ():
        if condition.type == type_:
            return condition
    return None


def has_condition(conditions: Conditions, type_: str) -> bool:
    return get_condition(conditions, type_) is not None


def is_condition_true(conditions: Conditions, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def is_condition_false(conditions: Conditions, type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "False"


def set_condition(
    conditions: Conditions,
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[Condition]:
    """Return a new list with the condition of ``type_`` inserted or updated."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    existing = get_condition(conditions, type_)
    transition = now or now_rfc3339()
    if existing is not None and existing.status == status:
        transition = existing.last_transition_time
    fields: dict[str, object] = {"type": type_, "status": status, "reason": reason}
    if message:
        fields["message"] = message
    if observed_generation is not None:
        fields["observed_generation"] = observed_generation
    updated = Condition.model_validate({**fields, "last_transition_time": transition})
    result = [c for c in conditions or () if c.type != type_]
    if existing is None:
        result.append(updated)
    else:
        index = (conditions or []).index(existing)
        result.insert(index, updated)
    return result


def remove_condition(conditions: Conditions, type_: str) -> list[Condition]:
    return [c for c in conditions or () if c.type != type_]
